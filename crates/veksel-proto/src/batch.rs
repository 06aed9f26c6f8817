//! Batch signatures: when signing is slow (a key in an HSM), many message descriptors
//! share one ES256 signature over the Merkle root of a batch, and each message carries
//! its own inclusion proof, so throughput is not capped at the key's signing rate.
//!
//! Form: `<compact JWS>~<proof>`. The compact JWS (content type [`BATCH_CTY`],
//! signer's chain in `x5c`) signs a [`Manifest`] `{"typ":"veksel-batch/1","size",
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
        [(cty, payload)] => Ok(vec![sign_detached(signer, cty, true, payload)?]),
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
            let jws = sign_compact(signer, BATCH_CTY, true, &manifest)?;
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
        match self {
            Self::Single(jws) => jws.verify(public_key_point).map(|_| ()),
            Self::Batch { jws, proof, leaf } => {
                let manifest: Manifest = serde_json::from_slice(&jws.verify(public_key_point)?)
                    .map_err(|_| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::SoftwareSigner;

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
                assert_eq!(m.header().x5c.len(), 1);
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
