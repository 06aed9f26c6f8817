//! Batch signatures: when signing is slow (a key in an HSM), many message descriptors
//! share one ES256 signature over the Merkle root of a batch, and each message carries
//! its own inclusion proof, so throughput is not capped at the key's signing rate.
//!
//! Form: `<compact JWS>~<proof>`. The compact JWS (content type [`BATCH_CTY`], the
//! signer's certificate named by `x5t#S256`) signs a [`Manifest`] `{"typ":"veksel-batch/1","size",
//! "root"}`; the proof is base64url JSON `{"index","cty","path"}`. The leaves are
//! RFC 9162 leaf hashes of `cty || 0x00 || descriptor` in batch order, so a proof
//! binds both the descriptor bytes and their content type (request or response). A
//! batch of one is an ordinary detached JWS. The `~` separator follows SD-JWT
//! (RFC 9901): a compact JWS never contains it.

use crate::jws::{Header, JwsError, Signer, Unverified, sign_compact, sign_detached};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use veksel_merkle::Hash;

/// Content type of the JWS over a batch manifest.
pub const BATCH_CTY: &str = "veksel-batch+json";
/// `typ` of a batch manifest.
pub const MANIFEST_TYPE: &str = "veksel-batch/1";
/// Most messages a verifier accepts in one batch.
pub const MAX_BATCH_SIZE: u64 = 1 << 16;

/// What the batch JWS signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_TYPE`].
    pub typ: String,
    /// Number of messages in the batch.
    pub size: u64,
    /// Merkle tree head over the messages' leaves, base64url.
    pub root: String,
}

/// One message's place in its batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    /// Position of the message in the batch.
    pub index: u64,
    /// The message's content type, e.g. `veksel-request+json`.
    pub cty: String,
    /// RFC 9162 inclusion proof, base64url hashes.
    pub path: Vec<String>,
}

fn leaf(cty: &str, descriptor: &[u8]) -> Hash {
    let mut data = Vec::with_capacity(cty.len() + 1 + descriptor.len());
    data.extend_from_slice(cty.as_bytes());
    data.push(0);
    data.extend_from_slice(descriptor);
    veksel_merkle::leaf_hash(&data)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hash_from_b64(s: &str) -> Result<Hash, JwsError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|v| Hash::try_from(v).ok())
        .ok_or(JwsError::Malformed(
            "a batch hash is not 32 bytes of base64url",
        ))
}

/// Signs `(content type, descriptor)` pairs with one signature; returns each
/// message's signature in order. One message gets a plain detached JWS.
pub fn sign_batch(signer: &dyn Signer, items: &[(&str, &[u8])]) -> Result<Vec<String>, JwsError> {
    match items {
        [] => Ok(Vec::new()),
        // Certificates travel beside messages, not in them (crate::peer).
        [(cty, payload)] => Ok(vec![sign_detached(signer, cty, false, payload)?]),
        _ => {
            let leaves: Vec<Hash> = items.iter().map(|(c, p)| leaf(c, p)).collect();
            let size = leaves.len() as u64;
            let err = |e: veksel_merkle::ProofError| JwsError::Signer(e.to_string());
            let root = veksel_merkle::root(&leaves, size).map_err(err)?;
            let manifest = Manifest {
                typ: MANIFEST_TYPE.into(),
                size,
                root: b64(&root),
            };
            let manifest =
                serde_json::to_vec(&manifest).map_err(|e| JwsError::Signer(e.to_string()))?;
            let jws = sign_compact(signer, BATCH_CTY, false, &manifest)?;
            items
                .iter()
                .enumerate()
                .map(|(i, (cty, _))| {
                    let path = veksel_merkle::inclusion_proof(&leaves, i as u64, size)
                        .map_err(err)?
                        .iter()
                        .map(|h| b64(h))
                        .collect();
                    let proof = Proof {
                        index: i as u64,
                        cty: (*cty).to_owned(),
                        path,
                    };
                    let proof =
                        serde_json::to_vec(&proof).map_err(|e| JwsError::Signer(e.to_string()))?;
                    Ok(format!("{jws}~{}", b64(&proof)))
                })
                .collect()
        }
    }
}

/// A message's signature, single or batched, parsed against the descriptor it
/// claims to sign but not yet verified.
#[derive(Debug, Clone)]
pub enum MessageSignature {
    /// A detached JWS over the descriptor.
    Single(Unverified),
    /// A batch JWS and this message's proof.
    Batch {
        /// The JWS over the batch manifest.
        jws: Unverified,
        /// The message's place in the batch.
        proof: Proof,
        /// The message's leaf hash, from the descriptor received.
        leaf: Hash,
    },
}

