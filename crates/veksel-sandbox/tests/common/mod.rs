//! Shared set-up of the integration tests: a sandbox network on ephemeral ports over
//! SQLite or PostgreSQL, an HTTP client for the client side, and a raw peer that
//! speaks the gateway-to-gateway protocol with a real gateway's keys (to send
//! tampered, replayed or stale messages that a well-behaved gateway never would).

#![allow(dead_code)]

pub mod browser;
pub mod pages;
pub mod people;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use tempfile::TempDir;
use veksel_proto::Clock;
use veksel_proto::descriptor::{self, BodyDigest, REQUEST_CTY, REQUEST_TYPE, RequestDescriptor};
use veksel_sandbox::{Databases, ORGS, Ports, Sandbox, SandboxOptions};
use veksel_store::testing::{TestDatabase, postgres_server_url};

/// Index of each organisation in [`ORGS`].
pub const POPULATION: usize = 0;
pub const TAX: usize = 1;
pub const MUNICIPALITY: usize = 2;

/// Which storage a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running test network.
pub struct Net {
    pub sandbox: Option<Sandbox>,
    pub dir: TempDir,
    pub clock: Clock,
    pub http: reqwest::Client,
    pub dbs: Vec<TestDatabase>,
}

/// Ports for one network, below the kernel's ephemeral range. Ports the kernel picks
/// for port 0 come from the same range as the local ports of outgoing connections, so
/// a test that restarts a node could find its freed port taken by a connection; these
/// cannot be. Each test process takes ports from its own block.
fn unshared_ports() -> Ports {
    use std::sync::atomic::{AtomicU16, Ordering};
    const BLOCK: u16 = 400;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 10_000 + u16::try_from(std::process::id() % 48).unwrap() * BLOCK;
    let take = || {
        (0..BLOCK)
            .map(|_| base + NEXT.fetch_add(1, Ordering::Relaxed) % BLOCK)
            .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
            .expect("a free port in this process's block")
    };
    let mut ports = Ports::ephemeral();
    ports.authority = take();
    for i in 0..3 {
        ports.client[i] = take();
        ports.peer[i] = take();
        ports.admin[i] = take();
    }
    ports.population_backend = take();
    ports.tax_backend = take();
    ports.diagnostics_backend = take();
    ports
}

impl Net {
    /// The SQLite database `file` of the node whose data directory is `node` (a
    /// sandbox organisation's slug, or `authority`), opened beside the running node
    /// to read it or to change it behind the node's back.
    pub async fn sqlite_db(&self, node: &str, file: &str) -> veksel_store::Db {
        veksel_store::Db::open_sqlite(&self.dir.path().join(node).join(file), &Default::default())
            .await
            .unwrap()
    }

    /// Starts a network, or returns `None` for PostgreSQL when no server is configured.
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a network with adjusted options.
    pub async fn start_with(
        backend: Backend,
        adjust: impl FnOnce(&mut SandboxOptions),
    ) -> Option<Self> {
        // RUST_LOG=veksel_gateway=debug shows what the nodes did, per test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let mut dbs = Vec::new();
        let databases = match backend {
            Backend::Sqlite => Databases::Sqlite,
            Backend::Postgres => {
                let server = postgres_server_url()?;
                for name in ["authority", "gw0", "gw1", "gw2"] {
                    dbs.push(TestDatabase::create(&server, name).await.unwrap());
                }
                Databases::Postgres {
                    authority: dbs[0].url.clone(),
                    gateways: [dbs[1].url.clone(), dbs[2].url.clone(), dbs[3].url.clone()],
                }
            }
        };
        let clock = Clock::system();
        let mut options = SandboxOptions::new(dir.path().to_owned());
        options.ports = unshared_ports();
        options.databases = databases;
        options.clock = clock.clone();
        // Tests do not need power-loss durability; crash durability stays.
        options.sync_commit = false;
        adjust(&mut options);
        let sandbox = Sandbox::start(options).await.unwrap();
        assert_storage(&sandbox, backend);
        Some(Self {
            sandbox: Some(sandbox),
            dir,
            clock,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            dbs,
        })
    }

