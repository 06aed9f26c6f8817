//! Entries of the network ledger: typed, signed by the party that submits them, and
//! free of personal data.
//!
//! An entry is a compact JWS of content type [`ENTRY_CTY`] with its certificate chain
//! in `x5c`, so anyone holding the network's trust anchor can check who submitted it.
//! The payload is a [`LedgerEntry`]. Whatever could be guessed from a hash (an event's
//! details, a document) enters the ledger only as a salted [`commitment`]; the salt
//! stays off the ledger with the document, so erasing the document and its salt
//! leaves an entry that no longer resolves to anything.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Content type of a signed ledger entry.
pub const ENTRY_CTY: &str = "veksel-ledger-entry+json";
/// Longest entry (a tile entry bundle frames entries with a 16-bit length).
pub const MAX_ENTRY_LEN: usize = 65_535;
/// Longest label of a commitment.
pub const MAX_LABEL_LEN: usize = 200;

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LedgerEntry {
    /// A change to the network's governance, recorded by the authority: member,
    /// subsystem or gateway registered or removed, certificate issued or revoked,
    /// access granted or revoked, global configuration published.
    Governance {
        /// When it happened, Unix ms.
        at: i64,
        /// What happened, e.g. `member.add`, `certificate.revoke`.
        event: String,
        /// The identifier the event is about (a member, subsystem, gateway,
        /// certificate or configuration version).
        subject: String,
        /// The authority's audit record that holds the details and the salt.
        record: i64,
        /// Salted commitment to the event's details (who did it, what changed).
        commitment: String,
    },
    /// A gateway's message-log head: its Merkle root at a size.
    Anchor {
        /// When the gateway made it, Unix ms.
        at: i64,
        /// The gateway.
        gateway: String,
        /// The message log's checkpoint origin.
        origin: String,
        /// Number of records.
        size: u64,
        /// Root hash, base64.
        root: String,
    },
    /// A change a gateway made to its own configuration that governs access: access
    /// rights granted or revoked, services, clients and local groups configured or
    /// removed. The details stay in the gateway; the entry commits to them.
    GatewayEvent {
        /// When it happened, Unix ms.
        at: i64,
        /// The gateway.
        gateway: String,
        /// What happened, e.g. `access.set`, `service.remove`.
        event: String,
        /// The identifier it is about (a subsystem, a service).
        subject: String,
        /// Salted commitment to the details.
        commitment: String,
    },
    /// A member's commitment to a document (a contract, a decision, a data set),
    /// submitted by one of its gateways.
    Commitment {
        /// When it was submitted, Unix ms.
        at: i64,
        /// The submitting gateway.
        gateway: String,
        /// A short public label, e.g. `contract 2026-118 signed`.
        label: String,
        /// Salted commitment to the document.
        commitment: String,
    },
}

impl LedgerEntry {
    /// The identifier a monitor matches: the subject of a governance event, the
    /// gateway of an anchor or commitment.
    pub fn subject(&self) -> &str {
        match self {
            Self::Governance { subject, .. } | Self::GatewayEvent { subject, .. } => subject,
            Self::Anchor { gateway, .. } | Self::Commitment { gateway, .. } => gateway,
        }
    }

    /// `governance`, `anchor` or `commitment`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Governance { .. } => "governance",
            Self::Anchor { .. } => "anchor",
            Self::GatewayEvent { .. } => "gateway-event",
            Self::Commitment { .. } => "commitment",
        }
    }

    /// When the entry was made, Unix ms.
    pub fn at(&self) -> i64 {
        match self {
            Self::Governance { at, .. }
            | Self::Anchor { at, .. }
            | Self::GatewayEvent { at, .. }
            | Self::Commitment { at, .. } => *at,
        }
    }

    /// Checks the fields: plain short text, hashes of 32 bytes.
    pub fn validate(&self) -> Result<(), String> {
        if self.at() <= 0 {
            return Err("at must be a positive Unix time in ms".into());
        }
        match self {
            Self::Governance {
                event,
                subject,
                commitment,
                ..
            } => {
                event_name(event)?;
                text("subject", subject, 255)?;
                hash32("commitment", commitment)
            }
            Self::GatewayEvent {
                gateway,
                event,
                subject,
                commitment,
                ..
            } => {
                text("gateway", gateway, 255)?;
                event_name(event)?;
                text("subject", subject, 255)?;
                hash32("commitment", commitment)
            }
            Self::Anchor {
                gateway,
                origin,
                root,
                ..
            } => {
                text("gateway", gateway, 255)?;
                text("origin", origin, 255)?;
                hash32("root", root)
            }
            Self::Commitment {
                gateway,
                label,
                commitment,
                ..
            } => {
                text("gateway", gateway, 255)?;
                text("label", label, MAX_LABEL_LEN)?;
                hash32("commitment", commitment)
            }
        }
    }
}

