//! The message between gateways, without I/O: the header names, the heads and
//! trailers of requests and responses as each side writes and reads them, the time
//! window, the id and duplicate-header rules, and the descriptors both sides rebuild
//! from what they send and receive.
//!
//! A request crosses as an HTTP/2 request to the provider's gateway: the r1 target,
//! the end-to-end headers of the information system, the X-Road fields and veksel's
//! own headers in the head; the body as it came; the member's detached signature over
//! the [`RequestDescriptor`] and the body's digest in the trailers. The answer comes
//! back the same way: status, end-to-end and X-Road headers in the head, body, then
//! the provider's signature over the [`ResponseDescriptor`], its time and the body's
//! digest in the trailers. Each refusal here is a [`PeerError`] with its X-Road fault
//! code; the gateway adds only what needs its state (keys, configuration, database).

use crate::descriptor::{
    BodyDigest, REQUEST_TYPE, RESPONSE_TYPE, RequestDescriptor, ResponseDescriptor,
};
use crate::headers::{self as xh, descriptor_headers, end_to_end};
use crate::r1::{self, R1Target};
use http::{HeaderMap, HeaderName, HeaderValue};
use veksel_id::{ClientId, Fault, FaultCode, GatewayId, Origin, ServiceId};

/// When the sender created the message, Unix ms (request header; response trailer).
pub const VEKSEL_CREATED_AT: &str = "veksel-created-at";
/// The consumer gateway's id (request header).
pub const VEKSEL_CONSUMER_GATEWAY: &str = "veksel-consumer-gateway";
/// Detached JWS over the descriptor (trailer).
pub const VEKSEL_SIGNATURE: &str = "veksel-signature";
/// SHA-256 of the body as the sender computed it (trailer), for precise errors.
pub const VEKSEL_BODY_DIGEST: &str = "veksel-body-digest";
/// OCSP responses for the sender's TLS certificates, each `{cert sha256 hex} {b64}`;
/// the one header that repeats (one value per certificate during a renewal).
pub const VEKSEL_OCSP_AUTH: &str = "veksel-ocsp-auth";
/// OCSP response for the certificate that signs the descriptor.
pub const VEKSEL_OCSP_SIGNING: &str = "veksel-ocsp-signing";

/// The signer's certificate chain, leaf first: standard base64 DER certificates
/// separated by commas. Signatures name their certificate (`x5t#S256`) and do not
/// carry it; the chain travels beside the message in this header, which repeats on
/// every message of a signer and so costs a few bytes after the first on a
/// connection (HPACK).
pub const VEKSEL_SIGNING_CHAIN: &str = "veksel-signing-chain";

/// A person's ID token: sent by the information system to its gateway, and by that
/// gateway to the provider's, which verifies it again (see [`crate::person`]).
pub const VEKSEL_ID_TOKEN: &str = "veksel-id-token";

/// Most certificates in a signing chain.
pub const MAX_CHAIN_CERTS: usize = 4;

/// The value of [`VEKSEL_SIGNING_CHAIN`] for a chain.
pub fn encode_chain(chain: &[Vec<u8>]) -> String {
    use base64::Engine;
    chain
        .iter()
        .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
        .collect::<Vec<_>>()
        .join(",")
}

