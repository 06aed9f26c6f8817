//! JSON Web Signatures (RFC 7515), compact serialisation, with detached payloads
//! (RFC 7515 Appendix F) for message descriptors.
//!
//! Written here rather than taken from a JWT crate because veksel signs arbitrary
//! JSON documents and detached descriptors, not JWT claim sets, and needs the signer
//! behind a trait (key file today, PKCS#11 later). Only ES256 is accepted: one
//! algorithm, pinned, so there is no algorithm confusion to exploit.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

/// The one signature algorithm veksel uses: ECDSA P-256 with SHA-256.
pub const ES256: &str = "ES256";

/// Longest protected header accepted (it carries a certificate chain).
pub const MAX_HEADER_LEN: usize = 16 * 1024;

/// Why a JWS could not be made or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three dot-separated base64url parts.
    #[error("malformed JWS: {0}")]
    Malformed(&'static str),
    /// The algorithm is not ES256.
    #[error("unsupported JWS algorithm {0:?}; only ES256 is accepted")]
    UnsupportedAlgorithm(String),
    /// The signature does not verify with the given key.
    #[error("JWS signature does not verify")]
    BadSignature,
    /// The public key is not a P-256 point.
    #[error("verification key is not an ECDSA P-256 public key")]
    BadKey,
    /// The signer failed.
    #[error("signing failed: {0}")]
    Signer(String),
    /// The header asks for an extension this verifier does not implement.
    #[error("unsupported JWS header: {0}")]
    UnsupportedCritical(&'static str),
}

/// Something that makes ES256 signatures: a key file, an HSM, a batch signer.
pub trait Signer: Send + Sync + std::fmt::Debug {
    /// Signs `message` and returns the raw `r || s` signature (64 bytes).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwsError>;
    /// The signer's certificate chain, leaf first, DER.
    fn cert_chain(&self) -> &[Vec<u8>];
}

/// The JOSE protected header veksel writes and reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always `ES256`.
    pub alg: String,
    /// Media type of the whole JWS (RFC 7515 §4.1.9), e.g. `at+jwt` for access
    /// tokens (RFC 9068); veksel's own messages leave it out.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub typ: Option<String>,
    /// Media type of the signed content, e.g. `veksel-request+json`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cty: Option<String>,
    /// SHA-256 thumbprint of the signing certificate, base64url.
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none", default)]
    pub x5t_s256: Option<String>,
    /// The signing certificate chain, standard base64 DER, leaf first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub x5c: Vec<String>,
    /// A key registered under this id (OAuth client assertions); veksel's own
    /// messages name their certificate instead.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kid: Option<String>,
    /// RFC 7515 §4.1.11 `crit`: extensions the verifier must understand. veksel
    /// understands none, so a header that has it is refused; never written.
    #[serde(skip_serializing, default)]
    pub crit: Option<serde_json::Value>,
    /// RFC 7797 `b64`: an unencoded payload changes what is signed; veksel always
    /// signs the base64url payload, so a header that has it is refused; never written.
    #[serde(skip_serializing, default)]
    pub b64: Option<serde_json::Value>,
}

impl Header {
    /// Decodes the `x5c` chain.
    pub fn chain_der(&self) -> Result<Vec<Vec<u8>>, JwsError> {
        self.x5c
            .iter()
            .map(|c| {
                STANDARD
                    .decode(c)
                    .map_err(|_| JwsError::Malformed("x5c is not base64"))
            })
            .collect()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwsError::Malformed("a part is not base64url"))
}

/// SHA-256 thumbprint of a DER certificate, base64url (the `x5t#S256` value).
pub fn thumbprint(cert_der: &[u8]) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der).as_ref())
}

fn header_for(signer: &dyn Signer, cty: &str, with_chain: bool) -> Header {
    let chain = signer.cert_chain();
    Header {
        alg: ES256.to_owned(),
        typ: None,
        cty: Some(cty.to_owned()),
        x5t_s256: chain.first().map(|c| thumbprint(c)),
        x5c: if with_chain {
            chain.iter().map(|c| STANDARD.encode(c)).collect()
        } else {
            Vec::new()
        },
        kid: None,
        crit: None,
        b64: None,
    }
}

fn signing_input(header_b64: &str, payload_b64: &str) -> String {
    format!("{header_b64}.{payload_b64}")
}

/// Signs `payload` and returns the compact serialisation `header.payload.signature`.
pub fn sign_compact(
    signer: &dyn Signer,
    cty: &str,
    with_chain: bool,
    payload: &[u8],
) -> Result<String, JwsError> {
    sign_with_header(signer, &header_for(signer, cty, with_chain), payload)
}

