//! A gateway's message log as a third party checks it: the canonical leaf of each
//! record, the recomputation of the Merkle tree with every kept root and RFC 3161
//! time stamp, and the check that each record's signed descriptors verify and agree
//! with its stored fields. No database: the gateway reads its tables and archive
//! files and feeds [`Checker`]; `veksel log verify` and the evidence and archive
//! checks of this crate do the same from files.

use serde::{Deserialize, Serialize};
use veksel_merkle::checkpoint::Checkpoint;
use veksel_merkle::{Frontier, Hash, leaf_hash};

/// The checkpoint origin of a gateway's message log.
pub fn origin(gateway: &veksel_id::GatewayId) -> String {
    format!("{gateway}/message-log")
}

/// The SHA-256 a time stamp covers for a log of `size` records with `root`.
pub fn stamped_hash(origin: &str, size: u64, root: &[u8; 32]) -> Vec<u8> {
    let body = Checkpoint {
        origin: origin.to_owned(),
        size,
        root: *root,
        extensions: vec![],
    }
    .body();
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body.as_bytes())
        .as_ref()
        .to_vec()
}

/// The canonical content of one leaf. Field order is the serialisation order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafRecord {
    /// Format version.
    pub v: u32,
    /// Position in the log.
    pub seq: i64,
    /// `X-Road-Request-Id`.
    pub request_id: String,
    /// `consumer` or `provider`.
    pub side: String,
    /// `X-Road-Id`.
    pub xroad_id: String,
    /// Client.
    pub client: String,
    /// Service.
    pub service: String,
    /// Method.
    pub method: String,
    /// Target.
    pub target: String,
    /// Status.
    pub status: i64,
    /// Consumer gateway.
    pub consumer_gateway: String,
    /// Provider gateway.
    pub provider_gateway: String,
    /// Signed request descriptor.
    pub request_descriptor: String,
    /// Its JWS.
    pub request_signature: String,
    /// Signed response descriptor.
    pub response_descriptor: String,
    /// Its JWS.
    pub response_signature: String,
    /// SHA-256 (hex) of the stored request body.
    pub request_body_sha256: Option<String>,
    /// SHA-256 (hex) of the stored response body.
    pub response_body_sha256: Option<String>,
    /// Why bodies are missing in full mode.
    pub body_note: Option<String>,
    /// Request body length.
    pub request_size: i64,
    /// Response body length.
    pub response_size: i64,
    /// Request creation time.
    pub created_at: i64,
    /// Logging time.
    pub logged_at: i64,
}

