//! OCSP stapling between gateways.
//!
//! Each gateway fetches fresh OCSP responses for its own certificates (authentication
//! and signing) from the responders the global configuration names, and sends them
//! with every message: `veksel-ocsp-auth` for the TLS certificate, `veksel-ocsp-signing`
//! for the certificate that signs the descriptor. The peer accepts a certificate from
//! a CA with a responder only with a fresh, good response signed by that CA; so a
//! gateway whose responses age past `ocsp_freshness_secs` stops being accepted, as in
//! X-Road. Verified responses are cached per configuration version so the ECDSA check
//! runs once per response, not once per message.

use crate::Gateway;
use crate::confclient::ConfState;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use veksel_pki::ocsp::{self, Status};
use veksel_pki::tls::StapledCert;

/// The response stapled for the TLS certificate `cert_der` among the sender's
/// `veksel-ocsp-auth` values (`<certificate SHA-256 hex> <base64 response>` each).
pub fn auth_staple<'h>(headers: &'h http::HeaderMap, cert_der: &[u8]) -> Option<&'h str> {
    let hash = veksel_pki::sha256_hex(cert_der);
    headers
        .get_all(VEKSEL_OCSP_AUTH)
        .iter()
        .take(8)
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split_once(' '))
        .find(|(h, _)| h.eq_ignore_ascii_case(&hash))
        .map(|(_, staple)| staple)
}

pub use veksel_proto::peer::{VEKSEL_OCSP_AUTH, VEKSEL_OCSP_SIGNING};

/// Largest OCSP response accepted (DER); a single-certificate response is ~500 bytes.
const MAX_STAPLE_BYTES: usize = 16 * 1024;

/// This gateway's current OCSP responses, by certificate SHA-256.
#[derive(Debug)]
pub struct Staples {
    map: Mutex<HashMap<String, Arc<String>>>,
    last_error: Mutex<Option<String>>,
    /// The gateway-to-gateway server certificate, which also staples its response in
    /// the TLS handshake for standard TLS tooling.
    tls_cert: Arc<StapledCert>,
}

impl Staples {
    /// The certificate the gateway presents in TLS.
    pub fn tls_cert(&self) -> &Arc<StapledCert> {
        &self.tls_cert
    }

    /// No responses yet; `tls_cert` is the peer listener's certificate.
    pub fn new(tls_cert: Arc<StapledCert>) -> Self {
        Self {
            map: Mutex::default(),
            last_error: Mutex::default(),
            tls_cert,
        }
    }

    /// The base64 response to send with a certificate, if there is one.
    pub fn for_cert(&self, cert_der: &[u8]) -> Option<Arc<String>> {
        let key = veksel_pki::sha256_hex(cert_der);
        self.map.lock().ok().and_then(|m| m.get(&key).cloned())
    }

    /// The last refresh error, if the last refresh failed for some certificate.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn set(&self, cert_der: &[u8], response_b64: String) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(veksel_pki::sha256_hex(cert_der), Arc::new(response_b64));
        }
    }
}

/// Fetches fresh responses for this gateway's own certificates.
pub async fn refresh(gw: &Gateway) -> Result<(), String> {
    let keys = gw.keys.get();
    let mut own: Vec<Vec<u8>> = keys.auth_chain.iter().take(1).cloned().collect();
    own.extend(keys.previous_auth.iter().cloned());
    for signer in keys.signers.values() {
        own.extend(signer.cert_chain().iter().take(1).cloned());
    }
    let result = fetch_staples(gw, &own, keys.auth_chain.first()).await;
    if let Ok(mut e) = gw.ocsp.last_error.lock() {
        *e = result.as_ref().err().cloned();
    }
    result
}

