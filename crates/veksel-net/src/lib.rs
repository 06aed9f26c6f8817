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
    /// How long a connection may stay open with no request in flight after its first
    /// request (HTTP/1 keep-alive and HTTP/2 alike); before the first request the
    /// header-read timeout applies. Then the server closes it (HTTP/2 with GOAWAY).
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            drain_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
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
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let make_service = Arc::new(make_service);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
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
        let limits = limits.clone();
        // A connection that has not sent a request yet has nothing to drain: on
        // shutdown it is closed at once instead of holding the drain for its timeout.
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp))
                            .await
                        {
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
                        r = tokio::time::timeout(limits.header_read_timeout, stream.fill_buf()) => {
                            matches!(r, Ok(Ok(b)) if !b.is_empty())
                        }
                        () = stopping.wait() => false,
                    };
                    if !spoke {
                        tracing::info!(%remote, "no request within the header timeout");
                        return;
                    }
                    let svc = make_service(info);
                    serve_connection(
                        &builder,
                        TokioIo::new(stream),
                        svc,
                        &limits,
                        &stopping,
                        remote,
                    )
                    .await;
                }
                None => {
                    // hyper's header timer starts only once the protocol is sniffed
                    // from the first bytes: a client that connects and sends nothing
                    // would hold its connection slot forever (found by the slow-client
                    // test). The first byte must come within the header timeout.
                    let mut probe = [0u8; 1];
                    let spoke = tokio::select! {
                        r = tokio::time::timeout(limits.header_read_timeout, tcp.peek(&mut probe)) => {
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
                    serve_connection(&builder, TokioIo::new(tcp), svc, &limits, &stopping, remote)
                        .await;
                }
            }
        });
    }
    drop(listener);
    // Every connection task holds a permit: having them all back means all are done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("shutdown: connections still open after the drain timeout; closing them");
    }
}

/// Serves one connection until it ends. It is shut down gracefully (HTTP/2 GOAWAY;
/// HTTP/1 closes once the response in flight is sent) when the node stops, or when it
/// has had no request in flight for its idle time: hyper closes idle HTTP/1
/// keep-alive connections by itself, but not HTTP/2 ones, which a client could hold
/// open by the thousand with nothing but a preface.
async fn serve_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    limits: &ServerLimits,
    stopping: &Shutdown,
    remote: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let activity = Arc::new(Activity::new());
    let service = Tracked {
        inner: service,
        activity: activity.clone(),
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    // Set once the connection is asked to close: a graceful HTTP/2 shutdown waits for
    // the client to acknowledge a PING, which a hostile client never does.
    let mut close_by: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%remote, error = %e, "connection ended with error");
                }
                return;
            }
            () = stopping.wait(), if close_by.is_none() => {
                close_by = Some(tokio::time::Instant::now() + limits.drain_timeout);
                conn.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(limits.header_read_timeout, limits.idle_timeout), if close_by.is_none() => {
                tracing::debug!(%remote, "closing an idle connection");
                close_by = Some(tokio::time::Instant::now() + limits.header_read_timeout);
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(close_by.unwrap_or(far)), if close_by.is_some() => {
                tracing::debug!(%remote, "connection did not close in time; dropping it");
                return;
            }
        }
    }
}

/// Requests in flight on one connection, and since when it has had none. Atomics
/// only: a request's start and end cost no lock and wake nothing; the idle timer
/// looks at them when it expires and sleeps again if the connection was busy.
#[derive(Debug)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// When the last request ended, ms after `epoch`.
    idle_since_ms: std::sync::atomic::AtomicU64,
    served_any: std::sync::atomic::AtomicBool,
    epoch: tokio::time::Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            idle_since_ms: std::sync::atomic::AtomicU64::new(0),
            served_any: std::sync::atomic::AtomicBool::new(false),
            epoch: tokio::time::Instant::now(),
        }
    }

    fn started(&self) {
        use std::sync::atomic::Ordering;
        self.served_any.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn ended(&self) {
        use std::sync::atomic::Ordering;
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.idle_since_ms.store(ms, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Resolves once nothing has been in flight for the idle time (`first` until the
    /// first request arrives, `later` after it).
    async fn idle_for(&self, first: Duration, later: Duration) {
        use std::sync::atomic::Ordering;
        loop {
            let limit = if self.served_any.load(Ordering::Relaxed) {
                later
            } else {
                first
            };
            let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            tokio::time::sleep_until(self.epoch + since + limit).await;
            let still = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            if self.in_flight.load(Ordering::Acquire) == 0 && still == since {
                return;
            }
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // Busy: look again an idle time from now.
                tokio::time::sleep(limit).await;
            }
        }
    }
}

/// Counts a request as in flight until its response body is done or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.started();
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// A connection's service, counting its requests in flight.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body + Unpin,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Response<TrackedBody<B>>, S::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(self.activity.clone());
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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

/// An error with all its causes, for messages that must say what really failed.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// Binds a listener, with a message that names the address on failure.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
