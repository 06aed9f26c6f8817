//! veksel's public-key infrastructure: key files, CSRs, the authority's certificate
//! authority, certificate inspection and chain validation, and the TLS 1.3
//! configurations gateways use between each other.
//!
//! Every key is ECDSA P-256 and every signature ES256/ecdsa-with-SHA256, from one
//! crypto provider (aws-lc-rs). Time is always a parameter.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod ca;
pub mod cert;
pub mod hsm;
pub mod keys;
pub mod ocsp;
pub mod tls;
pub mod tsa;
pub mod verify;

pub use ca::{CertificateAuthority, Profile};
pub use cert::CertInfo;
pub use keys::KeyFile;

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A key, certificate or CSR could not be parsed.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// Parser message.
        detail: String,
    },
    /// A certificate chain does not validate.
    #[error("certificate is not acceptable: {0}")]
    Untrusted(String),
    /// A certificate is valid but not for this purpose or party.
    #[error("certificate does not fit: {0}")]
    WrongCertificate(String),
    /// Certificate generation failed.
    #[error("cannot issue certificate: {0}")]
    Issue(String),
    /// A key operation failed (HSM, key generation).
    #[error("key: {0}")]
    Key(String),
    /// Reading or writing a key or certificate file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl PkiError {
    pub(crate) fn parse(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Parse {
            what,
            detail: detail.to_string(),
        }
    }
}

/// Lower-case hex SHA-256 of DER bytes: how certificates are named in the global
/// configuration.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
}

/// Parses every `CERTIFICATE` block of a PEM text into DER.
pub fn certs_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::parse("certificate PEM", format!("{e:?}")))?;
    if certs.is_empty() {
        return Err(PkiError::parse("certificate PEM", "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// Encodes DER certificates as PEM.
pub fn certs_to_pem(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|d| pem_block("CERTIFICATE", d))
        .collect::<Vec<_>>()
        .join("")
}

/// One PEM block with 64-character lines.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Converts a raw P-256 ECDSA signature (`r || s`, 64 bytes, as JWS carries it) into
/// the DER `SEQUENCE { r INTEGER, s INTEGER }` X.509 and CMS carry. Written out by hand:
/// the two integers are at most 33 bytes, so every length fits in one byte.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let start = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len().saturating_sub(1));
        let trimmed = &bytes[start.min(bytes.len())..];
        let mut out = vec![0x02];
        let pad = trimmed.first().is_none_or(|&b| b & 0x80 != 0);
        out.push(u8::try_from(trimmed.len() + usize::from(pad)).unwrap_or(0));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(trimmed);
        out
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30, u8::try_from(body.len()).unwrap_or(0)];
    out.extend(body);
    out
}
