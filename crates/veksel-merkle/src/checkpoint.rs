//! Checkpoints (c2sp.org/tlog-checkpoint) and signed notes (c2sp.org/signed-note)
//! with Ed25519 signatures.
//!
//! A checkpoint body is `origin\nsize\nbase64(root)\n[extension lines]`; a signed
//! note is the body, a blank line, and lines `— <key name> base64(key ID || sig)`,
//! where key ID = `SHA-256(name || 0x0A || 0x01 || public key)[:4]`.

use crate::Hash;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Longest note accepted.
pub const MAX_NOTE_LEN: usize = 1024 * 1024;
/// Most signature lines accepted.
pub const MAX_SIGNATURES: usize = 100;
/// Signature type byte of Ed25519 in signed notes.
const ED25519_TYPE: u8 = 0x01;

/// Why a checkpoint or note is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Not a well-formed note or checkpoint.
    #[error("malformed: {0}")]
    Malformed(String),
    /// No signature from a trusted key verified.
    #[error("no signature from a trusted key verifies")]
    Unverified,
    /// A signature from a trusted key failed.
    #[error("the signature of {0} does not verify")]
    BadSignature(String),
    /// A key could not be made or read.
    #[error("key: {0}")]
    Key(String),
}

fn bad(m: impl Into<String>) -> NoteError {
    NoteError::Malformed(m.into())
}

/// A checkpoint: what a log commits to at one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin, a schema-less URL such as `authority.example/ledger`.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Root hash of those leaves.
    pub root: Hash,
    /// Optional extension lines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text of the checkpoint (ends with a newline).
    pub fn body(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint body.
    pub fn parse(body: &str) -> Result<Self, NoteError> {
        let text = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("checkpoint must end with a newline"))?;
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin line"))?;
        let size_line = lines.next().ok_or_else(|| bad("no size line"))?;
        if size_line.is_empty()
            || !size_line.bytes().all(|b| b.is_ascii_digit())
            || (size_line.len() > 1 && size_line.starts_with('0'))
        {
            return Err(bad("size must be a decimal number without leading zeros"));
        }
        let size = size_line.parse().map_err(|_| bad("size is too large"))?;
        let root_line = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let root_bytes = STANDARD
            .decode(root_line)
            .map_err(|_| bad("root hash is not base64"))?;
        let root: Hash = root_bytes
            .try_into()
            .map_err(|_| bad("root hash is not 32 bytes"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("empty line inside the checkpoint"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

fn key_id_of_type(name: &str, key_type: u8, public: &[u8]) -> [u8; 4] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(&[0x0a, key_type]);
    ctx.update(public);
    let d = ctx.finish();
    let mut id = [0u8; 4];
    id.copy_from_slice(&d.as_ref()[..4]);
    id
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::Key(format!("invalid key name {name:?}")));
    }
    Ok(())
}

/// Signs notes with an Ed25519 key.
pub struct NoteSigner {
    name: String,
    key: Ed25519KeyPair,
    id: [u8; 4],
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish()
    }
}

impl NoteSigner {
    /// A signer from a PKCS#8 Ed25519 key.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, NoteError> {
        let (key, id) = named_key_pair(name, pkcs8, ED25519_TYPE)?;
        Ok(Self {
            name: name.to_owned(),
            key,
            id,
        })
    }

    /// A new Ed25519 key as PKCS#8 DER.
    pub fn generate_pkcs8() -> Result<Vec<u8>, NoteError> {
        Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| NoteError::Key(e.to_string()))
    }

    /// The verifier key in the `name+hexid+base64(type || key)` form.
    pub fn verifier_key(&self) -> String {
        verifier_key_of(
            &self.name,
            &self.id,
            ED25519_TYPE,
            self.key.public_key().as_ref(),
        )
    }

    /// One signature line for `text`.
    pub fn sign_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(sig.as_ref());
        format!("— {} {}\n", self.name, STANDARD.encode(blob))
    }
}

fn hex8(id: &[u8; 4]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies signatures of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    public: Vec<u8>,
}

