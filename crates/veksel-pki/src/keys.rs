//! Private keys on disk: PKCS#8 PEM files written with mode 0600, never logged.

use crate::{PkiError, pem_block};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use std::io::Write;
use std::path::Path;
use veksel_proto::jws::{JwsError, SoftwareSigner, generate_p256_pkcs8};

/// A P-256 private key held in memory as PKCS#8 DER.
pub struct KeyFile {
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFile(<private>)")
    }
}

impl KeyFile {
    /// Generates a new P-256 key.
    pub fn generate() -> Result<Self, PkiError> {
        let pkcs8 = generate_p256_pkcs8().map_err(|e| PkiError::Issue(e.to_string()))?;
        Ok(Self { pkcs8 })
    }

    /// Loads a key from PKCS#8 PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| PkiError::parse("private key PEM", format!("{e:?}")))?;
        let key = Self {
            pkcs8: der.secret_pkcs8_der().to_vec(),
        };
        // Fail at load time, not at first signature, if the key is not P-256.
        key.rcgen()?;
        Ok(key)
    }

    /// Loads a key file, refusing one that others can read.
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        Self::from_pem(&read_private(path)?)
    }

    /// Writes the key as PKCS#8 PEM with mode 0600, atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), PkiError> {
        write_private(path, &self.to_pem())
    }

    /// PKCS#8 PEM text.
    pub fn to_pem(&self) -> String {
        pem_block("PRIVATE KEY", &self.pkcs8)
    }

    /// PKCS#8 DER.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key as rcgen needs it for CSRs and certificates.
    pub fn rcgen(&self) -> Result<rcgen::KeyPair, PkiError> {
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(self.pkcs8.clone()),
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )
        .map_err(|e| PkiError::parse("private key", e))
    }

    /// An ES256 signer over this key with its certificate chain.
    pub fn signer(&self, chain: Vec<Vec<u8>>) -> Result<SoftwareSigner, JwsError> {
        SoftwareSigner::from_pkcs8(&self.pkcs8, chain)
    }

    /// The key in the form rustls takes.
    pub fn rustls_key(&self) -> rustls_pki_types::PrivateKeyDer<'static> {
        rustls_pki_types::PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a private key file, refusing one that group or others can read.
fn read_private(path: &Path) -> Result<String, PkiError> {
    let io = io_error(path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(&io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(PkiError::WrongCertificate(format!(
                "{} is readable by group or others (mode {:o}); it must be 0600",
                path.display(),
                mode & 0o777
            )));
        }
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Reads a secret written by [`write_secret_text`], refusing one that group or
/// others can read.
pub fn read_secret_text(path: &Path) -> Result<String, PkiError> {
    read_private(path)
}

/// A 32-byte secret (a salt, an HMAC key) kept hex-encoded at `path` with mode
/// 0600: read if it exists, made from fresh randomness if not.
pub fn load_or_create_salt(path: &Path) -> Result<Vec<u8>, PkiError> {
    if path.exists() {
        let text = read_secret_text(path)?;
        return hex::decode(text.trim())
            .map_err(|e| PkiError::Key(format!("{}: {e}", path.display())));
    }
    let mut salt = [0u8; 32];
    aws_lc_rs::rand::fill(&mut salt)
        .map_err(|_| PkiError::Key("no randomness for a salt".into()))?;
    write_secret_text(path, &hex::encode(salt))?;
    Ok(salt.to_vec())
}

/// Writes a secret (a key, a salt) with mode 0600, atomically.
pub fn write_secret_text(path: &Path, text: &str) -> Result<(), PkiError> {
    write_private(path, text)
}

/// Writes a private key file with mode 0600, atomically (temp file + rename).
fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    let io = io_error(path);
    let tmp = path.with_extension("key.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(&io)?;
    f.write_all(text.as_bytes()).map_err(&io)?;
    f.sync_all().map_err(&io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// The Ed25519 key (PKCS#8 DER) of a signed-note signer or a witness, from its 0600
/// PEM file, made there first if the file does not exist.
pub fn load_or_create_ed25519(path: &Path) -> Result<Vec<u8>, PkiError> {
    if !path.exists() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|e| PkiError::Issue(e.to_string()))?;
        write_private(path, &pem_block("PRIVATE KEY", der.as_ref()))?;
    }
    let der = PrivatePkcs8KeyDer::from_pem_slice(read_private(path)?.as_bytes())
        .map_err(|e| PkiError::parse("private key PEM", format!("{e:?}")))?;
    let der = der.secret_pkcs8_der().to_vec();
    aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|e| PkiError::parse("Ed25519 key", e.to_string()))?;
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_with_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let key = KeyFile::generate().unwrap();
        key.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = KeyFile::load(&path).unwrap();
        assert_eq!(back.pkcs8_der(), key.pkcs8_der());
        assert!(!format!("{back:?}").contains("PRIVATE"));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_world_readable_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        KeyFile::generate().unwrap().save(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            KeyFile::load(&path),
            Err(PkiError::WrongCertificate(_))
        ));
    }

    #[test]
    fn refuses_garbage() {
        assert!(KeyFile::from_pem("not a key").is_err());
    }
}
