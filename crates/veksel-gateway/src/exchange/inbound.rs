//! The provider side: a peer gateway's request for a service this gateway hosts. It
//! passes six steps: [`authenticate`] the peer (its TLS certificate registered and
//! not revoked), [`admit`] the request by its time window and sender, [`replay`]
//! check and [`access`] rights, [`verify`] the member's signature over what arrived,
//! [`call_system`] (the provider's information system or a metaservice), and
//! [`finish`]: sign the answer bound to the request and log both sides before the
//! signature, the last thing the consumer needs, leaves.

use super::meta;
use super::record::{self, Signed};
use super::tap::{self, Read, Tap};
use super::{OpCtx, fault_response};
use crate::ReplayClaimMode;
use crate::body::{self, BodyEnd, GwBody};
use crate::capture::{Capture, CapturePolicy};
use crate::confclient::ConfState;
use crate::msglog::replay::Claim;
use crate::msglog::{ReplayClaim, Side};
use crate::serverconf::{LocalClient, LogMode, ServiceConfig};
use crate::signing::MemberSigner;
use crate::{Gateway, error_chain};
use http::{HeaderMap, HeaderValue, Request, Response, request};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use veksel_id::{Fault, FaultCode, Origin};
use veksel_net::ConnInfo;
use veksel_proto::access::{self, Caller};
use veksel_proto::conf::Gateway as ConfGateway;
use veksel_proto::descriptor::{self, RESPONSE_CTY, RequestDescriptor, ResponseDescriptor};
use veksel_proto::headers::end_to_end;
use veksel_proto::peer::{
    self, Commit, Direction, RequestHead, ResponseHead, SignedTrailers, VEKSEL_OCSP_SIGNING,
};
use veksel_proto::r1::{self, Metaservice};

/// The hyper service for one gateway-to-gateway connection.
pub fn service(gw: Arc<Gateway>, conn: ConnInfo) -> super::ConnService {
    super::ConnService::new(gw, conn, |gw, conn, req| Box::pin(handle(gw, conn, req)))
}

const ORIGIN: Origin = Origin::ServerProxy;

/// The verified person's identity number, as the provider's information system gets it.
pub const VEKSEL_PERSON_ID: http::HeaderName = http::HeaderName::from_static("veksel-person-id");
/// The level of assurance of that person's login.
pub const VEKSEL_PERSON_LEVEL: http::HeaderName =
    http::HeaderName::from_static("veksel-person-level");

fn sfault(code: FaultCode, message: impl Into<String>) -> Fault {
    Fault::server_proxy(code, message)
}

/// Handles one request from a peer gateway.
pub async fn handle(gw: Arc<Gateway>, conn: ConnInfo, req: Request<GwBody>) -> Response<GwBody> {
    let mut op = OpCtx::start(Side::Provider, gw.clock.now_ms(), req.method().as_str());
    op.record.provider_gateway = gw.id().to_string();
    let mut resp = match exchange(&gw, &conn, req, &mut op).await {
        Ok(resp) => resp,
        Err(fault) => {
            let detail = super::detail_id();
            tracing::info!(fault = %fault.type_string(), message = %fault.message, %detail, "provider-side exchange refused");
            let resp = fault_response(&fault, None, &detail);
            op.finish_fault(&gw, &fault);
            resp
        }
    };
    super::staple_auth(&gw, resp.headers_mut());
    resp
}

/// A request signed and verified: its descriptor, and the copy of its body kept for
/// the message log.
type Verified = (Signed<RequestDescriptor>, Capture);