/// Signs a JWT (RFC 7519) whose header names the key by `kid` and the token's type
/// by `typ`, as OAuth access tokens and ID tokens do: their verifiers find the key in
/// a JWKS, not in a certificate chain.
pub fn sign_jwt(
    signer: &dyn Signer,
    kid: &str,
    typ: &str,
    claims: &[u8],
) -> Result<String, JwsError> {
    let header = Header {
        alg: ES256.to_owned(),
        typ: Some(typ.to_owned()),
        cty: None,
        x5t_s256: None,
        x5c: Vec::new(),
        kid: Some(kid.to_owned()),
        crit: None,
        b64: None,
    };
    sign_with_header(signer, &header, claims)
}

/// Signs a JWT whose header carries the signer's certificate chain (`x5c`), as a
/// client assertion does when the token service is to validate the chain.
pub fn sign_jwt_with_chain(signer: &dyn Signer, claims: &[u8]) -> Result<String, JwsError> {
    let header = Header {
        alg: ES256.to_owned(),
        typ: Some("JWT".to_owned()),
        cty: None,
        x5t_s256: None,
        x5c: signer
            .cert_chain()
            .iter()
            .map(|c| STANDARD.encode(c))
            .collect(),
        kid: None,
        crit: None,
        b64: None,
    };
    sign_with_header(signer, &header, claims)
}

fn sign_with_header(
    signer: &dyn Signer,
    header: &Header,
    payload: &[u8],
) -> Result<String, JwsError> {
    let header = serde_json::to_vec(header).map_err(|e| JwsError::Signer(e.to_string()))?;
    let (h, p) = (b64(&header), b64(payload));
    let input = signing_input(&h, &p);
    let sig = signer.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64(&sig)))
}

/// Signs `payload` and returns the detached form `header..signature`.
pub fn sign_detached(
    signer: &dyn Signer,
    cty: &str,
    with_chain: bool,
    payload: &[u8],
) -> Result<String, JwsError> {
    let compact = sign_compact(signer, cty, with_chain, payload)?;
    let mut parts = compact.split('.');
    let (h, _, s) = (parts.next(), parts.next(), parts.next());
    match (h, s) {
        (Some(h), Some(s)) => Ok(format!("{h}..{s}")),
        _ => Err(JwsError::Malformed(
            "internal: compact form has no three parts",
        )),
    }
}

/// A parsed JWS whose signature is not yet checked.
#[derive(Debug, Clone)]
pub struct Unverified {
    /// The protected header.
    pub header: Header,
    header_b64: String,
    payload_b64: String,
    signature: Vec<u8>,
}

impl Unverified {
    /// Parses a compact JWS. For a detached JWS, pass the payload separately.
    pub fn parse(jws: &str, detached_payload: Option<&[u8]>) -> Result<Self, JwsError> {
        let mut parts = jws.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed("expected three '.'-separated parts"));
        };
        if h.len() > MAX_HEADER_LEN {
            return Err(JwsError::Malformed("protected header too long"));
        }
        let header: Header = serde_json::from_slice(&unb64(h)?)
            .map_err(|_| JwsError::Malformed("protected header is not the expected JSON"))?;
        if header.alg != ES256 {
            return Err(JwsError::UnsupportedAlgorithm(header.alg));
        }
        if header.crit.is_some() {
            return Err(JwsError::UnsupportedCritical(
                "the header names critical extensions (crit); none are understood",
            ));
        }
        if header.b64.is_some() {
            return Err(JwsError::UnsupportedCritical(
                "the header sets b64 (RFC 7797); only base64url payloads are signed",
            ));
        }
        let payload_b64 = match detached_payload {
            Some(payload) => {
                if !p.is_empty() {
                    return Err(JwsError::Malformed("detached JWS carries a payload"));
                }
                b64(payload)
            }
            None => p.to_owned(),
        };
        Ok(Self {
            header,
            header_b64: h.to_owned(),
            payload_b64,
            signature: unb64(s)?,
        })
    }

    /// A digest of this JWS with the key that is to verify it: the same compact JWS
    /// checked against the same key gives the same value (see
    /// [`crate::batch::VerifiedBatches`]).
    pub fn fingerprint(&self, public_key_point: &[u8]) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [
            self.header_b64.as_bytes(),
            b".",
            self.payload_b64.as_bytes(),
            b".",
            &self.signature,
            b".",
            public_key_point,
        ] {
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// The payload before any signature check: for routing and display only.
    pub fn unverified_payload(&self) -> Result<Vec<u8>, JwsError> {
        unb64(&self.payload_b64)
    }

    /// Verifies the signature with an uncompressed P-256 public key point and
    /// returns the payload.
    pub fn verify(&self, public_key_point: &[u8]) -> Result<Vec<u8>, JwsError> {
        if public_key_point.len() != 65 || public_key_point.first() != Some(&4) {
            return Err(JwsError::BadKey);
        }
        let key = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            public_key_point,
        );
        let input = signing_input(&self.header_b64, &self.payload_b64);
        key.verify(input.as_bytes(), &self.signature)
            .map_err(|_| JwsError::BadSignature)?;
        unb64(&self.payload_b64)
    }
}

