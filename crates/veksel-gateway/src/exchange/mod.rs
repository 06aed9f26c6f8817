//! The exchange path, split by direction of traffic as linkerd2-proxy splits its
//! proxy: [`outbound`] is the client side (an information system's request leaves
//! through this gateway: admit, route, sign, send, check the peer's answer, finish),
//! [`inbound`] the provider side (a peer's request arrives for a hosted service:
//! authenticate the peer, admit by window, replay and access, verify, call the
//! system, finish). What both share is here and in [`tap`] (the one body step: finish
//! a small body at once, or stream a large one and finish it at its end) and
//! [`record`] (the one message-log record). The message between gateways itself is
//! [`veksel_proto::peer`], with no I/O.

pub mod inbound;
pub mod meta;
pub mod outbound;
mod record;
mod tap;

use crate::Gateway;
use crate::body::{self, GwBody};
use crate::confclient::ConfState;
use crate::msglog::{OpRecord, ReplayClaim, Side};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use veksel_id::{Fault, FaultCode, MemberId, Origin};
use veksel_net::ConnInfo;
use veksel_pki::CertInfo;
use veksel_proto::batch::MessageSignature;
use veksel_proto::meta::{ErrorBody, ErrorFormat};

pub use tap::PREFETCH_LIMIT;

/// A request handler of one side of the gateway.
pub type Handler = fn(
    Arc<Gateway>,
    ConnInfo,
    Request<GwBody>,
) -> Pin<Box<dyn Future<Output = Response<GwBody>> + Send>>;

/// The hyper service of one connection: every request goes to the side's handler with
/// the gateway and what is known about the connection.
#[derive(Clone)]
pub struct ConnService {
    gw: Arc<Gateway>,
    conn: ConnInfo,
    handler: Handler,
}

impl std::fmt::Debug for ConnService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnService")
            .field("remote", &self.conn.remote)
            .finish()
    }
}

impl ConnService {
    /// A service for one connection.
    pub fn new(gw: Arc<Gateway>, conn: ConnInfo, handler: Handler) -> Self {
        Self { gw, conn, handler }
    }
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for ConnService {
    type Response = Response<GwBody>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<GwBody>, std::convert::Infallible>> + Send>>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        // Boxing the handler's future here, where its type is concrete, keeps the
        // compiler's Send check away from a higher-ranked lifetime it cannot prove.
        let fut = (self.handler)(self.gw.clone(), self.conn.clone(), req.map(body::incoming));
        Box::pin(async move { Ok(fut.await) })
    }
}

/// Renders a fault as X-Road does: status 400 or 500, `X-Road-Error`, and a
/// `{type, message, detail}` body in JSON or XML following `Accept`.
pub fn fault_response(fault: &Fault, accept: Option<&str>, detail: &str) -> Response<GwBody> {
    let format = ErrorFormat::from_accept(accept);
    let body = ErrorBody {
        kind: fault.type_string(),
        message: fault.message.clone(),
        detail: detail.to_owned(),
    };
    let mut resp = Response::new(body::full(body.render(format)));
    *resp.status_mut() =
        StatusCode::from_u16(fault.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&fault.type_string()) {
        h.insert(veksel_proto::headers::X_ROAD_ERROR, v);
    }
    resp
}

/// Moves a fault to another origin, keeping code and message (a malformed message
/// between gateways is the sending gateway's fault, not the information system's).
pub fn reorigin(mut fault: Fault, origin: Origin) -> Fault {
    fault.origin = origin;
    fault
}

/// Inserts a header whose value was produced by veksel itself.
pub fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// Signs canonical descriptor bytes (alone or in a batch); the JWS names the signer's
/// certificate, whose chain travels beside the message ([`signing_headers`]).
pub async fn sign(
    signer: &crate::signing::MessageSigner,
    cty: &'static str,
    payload: Vec<u8>,
    origin: Origin,
) -> Result<String, Fault> {
    signer.sign_message(cty, payload).await.map_err(|e| Fault {
        origin,
        code: FaultCode::InternalError,
        message: format!("signing failed: {e}"),
    })
}

