//! A dishonest provider: an impostor holding the population gateway's real keys sits
//! at its registered address, passes each request on to the real gateway, and changes
//! the answer before the consumer's gateway sees it. Every change must be refused by
//! the consumer's gateway with its own fault code, for small answers (a fault
//! response) and for streamed ones (the last frame withheld, the stream aborted), and
//! nothing refused may be logged as a success.

mod common;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::{Arc, Mutex};
use veksel_proto::descriptor::{
    self, BodyDigest, BodyHasher, RESPONSE_CTY, RESPONSE_TYPE, ResponseDescriptor,
};
use veksel_sandbox::ORGS;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// How the impostor changes the honest provider's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    /// Passes the answer on unchanged.
    Honest,
    /// Binds the answer to another request by its hash.
    RequestHash,
    /// Answers with another request's id.
    RequestId,
    /// Leaves out the signature trailer.
    NoSignature,
    /// Leaves out the signature time.
    NoCreatedAt,
    /// Changes a byte of the body; the signed digest trailer stays.
    BodyByte,
    /// Changes a byte of the body and leaves out the digest trailer.
    BodyByteNoDigest,
    /// Changes a signed response header.
    Header,
    /// Signs the answer again with another member's key (the tax agency's).
    WrongSigner,
    /// Leaves out the signing certificate chain the answer carries.
    NoChain,
    /// Sends the tax agency's chain with the provider's signature.
    OtherChain,
    /// Signs the answer again with the provider's own key: a control that the
    /// impostor rebuilds the descriptor exactly, so `WrongSigner` fails for its signer.
    Resigned,
    /// Leaves out the provider's confirmation that its record is committed (an
    /// answer signed in its head; a streamed answer has none to leave out).
    NoCommit,
    /// Sends more body than an answer signed in its head may have (256 KiB).
    Oversized,
    /// Never answers.
    Hang,
}

impl Tamper {
    /// The consumer gateway's fault, or `None` for an answer it must accept.
    fn expected(self) -> Option<&'static str> {
        match self {
            Tamper::Honest | Tamper::Resigned => None,
            Tamper::RequestHash | Tamper::RequestId => {
                Some("Server.ClientProxy.InconsistentResponse")
            }
            Tamper::NoSignature | Tamper::NoCreatedAt => {
                Some("Server.ClientProxy.MissingSignature")
            }
            Tamper::BodyByte => Some("Server.ClientProxy.InvalidBodyDigest"),
            Tamper::BodyByteNoDigest | Tamper::Header => {
                Some("Server.ClientProxy.InvalidSignatureValue")
            }
            Tamper::WrongSigner | Tamper::NoChain | Tamper::OtherChain => {
                Some("Server.ClientProxy.IncorrectCertificate")
            }
            Tamper::NoCommit => Some("Server.ClientProxy.InvalidRequest"),
            Tamper::Oversized => Some("Server.ClientProxy.TooLarge"),
            Tamper::Hang => Some("Server.ClientProxy.Timeout"),
        }
    }

    /// Refused when the answer's head arrives, before any of its body is released.
    fn refused_at_head(self) -> bool {
        matches!(self, Tamper::RequestHash | Tamper::RequestId | Tamper::Hang)
    }
}

/// Answers the impostor saw signed in their head, so the test knows it changed
/// those and not only trailers.
static SIGNED_IN_HEAD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What the impostor needs to sign an answer again.
struct Signers {
    provider: veksel_gateway::signing::MemberSigner,
    other: veksel_gateway::signing::MemberSigner,
    provider_gateway: veksel_id::GatewayId,
}

