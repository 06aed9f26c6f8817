//! The configuration client: downloads the signed global configuration from the
//! authority, verifies it against the anchor, caches it on disk, and answers "who is
//! this peer?" for TLS. While the cached copy is valid the gateway keeps serving even
//! if the authority is down; once it expires every exchange is refused with
//! `OutdatedGlobalConf` instead of guessing.

use crate::GatewayError;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use veksel_id::{Fault, FaultCode, MemberId, Origin};
use veksel_pki::tls::PeerTrust;
use veksel_pki::verify::{Roots, Usage};
use veksel_pki::{CertInfo, certs_from_pem, sha256_hex};
use veksel_proto::Clock;
use veksel_proto::conf::{Anchor, ConfIndex, GlobalConf};
use veksel_proto::oauth::{AccessTokenClaims, SignedClaims, TokenError};
use veksel_proto::person::IdTokenClaims;

/// A verified configuration with the look-ups built from it.
#[derive(Debug)]
pub struct ConfState {
    /// Look-ups over the document.
    pub index: ConfIndex,
    /// The approved CAs as trust roots.
    pub roots: Roots,
    /// The signed document as received.
    pub jws: String,
    /// Signing certificates already validated under this configuration.
    signers: std::sync::Mutex<std::collections::HashMap<(String, MemberId), CertInfo>>,
    /// Access tokens already verified with this configuration's keys.
    tokens: VerifiedTokens<AccessTokenClaims>,
    /// People's ID tokens already verified with this configuration's keys.
    id_tokens: VerifiedTokens<IdTokenClaims>,
    /// OCSP responses already verified, by (response hash, certificate hash).
    ocsp_checked: std::sync::Mutex<OcspCache>,
    /// The approved CAs' subject names (DER) and certificates, in configuration order.
    ca_certs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Which approved CA issued the certificates seen under this configuration.
    issuers: std::sync::Mutex<std::collections::HashMap<String, Option<usize>>>,
}

/// Verified OCSP responses, by (response hash, certificate hash).
pub type OcspCache = std::collections::HashMap<(String, String), veksel_pki::ocsp::Checked>;

/// Tokens already verified with one configuration's keys, by SHA-256 of the token: a
/// token is used for many calls in its life, its signature checked once.
#[derive(Debug)]
struct VerifiedTokens<C>(std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<C>>>);

impl<C> Default for VerifiedTokens<C> {
    fn default() -> Self {
        Self(Default::default())
    }
}

impl<C: SignedClaims> VerifiedTokens<C> {
    /// The token's claims, verified by `verify` the first time; the time window is
    /// checked at `now_secs` for remembered and new tokens alike.
    fn get_or_verify(
        &self,
        token: &str,
        now_secs: i64,
        verify: impl FnOnce() -> Result<C, TokenError>,
    ) -> Result<Arc<C>, TokenError> {
        let mut key = [0u8; 32];
        key.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
        );
        let cached = self.0.lock().ok().and_then(|m| m.get(&key).cloned());
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(verify()?);
                if let Ok(mut m) = self.0.lock() {
                    if m.len() >= SIGNER_CACHE_LIMIT {
                        m.retain(|_, v| v.expires_at() > now_secs);
                        if m.len() >= SIGNER_CACHE_LIMIT {
                            m.clear();
                        }
                    }
                    m.insert(key, c.clone());
                }
                c
            }
        };
        veksel_proto::oauth::check_window(claims.as_ref(), now_secs)?;
        Ok(claims)
    }
}

/// Most validated signing certificates remembered per configuration version.
const SIGNER_CACHE_LIMIT: usize = 10_000;

impl ConfState {
    /// The document.
    pub fn conf(&self) -> &GlobalConf {
        self.index.conf()
    }

    /// Verifies an access token with the token service's keys of this
    /// configuration, remembering the signature check; the time window is checked on
    /// every call.
    pub fn access_token(
        &self,
        token: &str,
        now_secs: i64,
    ) -> Result<Arc<AccessTokenClaims>, TokenError> {
        let ts = self.token_service()?;
        self.tokens.get_or_verify(token, now_secs, || {
            veksel_proto::oauth::verify_access_token(token, &ts.keys, &ts.issuer, now_secs)
        })
    }

