//! Slow clients (slowloris) against the accept loop: connections that trickle their
//! headers, send nothing at all, or never finish a TLS handshake are closed once their
//! time is up, their connection slots come back, and a well-behaved client is served
//! even when slow ones had taken every slot. Real sockets on 127.0.0.1; every wait is
//! bounded.

use bytes::Bytes;
use http_body_util::Full;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use veksel_net::{ServerLimits, Shutdown, serve};

const HEADER_TIMEOUT: Duration = Duration::from_millis(600);
const SLOTS: usize = 8;

async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> (std::net::SocketAddr, Shutdown) {
    let limits = ServerLimits {
        max_connections: SLOTS,
        handshake_timeout: HEADER_TIMEOUT,
        header_read_timeout: HEADER_TIMEOUT,
        drain_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let (addr, shutdown, _server) = start_with(tls, limits).await;
    (addr, shutdown)
}

/// A server answering "ok", with its task.
async fn start_with(
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ServerLimits,
) -> (std::net::SocketAddr, Shutdown, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(serve(
        listener,
        tls,
        |_conn| {
            hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
            })
        },
        limits,
        shutdown.clone(),
    ));
    (addr, shutdown, server)
}

/// Reads until the server closes the connection; how long that took.
async fn closed_after(mut s: TcpStream, started: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept a slow connection open for 10 s"),
        }
    }
}

async fn normal_request(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("answered within 10 s")
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_and_silent_connections_are_closed_and_slots_come_back() {
    let (addr, shutdown) = start(None).await;
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..SLOTS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            // Trickles a header byte every 100 ms, never finishing.
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            let (mut r, mut w) = s.into_split();
            tokio::spawn(async move {
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if w.write_all(b"X").await.is_err() {
                        return;
                    }
                }
            });
            slow.push(tokio::spawn(async move {
                let mut buf = [0u8; 256];
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), r.read(&mut buf)).await {
                        Ok(Ok(0) | Err(_)) => return started.elapsed(),
                        Ok(Ok(_)) => {}
                        Err(_) => panic!("a trickling client was kept for 10 s"),
                    }
                }
            }));
        } else {
            // Connects and says nothing.
            slow.push(tokio::spawn(closed_after(s, started)));
        }
    }
    // Every slot is taken; a well-behaved client waits for one, then is served.
    let answer = normal_request(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for t in slow {
        let after = t.await.unwrap();
        assert!(
            after >= HEADER_TIMEOUT - Duration::from_millis(100) && after < Duration::from_secs(5),
            "a slow connection was closed after {after:?}"
        );
    }
    // And the slots are free again: several clients in a row.
    for _ in 0..SLOTS * 2 {
        assert!(normal_request(addr).await.starts_with("HTTP/1.1 200"));
    }
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_left_silent_after_a_request_is_closed() {
    let (addr, shutdown) = start(None).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The answer is in; the client now says nothing on its kept-alive connection.
    let after = closed_after(s, Instant::now()).await;
    assert!(
        after < Duration::from_secs(5),
        "an idle keep-alive connection was kept {after:?}"
    );
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_comes_is_cut_off() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
        .unwrap();
    let (addr, shutdown) = start(Some(Arc::new(config))).await;

    // A client that completes the handshake and then says nothing.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let started = Instant::now();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .expect("handshake");
    let mut buf = [0u8; 256];
    let after = loop {
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("a silent TLS client was kept for 10 s"),
        }
    };
    assert!(
        after >= HEADER_TIMEOUT - Duration::from_millis(100) && after < Duration::from_secs(5),
        "closed after {after:?}"
    );

    let started = Instant::now();
    let silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    // The first bytes of a ClientHello record, then nothing.
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    for s in [silent, half] {
        let after = closed_after(s, started).await;
        assert!(
            after >= HEADER_TIMEOUT - Duration::from_millis(100) && after < Duration::from_secs(5),
            "closed after {after:?}"
        );
    }
    shutdown.trigger();
}

/// Shutdown does not wait for connections that never sent a request: they have
/// nothing in flight to drain. (It used to hold the drain until their header
/// timeout ran out, which made every shutdown with an idle pooled connection slow.)
#[tokio::test]
async fn shutdown_closes_connections_that_have_not_spoken() {
    // Long timeouts: were the server to wait for either, the test would see it.
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(30),
        ..ServerLimits::default()
    };
    let (addr, shutdown, server) = start_with(None, limits).await;
    let silent = TcpStream::connect(addr).await.unwrap();
    // Let the accept loop take it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server waited for a connection that never spoke")
        .unwrap();
    let closed = closed_after(silent, started).await;
    assert!(closed < Duration::from_secs(20), "{closed:?}");
}

/// The HTTP/2 connection preface and an empty SETTINGS frame: all a client needs to
/// send to make the server hold an HTTP/2 connection for it.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// HTTP/2 connections that never send a request are closed like silent HTTP/1 ones,
/// and the slots they held serve a normal client afterwards. (They used to stay open
/// for good: a few thousand of them stopped a gateway from answering anyone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_and_slots_come_back() {
    let (addr, shutdown) = start(None).await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..SLOTS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(H2_PREFACE_AND_SETTINGS).await.unwrap();
        idle.push(s);
    }
    // Every slot is taken; a normal client waits in the backlog until they go.
    let normal = tokio::spawn(normal_request(addr));
    for s in idle {
        let after = closed_after(s, started).await;
        assert!(
            after >= HEADER_TIMEOUT - Duration::from_millis(100) && after < Duration::from_secs(5),
            "an idle HTTP/2 connection was closed after {after:?}"
        );
    }
    let answer = normal.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    shutdown.trigger();
}

/// An HTTP/2 connection that made a request and then stays quiet is closed after the
/// idle time, with GOAWAY, as an HTTP/1 keep-alive connection is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_left_idle_after_a_request_is_closed() {
    let idle = Duration::from_millis(800);
    let limits = ServerLimits {
        header_read_timeout: HEADER_TIMEOUT,
        idle_timeout: idle,
        drain_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let (addr, shutdown, _server) = start_with(None, limits).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(conn);
    // Requests keep it open well beyond the idle time while they come.
    let first = Instant::now();
    while first.elapsed() < idle * 2 {
        let resp = send
            .send_request(
                hyper::Request::get(format!("http://{addr}/"))
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(idle / 4).await;
    }
    let quiet = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the server kept an idle HTTP/2 connection for 10 s")
        .unwrap()
        .unwrap();
    let after = quiet.elapsed();
    assert!(
        after >= idle - Duration::from_millis(300) && after < idle * 4,
        "closed {after:?} after the last request"
    );
    shutdown.trigger();
}
