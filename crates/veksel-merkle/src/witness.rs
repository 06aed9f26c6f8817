//! Witnessing: cosignatures (c2sp.org/tlog-cosignature), the witness's
//! add-checkpoint exchange (c2sp.org/tlog-witness) and witness policies with
//! threshold groups (in the style of c2sp.org/tlog-policy and Sigsum policies).
//!
//! A witness keeps the last checkpoint it cosigned for a log. It cosigns a new one
//! only after a consistency proof from that one verifies, so a log that shows two
//! parties two different histories cannot get both cosigned by the same witness;
//! clients that require cosignatures from enough independent witnesses are then safe
//! from a forking log. Everything here is pure; the caller stores the state.

use crate::Hash;
use crate::checkpoint::{
    Checkpoint, NamedKey, NoteError, NoteVerifier, check_text, named_key_pair, open_note,
    verifier_key_of,
};
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::{BTreeMap, BTreeSet};

/// Signature type byte of timestamped Ed25519 cosignatures (cosignature/v1).
const COSIGNATURE_TYPE: u8 = 0x04;
/// Longest consistency proof accepted (a tree of 2^64 leaves needs 64 hashes).
pub const MAX_PROOF_HASHES: usize = 64;

/// The message a cosignature signs: the cosignature/v1 header, the time and the
/// checkpoint body.
fn cosigned_message(checkpoint_body: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{checkpoint_body}")
}

/// A witness's cosigning key.
pub struct Cosigner {
    name: String,
    key: Ed25519KeyPair,
    id: [u8; 4],
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cosigner")
            .field("name", &self.name)
            .finish()
    }
}

impl Cosigner {
    /// A cosigner from a PKCS#8 Ed25519 key.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, NoteError> {
        let (key, id) = named_key_pair(name, pkcs8, COSIGNATURE_TYPE)?;
        Ok(Self {
            name: name.to_owned(),
            key,
            id,
        })
    }

    /// The witness name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key `name+hexid+base64(0x04 || key)`.
    pub fn verifier_key(&self) -> String {
        verifier_key_of(
            &self.name,
            &self.id,
            COSIGNATURE_TYPE,
            self.key.public_key().as_ref(),
        )
    }

    /// The cosignature line over a checkpoint body at `time` (Unix seconds).
    pub fn cosign(&self, checkpoint_body: &str, time: u64) -> String {
        let sig = self
            .key
            .sign(cosigned_message(checkpoint_body, time).as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(&time.to_be_bytes());
        blob.extend_from_slice(sig.as_ref());
        format!("— {} {}\n", self.name, STANDARD.encode(blob))
    }
}

/// Verifies one witness's cosignatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    id: [u8; 4],
    public: Vec<u8>,
}

impl CosignatureVerifier {
    /// Parses a cosigner's verifier key `name+hexid+base64(0x04 || key)`.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let NamedKey { name, id, public } = NamedKey::parse(
            vkey,
            COSIGNATURE_TYPE,
            "a witness key must be a cosignature/v1 (type 0x04) Ed25519 key",
        )?;
        Ok(Self { name, id, public })
    }

    /// The witness name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a signature line against a checkpoint body. `Ok(None)` when the line
    /// is not this witness's; `Ok(Some(time))` when it verifies; an error when it
    /// claims to be this witness's and does not verify.
    pub fn verify_line(&self, checkpoint_body: &str, line: &str) -> Result<Option<u64>, NoteError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let Some((name, b64)) = line.strip_prefix("— ").and_then(|r| r.rsplit_once(' ')) else {
            return Err(NoteError::Malformed("not a signature line".into()));
        };
        if name != self.name {
            return Ok(None);
        }
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature is not base64".into()))?;
        if blob.len() < 4 || blob[..4] != self.id {
            return Ok(None);
        }
        if blob.len() != 4 + 8 + 64 {
            return Err(NoteError::BadSignature(self.name.clone()));
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&blob[4..12]);
        let time = u64::from_be_bytes(t);
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(
                cosigned_message(checkpoint_body, time).as_bytes(),
                &blob[12..],
            )
            .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
        Ok(Some(time))
    }
}

/// A witness policy: the log's key, the witnesses, and which combinations of their
/// cosignatures make a checkpoint acceptable.
///
/// Text form, one statement per line (`#` starts a comment):
///
/// ```text
/// log <log verifier key>
/// witness <name> <cosignature verifier key>
/// group <name> <k>|any|all <member> <member> ...
/// quorum <witness or group name>|none
/// ```
///
/// Members of groups are witnesses or groups defined above them; a group is
/// satisfied when `k` of its members are. `quorum none` means the log's signature
/// alone suffices, which an operator must choose explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessPolicy {
    /// The log's key.
    pub log: NoteVerifier,
    /// Witness keys by name.
    pub witnesses: BTreeMap<String, CosignatureVerifier>,
    groups: BTreeMap<String, (usize, Vec<String>)>,
    quorum: Option<String>,
    text: String,
}