    /// Verifies a person's ID token with the provider's keys of this configuration
    /// (the network's token service signs them), its window checked at `at_secs`;
    /// like access tokens, each token's signature is checked once.
    pub fn id_token(&self, token: &str, at_secs: i64) -> Result<Arc<IdTokenClaims>, TokenError> {
        let ts = self.token_service()?;
        self.id_tokens.get_or_verify(token, at_secs, || {
            veksel_proto::person::verify_id_token(token, &ts.keys, &ts.issuer, at_secs)
        })
    }

    fn token_service(&self) -> Result<&veksel_proto::oauth::TokenService, TokenError> {
        self.conf().token_service.as_ref().ok_or_else(|| {
            TokenError::Malformed("the global configuration names no token service".into())
        })
    }

    /// Verified OCSP responses (see [`crate::ocsp::check`]).
    pub fn ocsp_cache(&self) -> &std::sync::Mutex<OcspCache> {
        &self.ocsp_checked
    }

    /// The approved CA that issued a certificate (matched by issuer name), with its
    /// certificate DER. Remembered per certificate: this runs for every message.
    pub fn issuing_ca(
        &self,
        cert_der: &[u8],
        cert_hash: &str,
    ) -> Option<(&veksel_proto::conf::ApprovedCa, &[u8])> {
        let cached = self
            .issuers
            .lock()
            .ok()
            .and_then(|m| m.get(cert_hash).copied());
        let index = match cached {
            Some(i) => i,
            None => {
                use x509_parser::prelude::FromDer;
                let index = x509_parser::certificate::X509Certificate::from_der(cert_der)
                    .ok()
                    .and_then(|(_, cert)| {
                        let issuer = cert.issuer().as_raw();
                        self.ca_certs
                            .iter()
                            .position(|(subject, _)| subject == issuer)
                    });
                if let Ok(mut m) = self.issuers.lock() {
                    if m.len() >= SIGNER_CACHE_LIMIT {
                        m.clear();
                    }
                    m.insert(cert_hash.to_owned(), index);
                }
                index
            }
        }?;
        Some((
            self.conf().approved_cas.get(index)?,
            self.ca_certs.get(index)?.1.as_slice(),
        ))
    }

    /// Validates a member's signing certificate chain, remembering the result for
    /// this configuration version: the chain check (another ECDSA verification and
    /// path building) then runs once per certificate instead of once per message.
    /// Expiry is still checked on every call.
    pub fn signing_cert(
        &self,
        chain: &[Vec<u8>],
        member: &MemberId,
        now_secs: u64,
    ) -> Result<CertInfo, veksel_pki::PkiError> {
        let leaf = chain
            .first()
            .ok_or_else(|| veksel_pki::PkiError::Untrusted("empty certificate chain".into()))?;
        let key = (sha256_hex(leaf), member.clone());
        // Checked before the cache, so a revocation takes effect with the
        // configuration that announces it.
        if self.index.is_revoked(&key.0) {
            return Err(veksel_pki::PkiError::Untrusted(format!(
                "certificate {} has been revoked",
                key.0
            )));
        }
        let now = i64::try_from(now_secs).unwrap_or(i64::MAX);
        let cached = self.signers.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some(info) = cached
            && now >= info.not_before
            && now < info.not_after
        {
            return Ok(info);
        }
        let info = self.roots.verify_member_signing(chain, member, now_secs)?;
        if let Ok(mut m) = self.signers.lock() {
            if m.len() >= SIGNER_CACHE_LIMIT {
                m.clear();
            }
            m.insert(key, info.clone());
        }
        Ok(info)
    }
}