async fn exchange(
    gw: &Arc<Gateway>,
    conn: &ConnInfo,
    req: Request<GwBody>,
    op: &mut OpCtx,
) -> Result<Response<GwBody>, Fault> {
    let (conf, peer) = authenticate(gw, conn, req.headers(), op)?;
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = RequestHead::decode(parts.method.as_str(), path, &parts.headers)
        .map_err(|e| e.at(ORIGIN))?;
    op.record.service = head.target.service.to_string();
    op.record.client = head.client.to_string();
    op.record.request_id = head.request_id.clone();
    op.record.xroad_id = head.xroad_id.clone();
    admit(gw, &conf, &peer, &head)?;
    replay(gw, &conf, &head, op).await?;
    let (local, service) = access(gw, &conf, &head)?;
    person(&conf, &mut head, service.as_ref())?;
    if let Some(svc) = &service {
        access_token(gw, &conf, &head, svc)?;
    }
    let log_mode = local.settings.log_mode;
    let (system_body, verified) = verify(gw, &conf, &head, &parts.headers, body, log_mode).await?;
    op.record.request_out_ts = Some(gw.clock.now_ms());
    let answer = call_system(
        gw,
        &conf,
        &local,
        service.as_ref(),
        &head,
        &parts,
        system_body,
    )
    .await;
    let verified = match tokio::time::timeout(request_timeout(gw), verified).await {
        Ok(Ok(v)) => v,
        _ => Err(sfault(
            FaultCode::InvalidRequest,
            "the request body did not arrive completely",
        )),
    };
    // A signature fault explains a failed call better than the call's own error.
    let verified = verified?;
    let answer = answer?;
    op.record.response_in_ts = Some(gw.clock.now_ms());
    let subject_hash = service
        .as_ref()
        .and_then(|svc| svc.about_person.as_ref())
        .and_then(|p| {
            p.person(
                &r1::decoded_segments(&head.target.service_path),
                head.target.query.as_deref(),
            )
        })
        .map(|person| gw.subject_hash(&person));
    finish(gw, op, &head, verified, answer, log_mode, subject_hash).await
}

fn request_timeout(gw: &Gateway) -> Duration {
    Duration::from_secs(gw.config.request_timeout_secs)
}

/// The peer is a gateway of the network: its TLS certificate is registered, not
/// revoked, and has a fresh OCSP status; this gateway's own state allows serving.
fn authenticate(
    gw: &Gateway,
    conn: &ConnInfo,
    headers: &HeaderMap,
    op: &mut OpCtx,
) -> Result<(Arc<ConfState>, ConfGateway), Fault> {
    let conf = gw.conf.current(ORIGIN)?;
    gw.stamper.check(gw, ORIGIN)?;
    let leaf = conn.peer_chain.first().ok_or_else(|| {
        sfault(
            FaultCode::SslAuthenticationFailed,
            "the peer presented no certificate",
        )
    })?;
    let peer_hash = veksel_pki::sha256_hex(leaf);
    let peer = conf
        .index
        .gateway_by_cert(&peer_hash)
        .ok_or_else(|| {
            let why = if conf.index.is_revoked(&peer_hash) {
                "has been revoked"
            } else {
                "is not registered to any gateway"
            };
            sfault(
                FaultCode::SslAuthenticationFailed,
                format!("certificate {peer_hash} {why}"),
            )
        })?
        .clone();
    op.record.consumer_gateway = peer.id.to_string();
    crate::ocsp::check(
        &conf,
        crate::ocsp::auth_staple(headers, leaf),
        leaf,
        gw.clock.now_secs(),
    )
    .map_err(|e| sfault(FaultCode::SslAuthenticationFailed, e))?;
    Ok((conf, peer))
}

/// The message comes from the gateway it names, which hosts its client, and was
/// created within the accepted window: all checked before any work is done for it.
fn admit(
    gw: &Gateway,
    conf: &ConfState,
    peer: &ConfGateway,
    head: &RequestHead,
) -> Result<(), Fault> {
    if head.consumer_gateway != peer.id {
        return Err(sfault(
            FaultCode::SslAuthenticationFailed,
            format!(
                "the TLS peer is gateway {}, but the message claims to come from {}",
                peer.id, head.consumer_gateway
            ),
        ));
    }
    let veksel_id::ClientId::Subsystem(client) = &head.client else {
        return Err(peer::PeerError::ClientNotSubsystem.at(ORIGIN));
    };
    if !peer.clients.contains(client) {
        return Err(sfault(
            FaultCode::SslAuthenticationFailed,
            format!("gateway {} does not host client {}", peer.id, head.client),
        ));
    }
    let settings = &conf.conf().settings;
    peer::check_window(
        head.created_at_ms,
        gw.clock.now_ms(),
        settings.request_ttl_ms,
        settings.max_clock_skew_ms,
    )
    .map_err(|e| e.at(ORIGIN))
}

