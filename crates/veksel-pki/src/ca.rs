//! The authority's certificate authority: issues gateway authentication certificates,
//! member signing certificates and TLS server certificates from PKCS#10 requests.
//!
//! The CA never copies names from a CSR: the subject and extensions come from the
//! registry entry the request was approved for, and the CSR only contributes its
//! (signature-checked) public key.

use crate::keys::KeyFile;
use crate::{PkiError, certs_from_pem, pem_block};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};
use veksel_id::{GatewayId, MemberId};

/// What a certificate is for.
#[derive(Debug, Clone)]
pub enum Profile {
    /// A gateway's authentication certificate: TLS client and server between gateways.
    /// The subject's serialNumber is the gateway id.
    GatewayAuth {
        /// The gateway.
        gateway: GatewayId,
        /// Host names or IP addresses it is reached at (for standard TLS tooling).
        hosts: Vec<String>,
    },
    /// A member's signing certificate: signs messages. Key usage digitalSignature and
    /// nonRepudiation, no extended key usage. The subject's serialNumber is the member id.
    MemberSigning {
        /// The member.
        member: MemberId,
        /// Its legal name.
        name: String,
    },
    /// A time-stamping authority's certificate: critical extended key usage
    /// timeStamping only, as RFC 3161 and OpenSSL require.
    TimeStamping {
        /// Display name.
        name: String,
    },
    /// A TLS server certificate, e.g. for the authority's HTTPS endpoints.
    TlsServer {
        /// Host names or IP addresses.
        hosts: Vec<String>,
    },
}

fn printable(s: &str) -> Result<DnValue, PkiError> {
    rcgen::string::PrintableString::try_from(s)
        .map(DnValue::PrintableString)
        .map_err(|e| PkiError::Issue(format!("{s:?} is not a printable string: {e}")))
}

fn serial_number_oid() -> DnType {
    DnType::CustomDnType(vec![2, 5, 4, 5])
}

fn sans(hosts: &[String]) -> Result<Vec<SanType>, PkiError> {
    hosts
        .iter()
        .map(|h| match h.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => rcgen::string::Ia5String::try_from(h.as_str())
                .map(SanType::DnsName)
                .map_err(|e| PkiError::Issue(format!("bad host name {h:?}: {e}"))),
        })
        .collect()
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // aws-lc's RNG cannot fail in practice; a zero serial would still be valid DER.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // no leading zero byte to trim
    SerialNumber::from_slice(&bytes)
}

impl Profile {
    fn params(
        &self,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<CertificateParams, PkiError> {
        let mut p = CertificateParams::default();
        p.not_before = now - Duration::minutes(5);
        p.not_after = now + validity;
        p.serial_number = Some(random_serial());
        p.use_authority_key_identifier_extension = true;
        let mut dn = DistinguishedName::new();
        match self {
            Profile::GatewayAuth { gateway, hosts } => {
                dn.push(DnType::CommonName, printable(gateway.code())?);
                dn.push(
                    DnType::OrganizationName,
                    printable(&gateway.owner().to_string())?,
                );
                dn.push(serial_number_oid(), printable(&gateway.to_string())?);
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                p.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
                p.subject_alt_names = sans(hosts)?;
            }
            Profile::MemberSigning { member, name } => {
                dn.push(DnType::CommonName, printable(member.code())?);
                dn.push(DnType::OrganizationName, DnValue::Utf8String(name.clone()));
                dn.push(serial_number_oid(), printable(&member.to_string())?);
                p.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::ContentCommitment,
                ];
            }
            Profile::TimeStamping { name } => {
                dn.push(DnType::CommonName, DnValue::Utf8String(name.clone()));
                p.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::ContentCommitment,
                ];
                p.custom_extensions = vec![time_stamping_eku_extension()];
            }
            Profile::TlsServer { hosts } => {
                let cn = hosts.first().cloned().unwrap_or_else(|| "veksel".into());
                dn.push(DnType::CommonName, DnValue::Utf8String(cn));
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                p.subject_alt_names = sans(hosts)?;
            }
        }
        p.distinguished_name = dn;
        Ok(p)
    }
}

/// A certificate authority: its certificate and key.
#[derive(Debug)]
pub struct CertificateAuthority {
    cert_der: Vec<u8>,
    key: KeyFile,
}

impl CertificateAuthority {
    /// Creates a self-signed root CA.
    pub fn create(name: &str, now: OffsetDateTime, validity: Duration) -> Result<Self, PkiError> {
        let key = KeyFile::generate()?;
        let mut p = CertificateParams::default();
        p.not_before = now - Duration::minutes(5);
        p.not_after = now + validity;
        p.serial_number = Some(random_serial());
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, DnValue::Utf8String(name.to_owned()));
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p
            .self_signed(&key.rcgen()?)
            .map_err(|e| PkiError::Issue(e.to_string()))?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    /// Loads a CA from its certificate PEM and key.
    pub fn from_parts(cert_pem: &str, key: KeyFile) -> Result<Self, PkiError> {
        let cert_der = certs_from_pem(cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::parse("CA certificate", "empty"))?;
        Ok(Self { cert_der, key })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem_block("CERTIFICATE", &self.cert_der)
    }

    /// The CA key.
    pub fn key(&self) -> &KeyFile {
        &self.key
    }

    /// Issues a certificate for the public key in a PKCS#10 request. The request's
    /// signature is checked (proof of possession); its names are ignored.
    pub fn issue_from_csr(
        &self,
        csr_pem: &str,
        profile: &Profile,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<Vec<u8>, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::parse("certificate signing request", e))?;
        csr.params = profile.params(now, validity)?;
        let ca_key = self.key.rcgen()?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.clone().into(), ca_key)
            .map_err(|e| PkiError::Issue(e.to_string()))?;
        let cert = csr
            .signed_by(&issuer)
            .map_err(|e| PkiError::Issue(e.to_string()))?;
        Ok(cert.der().to_vec())
    }
}

/// Makes a PKCS#10 request for `key`. The subject is informational only.
pub fn make_csr(key: &KeyFile, common_name: &str) -> Result<String, PkiError> {
    make_csr_with(&key.rcgen()?, common_name)
}

/// Makes a PKCS#10 request signed by any key rcgen can use (an HSM key too).
pub fn make_csr_with(key: &impl rcgen::SigningKey, common_name: &str) -> Result<String, PkiError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        DnValue::Utf8String(common_name.to_owned()),
    );
    p.distinguished_name = dn;
    let csr = p
        .serialize_request(key)
        .map_err(|e| PkiError::Issue(e.to_string()))?;
    csr.pem().map_err(|e| PkiError::Issue(e.to_string()))
}

/// A self-signed certificate for a key that signs documents (the global
/// configuration). It is trusted because the anchor carries it, not by chain.
pub fn self_signed_signing_cert(
    key: &KeyFile,
    common_name: &str,
    now: OffsetDateTime,
    validity: Duration,
) -> Result<Vec<u8>, PkiError> {
    let mut p = CertificateParams::default();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + validity;
    p.serial_number = Some(random_serial());
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        DnValue::Utf8String(common_name.to_owned()),
    );
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = p
        .self_signed(&key.rcgen()?)
        .map_err(|e| PkiError::Issue(e.to_string()))?;
    Ok(cert.der().to_vec())
}

/// The DER of the critical extended-key-usage extension value `SEQUENCE { timeStamping }`.
pub fn time_stamping_eku_extension() -> rcgen::CustomExtension {
    let mut ext = rcgen::CustomExtension::from_oid_content(
        &[2, 5, 29, 37],
        vec![
            0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08,
        ],
    );
    ext.set_criticality(true);
    ext
}
