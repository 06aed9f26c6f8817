//! The provider side between gateways: a peer gateway (authenticated by its TLS
//! certificate) sends a signed request; this gateway checks the peer, the time window
//! and replay, the provider subsystem, the service and the access rights, verifies
//! the member signature over what it received, calls the provider's information
//! system, signs the response bound to the request hash, and logs both before the
//! signature (the last thing the consumer needs) leaves.

use crate::body::{self, BodyEnd, Finisher, GwBody, Prefetched, TapBody, TapOptions};
use crate::capture::{Capture, CapturePolicy, StoredBodies};
use crate::exchange::{
    self, OpCtx, VEKSEL_BODY_DIGEST, VEKSEL_CONSUMER_GATEWAY, VEKSEL_CREATED_AT, VEKSEL_SIGNATURE,
    error_chain, fault_response, put, required,
};
use crate::msglog::{MessageRecord, Side};
use crate::serverconf::LogMode;
use crate::{Gateway, meta};
use http::{HeaderMap, HeaderValue, Request, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use veksel_id::{ClientId, Fault, FaultCode, Origin};
use veksel_net::ConnInfo;
use veksel_proto::access::{self, Caller};
use veksel_proto::descriptor::{
    self, BodyDigest, REQUEST_TYPE, RESPONSE_CTY, RESPONSE_TYPE, RequestDescriptor,
    ResponseDescriptor,
};
use veksel_proto::headers::{self as xh, end_to_end};
use veksel_proto::r1;

/// The hyper service for one gateway-to-gateway connection.
pub fn service(gw: Arc<Gateway>, conn: ConnInfo) -> exchange::ConnService {
    exchange::ConnService::new(gw, conn, |gw, conn, req| Box::pin(handle(gw, conn, req)))
}

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
            let detail = exchange::detail_id();
            tracing::info!(fault = %fault.type_string(), message = %fault.message, %detail, "provider-side exchange refused");
            let resp = fault_response(&fault, None, &detail);
            op.finish_fault(&gw, &fault);
            resp
        }
    };
    exchange::staple_auth(&gw, resp.headers_mut());
    resp
}

/// Result of verifying the request: canonical bytes and signature.
#[derive(Debug)]
struct VerifiedRequest {
    bytes: Vec<u8>,
    signature: String,
    length: u64,
    capture: Capture,
}

