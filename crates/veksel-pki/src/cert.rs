//! Reading what a certificate says: who it names, what it may be used for, its key.

use crate::{PkiError, sha256_hex};
use x509_parser::prelude::*;

/// The facts veksel needs from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Lower-case hex SHA-256 of the DER.
    pub sha256: String,
    /// Subject serialNumber attribute: the member or gateway id veksel put there.
    pub subject_serial_number: Option<String>,
    /// Serial number, lower-case hex.
    pub serial_hex: String,
    /// Subject as text, for messages.
    pub subject: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// True for CA certificates.
    pub is_ca: bool,
    /// Key usage has digitalSignature.
    pub digital_signature: bool,
    /// Key usage has nonRepudiation (contentCommitment).
    pub non_repudiation: bool,
    /// The certificate has an extended key usage extension.
    pub has_eku: bool,
    /// EKU includes clientAuth.
    pub client_auth: bool,
    /// EKU includes serverAuth.
    pub server_auth: bool,
    /// Uncompressed EC public key point (65 bytes for P-256).
    pub public_key: Vec<u8>,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, PkiError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| PkiError::parse("certificate", e))?;
        if !rest.is_empty() {
            return Err(PkiError::parse(
                "certificate",
                "trailing bytes after the DER",
            ));
        }
        let subject_serial_number = cert
            .subject()
            .iter_by_oid(&oid_registry::OID_X509_SERIALNUMBER)
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned);
        let ku = cert
            .key_usage()
            .map_err(|e| PkiError::parse("key usage", e))?;
        let eku = cert
            .extended_key_usage()
            .map_err(|e| PkiError::parse("extended key usage", e))?;
        Ok(Self {
            sha256: sha256_hex(der),
            subject_serial_number,
            serial_hex: hex::encode(cert.raw_serial()),
            subject: cert.subject().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca: cert.is_ca(),
            digital_signature: ku.as_ref().is_some_and(|k| k.value.digital_signature()),
            non_repudiation: ku.as_ref().is_some_and(|k| k.value.non_repudiation()),
            has_eku: eku.is_some(),
            client_auth: eku.as_ref().is_some_and(|e| e.value.client_auth),
            server_auth: eku.as_ref().is_some_and(|e| e.value.server_auth),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
        })
    }
}
