//! RFC 3161 time stamps: a time-stamping authority (responder) and a verifier.
//!
//! Built on the RustCrypto ASN.1 structures (`x509-tsp`, `cms`); the signing and the
//! verification logic are here because no maintained crate provides them without
//! pulling in a second crypto library. Tokens are CMS SignedData with ECDSA P-256 and
//! the `signingCertificateV2` attribute, and the TSA certificate carries a critical
//! extended key usage of `timeStamping` only — what `openssl ts -verify` requires.

use crate::keys::KeyFile;
use crate::verify::Roots;
use crate::{CertInfo, PkiError};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use der::asn1::{GeneralizedTime, Int, OctetString, SetOfVec};
use der::{Any, Decode, Encode, Sequence};
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_tsp::{Accuracy, MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

/// id-signedData.
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// id-ct-TSTInfo.
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
/// id-contentType.
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// id-messageDigest.
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// id-signingTime.
const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
/// id-aa-signingCertificateV2.
const ID_SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
/// SHA-256.
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
/// ecdsa-with-SHA256.
const ID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// The default policy OID of veksel's TSA. It lies under the private enterprise number
/// IANA reserves for documentation (32473, RFC 5612) because an operator must name its
/// own registered policy; set `tsa_policy_oid` in the authority's configuration.
pub const VEKSEL_TSA_POLICY: &str = "1.3.6.1.4.1.32473.1.1";

/// DER of id-kp-timeStamping (1.3.6.1.5.5.7.3.8), for chain validation.
/// The timeStamping extended key usage (1.3.6.1.5.5.7.3.8), OID content bytes.
pub const EKU_TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

/// ESSCertIDv2 (RFC 5035) with the default hash algorithm, SHA-256.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertIdV2 {
    cert_hash: OctetString,
}

/// SigningCertificateV2 (RFC 5035).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn der_err(what: &'static str) -> impl Fn(der::Error) -> PkiError {
    move |e| PkiError::parse(what, e)
}

fn alg(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, PkiError> {
    let mut values = SetOfVec::new();
    values.insert(value).map_err(der_err("attribute"))?;
    Ok(Attribute { oid, values })
}

/// Builds a time-stamp request for a SHA-256 hash.
pub fn request(
    sha256_hash: &[u8],
    nonce: Option<u64>,
    cert_req: bool,
) -> Result<Vec<u8>, PkiError> {
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: x509_cert::spki::AlgorithmIdentifier {
                oid: ID_SHA256,
                parameters: None,
            },
            hashed_message: OctetString::new(sha256_hash).map_err(der_err("hash"))?,
        },
        req_policy: None,
        nonce: nonce
            .map(|n| Int::new(&positive(&n.to_be_bytes())))
            .transpose()
            .map_err(der_err("nonce"))?,
        cert_req,
        extensions: None,
    };
    req.to_der().map_err(der_err("time-stamp request"))
}

/// Big-endian bytes made a positive DER INTEGER (leading zero if the top bit is set).
fn positive(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    match trimmed.first() {
        None => vec![0],
        Some(b) if b & 0x80 != 0 => [vec![0], trimmed].concat(),
        Some(_) => trimmed,
    }
}

/// A time-stamping authority: a key and its certificate.
#[derive(Debug)]
pub struct TimeStampAuthority {
    key: KeyFile,
    cert_der: Vec<u8>,
    cert: Certificate,
    policy: ObjectIdentifier,
}

/// Why a request is refused; the answer is then a rejection, not a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request is not a valid TimeStampReq.
    BadRequest,
    /// The hash algorithm is not SHA-256 or the hash has the wrong length.
    BadAlgorithm,
    /// The requested policy is not ours.
    UnacceptedPolicy,
}

impl TimeStampAuthority {
    /// A TSA from its key and certificate (which must carry timeStamping), stamping
    /// under `policy` (dotted OID).
    pub fn new(key: KeyFile, cert_der: Vec<u8>, policy: &str) -> Result<Self, PkiError> {
        let cert = Certificate::from_der(&cert_der).map_err(der_err("TSA certificate"))?;
        let policy = ObjectIdentifier::new(policy)
            .map_err(|e| PkiError::Issue(format!("TSA policy {policy:?}: {e}")))?;
        Ok(Self {
            key,
            cert_der,
            cert,
            policy,
        })
    }