/// Downloads and holds the global configuration.
#[derive(Debug)]
pub struct ConfClient {
    anchor: Anchor,
    anchor_key: Vec<u8>,
    http: reqwest::Client,
    cache_path: PathBuf,
    clock: Clock,
    current: RwLock<Option<Arc<ConfState>>>,
    last_error: RwLock<Option<String>>,
    /// One refresh at a time: the poll loop and an operator's (or a test's) explicit
    /// refresh would otherwise race on the cache file's temporary name and could set
    /// an older version after a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

impl ConfClient {
    /// Sets up the client from an anchor; loads the cached copy if there is one.
    pub fn new(anchor: Anchor, cache_path: PathBuf, clock: Clock) -> Result<Self, GatewayError> {
        let conf_cert = certs_from_pem(&anchor.conf_signing_cert_pem)?;
        let first = conf_cert.first().ok_or_else(|| {
            GatewayError::Config("anchor has no configuration-signing certificate".into())
        })?;
        let anchor_key = CertInfo::parse(first)?.public_key;
        let tls_roots = certs_from_pem(&anchor.authority_tls_ca_pem)?;
        let tls = veksel_pki::tls::https_client_config(&tls_roots)
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(5))
            // The authority closes connections idle for 10 s; dropping them first
            // keeps a request from racing its close.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| GatewayError::Config(format!("HTTP client: {e}")))?;
        let client = Self {
            anchor,
            anchor_key,
            http,
            cache_path,
            clock,
            current: RwLock::new(None),
            last_error: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        };
        if let Ok(jws) = std::fs::read_to_string(&client.cache_path) {
            match client.verify(&jws) {
                Ok(state) => client.set(Arc::new(state)),
                Err(e) => tracing::warn!(error = %e, "ignoring the cached global configuration"),
            }
        }
        Ok(client)
    }

    /// The anchor.
    pub fn anchor(&self) -> &Anchor {
        &self.anchor
    }

    /// An HTTP client that trusts only the authority's TLS CA.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// POSTs a small DER request (OCSP, time-stamp) to a trust service and returns the
    /// answer, refusing answers over `max_bytes`; the whole call is bounded to 10 s.
    pub async fn post_der(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
        max_bytes: usize,
    ) -> Result<bytes::Bytes, String> {
        let resp = self
            .http
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        read_limited(resp, max_bytes).await
    }

    fn verify(&self, jws: &str) -> Result<ConfState, GatewayError> {
        let conf = GlobalConf::verify(jws, &self.anchor_key, &self.anchor.instance)
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        let roots = Roots::from_pems(conf.approved_cas.iter().map(|c| c.cert_pem.as_str()))?;
        let mut ca_certs = Vec::with_capacity(conf.approved_cas.len());
        for ca in &conf.approved_cas {
            use x509_parser::prelude::FromDer;
            let der = certs_from_pem(&ca.cert_pem)?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    GatewayError::Config(format!("approved CA {} has no certificate", ca.name))
                })?;
            let subject = x509_parser::certificate::X509Certificate::from_der(&der)
                .map_err(|e| GatewayError::Config(format!("approved CA {}: {e}", ca.name)))?
                .1
                .subject()
                .as_raw()
                .to_vec();
            ca_certs.push((subject, der));
        }
        Ok(ConfState {
            index: ConfIndex::new(conf),
            roots,
            jws: jws.to_owned(),
            signers: Default::default(),
            tokens: Default::default(),
            id_tokens: Default::default(),
            ocsp_checked: Default::default(),
            ca_certs,
            issuers: Default::default(),
        })
    }

    fn set(&self, state: Arc<ConfState>) {
        match self.current.write() {
            Ok(mut g) => *g = Some(state),
            Err(p) => *p.into_inner() = Some(state),
        }
    }

    fn set_error(&self, e: Option<String>) {
        match self.last_error.write() {
            Ok(mut g) => *g = e,
            Err(p) => *p.into_inner() = e,
        }
    }

    /// The last download error, if the last attempt failed.
    pub fn last_error(&self) -> Option<String> {
        match self.last_error.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The newest verified configuration, valid or not.
    pub fn latest(&self) -> Option<Arc<ConfState>> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The configuration, if it is still valid; otherwise the fault to report.
    pub fn current(&self, origin: Origin) -> Result<Arc<ConfState>, Fault> {
        let outdated = |m: String| Fault {
            origin,
            code: FaultCode::OutdatedGlobalConf,
            message: m,
        };
        let state = self
            .latest()
            .ok_or_else(|| outdated("no global configuration has been downloaded yet".into()))?;
        let now = self.clock.now_ms();
        state.conf().check_valid_at(now).map_err(|e| {
            outdated(format!(
                "{e}; the authority has not been reachable{}",
                self.last_error()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ))
        })?;
        Ok(state)
    }

    /// Downloads the configuration once. Returns true if a new version was accepted.
    pub async fn refresh(&self) -> Result<bool, GatewayError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let result = self.fetch().await;
        self.set_error(result.as_ref().err().map(ToString::to_string));
        result
    }

    async fn fetch(&self) -> Result<bool, GatewayError> {
        let mut req = self.http.get(&self.anchor.conf_url);
        if let Some(cur) = self.latest() {
            let etag = &sha256_hex(cur.jws.as_bytes())[..32];
            req = req.header("if-none-match", format!("\"{etag}\""));
        }
        let resp = req.send().await.map_err(|e| {
            GatewayError::Config(format!("downloading {}: {e}", self.anchor.conf_url))
        })?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(false);
        }
        if !resp.status().is_success() {
            return Err(GatewayError::Config(format!(
                "downloading {}: HTTP {}",
                self.anchor.conf_url,
                resp.status()
            )));
        }
        let body = read_limited(resp, 16 * 1024 * 1024)
            .await
            .map_err(|e| GatewayError::Config(format!("downloading configuration: {e}")))?;
        let jws = String::from_utf8(body.to_vec())
            .map_err(|_| GatewayError::Config("configuration is not UTF-8".into()))?;
        let state = self.verify(&jws)?;
        if let Some(cur) = self.latest() {
            if state.conf().version < cur.conf().version {
                return Err(GatewayError::Config(format!(
                    "refusing configuration version {} older than cached version {}",
                    state.conf().version,
                    cur.conf().version
                )));
            }
            if cur.jws == jws {
                return Ok(false);
            }
        }
        state
            .conf()
            .check_valid_at(self.clock.now_ms())
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        let tmp = self.cache_path.with_extension("tmp");
        std::fs::write(&tmp, &jws)
            .and_then(|()| std::fs::rename(&tmp, &self.cache_path))
            .map_err(|e| GatewayError::Config(format!("caching configuration: {e}")))?;
        let version = state.conf().version;
        self.set(Arc::new(state));
        tracing::debug!(version, "global configuration updated");
        Ok(true)
    }

    /// Polls the authority forever at the interval the configuration asks for.
    pub async fn poll_loop(self: Arc<Self>) {
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "global configuration refresh failed");
            }
            let secs = self
                .latest()
                .map_or(5, |s| s.conf().settings.refresh_interval_secs)
                .clamp(1, 600);
            tokio::time::sleep(Duration::from_secs(secs)).await;
        }
    }
}

