//! RFC 6960 OCSP: the authority's responder for the certificates its CA issued, a
//! request builder and a response verifier.
//!
//! The ASN.1 structures are RustCrypto's `x509-ocsp`; answering and checking are
//! here. Responses are signed by the issuing CA itself (no delegated responder), with
//! ECDSA P-256, so `openssl ocsp -issuer ca.pem` checks them with nothing else.

use crate::{CertInfo, PkiError};
use const_oid::ObjectIdentifier;
use der::asn1::{BitString, GeneralizedTime, Null, OctetString};
use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, Request, ResponderId, ResponseData, RevokedInfo, SingleResponse,
    TbsRequest, Version,
};

const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ID_PKIX_OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");

/// Most certificates asked about in one request.
pub const MAX_REQUESTS: usize = 20;

/// The status of one certificate, as the responder knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Issued and not revoked.
    Good,
    /// Revoked at this time (Unix seconds).
    Revoked(u64),
    /// Not issued by this CA.
    Unknown,
}

fn der_err(what: &'static str) -> impl Fn(der::Error) -> PkiError {
    move |e| PkiError::parse(what, e)
}

fn digest(alg: ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    let algorithm = if alg == ID_SHA1 {
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY
    } else if alg == ID_SHA256 {
        &aws_lc_rs::digest::SHA256
    } else {
        return None;
    };
    Some(aws_lc_rs::digest::digest(algorithm, data).as_ref().to_vec())
}

fn time(secs: u64) -> Result<OcspGeneralizedTime, PkiError> {
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map(OcspGeneralizedTime)
        .map_err(der_err("time"))
}

/// The issuer's name and key hashes for a hash algorithm.
fn issuer_hashes(issuer: &Certificate, alg: ObjectIdentifier) -> Option<(Vec<u8>, Vec<u8>)> {
    let name = issuer.tbs_certificate.subject.to_der().ok()?;
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    Some((digest(alg, &name)?, digest(alg, key)?))
}

/// A responder: the CA certificate and key that sign the answers.
#[derive(Debug)]
pub struct Responder<'a> {
    ca: &'a crate::CertificateAuthority,
    ca_cert: Certificate,
    /// How long an answer stays valid (nextUpdate − thisUpdate), seconds.
    pub validity_secs: u64,
}

impl<'a> Responder<'a> {
    /// A responder for `ca`.
    pub fn new(ca: &'a crate::CertificateAuthority, validity_secs: u64) -> Result<Self, PkiError> {
        let ca_cert = Certificate::from_der(ca.cert_der()).map_err(der_err("CA certificate"))?;
        Ok(Self {
            ca,
            ca_cert,
            validity_secs,
        })
    }

    /// The serial numbers (hex) a DER OCSP request asks about, for the lookup, or
    /// `None` if the request is malformed.
    pub fn serials(request_der: &[u8]) -> Option<Vec<String>> {
        let req = OcspRequest::from_der(request_der).ok()?;
        if req.tbs_request.request_list.is_empty()
            || req.tbs_request.request_list.len() > MAX_REQUESTS
        {
            return None;
        }
        Some(
            req.tbs_request
                .request_list
                .iter()
                .map(|r| hex::encode(r.req_cert.serial_number.as_bytes()))
                .collect(),
        )
    }

    /// Answers a DER OCSP request. `status` gives the status of each serial (hex) the
    /// CA issued; certificates of other issuers are answered `unknown`.
    pub fn respond(
        &self,
        request_der: &[u8],
        now_secs: u64,
        status: impl Fn(&str) -> Status,
    ) -> Vec<u8> {
        self.answer(request_der, now_secs, status)
            .unwrap_or_else(|_| OcspResponse::malformed_request())
            .to_der()
            .unwrap_or_default()
    }

    fn answer(
        &self,
        request_der: &[u8],
        now_secs: u64,
        status: impl Fn(&str) -> Status,
    ) -> Result<OcspResponse, PkiError> {
        if request_der.len() > 16 * 1024 {
            return Err(PkiError::parse("OCSP request", "too large"));
        }
        let req = OcspRequest::from_der(request_der).map_err(der_err("OCSP request"))?;
        let list = &req.tbs_request.request_list;
        if list.is_empty() || list.len() > MAX_REQUESTS {
            return Err(PkiError::parse(
                "OCSP request",
                "1 to 20 certificates per request",
            ));
        }
        let mut responses = Vec::with_capacity(list.len());
        for r in list {
            let id = &r.req_cert;
            let ours = issuer_hashes(&self.ca_cert, id.hash_algorithm.oid).is_some_and(|(n, k)| {
                n == id.issuer_name_hash.as_bytes() && k == id.issuer_key_hash.as_bytes()
            });
            let state = if ours {
                status(&hex::encode(id.serial_number.as_bytes()))
            } else {
                Status::Unknown
            };
            let cert_status = match state {
                Status::Good => CertStatus::Good(Null),
                Status::Unknown => CertStatus::Unknown(Null),
                Status::Revoked(at) => CertStatus::Revoked(RevokedInfo {
                    revocation_time: time(at)?,
                    revocation_reason: None,
                }),
            };
            responses.push(SingleResponse {
                cert_id: id.clone(),
                cert_status,
                this_update: time(now_secs)?,
                next_update: Some(time(now_secs + self.validity_secs)?),
                single_extensions: None,
            });
        }
        // Echo a nonce so a client that sent one can match the answer.
        let nonce = req
            .tbs_request
            .request_extensions
            .as_ref()
            .and_then(|exts| {
                exts.iter()
                    .find(|e| e.extn_id == const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE)
                    .cloned()
            });
        let tbs = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByName(self.ca_cert.tbs_certificate.subject.clone()),
            produced_at: time(now_secs)?,
            responses,
            response_extensions: nonce.map(|n| vec![n]),
        };
        let tbs_der = tbs.to_der().map_err(der_err("response data"))?;
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            self.ca.key().pkcs8_der(),
        )
        .map_err(|_| PkiError::Issue("CA key is not P-256".into()))?;
        let sig = key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &tbs_der)
            .map_err(|_| PkiError::Issue("OCSP signing failed".into()))?;
        let basic = BasicOcspResponse {
            tbs_response_data: tbs,
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: ID_ECDSA_SHA256,
                parameters: None,
            },
            signature: BitString::from_bytes(sig.as_ref()).map_err(der_err("signature"))?,
            certs: None,
        };
        OcspResponse::successful(basic).map_err(der_err("OCSP response"))
    }
}