/// The signing chain a message carries, if it carries one.
pub fn decode_chain(headers: &HeaderMap) -> Result<Option<Vec<Vec<u8>>>, PeerError> {
    use base64::Engine;
    let Some(value) = headers.get(VEKSEL_SIGNING_CHAIN) else {
        return Ok(None);
    };
    let bad = |why| PeerError::Malformed {
        header: VEKSEL_SIGNING_CHAIN,
        why,
    };
    let text = value.to_str().map_err(|_| bad("is not ASCII"))?;
    let certs: Vec<&str> = text.split(',').map(str::trim).collect();
    if certs.is_empty() || certs.len() > MAX_CHAIN_CERTS {
        return Err(bad("must hold 1 to 4 certificates"));
    }
    certs
        .into_iter()
        .map(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c)
                .ok()
                .filter(|der| !der.is_empty())
                .ok_or_else(|| bad("holds a certificate that is not base64"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Why a message between gateways is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// A header every gateway sends is missing.
    #[error("the message between gateways lacks the {0} header")]
    Missing(&'static str),
    /// A header a gateway sends once appears again.
    #[error("header {0} appears more than once")]
    Repeated(String),
    /// A header's value is not what a gateway writes.
    #[error("{header} {why}")]
    Malformed {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The client names a member; veksel's clients are subsystems.
    #[error("the client must be a subsystem")]
    ClientNotSubsystem,
    /// The target, an identifier or an X-Road field breaks an r1 rule (the shared
    /// parsers' refusal, with their code).
    #[error("{1}")]
    R1(FaultCode, String),
    /// The request was created outside the accepted window.
    #[error(
        "the request was created at {} and is outside the accepted window (now {}, lifetime {ttl_ms} ms, skew {skew_ms} ms)",
        crate::rfc3339(*created_at_ms), crate::rfc3339(*now_ms)
    )]
    OutsideWindow {
        /// When it says it was created, Unix ms.
        created_at_ms: i64,
        /// Now, Unix ms.
        now_ms: i64,
        /// How long a request stays valid.
        ttl_ms: i64,
        /// How far ahead a sender's clock may be.
        skew_ms: i64,
    },
    /// The response belongs to another request (its id or request hash differs).
    #[error("Response message hash does not match request message")]
    Inconsistent,
    /// The signature or the signature time is missing.
    #[error("the {0} carries no signature{1}")]
    Unsigned(&'static str, &'static str),
    /// The body does not match the digest the sender signed.
    #[error("the {0} body does not match the digest the {1} signed")]
    BodyDigest(&'static str, &'static str),
}

impl PeerError {
    /// The X-Road fault code of this refusal.
    pub fn code(&self) -> FaultCode {
        match self {
            PeerError::Missing(_) | PeerError::Repeated(_) | PeerError::Malformed { .. } => {
                FaultCode::InvalidRequest
            }
            PeerError::ClientNotSubsystem => FaultCode::InvalidClientIdentifier,
            PeerError::R1(code, _) => *code,
            PeerError::OutsideWindow { .. } => FaultCode::ReplayedMessage,
            PeerError::Inconsistent => FaultCode::InconsistentResponse,
            PeerError::Unsigned(..) => FaultCode::MissingSignature,
            PeerError::BodyDigest(..) => FaultCode::InvalidBodyDigest,
        }
    }

    /// The fault as the side that found it reports it.
    pub fn at(self, origin: Origin) -> Fault {
        Fault {
            origin,
            code: self.code(),
            message: self.to_string(),
        }
    }
}

impl From<Fault> for PeerError {
    fn from(f: Fault) -> Self {
        PeerError::R1(f.code, f.message)
    }
}

/// Inserts a header whose value the protocol produced (ids, numbers, base64): such a
/// value is always a valid header value.
fn put(map: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        map.insert(HeaderName::from_static(name), v);
    }
}

/// Inserts a value unique to one message (an id, a time, a hash, a signature). It is
/// sent outside HPACK's dynamic table (never indexed): indexing values that never
/// repeat would evict the large ones that do (OCSP responses, identifiers), which a
/// connection then sends in full with every message.
fn put_unique(map: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(mut v) = HeaderValue::from_str(value) {
        v.set_sensitive(true);
        map.insert(HeaderName::from_static(name), v);
    }
}

fn required<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, PeerError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(PeerError::Missing(name))
}

/// Refuses any X-Road or veksel header that appears twice: a gateway sends each once,
/// so a repeat can only be an attempt to make one side check a value while something
/// downstream reads another. Only [`VEKSEL_OCSP_AUTH`] repeats (one value per
/// certificate, each labelled).
fn refuse_repeats(headers: &HeaderMap) -> Result<(), PeerError> {
    for name in headers.keys() {
        let n = name.as_str();
        if xh::is_protocol_header(n)
            && n != VEKSEL_OCSP_AUTH
            && headers.get_all(name).iter().nth(1).is_some()
        {
            return Err(PeerError::Repeated(n.to_owned()));
        }
    }
    Ok(())
}