impl PeerTrust for ConfClient {
    /// Servers must be registered gateways, checked here. Clients need only a chain to
    /// an approved CA that names a gateway: whether that gateway is registered is
    /// checked per request, so an unregistered one gets a precise
    /// `Server.ServerProxy.SslAuthenticationFailed` instead of a bare TLS alert.
    fn check(&self, chain: &[Vec<u8>], usage: Usage, now_secs: u64) -> Result<(), String> {
        let state = self.current(Origin::ServerProxy).map_err(|f| f.message)?;
        let leaf = chain.first().ok_or("no certificate")?;
        match usage {
            Usage::TlsServer => {
                let hash = sha256_hex(leaf);
                let gateway = state.index.gateway_by_cert(&hash).ok_or_else(|| {
                    format!("certificate {hash} is not registered to any gateway")
                })?;
                state
                    .roots
                    .verify_gateway_auth(chain, &gateway.id, usage, now_secs)
                    .map_err(|e| e.to_string())?;
            }
            Usage::TlsClient | Usage::Signing => {
                let hash = sha256_hex(leaf);
                if state.index.is_revoked(&hash) {
                    return Err(format!("certificate {hash} has been revoked"));
                }
                let info = state
                    .roots
                    .verify(chain, Usage::TlsClient, now_secs)
                    .map_err(|e| e.to_string())?;
                info.subject_serial_number
                    .as_deref()
                    .and_then(|s| s.parse::<veksel_id::GatewayId>().ok())
                    .ok_or_else(|| {
                        format!("certificate {} does not name a gateway", info.sha256)
                    })?;
            }
        }
        Ok(())
    }
}

/// Reads a response body, stopping as soon as it exceeds `max_bytes`.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    max_bytes: usize,
) -> Result<bytes::Bytes, String> {
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > max_bytes {
            return Err(format!("the answer is larger than {max_bytes} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}
