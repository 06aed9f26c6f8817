//! Signing keys in a hardware security module through PKCS#11 (tested with SoftHSM2).
//!
//! Keys are P-256 and generated in the token: the private key is a token object,
//! sensitive and not extractable, so it never exists outside the HSM. veksel hashes
//! (SHA-256) in software and has the token sign the digest with `CKM_ECDSA`, whose
//! output is the raw `r || s` JWS wants. CSRs for HSM keys are made by rcgen with the
//! token doing the signing.

use crate::PkiError;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// DER of the prime256v1 (P-256) curve OID, the `CKA_EC_PARAMS` of every key.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn hsm_err(what: &str) -> impl Fn(cryptoki::error::Error) -> PkiError + '_ {
    move |e| PkiError::Key(format!("HSM, {what}: {e}"))
}

/// A logged-in session with one token.
pub struct Hsm {
    // Keeps the module loaded for as long as the session lives.
    _ctx: Pkcs11,
    session: Mutex<Session>,
    token_label: String,
    pin_sha256: [u8; 32],
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("token_label", &self.token_label)
            .finish_non_exhaustive()
    }
}

impl Hsm {
    /// Loads the PKCS#11 `module`, finds the token labelled `token_label` and logs in
    /// as its user with `pin`.
    ///
    /// PKCS#11 logs a user in per application, not per session: while one session is
    /// logged in, another login fails without checking the PIN. So a process shares
    /// one session per token, and a later caller must present the same PIN (compared
    /// in constant time) to get it.
    pub fn open(module: &Path, token_label: &str, pin: &str) -> Result<Arc<Self>, PkiError> {
        use subtle::ConstantTimeEq;
        type Open = std::collections::HashMap<(std::path::PathBuf, String), std::sync::Weak<Hsm>>;
        static OPEN: std::sync::OnceLock<Mutex<Open>> = std::sync::OnceLock::new();
        let pin_sha256: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pin.as_bytes())
                .as_ref()
                .try_into()
                .map_err(|_| PkiError::Key("SHA-256 is not 32 bytes".into()))?;
        let mut open = OPEN
            .get_or_init(Default::default)
            .lock()
            .map_err(|_| PkiError::Key("HSM session lock poisoned".into()))?;
        let key = (module.to_owned(), token_label.to_owned());
        if let Some(hsm) = open.get(&key).and_then(std::sync::Weak::upgrade) {
            if bool::from(hsm.pin_sha256.ct_eq(&pin_sha256)) {
                return Ok(hsm);
            }
            return Err(PkiError::Key(
                "HSM, logging in: the PIN differs from the one this process logged in with".into(),
            ));
        }
        let ctx = context(module)?;
        let slot = find_token(&ctx, token_label)?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(hsm_err("opening a session"))?;
        session
            .login(UserType::User, Some(&AuthPin::new(pin.into())))
            .map_err(hsm_err("logging in"))?;
        let hsm = Arc::new(Self {
            _ctx: ctx,
            session: Mutex::new(session),
            token_label: token_label.to_owned(),
            pin_sha256,
        });
        open.insert(key, Arc::downgrade(&hsm));
        Ok(hsm)
    }

    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, PkiError>,
    ) -> Result<T, PkiError> {
        let session = self
            .session
            .lock()
            .map_err(|_| PkiError::Key("HSM session lock poisoned".into()))?;
        f(&session)
    }

    /// Generates a P-256 key pair in the token under `label`.
    pub fn generate(self: &Arc<Self>, label: &str) -> Result<HsmKey, PkiError> {
        let id = {
            let mut id = [0u8; 16];
            aws_lc_rs::rand::fill(&mut id).map_err(|_| PkiError::Key("no randomness".into()))?;
            id.to_vec()
        };
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
        ];
        self.with_session(|s| {
            s.generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(hsm_err("generating a key"))
        })?;
        self.key(label)
    }

    /// The key pair labelled `label`.
    pub fn key(self: &Arc<Self>, label: &str) -> Result<HsmKey, PkiError> {
        let (private, point) = self.with_session(|s| {
            let find = |class| {
                s.find_objects(&[
                    Attribute::Class(class),
                    Attribute::KeyType(KeyType::EC),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .map_err(hsm_err("finding a key"))
            };
            let private = match find(ObjectClass::PRIVATE_KEY)?.as_slice() {
                [one] => *one,
                [] => {
                    return Err(PkiError::Key(format!(
                        "HSM: no private key labelled {label:?}"
                    )));
                }
                _ => {
                    return Err(PkiError::Key(format!(
                        "HSM: several keys labelled {label:?}"
                    )));
                }
            };
            let public = find(ObjectClass::PUBLIC_KEY)?
                .into_iter()
                .next()
                .ok_or_else(|| PkiError::Key(format!("HSM: no public key labelled {label:?}")))?;
            let point = s
                .get_attributes(public, &[AttributeType::EcPoint])
                .map_err(hsm_err("reading the public key"))?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                })
                .ok_or_else(|| PkiError::Key("HSM: the public key has no EC point".into()))?;
            Ok((private, point))
        })?;
        Ok(HsmKey {
            hsm: self.clone(),
            private,
            public_point: uncompressed_point(&point)?,
            label: label.to_owned(),
        })
    }

    /// Whether the private key labelled `label` is sensitive and never extractable.
    pub fn key_is_protected(&self, label: &str) -> Result<bool, PkiError> {
        self.with_session(|s| {
            let keys = s
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .map_err(hsm_err("finding a key"))?;
            let key = keys
                .first()
                .ok_or_else(|| PkiError::Key(format!("HSM: no private key labelled {label:?}")))?;
            let attrs = s
                .get_attributes(
                    *key,
                    &[AttributeType::Sensitive, AttributeType::Extractable],
                )
                .map_err(hsm_err("reading key attributes"))?;
            Ok(attrs.contains(&Attribute::Sensitive(true))
                && attrs.contains(&Attribute::Extractable(false)))
        })
    }
}

