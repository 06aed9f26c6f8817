//! The signature of an answer. data.altinn.no signs a bare SHA-256 of the body
//! (`X-Signature-JWT` with `{"SHA256PayloadDigest": …}`: no time, audience, key id,
//! or binding to the request). The broker's signature travels in the same header,
//! so clients find it where they look, and binds what an answer means:
//!
//! - the body's SHA-256 (of the exact bytes sent, enveloped or not);
//! - the broker (`iss`), the requestor it answered (`aud`), the dataset and its
//!   version, the purpose, the accreditation or request id;
//! - the subject, as `SHA-256(jti ‖ 0x00 ‖ subject)`: who knows the subject checks
//!   it, a log of headers alone does not reveal it, and no two answers share a hash;
//! - the time, and a unique id;
//!
//! as an ES256 JWT (`typ` [`ANSWER_TYP`]) whose `kid` names a key of the broker's
//! published JWKS. [`verify`] is what a consumer (and `veksel broker verify`) runs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use veksel_proto::jws::{JwsError, Signer, Unverified, sign_jwt};
use veksel_proto::oauth::Jwks;

/// The JWS `typ` of an answer's signature.
pub const ANSWER_TYP: &str = "veksel-evidence+jwt";
/// The header an answer's signature travels in (data.altinn.no's name).
pub const SIGNATURE_HEADER: &str = "x-signature-jwt";
/// Longest signature looked at, bytes.
pub const MAX_SIGNATURE_LEN: usize = 8 * 1024;
/// Clock skew allowed for an answer from the future, seconds.
pub const SKEW_SECONDS: i64 = 10;

/// What an answer's signature says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerClaims {
    /// The broker.
    pub iss: String,
    /// The requestor answered.
    pub aud: String,
    /// The subject's digest (see [`subject_digest`]).
    pub sub: String,
    /// The dataset.
    pub dataset: String,
    /// Its version.
    pub dataset_version: u32,
    /// The purpose the answer was minimised for.
    pub purpose: String,
    /// The accreditation, or a direct harvest's request id.
    pub request: String,
    /// Signed at, Unix seconds.
    pub iat: i64,
    /// Unique id of the answer.
    pub jti: String,
    /// SHA-256 of the body, base64url.
    pub body_sha256: String,
}

/// `SHA-256(jti ‖ 0x00 ‖ subject)`, base64url.
pub fn subject_digest(jti: &str, subject: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(jti.as_bytes());
    ctx.update(&[0]);
    ctx.update(subject.as_bytes());
    URL_SAFE_NO_PAD.encode(ctx.finish().as_ref())
}

/// SHA-256 of a body, base64url.
pub fn body_digest(body: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body).as_ref())
}

/// Signs an answer's claims with the broker's key `kid`.
pub fn sign(signer: &dyn Signer, kid: &str, claims: &AnswerClaims) -> Result<String, JwsError> {
    let payload = serde_json::to_vec(claims).map_err(|e| JwsError::Signer(e.to_string()))?;
    sign_jwt(signer, kid, ANSWER_TYP, &payload)
}

/// What the consumer expects the answer to be.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The broker asked.
    pub issuer: &'a str,
    /// The requestor (the consumer itself, or whom it asked for).
    pub requestor: &'a str,
    /// The subject asked about.
    pub subject: &'a str,
    /// The dataset asked for.
    pub dataset: &'a str,
    /// The purpose given.
    pub purpose: &'a str,
    /// The dataset's version, where the consumer relies on one.
    pub dataset_version: Option<u32>,
    /// The accreditation or request id, where the consumer knows it. Without it an
    /// answer for the same subject, dataset and purpose verifies again within
    /// `max_age`: a consumer that must tell answers apart keeps their `jti`.
    pub request: Option<&'a str>,
}

/// Why an answer's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Not a JWS of the expected shape.
    #[error("the signature is malformed: {0}")]
    Malformed(String),
    /// The key is not in the broker's key set.
    #[error("the signature names key {0:?}, which the broker does not publish")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("the signature does not verify with the broker's key")]
    BadSignature,
    /// The body is not the one signed.
    #[error("the body is not the one signed (its SHA-256 differs)")]
    BodyChanged,
    /// A bound field differs from what was asked.
    #[error("the answer is for another {0}")]
    Mismatch(&'static str),
    /// Signed too long ago, or in the future.
    #[error("the answer was signed at {0}, outside the accepted window")]
    Time(i64),
}