/// A named Ed25519 public key of one signature type, read from its verifier key
/// `name+hexid+base64(type || key)`: the part signed notes and cosignatures share.
pub(crate) struct NamedKey {
    pub(crate) name: String,
    pub(crate) id: [u8; 4],
    pub(crate) public: Vec<u8>,
}

impl NamedKey {
    /// Parses a verifier key whose type byte must be `key_type` (`wrong_type` says
    /// what is expected otherwise).
    pub(crate) fn parse(vkey: &str, key_type: u8, wrong_type: &str) -> Result<Self, NoteError> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::Key("verifier key must be name+id+key".into()));
        };
        check_name(name)?;
        let raw = STANDARD
            .decode(key_b64)
            .map_err(|_| NoteError::Key("key is not base64".into()))?;
        let (Some(&t), Some(public)) = (raw.first(), raw.get(1..)) else {
            return Err(NoteError::Key(wrong_type.into()));
        };
        if t != key_type {
            return Err(NoteError::Key(wrong_type.into()));
        }
        if public.len() != 32 {
            return Err(NoteError::Key("an Ed25519 key has 32 bytes".into()));
        }
        let id = key_id_of_type(name, key_type, public);
        if hex8(&id) != id_hex.to_ascii_lowercase() {
            return Err(NoteError::Key("key ID does not match name and key".into()));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            public: public.to_vec(),
        })
    }
}

/// A named Ed25519 key pair of one signature type, and its verifier key.
pub(crate) fn named_key_pair(
    name: &str,
    pkcs8: &[u8],
    key_type: u8,
) -> Result<(Ed25519KeyPair, [u8; 4]), NoteError> {
    check_name(name)?;
    let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| NoteError::Key(e.to_string()))?;
    let id = key_id_of_type(name, key_type, key.public_key().as_ref());
    Ok((key, id))
}

/// The verifier key `name+hexid+base64(type || public key)`.
pub(crate) fn verifier_key_of(name: &str, id: &[u8; 4], key_type: u8, public: &[u8]) -> String {
    let mut key = vec![key_type];
    key.extend_from_slice(public);
    format!("{name}+{}+{}", hex8(id), STANDARD.encode(key))
}

impl NoteVerifier {
    /// Parses a verifier key `name+hexid+base64(0x01 || key)`.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let NamedKey { name, id, public } = NamedKey::parse(
            vkey,
            ED25519_TYPE,
            "only Ed25519 verifier keys are supported",
        )?;
        Ok(Self { name, id, public })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Signs a note text (which must end with a newline) with every signer.
pub fn sign_note(text: &str, signers: &[&NoteSigner]) -> Result<String, NoteError> {
    check_text(text)?;
    let mut note = format!("{text}\n");
    for s in signers {
        note.push_str(&s.sign_line(text));
    }
    Ok(note)
}

pub(crate) fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(bad("note text must end with a newline"));
    }
    if text.chars().any(|c| (c as u32) < 0x20 && c != '\n') {
        return Err(bad("note contains control characters"));
    }
    Ok(())
}

/// A note whose signatures from trusted keys verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The text (ending in a newline).
    pub text: String,
    /// Names of the trusted keys whose signatures verified.
    pub verified_by: Vec<String>,
    /// Signature lines from keys not in the trusted set (kept, not checked).
    pub other_signatures: Vec<String>,
}