/// The head of a request between gateways: what the consumer's gateway writes before
/// the body and the provider's gateway reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `X-Road-Request-Id`: a UUID the consumer's gateway chose.
    pub request_id: String,
    /// `X-Road-Id`: the client's message id, or one its gateway made.
    pub xroad_id: String,
    /// The calling subsystem.
    pub client: ClientId,
    /// The service and the path and query after it.
    pub target: R1Target,
    /// HTTP method.
    pub method: String,
    /// The information system's end-to-end headers, in canonical order, as sent
    /// (credentials in clear: they are for the provider's system).
    pub headers: Vec<(String, String)>,
    /// `X-Road-UserId`.
    pub user_id: Option<String>,
    /// `X-Road-Issue`.
    pub issue: Option<String>,
    /// `X-Road-Represented-Party`.
    pub represented_party: Option<String>,
    /// The person's ID token, as sent ([`VEKSEL_ID_TOKEN`]).
    pub id_token: Option<String>,
    /// The person that token names, once the gateway holding the head verified it:
    /// what the descriptor names. A head whose token went unverified builds a
    /// descriptor without the person, which the consumer's signature then fails.
    pub person: Option<crate::person::VerifiedPerson>,
    /// The consumer's gateway.
    pub consumer_gateway: GatewayId,
    /// When the consumer's gateway created the request, Unix ms.
    pub created_at_ms: i64,
}

impl RequestHead {
    /// Writes the head's headers: the end-to-end ones, then the X-Road fields and
    /// veksel's own. Content length and OCSP staples are the caller's.
    pub fn encode(&self, map: &mut HeaderMap) -> Result<(), PeerError> {
        xh::append_all(map, &self.headers)?;
        put(
            map,
            xh::X_ROAD_CLIENT,
            &r1::encode_id(&self.client.to_string()),
        );
        put_unique(map, xh::X_ROAD_ID, &self.xroad_id);
        put_unique(map, xh::X_ROAD_REQUEST_ID, &self.request_id);
        for (name, value) in [
            (xh::X_ROAD_USER_ID, &self.user_id),
            (xh::X_ROAD_ISSUE, &self.issue),
            (xh::X_ROAD_REPRESENTED_PARTY, &self.represented_party),
        ] {
            if let Some(v) = value {
                put(map, name, v);
            }
        }
        if let Some(token) = &self.id_token {
            // An information system sends the token; its gateway may not alter it.
            let value = HeaderValue::from_str(token).map_err(|_| PeerError::Malformed {
                header: VEKSEL_ID_TOKEN,
                why: "is not a visible ASCII header value",
            })?;
            map.insert(HeaderName::from_static(VEKSEL_ID_TOKEN), value);
        }
        put_unique(map, VEKSEL_CREATED_AT, &self.created_at_ms.to_string());
        put(
            map,
            VEKSEL_CONSUMER_GATEWAY,
            &self.consumer_gateway.to_string(),
        );
        Ok(())
    }

    /// Reads a head as the provider's gateway receives it, refusing what a gateway
    /// never sends: repeated protocol headers, a missing or malformed field, a client
    /// that is not a subsystem, too many or too long headers.
    pub fn decode(
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<Self, PeerError> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let target = r1::parse_target(path, query)?;
        xh::check_limits(headers)?;
        refuse_repeats(headers)?;
        let client = xh::client_id(headers)?;
        if !matches!(client, ClientId::Subsystem(_)) {
            return Err(PeerError::ClientNotSubsystem);
        }
        let request_id = required(headers, xh::X_ROAD_REQUEST_ID)?;
        if uuid::Uuid::parse_str(request_id).is_err() {
            return Err(PeerError::Malformed {
                header: "X-Road-Request-Id",
                why: "is not a UUID",
            });
        }
        let xroad_id =
            xh::optional_field(headers, xh::X_ROAD_ID)?.ok_or(PeerError::Missing("X-Road-Id"))?;
        let created_at_ms =
            required(headers, VEKSEL_CREATED_AT)?
                .parse()
                .map_err(|_| PeerError::Malformed {
                    header: VEKSEL_CREATED_AT,
                    why: "is not a number",
                })?;
        let consumer_gateway = required(headers, VEKSEL_CONSUMER_GATEWAY)?
            .parse()
            .map_err(|_| PeerError::Malformed {
                header: VEKSEL_CONSUMER_GATEWAY,
                why: "is not a gateway identifier",
            })?;
        Ok(Self {
            request_id: request_id.to_owned(),
            xroad_id,
            client,
            target,
            method: method.to_owned(),
            headers: end_to_end(headers),
            user_id: xh::optional_field(headers, xh::X_ROAD_USER_ID)?,
            issue: xh::optional_field(headers, xh::X_ROAD_ISSUE)?,
            represented_party: xh::optional_field(headers, xh::X_ROAD_REPRESENTED_PARTY)?,
            id_token: id_token(headers)?,
            person: None,
            consumer_gateway,
            created_at_ms,
        })
    }