/// Each request id is served once within its window: checked in memory, made durable
/// with the exchange's record (or, with `replay_claim: database`, committed first).
async fn replay(
    gw: &Gateway,
    conf: &ConfState,
    head: &RequestHead,
    op: &mut OpCtx,
) -> Result<(), Fault> {
    let settings = &conf.conf().settings;
    let claim = ReplayClaim {
        request_id: head.request_id.clone(),
        expires_at: head
            .created_at_ms
            .saturating_add(settings.request_ttl_ms)
            .saturating_add(settings.max_clock_skew_ms),
    };
    let replayed = || {
        sfault(
            FaultCode::ReplayedMessage,
            format!(
                "request {} was already received; replays are refused",
                head.request_id
            ),
        )
    };
    match gw.log.claim(&claim, gw.clock.now_ms()) {
        Claim::Fresh => {}
        Claim::Replayed => return Err(replayed()),
        Claim::Full => {
            return Err(sfault(
                FaultCode::InternalError,
                "the replay guard is full; the request is refused rather than possibly replayed",
            ));
        }
    }
    if gw.config.replay_claim == ReplayClaimMode::Database {
        let fresh = gw
            .log
            .commit_claim(claim)
            .await
            .map_err(|e| sfault(FaultCode::DatabaseError, e.to_string()))?;
        return if fresh { Ok(()) } else { Err(replayed()) };
    }
    op.replay = Some(claim);
    Ok(())
}

/// The provider subsystem is hosted here, and the client may call this service and
/// endpoint (metaservices are open to every member of the network). Returns the
/// provider's local configuration and the service's, `None` for a metaservice.
fn access(
    gw: &Gateway,
    conf: &ConfState,
    head: &RequestHead,
) -> Result<(LocalClient, Option<ServiceConfig>), Fault> {
    let target = &head.target;
    let provider = target.service.subsystem();
    let serverconf = gw.serverconf.current();
    let local = serverconf
        .clients
        .get(provider)
        .filter(|_| {
            conf.index
                .gateways_hosting(provider)
                .iter()
                .any(|g| &g.id == gw.id())
        })
        .ok_or_else(|| {
            sfault(
                FaultCode::UnknownMember,
                format!("Client '{provider}' not found on gateway {}", gw.id()),
            )
        })?
        .clone();
    if target.metaservice().is_some() {
        return Ok((local, None));
    }
    let code = target.service.code();
    let svc = local.services.get(code).ok_or_else(|| {
        sfault(
            FaultCode::UnknownService,
            format!("Unknown service: {}", target.service),
        )
    })?;
    if !svc.enabled {
        return Err(sfault(
            FaultCode::ServiceDisabled,
            format!("Service {} is disabled", target.service),
        ));
    }
    let segments = r1::decoded_segments(&target.service_path);
    let global_groups = conf.index.global_groups_of(&head.client);
    let local_groups = local.local_groups_of(&head.client);
    let caller = Caller {
        client: &head.client,
        global_groups: &global_groups,
        local_groups: &local_groups,
    };
    if !access::is_allowed(&local.access, &caller, code, &head.method, &segments) {
        let path = if target.service_path.is_empty() {
            "/"
        } else {
            &target.service_path
        };
        return Err(sfault(
            FaultCode::AccessDenied,
            format!(
                "Request is not allowed: {} may not call {} {path} on {}",
                head.client, head.method, target.service
            ),
        ));
    }
    let svc = svc.clone();
    Ok((local, Some(svc)))
}