/// Starts the impostor on `listener` with the population gateway's authentication
/// key; it forwards each connection's requests to the real gateway at `upstream` as
/// the municipality's gateway.
async fn start_impostor(
    net: &Net,
    listener: tokio::net::TcpListener,
    upstream: String,
    tamper: Arc<Mutex<Tamper>>,
) -> tokio::task::JoinHandle<()> {
    let dir = &net.sandbox().info.gateways[POPULATION].data_dir;
    let keys = veksel_gateway::KeyStore::load(dir).unwrap();
    let tax_keys =
        veksel_gateway::KeyStore::load(&net.sandbox().info.gateways[TAX].data_dir).unwrap();
    let signers = Arc::new(Signers {
        provider: keys
            .signer(&ORGS[POPULATION].member().parse().unwrap())
            .unwrap(),
        other: tax_keys
            .signer(&ORGS[TAX].member().parse().unwrap())
            .unwrap(),
        provider_gateway: ORGS[POPULATION].gateway_id().parse().unwrap(),
    });
    let cert =
        veksel_pki::tls::StapledCert::new(&keys.auth_chain, keys.auth_key.rustls_key()).unwrap();
    let verifier = veksel_pki::tls::GatewayPeerVerifier::new(
        net.sandbox().gateway(POPULATION).unwrap().conf.clone(),
    );
    let tls = Arc::new(veksel_pki::tls::gateway_server_config(cert, verifier).unwrap());
    // One upstream connection, opened now: the impostor's requests reach the real
    // gateway as the municipality gateway's would.
    let send: hyper::client::conn::http2::SendRequest<Body> =
        peer_connection(net, MUNICIPALITY, &upstream, None)
            .await
            .unwrap();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, send, tamper, signers) = (
                acceptor.clone(),
                send.clone(),
                tamper.clone(),
                signers.clone(),
            );
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let (send, signers) = (send.clone(), signers.clone());
                    let mode = *tamper.lock().unwrap();
                    async move {
                        Ok::<_, std::convert::Infallible>(forward(send, mode, signers, req).await)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Passes a request to the real provider gateway and changes its answer.
async fn forward(
    mut send: hyper::client::conn::http2::SendRequest<Body>,
    mode: Tamper,
    signers: Arc<Signers>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    if mode == Tamper::Hang {
        std::future::pending::<()>().await;
    }
    let target = veksel_proto::r1::parse_target(req.uri().path(), req.uri().query()).unwrap();
    let client = veksel_proto::headers::client_id(req.headers()).unwrap();
    let req = req.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync());
    let resp = match send.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            let mut r = Response::new(
                http_body_util::Full::new(Bytes::from(e.to_string()))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *r.status_mut() = http::StatusCode::BAD_GATEWAY;
            return r;
        }
    };
    let (mut parts, body) = resp.into_parts();
    let h = &mut parts.headers;
    match mode {
        Tamper::RequestHash => {
            h.insert(
                "x-road-request-hash",
                HeaderValue::from_str(&descriptor::request_hash(b"another request")).unwrap(),
            );
        }
        Tamper::RequestId => {
            h.insert(
                "x-road-request-id",
                HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).unwrap(),
            );
        }
        Tamper::Header => {
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/x-changed"),
            );
        }
        Tamper::NoChain => {
            h.remove("veksel-signing-chain");
        }
        Tamper::OtherChain => {
            h.insert(
                "veksel-signing-chain",
                HeaderValue::from_str(&veksel_proto::peer::encode_chain(
                    signers.other.cert_chain(),
                ))
                .unwrap(),
            );
        }
        _ => {}
    }
    // What a re-signer needs: the descriptor as the consumer will rebuild it.
    let template = ResponseDescriptor {
        typ: RESPONSE_TYPE.into(),
        request_id: text(h, "x-road-request-id"),
        request_hash: text(h, "x-road-request-hash"),
        xroad_id: text(h, "x-road-id"),
        client,
        service: target.service,
        status: parts.status.as_u16(),
        headers: veksel_proto::headers::descriptor_headers(&veksel_proto::headers::end_to_end(h)),
        provider_gateway: signers.provider_gateway.clone(),
        created_at_ms: 0,
        body: BodyDigest::of(b""),
    };
    // A small answer is signed in its head (veksel-body-length says so): change the
    // signed fields there; a streamed one's are changed in its trailers below.
    let signed_in_head = h.contains_key("veksel-body-length");
    if signed_in_head {
        SIGNED_IN_HEAD.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let digest = BodyDigest {
            sha256: text(h, "veksel-body-digest"),
            length: text(h, "veksel-body-length").parse().unwrap(),
        };
        tamper_signed_fields(mode, h, &template, digest, &signers);
    }
    let mut flipped = false;
    let mut hasher = Some(BodyHasher::default());
    let body = body
        .map_err(|e| -> BoxError { Box::new(e) })
        .map_frame(move |frame: Frame<Bytes>| {
            let frame = match frame.into_data() {
                Ok(data) => {
                    let data = if !flipped
                        && !data.is_empty()
                        && matches!(mode, Tamper::BodyByte | Tamper::BodyByteNoDigest)
                    {
                        flipped = true;
                        let mut changed = data.to_vec();
                        changed[0] ^= 0x01;
                        Bytes::from(changed)
                    } else if !flipped && signed_in_head && mode == Tamper::Oversized {
                        flipped = true;
                        let mut padded = data.to_vec();
                        padded.resize(data.len() + 300 * 1024, b' ');
                        Bytes::from(padded)
                    } else {
                        data
                    };
                    if let Some(h) = hasher.as_mut() {
                        h.update(&data);
                    }
                    return Frame::data(data);
                }
                Err(frame) => frame,
            };
            match frame.into_trailers() {
                Ok(mut t) => {
                    let digest = hasher
                        .take()
                        .map(BodyHasher::finish)
                        .unwrap_or_else(|| BodyDigest::of(b""));
                    if signed_in_head {
                        if mode == Tamper::NoCommit {
                            t.remove("veksel-committed");
                        }
                    } else {
                        tamper_signed_fields(mode, &mut t, &template, digest, &signers);
                    }
                    Frame::trailers(t)
                }
                Err(other) => other,
            }
        })
        .boxed_unsync();
    Response::from_parts(parts, body)
}

