//! Chain validation with rustls-webpki at a caller-supplied time, plus veksel's own
//! rules about what each kind of certificate must say.

use crate::cert::CertInfo;
use crate::{PkiError, certs_from_pem};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use veksel_id::{GatewayId, MemberId};
use webpki::{EndEntityCert, KeyUsage};

/// DER of id-kp-clientAuth (1.3.6.1.5.5.7.3.2).
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// DER of id-kp-serverAuth (1.3.6.1.5.5.7.3.1).
const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

/// The only signature algorithms veksel accepts in chains.
static ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ED25519,
];

/// What a certificate is being checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A gateway authenticating as TLS client.
    TlsClient,
    /// A gateway or the authority authenticating as TLS server.
    TlsServer,
    /// A member signing a message (no EKU, nonRepudiation required).
    Signing,
}

/// A set of trusted CA certificates.
#[derive(Debug, Clone, Default)]
pub struct Roots {
    anchors: Vec<TrustAnchor<'static>>,
    ders: Vec<Vec<u8>>,
}

impl Roots {
    /// Builds roots from DER certificates.
    pub fn from_ders(ders: Vec<Vec<u8>>) -> Result<Self, PkiError> {
        let anchors = ders
            .iter()
            .map(|d| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(d.as_slice()))
                    .map(|a| a.to_owned())
                    .map_err(|e| PkiError::parse("CA certificate", format!("{e:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { anchors, ders })
    }

    /// Builds roots from PEM texts.
    pub fn from_pems<'a>(pems: impl IntoIterator<Item = &'a str>) -> Result<Self, PkiError> {
        let mut ders = Vec::new();
        for p in pems {
            ders.extend(certs_from_pem(p)?);
        }
        Self::from_ders(ders)
    }

    /// The CA certificates, DER.
    pub fn ders(&self) -> &[Vec<u8>] {
        &self.ders
    }

    /// True if no CA is trusted.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Validates a chain (leaf first) for a usage at a time (Unix seconds).
    pub fn verify(
        &self,
        chain: &[Vec<u8>],
        usage: Usage,
        now_secs: u64,
    ) -> Result<CertInfo, PkiError> {
        let (leaf, rest) = chain
            .split_first()
            .ok_or_else(|| PkiError::Untrusted("empty certificate chain".into()))?;
        let leaf_der = CertificateDer::from(leaf.as_slice());
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let ee = EndEntityCert::try_from(&leaf_der)
            .map_err(|e| PkiError::parse("certificate", format!("{e:?}")))?;
        let eku = match usage {
            Usage::TlsClient => KeyUsage::required(EKU_CLIENT_AUTH),
            Usage::TlsServer => KeyUsage::required(EKU_SERVER_AUTH),
            // Signing certificates carry no EKU; the checks below enforce that.
            Usage::Signing => KeyUsage::required_if_present(EKU_CLIENT_AUTH),
        };
        ee.verify_for_usage(
            ALGS,
            &self.anchors,
            &intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_secs)),
            eku,
            None,
            None,
        )
        .map_err(|e| PkiError::Untrusted(format!("{e:?}")))?;
        let info = CertInfo::parse(leaf)?;
        if usage == Usage::Signing && (info.has_eku || !info.non_repudiation || info.is_ca) {
            return Err(PkiError::WrongCertificate(format!(
                "{} is not a signing certificate (needs nonRepudiation and no extended key usage)",
                info.subject
            )));
        }
        Ok(info)
    }