/// The access token a service requires (`Authorization: Bearer`): verified with the
/// token service's keys from the global configuration, then its scope, audience,
/// consumer, delegation and revocation checked for this call.
fn access_token(
    gw: &Gateway,
    conf: &ConfState,
    head: &RequestHead,
    svc: &ServiceConfig,
) -> Result<(), Fault> {
    let segments = r1::decoded_segments(&head.target.service_path);
    let needed = svc.scopes_for(&head.method, &segments);
    if needed.is_empty() {
        return Ok(());
    }
    let mut presented = head
        .headers
        .iter()
        .filter(|(name, _)| name == "authorization")
        .map(|(_, value)| value);
    let token = match (presented.next(), presented.next()) {
        (Some(value), None) => value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim),
        (Some(_), Some(_)) => {
            return Err(sfault(
                FaultCode::InvalidAccessToken,
                "the request has more than one Authorization header",
            ));
        }
        (None, _) => None,
    }
    .ok_or_else(|| {
        sfault(
            FaultCode::MissingAccessToken,
            format!(
                "Service {} requires an access token with scope {}: send Authorization: Bearer <token>",
                head.target.service,
                needed.join(" and ")
            ),
        )
    })?;
    let now = i64::try_from(gw.clock.now_secs()).unwrap_or(i64::MAX);
    let claims = conf
        .access_token(token, now)
        .map_err(|e| sfault(FaultCode::InvalidAccessToken, e.to_string()))?;
    let Some(ts) = conf.conf().token_service.as_ref() else {
        return Err(sfault(
            FaultCode::InvalidAccessToken,
            "the global configuration names no token service",
        ));
    };
    for scope in needed {
        veksel_proto::oauth::authorise(
            &claims,
            scope,
            &head.target.service,
            head.client.member(),
            ts,
        )
        .map_err(|e| {
            let code = match e {
                veksel_proto::oauth::TokenRefusal::MissingScope(_) => FaultCode::InsufficientScope,
                _ => FaultCode::InvalidAccessToken,
            };
            sfault(code, e.to_string())
        })?;
    }
    Ok(())
}

/// The person the request comes for: their ID token verified again here, at the time
/// the consumer's gateway created the request (so both gateways judge it alike), and
/// the level the service requires.
fn person(
    conf: &ConfState,
    head: &mut RequestHead,
    svc: Option<&ServiceConfig>,
) -> Result<(), Fault> {
    if let Some(token) = &head.id_token {
        let at = head.created_at_ms.div_euclid(1000);
        let person = super::verified_person(conf, token, &head.client, at).map_err(|e| {
            sfault(
                FaultCode::InvalidPersonToken,
                format!("the person's ID token: {e}"),
            )
        })?;
        head.person = Some(person);
    }
    let Some(required) = svc.and_then(|s| s.person_level) else {
        return Ok(());
    };
    match &head.person {
        Some(p) if p.level >= required => Ok(()),
        Some(p) => Err(sfault(
            FaultCode::VerifiedPersonRequired,
            format!(
                "Service {} requires a person verified at level {required}; the person logged in at {}",
                head.target.service, p.level
            ),
        )),
        None => Err(sfault(
            FaultCode::VerifiedPersonRequired,
            format!(
                "Service {} requires a person verified at level {required} or above: send their ID token in {}{}",
                head.target.service,
                peer::VEKSEL_ID_TOKEN,
                if head.user_id.is_some() {
                    " (X-Road-UserId is the information system's own claim, not a verified person)"
                } else {
                    ""
                }
            ),
        )),
    }
}

