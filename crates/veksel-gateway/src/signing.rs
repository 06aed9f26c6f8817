//! Members' signing keys: in key files (0600) by default, or in a hardware security
//! module through PKCS#11 when `gateway.json` has an `hsm` section. A key in the HSM is
//! referenced from `signing/{member}.hsm` (its label in the token); the certificate is
//! `signing/{member}.pem` either way.

use crate::{GatewayConfig, GatewayError, io_err};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use veksel_id::MemberId;
use veksel_pki::KeyFile;
use veksel_pki::hsm::{Hsm, HsmKey};
use veksel_proto::jws::Signer;

/// A member's signer, whichever kind of key it has.
pub type MemberSigner = Arc<dyn Signer>;

/// Where the HSM is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Label of the token that holds the keys.
    pub token_label: String,
    /// File with the user PIN (keep it 0600); never logged.
    pub pin_file: PathBuf,
}

/// The reference file of a key in the HSM.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HsmRef {
    /// The key's label in the token.
    label: String,
}

/// Logs in to the configured HSM.
pub fn open_hsm(config: &HsmConfig) -> Result<Arc<Hsm>, GatewayError> {
    let pin = std::fs::read_to_string(&config.pin_file).map_err(|e| io_err(&config.pin_file, e))?;
    Ok(Hsm::open(&config.module, &config.token_label, pin.trim())?)
}

/// A new signing key waiting for its certificate.
#[derive(Debug)]
pub enum NewKey {
    /// In a key file.
    File(KeyFile),
    /// In the HSM.
    Hsm(HsmKey),
}

impl NewKey {
    /// Generates a key for `member` where the configuration keeps signing keys.
    pub fn generate(config: &GatewayConfig, member: &MemberId) -> Result<Self, GatewayError> {
        match &config.hsm {
            None => Ok(Self::File(KeyFile::generate()?)),
            Some(h) => {
                let label = format!(
                    "veksel {} signing {member} {}",
                    config.id,
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                );
                Ok(Self::Hsm(open_hsm(h)?.generate(&label)?))
            }
        }
    }

    /// A PKCS#10 request for the key.
    pub fn csr(&self, common_name: &str) -> Result<String, GatewayError> {
        Ok(match self {
            Self::File(k) => veksel_pki::ca::make_csr(k, common_name)?,
            Self::Hsm(k) => k.csr(common_name)?,
        })
    }

    /// The uncompressed public key point.
    pub fn public_key(&self) -> Result<Vec<u8>, GatewayError> {
        match self {
            Self::File(k) => Ok(k
                .signer(Vec::new())
                .map_err(|e| GatewayError::Config(e.to_string()))?
                .public_key()),
            Self::Hsm(k) => Ok(k.public_key().to_vec()),
        }
    }

    /// Stores the key (or its HSM reference) as `{stem}.key` / `{stem}.hsm` in `dir`.
    pub fn save(&self, dir: &Path, stem: &str) -> Result<(), GatewayError> {
        match self {
            Self::File(k) => Ok(k.save(&dir.join(format!("{stem}.key")))?),
            Self::Hsm(k) => {
                let path = dir.join(format!("{stem}.hsm"));
                let text = serde_json::to_string(&HsmRef {
                    label: k.label().to_owned(),
                })
                .map_err(|e| io_err(&path, e))?;
                std::fs::write(&path, text).map_err(|e| io_err(&path, e))
            }
        }
    }
}

/// Loads the signer whose certificate chain is at `pem_path`: from `{stem}.key`, or
/// from the HSM key `{stem}.hsm` names.
pub fn load_signer(
    pem_path: &Path,
    chain: Vec<Vec<u8>>,
    hsm: Option<&HsmConfig>,
) -> Result<MemberSigner, GatewayError> {
    let key_path = pem_path.with_extension("key");
    if key_path.exists() {
        let key = KeyFile::load(&key_path)?;
        return Ok(Arc::new(
            key.signer(chain).map_err(|e| io_err(pem_path, e))?,
        ));
    }
    let ref_path = pem_path.with_extension("hsm");
    let text = std::fs::read_to_string(&ref_path).map_err(|e| {
        io_err(
            pem_path,
            format!("no key file and no HSM reference beside it: {e}"),
        )
    })?;
    let reference: HsmRef = serde_json::from_str(&text).map_err(|e| io_err(&ref_path, e))?;
    let hsm_config = hsm.ok_or_else(|| {
        io_err(
            &ref_path,
            "the key is in an HSM, but gateway.json has no hsm section",
        )
    })?;
    let key = open_hsm(hsm_config)?.key(&reference.label)?;
    let signer = key.signer(chain);
    let leaf_key = signer
        .cert_chain()
        .first()
        .and_then(|c| veksel_pki::CertInfo::parse(c).ok())
        .map(|i| i.public_key);
    if leaf_key.as_deref() != Some(signer.public_key()) {
        return Err(io_err(
            pem_path,
            "the certificate is not for the HSM key its reference names",
        ));
    }
    Ok(Arc::new(signer))
}