    /// The descriptor the consumer's gateway signs and the provider's rebuilds, for a
    /// body with `digest` sent to `provider_gateway`.
    pub fn descriptor(&self, provider_gateway: &GatewayId, body: BodyDigest) -> RequestDescriptor {
        RequestDescriptor {
            typ: REQUEST_TYPE.to_owned(),
            request_id: self.request_id.clone(),
            xroad_id: self.xroad_id.clone(),
            client: self.client.clone(),
            service: self.target.service.clone(),
            method: self.method.clone(),
            target: self.target.canonical_target(),
            headers: descriptor_headers(&self.headers),
            user_id: self.user_id.clone(),
            issue: self.issue.clone(),
            represented_party: self.represented_party.clone(),
            person: self.person.clone(),
            consumer_gateway: self.consumer_gateway.clone(),
            provider_gateway: provider_gateway.clone(),
            created_at_ms: self.created_at_ms,
            body,
        }
    }
}

/// The [`VEKSEL_ID_TOKEN`] of a message, if it carries one (its repeats are refused
/// before).
pub fn id_token(headers: &HeaderMap) -> Result<Option<String>, PeerError> {
    headers
        .get(VEKSEL_ID_TOKEN)
        .map(|v| {
            v.to_str()
                .map(|t| t.trim().to_owned())
                .map_err(|_| PeerError::Malformed {
                    header: VEKSEL_ID_TOKEN,
                    why: "is not visible ASCII",
                })
        })
        .transpose()
}

/// Refuses a request created more than `ttl_ms` ago or more than `skew_ms` ahead.
pub fn check_window(
    created_at_ms: i64,
    now_ms: i64,
    ttl_ms: i64,
    skew_ms: i64,
) -> Result<(), PeerError> {
    if created_at_ms > now_ms.saturating_add(skew_ms)
        || created_at_ms.saturating_add(ttl_ms) < now_ms
    {
        return Err(PeerError::OutsideWindow {
            created_at_ms,
            now_ms,
            ttl_ms,
            skew_ms,
        });
    }
    Ok(())
}

/// Which message trailers belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The consumer's request, signed by the client's member.
    Request,
    /// The provider's response, signed by the service's member.
    Response,
}

impl Direction {
    fn message(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
    fn signer(self) -> &'static str {
        match self {
            Direction::Request => "client's gateway",
            Direction::Response => "provider",
        }
    }
}

/// The trailers of a signed message: the detached signature, the signature time
/// (responses; a request's is in its head) and the body's digest as the sender
/// computed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTrailers {
    /// The detached JWS over the descriptor.
    pub signature: String,
    /// When the provider signed the response, Unix ms (responses only).
    pub created_at_ms: Option<i64>,
    /// The body's SHA-256 as the sender computed it.
    pub body_digest: Option<String>,
}

impl SignedTrailers {
    /// Writes these into the head of an answer that is signed before it is sent (a
    /// small answer; see [`Commit`]).
    pub fn encode_into(&self, map: &mut HeaderMap) {
        map.extend(self.encode());
    }

    /// The trailers' headers.
    pub fn encode(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        put_unique(&mut map, VEKSEL_SIGNATURE, &self.signature);
        if let Some(at) = self.created_at_ms {
            put_unique(&mut map, VEKSEL_CREATED_AT, &at.to_string());
        }
        if let Some(d) = &self.body_digest {
            put_unique(&mut map, VEKSEL_BODY_DIGEST, d);
        }
        map
    }