    /// The TSA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Answers a DER TimeStampReq with a DER TimeStampResp: a token, or a rejection
    /// saying why. `serial` must be unique per token.
    pub fn respond(&self, request_der: &[u8], now_unix_secs: u64, serial: &[u8]) -> Vec<u8> {
        match self.stamp(request_der, now_unix_secs, serial) {
            Ok(der) => der,
            Err(refusal) => rejection(refusal),
        }
    }

    fn stamp(
        &self,
        request_der: &[u8],
        now_unix_secs: u64,
        serial: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        if request_der.len() > 16 * 1024 {
            return Err(Refusal::BadRequest);
        }
        let req = TimeStampReq::from_der(request_der).map_err(|_| Refusal::BadRequest)?;
        // The TSA only echoes the imprint, so any SHA-2 size is as safe to stamp as
        // SHA-256; outside clients (rfc3161-client defaults to SHA-512) need them.
        let expected_len = match req.message_imprint.hash_algorithm.oid {
            ID_SHA256 => 32,
            ID_SHA384 => 48,
            ID_SHA512 => 64,
            _ => return Err(Refusal::BadAlgorithm),
        };
        if req.message_imprint.hashed_message.as_bytes().len() != expected_len {
            return Err(Refusal::BadAlgorithm);
        }
        if req.req_policy.is_some_and(|p| p != self.policy) {
            return Err(Refusal::UnacceptedPolicy);
        }
        self.token(&req, now_unix_secs, serial)
            .map_err(|_| Refusal::BadRequest)
    }

    fn token(
        &self,
        req: &TimeStampReq,
        now_unix_secs: u64,
        serial: &[u8],
    ) -> Result<Vec<u8>, PkiError> {
        let gen_time =
            GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(now_unix_secs))
                .map_err(der_err("time"))?;
        let tst = TstInfo {
            version: TspVersion::V1,
            policy: self.policy,
            message_imprint: req.message_imprint.clone(),
            serial_number: Int::new(&positive(serial)).map_err(der_err("serial"))?,
            gen_time,
            accuracy: Some(Accuracy {
                seconds: Some(1),
                millis: None,
                micros: None,
            }),
            ordering: false,
            nonce: req.nonce.clone(),
            tsa: None,
            extensions: None,
        };
        let tst_der = tst.to_der().map_err(der_err("TSTInfo"))?;
        let cert_hash = OctetString::new(sha256(&self.cert_der)).map_err(der_err("hash"))?;

        let signing_cert = SigningCertificateV2 {
            certs: vec![EssCertIdV2 { cert_hash }],
        };
        let mut signed_attrs = SetOfVec::new();
        for a in [
            attribute(
                ID_CONTENT_TYPE,
                Any::encode_from(&ID_CT_TST_INFO).map_err(der_err("attribute"))?,
            )?,
            attribute(
                ID_MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(sha256(&tst_der)).map_err(der_err("digest"))?)
                    .map_err(der_err("attribute"))?,
            )?,
            attribute(
                ID_SIGNING_TIME,
                Any::encode_from(&gen_time).map_err(der_err("attribute"))?,
            )?,
            attribute(
                ID_SIGNING_CERTIFICATE_V2,
                Any::encode_from(&signing_cert).map_err(der_err("attribute"))?,
            )?,
        ] {
            signed_attrs
                .insert(a)
                .map_err(der_err("signed attributes"))?;
        }
        // The signature covers the attributes encoded as a SET (RFC 5652 §5.4).
        let to_sign = signed_attrs
            .to_der()
            .map_err(der_err("signed attributes"))?;
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            self.key.pkcs8_der(),
        )
        .map_err(|_| PkiError::Issue("TSA key is not P-256".into()))?;
        let signature = key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &to_sign)
            .map_err(|_| PkiError::Issue("TSA signing failed".into()))?;
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: self.cert.tbs_certificate.issuer.clone(),
                serial_number: self.cert.tbs_certificate.serial_number.clone(),
            }),
            digest_alg: alg(ID_SHA256),
            signed_attrs: Some(signed_attrs),
            signature_algorithm: alg(ID_ECDSA_SHA256),
            signature: OctetString::new(signature.as_ref()).map_err(der_err("signature"))?,
            unsigned_attrs: None,
        };
        let mut digest_algorithms = SetOfVec::new();
        digest_algorithms
            .insert(alg(ID_SHA256))
            .map_err(der_err("digest algorithms"))?;
        let mut signer_infos = SetOfVec::new();
        signer_infos
            .insert(signer)
            .map_err(der_err("signer infos"))?;
        let certificates = if req.cert_req {
            let mut set = SetOfVec::new();
            set.insert(cms::cert::CertificateChoices::Certificate(
                self.cert.clone(),
            ))
            .map_err(der_err("certificates"))?;
            Some(CertificateSet(set))
        } else {
            None
        };
        let signed_data = SignedData {
            version: CmsVersion::V3,
            digest_algorithms,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_CT_TST_INFO,
                econtent: Some(
                    Any::encode_from(&OctetString::new(tst_der).map_err(der_err("content"))?)
                        .map_err(der_err("content"))?,
                ),
            },
            certificates,
            crls: None,
            signer_infos: SignerInfos(signer_infos),
        };
        let token = ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&signed_data).map_err(der_err("token"))?,
        };
        let resp = TimeStampResp {
            status: cmpv2::status::PkiStatusInfo {
                status: cmpv2::status::PkiStatus::Accepted,
                status_string: None,
                fail_info: None,
            },
            time_stamp_token: Some(token),
        };
        resp.to_der().map_err(der_err("response"))
    }
}