/// Why a policy text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("witness policy, line {line}: {message}")]
pub struct PolicyError {
    /// 1-based line number (0 for the whole text).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl WitnessPolicy {
    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let err = |line: usize, m: &str| PolicyError {
            line,
            message: m.to_owned(),
        };
        if text.len() > 64 * 1024 {
            return Err(err(0, "longer than 64 KiB"));
        }
        let mut log = None;
        let mut witnesses = BTreeMap::new();
        let mut groups: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
        let mut quorum = None;
        let mut quorum_seen = false;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["log", key] => {
                    if log.is_some() {
                        return Err(err(n, "a second log key"));
                    }
                    log = Some(NoteVerifier::parse(key).map_err(|e| err(n, &e.to_string()))?);
                }
                ["witness", name, key] => {
                    let v = CosignatureVerifier::parse(key).map_err(|e| err(n, &e.to_string()))?;
                    if v.name() != *name {
                        return Err(err(n, "the witness name differs from its key's name"));
                    }
                    if witnesses.contains_key(*name) || groups.contains_key(*name) {
                        return Err(err(n, "name defined twice"));
                    }
                    witnesses.insert((*name).to_owned(), v);
                }
                ["group", name, k, members @ ..] => {
                    if members.is_empty() {
                        return Err(err(n, "a group needs members"));
                    }
                    if witnesses.contains_key(*name) || groups.contains_key(*name) {
                        return Err(err(n, "name defined twice"));
                    }
                    let unique: BTreeSet<&&str> = members.iter().collect();
                    if unique.len() != members.len() {
                        return Err(err(n, "a member is listed twice"));
                    }
                    for m in members {
                        if !witnesses.contains_key(*m) && !groups.contains_key(*m) {
                            return Err(err(n, &format!("{m} is not defined above")));
                        }
                    }
                    let k = match *k {
                        "any" => 1,
                        "all" => members.len(),
                        k => k
                            .parse::<usize>()
                            .ok()
                            .filter(|k| (1..=members.len()).contains(k))
                            .ok_or_else(|| err(n, "threshold must be any, all or 1 to members"))?,
                    };
                    groups.insert(
                        (*name).to_owned(),
                        (k, members.iter().map(|m| (*m).to_owned()).collect()),
                    );
                }
                ["quorum", name] => {
                    if quorum_seen {
                        return Err(err(n, "a second quorum"));
                    }
                    quorum_seen = true;
                    if *name != "none" {
                        if !witnesses.contains_key(*name) && !groups.contains_key(*name) {
                            return Err(err(n, &format!("{name} is not defined above")));
                        }
                        quorum = Some((*name).to_owned());
                    }
                }
                _ => return Err(err(n, "expected log, witness, group or quorum")),
            }
        }
        let log = log.ok_or_else(|| err(0, "no log key"))?;
        if !quorum_seen {
            return Err(err(
                0,
                "no quorum (write `quorum none` to require no witness)",
            ));
        }
        Ok(Self {
            log,
            witnesses,
            groups,
            quorum,
            text: text.to_owned(),
        })
    }

    /// The policy's text as parsed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the named witnesses' cosignatures satisfy the quorum.
    pub fn satisfied_by(&self, cosigners: &BTreeSet<String>) -> bool {
        match &self.quorum {
            None => true,
            Some(q) => self.holds(q, cosigners, 0),
        }
    }

    fn holds(&self, name: &str, cosigners: &BTreeSet<String>, depth: usize) -> bool {
        if depth > 32 {
            return false;
        }
        if self.witnesses.contains_key(name) {
            return cosigners.contains(name);
        }
        match self.groups.get(name) {
            Some((k, members)) => {
                members
                    .iter()
                    .filter(|m| self.holds(m, cosigners, depth + 1))
                    .count()
                    >= *k
            }
            None => false,
        }
    }

    /// Opens a cosigned checkpoint under this policy: the log's signature must verify,
    /// every line claiming a known witness must verify, and the verified witnesses
    /// must satisfy the quorum. Returns the checkpoint and who cosigned it.
    pub fn verify(&self, note: &str) -> Result<(Checkpoint, BTreeSet<String>), NoteError> {
        let opened = open_note(note, std::slice::from_ref(&self.log))?;
        let checkpoint = Checkpoint::parse(&opened.text)?;
        if checkpoint.origin != self.log.name() {
            return Err(NoteError::Malformed(
                "the checkpoint origin is not the log's key name".into(),
            ));
        }
        let cosigners =
            verify_cosignatures(&opened.text, &opened.other_signatures, &self.witnesses)?;
        if !self.satisfied_by(&cosigners) {
            return Err(NoteError::Malformed(format!(
                "cosigned by {} witness(es) {:?}: the policy's quorum is not met",
                cosigners.len(),
                cosigners
            )));
        }
        Ok((checkpoint, cosigners))
    }
}