/// Checks a detached JWS over `payload`: the certificate it names (the chain the
/// message carries, or the JWS's own `x5c` from a peer that sends it there) must
/// chain to an approved CA, name `member`, be a signing certificate valid now with a
/// fresh OCSP status, and its key must verify. Returns the chain.
#[allow(clippy::too_many_arguments)]
pub fn verify_signature(
    gw: &Gateway,
    conf: &ConfState,
    member: &MemberId,
    signature: &str,
    payload: &[u8],
    carried: Option<&[Vec<u8>]>,
    ocsp_staple: Option<&str>,
    origin: Origin,
) -> Result<Vec<Vec<u8>>, Fault> {
    let now_secs = gw.clock.now_secs();
    let fault = |code, message: String| Fault {
        origin,
        code,
        message,
    };
    let parsed = MessageSignature::parse(signature, payload).map_err(|e| {
        fault(
            FaultCode::InvalidSignatureValue,
            format!("malformed signature: {e}"),
        )
    })?;
    let header = parsed.header();
    let chain = if header.x5c.is_empty() {
        let chain = carried.ok_or_else(|| {
            fault(
                FaultCode::IncorrectCertificate,
                format!("the message carries no signing certificate of {member}"),
            )
        })?;
        // The signature names its certificate: the one sent beside it must be that one.
        let leaf = chain.first().map(|c| veksel_proto::jws::thumbprint(c));
        if header.x5t_s256.is_none() || leaf != header.x5t_s256 {
            return Err(fault(
                FaultCode::IncorrectCertificate,
                format!(
                    "the signing certificate sent is not the one the signature of {member} names"
                ),
            ));
        }
        chain.to_vec()
    } else {
        header
            .chain_der()
            .map_err(|e| fault(FaultCode::InvalidSignatureValue, e.to_string()))?
    };
    let info: CertInfo = conf.signing_cert(&chain, member, now_secs).map_err(|e| {
        fault(
            FaultCode::IncorrectCertificate,
            format!("signing certificate of {member}: {e}"),
        )
    })?;
    if let Some(leaf) = chain.first() {
        crate::ocsp::check(conf, ocsp_staple, leaf, now_secs).map_err(|e| {
            fault(
                FaultCode::IncorrectCertificate,
                format!("signing certificate of {member}: {e}"),
            )
        })?;
    }
    parsed
        .verify_with(&info.public_key, Some(&gw.verified_batches))
        .map_err(|_| {
            fault(
                FaultCode::InvalidSignatureValue,
                format!("the signature of {member} does not verify over the message as received"),
            )
        })?;
    Ok(chain)
}

/// Adds what a receiver needs to check `signer`'s signatures to outgoing headers: its
/// certificate chain, and this gateway's OCSP response for its certificate.
pub fn signing_headers(
    gw: &Gateway,
    headers: &mut HeaderMap,
    signer: &crate::signing::MessageSigner,
) {
    if let Ok(v) = HeaderValue::from_str(signer.chain_header()) {
        headers.insert(
            HeaderName::from_static(veksel_proto::peer::VEKSEL_SIGNING_CHAIN),
            v,
        );
    }
    if let Some(sign) = signer
        .cert_chain()
        .first()
        .and_then(|c| gw.ocsp.for_cert(c))
    {
        put(headers, crate::ocsp::VEKSEL_OCSP_SIGNING, &sign);
    }
}