fn text(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Changes the signed fields of an answer, in its head or its trailers (`t`).
fn tamper_signed_fields(
    mode: Tamper,
    t: &mut HeaderMap,
    template: &ResponseDescriptor,
    digest: BodyDigest,
    signers: &Signers,
) {
    match mode {
        Tamper::NoSignature => {
            t.remove("veksel-signature");
        }
        Tamper::NoCreatedAt => {
            t.remove("veksel-created-at");
        }
        Tamper::BodyByteNoDigest => {
            t.remove("veksel-body-digest");
        }
        Tamper::WrongSigner | Tamper::Resigned => {
            let mut d = template.clone();
            d.body = digest;
            d.created_at_ms = text(t, "veksel-created-at").parse().unwrap();
            let signer = if mode == Tamper::WrongSigner {
                &signers.other
            } else {
                &signers.provider
            };
            let signature = veksel_proto::jws::sign_detached(
                signer.as_ref(),
                RESPONSE_CTY,
                true,
                &descriptor::canonical_bytes(&d),
            )
            .unwrap();
            t.insert(
                "veksel-signature",
                HeaderValue::from_str(&signature).unwrap(),
            );
        }
        _ => {}
    }
}

/// The three shapes of exchange: everything small, a streamed request with a small
/// answer, and a small request with a streamed answer.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Small,
    StreamedRequest,
    StreamedResponse,
}

/// Larger than the gateways' prefetch limit (256 KiB): these bodies stream.
const STREAMED: u64 = 1024 * 1024;

/// What the information system got: status, fault type, request id, body bytes
/// received, and whether the body ended in an error.
struct Outcome {
    status: u16,
    fault: Option<String>,
    request_id: Option<String>,
    received: u64,
    body_failed: bool,
}