fn event_name(event: &str) -> Result<(), String> {
    if event.is_empty()
        || event.len() > 64
        || !event
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err("event must be 1 to 64 of a-z . _ -".into());
    }
    Ok(())
}

fn text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(format!(
            "{what} must be 1 to {max} bytes without control characters"
        ));
    }
    Ok(())
}

fn hash32(what: &str, b64: &str) -> Result<(), String> {
    match STANDARD.decode(b64) {
        Ok(b) if b.len() == 32 => Ok(()),
        _ => Err(format!("{what} must be a base64 SHA-256 hash")),
    }
}

/// The salted commitment to a document: base64 of
/// `SHA-256("veksel-ledger-commitment/v1" || 0x00 || salt || document)`. The salt
/// (32 random bytes) makes a guessable document unguessable from the ledger.
pub fn commitment(salt: &[u8; 32], document: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"veksel-ledger-commitment/v1\0");
    ctx.update(salt);
    ctx.update(document);
    STANDARD.encode(ctx.finish().as_ref())
}

/// A fresh random salt.
pub fn new_salt() -> [u8; 32] {
    let mut salt = [0u8; 32];
    aws_lc_rs::rand::fill(&mut salt).unwrap_or_else(|_| {
        // The system RNG failing is not recoverable; a fixed salt would be unsafe.
        std::process::abort()
    });
    salt
}

/// Reads the payload of a signed entry without checking the signature (a monitor's
/// first look; [`crate::jws::Unverified::verify`] checks it).
pub fn peek(entry: &[u8]) -> Result<LedgerEntry, String> {
    let text = std::str::from_utf8(entry).map_err(|_| "entry is not UTF-8".to_string())?;
    let jws = crate::jws::Unverified::parse(text, None).map_err(|e| e.to_string())?;
    if jws.header.cty.as_deref() != Some(ENTRY_CTY) {
        return Err(format!("entry content type must be {ENTRY_CTY}"));
    }
    let payload = jws.unverified_payload().map_err(|e| e.to_string())?;
    let entry: LedgerEntry =
        serde_json::from_slice(&payload).map_err(|e| format!("entry payload: {e}"))?;
    entry.validate()?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_are_checked() {
        let salt = [7u8; 32];
        let c = commitment(&salt, b"contract text");
        assert_ne!(c, commitment(&[8u8; 32], b"contract text"), "salt matters");
        let e = LedgerEntry::Commitment {
            at: 1,
            gateway: "DK/GOV/1/gw".into(),
            label: "contract signed".into(),
            commitment: c.clone(),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.starts_with(r#"{"kind":"commitment""#), "{json}");
        assert_eq!(serde_json::from_str::<LedgerEntry>(&json).unwrap(), e);
        e.validate().unwrap();
        assert!(
            serde_json::from_str::<LedgerEntry>(&json.replace("\"at\"", "\"extra\":1,\"at\""))
                .is_err()
        );
        for bad in [
            LedgerEntry::Commitment {
                at: 1,
                gateway: "g".into(),
                label: "a\nb".into(),
                commitment: c.clone(),
            },
            LedgerEntry::Governance {
                at: 1,
                record: 1,
                event: "Member Add".into(),
                subject: "s".into(),
                commitment: c.clone(),
            },
            LedgerEntry::Anchor {
                at: 1,
                gateway: "g".into(),
                origin: "o".into(),
                size: 1,
                root: "AAAA".into(),
            },
            LedgerEntry::Anchor {
                at: 0,
                gateway: "g".into(),
                origin: "o".into(),
                size: 1,
                root: c,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