    pub fn sandbox(&self) -> &Sandbox {
        self.sandbox.as_ref().unwrap()
    }

    /// Client-side base URL of an organisation's gateway.
    pub fn client_url(&self, org: usize) -> String {
        self.sandbox().info.gateways[org].client_url.clone()
    }

    /// Admin base URL and token of an organisation's gateway.
    pub fn admin(&self, org: usize) -> (String, String) {
        let g = &self.sandbox().info.gateways[org];
        (g.admin_url.clone(), g.admin_token.clone())
    }

    /// A gateway's `/metrics` text (index in [`ORGS`]).
    pub async fn metrics(&self, org: usize) -> String {
        let (admin, _) = self.admin(org);
        self.http
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET {client side of org}/r1/{path}` as `client`.
    pub async fn r1(&self, org: usize, client: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/r1/{path}", self.client_url(org)))
            .header("X-Road-Client", client)
            .send()
            .await
            .unwrap()
    }

    /// Stops the network and drops its databases.
    pub async fn stop(mut self) {
        if let Some(s) = self.sandbox.take() {
            s.stop().await;
        }
        for db in &self.dbs {
            db.drop_database().await.unwrap();
        }
    }
}

/// Asserts that every node of a network really stores its data where the test says:
/// a PostgreSQL variant that silently ran on SQLite would prove nothing.
pub fn assert_storage(sandbox: &Sandbox, backend: Backend) {
    let expected = match backend {
        Backend::Sqlite => veksel_store::Backend::Sqlite,
        Backend::Postgres => veksel_store::Backend::Postgres,
    };
    let authority = sandbox.authority.as_ref().unwrap();
    assert_eq!(
        authority.state.registry.db().backend(),
        expected,
        "authority"
    );
    for (i, g) in sandbox.info.gateways.iter().enumerate() {
        let gw = sandbox.gateway(i).unwrap();
        assert_eq!(gw.db.backend(), expected, "gateway {}", g.id);
        assert_eq!(
            g.data_dir.join(veksel_gateway::files::DB).exists(),
            matches!(backend, Backend::Sqlite),
            "gateway {}: SQLite file present only on SQLite",
            g.id
        );
    }
}

/// Reads a gateway's message log through its admin API (`query` like `limit=2`).
pub async fn message_log(net: &Net, org: usize, query: &str) -> Vec<serde_json::Value> {
    let (url, token) = net.admin(org);
    let resp = net
        .http
        .get(format!("{url}/api/v1/message-log?{query}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// The provider's monitoring records of a request, once at least `count` have arrived
/// (they are written behind the exchange).
pub async fn provider_records(net: &Net, request_id: &str, count: usize) -> Vec<serde_json::Value> {
    monitoring_records(net, POPULATION, "provider", request_id, count).await
}

/// A gateway's monitoring records of a request on one side (`consumer`, `provider`),
/// once at least `count` have arrived.
pub async fn monitoring_records(
    net: &Net,
    org: usize,
    side: &str,
    request_id: &str,
    count: usize,
) -> Vec<serde_json::Value> {
    let (admin, token) = net.admin(org);
    for _ in 0..50 {
        let records: Vec<serde_json::Value> = get_json(
            net,
            &format!("{admin}/api/v1/op-monitoring?request_id={request_id}"),
            &token,
        )
        .await;
        let of_side: Vec<_> = records.into_iter().filter(|r| r["side"] == side).collect();
        if of_side.len() >= count {
            return of_side;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("fewer than {count} {side} monitoring records of {request_id} arrived");
}

/// The X-Road fault type of a response, if it has one.
pub fn fault(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("x-road-error")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Asserts a fault: status, `X-Road-Error`, and the body's `type`.
pub async fn expect_fault(resp: reqwest::Response, status: u16, kind: &str) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "status for {kind}");
    assert_eq!(fault(&resp).as_deref(), Some(kind));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["type"], kind, "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty());
    assert_eq!(
        body["detail"].as_str().unwrap().len(),
        36,
        "detail is a UUID"
    );
    body
}

/// Sends a hand-written HTTP/1.1 request (for targets an HTTP client library would
/// normalise) and returns the status and the `X-Road-Error` header.
pub async fn raw_http(
    base_url: &str,
    request_line_target: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base_url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req =
        format!("GET {request_line_target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let error = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-road-error:"))
        .map(|l| {
            l.split_once(':')
                .map(|x| x.1)
                .unwrap_or_default()
                .trim()
                .to_owned()
        });
    (status, error)
}

/// Sends raw bytes to a listener and returns what comes back before the server closes
/// the connection (or 5 s pass).
pub async fn raw_bytes(addr: &str, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr.trim_start_matches("http://"))
        .await
        .unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A peer that speaks the gateway-to-gateway protocol with the municipality
/// gateway's own keys.
pub struct RawPeer {
    send: hyper::client::conn::http2::SendRequest<
        http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>,
    >,
    pub signer: veksel_gateway::signing::MemberSigner,
    pub address: String,
    /// The municipality gateway's current OCSP responses (authentication, labelled
    /// with its certificate's hash as sent, and signing).
    pub staples: (Option<String>, Option<String>),
    /// SHA-256 of the municipality gateway's authentication certificate.
    pub auth_cert_sha256: String,
}

/// An HTTP/2 connection over mutual TLS to the gateway-to-gateway listener at
/// `address`, as gateway `from_org` (with its authentication key, or `auth` instead).
pub async fn peer_connection<B>(
    net: &Net,
    from_org: usize,
    address: &str,
    auth: Option<(Vec<Vec<u8>>, rustls::pki_types::PrivateKeyDer<'static>)>,
) -> Result<hyper::client::conn::http2::SendRequest<B>, String>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let from = &net.sandbox().info.gateways[from_org];
    let (chain, key) = match auth {
        Some(a) => a,
        None => {
            let keys = veksel_gateway::KeyStore::load(&from.data_dir).unwrap();
            (keys.auth_chain.clone(), keys.auth_key.rustls_key())
        }
    };
    let verifier = veksel_pki::tls::GatewayPeerVerifier::new(
        net.sandbox().gateway(from_org).unwrap().conf.clone(),
    );
    let tls = veksel_pki::tls::gateway_client_config(&chain, key, verifier).unwrap();
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let stream = connector
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("h2: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// What a raw request should look like; tests change fields to break it.
#[derive(Clone)]
pub struct RawRequest {
    pub descriptor: RequestDescriptor,
    pub body: Vec<u8>,
    /// Body actually sent (defaults to `body`).
    pub sent_body: Option<Vec<u8>>,
    /// Replaces the signature.
    pub signature: Option<String>,
    /// Leaves the signature out.
    pub unsigned: bool,
    /// OCSP responses sent for the TLS and the signing certificate.
    pub auth_staple: Option<String>,
    pub signing_staple: Option<String>,
    /// Headers appended after the ones the request is built with (repeats included).
    pub extra_headers: Vec<(String, String)>,
    /// Trailers appended after the signature (repeats included).
    pub extra_trailers: Vec<(String, String)>,
    /// Headers the request is built with but that are left out.
    pub omit_headers: Vec<&'static str>,
    /// The body breaks off with an error after its data (the stream is reset).
    pub body_error: bool,
}

impl RawPeer {
    /// Connects to the population gateway as the municipality gateway would, with
    /// `keys_dir`'s keys (or other keys for impostor tests).
    pub async fn connect(
        net: &Net,
        from_org: usize,
        to_org: usize,
        auth_override: Option<(Vec<Vec<u8>>, veksel_pki::KeyFile)>,
    ) -> Result<Self, String> {
        let address = net.sandbox().info.gateways[to_org].peer_address.clone();
        Self::connect_to(net, from_org, &address, auth_override).await
    }

    /// Like [`RawPeer::connect`], to the gateway-to-gateway listener at `address`.
    pub async fn connect_to(
        net: &Net,
        from_org: usize,
        address: &str,
        auth_override: Option<(Vec<Vec<u8>>, veksel_pki::KeyFile)>,
    ) -> Result<Self, String> {
        let from = &net.sandbox().info.gateways[from_org];
        let keys = veksel_gateway::KeyStore::load(&from.data_dir).unwrap();
        let member: veksel_id::MemberId = ORGS[from_org].member().parse().unwrap();
        let signer = keys.signer(&member).unwrap();
        let from_gw = net.sandbox().gateway(from_org).unwrap();
        let staple = |cert: Option<&Vec<u8>>| {
            cert.and_then(|c| from_gw.ocsp.for_cert(c))
                .map(|s| s.as_str().to_owned())
        };
        let auth_cert_sha256 = veksel_pki::sha256_hex(&keys.auth_chain[0]);
        let staples = (
            staple(keys.auth_chain.first()).map(|s| format!("{auth_cert_sha256} {s}")),
            staple(signer.cert_chain().first()),
        );
        let (chain, key) = match auth_override {
            Some((c, k)) => (c, k.rustls_key()),
            None => (keys.auth_chain.clone(), keys.auth_key.rustls_key()),
        };
        let address = address.to_owned();
        let send = peer_connection(net, from_org, &address, Some((chain, key))).await?;
        Ok(Self {
            send,
            signer,
            address,
            staples,
            auth_cert_sha256,
        })
    }

    /// A correct request from the municipality to a population service.
    pub fn request(&self, net: &Net, service_path: &str) -> RawRequest {
        let client: veksel_id::ClientId = ORGS[MUNICIPALITY].subsystem_id().parse().unwrap();
        let service: veksel_id::ServiceId = format!("{}/echo", ORGS[POPULATION].subsystem_id())
            .parse()
            .unwrap();
        RawRequest {
            descriptor: RequestDescriptor {
                typ: REQUEST_TYPE.into(),
                request_id: uuid::Uuid::new_v4().to_string(),
                xroad_id: "raw-peer-test".into(),
                target: format!("/r1/{service}{service_path}"),
                client,
                service,
                method: "POST".into(),
                headers: vec![("content-type".into(), "text/plain".into())],
                user_id: None,
                issue: None,
                represented_party: None,
                person: None,
                consumer_gateway: ORGS[MUNICIPALITY].gateway_id().parse().unwrap(),
                provider_gateway: ORGS[POPULATION].gateway_id().parse().unwrap(),
                created_at_ms: net.clock.now_ms(),
                body: BodyDigest::of(b""),
            },
            body: b"raw body".to_vec(),
            sent_body: None,
            signature: None,
            unsigned: false,
            auth_staple: self.staples.0.clone(),
            signing_staple: self.staples.1.clone(),
            extra_headers: Vec::new(),
            extra_trailers: Vec::new(),
            omit_headers: Vec::new(),
            body_error: false,
        }
    }

    /// Sends a raw request and returns status, headers (with the trailers) and body.
    pub async fn send(&mut self, r: RawRequest) -> (u16, HeaderMap, Bytes) {
        self.try_send(r).await.unwrap()
    }

    /// Like [`RawPeer::send`], but reports connection failures.
    pub async fn try_send(&mut self, mut r: RawRequest) -> Result<(u16, HeaderMap, Bytes), String> {
        r.descriptor.body = BodyDigest::of(&r.body);
        let bytes = descriptor::canonical_bytes(&r.descriptor);
        let signature = match r.signature.take() {
            Some(s) => s,
            None => {
                veksel_proto::jws::sign_detached(self.signer.as_ref(), REQUEST_CTY, true, &bytes)
                    .unwrap()
            }
        };
        let d = &r.descriptor;
        let mut req = Request::builder()
            .method(d.method.as_str())
            .uri(format!("https://{}{}", self.address, d.target))
            .header("x-road-client", d.client.to_string())
            .header("x-road-id", &d.xroad_id)
            .header("x-road-request-id", &d.request_id)
            .header("veksel-created-at", d.created_at_ms.to_string())
            .header("veksel-consumer-gateway", d.consumer_gateway.to_string());
        for (k, v) in &d.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        for (k, v) in &r.extra_headers {
            req = req.header(k.as_str(), v.as_str());
        }
        for (name, staple) in [
            ("veksel-ocsp-auth", &r.auth_staple),
            ("veksel-ocsp-signing", &r.signing_staple),
        ] {
            if let Some(s) = staple {
                req = req.header(name, s.as_str());
            }
        }
        let mut trailers = HeaderMap::new();
        if !r.unsigned {
            trailers.insert(
                "veksel-signature",
                HeaderValue::from_str(&signature).unwrap(),
            );
        }
        for (k, v) in &r.extra_trailers {
            trailers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let body = r.sent_body.unwrap_or(r.body);
        let end = if r.body_error {
            Err(std::io::Error::other("the raw peer breaks off its body"))
        } else {
            Ok(Frame::trailers(trailers))
        };
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
            vec![Ok(Frame::data(Bytes::from(body))), end];
        let mut req = req
            .body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
            .unwrap();
        for name in &r.omit_headers {
            req.headers_mut().remove(*name);
        }
        self.send.ready().await.map_err(|e| e.to_string())?;
        let resp: Response<hyper::body::Incoming> = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let (mut parts, body) = resp.into_parts();
        let (bytes, trailers) = match body.collect().await {
            Ok(c) => {
                let trailers = c.trailers().cloned();
                (c.to_bytes(), trailers)
            }
            Err(_) => (Bytes::new(), None),
        };
        // A small answer is signed in its head and ends in trailers that say whether
        // the provider committed it: the caller sees them with the head.
        if let Some(trailers) = trailers {
            for (name, value) in &trailers {
                parts.headers.append(name, value.clone());
            }
        }
        Ok((parts.status.as_u16(), parts.headers, bytes))
    }
}

/// Changes fields of a gateway's `gateway.json` in its data directory (takes effect
/// at the gateway's next start).
pub fn edit_gateway_config(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("gateway.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

/// An HTTPS client that trusts the authority, with the authority's URL and admin token.
pub fn authority_client(net: &Net) -> (reqwest::Client, String, String) {
    let info = &net.sandbox().info;
    let ca = std::fs::read_to_string(&info.authority_ca_file).unwrap();
    let roots = veksel_pki::certs_from_pem(&ca).unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(veksel_pki::tls::https_client_config(&roots).unwrap())
        .build()
        .unwrap();
    (
        http,
        info.authority_url.clone(),
        info.authority_admin_token.clone(),
    )
}

/// An authentication certificate naming `gateway`, from a CA outside the network.
pub fn outsider_auth_cert(gateway: &str) -> (Vec<u8>, veksel_pki::KeyFile) {
    let now = time::OffsetDateTime::now_utc();
    let outsider =
        veksel_pki::CertificateAuthority::create("outsider", now, time::Duration::days(1)).unwrap();
    let key = veksel_pki::KeyFile::generate().unwrap();
    let cert = outsider
        .issue_from_csr(
            &veksel_pki::ca::make_csr(&key, "x").unwrap(),
            &veksel_pki::Profile::GatewayAuth {
                gateway: gateway.parse().unwrap(),
                hosts: vec![],
            },
            now,
            time::Duration::days(1),
        )
        .unwrap();
    (cert, key)
}

/// Defines a test that runs on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body(common::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body(common::Backend::Postgres).await;
            }
        }
    };
}

/// The signing certificate of a message signature logged by gateway `org`: message
/// signatures name their certificate (`x5t#S256`); the log keeps its chain once.
pub async fn message_signing_cert(net: &Net, org: usize, signature: &str) -> Vec<u8> {
    use base64::Engine;
    let jws = signature.split('~').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jws.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        header.get("x5c").is_none(),
        "the signature names, not carries: {header}"
    );
    let x5t = header["x5t#S256"].as_str().unwrap();
    let db = &net.sandbox().gateway(org).unwrap().db;
    let (chain,): (String,) =
        veksel_store::sqlx::query_as("SELECT chain FROM signing_chains WHERE x5t = $1")
            .bind(x5t)
            .fetch_one(db.pool())
            .await
            .unwrap();
    let leaf = base64::engine::general_purpose::STANDARD
        .decode(chain.split(',').next().unwrap())
        .unwrap();
    assert_eq!(veksel_proto::jws::thumbprint(&leaf), x5t);
    leaf
}

/// The signing certificate (leaf of `x5c`) of a compact JWS.
pub fn signing_cert_of(jws: &str) -> Vec<u8> {
    use base64::Engine;
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jws.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(header["x5c"][0].as_str().unwrap())
        .unwrap()
}

/// Renews every certificate of a gateway now and waits (at most 30 s) until the new
/// keys are in use; returns the first round's outcome.
pub async fn renew_now(gw: &veksel_gateway::Gateway) -> veksel_gateway::renewal::Outcome {
    use veksel_gateway::renewal;
    let before = gw.keys.get().auth_chain.first().cloned();
    let first = renewal::round(gw, true).await.unwrap();
    let mut outcome = first.clone();
    let started = std::time::Instant::now();
    while !outcome.activated {
        // The gateway's own periodic round may be the one that activates them.
        if !gw.dir.join(renewal::PENDING_DIR).exists()
            && gw.keys.get().auth_chain.first() != before.as_ref()
        {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the new keys were not activated: {outcome:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        outcome = renewal::round(gw, false).await.unwrap();
    }
    first
}

/// Runs openssl; returns success and its output.
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// DER of an ECDSA signature from JOSE's fixed-length `r || s`. Written here, not
/// taken from veksel, so the check does not rely on the code it checks.
pub fn der_signature(raw: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_none_or(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    }
    let (r, s) = raw.split_at(32);
    let body: Vec<u8> = [integer(r), integer(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// Verifies an ES256 JWS (compact, or detached with `payload`) with openssl.
pub fn openssl_verifies_jws(
    dir: &std::path::Path,
    jws: &str,
    payload: Option<&[u8]>,
    cert_pem: &str,
) -> bool {
    use base64::Engine;
    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3);
    let payload_b64 = match payload {
        Some(p) => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(p),
        None => parts[1].to_owned(),
    };
    let input = dir.join("input");
    let sig = dir.join("sig.der");
    let cert = dir.join("cert.pem");
    let pubkey = dir.join("pub.pem");
    std::fs::write(&input, format!("{}.{payload_b64}", parts[0])).unwrap();
    std::fs::write(
        &sig,
        der_signature(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[2])
                .unwrap(),
        ),
    )
    .unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    let (ok, out) = openssl(&[
        "x509",
        "-in",
        path(&cert),
        "-pubkey",
        "-noout",
        "-out",
        path(&pubkey),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        path(&pubkey),
        "-signature",
        path(&sig),
        path(&input),
    ]);
    ok && out.contains("Verified OK")
}

/// GET `url` with a bearer token; the JSON answer.
pub async fn get_json<T: serde::de::DeserializeOwned>(net: &Net, url: &str, token: &str) -> T {
    net.http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// RFC 9162 §2.1.3.2 inclusion check in Python, written apart from veksel's Rust so
/// the tests' third-party checks do not rely on the code they check.
pub const PYTHON_RFC9162: &str = r#"
import hashlib
def rfc9162_root(leaf, index, size, path):
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0: return None
        if fn % 2 == 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn % 2 == 0 and fn != 0:
                fn >>= 1; sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1; sn >>= 1
    return r if sn == 0 else None
"#;

/// A Python with authlib, pyjwt and requests from PyPI: a virtualenv made once in the
/// target directory.
pub fn python_with_oauth_libraries() -> std::path::PathBuf {
    use std::process::Command;
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-oauth");
    let python = venv.join("bin").join("python3");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import authlib, jwt, requests, cryptography"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ready() {
        let out = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .expect("python3 is installed");
        assert!(out.status.success(), "python3 -m venv: {out:?}");
        let out = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "authlib==1.6.5",
                "pyjwt[crypto]==2.10.1",
                "requests==2.34.2",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "installing authlib and pyjwt from PyPI failed (needs network once): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    python
}

/// Submits a change through a gateway's admin API; returns the request as the
/// authority answers it.
pub async fn manage(net: &Net, org: usize, change: serde_json::Value) -> serde_json::Value {
    let (admin, token) = net.admin(org);
    let resp = net
        .http
        .post(format!("{admin}/api/v1/management-requests"))
        .bearer_auth(token)
        .json(&change)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body
}