    /// Validates a chain for an arbitrary extended key usage (DER of the OID content)
    /// at a time, e.g. timeStamping for TSA certificates at the stamped time.
    pub fn verify_for_eku(
        &self,
        chain: &[Vec<u8>],
        eku: &'static [u8],
        at_secs: u64,
    ) -> Result<CertInfo, PkiError> {
        let (leaf, rest) = chain
            .split_first()
            .ok_or_else(|| PkiError::Untrusted("empty certificate chain".into()))?;
        let leaf_der = CertificateDer::from(leaf.as_slice());
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let ee = EndEntityCert::try_from(&leaf_der)
            .map_err(|e| PkiError::parse("certificate", format!("{e:?}")))?;
        ee.verify_for_usage(
            ALGS,
            &self.anchors,
            &intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(at_secs)),
            KeyUsage::required(eku),
            None,
            None,
        )
        .map_err(|e| PkiError::Untrusted(format!("{e:?}")))?;
        CertInfo::parse(leaf)
    }

    /// Validates a member's signing certificate chain and that it names the member.
    pub fn verify_member_signing(
        &self,
        chain: &[Vec<u8>],
        member: &MemberId,
        now_secs: u64,
    ) -> Result<CertInfo, PkiError> {
        let info = self.verify(chain, Usage::Signing, now_secs)?;
        let expected = member.to_string();
        if info.subject_serial_number.as_deref() != Some(expected.as_str()) {
            return Err(PkiError::WrongCertificate(format!(
                "signing certificate names {:?}, not member {expected}",
                info.subject_serial_number.unwrap_or_default()
            )));
        }
        Ok(info)
    }

    /// Validates a gateway's authentication certificate chain and that it names the gateway.
    pub fn verify_gateway_auth(
        &self,
        chain: &[Vec<u8>],
        gateway: &GatewayId,
        usage: Usage,
        now_secs: u64,
    ) -> Result<CertInfo, PkiError> {
        let info = self.verify(chain, usage, now_secs)?;
        let expected = gateway.to_string();
        if info.subject_serial_number.as_deref() != Some(expected.as_str()) {
            return Err(PkiError::WrongCertificate(format!(
                "authentication certificate names {:?}, not gateway {expected}",
                info.subject_serial_number.unwrap_or_default()
            )));
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{CertificateAuthority, Profile, make_csr};
    use crate::keys::KeyFile;
    use time::{Duration, OffsetDateTime};

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn secs(t: OffsetDateTime) -> u64 {
        t.unix_timestamp() as u64
    }

    #[test]
    fn issued_certificates_validate_for_their_purpose_only() {
        let ca = CertificateAuthority::create("Test CA", now(), Duration::days(365)).unwrap();
        let roots = Roots::from_ders(vec![ca.cert_der().to_vec()]).unwrap();
        let member: MemberId = "GL/GOV/123".parse().unwrap();
        let gw = member.gateway("gw1").unwrap();

        let key = KeyFile::generate().unwrap();
        let csr = make_csr(&key, "anything").unwrap();
        let auth = ca
            .issue_from_csr(
                &csr,
                &Profile::GatewayAuth {
                    gateway: gw.clone(),
                    hosts: vec!["127.0.0.1".into()],
                },
                now(),
                Duration::days(30),
            )
            .unwrap();
        let sign = ca
            .issue_from_csr(
                &csr,
                &Profile::MemberSigning {
                    member: member.clone(),
                    name: "Agency Æ".into(),
                },
                now(),
                Duration::days(30),
            )
            .unwrap();
        let t = secs(now());
        let info = roots
            .verify_gateway_auth(std::slice::from_ref(&auth), &gw, Usage::TlsClient, t)
            .unwrap();
        assert_eq!(info.public_key.len(), 65);
        roots
            .verify_gateway_auth(std::slice::from_ref(&auth), &gw, Usage::TlsServer, t)
            .unwrap();
        roots
            .verify_member_signing(std::slice::from_ref(&sign), &member, t)
            .unwrap();

        // An auth certificate is not a signing certificate, and vice versa.
        assert!(
            roots
                .verify_member_signing(std::slice::from_ref(&auth), &member, t)
                .is_err()
        );
        assert!(
            roots
                .verify(std::slice::from_ref(&sign), Usage::TlsClient, t)
                .is_err()
        );
        // Wrong party.
        let other: MemberId = "GL/GOV/999".parse().unwrap();
        assert!(matches!(
            roots.verify_member_signing(std::slice::from_ref(&sign), &other, t),
            Err(PkiError::WrongCertificate(_))
        ));
        // Expired.
        let later = secs(now() + Duration::days(31));
        assert!(matches!(
            roots.verify_member_signing(std::slice::from_ref(&sign), &member, later),
            Err(PkiError::Untrusted(_))
        ));
        // Another CA.
        let ca2 = CertificateAuthority::create("Other CA", now(), Duration::days(365)).unwrap();
        let roots2 = Roots::from_ders(vec![ca2.cert_der().to_vec()]).unwrap();
        assert!(roots2.verify_member_signing(&[sign], &member, t).is_err());
    }

    #[test]
    fn tampered_csr_is_refused() {
        let ca = CertificateAuthority::create("Test CA", now(), Duration::days(365)).unwrap();
        let key = KeyFile::generate().unwrap();
        let csr = make_csr(&key, "x").unwrap();
        let mut lines: Vec<String> = csr.lines().map(str::to_owned).collect();
        let mid = lines.len() / 2;
        let l = &mut lines[mid];
        let flipped = if l.starts_with('A') { 'B' } else { 'A' };
        l.replace_range(0..1, &flipped.to_string());
        let bad = lines.join("\n");
        let r = ca.issue_from_csr(
            &bad,
            &Profile::TlsServer {
                hosts: vec!["localhost".into()],
            },
            now(),
            Duration::days(1),
        );
        assert!(r.is_err());
    }
}
