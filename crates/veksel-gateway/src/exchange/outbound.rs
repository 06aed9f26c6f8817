//! The client side: information systems call `/r1/...` exactly as they would call an
//! X-Road security server. A request leaves in six steps: [`admit`] it (who calls,
//! what for, within which limits), [`route`] it to a gateway that hosts the service,
//! [`sign`] it for the client's member as its body passes, [`send`] it, check the
//! peer's answer ([`check_answer`]: the right gateway, bound to this request), and
//! [`finish`]: verify the signed answer and log both sides of the exchange before the
//! information system gets the whole answer.

use super::meta;
use super::record::{self, Signed};
use super::tap::{self, Tap};
use super::{OpCtx, fault_response};
use crate::body::{self, BodyEnd, ClientBody, ClientBodyFailure, GwBody, Prefetched};
use crate::capture::{Capture, CapturePolicy};
use crate::clients::PeerCertHash;
use crate::confclient::ConfState;
use crate::msglog::Side;
use crate::serverconf::{LocalClient, LogMode};
use crate::{Gateway, error_chain};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, request};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;
use veksel_id::{ClientId, Fault, FaultCode, GatewayId, Origin, SubsystemId};
use veksel_net::ConnInfo;
use veksel_proto::conf::Gateway as ConfGateway;
use veksel_proto::descriptor::{self, REQUEST_CTY, RequestDescriptor, ResponseDescriptor};
use veksel_proto::headers::{self as xh, end_to_end};
use veksel_proto::peer::{
    self, Commit, Direction, RequestHead, ResponseHead, SignedTrailers, VEKSEL_BODY_DIGEST,
    VEKSEL_CREATED_AT, VEKSEL_OCSP_SIGNING, VEKSEL_SIGNATURE,
};
use veksel_proto::r1::{self, R1Target};