impl From<JwsError> for AnswerError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::BadSignature => Self::BadSignature,
            other => Self::Malformed(other.to_string()),
        }
    }
}

/// Verifies an answer's signature against its body, the broker's key set and what
/// was asked, at `now` (Unix seconds), accepting answers signed at most `max_age`
/// seconds ago. Returns the claims.
pub fn verify(
    signature: &str,
    body: &[u8],
    keys: &Jwks,
    expected: &Expected<'_>,
    now: i64,
    max_age: i64,
) -> Result<AnswerClaims, AnswerError> {
    if max_age < 0 {
        return Err(AnswerError::Malformed(
            "the oldest accepted age must not be negative".into(),
        ));
    }
    if signature.len() > MAX_SIGNATURE_LEN {
        return Err(AnswerError::Malformed(format!(
            "longer than {MAX_SIGNATURE_LEN} bytes"
        )));
    }
    let jws = Unverified::parse(signature.trim(), None)?;
    if jws.header.typ.as_deref() != Some(ANSWER_TYP) {
        return Err(AnswerError::Malformed(format!(
            "typ is {:?}, not {ANSWER_TYP}",
            jws.header.typ
        )));
    }
    let kid = jws.header.kid.clone().unwrap_or_default();
    let key = keys
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| AnswerError::UnknownKey(kid.clone()))?;
    let point = key
        .point()
        .map_err(|e| AnswerError::Malformed(e.to_string()))?;
    let payload = jws.verify(&point)?;
    let claims: AnswerClaims = serde_json::from_slice(&payload)
        .map_err(|e| AnswerError::Malformed(format!("claims: {e}")))?;
    if !ct_eq(&claims.body_sha256, &body_digest(body)) {
        return Err(AnswerError::BodyChanged);
    }
    let checks = [
        (claims.iss == expected.issuer, "broker (iss)"),
        (claims.aud == expected.requestor, "requestor (aud)"),
        (
            ct_eq(&claims.sub, &subject_digest(&claims.jti, expected.subject)),
            "subject (sub)",
        ),
        (claims.dataset == expected.dataset, "dataset"),
        (claims.purpose == expected.purpose, "purpose"),
        (
            expected
                .dataset_version
                .is_none_or(|v| claims.dataset_version == v),
            "dataset version",
        ),
        (
            expected.request.is_none_or(|r| claims.request == r),
            "request",
        ),
    ];
    if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(AnswerError::Mismatch(what));
    }
    if claims.iat > now + SKEW_SECONDS || claims.iat < now - max_age {
        return Err(AnswerError::Time(claims.iat));
    }
    Ok(claims)
}

