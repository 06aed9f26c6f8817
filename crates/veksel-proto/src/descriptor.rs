//! Signed message descriptors: what a gateway signs for each request and response.
//!
//! A descriptor covers everything that gives a message its meaning — parties, method,
//! target, end-to-end headers, timestamps and the body's SHA-256 digest and length —
//! but not the body itself, so bodies can stream. The receiving gateway rebuilds the
//! descriptor from what it actually received and checks the sender's signature over
//! it; nothing is trusted from a separately shipped copy.
//!
//! The canonical bytes are the JSON serialisation of these structs: fields in
//! declaration order, no maps, no floats, so both sides produce identical bytes.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use veksel_id::{ClientId, GatewayId, ServiceId};

/// `typ` of a request descriptor.
pub const REQUEST_TYPE: &str = "veksel-request/1";
/// `typ` of a response descriptor.
pub const RESPONSE_TYPE: &str = "veksel-response/1";
/// JWS `cty` of a signed request descriptor.
pub const REQUEST_CTY: &str = "veksel-request+json";
/// JWS `cty` of a signed response descriptor.
pub const RESPONSE_CTY: &str = "veksel-response+json";

/// Digest and length of a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyDigest {
    /// SHA-256 of the body bytes, base64url without padding.
    pub sha256: String,
    /// Number of body bytes.
    pub length: u64,
}

/// Streams body bytes into a [`BodyDigest`].
pub struct BodyHasher {
    ctx: aws_lc_rs::digest::Context,
    length: u64,
}

impl std::fmt::Debug for BodyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyHasher")
            .field("length", &self.length)
            .finish()
    }
}

impl Default for BodyHasher {
    fn default() -> Self {
        Self {
            ctx: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            length: 0,
        }
    }
}

impl BodyHasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.ctx.update(bytes);
        self.length += bytes.len() as u64;
    }
    /// Bytes seen so far.
    pub fn length(&self) -> u64 {
        self.length
    }
    /// The digest of everything seen.
    pub fn finish(self) -> BodyDigest {
        BodyDigest {
            sha256: URL_SAFE_NO_PAD.encode(self.ctx.finish().as_ref()),
            length: self.length,
        }
    }
}

impl BodyDigest {
    /// Digest of an in-memory body.
    pub fn of(bytes: &[u8]) -> Self {
        let mut h = BodyHasher::default();
        h.update(bytes);
        h.finish()
    }
}

/// What the consumer's gateway signs for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDescriptor {
    /// Always [`REQUEST_TYPE`].
    pub typ: String,
    /// `X-Road-Request-Id`: unique per exchange, chosen by the consumer gateway.
    pub request_id: String,
    /// `X-Road-Id`: the client's message id, or one the gateway generated.
    pub xroad_id: String,
    /// `X-Road-Client`.
    pub client: ClientId,
    /// The service called.
    pub service: ServiceId,
    /// HTTP method.
    pub method: String,
    /// Canonical request target `/r1/{service}{path}[?query]`.
    pub target: String,
    /// End-to-end headers in canonical order.
    pub headers: Vec<(String, String)>,
    /// `X-Road-UserId`.
    pub user_id: Option<String>,
    /// `X-Road-Issue`.
    pub issue: Option<String>,
    /// `X-Road-Represented-Party`.
    pub represented_party: Option<String>,
    /// The person the information system acts for, verified by both gateways from
    /// their ID token; absent (and left out of the canonical bytes) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<crate::person::VerifiedPerson>,
    /// Gateway that sends the request.
    pub consumer_gateway: GatewayId,
    /// Gateway the request is addressed to.
    pub provider_gateway: GatewayId,
    /// When the consumer gateway created the request, Unix milliseconds.
    pub created_at_ms: i64,
    /// The request body.
    pub body: BodyDigest,
}

/// What the provider's gateway signs for a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseDescriptor {
    /// Always [`RESPONSE_TYPE`].
    pub typ: String,
    /// Same as the request's.
    pub request_id: String,
    /// [`request_hash`] of the request descriptor: binds the response to it.
    pub request_hash: String,
    /// Same as the request's.
    pub xroad_id: String,
    /// Same as the request's.
    pub client: ClientId,
    /// Same as the request's.
    pub service: ServiceId,
    /// HTTP status from the provider's information system.
    pub status: u16,
    /// End-to-end response headers in canonical order.
    pub headers: Vec<(String, String)>,
    /// Gateway that answered.
    pub provider_gateway: GatewayId,
    /// When the provider gateway finished the response, Unix milliseconds.
    pub created_at_ms: i64,
    /// The response body.
    pub body: BodyDigest,
}

/// Serialises a descriptor to its canonical bytes.
pub fn canonical_bytes<T: Serialize>(descriptor: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no
    // custom serialisers that error.
    serde_json::to_vec(descriptor).unwrap_or_default()
}

/// `X-Road-Request-Hash`: standard base64 of SHA-512 over the canonical request
/// descriptor bytes. Anyone holding the logged descriptor can recompute it.
pub fn request_hash(canonical_request: &[u8]) -> String {
    STANDARD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, canonical_request).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RequestDescriptor {
        RequestDescriptor {
            typ: REQUEST_TYPE.into(),
            request_id: "r".into(),
            xroad_id: "x".into(),
            client: "GL/GOV/1/a".parse().unwrap(),
            service: "GL/GOV/2/b/svc".parse().unwrap(),
            method: "GET".into(),
            target: "/r1/GL/GOV/2/b/svc/x".into(),
            headers: vec![("accept".into(), "application/json".into())],
            user_id: None,
            issue: Some("case-1".into()),
            represented_party: None,
            person: None,
            consumer_gateway: "GL/GOV/1/gw".parse().unwrap(),
            provider_gateway: "GL/GOV/2/gw".parse().unwrap(),
            created_at_ms: 1,
            body: BodyDigest::of(b""),
        }
    }

    #[test]
    fn canonical_bytes_are_stable_and_round_trip() {
        let a = canonical_bytes(&req());
        assert_eq!(a, canonical_bytes(&req()));
        let back: RequestDescriptor = serde_json::from_slice(&a).unwrap();
        assert_eq!(back, req());
        let text = String::from_utf8(a).unwrap();
        assert!(
            text.starts_with(r#"{"typ":"veksel-request/1","request_id":"r""#),
            "{text}"
        );
    }

    #[test]
    fn empty_body_digest_is_sha256_of_nothing() {
        assert_eq!(
            BodyDigest::of(b"").sha256,
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        let mut h = BodyHasher::default();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), BodyDigest::of(b"abc"));
    }

    #[test]
    fn request_hash_changes_with_any_field() {
        let base = request_hash(&canonical_bytes(&req()));
        let mut r = req();
        r.headers.push(("x".into(), "y".into()));
        assert_ne!(request_hash(&canonical_bytes(&r)), base);
        assert_eq!(STANDARD.decode(&base).unwrap().len(), 64);
    }
}