/// The names of the known witnesses whose cosignature lines verify; a line of a known
/// witness that does not verify rejects everything.
pub fn verify_cosignatures(
    checkpoint_body: &str,
    lines: &[String],
    witnesses: &BTreeMap<String, CosignatureVerifier>,
) -> Result<BTreeSet<String>, NoteError> {
    let mut out = BTreeSet::new();
    for line in lines {
        for w in witnesses.values() {
            if w.verify_line(checkpoint_body, line)?.is_some() {
                out.insert(w.name().to_owned());
            }
        }
    }
    Ok(out)
}

/// A witness's add-checkpoint request: the size the submitter believes the witness
/// has, a consistency proof from it, and the new signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The witness's latest size as the submitter knows it.
    pub old_size: u64,
    /// Consistency proof from `old_size` to the new checkpoint.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

impl AddCheckpoint {
    /// The request body: `old N`, one base64 hash per line, a blank line, the note.
    pub fn body(&self) -> String {
        let mut s = format!("old {}\n", self.old_size);
        for h in &self.proof {
            s.push_str(&STANDARD.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        s
    }

    /// Parses a request body.
    pub fn parse(body: &str) -> Result<Self, WitnessError> {
        let bad = |m: &str| WitnessError::Malformed(m.to_owned());
        if body.len() > crate::checkpoint::MAX_NOTE_LEN {
            return Err(bad("request is too large"));
        }
        let (head, checkpoint) = body
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or_else(|| bad("the first line must be `old <size>`"))?;
        if old.is_empty()
            || !old.bytes().all(|b| b.is_ascii_digit())
            || (old.len() > 1 && old.starts_with('0'))
        {
            return Err(bad("old size must be a decimal number"));
        }
        let old_size = old.parse().map_err(|_| bad("old size is too large"))?;
        let mut proof = Vec::new();
        for l in lines {
            if proof.len() == MAX_PROOF_HASHES {
                return Err(bad("too many proof hashes"));
            }
            let h: Hash = STANDARD
                .decode(l)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| bad("a proof line is not a base64 SHA-256 hash"))?;
            proof.push(h);
        }
        Ok(Self {
            old_size,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }
}

/// What a witness remembers of one log: its latest cosigned checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessState {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The signed note as received.
    pub note: String,
}

/// Why a witness refuses a checkpoint. The HTTP status of tlog-witness is in
/// [`WitnessError::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    /// The request cannot be read.
    #[error("malformed add-checkpoint request: {0}")]
    Malformed(String),
    /// The checkpoint is of a log this witness does not witness.
    #[error("unknown log {0}")]
    UnknownLog(String),
    /// The log's signature does not verify.
    #[error("the checkpoint is not signed by the log's key: {0}")]
    Unsigned(String),
    /// The submitter's idea of the witness's size is wrong; it should retry from
    /// `latest`.
    #[error("the witness's latest size is {latest}, not the request's old size")]
    Conflict {
        /// The size the witness has.
        latest: u64,
    },
    /// The consistency proof does not verify.
    #[error("the consistency proof does not verify: {0}")]
    BadProof(String),
    /// The witness cannot decide now (its state or the log's key is out of reach).
    #[error("the witness cannot answer now: {0}")]
    Unavailable(String),
    /// The log signed two checkpoints that cannot both be true; the pair is the
    /// proof of its misbehaviour.
    #[error("the log forked: {why}")]
    Fork {
        /// What does not match.
        why: String,
        /// The checkpoint this witness had cosigned before.
        previous: String,
        /// The conflicting checkpoint now signed by the log.
        conflicting: String,
    },
}

impl WitnessError {
    /// The HTTP status c2sp.org/tlog-witness gives this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::Unsigned(_) => 403,
            Self::UnknownLog(_) => 404,
            Self::Conflict { .. } => 409,
            Self::BadProof(_) | Self::Fork { .. } => 422,
            Self::Unavailable(_) => 503,
        }
    }
}