fn rejection(refusal: Refusal) -> Vec<u8> {
    use cmpv2::status::{PkiStatus, PkiStatusInfo};
    // The failInfo bit string is left out: cmpv2 0.2's flag values do not encode the
    // RFC 4210 bit positions. The caller logs the reason.
    let _ = refusal;
    let resp = TimeStampResp {
        status: PkiStatusInfo {
            status: PkiStatus::Rejection,
            status_string: None,
            fail_info: None,
        },
        time_stamp_token: None,
    };
    resp.to_der().unwrap_or_default()
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedStamp {
    /// The time the TSA vouches for, Unix seconds.
    pub gen_time: u64,
    /// The token's serial number, hex.
    pub serial_hex: String,
    /// The TSA certificate that signed it.
    pub tsa: CertInfo,
}

/// Extracts the token (ContentInfo DER) from a DER TimeStampResp, or explains the
/// rejection.
pub fn token_from_response(response_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let resp = TimeStampResp::from_der(response_der).map_err(der_err("time-stamp response"))?;
    if !matches!(
        resp.status.status,
        cmpv2::status::PkiStatus::Accepted | cmpv2::status::PkiStatus::GrantedWithMods
    ) {
        return Err(PkiError::Untrusted(format!(
            "the TSA refused: {:?} {:?}",
            resp.status.status, resp.status.fail_info
        )));
    }
    resp.time_stamp_token
        .ok_or_else(|| PkiError::parse("time-stamp response", "granted without a token"))?
        .to_der()
        .map_err(der_err("token"))
}

/// Verifies a token (ContentInfo DER) over a SHA-256 hash: the imprint, the signed
/// attributes, the signature, and the TSA certificate's chain to `roots` with the
/// timeStamping usage at the stamped time. `extra_certs` supplies the TSA certificate
/// if the token does not carry it.
pub fn verify_token(
    token_der: &[u8],
    sha256_hash: &[u8],
    roots: &Roots,
    extra_certs: &[Vec<u8>],
) -> Result<VerifiedStamp, PkiError> {
    let bad = |m: &str| PkiError::Untrusted(format!("time-stamp token: {m}"));
    let ci = ContentInfo::from_der(token_der).map_err(der_err("time-stamp token"))?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(bad("not SignedData"));
    }
    // Only canonical DER is accepted, so no byte of a token can change unnoticed.
    if ci.to_der().map_err(der_err("token"))? != token_der {
        return Err(bad("not in canonical DER"));
    }
    let sd: SignedData = ci.content.decode_as().map_err(der_err("SignedData"))?;
    // The envelope fields are not signed; accept exactly what this profile produces.
    let only_sha256 = sd.digest_algorithms.len() == 1
        && sd
            .digest_algorithms
            .iter()
            .all(|a| a.oid == ID_SHA256 && a.parameters.is_none());
    if sd.version != CmsVersion::V3
        || !only_sha256
        || sd.crls.is_some()
        || sd.signer_infos.0.len() != 1
    {
        return Err(bad(
            "the SignedData envelope is not the expected profile (v3, SHA-256, one signer)",
        ));
    }
    if sd.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(bad("content is not TSTInfo"));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| bad("no content"))?;
    let tst_der = econtent
        .decode_as::<OctetString>()
        .map_err(der_err("content"))?
        .into_bytes();
    let tst = TstInfo::from_der(&tst_der).map_err(der_err("TSTInfo"))?;
    if tst.message_imprint.hash_algorithm.oid != ID_SHA256
        || tst.message_imprint.hashed_message.as_bytes() != sha256_hash
    {
        return Err(bad("it stamps another hash"));
    }
    let signer = sd
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or_else(|| bad("no signer"))?;
    if signer.version != CmsVersion::V1
        || signer.digest_alg.oid != ID_SHA256
        || signer.digest_alg.parameters.is_some()
        || signer.signature_algorithm.oid != ID_ECDSA_SHA256
        || signer.signature_algorithm.parameters.is_some()
        || signer.unsigned_attrs.is_some()
    {
        return Err(bad(
            "the signer is not the expected profile (SHA-256, ECDSA, no unsigned attributes)",
        ));
    }
    let mut candidates: Vec<Vec<u8>> = extra_certs.to_vec();
    if let Some(set) = &sd.certificates {
        for c in set.0.iter() {
            if let cms::cert::CertificateChoices::Certificate(cert) = c {
                candidates.push(cert.to_der().map_err(der_err("certificate"))?);
            }
        }
    }
    let SignerIdentifier::IssuerAndSerialNumber(ias) = &signer.sid else {
        return Err(bad("signer is not identified by issuer and serial"));
    };
    let cert_der = candidates
        .into_iter()
        .find(|d| {
            Certificate::from_der(d).is_ok_and(|c| {
                c.tbs_certificate.serial_number == ias.serial_number
                    && c.tbs_certificate.issuer == ias.issuer
            })
        })
        .ok_or_else(|| bad("the TSA certificate is not available"))?;
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("no signed attributes"))?;
    let attr = |oid: ObjectIdentifier| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
    };
    let content_type: ObjectIdentifier = attr(ID_CONTENT_TYPE)
        .ok_or_else(|| bad("no content type"))?
        .decode_as()
        .map_err(der_err("content type"))?;
    if content_type != ID_CT_TST_INFO {
        return Err(bad("signed content type is not TSTInfo"));
    }
    let digest: OctetString = attr(ID_MESSAGE_DIGEST)
        .ok_or_else(|| bad("no message digest"))?
        .decode_as()
        .map_err(der_err("digest"))?;
    if digest.as_bytes() != sha256(&tst_der) {
        return Err(bad("the signed digest does not match the content"));
    }
    let ess: SigningCertificateV2 = attr(ID_SIGNING_CERTIFICATE_V2)
        .ok_or_else(|| bad("no signingCertificateV2"))?
        .decode_as()
        .map_err(der_err("signingCertificateV2"))?;
    if ess.certs.first().map(|c| c.cert_hash.as_bytes()) != Some(&sha256(&cert_der)[..]) {
        return Err(bad("signingCertificateV2 names another certificate"));
    }
    let info = CertInfo::parse(&cert_der)?;
    let signed = attrs.to_der().map_err(der_err("signed attributes"))?;
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        &info.public_key,
    )
    .verify(&signed, signer.signature.as_bytes())
    .map_err(|_| bad("the signature does not verify"))?;
    let gen_time = tst.gen_time.to_unix_duration().as_secs();
    roots.verify_for_eku(&[cert_der], EKU_TIME_STAMPING, gen_time)?;
    Ok(VerifiedStamp {
        gen_time,
        serial_hex: hex::encode(tst.serial_number.as_bytes()),
        tsa: info,
    })
}