    /// Reads the trailers of a message whose body had `digest`: one signature, one
    /// digest, and for a response its time; a digest that differs from the body's is
    /// refused before any signature is checked, with its own code.
    pub fn decode(
        trailers: Option<&HeaderMap>,
        direction: Direction,
        digest: &BodyDigest,
    ) -> Result<Self, PeerError> {
        let empty = HeaderMap::new();
        let t = trailers.unwrap_or(&empty);
        // One signature and one digest: the ones checked and logged.
        refuse_repeats(t)?;
        let text = |name| t.get(name).and_then(|v| v.to_str().ok());
        let created_at_ms = match direction {
            Direction::Request => None,
            Direction::Response => Some(
                text(VEKSEL_CREATED_AT)
                    .and_then(|v| v.parse().ok())
                    .ok_or(PeerError::Unsigned("response", " time"))?,
            ),
        };
        let body_digest = text(VEKSEL_BODY_DIGEST).map(str::to_owned);
        if body_digest.as_deref().is_some_and(|d| d != digest.sha256) {
            return Err(PeerError::BodyDigest(
                direction.message(),
                direction.signer(),
            ));
        }
        let signature = text(VEKSEL_SIGNATURE)
            .ok_or(PeerError::Unsigned("message", ""))?
            .to_owned();
        Ok(Self {
            signature,
            created_at_ms,
            body_digest,
        })
    }
}

/// Head of an answer signed in its head: the length of its body (with
/// [`VEKSEL_BODY_DIGEST`], what the signed descriptor says of the body, so the
/// consumer's gateway checks the signature before the body arrives).
pub const VEKSEL_BODY_LENGTH: &str = "veksel-body-length";

/// Trailer of an answer signed in its head: the provider's record of it is committed.
pub const VEKSEL_COMMITTED: &str = "veksel-committed";
/// Trailer of an answer signed in its head whose record the provider could not
/// commit: the fault's X-Road type (the answer must not be released).
pub const VEKSEL_ERROR: &str = "veksel-error";
/// The message of [`VEKSEL_ERROR`]'s fault.
pub const VEKSEL_ERROR_MESSAGE: &str = "veksel-error-message";

/// How a provider ends an answer whose signature it sent in the answer's head (a
/// small answer: see docs/protocol.md). The head leaves as soon as the answer is
/// signed; the body and these trailers follow once the provider's record is
/// committed (or the trailers alone, naming the fault, if it could not be). The
/// consumer's gateway checks the signature, and in metadata mode commits its own
/// record, while the provider commits; no byte of the body leaves the provider before
/// its record is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// The provider's record is committed.
    Committed,
    /// It is not: the provider's fault.
    Failed(Fault),
}

impl Commit {
    /// The trailers that say it.
    pub fn encode(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        match self {
            Commit::Committed => put(&mut map, VEKSEL_COMMITTED, "1"),
            Commit::Failed(fault) => {
                put(&mut map, VEKSEL_ERROR, &fault.type_string());
                // A header value is visible ASCII; the message is for people.
                let message: String = fault
                    .message
                    .chars()
                    .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
                    .collect();
                put_unique(&mut map, VEKSEL_ERROR_MESSAGE, &message);
            }
        }
        map
    }

    /// Reads the trailers of an answer signed in its head; none, or neither header,
    /// means the provider did not confirm its record.
    pub fn decode(trailers: Option<&HeaderMap>) -> Result<Self, PeerError> {
        let unconfirmed = PeerError::Malformed {
            header: VEKSEL_COMMITTED,
            why: "is missing: the provider did not confirm its record",
        };
        let t = trailers.ok_or(unconfirmed.clone())?;
        refuse_repeats(t)?;
        let text = |name| t.get(name).and_then(|v| v.to_str().ok());
        if let Some(kind) = text(VEKSEL_ERROR) {
            let (origin, code) = Fault::parse_type(kind).ok_or(PeerError::Malformed {
                header: VEKSEL_ERROR,
                why: "is not a fault type",
            })?;
            return Ok(Commit::Failed(Fault {
                origin,
                code,
                message: text(VEKSEL_ERROR_MESSAGE)
                    .unwrap_or("the provider's gateway could not commit its record")
                    .to_owned(),
            }));
        }
        match text(VEKSEL_COMMITTED) {
            Some("1") => Ok(Commit::Committed),
            _ => Err(unconfirmed),
        }
    }
}