impl LeafRecord {
    /// Canonical bytes.
    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The leaf hash.
    pub fn hash(&self) -> Hash {
        leaf_hash(&self.bytes())
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogVerifyError {
    /// A record's content does not match what was logged.
    #[error("record {seq} (request {request_id}): {reason}")]
    Record {
        /// Its position.
        seq: i64,
        /// Its request id.
        request_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A record is missing or out of place.
    #[error("position {seq}: {reason}")]
    Position {
        /// The position expected.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
    /// The recomputed tree disagrees with a stored root.
    #[error(
        "the log's root at size {size} does not match the recomputed tree: a record before position {size} was changed"
    )]
    Root {
        /// The size of the stored root.
        size: i64,
    },
    /// A time stamp does not fit the log or does not verify.
    #[error("time stamp at size {size}: {reason}")]
    Stamp {
        /// The size the stamp claims to cover.
        size: i64,
        /// What is wrong.
        reason: String,
    },
    /// The database could not be read.
    #[error("reading the log: {0}")]
    Store(String),
    /// An archive file is missing, changed, out of its chain or malformed.
    #[error("archive {file}: {reason}")]
    Archive {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
}

/// A time stamp as kept: log size, stamped root, token.
pub type KeptStamp = (i64, Vec<u8>, Vec<u8>);

/// Recomputes the log leaf by leaf and checks every kept root and time stamp when the
/// recomputed tree reaches its size: over the database, over archive files, or both
/// in turn.
#[derive(Debug)]
pub struct Checker<'a> {
    frontier: Frontier,
    roots: std::iter::Peekable<std::vec::IntoIter<(i64, Vec<u8>)>>,
    stamps: std::iter::Peekable<std::vec::IntoIter<KeptStamp>>,
    origin: &'a str,
    cas: Option<&'a veksel_pki::verify::Roots>,
    chains: &'a Chains,
    roots_checked: u64,
    stamps_checked: u64,
}

impl<'a> Checker<'a> {
    /// Starts at `start` (empty for a whole log) with the kept roots `(size, root)` and
    /// stamps `(size, root, token)` in size order; those at or below the start are
    /// outside what is checked and skipped.
    pub fn new(
        start: Frontier,
        roots: Vec<(i64, Vec<u8>)>,
        stamps: Vec<KeptStamp>,
        origin: &'a str,
        cas: Option<&'a veksel_pki::verify::Roots>,
        chains: &'a Chains,
    ) -> Self {
        let first = i64::try_from(start.size()).unwrap_or(i64::MAX);
        let mut roots = roots.into_iter().peekable();
        while roots.next_if(|(size, _)| *size <= first).is_some() {}
        let mut stamps = stamps.into_iter().peekable();
        while stamps.next_if(|(size, _, _)| *size <= first).is_some() {}
        Self {
            frontier: start,
            roots,
            stamps,
            origin,
            cas,
            chains,
            roots_checked: 0,
            stamps_checked: 0,
        }
    }

    /// The tree recomputed so far.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// Adds the next record, whose leaf hash was stored as `stored`; it must match.
    pub fn push_stored(
        &mut self,
        leaf: &LeafRecord,
        stored: Option<&[u8]>,
    ) -> Result<(), LogVerifyError> {
        self.push_inner(leaf, Some(stored))
    }

    /// Adds the next record, with no stored leaf hash to compare (archive files alone:
    /// a changed record then shows as a root or stamp that no longer matches).
    pub fn push(&mut self, leaf: &LeafRecord) -> Result<(), LogVerifyError> {
        self.push_inner(leaf, None)
    }

    fn push_inner(
        &mut self,
        leaf: &LeafRecord,
        stored: Option<Option<&[u8]>>,
    ) -> Result<(), LogVerifyError> {
        let expected = i64::try_from(self.frontier.size()).unwrap_or(i64::MAX);
        if leaf.seq != expected {
            return Err(LogVerifyError::Position {
                seq: expected,
                reason: format!(
                    "the next record found is at position {}: records are missing or out of order",
                    leaf.seq
                ),
            });
        }
        let bad = |reason: String| LogVerifyError::Record {
            seq: leaf.seq,
            request_id: leaf.request_id.clone(),
            reason,
        };
        let hash = leaf.hash();
        if let Some(stored) = stored
            && stored != Some(&hash[..])
        {
            return Err(bad(
                "its content does not match its leaf hash (modified, or moved from another position)"
                    .into(),
            ));
        }
        check_signed_content(leaf, self.chains).map_err(bad)?;
        self.frontier.push(hash);
        let size = i64::try_from(self.frontier.size()).unwrap_or(i64::MAX);
        while let Some((root_size, root)) = self.roots.next_if(|(s, _)| *s <= size) {
            if root_size != size {
                return Err(LogVerifyError::Position {
                    seq: root_size,
                    reason: "a kept root's size is not a position the log passed".into(),
                });
            }
            if root != self.frontier.root() {
                return Err(LogVerifyError::Root { size });
            }
            self.roots_checked += 1;
        }
        while let Some((stamp_size, stamped_root, token)) =
            self.stamps.next_if(|(s, _, _)| *s <= size)
        {
            check_stamp(
                stamp_size,
                size,
                &stamped_root,
                &token,
                &self.frontier,
                self.origin,
                self.cas,
            )?;
            self.stamps_checked += 1;
        }
        Ok(())
    }

    /// Ends the check: no kept root or stamp may lie beyond the recomputed tree.
    /// Returns the tree, and how many roots and stamps were checked.
    pub fn finish(mut self) -> Result<(Frontier, u64, u64), LogVerifyError> {
        if let Some((size, _, _)) = self.stamps.next() {
            return Err(LogVerifyError::Stamp {
                size,
                reason: format!(
                    "a time stamp covers {size} records, but the log has only {}",
                    self.frontier.size()
                ),
            });
        }
        if let Some((size, _)) = self.roots.next() {
            return Err(LogVerifyError::Position {
                seq: i64::try_from(self.frontier.size()).unwrap_or(i64::MAX),
                reason: format!("the log once had {size} records; the last ones are missing"),
            });
        }
        Ok((self.frontier, self.roots_checked, self.stamps_checked))
    }
}

fn check_stamp(
    stamp_size: i64,
    size: i64,
    stamped_root: &[u8],
    token: &[u8],
    frontier: &Frontier,
    origin: &str,
    cas: Option<&veksel_pki::verify::Roots>,
) -> Result<(), LogVerifyError> {
    let bad = |reason: String| LogVerifyError::Stamp {
        size: stamp_size,
        reason,
    };
    if stamp_size != size {
        return Err(bad("the stamp's size is not a position in the log".into()));
    }
    let root = frontier.root();
    if stamped_root != root {
        return Err(LogVerifyError::Root { size });
    }
    let cas = cas.ok_or_else(|| {
        bad(
            "no approved CAs to check the time stamp against (no cached global configuration)"
                .into(),
        )
    })?;
    let hash = stamped_hash(origin, u64::try_from(size).unwrap_or_default(), &root);
    veksel_pki::tsa::verify_token(token, &hash, cas, &[]).map_err(|e| bad(e.to_string()))?;
    Ok(())
}

/// Signing certificate chains by the `x5t#S256` of their leaf, each certificate in
/// standard base64 DER, leaf first. Message signatures name their certificate and do
/// not carry it; logs, archives and evidence keep each chain once.
pub type Chains = std::collections::BTreeMap<String, Vec<String>>;

/// The chain that made a signature: carried in the JWS (`x5c`, records logged before
/// chains were kept apart) or named by it (`x5t#S256`) and found in `chains`.
pub fn signer_chain(
    signature: &veksel_proto::batch::MessageSignature,
    chains: &Chains,
) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine;
    let header = signature.header();
    if !header.x5c.is_empty() {
        return header.chain_der().map_err(|e| e.to_string());
    }
    let named = header
        .x5t_s256
        .as_deref()
        .ok_or("the signature names no certificate")?;
    let chain = chains
        .get(named)
        .ok_or_else(|| format!("the certificate {named} is not among those kept"))?;
    let der: Vec<Vec<u8>> = chain
        .iter()
        .map(|c| base64::engine::general_purpose::STANDARD.decode(c))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("the kept chain of {named} is not base64"))?;
    // The kept chain must be the one the signature names, not merely filed under it.
    let leaf = der.first().ok_or("a kept chain is empty")?;
    if veksel_proto::jws::thumbprint(leaf) != named {
        return Err(format!(
            "the chain kept as {named} is another certificate's"
        ));
    }
    Ok(der)
}

