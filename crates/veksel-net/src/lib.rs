//! HTTP servers for veksel nodes: one accept loop for plain HTTP and TLS, with the
//! TLS handshake done in the connection's own task under a timeout (a silent peer
//! must not stall the accept loop), a connection limit, header-read timeouts, peer
//! certificates handed to the service, and graceful shutdown.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Boxed error type for service and body errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the service learns about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// The peer's TLS certificate chain, leaf first (empty without client auth).
    pub peer_chain: Arc<Vec<Vec<u8>>>,
    /// True if the connection is TLS.
    pub tls: bool,
}

/// Limits of one server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Most simultaneous connections; further ones wait in the kernel backlog.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed to receive a request's headers (slowloris defence).
    pub header_read_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// A shutdown signal shared by the servers of a node.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }
    /// Triggers shutdown.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }
    /// Resolves when shutdown is triggered.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // An error means the sender is gone, which also means shutdown.
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// Serves HTTP/1.1 and HTTP/2 (TLS with ALPN, or plain with prior knowledge) on a
/// bound listener until `shutdown` triggers, then drains in-flight requests.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    make_service: F,
    limits: ServerLimits,
    shutdown: Shutdown,
) where
    F: Fn(ConnInfo) -> S + Send + Sync + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let make_service = Arc::new(make_service);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.wait() => break,
        };
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let make_service = make_service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = limits.handshake_timeout;
        let first_bytes_timeout = limits.header_read_timeout;
        // A connection that has not sent a request yet has nothing to drain: on
        // shutdown it is closed at once instead of holding the drain for its timeout.
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::info!(%remote, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::info!(%remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    let peer_chain = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.iter().map(|c| c.as_ref().to_vec()).collect())
                        .unwrap_or_default();
                    let info = ConnInfo {
                        remote,
                        peer_chain: Arc::new(peer_chain),
                        tls: true,
                    };
                    // As below: a client that completes the handshake and then says
                    // nothing must not keep its slot.
                    let mut stream = tokio::io::BufReader::new(stream);
                    let spoke = tokio::select! {
                        r = tokio::time::timeout(first_bytes_timeout, stream.fill_buf()) => {
                            matches!(r, Ok(Ok(b)) if !b.is_empty())
                        }
                        () = stopping.wait() => false,
                    };
                    if !spoke {
                        tracing::info!(%remote, "no request within the header timeout");
                        return;
                    }
                    let svc = make_service(info);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%remote, error = %e, "connection ended with error");
                    }
                }
                None => {
                    // hyper's header timer starts only once the protocol is sniffed
                    // from the first bytes: a client that connects and sends nothing
                    // would hold its connection slot forever (found by the slow-client
                    // test). The first byte must come within the header timeout.
                    let mut probe = [0u8; 1];
                    let spoke = tokio::select! {
                        r = tokio::time::timeout(first_bytes_timeout, tcp.peek(&mut probe)) => {
                            matches!(r, Ok(Ok(n)) if n > 0)
                        }
                        () = stopping.wait() => false,
                    };
                    if !spoke {
                        tracing::info!(%remote, "no request within the header timeout");
                        return;
                    }
                    let info = ConnInfo {
                        remote,
                        peer_chain: Arc::new(Vec::new()),
                        tls: false,
                    };
                    let svc = make_service(info);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%remote, error = %e, "connection ended with error");
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: connections still open after the drain timeout; closing them");
    }
}

/// A hyper service that hands each request to a clone of a tower service (an axum
/// router, say) with the connection's [`ConnInfo`] in the request's extensions, so
/// handlers can see who is calling (rate limits per source, peer certificates).
#[derive(Debug, Clone)]
pub struct WithConnInfo<S> {
    service: S,
    conn: ConnInfo,
}

/// Wraps `service` for one connection (see [`WithConnInfo`]).
pub fn with_conn_info<S>(service: S, conn: ConnInfo) -> WithConnInfo<S> {
    WithConnInfo { service, conn }
}

impl<S> hyper::service::Service<Request<Incoming>> for WithConnInfo<S>
where
    S: tower::Service<Request<Incoming>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.conn.clone());
        let mut service = self.service.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(req).await
        })
    }
}

/// Binds a listener, with a message that names the address on failure.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
