//! The client side: information systems call `/r1/...` exactly as they would call an
//! X-Road security server. The gateway checks who is calling, signs the request for
//! the client's member, sends it to the provider's gateway, verifies the signed
//! response against the request, logs both, and only then releases the response.

use crate::body::{
    self, BodyEnd, ClientBody, ClientBodyFailure, Finisher, GwBody, Prefetched, TapBody, TapOptions,
};
use crate::capture::{Capture, CapturePolicy, StoredBodies};
use crate::clients::PeerCertHash;
use crate::exchange::{
    self, OpCtx, VEKSEL_CONSUMER_GATEWAY, VEKSEL_CREATED_AT, VEKSEL_SIGNATURE, error_chain,
    fault_response, put,
};
use crate::msglog::{MessageRecord, Side};
use crate::serverconf::{LocalClient, LogMode};
use crate::{Gateway, meta};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use veksel_id::{ClientId, Fault, FaultCode, Origin, SubsystemId};
use veksel_net::ConnInfo;
use veksel_proto::conf::Gateway as ConfGateway;
use veksel_proto::descriptor::{
    self, BodyDigest, REQUEST_CTY, REQUEST_TYPE, RESPONSE_TYPE, RequestDescriptor,
    ResponseDescriptor,
};
use veksel_proto::headers::{self as xh, end_to_end};
use veksel_proto::r1::{self, R1Target};

/// The hyper service for one client-side connection.
pub fn service(gw: Arc<Gateway>, conn: ConnInfo) -> exchange::ConnService {
    exchange::ConnService::new(gw, conn, |gw, conn, req| Box::pin(handle(gw, conn, req)))
}

/// Handles one request from an information system.
pub async fn handle(gw: Arc<Gateway>, conn: ConnInfo, req: Request<GwBody>) -> Response<GwBody> {
    let accept = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if req.uri().path() == "/listClients" {
        return meta::list_clients(&gw, &req, accept.as_deref());
    }
    let mut op = OpCtx::start(Side::Consumer, gw.clock.now_ms(), req.method().as_str());
    op.record.consumer_gateway = gw.id().to_string();
    let _in_flight = InFlight::new(&gw);
    match exchange(&gw, &conn, req, &mut op).await {
        Ok(resp) => resp,
        Err(fault) => {
            let detail = exchange::detail_id();
            tracing::info!(fault = %fault.type_string(), message = %fault.message, %detail, "client-side exchange refused");
            let resp = fault_response(&fault, accept.as_deref(), &detail);
            op.finish_fault(&gw, &fault);
            resp
        }
    }
}

struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn new(gw: &Gateway) -> Self {
        gw.metrics.in_flight.inc();
        Self(gw.metrics.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn cfault(code: FaultCode, message: impl Into<String>) -> Fault {
    Fault::client_proxy(code, message)
}

/// May this connection act as `client`? Plain HTTP only from loopback and only when
/// the subsystem allows it.
fn authorize_information_system(conn: &ConnInfo, local: &LocalClient) -> Result<(), Fault> {
    if !conn.tls {
        if local.settings.allow_loopback_http && conn.remote.ip().is_loopback() {
            return Ok(());
        }
        return Err(cfault(
            FaultCode::SslAuthenticationFailed,
            format!(
                "client {} may not be used over plain HTTP from {}; allow loopback HTTP for it or use HTTPS with a registered client certificate",
                local.id,
                conn.remote.ip()
            ),
        ));
    }
    let presented = conn.peer_chain.first().map(|c| veksel_pki::sha256_hex(c));
    match presented {
        Some(h)
            if local
                .settings
                .is_cert_sha256
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&h)) =>
        {
            Ok(())
        }
        Some(h) => Err(cfault(
            FaultCode::SslAuthenticationFailed,
            format!(
                "TLS client certificate {h} is not registered for client {}",
                local.id
            ),
        )),
        None => Err(cfault(
            FaultCode::SslAuthenticationFailed,
            format!("client {} requires a TLS client certificate", local.id),
        )),
    }
}