/// The signed descriptors must verify with the keys of the certificates that made
/// them, and the stored fields must agree with what was signed.
pub fn check_signed_content(leaf: &LeafRecord, chains: &Chains) -> Result<(), String> {
    for (what, descriptor, signature) in [
        ("request", &leaf.request_descriptor, &leaf.request_signature),
        (
            "response",
            &leaf.response_descriptor,
            &leaf.response_signature,
        ),
    ] {
        let parsed = veksel_proto::batch::MessageSignature::parse(signature, descriptor.as_bytes())
            .map_err(|e| format!("{what} signature is malformed: {e}"))?;
        let chain = signer_chain(&parsed, chains).map_err(|e| format!("{what} signature: {e}"))?;
        let cert = chain
            .first()
            .ok_or_else(|| format!("{what} signature carries no certificate"))?;
        let info = veksel_pki::CertInfo::parse(cert)
            .map_err(|e| format!("{what} signing certificate: {e}"))?;
        parsed.verify(&info.public_key).map_err(|_| {
            format!("the {what} signature does not verify over the logged {what} descriptor")
        })?;
    }
    let req: veksel_proto::descriptor::RequestDescriptor =
        serde_json::from_str(&leaf.request_descriptor)
            .map_err(|e| format!("request descriptor: {e}"))?;
    let resp: veksel_proto::descriptor::ResponseDescriptor =
        serde_json::from_str(&leaf.response_descriptor)
            .map_err(|e| format!("response descriptor: {e}"))?;
    let consistent = req.request_id == leaf.request_id
        && resp.request_id == leaf.request_id
        && req.client.to_string() == leaf.client
        && req.service.to_string() == leaf.service
        && req.method == leaf.method
        && req.target == leaf.target
        && i64::from(resp.status) == leaf.status
        && resp.request_hash
            == veksel_proto::descriptor::request_hash(leaf.request_descriptor.as_bytes());
    if !consistent {
        return Err("the stored fields disagree with the signed descriptors".into());
    }
    Ok(())
}