/// Opens a signed note: signatures from known keys must verify (one bad one rejects
/// the note), at least one must be present; unknown keys' lines are kept aside.
pub fn open_note(note: &str, trusted: &[NoteVerifier]) -> Result<OpenedNote, NoteError> {
    if note.len() > MAX_NOTE_LEN {
        return Err(bad("note is too large"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| bad("no blank line before the signatures"))?;
    let text = &note[..=split];
    let sigs = &note[split + 2..];
    check_text(text)?;
    if !sigs.ends_with('\n') {
        return Err(bad("signature lines must end with a newline"));
    }
    let lines: Vec<&str> = sigs[..sigs.len() - 1].split('\n').collect();
    if lines.is_empty() || lines.len() > MAX_SIGNATURES {
        return Err(bad("a note needs 1 to 100 signatures"));
    }
    let mut verified_by = Vec::new();
    let mut other_signatures = Vec::new();
    for line in lines {
        let rest = line
            .strip_prefix("— ")
            .ok_or_else(|| bad("signature line must start with an em dash"))?;
        let (name, b64) = rest
            .rsplit_once(' ')
            .ok_or_else(|| bad("signature line has no signature"))?;
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| bad("signature is not base64"))?;
        if blob.len() < 5 {
            return Err(bad("signature is too short"));
        }
        let (id, sig) = blob.split_at(4);
        match trusted.iter().find(|v| v.name == name && v.id == id) {
            Some(v) => {
                UnparsedPublicKey::new(&ED25519, &v.public)
                    .verify(text.as_bytes(), sig)
                    .map_err(|_| NoteError::BadSignature(name.to_owned()))?;
                verified_by.push(name.to_owned());
            }
            None => other_signatures.push(line.to_owned()),
        }
    }
    if verified_by.is_empty() {
        return Err(NoteError::Unverified);
    }
    Ok(OpenedNote {
        text: text.to_owned(),
        verified_by,
        other_signatures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(name: &str) -> NoteSigner {
        NoteSigner::from_pkcs8(name, &NoteSigner::generate_pkcs8().unwrap()).unwrap()
    }

    #[test]
    fn checkpoint_round_trip() {
        let cp = Checkpoint {
            origin: "authority.example/ledger".into(),
            size: 42,
            root: [7; 32],
            extensions: vec!["ext one".into()],
        };
        let body = cp.body();
        assert!(body.starts_with(
            "authority.example/ledger\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"
        ));
        assert_eq!(Checkpoint::parse(&body).unwrap(), cp);
        for bad in [
            "x\n42\n",
            "x\n042\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "x\n-1\nAA==\n",
            "x\n1\nAA==\n",
            "\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "x\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signed_notes() {
        let log = signer("authority.example/ledger");
        let witness = signer("gw1.example/witness");
        let text = Checkpoint {
            origin: "authority.example/ledger".into(),
            size: 3,
            root: [1; 32],
            extensions: vec![],
        }
        .body();
        let note = sign_note(&text, &[&log, &witness]).unwrap();
        let v_log = NoteVerifier::parse(&log.verifier_key()).unwrap();
        let v_wit = NoteVerifier::parse(&witness.verifier_key()).unwrap();
        let opened = open_note(&note, std::slice::from_ref(&v_log)).unwrap();
        assert_eq!(opened.text, text);
        assert_eq!(opened.verified_by, vec!["authority.example/ledger"]);
        assert_eq!(opened.other_signatures.len(), 1);
        let both = open_note(&note, &[v_log.clone(), v_wit]).unwrap();
        assert_eq!(both.verified_by.len(), 2);

        // A changed text, an untrusted signer only, a forged line from a trusted name.
        let changed = note.replacen("\n3\n", "\n4\n", 1);
        assert!(matches!(
            open_note(&changed, std::slice::from_ref(&v_log)),
            Err(NoteError::BadSignature(_))
        ));
        let stranger = NoteVerifier::parse(&signer("other.example").verifier_key()).unwrap();
        assert_eq!(open_note(&note, &[stranger]), Err(NoteError::Unverified));
        let impostor = signer("authority.example/ledger");
        let forged = sign_note(&text, &[&impostor]).unwrap();
        assert_eq!(
            open_note(&forged, std::slice::from_ref(&v_log)),
            Err(NoteError::Unverified),
            "same name, other key ID: ignored"
        );
        assert!(open_note("no signatures\n", std::slice::from_ref(&v_log)).is_err());
        assert!(open_note(&format!("{text}\n— x AAAA\n"), std::slice::from_ref(&v_log)).is_err());
        assert!(sign_note("no newline", &[&log]).is_err());
    }

    #[test]
    fn verifier_keys_are_checked() {
        let s = signer("a.example");
        let vkey = s.verifier_key();
        assert!(NoteVerifier::parse(&vkey).is_ok());
        assert!(
            NoteVerifier::parse(&vkey.replacen("a.example", "b.example", 1)).is_err(),
            "ID bound to name"
        );
        assert!(NoteVerifier::parse("a+b").is_err());
    }
}