/// The hyper service for one client-side connection.
pub fn service(gw: Arc<Gateway>, conn: ConnInfo) -> super::ConnService {
    super::ConnService::new(gw, conn, |gw, conn, req| Box::pin(handle(gw, conn, req)))
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
            let detail = super::detail_id();
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

async fn exchange(
    gw: &Arc<Gateway>,
    conn: &ConnInfo,
    req: Request<GwBody>,
    op: &mut OpCtx,
) -> Result<Response<GwBody>, Fault> {
    let (parts, body) = req.into_parts();
    let mut admitted = admit(gw, conn, &parts, op)?;
    attach_token(gw, &mut admitted).await?;
    let peer = route(gw, &admitted, op)?;
    let (out, signed_rx, client_body) = sign(gw, &admitted, &parts, body, &peer).await?;
    op.record.request_out_ts = Some(gw.clock.now_ms());
    let resp = send(gw, out, &peer, &client_body).await?;
    op.record.response_in_ts = Some(gw.clock.now_ms());
    let (status, headers, rbody) = check_answer(gw, &admitted.conf, &peer, resp).await?;
    let signed = match tokio::time::timeout(request_timeout(gw), signed_rx).await {
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
    finish(gw, op, admitted, signed, status, headers, rbody).await
}

fn request_timeout(gw: &Gateway) -> Duration {
    Duration::from_secs(gw.config.request_timeout_secs)
}

/// A request the gateway has agreed to carry.
struct Admitted {
    head: RequestHead,
    wanted_gateway: Option<GatewayId>,
    conf: Arc<ConfState>,
    log_mode: LogMode,
}

/// Who calls, what for, within which limits: the r1 target and headers, the client a
/// subsystem this gateway hosts and the connection allowed to act for it, a valid
/// global configuration and working time-stamping.
fn admit(
    gw: &Gateway,
    conn: &ConnInfo,
    parts: &request::Parts,
    op: &mut OpCtx,
) -> Result<Admitted, Fault> {
    let target: R1Target = r1::parse_target(parts.uri.path(), parts.uri.query())?;
    xh::check_limits(&parts.headers)?;
    check_framing(gw, &parts.headers)?;
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
    let forwarded = end_to_end(&parts.headers);
    xh::check_forwardable(&forwarded)?;
    let mut head = RequestHead {
        request_id: uuid::Uuid::new_v4().to_string(),
        xroad_id,
        client: client.clone(),
        method: parts.method.as_str().to_owned(),
        headers: forwarded,
        user_id: xh::optional_field(&parts.headers, xh::X_ROAD_USER_ID)?,
        issue: xh::optional_field(&parts.headers, xh::X_ROAD_ISSUE)?,
        represented_party: xh::optional_field(&parts.headers, xh::X_ROAD_REPRESENTED_PARTY)?,
        id_token: None,
        person: None,
        consumer_gateway: gw.id().clone(),
        created_at_ms: gw.clock.now_ms(),
        target,
    };
    let wanted_gateway = xh::security_server(&parts.headers)?;
    let conf = gw.conf.current(Origin::ClientProxy)?;
    gw.stamper.check(gw, Origin::ClientProxy)?;
    let log_mode = local_client(gw, &conf, client_sub, conn)?;
    if let Some(token) = person_token(&parts.headers)? {
        let at = head.created_at_ms.div_euclid(1000);
        let person = super::verified_person(&conf, &token, &client, at).map_err(|e| {
            Fault::client(
                FaultCode::InvalidPersonToken,
                format!("the ID token in {}: {e}", peer::VEKSEL_ID_TOKEN),
            )
        })?;
        head.id_token = Some(token);
        head.person = Some(person);
    }
    op.record.request_id = head.request_id.clone();
    Ok(Admitted {
        head,
        wanted_gateway,
        conf,
        log_mode,
    })
}

/// The person's ID token the information system sent, if it sent one.
fn person_token(headers: &HeaderMap) -> Result<Option<String>, Fault> {
    let invalid = |why: String| Fault::client(FaultCode::InvalidPersonToken, why);
    if headers
        .get_all(peer::VEKSEL_ID_TOKEN)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(invalid(format!(
            "the request has more than one {} header",
            peer::VEKSEL_ID_TOKEN
        )));
    }
    peer::id_token(headers).map_err(|e| invalid(e.to_string()))
}

/// Adds an access token the gateway gets itself, when the client's settings ask for
/// one for this service and the information system sent no `Authorization`.
async fn attach_token(gw: &Gateway, admitted: &mut Admitted) -> Result<(), Fault> {
    let head = &mut admitted.head;
    if head.headers.iter().any(|(name, _)| name == "authorization") {
        return Ok(());
    }
    let Some(client) = head.client.as_subsystem() else {
        return Ok(());
    };
    let rule = gw.serverconf.current().clients.get(client).and_then(|c| {
        c.settings
            .tokens
            .iter()
            .find(|r| r.service == head.target.service)
            .cloned()
    });
    let Some(rule) = rule else {
        return Ok(());
    };
    let grant = veksel_proto::oauth::Grant {
        client: client.member().to_string(),
        scope: rule.scope.clone(),
        resources: vec![head.target.service.to_string()],
        consumer_org: rule.consumer_org.as_ref().map(ToString::to_string),
    };
    let token = gw.tokens.get(gw, &grant).await.map_err(|e| {
        cfault(
            FaultCode::MissingAccessToken,
            format!(
                "could not get an access token with scope {}: {e}",
                rule.scope
            ),
        )
    })?;
    // The header list is in canonical order (names sorted): keep it so.
    let at = head
        .headers
        .iter()
        .position(|(name, _)| name.as_str() > "authorization")
        .unwrap_or(head.headers.len());
    head.headers
        .insert(at, ("authorization".to_owned(), format!("Bearer {token}")));
    Ok(())
}

/// Refuses ambiguous framing and bodies announced over the limit, before a byte of
/// the body is read.
fn check_framing(gw: &Gateway, headers: &HeaderMap) -> Result<(), Fault> {
    if headers.contains_key(http::header::CONTENT_LENGTH)
        && headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        // RFC 9112 §6.3: such a message may be an attempt at request smuggling.
        return Err(Fault::client(
            FaultCode::BadRequest,
            "a request with both Content-Length and Transfer-Encoding is refused (ambiguous framing)",
        ));
    }
    if let Some(announced) = tap::announced_len(headers)
        && announced > gw.config.max_body_bytes
    {
        return Err(Fault::client(
            FaultCode::TooLarge,
            format!(
                "the request body announces {announced} bytes; at most {} are accepted",
                gw.config.max_body_bytes
            ),
        ));
    }
    Ok(())
}