async fn call(net: &Net, shape: Shape) -> Outcome {
    let base = format!(
        "{}/r1/{}",
        net.client_url(MUNICIPALITY),
        ORGS[POPULATION].subsystem_id()
    );
    let request = match shape {
        Shape::Small => net.http.get(format!("{base}/persons/0101701234")),
        Shape::StreamedRequest => net
            .http
            .post(format!("{base}/echo/digest"))
            .body(vec![7u8; STREAMED as usize]),
        Shape::StreamedResponse => net.http.get(format!("{base}/echo/bytes/{STREAMED}")),
    };
    let resp = request
        .header("X-Road-Client", ORGS[MUNICIPALITY].subsystem_id())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let fault = fault(&resp);
    let request_id = resp
        .headers()
        .get("x-road-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut received = 0u64;
    let mut body_failed = false;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => received += c.len() as u64,
            Err(_) => {
                body_failed = true;
                break;
            }
        }
    }
    Outcome {
        status,
        fault,
        request_id,
        received,
        body_failed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_refuses_every_tampered_answer() {
    let mut net = Net::start(Backend::Sqlite).await.unwrap();
    // The consumer waits 3 s for an answer to start, so the hanging impostor is quick.
    net.sandbox
        .as_mut()
        .unwrap()
        .stop_gateway(MUNICIPALITY)
        .await;
    edit_gateway_config(&net.sandbox().info.gateways[MUNICIPALITY].data_dir, |c| {
        c["request_timeout_secs"] = 3.into()
    });
    net.sandbox
        .as_mut()
        .unwrap()
        .start_gateway(MUNICIPALITY)
        .await
        .unwrap();
    // The real population gateway moves to another port; the impostor takes its
    // registered address.
    let registered = net.sandbox().info.gateways[POPULATION].peer_address.clone();
    let sandbox = net.sandbox.as_mut().unwrap();
    sandbox.stop_gateway(POPULATION).await;
    let moved = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = moved.local_addr().unwrap().to_string();
    sandbox
        .start_gateway_with_peer(POPULATION, moved)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind(&registered).await.unwrap();
    let tamper = Arc::new(Mutex::new(Tamper::Honest));
    let impostor = start_impostor(&net, listener, upstream, tamper.clone()).await;

    let modes = [
        Tamper::Honest,
        Tamper::Resigned,
        Tamper::RequestHash,
        Tamper::RequestId,
        Tamper::NoSignature,
        Tamper::NoCreatedAt,
        Tamper::BodyByte,
        Tamper::BodyByteNoDigest,
        Tamper::Header,
        Tamper::WrongSigner,
        Tamper::NoChain,
        Tamper::OtherChain,
        Tamper::NoCommit,
        Tamper::Oversized,
        Tamper::Hang,
    ];
    for shape in [
        Shape::Small,
        Shape::StreamedRequest,
        Shape::StreamedResponse,
    ] {
        for mode in modes {
            // Hanging costs the consumer's whole timeout; once per shape of request is
            // enough, and a streamed answer never starts either.
            if mode == Tamper::Hang && matches!(shape, Shape::StreamedResponse) {
                continue;
            }
            // A streamed answer has no commit confirmation to leave out, and no limit
            // of the head-signed form to break.
            if matches!(mode, Tamper::NoCommit | Tamper::Oversized)
                && matches!(shape, Shape::StreamedResponse)
            {
                continue;
            }
            *tamper.lock().unwrap() = mode;
            let head_signed_before = SIGNED_IN_HEAD.load(std::sync::atomic::Ordering::SeqCst);
            let logged_before = message_log(&net, MUNICIPALITY, "limit=1000").await.len();
            let got = call(&net, shape).await;
            let case = format!("{shape:?} {mode:?}");
            if mode != Tamper::Hang {
                // Small answers are signed in their head, streamed ones at their end.
                let head_signed =
                    SIGNED_IN_HEAD.load(std::sync::atomic::Ordering::SeqCst) > head_signed_before;
                assert_eq!(
                    head_signed,
                    !matches!(shape, Shape::StreamedResponse),
                    "{case}: signed in the head"
                );
            }
            let logged = message_log(&net, MUNICIPALITY, "limit=1000").await.len();
            let Some(expected) = mode.expected() else {
                assert_eq!(got.status, 200, "{case}");
                assert!(!got.body_failed, "{case}");
                assert_eq!(logged, logged_before + 1, "{case}: logged once");
                continue;
            };
            assert_eq!(logged, logged_before, "{case}: nothing logged as a success");
            let streamed_answer = matches!(shape, Shape::StreamedResponse);
            if streamed_answer && !mode.refused_at_head() {
                // The head went out; the stream is cut before its last frame.
                assert_eq!(got.status, 200, "{case}");
                assert!(got.body_failed, "{case}: the body must end in an error");
                assert!(
                    got.received < STREAMED,
                    "{case}: {} of {STREAMED} bytes released",
                    got.received
                );
                // Monitoring is written behind the exchange: wait for this record.
                let request_id = got
                    .request_id
                    .as_deref()
                    .expect("the answer names its request");
                let record =
                    monitoring_records(&net, MUNICIPALITY, "consumer", request_id, 1).await;
                let record = &record[0];
                assert_eq!(record["succeeded"], false, "{case}");
                assert_eq!(record["fault_code"], expected, "{case}");
            } else {
                assert_eq!(got.status, 500, "{case}");
                assert_eq!(got.fault.as_deref(), Some(expected), "{case}");
            }
        }
    }
    impostor.abort();
    net.stop().await;
}