/// One initialised context per module for the life of the process: PKCS#11 allows one
/// `C_Initialize` per process, and finalising when one user is done would pull the
/// library from under the others.
fn context(module: &Path) -> Result<Pkcs11, PkiError> {
    static CONTEXTS: std::sync::OnceLock<
        Mutex<std::collections::HashMap<std::path::PathBuf, Pkcs11>>,
    > = std::sync::OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| PkiError::Key("HSM context lock poisoned".into()))?;
    if let Some(ctx) = contexts.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        PkiError::Key(format!(
            "HSM, loading the PKCS#11 module {}: {e}",
            module.display()
        ))
    })?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(hsm_err("initialising"))?;
    contexts.insert(module.to_owned(), ctx.clone());
    Ok(ctx)
}

fn find_token(ctx: &Pkcs11, label: &str) -> Result<Slot, PkiError> {
    for slot in ctx
        .get_slots_with_token()
        .map_err(hsm_err("listing slots"))?
    {
        let info = ctx
            .get_token_info(slot)
            .map_err(hsm_err("reading a token"))?;
        if info.label().trim_end() == label {
            return Ok(slot);
        }
    }
    Err(PkiError::Key(format!("HSM: no token labelled {label:?}")))
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point; some modules give the bare
/// point. Either way the result is the 65-byte uncompressed point.
fn uncompressed_point(raw: &[u8]) -> Result<Vec<u8>, PkiError> {
    match raw {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 && rest[0] == 0x04 => Ok(rest.to_vec()),
        [0x04, ..] if raw.len() == 65 => Ok(raw.to_vec()),
        _ => Err(PkiError::Key(
            "HSM: the public key is not an uncompressed P-256 point".into(),
        )),
    }
}

/// A P-256 key pair in the token.
#[derive(Clone)]
pub struct HsmKey {
    hsm: Arc<Hsm>,
    private: ObjectHandle,
    public_point: Vec<u8>,
    label: String,
}

impl std::fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmKey")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl HsmKey {
    /// The uncompressed public key point.
    pub fn public_key(&self) -> &[u8] {
        &self.public_point
    }

    /// The key's label in the token.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// ECDSA P-256 over SHA-256 of `message`: raw `r || s`, 64 bytes.
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let sig = self.hsm.with_session(|s| {
            s.sign(&Mechanism::Ecdsa, self.private, digest.as_ref())
                .map_err(hsm_err("signing"))
        })?;
        if sig.len() != 64 {
            return Err(PkiError::Key(format!(
                "HSM: an ECDSA P-256 signature of {} bytes",
                sig.len()
            )));
        }
        Ok(sig)
    }

    /// A PKCS#10 request for this key, signed in the token.
    pub fn csr(&self, common_name: &str) -> Result<String, PkiError> {
        crate::ca::make_csr_with(self, common_name)
    }

    /// A JWS signer with this key and its certificate chain.
    pub fn signer(self, chain: Vec<Vec<u8>>) -> HsmSigner {
        HsmSigner { key: self, chain }
    }
}