/// A DER OCSP request (SHA-1 CertID, as OpenSSL and most responders expect) for a
/// certificate issued by `issuer`.
pub fn request(cert_der: &[u8], issuer_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let cert = Certificate::from_der(cert_der).map_err(der_err("certificate"))?;
    let issuer = Certificate::from_der(issuer_der).map_err(der_err("issuer"))?;
    let (name, key) =
        issuer_hashes(&issuer, ID_SHA1).ok_or_else(|| PkiError::Issue("hash".into()))?;
    let req = OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: CertId {
                    hash_algorithm: AlgorithmIdentifierOwned {
                        oid: ID_SHA1,
                        parameters: None,
                    },
                    issuer_name_hash: OctetString::new(name).map_err(der_err("hash"))?,
                    issuer_key_hash: OctetString::new(key).map_err(der_err("hash"))?,
                    serial_number: cert.tbs_certificate.serial_number.clone(),
                },
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    };
    req.to_der().map_err(der_err("OCSP request"))
}

/// What a verified OCSP response says about one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The status.
    pub status: Status,
    /// thisUpdate, Unix seconds.
    pub this_update: u64,
}

/// Verifies a DER OCSP response about `cert_der` signed by its issuer `issuer_der`,
/// and that it is fresh: produced no more than `max_age_secs` before `now_secs` and
/// not past its nextUpdate.
pub fn verify_response(
    response_der: &[u8],
    cert_der: &[u8],
    issuer_der: &[u8],
    now_secs: u64,
    max_age_secs: u64,
) -> Result<Checked, PkiError> {
    let bad = |m: &str| PkiError::Untrusted(format!("OCSP response: {m}"));
    let resp = OcspResponse::from_der(response_der).map_err(der_err("OCSP response"))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(bad(&format!("status {:?}", resp.response_status)));
    }
    let bytes = resp
        .response_bytes
        .ok_or_else(|| bad("no response bytes"))?;
    if bytes.response_type != ID_PKIX_OCSP_BASIC {
        return Err(bad("not a basic response"));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(der_err("basic response"))?;
    if basic.signature_algorithm.oid != ID_ECDSA_SHA256 {
        return Err(bad("unsupported signature algorithm"));
    }
    let issuer_info = CertInfo::parse(issuer_der)?;
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(der_err("response data"))?;
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        &issuer_info.public_key,
    )
    .verify(&tbs, basic.signature.raw_bytes())
    .map_err(|_| bad("the signature is not the issuer's"))?;
    let cert = Certificate::from_der(cert_der).map_err(der_err("certificate"))?;
    let issuer = Certificate::from_der(issuer_der).map_err(der_err("issuer"))?;
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| {
            r.cert_id.serial_number == cert.tbs_certificate.serial_number
                && issuer_hashes(&issuer, r.cert_id.hash_algorithm.oid).is_some_and(|(n, k)| {
                    n == r.cert_id.issuer_name_hash.as_bytes()
                        && k == r.cert_id.issuer_key_hash.as_bytes()
                })
        })
        .ok_or_else(|| bad("it does not speak of this certificate"))?;
    let this_update = single.this_update.0.to_unix_duration().as_secs();
    if this_update > now_secs + 60 {
        return Err(bad("it is from the future"));
    }
    if now_secs.saturating_sub(this_update) > max_age_secs {
        return Err(bad(&format!(
            "it is {} s old, more than the {max_age_secs} s allowed",
            now_secs - this_update
        )));
    }
    if let Some(next) = &single.next_update
        && next.0.to_unix_duration().as_secs() < now_secs
    {
        return Err(bad("it is past its nextUpdate"));
    }
    let status = match &single.cert_status {
        CertStatus::Good(_) => Status::Good,
        CertStatus::Unknown(_) => Status::Unknown,
        CertStatus::Revoked(info) => {
            Status::Revoked(info.revocation_time.0.to_unix_duration().as_secs())
        }
    };
    Ok(Checked {
        status,
        this_update,
    })
}

/// The serial number of a certificate as veksel names it (hex of the DER integer).
pub fn serial_hex(cert_der: &[u8]) -> Result<String, PkiError> {
    let cert = Certificate::from_der(cert_der).map_err(der_err("certificate"))?;
    let s: &SerialNumber = &cert.tbs_certificate.serial_number;
    Ok(hex::encode(s.as_bytes()))
}