fn choose_peer<'a>(
    hosts: &[&'a ConfGateway],
    wanted: Option<&veksel_id::GatewayId>,
    request_id: &str,
    provider: &SubsystemId,
) -> Result<&'a ConfGateway, Fault> {
    if hosts.is_empty() {
        return Err(cfault(
            FaultCode::UnknownMember,
            format!("Could not find addresses for service provider \"{provider}\""),
        ));
    }
    match wanted {
        Some(id) => hosts.iter().copied().find(|g| &g.id == id).ok_or_else(|| {
            cfault(
                FaultCode::InvalidSecurityServer,
                format!("Invalid security server \"{id}\": it does not host {provider}"),
            )
        }),
        None => {
            // Spread load over the gateways that host the provider.
            let spread = request_id.bytes().fold(0usize, |a, b| {
                a.wrapping_mul(31).wrapping_add(usize::from(b))
            });
            Ok(hosts[spread % hosts.len()])
        }
    }
}

/// What the signing finisher hands back once the request body has been sent.
struct SignedRequest {
    descriptor: RequestDescriptor,
    bytes: Vec<u8>,
    signature: String,
    capture: Capture,
}

async fn exchange(
    gw: &Arc<Gateway>,
    conn: &ConnInfo,
    req: Request<GwBody>,
    op: &mut OpCtx,
) -> Result<Response<GwBody>, Fault> {
    let (parts, body) = req.into_parts();
    let target: R1Target = r1::parse_target(parts.uri.path(), parts.uri.query())?;
    xh::check_limits(&parts.headers)?;
    if parts.headers.contains_key(http::header::CONTENT_LENGTH)
        && parts.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        // RFC 9112 §6.3: such a message may be an attempt at request smuggling.
        return Err(Fault::client(
            FaultCode::BadRequest,
            "a request with both Content-Length and Transfer-Encoding is refused (ambiguous framing)",
        ));
    }
    if let Some(announced) = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && announced > gw.config.max_body_bytes
    {
        // Refused before a byte of it is read.
        return Err(Fault::client(
            FaultCode::TooLarge,
            format!(
                "the request body announces {announced} bytes; at most {} are accepted",
                gw.config.max_body_bytes
            ),
        ));
    }
    op.record.service = target.service.to_string();
    let client = xh::client_id(&parts.headers)?;
    op.record.client = client.to_string();
    let ClientId::Subsystem(client_sub) = &client else {
        return Err(Fault::client(
            FaultCode::InvalidClientIdentifier,
            format!(
                "X-Road-Client {client} names a member; veksel clients are subsystems (add the subsystem code)"
            ),
        ));
    };
    let xroad_id = match xh::optional_field(&parts.headers, xh::X_ROAD_ID)? {
        Some(id) => id,
        None => uuid::Uuid::new_v4().to_string(),
    };
    op.record.xroad_id = xroad_id.clone();
    let user_id = xh::optional_field(&parts.headers, xh::X_ROAD_USER_ID)?;
    let issue = xh::optional_field(&parts.headers, xh::X_ROAD_ISSUE)?;
    let represented_party = xh::optional_field(&parts.headers, xh::X_ROAD_REPRESENTED_PARTY)?;
    let wanted_gateway = xh::security_server(&parts.headers)?;

    let conf = gw.conf.current(Origin::ClientProxy)?;
    gw.stamper.check(gw, Origin::ClientProxy)?;
    let serverconf = gw.serverconf.current();
    let local = serverconf.clients.get(client_sub).ok_or_else(|| {
        cfault(
            FaultCode::UnknownMember,
            format!("Client '{client}' not found on gateway {}", gw.id()),
        )
    })?;
    if !conf
        .index
        .gateways_hosting(client_sub)
        .iter()
        .any(|g| &g.id == gw.id())
    {
        return Err(cfault(
            FaultCode::UnknownMember,
            format!(
                "client {client} is not registered to gateway {} in the global configuration",
                gw.id()
            ),
        ));
    }
    authorize_information_system(conn, local)?;

    let request_id = uuid::Uuid::new_v4().to_string();
    op.record.request_id = request_id.clone();
    let provider = target.service.subsystem();
    let hosts = conf.index.gateways_hosting(provider);
    let peer = choose_peer(&hosts, wanted_gateway.as_ref(), &request_id, provider)?.clone();
    op.record.provider_gateway = peer.id.to_string();
    let signer = gw.keys.get().signer(client.member()).ok_or_else(|| {
        cfault(
            FaultCode::InternalError,
            format!(
                "this gateway holds no signing key for member {}; enrol it with the authority",
                client.member()
            ),
        )
    })?;

    let created_at = gw.clock.now_ms();
    let canonical_target = target.canonical_target();
    let forwarded = end_to_end(&parts.headers);
    xh::check_forwardable(&forwarded)?;
    let request_template = RequestDescriptor {
        typ: REQUEST_TYPE.to_owned(),
        request_id: request_id.clone(),
        xroad_id: xroad_id.clone(),
        client: client.clone(),
        service: target.service.clone(),
        method: parts.method.as_str().to_owned(),
        target: canonical_target.clone(),
        headers: xh::descriptor_headers(&forwarded),
        user_id: user_id.clone(),
        issue: issue.clone(),
        represented_party: represented_party.clone(),
        consumer_gateway: gw.id().clone(),
        provider_gateway: peer.id.clone(),
        created_at_ms: created_at,
        body: BodyDigest::of(b""),
    };

    let uri = format!("https://{}{}", peer.address, canonical_target);
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(&uri)
        .body(body::empty())
        .map_err(|e| {
            cfault(
                FaultCode::InternalError,
                format!("cannot build request to {uri}: {e}"),
            )
        })?;
    {
        let h = out.headers_mut();
        xh::append_all(h, &forwarded)?;
        put(h, xh::X_ROAD_CLIENT, &r1::encode_id(&client.to_string()));
        put(h, xh::X_ROAD_ID, &xroad_id);
        put(h, xh::X_ROAD_REQUEST_ID, &request_id);
        for (name, value) in [
            (xh::X_ROAD_USER_ID, &user_id),
            (xh::X_ROAD_ISSUE, &issue),
            (xh::X_ROAD_REPRESENTED_PARTY, &represented_party),
        ] {
            if let Some(v) = value {
                put(h, name, v);
            }
        }
        put(h, VEKSEL_CREATED_AT, &created_at.to_string());
        put(h, VEKSEL_CONSUMER_GATEWAY, &gw.id().to_string());
        exchange::staple_auth(gw, h);
        exchange::staple_signing(gw, h, signer.as_ref());
        if let Some(len) = parts.headers.get(http::header::CONTENT_LENGTH) {
            h.insert(http::header::CONTENT_LENGTH, len.clone());
        }
    }
    let log_mode = local.settings.log_mode;
    let capture = gw.capture_policy(log_mode);
    let (signed_tx, signed_rx) = oneshot::channel::<SignedRequest>();
    let finisher: Finisher = Box::new(move |end: BodyEnd| {
        Box::pin(async move {
            let mut descriptor = request_template;
            descriptor.body = end.digest;
            let bytes = descriptor::canonical_bytes(&descriptor);
            let signature =
                exchange::sign(&signer, REQUEST_CTY, bytes.clone(), Origin::ClientProxy)
                    .await
                    .map_err(|f| f.message)?;
            let mut trailers = HeaderMap::new();
            put(&mut trailers, VEKSEL_SIGNATURE, &signature);
            put(
                &mut trailers,
                exchange::VEKSEL_BODY_DIGEST,
                &descriptor.body.sha256,
            );
            let _ = signed_tx.send(SignedRequest {
                descriptor,
                bytes,
                signature,
                capture: end.capture,
            });
            Ok(Some(trailers))
        })
    });
    let (body, client_body) =
        ClientBody::new(body, Duration::from_secs(gw.config.body_idle_timeout_secs));
    *out.body_mut() = (TapBody::new(
        body::boxed(body),
        Vec::new(),
        TapOptions {
            hold_last: false,
            max_len: gw.config.max_body_bytes,
            capture: capture.clone(),
        },
        finisher,
    ))
    .boxed();

    op.record.request_out_ts = Some(gw.clock.now_ms());
    let timeout = Duration::from_secs(gw.config.request_timeout_secs);
    let resp = match tokio::time::timeout(timeout, gw.peers.request(out)).await {
        Err(_) => {
            return Err(cfault(
                FaultCode::Timeout,
                format!(
                    "gateway {} did not answer within {} s",
                    peer.id,
                    timeout.as_secs()
                ),
            ));
        }
        Ok(Err(e)) => {
            return Err(client_body_fault(&client_body).unwrap_or_else(|| {
                cfault(
                    FaultCode::NetworkError,
                    format!(
                        "cannot exchange with gateway {} at {}: {}",
                        peer.id,
                        peer.address,
                        error_chain(&e)
                    ),
                )
            }));
        }
        Ok(Ok(r)) => r,
    };
    op.record.response_in_ts = Some(gw.clock.now_ms());
    let (presented, presented_der) = resp
        .extensions()
        .get::<PeerCertHash>()
        .map(|p| (p.0.clone(), p.1.clone()))
        .unwrap_or_default();
    if !peer
        .auth_cert_sha256
        .iter()
        .any(|h| h.eq_ignore_ascii_case(&presented))
    {
        return Err(cfault(
            FaultCode::SslAuthenticationFailed,
            format!(
                "the gateway at {} presented certificate {presented}, which is not registered to {}",
                peer.address, peer.id
            ),
        ));
    }
    let (rparts, rbody) = resp.into_parts();
    crate::ocsp::check(
        &conf,
        crate::ocsp::auth_staple(&rparts.headers, &presented_der),
        &presented_der,
        gw.clock.now_secs(),
    )
    .map_err(|e| {
        cfault(
            FaultCode::SslAuthenticationFailed,
            format!("the gateway at {}: {e}", peer.address),
        )
    })?;
    let rbody = body::incoming(rbody);
    if let Some(kind) = rparts
        .headers
        .get(xh::X_ROAD_ERROR)
        .and_then(|v| v.to_str().ok())
    {
        return Err(provider_fault(kind, rbody).await);
    }
    let signed = match tokio::time::timeout(timeout, signed_rx).await {
        Ok(Ok(s)) => s,
        _ => {
            return Err(client_body_fault(&client_body).unwrap_or_else(|| {
                cfault(
                    FaultCode::NetworkError,
                    "the provider's gateway answered before the request body was complete",
                )
            }));
        }
    };
    let request_hash = descriptor::request_hash(&signed.bytes);
    let echoed_hash = rparts
        .headers
        .get(xh::X_ROAD_REQUEST_HASH)
        .and_then(|v| v.to_str().ok());
    let echoed_id = rparts
        .headers
        .get(xh::X_ROAD_REQUEST_ID)
        .and_then(|v| v.to_str().ok());
    if echoed_hash != Some(request_hash.as_str()) || echoed_id != Some(request_id.as_str()) {
        return Err(cfault(
            FaultCode::InconsistentResponse,
            "Response message hash does not match request message",
        ));
    }

    let received = end_to_end(&rparts.headers);
    let response_template = ResponseDescriptor {
        typ: RESPONSE_TYPE.to_owned(),
        request_id: request_id.clone(),
        request_hash: request_hash.clone(),
        xroad_id: xroad_id.clone(),
        client: client.clone(),
        service: target.service.clone(),
        status: rparts.status.as_u16(),
        headers: xh::descriptor_headers(&received),
        provider_gateway: peer.id.clone(),
        created_at_ms: 0,
        body: BodyDigest::of(b""),
    };
    let mut headers = HeaderMap::new();
    xh::append_all(&mut headers, &received)
        .map_err(|f| exchange::reorigin(f, Origin::ClientProxy))?;
    put(&mut headers, xh::X_ROAD_ID, &xroad_id);
    put(
        &mut headers,
        xh::X_ROAD_CLIENT,
        &r1::encode_id(&client.to_string()),
    );
    put(
        &mut headers,
        xh::X_ROAD_SERVICE,
        &r1::encode_id(&target.service.to_string()),
    );
    put(&mut headers, xh::X_ROAD_REQUEST_ID, &request_id);
    put(&mut headers, xh::X_ROAD_REQUEST_HASH, &request_hash);
    let content_length = rparts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());

    let finish = Finish {
        gw: gw.clone(),
        op: op.clone(),
        conf: conf.clone(),
        template: response_template,
        signed,
        log_mode,
        signing_staple: exchange::header_text(&rparts.headers, crate::ocsp::VEKSEL_OCSP_SIGNING),
    };
    let status = rparts.status;
    let response_capture = capture.as_ref().map(CapturePolicy::for_response);
    let prefetched = body::prefetch(rbody, exchange::PREFETCH_LIMIT)
        .await
        .map_err(|e| {
            cfault(
                FaultCode::NetworkError,
                format!("reading the response from {}: {}", peer.id, e),
            )
        })?;
    let body = match prefetched {
        Prefetched::Complete {
            body: bytes,
            trailers,
        } => {
            let end = BodyEnd {
                digest: BodyDigest::of(&bytes),
                trailers,
                capture: Capture::of_whole(&bytes, response_capture.as_ref()),
            };
            finish.run(end).await?;
            body::full(bytes)
        }
        Prefetched::Partial { prefix, rest } => {
            let finisher: Finisher = Box::new(move |end| {
                Box::pin(async move { finish.run(end).await.map(|()| None).map_err(|f| f.message) })
            });
            let tap = TapBody::new(
                rest,
                prefix,
                TapOptions {
                    hold_last: true,
                    max_len: gw.config.max_body_bytes,
                    capture: response_capture,
                },
                finisher,
            );
            (match content_length {
                Some(n) => tap.with_exact_len(n),
                None => tap,
            })
            .boxed()
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// The information system's fault, if its request body failed: a broken exchange
/// with the peer is then its doing, not the network's.
fn client_body_fault(failure: &std::sync::OnceLock<ClientBodyFailure>) -> Option<Fault> {
    failure.get().map(|f| match f {
        ClientBodyFailure::Malformed(why) => Fault::client(
            FaultCode::BadRequest,
            format!("the request body could not be read: {why}"),
        ),
        ClientBodyFailure::Stalled(idle) => Fault::client(
            FaultCode::Timeout,
            format!("the request body stalled: no data for {} s", idle.as_secs()),
        ),
    })
}

/// Verifies the response at its end, logs the exchange, records monitoring.
struct Finish {
    gw: Arc<Gateway>,
    op: OpCtx,
    conf: Arc<crate::confclient::ConfState>,
    template: ResponseDescriptor,
    signed: SignedRequest,
    log_mode: LogMode,
    /// The provider's OCSP response for its signing certificate, checked with the signature.
    signing_staple: Option<String>,
}

impl Finish {
    async fn run(mut self, end: BodyEnd) -> Result<(), Fault> {
        let request_capture = std::mem::replace(&mut self.signed.capture, Capture::Off);
        let result = self.verify_and_log(end, request_capture).await;
        match &result {
            Ok((status, rq, rp)) => self.op.finish_ok(&self.gw, *status, *rq, *rp),
            Err(f) => {
                tracing::warn!(fault = %f.type_string(), message = %f.message, "response refused");
                self.op.finish_fault(&self.gw, f);
            }
        }
        result.map(|_| ())
    }

    async fn verify_and_log(
        &self,
        end: BodyEnd,
        request_capture: Capture,
    ) -> Result<(u16, u64, u64), Fault> {
        let trailers = end.trailers.unwrap_or_default();
        let mut d = self.template.clone();
        d.body = end.digest;
        d.created_at_ms = trailers
            .get(VEKSEL_CREATED_AT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                cfault(
                    FaultCode::MissingSignature,
                    "the response carries no signature time",
                )
            })?;
        if let Some(sent) = trailers
            .get(exchange::VEKSEL_BODY_DIGEST)
            .and_then(|v| v.to_str().ok())
            && sent != d.body.sha256
        {
            return Err(cfault(
                FaultCode::InvalidBodyDigest,
                "the response body does not match the digest the provider signed",
            ));
        }
        let bytes = descriptor::canonical_bytes(&d);
        let provider_member = d.service.subsystem().member().clone();
        let signature = exchange::verify_signature(
            &self.conf,
            &provider_member,
            trailers.get(VEKSEL_SIGNATURE).and_then(|v| v.to_str().ok()),
            &bytes,
            self.signing_staple.as_deref(),
            self.gw.clock.now_secs(),
            Origin::ClientProxy,
        )?;
        let request_size = self.signed.descriptor.body.length;
        let response_size = d.body.length;
        if self.log_mode != LogMode::Off {
            // Kept until the record is written: the copies' memory stays accounted for.
            let mut bodies = StoredBodies::of(
                request_capture,
                end.capture,
                self.gw.config.max_logged_body_bytes,
            );
            self.gw.metrics.body_not_stored(bodies.not_stored);
            let record = MessageRecord {
                request_id: d.request_id.clone(),
                side: Side::Consumer,
                xroad_id: d.xroad_id.clone(),
                client: d.client.to_string(),
                service: d.service.to_string(),
                method: self.signed.descriptor.method.clone(),
                target: self.signed.descriptor.target.clone(),
                status: d.status,
                consumer_gateway: self.gw.id().to_string(),
                provider_gateway: d.provider_gateway.to_string(),
                request_descriptor: self.signed.bytes.clone(),
                request_signature: self.signed.signature.clone(),
                response_descriptor: bytes,
                response_signature: signature,
                request_body: bodies.request.take(),
                response_body: bodies.response.take(),
                body_note: bodies.note.take(),
                request_size,
                response_size,
                created_at: self.signed.descriptor.created_at_ms,
                logged_at: self.gw.clock.now_ms(),
            };
            self.gw.log.log_message(record).await.map_err(|e| {
                cfault(
                    FaultCode::DatabaseError,
                    format!("the message log could not be written: {e}"),
                )
            })?;
        }
        Ok((d.status, request_size, response_size))
    }
}

/// A fault raised by the provider's gateway, passed on to the information system
/// with its type and message.
async fn provider_fault(kind: &str, body: GwBody) -> Fault {
    let bytes = match body::prefetch(body, 64 * 1024).await {
        Ok(Prefetched::Complete { body, .. }) => body,
        _ => Bytes::new(),
    };
    let message = serde_json::from_slice::<veksel_proto::meta::ErrorBody>(&bytes)
        .map(|b| b.message)
        .unwrap_or_else(|_| "the provider's gateway refused the request".to_owned());
    match Fault::parse_type(kind) {
        Some((origin, code)) => Fault {
            origin,
            code,
            message,
        },
        None => Fault::server_proxy(FaultCode::InternalError, format!("{kind}: {message}")),
    }
}