/// Fetches and keeps fresh responses for `certs` (also for certificates not in use
/// yet, so a renewed certificate has one before its first message). The response for
/// `tls_leaf` is also stapled in TLS handshakes.
pub async fn fetch_staples(
    gw: &Gateway,
    certs: &[Vec<u8>],
    tls_leaf: Option<&Vec<u8>>,
) -> Result<(), String> {
    let conf = gw
        .conf
        .current(veksel_id::Origin::ClientProxy)
        .map_err(|f| f.message)?;
    let mut errors = Vec::new();
    for cert in certs {
        let hash = veksel_pki::sha256_hex(cert);
        let Some((ca, ca_der)) = conf.issuing_ca(cert, &hash) else {
            errors.push(format!("certificate {hash} is not from an approved CA"));
            continue;
        };
        let Some(url) = &ca.ocsp_url else { continue };
        match fetch(
            gw,
            url,
            cert,
            ca_der,
            conf.conf().settings.ocsp_freshness_secs,
        )
        .await
        {
            Ok(der) => {
                if tls_leaf == Some(cert) {
                    gw.ocsp.tls_cert.set_ocsp(der.clone());
                }
                gw.ocsp.set(cert, STANDARD.encode(&der));
            }
            Err(e) => errors.push(format!("{hash}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

async fn fetch(
    gw: &Gateway,
    url: &str,
    cert: &[u8],
    ca: &[u8],
    freshness: u64,
) -> Result<Vec<u8>, String> {
    let req = ocsp::request(cert, ca).map_err(|e| e.to_string())?;
    let body = gw
        .conf
        .post_der(url, "application/ocsp-request", req, MAX_STAPLE_BYTES)
        .await?;
    let checked = ocsp::verify_response(&body, cert, ca, gw.clock.now_secs(), freshness)
        .map_err(|e| e.to_string())?;
    match checked.status {
        Status::Good => Ok(body.to_vec()),
        Status::Revoked(_) => Err("the certificate has been revoked".into()),
        Status::Unknown => Err("the responder does not know the certificate".into()),
    }
}

/// Refreshes well before responses age out; after a failure, retries soon.
pub async fn refresh_loop(gw: Arc<Gateway>) {
    let mut failed = gw.ocsp.last_error().is_some();
    loop {
        let freshness = gw
            .conf
            .latest()
            .map_or(3600, |c| c.conf().settings.ocsp_freshness_secs);
        let regular = (freshness / 4).clamp(1, 300);
        let wait = if failed { regular.min(5) } else { regular };
        tokio::time::sleep(Duration::from_secs(wait)).await;
        failed = match refresh(&gw).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %e, "OCSP refresh failed");
                true
            }
        };
    }
}

/// Checks a stapled response for a certificate the peer presented. A certificate
/// from a CA without a responder needs none.
pub fn check(
    conf: &ConfState,
    staple: Option<&str>,
    cert_der: &[u8],
    now_secs: u64,
) -> Result<(), String> {
    let hash = veksel_pki::sha256_hex(cert_der);
    let (ca, ca_der) = conf
        .issuing_ca(cert_der, &hash)
        .ok_or_else(|| format!("certificate {hash} is not from an approved CA"))?;
    if ca.ocsp_url.is_none() {
        return Ok(());
    }
    let staple =
        staple.ok_or_else(|| format!("no OCSP response was sent for certificate {hash}"))?;
    if staple.len() > MAX_STAPLE_BYTES * 4 / 3 + 4 {
        return Err("the OCSP response is too large".into());
    }
    let freshness = conf.conf().settings.ocsp_freshness_secs;
    let key = (veksel_pki::sha256_hex(staple.as_bytes()), hash.clone());
    let cached = conf
        .ocsp_cache()
        .lock()
        .ok()
        .and_then(|m| m.get(&key).copied());
    let checked = match cached {
        Some(c) => c,
        None => {
            let der = STANDARD
                .decode(staple)
                .map_err(|_| "the OCSP response is not base64".to_owned())?;
            let c = ocsp::verify_response(&der, cert_der, ca_der, now_secs, freshness)
                .map_err(|e| format!("certificate {hash}: {e}"))?;
            if let Ok(mut m) = conf.ocsp_cache().lock() {
                if m.len() > 10_000 {
                    m.clear();
                }
                m.insert(key, c);
            }
            c
        }
    };
    let age = now_secs.saturating_sub(checked.this_update);
    if age > freshness {
        return Err(format!(
            "the OCSP response for certificate {hash} is {age} s old, more than the {freshness} s allowed"
        ));
    }
    match checked.status {
        Status::Good => Ok(()),
        Status::Revoked(_) => Err(format!("certificate {hash} is revoked (OCSP)")),
        Status::Unknown => Err(format!(
            "the OCSP responder does not know certificate {hash}"
        )),
    }
}