/// Adds this gateway's OCSP responses for its TLS certificates to outgoing headers:
/// requests, responses and fault responses all carry them. After a renewal that is
/// the new certificate and the previous one, which connections opened before the
/// switch still present; each value names its certificate.
pub fn staple_auth(gw: &Gateway, headers: &mut HeaderMap) {
    let keys = gw.keys.get();
    for cert in keys.auth_chain.iter().take(1).chain(&keys.previous_auth) {
        if let Some(value) = gw
            .ocsp
            .for_cert(cert)
            .map(|s| format!("{} {s}", veksel_pki::sha256_hex(cert)))
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            headers.append(
                HeaderName::from_static(crate::ocsp::VEKSEL_OCSP_AUTH),
                value,
            );
        }
    }
}

/// A header's value as owned text.
pub fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Accumulates the operational-monitoring record of one exchange.
#[derive(Debug, Clone)]
pub struct OpCtx {
    /// The record so far.
    pub record: OpRecord,
    started: tokio::time::Instant,
    /// Set by whichever copy records the outcome first: an exchange is recorded once,
    /// whether its end came in a finisher or in the handler.
    recorded: Arc<std::sync::atomic::AtomicBool>,
    /// The provider's replay claim, until a record makes it durable.
    pub replay: Option<ReplayClaim>,
}

impl OpCtx {
    /// Starts a record.
    pub fn start(side: Side, now_ms: i64, method: &str) -> Self {
        Self {
            record: OpRecord {
                request_id: String::new(),
                side: side.as_str().to_owned(),
                xroad_id: String::new(),
                client: String::new(),
                service: String::new(),
                method: method.to_owned(),
                consumer_gateway: String::new(),
                provider_gateway: String::new(),
                request_in_ts: now_ms,
                request_out_ts: None,
                response_in_ts: None,
                response_out_ts: now_ms,
                request_size: 0,
                response_size: 0,
                status_code: None,
                succeeded: false,
                fault_code: None,
                fault_message: None,
            },
            started: tokio::time::Instant::now(),
            recorded: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            replay: None,
        }
    }

    /// True the first time it is called on any copy of this context.
    fn first_outcome(&self) -> bool {
        !self
            .recorded
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    fn side(&self) -> &'static str {
        if self.record.side == "provider" {
            "provider"
        } else {
            "consumer"
        }
    }

    /// Records a success.
    pub fn finish_ok(
        mut self,
        gw: &Arc<Gateway>,
        status: u16,
        request_size: u64,
        response_size: u64,
    ) {
        if !self.first_outcome() {
            return;
        }
        self.record.response_out_ts = gw.clock.now_ms();
        self.record.status_code = Some(status);
        self.record.request_size = request_size;
        self.record.response_size = response_size;
        self.record.succeeded = true;
        gw.metrics
            .record(self.side(), None, self.started.elapsed().as_secs_f64());
        gw.log.monitor(self.record, self.replay);
    }

    /// Records a fault.
    pub fn finish_fault(mut self, gw: &Arc<Gateway>, fault: &Fault) {
        if !self.first_outcome() {
            return;
        }
        self.record.response_out_ts = gw.clock.now_ms();
        self.record.status_code = Some(fault.http_status());
        self.record.succeeded = false;
        let kind = fault.type_string();
        self.record.fault_message = Some(fault.message.clone());
        gw.metrics.record(
            self.side(),
            Some(&kind),
            self.started.elapsed().as_secs_f64(),
        );
        self.record.fault_code = Some(kind);
        gw.log.monitor(self.record, self.replay);
    }
}

/// A fresh correlation id for a fault's `detail`.
pub fn detail_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The person an ID token names, for a request of `client` made at `at_secs`: the
/// token verified with the provider's keys of the configuration (each token's
/// signature once), issued to `client`, valid then.
pub(crate) fn verified_person(
    conf: &ConfState,
    token: &str,
    client: &veksel_id::ClientId,
    at_secs: i64,
) -> Result<veksel_proto::person::VerifiedPerson, veksel_proto::oauth::TokenError> {
    let claims = conf.id_token(token, at_secs)?;
    veksel_proto::person::accept(&claims, token, &client.to_string(), at_secs)
}