/// The witness's check of an add-checkpoint request against its state. On success
/// returns the new state to store (the caller stores it atomically, then cosigns).
pub fn check_add_checkpoint(
    request: &AddCheckpoint,
    log: &NoteVerifier,
    known: Option<&WitnessState>,
) -> Result<WitnessState, WitnessError> {
    check_text_or_note(&request.checkpoint)?;
    let opened =
        open_note(&request.checkpoint, std::slice::from_ref(log)).map_err(|e| match e {
            NoteError::Malformed(m) => WitnessError::Malformed(m),
            other => WitnessError::Unsigned(other.to_string()),
        })?;
    let cp = Checkpoint::parse(&opened.text).map_err(|e| WitnessError::Malformed(e.to_string()))?;
    if cp.origin != log.name() {
        return Err(WitnessError::UnknownLog(cp.origin));
    }
    if request.old_size > cp.size {
        return Err(WitnessError::Malformed(
            "old size is larger than the checkpoint's".into(),
        ));
    }
    if cp.size == 0 && cp.root != crate::empty_root() {
        return Err(WitnessError::BadProof(
            "a checkpoint of size 0 must have the empty tree's root".into(),
        ));
    }
    let latest = known.map_or(0, |k| k.size);
    if request.old_size != latest {
        return Err(WitnessError::Conflict { latest });
    }
    let new_state = WitnessState {
        size: cp.size,
        root: cp.root,
        note: request.checkpoint.clone(),
    };
    match known {
        None => {
            if !request.proof.is_empty() {
                return Err(WitnessError::BadProof(
                    "a proof from an empty tree must be empty".into(),
                ));
            }
        }
        Some(k) if k.size == cp.size => {
            if k.root != cp.root {
                return Err(WitnessError::Fork {
                    why: format!("two different roots for size {}", cp.size),
                    previous: k.note.clone(),
                    conflicting: request.checkpoint.clone(),
                });
            }
        }
        Some(k) => {
            crate::verify_consistency(k.size, cp.size, &k.root, &cp.root, &request.proof).map_err(
                |e| WitnessError::Fork {
                    why: format!("no consistency from size {} to {}: {e}", k.size, cp.size),
                    previous: k.note.clone(),
                    conflicting: request.checkpoint.clone(),
                },
            )?;
        }
    }
    Ok(new_state)
}