/// A software ES256 signer over a PKCS#8 key, for key files and tests.
pub struct SoftwareSigner {
    key: aws_lc_rs::signature::EcdsaKeyPair,
    chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key itself never appears in debug output or logs.
        f.debug_struct("SoftwareSigner")
            .field("chain_len", &self.chain.len())
            .finish()
    }
}

impl SoftwareSigner {
    /// Loads a P-256 key from PKCS#8 DER together with its certificate chain.
    pub fn from_pkcs8(pkcs8_der: &[u8], chain: Vec<Vec<u8>>) -> Result<Self, JwsError> {
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8_der,
        )
        .map_err(|_| JwsError::BadKey)?;
        Ok(Self { key, chain })
    }

    /// The uncompressed public key point.
    pub fn public_key(&self) -> Vec<u8> {
        use aws_lc_rs::signature::KeyPair;
        self.key.public_key().as_ref().to_vec()
    }
}

impl Signer for SoftwareSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwsError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.key
            .sign(&rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| JwsError::Signer("ECDSA signing failed".into()))
    }
    fn cert_chain(&self) -> &[Vec<u8>] {
        &self.chain
    }
}

/// Generates a fresh P-256 key as PKCS#8 DER (used by tests and key set-up).
pub fn generate_p256_pkcs8() -> Result<Vec<u8>, JwsError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .map(|d| d.as_ref().to_vec())
    .map_err(|_| JwsError::Signer("key generation failed".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> SoftwareSigner {
        SoftwareSigner::from_pkcs8(&generate_p256_pkcs8().unwrap(), vec![b"cert".to_vec()]).unwrap()
    }

    #[test]
    fn compact_round_trip() {
        let s = signer();
        let jws = sign_compact(&s, "application/json", true, b"{\"a\":1}").unwrap();
        let u = Unverified::parse(&jws, None).unwrap();
        assert_eq!(u.header.x5c, vec![STANDARD.encode(b"cert")]);
        assert_eq!(
            u.header.x5t_s256.as_deref(),
            Some(thumbprint(b"cert").as_str())
        );
        assert_eq!(u.verify(&s.public_key()).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn detached_round_trip_and_tamper() {
        let s = signer();
        let jws = sign_detached(&s, "x", false, b"payload").unwrap();
        assert!(jws.contains(".."));
        let u = Unverified::parse(&jws, Some(b"payload")).unwrap();
        assert!(u.verify(&s.public_key()).is_ok());
        let u = Unverified::parse(&jws, Some(b"payloaD")).unwrap();
        assert_eq!(u.verify(&s.public_key()), Err(JwsError::BadSignature));
        let other = signer();
        let u = Unverified::parse(&jws, Some(b"payload")).unwrap();
        assert_eq!(u.verify(&other.public_key()), Err(JwsError::BadSignature));
    }

    #[test]
    fn refuses_other_algorithms_and_garbage() {
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(b"x"));
        assert!(matches!(
            Unverified::parse(&none, None),
            Err(JwsError::UnsupportedAlgorithm(a)) if a == "none"
        ));
        // RFC 7515 §4.1.11: a crit the verifier does not understand is refused, and
        // so is b64 (RFC 7797), which would change what the signature covers.
        for header in [
            r#"{"alg":"ES256","crit":["b64"],"b64":false}"#,
            r#"{"alg":"ES256","crit":["exp"]}"#,
            r#"{"alg":"ES256","crit":[]}"#,
            r#"{"alg":"ES256","b64":true}"#,
        ] {
            let jws = format!("{}.{}.{}", b64(header.as_bytes()), b64(b"x"), b64(&[0; 64]));
            assert!(
                matches!(
                    Unverified::parse(&jws, None),
                    Err(JwsError::UnsupportedCritical(_))
                ),
                "{header}"
            );
        }
        assert!(Unverified::parse("a.b", None).is_err());
        assert!(Unverified::parse("a.b.c.d", None).is_err());
        assert!(Unverified::parse("!!.b.c", None).is_err());
        let s = signer();
        let jws = sign_compact(&s, "x", false, b"p").unwrap();
        assert!(
            Unverified::parse(&jws, Some(b"p")).is_err(),
            "attached payload given twice"
        );
        assert_eq!(
            Unverified::parse(&jws, None).unwrap().verify(&[4; 10]),
            Err(JwsError::BadKey)
        );
    }
}
