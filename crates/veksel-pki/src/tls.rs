//! TLS configurations. Between gateways: TLS 1.3 only, mutual authentication, peers
//! identified by the SHA-256 of their registered authentication certificate rather
//! than by DNS name (the pattern of linkerd's identity verifier: validate the chain
//! with webpki, then apply our own identity rule).

use crate::verify::Usage;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, Error as TlsError, ServerConfig,
    SignatureScheme,
};
use std::sync::Arc;

/// ALPN protocol for HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol for HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The one crypto provider of the process: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs aws-lc-rs as the process-wide default provider. Safe to call repeatedly.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The handshake-signature methods every verifier here shares; `tls12` says whether
/// TLS 1.2 peers are accepted at all.
macro_rules! handshake_signatures {
    ($tls12:expr) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, TlsError> {
            if $tls12 {
                rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
            } else {
                Err(TlsError::General(
                    "TLS 1.2 is not allowed between gateways".into(),
                ))
            }
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, TlsError> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

/// Decides whether a TLS peer's certificate chain is acceptable right now. The
/// gateway implements this over its current global configuration.
pub trait PeerTrust: Send + Sync + std::fmt::Debug {
    /// Accepts or refuses `chain` (leaf first, DER) for `usage` at `now_secs`.
    fn check(&self, chain: &[Vec<u8>], usage: Usage, now_secs: u64) -> Result<(), String>;
}

/// Verifies gateway peers, as TLS server or client, through a [`PeerTrust`].
#[derive(Debug)]
pub struct GatewayPeerVerifier {
    trust: Arc<dyn PeerTrust>,
    algs: WebPkiSupportedAlgorithms,
}

impl GatewayPeerVerifier {
    /// Wraps a trust policy.
    pub fn new(trust: Arc<dyn PeerTrust>) -> Arc<Self> {
        Arc::new(Self {
            trust,
            algs: provider().signature_verification_algorithms,
        })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<(), TlsError> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.as_ref().to_vec());
        chain.extend(intermediates.iter().map(|c| c.as_ref().to_vec()));
        self.trust
            .check(&chain, usage, now.as_secs())
            .map_err(|reason| TlsError::General(format!("peer gateway refused: {reason}")))
    }
}

impl ClientCertVerifier for GatewayPeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.check(end_entity, intermediates, now, Usage::TlsClient)
            .map(|()| ClientCertVerified::assertion())
    }
    handshake_signatures!(false);
}

impl ServerCertVerifier for GatewayPeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        // The name is deliberately not checked: a gateway is identified by the hash of
        // its registered certificate, which PeerTrust checks.
        self.check(end_entity, intermediates, now, Usage::TlsServer)
            .map(|()| ServerCertVerified::assertion())
    }
    handshake_signatures!(false);
}

/// Asks information systems for a client certificate without judging it: the gateway
/// matches the certificate's hash against the subsystems it may act as, per request,
/// so a wrong certificate gets a precise X-Road fault instead of a TLS alert. The
/// handshake signature is still verified, proving possession of the key.
#[derive(Debug)]
pub struct InformationSystemVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for InformationSystemVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        Ok(ClientCertVerified::assertion())
    }
    handshake_signatures!(true);
}

/// The HTTPS client side of a gateway: TLS 1.2 or 1.3 (information systems may be
/// old), optional client certificates checked per request.
pub fn information_system_server_config(cert: Arc<StapledCert>) -> Result<ServerConfig, TlsError> {
    let verifier = Arc::new(InformationSystemVerifier {
        algs: provider().signature_verification_algorithms,
    });
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(cfg)
}

fn cert_chain(chain: &[Vec<u8>]) -> Vec<CertificateDer<'static>> {
    chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect()
}

/// A certificate and key, presented as server or client certificate, that can be
/// replaced while serving (key rotation without restart), with the OCSP response a
/// server staples (RFC 6066 `status_request`, in the TLS 1.3 Certificate message).
#[derive(Debug)]
pub struct StapledCert {
    current: std::sync::RwLock<Arc<CertifiedKey>>,
}

impl StapledCert {
    /// The certificate chain and its key, with no OCSP response yet.
    pub fn new(chain: &[Vec<u8>], key: PrivateKeyDer<'static>) -> Result<Arc<Self>, TlsError> {
        let signing_key = provider().key_provider.load_private_key(key)?;
        Ok(Arc::new(Self {
            current: std::sync::RwLock::new(Arc::new(CertifiedKey::new(
                cert_chain(chain),
                signing_key,
            ))),
        }))
    }

    /// Presents a new certificate chain and key in every handshake from now on (the
    /// stapled response is dropped: it was for the old certificate).
    pub fn replace(&self, chain: &[Vec<u8>], key: PrivateKeyDer<'static>) -> Result<(), TlsError> {
        let signing_key = provider().key_provider.load_private_key(key)?;
        let next = Arc::new(CertifiedKey::new(cert_chain(chain), signing_key));
        match self.current.write() {
            Ok(mut current) => *current = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    /// Staples `ocsp_der` to every handshake from now on.
    pub fn set_ocsp(&self, ocsp_der: Vec<u8>) {
        if let Ok(mut current) = self.current.write() {
            let mut next = CertifiedKey::clone(&current);
            next.ocsp = Some(ocsp_der);
            *current = Arc::new(next);
        }
    }

    /// The OCSP response stapled now, if any.
    pub fn ocsp(&self) -> Option<Vec<u8>> {
        self.current.read().ok().and_then(|c| c.ocsp.clone())
    }
}

impl ResolvesServerCert for StapledCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

impl ResolvesClientCert for StapledCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Server side between gateways: TLS 1.3 only, client certificate required, HTTP/2,
/// the certificate's current OCSP response stapled.
pub fn gateway_server_config(
    cert: Arc<StapledCert>,
    verifier: Arc<GatewayPeerVerifier>,
) -> Result<ServerConfig, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// Client side between gateways: TLS 1.3 only, presents the auth certificate, HTTP/2.
pub fn gateway_client_config(
    chain: &[Vec<u8>],
    key: PrivateKeyDer<'static>,
    verifier: Arc<GatewayPeerVerifier>,
) -> Result<ClientConfig, TlsError> {
    gateway_client_config_with(StapledCert::new(chain, key)?, verifier)
}

/// [`gateway_client_config`] with a replaceable certificate.
pub fn gateway_client_config_with(
    cert: Arc<StapledCert>,
    verifier: Arc<GatewayPeerVerifier>,
) -> Result<ClientConfig, TlsError> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(cert);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

/// An ordinary HTTPS server (the authority, a gateway's HTTPS client side).
pub fn https_server_config(
    chain: &[Vec<u8>],
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(cert_chain(chain), key)?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(cfg)
}

/// An HTTPS client that trusts only the given CA certificates (for the authority,
/// pinned by the anchor; never the platform store).
pub fn https_client_config(roots_der: &[Vec<u8>]) -> Result<ClientConfig, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots_der {
        store.add(CertificateDer::from(r.clone()))?;
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth())
}