/// The head of a response between gateways. The provider's gateway writes it to the
/// consumer's; the consumer's gateway writes the same X-Road headers to its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The request's id.
    pub request_id: String,
    /// The request descriptor's hash: binds the answer to the request.
    pub request_hash: String,
    /// The request's `X-Road-Id`.
    pub xroad_id: String,
    /// The calling subsystem.
    pub client: ClientId,
    /// The service called.
    pub service: ServiceId,
    /// The provider system's status.
    pub status: u16,
    /// The provider system's end-to-end headers, in canonical order, as sent.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The answer to `request` (whose canonical descriptor hashes to `request_hash`).
    pub fn answering(
        request: &RequestHead,
        request_hash: String,
        status: u16,
        headers: Vec<(String, String)>,
    ) -> Self {
        Self {
            request_id: request.request_id.clone(),
            request_hash,
            xroad_id: request.xroad_id.clone(),
            client: request.client.clone(),
            service: request.target.service.clone(),
            status,
            headers,
        }
    }

    /// Writes the end-to-end headers and the X-Road headers of a response.
    pub fn encode(&self, map: &mut HeaderMap) -> Result<(), PeerError> {
        xh::append_all(map, &self.headers)?;
        put_unique(map, xh::X_ROAD_ID, &self.xroad_id);
        put(
            map,
            xh::X_ROAD_CLIENT,
            &r1::encode_id(&self.client.to_string()),
        );
        put(
            map,
            xh::X_ROAD_SERVICE,
            &r1::encode_id(&self.service.to_string()),
        );
        put_unique(map, xh::X_ROAD_REQUEST_ID, &self.request_id);
        put_unique(map, xh::X_ROAD_REQUEST_HASH, &self.request_hash);
        Ok(())
    }

    /// Reads a response head as the consumer's gateway receives it for `request`
    /// (hashing to `request_hash`): an answer that names another request is refused.
    pub fn decode(
        request: &RequestHead,
        request_hash: &str,
        status: u16,
        headers: &HeaderMap,
    ) -> Result<Self, PeerError> {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        if text(xh::X_ROAD_REQUEST_HASH) != Some(request_hash)
            || text(xh::X_ROAD_REQUEST_ID) != Some(request.request_id.as_str())
        {
            return Err(PeerError::Inconsistent);
        }
        Ok(Self::answering(
            request,
            request_hash.to_owned(),
            status,
            end_to_end(headers),
        ))
    }

    /// The descriptor the provider signs and the consumer rebuilds.
    pub fn descriptor(
        &self,
        provider_gateway: &GatewayId,
        created_at_ms: i64,
        body: BodyDigest,
    ) -> ResponseDescriptor {
        ResponseDescriptor {
            typ: RESPONSE_TYPE.to_owned(),
            request_id: self.request_id.clone(),
            request_hash: self.request_hash.clone(),
            xroad_id: self.xroad_id.clone(),
            client: self.client.clone(),
            service: self.service.clone(),
            status: self.status,
            headers: descriptor_headers(&self.headers),
            provider_gateway: provider_gateway.clone(),
            created_at_ms,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{canonical_bytes, request_hash};

    fn head() -> RequestHead {
        RequestHead {
            request_id: "8c7b0a52-6f0e-4a4e-9d8e-1f2f3a4b5c6d".into(),
            xroad_id: "x-1".into(),
            client: "GL/MUN/3/casework".parse().unwrap(),
            target: r1::parse_target("/r1/GL/GOV/1/population/persons/0101", Some("a=1")).unwrap(),
            method: "GET".into(),
            headers: vec![
                ("accept".into(), "application/json".into()),
                ("authorization".into(), "Bearer t".into()),
            ],
            user_id: Some("GL0101".into()),
            issue: None,
            represented_party: None,
            id_token: Some("eyJ.eyJ.sig".into()),
            person: None,
            consumer_gateway: "GL/MUN/3/gw1".parse().unwrap(),
            created_at_ms: 1_800_000_000_000,
        }
    }

    fn encoded(h: &RequestHead) -> HeaderMap {
        let mut map = HeaderMap::new();
        h.encode(&mut map).unwrap();
        map
    }

    #[test]
    fn a_request_head_round_trips_and_both_sides_build_one_descriptor() {
        let h = head();
        let map = encoded(&h);
        let back = RequestHead::decode("GET", &h.target.canonical_target(), &map).unwrap();
        assert_eq!(back, h);
        let provider: GatewayId = "GL/GOV/1/gw1".parse().unwrap();
        let body = BodyDigest::of(b"");
        assert_eq!(
            canonical_bytes(&back.descriptor(&provider, body.clone())),
            canonical_bytes(&h.descriptor(&provider, body))
        );
    }

    #[test]
    fn request_heads_that_no_gateway_sends_are_refused_with_their_codes() {
        let h = head();
        let target = h.target.canonical_target();
        type Change = Box<dyn Fn(&mut HeaderMap)>;
        let cases: Vec<(Change, FaultCode)> = vec![
            (
                Box::new(|m| {
                    m.append(xh::X_ROAD_ID, HeaderValue::from_static("again"));
                }),
                FaultCode::InvalidRequest,
            ),
            (
                Box::new(|m| {
                    m.remove(VEKSEL_CREATED_AT);
                }),
                FaultCode::InvalidRequest,
            ),
            (
                Box::new(|m| {
                    m.insert(VEKSEL_CREATED_AT, HeaderValue::from_static("soon"));
                }),
                FaultCode::InvalidRequest,
            ),
            (
                Box::new(|m| {
                    m.insert(xh::X_ROAD_REQUEST_ID, HeaderValue::from_static("1"));
                }),
                FaultCode::InvalidRequest,
            ),
            (
                Box::new(|m| {
                    m.remove(xh::X_ROAD_ID);
                }),
                FaultCode::InvalidRequest,
            ),
            (
                Box::new(|m| {
                    m.insert(xh::X_ROAD_CLIENT, HeaderValue::from_static("GL/MUN/3"));
                }),
                FaultCode::InvalidClientIdentifier,
            ),
            (
                Box::new(|m| {
                    m.remove(xh::X_ROAD_CLIENT);
                }),
                FaultCode::MissingHeaderField,
            ),
            (
                Box::new(|m| {
                    for i in 0..120 {
                        m.insert(
                            HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                            HeaderValue::from_static("v"),
                        );
                    }
                }),
                FaultCode::TooLarge,
            ),
        ];
        for (i, (change, code)) in cases.into_iter().enumerate() {
            let mut map = encoded(&h);
            change(&mut map);
            let err = RequestHead::decode("GET", &target, &map).unwrap_err();
            assert_eq!(err.code(), code, "case {i}: {err}");
        }
        // The one repeating header.
        let mut map = encoded(&h);
        map.append(VEKSEL_OCSP_AUTH, HeaderValue::from_static("a b"));
        map.append(VEKSEL_OCSP_AUTH, HeaderValue::from_static("c d"));
        assert!(RequestHead::decode("GET", &target, &map).is_ok());
        let mut map = encoded(&h);
        map.append(VEKSEL_SIGNATURE, HeaderValue::from_static("a"));
        map.append(VEKSEL_SIGNATURE, HeaderValue::from_static("b"));
        assert_eq!(
            RequestHead::decode("GET", &target, &map).unwrap_err(),
            PeerError::Repeated(VEKSEL_SIGNATURE.into())
        );
    }

    #[test]
    fn signing_chains_round_trip_and_garbage_is_refused() {
        let chain = vec![b"leaf".to_vec(), b"ca".to_vec()];
        let mut map = HeaderMap::new();
        map.insert(
            VEKSEL_SIGNING_CHAIN,
            HeaderValue::from_str(&encode_chain(&chain)).unwrap(),
        );
        assert_eq!(decode_chain(&map).unwrap(), Some(chain));
        assert_eq!(decode_chain(&HeaderMap::new()).unwrap(), None);
        for bad in ["!!", "a,b,c,d,e", ""] {
            map.insert(VEKSEL_SIGNING_CHAIN, HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                decode_chain(&map).unwrap_err().code(),
                FaultCode::InvalidRequest,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_commit_is_confirmed_or_its_fault_named() {
        let ok = Commit::Committed.encode();
        assert_eq!(Commit::decode(Some(&ok)).unwrap(), Commit::Committed);
        let fault = Fault::server_proxy(FaultCode::DatabaseError, "disk full é");
        let failed = Commit::Failed(fault.clone()).encode();
        match Commit::decode(Some(&failed)).unwrap() {
            Commit::Failed(f) => {
                assert_eq!((f.origin, f.code), (fault.origin, fault.code));
                assert_eq!(f.message, "disk full ?");
            }
            other => panic!("{other:?}"),
        }
        for bad in [None, Some(HeaderMap::new())] {
            assert_eq!(
                Commit::decode(bad.as_ref()).unwrap_err().code(),
                FaultCode::InvalidRequest
            );
        }
        let mut forged = HeaderMap::new();
        forged.insert(VEKSEL_ERROR, HeaderValue::from_static("Nobody.Knows"));
        assert!(Commit::decode(Some(&forged)).is_err());
        let mut twice = ok.clone();
        twice.append(VEKSEL_COMMITTED, HeaderValue::from_static("1"));
        assert!(Commit::decode(Some(&twice)).is_err());
    }

    #[test]
    fn the_window_has_two_edges() {
        let now = 1_000_000;
        assert!(check_window(now, now, 300_000, 60_000).is_ok());
        assert!(check_window(now - 300_000, now, 300_000, 60_000).is_ok());
        assert!(check_window(now + 60_000, now, 300_000, 60_000).is_ok());
        for at in [now - 300_001, now + 60_001, i64::MIN, i64::MAX] {
            let e = check_window(at, now, 300_000, 60_000).unwrap_err();
            assert_eq!(e.code(), FaultCode::ReplayedMessage);
        }
    }

    #[test]
    fn trailers_need_one_signature_a_time_and_the_right_digest() {
        let body = BodyDigest::of(b"body");
        let signed = SignedTrailers {
            signature: "h..s".into(),
            created_at_ms: Some(5),
            body_digest: Some(body.sha256.clone()),
        };
        let t = signed.encode();
        assert_eq!(
            SignedTrailers::decode(Some(&t), Direction::Response, &body).unwrap(),
            signed
        );
        let other = BodyDigest::of(b"bodY");
        assert_eq!(
            SignedTrailers::decode(Some(&t), Direction::Response, &other)
                .unwrap_err()
                .code(),
            FaultCode::InvalidBodyDigest
        );
        let mut no_time = t.clone();
        no_time.remove(VEKSEL_CREATED_AT);
        assert_eq!(
            SignedTrailers::decode(Some(&no_time), Direction::Response, &body)
                .unwrap_err()
                .code(),
            FaultCode::MissingSignature
        );
        // A request's time is in its head.
        assert!(SignedTrailers::decode(Some(&no_time), Direction::Request, &body).is_ok());
        assert_eq!(
            SignedTrailers::decode(None, Direction::Request, &body)
                .unwrap_err()
                .code(),
            FaultCode::MissingSignature
        );
        let mut twice = t.clone();
        twice.append(VEKSEL_SIGNATURE, HeaderValue::from_static("x..y"));
        assert_eq!(
            SignedTrailers::decode(Some(&twice), Direction::Request, &body).unwrap_err(),
            PeerError::Repeated(VEKSEL_SIGNATURE.into())
        );
    }

    #[test]
    fn a_response_is_bound_to_its_request() {
        let h = head();
        let provider: GatewayId = "GL/GOV/1/gw1".parse().unwrap();
        let hash = request_hash(&canonical_bytes(
            &h.descriptor(&provider, BodyDigest::of(b"")),
        ));
        let answer = ResponseHead::answering(
            &h,
            hash.clone(),
            200,
            vec![("set-cookie".into(), "s=1".into())],
        );
        let mut map = HeaderMap::new();
        answer.encode(&mut map).unwrap();
        let back = ResponseHead::decode(&h, &hash, 200, &map).unwrap();
        assert_eq!(back, answer);
        let d = back.descriptor(&provider, 7, BodyDigest::of(b"x"));
        assert!(
            d.headers[0].1.starts_with(xh::CREDENTIAL_DIGEST_PREFIX),
            "{d:?}"
        );
        let other = request_hash(b"another request");
        assert_eq!(
            ResponseHead::decode(&h, &other, 200, &map)
                .unwrap_err()
                .code(),
            FaultCode::InconsistentResponse
        );
        map.insert(xh::X_ROAD_REQUEST_ID, HeaderValue::from_static("other"));
        assert_eq!(
            ResponseHead::decode(&h, &hash, 200, &map)
                .unwrap_err()
                .code(),
            FaultCode::InconsistentResponse
        );
    }
}