impl rcgen::PublicKeyData for HsmKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_point
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for HsmKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        // X.509 wants ECDSA signatures as DER SEQUENCE { r, s }.
        let raw = self
            .sign_raw(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(crate::ecdsa_raw_to_der(&raw))
    }
}

/// A JWS signer whose key is in the HSM.
#[derive(Debug, Clone)]
pub struct HsmSigner {
    key: HsmKey,
    chain: Vec<Vec<u8>>,
}

impl HsmSigner {
    /// The uncompressed public key point.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key()
    }
}

impl veksel_proto::jws::Signer for HsmSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, veksel_proto::jws::JwsError> {
        self.key
            .sign_raw(message)
            .map_err(|e| veksel_proto::jws::JwsError::Signer(e.to_string()))
    }
    fn cert_chain(&self) -> &[Vec<u8>] {
        &self.chain
    }
}

/// SoftHSM2 tokens for tests and trials: SoftHSM reads its configuration only from
/// the `SOFTHSM2_CONF` environment variable, which a running multi-threaded process
/// cannot safely change, so a test makes a token here and runs itself again as a
/// child process with the variable set.
pub mod softhsm {
    use crate::PkiError;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// The environment variable that tells a re-run test it is the child, naming the
    /// scratch directory.
    pub const CHILD_ENV: &str = "VEKSEL_SOFTHSM_CHILD";

    /// SoftHSM2's PKCS#11 module: `VEKSEL_PKCS11_MODULE`, or Debian's path.
    pub fn module_path() -> PathBuf {
        std::env::var("VEKSEL_PKCS11_MODULE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
    }

    /// Initialises a token `label` with a fresh token directory under `dir` and
    /// returns the configuration file to put in `SOFTHSM2_CONF`.
    pub fn init_token(
        dir: &Path,
        label: &str,
        so_pin: &str,
        pin: &str,
    ) -> Result<PathBuf, PkiError> {
        let module = module_path();
        if !module.exists() {
            return Err(PkiError::Key(format!(
                "{} is missing: install SoftHSM2 (apt-get install softhsm2) or set VEKSEL_PKCS11_MODULE",
                module.display()
            )));
        }
        let io =
            |e: std::io::Error| PkiError::Key(format!("SoftHSM token in {}: {e}", dir.display()));
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(io)?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .map_err(io)?;
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", so_pin, "--pin", pin])
            .output()
            .map_err(|e| {
                PkiError::Key(format!(
                    "running softhsm2-util (apt-get install softhsm2): {e}"
                ))
            })?;
        if !out.status.success() {
            return Err(PkiError::Key(format!(
                "softhsm2-util --init-token: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(conf)
    }

    /// Runs the test `test_name` of the current test binary again, alone, with
    /// `SOFTHSM2_CONF` set to `conf` and [`CHILD_ENV`] to `dir`; returns its output,
    /// or the output as the error if it did not pass.
    pub fn rerun_test(conf: &Path, dir: &Path, test_name: &str) -> Result<String, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = Command::new(exe)
            .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
            .env("SOFTHSM2_CONF", conf)
            .env(CHILD_ENV, dir)
            .env("VEKSEL_PKCS11_MODULE", module_path())
            .output()
            .map_err(|e| e.to_string())?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && text.contains("1 passed") {
            Ok(text)
        } else {
            Err(text)
        }
    }
}