fn check_text_or_note(note: &str) -> Result<(), WitnessError> {
    let text = note.split_once("\n\n").map_or(note, |(t, _)| t);
    check_text(&format!("{text}\n")).map_err(|e| WitnessError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{NoteSigner, sign_note};
    use crate::{consistency_proof, leaf_hash, root};

    fn key() -> Vec<u8> {
        NoteSigner::generate_pkcs8().unwrap()
    }

    struct Log {
        signer: NoteSigner,
        leaves: Vec<Hash>,
    }

    impl Log {
        fn new(name: &str) -> Self {
            Self {
                signer: NoteSigner::from_pkcs8(name, &key()).unwrap(),
                leaves: Vec::new(),
            }
        }
        fn checkpoint(&self, size: u64) -> String {
            let cp = Checkpoint {
                origin: self.signer.verifier_key().split('+').next().unwrap().into(),
                size,
                root: root(&self.leaves, size).unwrap(),
                extensions: vec![],
            };
            sign_note(&cp.body(), &[&self.signer]).unwrap()
        }
        fn request(&self, old: u64, size: u64) -> AddCheckpoint {
            AddCheckpoint {
                old_size: old,
                proof: if old == 0 || old == size {
                    vec![]
                } else {
                    consistency_proof(&self.leaves, old, size).unwrap()
                },
                checkpoint: self.checkpoint(size),
            }
        }
    }

    #[test]
    fn a_witness_follows_a_growing_log_and_catches_a_fork() {
        let mut log = Log::new("authority.example/ledger");
        let vlog = NoteVerifier::parse(&log.signer.verifier_key()).unwrap();
        log.leaves = (0..10u8).map(|i| leaf_hash(&[i])).collect();
        let r = log.request(0, 4);
        assert_eq!(AddCheckpoint::parse(&r.body()).unwrap(), r);
        let s4 = check_add_checkpoint(&r, &vlog, None).unwrap();
        assert_eq!(s4.size, 4);
        let s10 = check_add_checkpoint(&log.request(4, 10), &vlog, Some(&s4)).unwrap();
        // Stale old size: 409 with the witness's size.
        let e = check_add_checkpoint(&log.request(4, 10), &vlog, Some(&s10)).unwrap_err();
        assert_eq!(e, WitnessError::Conflict { latest: 10 });
        assert_eq!(e.status(), 409);
        // Same size again is fine; a different history is a fork.
        check_add_checkpoint(&log.request(10, 10), &vlog, Some(&s10)).unwrap();
        let mut forked = Log {
            signer: NoteSigner::from_pkcs8("authority.example/ledger", &key()).unwrap(),
            leaves: log.leaves.clone(),
        };
        std::mem::swap(&mut forked.signer, &mut log.signer);
        forked.leaves[2] = leaf_hash(b"rewritten");
        forked.leaves.push(leaf_hash(b"more"));
        let e = check_add_checkpoint(&forked.request(10, 11), &vlog, Some(&s10)).unwrap_err();
        assert!(matches!(e, WitnessError::Fork { .. }), "{e:?}");
        assert_eq!(e.status(), 422);
        let e = check_add_checkpoint(&forked.request(10, 10), &vlog, Some(&s10)).unwrap_err();
        assert!(matches!(e, WitnessError::Fork { .. }), "{e:?}");
        // Someone else's signature: 403; a bigger old size than the checkpoint: 400.
        let stranger = Log::new("authority.example/ledger");
        let mut req = forked.request(10, 10);
        req.checkpoint = Log {
            leaves: forked.leaves.clone(),
            ..stranger
        }
        .checkpoint(10);
        assert_eq!(
            check_add_checkpoint(&req, &vlog, Some(&s10))
                .unwrap_err()
                .status(),
            403
        );
        let mut req = forked.request(10, 11);
        req.old_size = 12;
        assert_eq!(
            check_add_checkpoint(&req, &vlog, Some(&s10))
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn cosignatures_and_policies() {
        let log = NoteSigner::from_pkcs8("authority.example/ledger", &key()).unwrap();
        let w: Vec<Cosigner> = [
            "gw1.example",
            "gw2.example",
            "gw3.example",
            "auditor.example",
        ]
        .iter()
        .map(|n| Cosigner::from_pkcs8(n, &key()).unwrap())
        .collect();
        let policy_text = format!(
            "log {}\n{}group gateways 2 gw1.example gw2.example gw3.example\ngroup all-of any auditor.example\ngroup q all gateways all-of\nquorum q\n",
            log.verifier_key(),
            w.iter()
                .map(|c| format!("witness {} {}\n", c.name(), c.verifier_key()))
                .collect::<String>()
        );
        let policy = WitnessPolicy::parse(&policy_text).unwrap();
        let body = Checkpoint {
            origin: "authority.example/ledger".into(),
            size: 5,
            root: [9; 32],
            extensions: vec![],
        }
        .body();
        let signed = sign_note(&body, &[&log]).unwrap();
        let with = |idx: &[usize]| {
            let mut n = signed.clone();
            for i in idx {
                n.push_str(&w[*i].cosign(&body, 1_700_000_000));
            }
            n
        };
        assert!(policy.verify(&with(&[0, 1, 3])).is_ok());
        assert!(policy.verify(&with(&[0, 1])).is_err(), "no auditor");
        assert!(policy.verify(&with(&[0, 3])).is_err(), "one gateway");
        assert!(policy.verify(&signed).is_err());
        // A forged cosignature line from a known witness rejects the note.
        let forged = with(&[0, 1, 3]).replace(
            &w[3].cosign(&body, 1_700_000_000),
            &w[3].cosign(&body.replace('5', "6"), 1_700_000_000),
        );
        assert!(policy.verify(&forged).is_err());
        let v = CosignatureVerifier::parse(&w[0].verifier_key()).unwrap();
        assert_eq!(
            v.verify_line(&body, &w[0].cosign(&body, 7)).unwrap(),
            Some(7)
        );
        assert!(
            CosignatureVerifier::parse(&log.verifier_key()).is_err(),
            "type 0x01 is no cosigner"
        );
        for bad in [
            "quorum none\n",
            &format!("log {}\n", log.verifier_key()),
            &format!("log {}\ngroup g 1 nobody\nquorum g\n", log.verifier_key()),
            &format!(
                "log {}\nwitness x {}\nquorum x\n",
                log.verifier_key(),
                w[0].verifier_key()
            ),
            &format!(
                "log {}\nwitness gw1.example {}\ngroup g 2 gw1.example\nquorum g\n",
                log.verifier_key(),
                w[0].verifier_key()
            ),
        ] {
            assert!(WitnessPolicy::parse(bad).is_err(), "{bad}");
        }
        let none =
            WitnessPolicy::parse(&format!("log {}\nquorum none\n", log.verifier_key())).unwrap();
        assert!(none.verify(&signed).is_ok());
    }
}
