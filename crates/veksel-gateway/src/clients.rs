//! Outgoing HTTP: to peer gateways (HTTP/2 over mutual TLS 1.3, pooled) and to the
//! provider's information systems (HTTP/1.1, plain or TLS).

use crate::body::GwBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// SHA-256 (hex) of the certificate the peer presented on the connection a response
/// came over; put into response extensions by [`PeerConnector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertHash(pub String, pub Arc<[u8]>);

/// A TLS connection to a peer gateway that remembers the peer's certificate.
#[derive(Debug)]
pub struct PeerStream {
    io: TokioIo<TlsStream<TcpStream>>,
    peer: String,
    peer_der: Arc<[u8]>,
}

impl Connection for PeerStream {
    fn connected(&self) -> Connected {
        Connected::new()
            .negotiated_h2()
            .extra(PeerCertHash(self.peer.clone(), self.peer_der.clone()))
    }
}

impl hyper::rt::Read for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Connects to peer gateways: TCP, then TLS 1.3 with the gateway's auth certificate.
#[derive(Clone)]
pub struct PeerConnector {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

impl std::fmt::Debug for PeerConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnector")
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl tower::Service<http::Uri> for PeerConnector {
    type Response = PeerStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<PeerStream, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_owned());
            let host = uri
                .host()
                .ok_or_else(|| bad("peer address has no host"))?
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| bad("peer address has no port"))?;
            let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to {host}:{port} timed out"),
                    )
                })??;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.clone())
                .map_err(|_| bad("peer host is not a valid server name"))?;
            let stream = tokio::time::timeout(timeout, tls.connect(name, tcp))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "TLS handshake with peer gateway timed out",
                    )
                })??;
            let peer_der: Arc<[u8]> = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::from(c.as_ref()))
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "peer presented no certificate",
                    )
                })?;
            Ok(PeerStream {
                io: TokioIo::new(stream),
                peer: veksel_pki::sha256_hex(&peer_der),
                peer_der,
            })
        })
    }
}

/// Pooled HTTP/2 client to peer gateways.
pub type PeerClient = Client<PeerConnector, GwBody>;

/// Builds the peer client over a gateway TLS client configuration.
pub fn peer_client(tls: Arc<rustls::ClientConfig>) -> PeerClient {
    let connector = PeerConnector {
        tls: tokio_rustls::TlsConnector::from(tls),
        connect_timeout: Duration::from_secs(5),
    };
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_while_idle(true)
        .http2_initial_stream_window_size(1024 * 1024)
        .http2_initial_connection_window_size(8 * 1024 * 1024)
        .build(connector)
}

/// Client to providers' information systems.
pub type BackendClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, GwBody>;

/// Builds the backend client; HTTPS backends must chain to `extra_roots` (PEM
/// certificates configured by the operator).
pub fn backend_client(extra_roots: &[Vec<u8>]) -> Result<BackendClient, rustls::Error> {
    let tls = veksel_pki::tls::https_client_config(extra_roots)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https))
}