/// The member's signature over the request as it arrived. A small body is verified
/// whole before the provider's system sees any of it; a large one streams to the
/// system with its last frame held until the signature checks out. The outcome
/// arrives on the returned channel either way.
async fn verify(
    gw: &Arc<Gateway>,
    conf: &Arc<ConfState>,
    head: &RequestHead,
    headers: &HeaderMap,
    body: GwBody,
    log_mode: LogMode,
) -> Result<(GwBody, oneshot::Receiver<Result<Verified, Fault>>), Fault> {
    let (tx, rx) = oneshot::channel();
    let template = head.clone();
    let provider = gw.id().clone();
    let conf = conf.clone();
    let gateway = gw.clone();
    let staple = super::header_text(headers, VEKSEL_OCSP_SIGNING);
    let carried = peer::decode_chain(headers).map_err(|e| e.at(ORIGIN))?;
    let check = move |end: BodyEnd| -> Result<Verified, Fault> {
        let trailers =
            SignedTrailers::decode(end.trailers.as_ref(), Direction::Request, &end.digest)
                .map_err(|e| e.at(ORIGIN))?;
        let descriptor = template.descriptor(&provider, end.digest);
        let bytes = descriptor::canonical_bytes(&descriptor);
        let chain = super::verify_signature(
            &gateway,
            &conf,
            descriptor.client.member(),
            &trailers.signature,
            &bytes,
            carried.as_deref(),
            staple.as_deref(),
            ORIGIN,
        )?;
        let signed = Signed {
            descriptor,
            bytes,
            signature: trailers.signature,
            chain,
        };
        Ok((signed, end.capture))
    };
    let body = tap::tap(
        body,
        Tap {
            hold_last: true,
            max_len: gw.config.max_body_bytes,
            capture: gw.capture_policy(log_mode),
            announced_len: tap::announced_len(headers),
        },
        |e| sfault(FaultCode::NetworkError, format!("reading the request: {e}")),
        move |end| async move {
            let outcome = check(end);
            let result = outcome.as_ref().map(|_| None).map_err(Clone::clone);
            let _ = tx.send(outcome);
            result
        },
    )
    .await?;
    Ok((body, rx))
}

/// The answer of the provider's information system, or of a metaservice.
async fn call_system(
    gw: &Gateway,
    conf: &ConfState,
    local: &LocalClient,
    service: Option<&ServiceConfig>,
    head: &RequestHead,
    parts: &request::Parts,
    body: GwBody,
) -> Result<Response<GwBody>, Fault> {
    match (head.target.metaservice(), service) {
        (Some(m), _) => answer_metaservice(conf, local, head, m, body).await,
        (None, Some(svc)) => call_backend(gw, svc, head, parts, body).await,
        (None, None) => Err(sfault(FaultCode::InternalError, "no service configuration")),
    }
}

async fn answer_metaservice(
    conf: &ConfState,
    local: &LocalClient,
    head: &RequestHead,
    meta: Metaservice,
    body: GwBody,
) -> Result<Response<GwBody>, Fault> {
    // The body is unused, but read: it is verified (or is verified before the
    // answer is signed).
    let _ = http_body_util::BodyExt::collect(body).await;
    meta::provider_answer(
        conf,
        local,
        &head.client,
        meta,
        head.target.query.as_deref(),
    )
}

async fn call_backend(
    gw: &Gateway,
    svc: &ServiceConfig,
    head: &RequestHead,
    parts: &request::Parts,
    body: GwBody,
) -> Result<Response<GwBody>, Fault> {
    let target = &head.target;
    let base = svc.base_url.trim_end_matches('/');
    let mut uri = format!("{base}{}", target.service_path);
    if let Some(q) = &target.query {
        uri.push('?');
        uri.push_str(q);
    }
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(&uri)
        .body(body)
        .map_err(|e| {
            sfault(
                FaultCode::ServiceFailed,
                format!("service address {uri:?} is not valid: {e}"),
            )
        })?;
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    {
        let h = req.headers_mut();
        // The provider's information system learns who calls, as with X-Road.
        head.encode(h).map_err(|e| e.at(ORIGIN))?;
        h.remove(peer::VEKSEL_CREATED_AT);
        h.remove(peer::VEKSEL_CONSUMER_GATEWAY);
        if let Some(p) = &head.person {
            // The token stays for a system that checks it itself; these save the
            // others from parsing it.
            for (name, value) in [
                (VEKSEL_PERSON_ID, p.id.as_str()),
                (VEKSEL_PERSON_LEVEL, p.level.as_str()),
            ] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(name, v);
                }
            }
        }
        if let Some(len) = parts.headers.get(http::header::CONTENT_LENGTH) {
            h.insert(http::header::CONTENT_LENGTH, len.clone());
        }
        if let Some(host) = authority
            && let Ok(v) = HeaderValue::from_str(&host)
        {
            h.insert(http::header::HOST, v);
        }
    }
    let timeout = Duration::from_millis(svc.timeout_ms);
    match tokio::time::timeout(timeout, gw.backends.request(req)).await {
        Err(_) => Err(sfault(
            FaultCode::ServiceFailed,
            format!(
                "the service {} did not answer within {} ms",
                target.service, svc.timeout_ms
            ),
        )),
        Ok(Err(e)) => Err(sfault(
            FaultCode::ServiceFailed,
            format!(
                "cannot reach the service {} at {base}: {}",
                target.service,
                error_chain(&e)
            ),
        )),
        Ok(Ok(resp)) => Ok(resp.map(body::incoming)),
    }
}