impl MessageSignature {
    /// Parses `signature` as the signature over `descriptor`.
    pub fn parse(signature: &str, descriptor: &[u8]) -> Result<Self, JwsError> {
        let Some((jws, proof)) = signature.split_once('~') else {
            return Ok(Self::Single(Unverified::parse(
                signature,
                Some(descriptor),
            )?));
        };
        let jws = Unverified::parse(jws, None)?;
        if jws.header.cty.as_deref() != Some(BATCH_CTY) {
            return Err(JwsError::Malformed(
                "a batch signature's JWS is not veksel-batch+json",
            ));
        }
        let proof: Proof = URL_SAFE_NO_PAD
            .decode(proof)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(JwsError::Malformed("the batch proof is not base64url JSON"))?;
        if proof.path.len() > 64 || proof.cty.len() > 128 {
            return Err(JwsError::Malformed("the batch proof is too long"));
        }
        let leaf = leaf(&proof.cty, descriptor);
        Ok(Self::Batch { jws, proof, leaf })
    }

    /// The protected header that carries the signer's chain.
    pub fn header(&self) -> &Header {
        match self {
            Self::Single(jws) | Self::Batch { jws, .. } => &jws.header,
        }
    }

    /// The content type the signer gave the descriptor.
    pub fn cty(&self) -> Option<&str> {
        match self {
            Self::Single(jws) => jws.header.cty.as_deref(),
            Self::Batch { proof, .. } => Some(&proof.cty),
        }
    }

    /// Verifies with an uncompressed P-256 public key point: the signature, and for
    /// a batch, that the descriptor is in the signed batch.
    pub fn verify(&self, public_key_point: &[u8]) -> Result<(), JwsError> {
        self.verify_with(public_key_point, None)
    }

    /// Like [`MessageSignature::verify`], checking a batch's signature once: a batch
    /// JWS found in `verified` (for this key) has had its signature checked already,
    /// and only this message's place in the batch is checked.
    pub fn verify_with(
        &self,
        public_key_point: &[u8],
        verified: Option<&VerifiedBatches>,
    ) -> Result<(), JwsError> {
        match self {
            Self::Single(jws) => jws.verify(public_key_point).map(|_| ()),
            Self::Batch { jws, proof, leaf } => {
                let fingerprint = verified.map(|_| jws.fingerprint(public_key_point));
                let manifest = match (verified, fingerprint) {
                    (Some(v), Some(f)) if v.contains(&f) => jws.unverified_payload()?,
                    _ => {
                        let payload = jws.verify(public_key_point)?;
                        if let (Some(v), Some(f)) = (verified, fingerprint) {
                            v.insert(f);
                        }
                        payload
                    }
                };
                let manifest: Manifest = serde_json::from_slice(&manifest).map_err(|_| {
                    JwsError::Malformed("the batch manifest is not the expected JSON")
                })?;
                if manifest.typ != MANIFEST_TYPE || manifest.size > MAX_BATCH_SIZE {
                    return Err(JwsError::Malformed("not a veksel-batch/1 manifest"));
                }
                let root = hash_from_b64(&manifest.root)?;
                let path = proof
                    .path
                    .iter()
                    .map(|h| hash_from_b64(h))
                    .collect::<Result<Vec<_>, _>>()?;
                veksel_merkle::verify_inclusion(leaf, proof.index, manifest.size, &path, &root)
                    .map_err(|_| JwsError::BadSignature)
            }
        }
    }
}

/// Batch signatures whose ES256 signature has been checked, by their fingerprint
/// with the verifying key: the many messages of one batch cost one signature check.
/// Bounded: when full it starts over (a batch's messages arrive close together).
#[derive(Debug, Default)]
pub struct VerifiedBatches {
    seen: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
}

impl VerifiedBatches {
    /// Most fingerprints kept.
    pub const LIMIT: usize = 4096;