/// Whether two digests are the same, in time independent of where they differ.
fn ct_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use veksel_proto::jws::{SoftwareSigner, generate_p256_pkcs8};
    use veksel_proto::oauth::Jwk;

    fn key() -> (SoftwareSigner, Jwk) {
        let signer = SoftwareSigner::from_pkcs8(&generate_p256_pkcs8().unwrap(), vec![]).unwrap();
        let jwk = Jwk::es256(&signer.public_key()).unwrap();
        (signer, jwk)
    }

    const BODY: &[u8] = br#"{"evidenceValues":[{"evidenceValueName":"income","value":412000}]}"#;
    const SUBJECT: &str = "01017012345";

    fn claims(now: i64) -> AnswerClaims {
        let jti = "5d1c1c0e-2f0a-4f7e-9a35-6f1e0a3c7b21".to_owned();
        AnswerClaims {
            iss: "https://broker.dev.example".into(),
            aud: "DEV/MUN/30000003".into(),
            sub: subject_digest(&jti, SUBJECT),
            dataset: "person-income".into(),
            dataset_version: 1,
            purpose: "housing-benefit".into(),
            request: "dh-1".into(),
            iat: now,
            jti,
            body_sha256: body_digest(BODY),
        }
    }

    fn expected() -> Expected<'static> {
        Expected {
            issuer: "https://broker.dev.example",
            requestor: "DEV/MUN/30000003",
            subject: SUBJECT,
            dataset: "person-income",
            purpose: "housing-benefit",
            dataset_version: Some(1),
            request: Some("dh-1"),
        }
    }

    #[test]
    fn an_answer_verifies_and_every_bound_field_is_checked() {
        let (signer, jwk) = key();
        let keys = Jwks {
            keys: vec![jwk.clone()],
        };
        let now = 1_796_601_600;
        let jws = sign(&signer, &jwk.kid, &claims(now)).unwrap();
        let ok = verify(&jws, BODY, &keys, &expected(), now, 300).unwrap();
        assert_eq!(ok, claims(now));
        // The subject's number is not in the signature.
        let payload = Unverified::parse(&jws, None)
            .unwrap()
            .unverified_payload()
            .unwrap();
        assert!(!String::from_utf8(payload).unwrap().contains(SUBJECT));

        let refused = |body: &[u8], e: Expected<'_>, now_then: i64| {
            verify(&jws, body, &keys, &e, now_then, 300).unwrap_err()
        };
        let mut changed = BODY.to_vec();
        changed[40] ^= 1;
        assert_eq!(refused(&changed, expected(), now), AnswerError::BodyChanged);
        for (e, what) in [
            (
                Expected {
                    issuer: "https://other",
                    ..expected()
                },
                "broker (iss)",
            ),
            (
                Expected {
                    requestor: "DEV/MUN/30000004",
                    ..expected()
                },
                "requestor (aud)",
            ),
            (
                Expected {
                    subject: "01017012346",
                    ..expected()
                },
                "subject (sub)",
            ),
            (
                Expected {
                    dataset: "person-basic",
                    ..expected()
                },
                "dataset",
            ),
            (
                Expected {
                    purpose: "address-check",
                    ..expected()
                },
                "purpose",
            ),
            (
                Expected {
                    request: Some("dh-2"),
                    ..expected()
                },
                "request",
            ),
            (
                Expected {
                    dataset_version: Some(2),
                    ..expected()
                },
                "dataset version",
            ),
        ] {
            assert_eq!(refused(BODY, e, now), AnswerError::Mismatch(what));
        }
        assert!(
            verify(
                &jws,
                BODY,
                &keys,
                &Expected {
                    request: None,
                    ..expected()
                },
                now,
                300
            )
            .is_ok()
        );
        assert_eq!(refused(BODY, expected(), now + 301), AnswerError::Time(now));
        assert!(matches!(
            verify(&jws, BODY, &keys, &expected(), now, -1),
            Err(AnswerError::Malformed(m)) if m.contains("negative")
        ));
        assert_eq!(refused(BODY, expected(), now - 11), AnswerError::Time(now));
    }

    #[test]
    fn a_signature_by_another_key_or_of_another_shape_is_refused() {
        let (signer, jwk) = key();
        let (other_signer, other_jwk) = key();
        let keys = Jwks {
            keys: vec![jwk.clone()],
        };
        let now = 1_796_601_600;
        // Another key, under the published key's id.
        let forged = sign(&other_signer, &jwk.kid, &claims(now)).unwrap();
        assert_eq!(
            verify(&forged, BODY, &keys, &expected(), now, 300),
            Err(AnswerError::BadSignature)
        );
        // A key the broker does not publish.
        let unknown = sign(&other_signer, &other_jwk.kid, &claims(now)).unwrap();
        assert!(matches!(
            verify(&unknown, BODY, &keys, &expected(), now, 300),
            Err(AnswerError::UnknownKey(_))
        ));
        // An access token of the broker's key is not an answer's signature.
        let token = sign_jwt(
            &signer,
            &jwk.kid,
            "at+jwt",
            &serde_json::to_vec(&claims(now)).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            verify(&token, BODY, &keys, &expected(), now, 300),
            Err(AnswerError::Malformed(m)) if m.contains("typ")
        ));
        // data.altinn.no's bare digest, by the right key, is not enough.
        let bare = sign_jwt(
            &signer,
            &jwk.kid,
            ANSWER_TYP,
            format!(r#"{{"SHA256PayloadDigest":"{}"}}"#, body_digest(BODY)).as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            verify(&bare, BODY, &keys, &expected(), now, 300),
            Err(AnswerError::Malformed(m)) if m.contains("claims")
        ));
        // Garbage and oversize.
        for bad in ["", "a.b", "a.b.c", &"x".repeat(MAX_SIGNATURE_LEN + 1)] {
            assert!(matches!(
                verify(bad, BODY, &keys, &expected(), now, 300),
                Err(AnswerError::Malformed(_))
            ));
        }
    }
}