/// The answer to the consumer's gateway: bound to the request by its hash and signed
/// by the provider's member. A streamed answer is signed at its end and logged before
/// the signature leaves; a small one is signed in its head and its body follows the
/// commit of its record ([`SignAndLog::send_first`]).
async fn finish(
    gw: &Arc<Gateway>,
    op: &OpCtx,
    head: &RequestHead,
    (request, request_capture): Verified,
    answer: Response<GwBody>,
    log_mode: LogMode,
    subject_hash: Option<String>,
) -> Result<Response<GwBody>, Fault> {
    let request_hash = descriptor::request_hash(&request.bytes);
    let (parts, rbody) = answer.into_parts();
    let mut e2e = end_to_end(&parts.headers);
    if !e2e.iter().any(|(n, _)| n == "date") {
        // hyper adds a Date to responses that lack one; adding it first keeps the
        // signed header list identical to what the consumer receives.
        e2e.push(("date".to_owned(), httpdate(gw.clock.now_ms())));
        e2e.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let answer_head = ResponseHead::answering(head, request_hash, parts.status.as_u16(), e2e);
    let mut headers = HeaderMap::new();
    answer_head.encode(&mut headers).map_err(|e| e.at(ORIGIN))?;
    if let Some(len) = parts.headers.get(http::header::CONTENT_LENGTH) {
        headers.insert(http::header::CONTENT_LENGTH, len.clone());
    }
    let member = head.target.service.subsystem().member();
    let signer = gw.keys.get().signer(member).ok_or_else(|| {
        sfault(
            FaultCode::InternalError,
            format!("this gateway holds no signing key for member {member}"),
        )
    })?;
    super::signing_headers(gw, &mut headers, &signer);
    let sign = SignAndLog {
        gw: gw.clone(),
        op: op.clone(),
        head: answer_head,
        signer,
        log_mode,
        request,
        request_capture,
        subject_hash,
    };
    let capture = gw
        .capture_policy(log_mode)
        .as_ref()
        .map(CapturePolicy::for_response);
    let service = head.target.service.to_string();
    let read = tap::read(
        rbody,
        Tap {
            hold_last: false,
            max_len: gw.config.max_body_bytes,
            capture,
            announced_len: None,
        },
        |e| {
            sfault(
                FaultCode::ServiceFailed,
                format!("reading the response of {service}: {e}"),
            )
        },
        sign,
        |sign, end| async move { sign.run(end).await.map(Some) },
    )
    .await?;
    let body = match read {
        Read::Streaming(body) => body,
        Read::Whole {
            bytes,
            end,
            state: sign,
        } => sign.send_first(bytes, end, &mut headers).await?,
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = parts.status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// Signs the answer at its end, writes the provider's record, records monitoring,
/// and returns the trailers to send.
struct SignAndLog {
    gw: Arc<Gateway>,
    op: OpCtx,
    head: ResponseHead,
    signer: MemberSigner,
    log_mode: LogMode,
    request: Signed<RequestDescriptor>,
    request_capture: Capture,
    subject_hash: Option<String>,
}

impl SignAndLog {
    async fn run(self, end: BodyEnd) -> Result<HeaderMap, Fault> {
        let (gw, mut op) = (self.gw.clone(), self.op.clone());
        let request_size = self.request.descriptor.body.length;
        match self.sign_and_log(end).await {
            Ok((trailers, status, response_size, logged)) => {
                if logged {
                    // Durable with the record.
                    op.replay = None;
                }
                op.finish_ok(&gw, status, request_size, response_size);
                Ok(trailers.encode())
            }
            Err(f) => {
                tracing::error!(fault = %f.type_string(), message = %f.message, "response withheld");
                op.finish_fault(&gw, &f);
                Err(f)
            }
        }
    }

    async fn sign_and_log(self, end: BodyEnd) -> Result<(SignedTrailers, u16, u64, bool), Fault> {
        let (trailers, response) = self.sign(end.digest).await?;
        let (status, size) = (response.descriptor.status, response.descriptor.body.length);
        let logged = self.log(&response, end.capture).await?;
        Ok((trailers, status, size, logged))
    }

    /// The answer's descriptor, signed now.
    async fn sign(
        &self,
        digest: descriptor::BodyDigest,
    ) -> Result<(SignedTrailers, Signed<ResponseDescriptor>), Fault> {
        let created_at = self.gw.clock.now_ms();
        let descriptor = self.head.descriptor(self.gw.id(), created_at, digest);
        let bytes = descriptor::canonical_bytes(&descriptor);
        let signature = super::sign(&self.signer, RESPONSE_CTY, bytes.clone(), ORIGIN).await?;
        let trailers = SignedTrailers {
            signature: signature.clone(),
            created_at_ms: Some(created_at),
            body_digest: Some(descriptor.body.sha256.clone()),
        };
        let response = Signed {
            descriptor,
            bytes,
            signature,
            chain: self.signer.cert_chain().to_vec(),
        };
        Ok((trailers, response))
    }

    /// Writes the provider's record; true if one was written.
    async fn log(
        self,
        response: &Signed<ResponseDescriptor>,
        response_capture: Capture,
    ) -> Result<bool, Fault> {
        record::log_exchange(
            &self.gw,
            Side::Provider,
            self.log_mode,
            &self.request,
            response,
            (self.request_capture, response_capture),
            self.subject_hash,
        )
        .await
    }

    /// A small answer, signed now: it leaves at once with its signature in its head;
    /// its record commits while it travels, and its trailers say whether it did. The
    /// consumer's gateway checks and commits its own meanwhile, and releases the
    /// answer only once both are committed.
    async fn send_first(
        self,
        bytes: bytes::Bytes,
        end: BodyEnd,
        headers: &mut HeaderMap,
    ) -> Result<GwBody, Fault> {
        let (signed, commit) = self.sign_first(end).await?;
        signed.encode_into(headers);
        // The body follows its record's commit, or does not come at all: its length
        // is said in the signed fields, not as framing.
        headers.remove(http::header::CONTENT_LENGTH);
        headers.insert(peer::VEKSEL_BODY_LENGTH, bytes.len().into());
        Ok(body::released_by(bytes, commit))
    }

    /// Signs a small answer before it is sent; returns what goes in its head and the
    /// commit of its record, which says whether the body may follow and the trailers
    /// that end it ([`Commit`]).
    async fn sign_first(
        self,
        end: BodyEnd,
    ) -> Result<
        (
            SignedTrailers,
            impl Future<Output = (bool, HeaderMap)> + Send + 'static,
        ),
        Fault,
    > {
        let (gw, mut op) = (self.gw.clone(), self.op.clone());
        let signed = match self.sign(end.digest.clone()).await {
            Ok(s) => s,
            Err(f) => {
                op.finish_fault(&gw, &f);
                return Err(f);
            }
        };
        let (head, response) = signed;
        let commit = async move {
            crate::crash_point("provider-answered");
            let request_size = self.request.descriptor.body.length;
            let (status, size) = (response.descriptor.status, response.descriptor.body.length);
            match self.log(&response, end.capture).await {
                Ok(logged) => {
                    if logged {
                        op.replay = None;
                    }
                    op.finish_ok(&gw, status, request_size, size);
                    (true, Commit::Committed.encode())
                }
                Err(f) => {
                    tracing::error!(fault = %f.type_string(), message = %f.message, "record of a signed answer not committed; its body withheld");
                    op.finish_fault(&gw, &f);
                    (false, Commit::Failed(f).encode())
                }
            }
        };
        Ok((head, commit))
    }
}

/// An HTTP date (RFC 9110 IMF-fixdate) for Unix milliseconds.
fn httpdate(unix_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates() {
        assert_eq!(
            super::httpdate(784_111_777_000),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
}