/// The client as this gateway hosts it: registered here in the global configuration
/// and locally, and called over a connection allowed to act for it. Its log mode.
fn local_client(
    gw: &Gateway,
    conf: &ConfState,
    client: &SubsystemId,
    conn: &ConnInfo,
) -> Result<LogMode, Fault> {
    let serverconf = gw.serverconf.current();
    let local = serverconf.clients.get(client).ok_or_else(|| {
        cfault(
            FaultCode::UnknownMember,
            format!("Client '{client}' not found on gateway {}", gw.id()),
        )
    })?;
    if !conf
        .index
        .gateways_hosting(client)
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
    Ok(local.settings.log_mode)
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

/// A gateway that hosts the service: the one named by `X-Road-Security-Server`, or
/// one of them chosen by the request id (spreading load).
fn route(gw: &Gateway, admitted: &Admitted, op: &mut OpCtx) -> Result<ConfGateway, Fault> {
    let provider = admitted.head.target.service.subsystem();
    let hosts = admitted.conf.index.gateways_hosting(provider);
    if hosts.is_empty() {
        return Err(cfault(
            FaultCode::UnknownMember,
            format!("Could not find addresses for service provider \"{provider}\""),
        ));
    }
    let peer = match &admitted.wanted_gateway {
        Some(id) => hosts.iter().copied().find(|g| &g.id == id).ok_or_else(|| {
            cfault(
                FaultCode::InvalidSecurityServer,
                format!("Invalid security server \"{id}\": it does not host {provider}"),
            )
        })?,
        None => {
            let spread = admitted.head.request_id.bytes().fold(0usize, |a, b| {
                a.wrapping_mul(31).wrapping_add(usize::from(b))
            });
            hosts[spread % hosts.len()]
        }
    };
    op.record.provider_gateway = peer.id.to_string();
    // A gateway without the client's key cannot act for it at all.
    if gw
        .keys
        .get()
        .signer(admitted.head.client.member())
        .is_none()
    {
        return Err(no_signing_key(admitted.head.client.member()));
    }
    Ok(peer.clone())
}

fn no_signing_key(member: &veksel_id::MemberId) -> Fault {
    cfault(
        FaultCode::InternalError,
        format!(
            "this gateway holds no signing key for member {member}; enrol it with the authority"
        ),
    )
}

/// The request to the peer, signed for the client's member as its body passes (the
/// signature and the body's digest go in its trailers); the signed descriptor comes
/// back on the channel once the body is complete.
async fn sign(
    gw: &Arc<Gateway>,
    admitted: &Admitted,
    parts: &request::Parts,
    body: GwBody,
    peer: &ConfGateway,
) -> Result<
    (
        Request<GwBody>,
        oneshot::Receiver<(Signed<RequestDescriptor>, Capture)>,
        Arc<OnceLock<ClientBodyFailure>>,
    ),
    Fault,
> {
    let head = &admitted.head;
    let signer = gw
        .keys
        .get()
        .signer(head.client.member())
        .ok_or_else(|| no_signing_key(head.client.member()))?;
    let uri = format!("https://{}{}", peer.address, head.target.canonical_target());
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
    head.encode(out.headers_mut())
        .map_err(|e| e.at(Origin::Client))?;
    super::staple_auth(gw, out.headers_mut());
    super::signing_headers(gw, out.headers_mut(), &signer);
    let announced = tap::announced_len(&parts.headers);
    if let Some(len) = parts.headers.get(http::header::CONTENT_LENGTH) {
        out.headers_mut()
            .insert(http::header::CONTENT_LENGTH, len.clone());
    }
    let (client_body, failure) =
        ClientBody::new(body, Duration::from_secs(gw.config.body_idle_timeout_secs));
    let (signed_tx, signed_rx) = oneshot::channel();
    let template = head.clone();
    let provider = peer.id.clone();
    let finish = move |end: BodyEnd| async move {
        let descriptor = template.descriptor(&provider, end.digest);
        let bytes = descriptor::canonical_bytes(&descriptor);
        let signature =
            super::sign(&signer, REQUEST_CTY, bytes.clone(), Origin::ClientProxy).await?;
        let trailers = SignedTrailers {
            signature: signature.clone(),
            created_at_ms: None,
            body_digest: Some(descriptor.body.sha256.clone()),
        }
        .encode();
        let _ = signed_tx.send((
            Signed {
                descriptor,
                bytes,
                signature,
                chain: signer.cert_chain().to_vec(),
            },
            end.capture,
        ));
        Ok(Some(trailers))
    };
    let tapped = tap::tap(
        body::boxed(client_body),
        Tap {
            hold_last: false,
            max_len: gw.config.max_body_bytes,
            capture: gw.capture_policy(admitted.log_mode),
            announced_len: announced,
        },
        |e| read_fault(&failure, e),
        finish,
    )
    .await?;
    *out.body_mut() = tapped;
    Ok((out, signed_rx, failure))
}

fn read_fault(failure: &OnceLock<ClientBodyFailure>, e: body::BoxError) -> Fault {
    client_body_fault(failure).unwrap_or_else(|| {
        Fault::client(
            FaultCode::BadRequest,
            format!(
                "the request body could not be read: {}",
                error_chain(e.as_ref())
            ),
        )
    })
}

/// The information system's fault, if its request body failed: a broken exchange
/// with the peer is then its doing, not the network's.
fn client_body_fault(failure: &OnceLock<ClientBodyFailure>) -> Option<Fault> {
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

/// Sends the request; the peer's answer must start within the request timeout.
async fn send(
    gw: &Gateway,
    out: Request<GwBody>,
    peer: &ConfGateway,
    client_body: &OnceLock<ClientBodyFailure>,
) -> Result<Response<hyper::body::Incoming>, Fault> {
    let timeout = request_timeout(gw);
    match tokio::time::timeout(timeout, gw.peers.request(out)).await {
        Err(_) => Err(cfault(
            FaultCode::Timeout,
            format!(
                "gateway {} did not answer within {} s",
                peer.id,
                timeout.as_secs()
            ),
        )),
        Ok(Err(e)) => Err(client_body_fault(client_body).unwrap_or_else(|| {
            cfault(
                FaultCode::NetworkError,
                format!(
                    "cannot exchange with gateway {} at {}: {}",
                    peer.id,
                    peer.address,
                    error_chain(&e)
                ),
            )
        })),
        Ok(Ok(r)) => Ok(r),
    }
}

/// The answer came from the gateway registered at that address, with a fresh OCSP
/// status for its certificate; a fault it reports is passed on as its own.
async fn check_answer(
    gw: &Gateway,
    conf: &ConfState,
    peer: &ConfGateway,
    resp: Response<hyper::body::Incoming>,
) -> Result<(http::StatusCode, HeaderMap, GwBody), Fault> {
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
    let (parts, rbody) = resp.into_parts();
    crate::ocsp::check(
        conf,
        crate::ocsp::auth_staple(&parts.headers, &presented_der),
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
    if let Some(kind) = parts
        .headers
        .get(xh::X_ROAD_ERROR)
        .and_then(|v| v.to_str().ok())
    {
        return Err(provider_fault(kind, rbody).await);
    }
    Ok((parts.status, parts.headers, rbody))
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

/// The answer to the information system: bound to this request, its X-Road headers
/// set, its body verified against the provider's signature and the exchange logged
/// before the last of it is released.
async fn finish(
    gw: &Arc<Gateway>,
    op: &OpCtx,
    admitted: Admitted,
    (signed, request_capture): (Signed<RequestDescriptor>, Capture),
    status: http::StatusCode,
    headers: HeaderMap,
    rbody: GwBody,
) -> Result<Response<GwBody>, Fault> {
    let request_hash = descriptor::request_hash(&signed.bytes);
    let head = ResponseHead::decode(&admitted.head, &request_hash, status.as_u16(), &headers)
        .map_err(|e| e.at(Origin::ClientProxy))?;
    let mut out_headers = HeaderMap::new();
    head.encode(&mut out_headers)
        .map_err(|e| e.at(Origin::ClientProxy))?;
    let verify = Verify {
        gw: gw.clone(),
        op: op.clone(),
        conf: admitted.conf.clone(),
        head,
        request: signed,
        request_capture,
        log_mode: admitted.log_mode,
        signing_staple: super::header_text(&headers, VEKSEL_OCSP_SIGNING),
        carried: peer::decode_chain(&headers).map_err(|e| e.at(Origin::ClientProxy))?,
    };
    let capture = gw
        .capture_policy(admitted.log_mode)
        .as_ref()
        .map(CapturePolicy::for_response);
    if headers.contains_key(VEKSEL_SIGNATURE) {
        let bytes = signed_first(gw, op, verify, &headers, rbody, capture).await?;
        let mut resp = Response::new(body::full(bytes));
        *resp.status_mut() = status;
        *resp.headers_mut() = out_headers;
        return Ok(resp);
    }
    let body = tap::tap(
        rbody,
        Tap {
            hold_last: true,
            max_len: gw.config.max_body_bytes,
            capture,
            announced_len: tap::announced_len(&headers),
        },
        |e| {
            cfault(
                FaultCode::NetworkError,
                format!("reading the response: {}", error_chain(e.as_ref())),
            )
        },
        move |end| async move { verify.run(end).await.map(|()| None) },
    )
    .await?;
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = out_headers;
    Ok(resp)
}

/// A small answer the provider signed in its head ([`Commit`]): its signature is
/// checked while the provider commits its record; the body follows that commit, is
/// checked against the signed digest, and only then is this side's record committed
/// and the answer released. A provider that could not commit is passed on as its
/// fault; one that never says is a broken exchange.
async fn signed_first(
    gw: &Arc<Gateway>,
    op: &OpCtx,
    verify: Verify,
    headers: &HeaderMap,
    rbody: GwBody,
    capture: Option<CapturePolicy>,
) -> Result<Bytes, Fault> {
    let outcome = check_signed_first(verify, headers, rbody, capture).await;
    match outcome {
        Ok((bytes, (status, rq, rp))) => {
            op.clone().finish_ok(gw, status, rq, rp);
            Ok(bytes)
        }
        Err(f) => {
            tracing::warn!(fault = %f.type_string(), message = %f.message, "response refused");
            op.clone().finish_fault(gw, &f);
            Err(f)
        }
    }
}

async fn check_signed_first(
    verify: Verify,
    headers: &HeaderMap,
    rbody: GwBody,
    capture: Option<CapturePolicy>,
) -> Result<(Bytes, (u16, u64, u64)), Fault> {
    let head = signed_head(headers);
    let broken = |e: peer::PeerError| e.at(Origin::ClientProxy);
    let Some(announced) = announced_body(headers) else {
        // Nothing to check before the body: it comes, then everything is checked.
        let (bytes, commit) = released_body(rbody).await?;
        committed(commit.map_err(broken)?)?;
        let end = BodyEnd {
            digest: descriptor::BodyDigest::of(&bytes),
            trailers: Some(head),
            capture: Capture::of_whole(&bytes, capture.as_ref()),
        };
        let sizes = verify.verify_and_log(end).await?;
        return Ok((bytes, sizes));
    };
    // The signature while the provider commits, then the body.
    let checking = async { verify.check(Some(&head), announced.clone()) };
    let (checked, released) = tokio::join!(checking, released_body(rbody));
    let response = checked?;
    let (bytes, commit) = released?;
    committed(commit.map_err(broken)?)?;
    if descriptor::BodyDigest::of(&bytes) != announced {
        return Err(cfault(
            FaultCode::InvalidBodyDigest,
            "the response body does not match the digest the provider signed",
        ));
    }
    crate::crash_point("consumer-verified");
    let capture = Capture::of_whole(&bytes, capture.as_ref());
    let sizes = verify.log(response, capture).await?;
    Ok((bytes, sizes))
}

/// The body an answer signed in its head says it has (digest and length).
fn announced_body(headers: &HeaderMap) -> Option<descriptor::BodyDigest> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    Some(descriptor::BodyDigest {
        sha256: text(VEKSEL_BODY_DIGEST)?.to_owned(),
        length: text(peer::VEKSEL_BODY_LENGTH)?.parse().ok()?,
    })
}

/// The provider's commit said yes, or its fault.
fn committed(commit: Commit) -> Result<(), Fault> {
    match commit {
        Commit::Committed => Ok(()),
        Commit::Failed(f) => Err(f),
    }
}

/// The body of an answer signed in its head, and how the provider ended it.
async fn released_body(
    mut rbody: GwBody,
) -> Result<(Bytes, Result<Commit, peer::PeerError>), Fault> {
    use http_body_util::BodyExt;
    let mut data = bytes::BytesMut::new();
    while let Some(frame) = rbody.frame().await {
        let frame = frame.map_err(|e| {
            cfault(
                FaultCode::NetworkError,
                format!("reading the response: {}", error_chain(e.as_ref())),
            )
        })?;
        match frame.into_data() {
            Ok(d) => {
                if data.len() + d.len() > tap::PREFETCH_LIMIT {
                    return Err(cfault(
                        FaultCode::TooLarge,
                        "an answer signed in its head is larger than 256 KiB",
                    ));
                }
                data.extend_from_slice(&d);
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return Ok((data.freeze(), Commit::decode(Some(&trailers))));
                }
            }
        }
    }
    Ok((data.freeze(), Commit::decode(None)))
}

/// The signature, its time and the body's digest, from the head of an answer signed
/// first (the same fields as trailers otherwise carry).
fn signed_head(headers: &HeaderMap) -> HeaderMap {
    let mut signed = HeaderMap::new();
    for name in [VEKSEL_SIGNATURE, VEKSEL_CREATED_AT, VEKSEL_BODY_DIGEST] {
        for v in headers.get_all(name) {
            signed.append(name, v.clone());
        }
    }
    signed
}

/// Verifies the answer at its end, logs the exchange, records monitoring.
struct Verify {
    gw: Arc<Gateway>,
    op: OpCtx,
    conf: Arc<ConfState>,
    head: ResponseHead,
    request: Signed<RequestDescriptor>,
    request_capture: Capture,
    log_mode: LogMode,
    /// The provider's OCSP response for its signing certificate.
    signing_staple: Option<String>,
    /// The provider's signing chain, as its answer carries it.
    carried: Option<Vec<Vec<u8>>>,
}

impl Verify {
    async fn run(self, end: BodyEnd) -> Result<(), Fault> {
        let Verify { gw, op, .. } = &self;
        let (gw, op) = (gw.clone(), op.clone());
        match self.verify_and_log(end).await {
            Ok((status, rq, rp)) => {
                op.finish_ok(&gw, status, rq, rp);
                Ok(())
            }
            Err(f) => {
                tracing::warn!(fault = %f.type_string(), message = %f.message, "response refused");
                op.finish_fault(&gw, &f);
                Err(f)
            }
        }
    }

    async fn verify_and_log(self, end: BodyEnd) -> Result<(u16, u64, u64), Fault> {
        let response = self.check(end.trailers.as_ref(), end.digest)?;
        crate::crash_point("consumer-verified");
        self.log(response, end.capture).await
    }

    /// The provider's signature over the answer as received (its body's digest and
    /// the signed fields, from the trailers or the head).
    fn check(
        &self,
        signed: Option<&HeaderMap>,
        digest: descriptor::BodyDigest,
    ) -> Result<Signed<ResponseDescriptor>, Fault> {
        let trailers = SignedTrailers::decode(signed, Direction::Response, &digest)
            .map_err(|e| e.at(Origin::ClientProxy))?;
        let created_at = trailers.created_at_ms.unwrap_or_default();
        let descriptor = self.head.descriptor(
            &self.request.descriptor.provider_gateway,
            created_at,
            digest,
        );
        let bytes = descriptor::canonical_bytes(&descriptor);
        let chain = super::verify_signature(
            &self.gw,
            &self.conf,
            descriptor.service.subsystem().member(),
            &trailers.signature,
            &bytes,
            self.carried.as_deref(),
            self.signing_staple.as_deref(),
            Origin::ClientProxy,
        )?;
        Ok(Signed {
            descriptor,
            bytes,
            signature: trailers.signature,
            chain,
        })
    }

    /// This side's record of the exchange; the sizes for monitoring.
    async fn log(
        self,
        response: Signed<ResponseDescriptor>,
        capture: Capture,
    ) -> Result<(u16, u64, u64), Fault> {
        let sizes = (
            response.descriptor.status,
            self.request.descriptor.body.length,
            response.descriptor.body.length,
        );
        record::log_exchange(
            &self.gw,
            Side::Consumer,
            self.log_mode,
            &self.request,
            &response,
            (self.request_capture, capture),
            // Which parameter names the person is the provider's to say.
            None,
        )
        .await?;
        Ok(sizes)
    }
}