    fn contains(&self, fingerprint: &[u8; 32]) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(fingerprint)
    }

    fn insert(&self, fingerprint: [u8; 32]) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= Self::LIMIT {
            seen.clear();
        }
        seen.insert(fingerprint);
    }

    /// Fingerprints held.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::SoftwareSigner;

    #[test]
    fn a_batch_signature_is_checked_once_and_a_forgery_still_fails() {
        let (s, pk) = signer();
        let bodies: Vec<Vec<u8>> = (0..8)
            .map(|i| format!("{{\"n\":{i}}}").into_bytes())
            .collect();
        let items: Vec<(&str, &[u8])> = bodies
            .iter()
            .map(|b| ("veksel-request+json", b.as_slice()))
            .collect();
        let sigs = sign_batch(&s, &items).unwrap();
        let cache = VerifiedBatches::default();
        for (sig, body) in sigs.iter().zip(&bodies) {
            MessageSignature::parse(sig, body)
                .unwrap()
                .verify_with(&pk, Some(&cache))
                .unwrap();
        }
        assert_eq!(cache.len(), 1, "one batch, one signature check");
        // Cached or not, a message outside the batch is refused by its proof.
        let other = MessageSignature::parse(&sigs[0], b"{\"n\":99}").unwrap();
        assert!(other.verify_with(&pk, Some(&cache)).is_err());
        // Another key's fingerprint differs: the cache does not vouch for it.
        let (_, other_pk) = signer();
        let m = MessageSignature::parse(&sigs[1], &bodies[1]).unwrap();
        assert!(m.verify_with(&other_pk, Some(&cache)).is_err());
        // A batch JWS with a changed signature byte is a new fingerprint, checked, refused.
        let (jws, proof) = sigs[2].split_once('~').unwrap();
        let mut forged: Vec<char> = jws.chars().collect();
        let at = forged.len() - 10;
        forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
        let forged: String = forged.into_iter().collect();
        let forged = format!("{forged}~{proof}");
        let m = MessageSignature::parse(&forged, &bodies[2]).unwrap();
        assert!(m.verify_with(&pk, Some(&cache)).is_err());
    }

    fn signer() -> (SoftwareSigner, Vec<u8>) {
        let pkcs8 = crate::jws::generate_p256_pkcs8().unwrap();
        let s = SoftwareSigner::from_pkcs8(&pkcs8, vec![b"cert".to_vec()]).unwrap();
        let pk = s.public_key();
        (s, pk)
    }

    #[test]
    fn every_message_of_a_batch_verifies_and_only_its_own() {
        let (s, pk) = signer();
        for n in [1usize, 2, 3, 7, 64] {
            let bodies: Vec<Vec<u8>> = (0..n)
                .map(|i| format!("{{\"n\":{i}}}").into_bytes())
                .collect();
            let items: Vec<(&str, &[u8])> = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    (
                        if i % 2 == 0 {
                            "veksel-request+json"
                        } else {
                            "veksel-response+json"
                        },
                        b.as_slice(),
                    )
                })
                .collect();
            let sigs = sign_batch(&s, &items).unwrap();
            assert_eq!(sigs.len(), n);
            for (i, sig) in sigs.iter().enumerate() {
                assert_eq!(sig.contains('~'), n > 1);
                let m = MessageSignature::parse(sig, &bodies[i]).unwrap();
                m.verify(&pk).unwrap();
                assert_eq!(m.cty(), Some(items[i].0));
                // The certificate is named, not carried.
                assert!(m.header().x5c.is_empty());
                assert_eq!(
                    m.header().x5t_s256.as_deref(),
                    Some(crate::jws::thumbprint(b"cert").as_str())
                );
                // Another message's descriptor under this signature fails.
                let other = &bodies[(i + 1) % n];
                if n > 1 {
                    assert!(
                        MessageSignature::parse(sig, other)
                            .unwrap()
                            .verify(&pk)
                            .is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn tampered_batches_are_refused() {
        let (s, pk) = signer();
        let (a, b) = (b"{\"a\":1}".as_slice(), b"{\"b\":2}".as_slice());
        let sigs = sign_batch(
            &s,
            &[("veksel-request+json", a), ("veksel-request+json", b)],
        )
        .unwrap();
        let (jws, proof) = sigs[0].split_once('~').unwrap();
        let mut p: Proof = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(proof).unwrap()).unwrap();
        let forge = |p: &Proof| format!("{jws}~{}", b64(&serde_json::to_vec(p).unwrap()));
        // Another content type, index or path.
        p.cty = "veksel-response+json".into();
        assert!(
            MessageSignature::parse(&forge(&p), a)
                .unwrap()
                .verify(&pk)
                .is_err()
        );
        p.cty = "veksel-request+json".into();
        p.index = 1;
        assert!(
            MessageSignature::parse(&forge(&p), a)
                .unwrap()
                .verify(&pk)
                .is_err()
        );
        p.index = 0;
        p.path.clear();
        assert!(
            MessageSignature::parse(&forge(&p), a)
                .unwrap()
                .verify(&pk)
                .is_err()
        );
        // Another key; garbage proofs; a batch JWS of another content type.
        let (_, other_pk) = signer();
        assert!(
            MessageSignature::parse(&sigs[0], a)
                .unwrap()
                .verify(&other_pk)
                .is_err()
        );
        for bad in [format!("{jws}~"), format!("{jws}~!!"), format!("{jws}~e30")] {
            assert!(MessageSignature::parse(&bad, a).is_err(), "{bad}");
        }
        let plain = sign_compact(&s, "veksel-request+json", true, b"{}").unwrap();
        assert!(MessageSignature::parse(&format!("{plain}~{proof}"), a).is_err());
    }
}