async fn exchange(
    gw: &Arc<Gateway>,
    conn: &ConnInfo,
    req: Request<GwBody>,
    op: &mut OpCtx,
) -> Result<Response<GwBody>, Fault> {
    let o = Origin::ServerProxy;
    let conf = gw.conf.current(o)?;
    gw.stamper.check(gw, Origin::ServerProxy)?;
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
        crate::ocsp::auth_staple(req.headers(), leaf),
        leaf,
        gw.clock.now_secs(),
    )
    .map_err(|e| sfault(FaultCode::SslAuthenticationFailed, e))?;

    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let target = r1::parse_target(path, query).map_err(|f| exchange::reorigin(f, o))?;
    op.record.service = target.service.to_string();
    xh::check_limits(&parts.headers).map_err(|f| exchange::reorigin(f, o))?;
    // During a rotation the consumer staples OCSP for its old and new TLS certificate.
    xh::refuse_repeated_protocol_headers(&parts.headers, &[crate::ocsp::VEKSEL_OCSP_AUTH])
        .map_err(|f| exchange::reorigin(f, o))?;
    let client = xh::client_id(&parts.headers).map_err(|f| exchange::reorigin(f, o))?;
    op.record.client = client.to_string();
    let ClientId::Subsystem(client_sub) = &client else {
        return Err(sfault(
            FaultCode::InvalidClientIdentifier,
            "the client must be a subsystem",
        ));
    };
    let request_id = required(&parts.headers, xh::X_ROAD_REQUEST_ID, o)?.to_owned();
    if uuid::Uuid::parse_str(&request_id).is_err() {
        return Err(sfault(
            FaultCode::InvalidRequest,
            "X-Road-Request-Id is not a UUID",
        ));
    }
    op.record.request_id = request_id.clone();
    let xroad_id = xh::optional_field(&parts.headers, xh::X_ROAD_ID)
        .map_err(|f| exchange::reorigin(f, o))?
        .ok_or_else(|| sfault(FaultCode::InvalidRequest, "the message lacks X-Road-Id"))?;
    op.record.xroad_id = xroad_id.clone();
    let field =
        |name| xh::optional_field(&parts.headers, name).map_err(|f| exchange::reorigin(f, o));
    let user_id = field(xh::X_ROAD_USER_ID)?;
    let issue = field(xh::X_ROAD_ISSUE)?;
    let represented_party = field(xh::X_ROAD_REPRESENTED_PARTY)?;
    let created_at: i64 = required(&parts.headers, VEKSEL_CREATED_AT, o)?
        .parse()
        .map_err(|_| {
            sfault(
                FaultCode::InvalidRequest,
                "veksel-created-at is not a number",
            )
        })?;
    let claimed_consumer = required(&parts.headers, VEKSEL_CONSUMER_GATEWAY, o)?;
    if claimed_consumer != peer.id.to_string() {
        return Err(sfault(
            FaultCode::SslAuthenticationFailed,
            format!(
                "the TLS peer is gateway {}, but the message claims to come from {claimed_consumer}",
                peer.id
            ),
        ));
    }
    if !peer.clients.contains(client_sub) {
        return Err(sfault(
            FaultCode::SslAuthenticationFailed,
            format!("gateway {} does not host client {client}", peer.id),
        ));
    }

    // Time window, then replay: both before any work is done for the request.
    let settings = &conf.conf().settings;
    let now = gw.clock.now_ms();
    if created_at > now + settings.max_clock_skew_ms || created_at + settings.request_ttl_ms < now {
        return Err(sfault(
            FaultCode::ReplayedMessage,
            format!(
                "the request was created at {} and is outside the accepted window (now {}, lifetime {} ms, skew {} ms)",
                veksel_proto::rfc3339(created_at),
                veksel_proto::rfc3339(now),
                settings.request_ttl_ms,
                settings.max_clock_skew_ms
            ),
        ));
    }
    let fresh = gw
        .log
        .claim_request_id(
            &request_id,
            created_at + settings.request_ttl_ms + settings.max_clock_skew_ms,
        )
        .await
        .map_err(|e| sfault(FaultCode::DatabaseError, e))?;
    if !fresh {
        return Err(sfault(
            FaultCode::ReplayedMessage,
            format!("request {request_id} was already received; replays are refused"),
        ));
    }

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
    let metaservice = target.metaservice();
    let service_conf = match metaservice {
        Some(_) => None,
        None => {
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
            let global_groups = conf.index.global_groups_of(&client);
            let local_groups = local.local_groups_of(&client);
            let caller = Caller {
                client: &client,
                global_groups: &global_groups,
                local_groups: &local_groups,
            };
            if !access::is_allowed(
                &local.access,
                &caller,
                code,
                parts.method.as_str(),
                &segments,
            ) {
                return Err(sfault(
                    FaultCode::AccessDenied,
                    format!(
                        "Request is not allowed: {client} may not call {} {} on {}",
                        parts.method,
                        if target.service_path.is_empty() {
                            "/"
                        } else {
                            &target.service_path
                        },
                        target.service
                    ),
                ));
            }
            Some(svc.clone())
        }
    };

    let template = RequestDescriptor {
        typ: REQUEST_TYPE.to_owned(),
        request_id: request_id.clone(),
        xroad_id: xroad_id.clone(),
        client: client.clone(),
        service: target.service.clone(),
        method: parts.method.as_str().to_owned(),
        target: target.canonical_target(),
        headers: xh::descriptor_headers(&end_to_end(&parts.headers)),
        user_id: user_id.clone(),
        issue: issue.clone(),
        represented_party: represented_party.clone(),
        consumer_gateway: peer.id.clone(),
        provider_gateway: gw.id().clone(),
        created_at_ms: created_at,
        body: BodyDigest::of(b""),
    };
    let log_mode = local.settings.log_mode;
    let capture = gw.capture_policy(log_mode);
    let conf_for_verify = conf.clone();
    let clock = gw.clock.clone();
    let signing_staple = exchange::header_text(&parts.headers, crate::ocsp::VEKSEL_OCSP_SIGNING);
    let verify = move |end: BodyEnd| -> Result<VerifiedRequest, Fault> {
        let trailers = end.trailers.unwrap_or_default();
        // Trailers too: one signature and one digest, the ones checked and logged.
        xh::refuse_repeated_protocol_headers(&trailers, &[])
            .map_err(|f| exchange::reorigin(f, Origin::ServerProxy))?;
        let mut d = template;
        d.body = end.digest;
        if let Some(sent) = trailers
            .get(VEKSEL_BODY_DIGEST)
            .and_then(|v| v.to_str().ok())
            && sent != d.body.sha256
        {
            return Err(sfault(
                FaultCode::InvalidBodyDigest,
                "the request body does not match the digest the client's gateway signed",
            ));
        }
        let bytes = descriptor::canonical_bytes(&d);
        let signature = exchange::verify_signature(
            &conf_for_verify,
            d.client.member(),
            trailers.get(VEKSEL_SIGNATURE).and_then(|v| v.to_str().ok()),
            &bytes,
            signing_staple.as_deref(),
            clock.now_secs(),
            Origin::ServerProxy,
        )?;
        Ok(VerifiedRequest {
            bytes,
            signature,
            length: d.body.length,
            capture: end.capture,
        })
    };

    // Small bodies are verified whole before the provider sees anything; large ones
    // stream with their last frame held until the signature checks out.
    let prefetched = body::prefetch(body, exchange::PREFETCH_LIMIT)
        .await
        .map_err(|e| sfault(FaultCode::NetworkError, format!("reading the request: {e}")))?;
    let (backend_body, verified_now, verified_later) = match prefetched {
        Prefetched::Complete {
            body: bytes,
            trailers,
        } => {
            let end = BodyEnd {
                digest: BodyDigest::of(&bytes),
                trailers,
                capture: Capture::of_whole(&bytes, capture.as_ref()),
            };
            let v = verify(end)?;
            (body::full(bytes), Some(v), None)
        }
        Prefetched::Partial { prefix, rest } => {
            let (tx, rx) = oneshot::channel::<Result<VerifiedRequest, Fault>>();
            let finisher: Finisher = Box::new(move |end| {
                Box::pin(async move {
                    let result = verify(end);
                    let outcome = result.as_ref().map(|_| None).map_err(|f| f.message.clone());
                    let _ = tx.send(result);
                    outcome
                })
            });
            let tap = TapBody::new(
                rest,
                prefix,
                TapOptions {
                    hold_last: true,
                    max_len: gw.config.max_body_bytes,
                    capture: capture.clone(),
                },
                finisher,
            );
            let len = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let tap = match len {
                Some(n) => tap.with_exact_len(n),
                None => tap,
            };
            (tap.boxed(), None, Some(rx))
        }
    };

    op.record.request_out_ts = Some(gw.clock.now_ms());
    let backend_response = match (&metaservice, &service_conf) {
        (Some(m), _) => {
            // Metaservices answer from local configuration; the request body is unused
            // but has been verified (or is verified before the response is signed).
            let _ = http_body_util::BodyExt::collect(backend_body).await;
            meta::provider_answer(&conf, &local, &client, *m, target.query.as_deref())
        }
        (None, Some(svc)) => {
            call_backend(
                gw,
                svc,
                &target,
                &parts,
                backend_body,
                &client,
                &xroad_id,
                &request_id,
                [&user_id, &issue, &represented_party],
            )
            .await
        }
        (None, None) => Err(sfault(FaultCode::InternalError, "no service configuration")),
    };
    let verified = match verified_now {
        Some(v) => Ok(v),
        None => match verified_later {
            Some(rx) => {
                match tokio::time::timeout(Duration::from_secs(gw.config.request_timeout_secs), rx)
                    .await
                {
                    Ok(Ok(r)) => r,
                    _ => Err(sfault(
                        FaultCode::InvalidRequest,
                        "the request body did not arrive completely",
                    )),
                }
            }
            None => Err(sfault(
                FaultCode::InternalError,
                "request verification lost",
            )),
        },
    };
    // A signature fault explains a failed backend call better than the call's own error.
    let verified = verified?;
    let backend_response = backend_response?;
    op.record.response_in_ts = Some(gw.clock.now_ms());

    let request_hash = descriptor::request_hash(&verified.bytes);
    let (rparts, rbody) = backend_response.into_parts();
    let mut headers = HeaderMap::new();
    let mut e2e = end_to_end(&rparts.headers);
    if !e2e.iter().any(|(n, _)| n == "date") {
        // hyper adds a Date to responses that lack one; adding it first keeps the
        // signed header list identical to what the consumer receives.
        let date = httpdate(gw.clock.now_ms());
        e2e.push(("date".to_owned(), date));
        e2e.sort_by(|a, b| a.0.cmp(&b.0));
    }
    xh::append_all(&mut headers, &e2e).map_err(|f| exchange::reorigin(f, o))?;
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
    if let Some(len) = rparts.headers.get(http::header::CONTENT_LENGTH) {
        headers.insert(http::header::CONTENT_LENGTH, len.clone());
    }
    let signer = gw.keys.get().signer(provider.member()).ok_or_else(|| {
        sfault(
            FaultCode::InternalError,
            format!(
                "this gateway holds no signing key for member {}",
                provider.member()
            ),
        )
    })?;
    exchange::staple_signing(gw, &mut headers, signer.as_ref());
    let template = ResponseDescriptor {
        typ: RESPONSE_TYPE.to_owned(),
        request_id: request_id.clone(),
        request_hash,
        xroad_id,
        client,
        service: target.service.clone(),
        status: rparts.status.as_u16(),
        headers: xh::descriptor_headers(&e2e),
        provider_gateway: gw.id().clone(),
        created_at_ms: 0,
        body: BodyDigest::of(b""),
    };
    let finish = ProviderFinish {
        gw: gw.clone(),
        op: op.clone(),
        template,
        signer,
        log_mode,
        verified,
        consumer_gateway: peer.id.to_string(),
        method: parts.method.as_str().to_owned(),
        target: target.canonical_target(),
        created_at,
    };
    // Small responses are signed and logged before anything is sent, so a failure
    // (the message log cannot be written) becomes a proper fault response; large ones
    // stream and are signed and logged at their end, before the trailers leave.
    let response_capture = capture.as_ref().map(CapturePolicy::for_response);
    let prefetched = body::prefetch(rbody, exchange::PREFETCH_LIMIT)
        .await
        .map_err(|e| {
            sfault(
                FaultCode::ServiceFailed,
                format!("reading the response of {}: {e}", target.service),
            )
        })?;
    let body = match prefetched {
        Prefetched::Complete { body: bytes, .. } => {
            let end = BodyEnd {
                digest: BodyDigest::of(&bytes),
                trailers: None,
                capture: Capture::of_whole(&bytes, response_capture.as_ref()),
            };
            match finish.run(end).await {
                Ok(trailers) => body::with_trailers(bytes, trailers),
                Err(f) => return Ok(fault_response(&f, None, &exchange::detail_id())),
            }
        }
        Prefetched::Partial { prefix, rest } => {
            let finisher: Finisher = Box::new(move |end| {
                Box::pin(async move { finish.run(end).await.map(Some).map_err(|f| f.message) })
            });
            TapBody::new(
                rest,
                prefix,
                TapOptions {
                    hold_last: false,
                    max_len: gw.config.max_body_bytes,
                    capture: response_capture,
                },
                finisher,
            )
            .boxed()
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = rparts.status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// Signs the response at its end, writes the provider's message-log record, records
/// monitoring, and returns the trailers to send.
struct ProviderFinish {
    gw: Arc<Gateway>,
    op: OpCtx,
    template: ResponseDescriptor,
    signer: crate::signing::MemberSigner,
    log_mode: LogMode,
    verified: VerifiedRequest,
    consumer_gateway: String,
    method: String,
    target: String,
    created_at: i64,
}

impl ProviderFinish {
    async fn run(mut self, end: BodyEnd) -> Result<HeaderMap, Fault> {
        let gw = self.gw.clone();
        let mut d = self.template.clone();
        d.body = end.digest.clone();
        d.created_at_ms = gw.clock.now_ms();
        let request_capture = std::mem::replace(&mut self.verified.capture, Capture::Off);
        match self.sign_and_log(&d, end, request_capture).await {
            Ok(signature) => {
                self.op
                    .finish_ok(&gw, d.status, self.verified.length, d.body.length);
                let mut trailers = HeaderMap::new();
                put(&mut trailers, VEKSEL_SIGNATURE, &signature);
                put(
                    &mut trailers,
                    VEKSEL_CREATED_AT,
                    &d.created_at_ms.to_string(),
                );
                put(&mut trailers, VEKSEL_BODY_DIGEST, &d.body.sha256);
                Ok(trailers)
            }
            Err(f) => {
                tracing::error!(fault = %f.type_string(), message = %f.message, "response withheld");
                self.op.finish_fault(&gw, &f);
                Err(f)
            }
        }
    }

    async fn sign_and_log(
        &self,
        d: &ResponseDescriptor,
        end: BodyEnd,
        request_capture: Capture,
    ) -> Result<String, Fault> {
        let bytes = descriptor::canonical_bytes(d);
        let signature = exchange::sign(
            &self.signer,
            RESPONSE_CTY,
            bytes.clone(),
            Origin::ServerProxy,
        )
        .await?;
        if self.log_mode == LogMode::Off {
            return Ok(signature);
        }
        // Kept until the record is written: the copies' memory stays accounted for.
        let mut bodies = StoredBodies::of(
            request_capture,
            end.capture,
            self.gw.config.max_logged_body_bytes,
        );
        self.gw.metrics.body_not_stored(bodies.not_stored);
        let record = MessageRecord {
            request_id: d.request_id.clone(),
            side: Side::Provider,
            xroad_id: d.xroad_id.clone(),
            client: d.client.to_string(),
            service: d.service.to_string(),
            method: self.method.clone(),
            target: self.target.clone(),
            status: d.status,
            consumer_gateway: self.consumer_gateway.clone(),
            provider_gateway: self.gw.id().to_string(),
            request_descriptor: self.verified.bytes.clone(),
            request_signature: self.verified.signature.clone(),
            response_descriptor: bytes,
            response_signature: signature.clone(),
            request_body: bodies.request.take(),
            response_body: bodies.response.take(),
            body_note: bodies.note.take(),
            request_size: self.verified.length,
            response_size: d.body.length,
            created_at: self.created_at,
            logged_at: self.gw.clock.now_ms(),
        };
        self.gw.log.log_message(record).await.map_err(|e| {
            sfault(
                FaultCode::DatabaseError,
                format!("the message log could not be written: {e}"),
            )
        })?;
        Ok(signature)
    }
}

#[allow(clippy::too_many_arguments)]
async fn call_backend(
    gw: &Arc<Gateway>,
    svc: &crate::serverconf::ServiceConfig,
    target: &r1::R1Target,
    parts: &http::request::Parts,
    body: GwBody,
    client: &ClientId,
    xroad_id: &str,
    request_id: &str,
    optional: [&Option<String>; 3],
) -> Result<Response<GwBody>, Fault> {
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
        xh::append_all(h, &end_to_end(&parts.headers))
            .map_err(|f| exchange::reorigin(f, Origin::ServerProxy))?;
        // The provider's information system learns who calls, as with X-Road.
        put(h, xh::X_ROAD_CLIENT, &r1::encode_id(&client.to_string()));
        put(h, xh::X_ROAD_ID, xroad_id);
        put(h, xh::X_ROAD_REQUEST_ID, request_id);
        for (name, value) in [
            xh::X_ROAD_USER_ID,
            xh::X_ROAD_ISSUE,
            xh::X_ROAD_REPRESENTED_PARTY,
        ]
        .into_iter()
        .zip(optional)
        {
            if let Some(v) = value {
                put(h, name, v);
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
