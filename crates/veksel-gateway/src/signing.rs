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
pub type MemberSigner = Arc<MessageSigner>;

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
) -> Result<Arc<dyn Signer>, GatewayError> {
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

/// Most messages one batch signature covers.
pub const MAX_BATCH: usize = 256;

/// Signs message descriptors for one member: one by one, or — with batching on —
/// whatever arrived while the previous signature was being made under one batch
/// signature ([`veksel_proto::batch`]). Batching adds no timed wait: a message that
/// finds the key idle is signed at once, alone; while the key is busy messages queue,
/// and the next signature covers them all. Under load (another message within
/// [`BUSY_GAP`]) a message that finds the key idle waits one round of the scheduler,
/// so that the exchanges ready to run reach the key too and share its signature: a
/// fast key is busy for too short a time to gather a batch by itself, and one
/// signature plus one verification per message was a sixth of the gateway's CPU.
#[derive(Debug)]
pub struct MessageSigner {
    key: Arc<dyn Signer>,
    batch: Option<Arc<Batcher>>,
    blocking: bool,
    /// The key's chain as messages carry it ([`veksel_proto::peer::VEKSEL_SIGNING_CHAIN`]).
    chain_header: String,
}

#[derive(Debug, Default)]
struct Batcher {
    state: std::sync::Mutex<BatchState>,
}

/// Messages closer together than this mean the gateway is under load.
const BUSY_GAP: std::time::Duration = std::time::Duration::from_micros(500);

#[derive(Debug, Default)]
struct BatchState {
    queue: Vec<Waiting>,
    signing: bool,
    /// When the last message arrived.
    last_arrival: Option<std::time::Instant>,
}

type Signed = Result<String, veksel_proto::jws::JwsError>;

#[derive(Debug)]
struct Waiting {
    cty: &'static str,
    descriptor: Vec<u8>,
    reply: tokio::sync::oneshot::Sender<Signed>,
}

impl MessageSigner {
    /// Signs with `key`, in batches if `batch`. A `blocking` key (an HSM: each
    /// signature is a call that waits for the device) signs on a blocking thread, so
    /// the async workers go on serving.
    pub fn new(key: Arc<dyn Signer>, batch: bool, blocking: bool) -> Self {
        let chain_header = veksel_proto::peer::encode_chain(key.cert_chain());
        Self {
            key,
            batch: batch.then(Default::default),
            blocking,
            chain_header,
        }
    }

    /// The key's chain as messages carry it.
    pub fn chain_header(&self) -> &str {
        &self.chain_header
    }

    /// The key.
    pub fn key(&self) -> Arc<dyn Signer> {
        self.key.clone()
    }

    /// The signing certificate chain, leaf first.
    pub fn cert_chain(&self) -> &[Vec<u8>] {
        self.key.cert_chain()
    }

    /// Signs a descriptor: a detached JWS, or a batch signature with this message's
    /// proof.
    pub async fn sign_message(&self, cty: &'static str, descriptor: Vec<u8>) -> Signed {
        let Some(batcher) = &self.batch else {
            if !self.blocking {
                return veksel_proto::jws::sign_detached(
                    self.key.as_ref(),
                    cty,
                    false,
                    &descriptor,
                );
            }
            let key = self.key.clone();
            return tokio::task::spawn_blocking(move || {
                veksel_proto::jws::sign_detached(key.as_ref(), cty, false, &descriptor)
            })
            .await
            .map_err(|e| veksel_proto::jws::JwsError::Signer(e.to_string()))?;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        // The key is busy: the next signature covers this message too. Otherwise this
        // task takes the key (the guard is gone before anything is awaited).
        let (descriptor, gather) = {
            let mut state = batcher
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            let under_load = state
                .last_arrival
                .is_some_and(|last| now.duration_since(last) < BUSY_GAP);
            state.last_arrival = Some(now);
            if state.signing || under_load {
                state.queue.push(Waiting {
                    cty,
                    descriptor,
                    reply,
                });
                // Idle but under load: a batch task gathers for one round.
                let gather = !state.signing;
                state.signing = true;
                (None, gather)
            } else {
                state.signing = true;
                (Some(descriptor), false)
            }
        };
        let Some(descriptor) = descriptor else {
            if gather {
                tokio::spawn(run_batches(
                    batcher.clone(),
                    self.key.clone(),
                    self.blocking,
                    true,
                ));
            }
            return answer.await.map_err(|_| {
                veksel_proto::jws::JwsError::Signer("the batch signer stopped".into())
            })?;
        };
        // The key was idle: this message is signed at once, alone, on this task (a
        // blocking key on a blocking thread); no hand-off, no wait.
        let signed = if self.blocking {
            let key = self.key.clone();
            tokio::task::spawn_blocking(move || {
                veksel_proto::jws::sign_detached(key.as_ref(), cty, false, &descriptor)
            })
            .await
            .map_err(|e| veksel_proto::jws::JwsError::Signer(e.to_string()))?
        } else {
            veksel_proto::jws::sign_detached(self.key.as_ref(), cty, false, &descriptor)
        };
        // Whatever queued meanwhile is signed in batches by a task of its own.
        let more = {
            let mut state = batcher
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.queue.is_empty() {
                state.signing = false;
            }
            state.signing
        };
        if more {
            tokio::spawn(run_batches(
                batcher.clone(),
                self.key.clone(),
                self.blocking,
                false,
            ));
        }
        signed
    }
}

/// Signs what is queued, batch after batch, until the queue is empty; first, when
/// `gather`, lets the tasks ready to run queue their messages too.
async fn run_batches(batcher: Arc<Batcher>, key: Arc<dyn Signer>, blocking: bool, gather: bool) {
    if gather {
        tokio::task::yield_now().await;
    }
    loop {
        let batch: Vec<Waiting> = {
            let mut state = batcher
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.queue.is_empty() {
                state.signing = false;
                return;
            }
            let n = state.queue.len().min(MAX_BATCH);
            state.queue.drain(..n).collect()
        };
        let sign = |key: &dyn Signer, batch: &[Waiting]| {
            let items: Vec<(&str, &[u8])> = batch
                .iter()
                .map(|w| (w.cty, w.descriptor.as_slice()))
                .collect();
            veksel_proto::batch::sign_batch(key, &items)
        };
        let (batch, signed) = if blocking {
            // An HSM call blocks: it signs off the async workers.
            let key = key.clone();
            match tokio::task::spawn_blocking(move || {
                let signed = sign(key.as_ref(), &batch);
                (batch, signed)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "batch signing task failed");
                    continue;
                }
            }
        } else {
            let signed = sign(key.as_ref(), &batch);
            (batch, signed)
        };
        match signed {
            Ok(signatures) => {
                for (w, s) in batch.into_iter().zip(signatures) {
                    let _ = w.reply.send(Ok(s));
                }
            }
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl Signer for MessageSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, veksel_proto::jws::JwsError> {
        self.key.sign(message)
    }

    fn cert_chain(&self) -> &[Vec<u8>] {
        self.key.cert_chain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use veksel_proto::batch::MessageSignature;
    use veksel_proto::jws::{SoftwareSigner, generate_p256_pkcs8};

    /// A file key that counts its signatures.
    #[derive(Debug)]
    struct Counting(SoftwareSigner, AtomicUsize);

    impl Signer for Counting {
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, veksel_proto::jws::JwsError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.sign(message)
        }
        fn cert_chain(&self) -> &[Vec<u8>] {
            self.0.cert_chain()
        }
    }

    // One thread: a fast key is never busy when the next message comes, so only the
    // gathering under load makes batches.
    #[tokio::test]
    async fn under_load_a_fast_key_signs_in_batches_and_alone_when_idle() {
        let soft = SoftwareSigner::from_pkcs8(&generate_p256_pkcs8().unwrap(), vec![]).unwrap();
        let public = soft.public_key();
        let key = Arc::new(Counting(soft, AtomicUsize::new(0)));
        let signer = Arc::new(MessageSigner::new(key.clone(), true, false));

        // Idle: each message alone, an ordinary detached JWS.
        for i in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let descriptor = format!("{{\"n\":{i}}}").into_bytes();
            let s = signer
                .sign_message("veksel-request+json", descriptor.clone())
                .await
                .unwrap();
            let parsed = MessageSignature::parse(&s, &descriptor).unwrap();
            assert!(matches!(parsed, MessageSignature::Single(_)), "{s}");
            parsed.verify(&public).unwrap();
        }
        assert_eq!(key.1.load(Ordering::SeqCst), 3);

        // 64 at once: they share signatures, and each verifies as its own.
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let signer = signer.clone();
                tokio::spawn(async move {
                    let descriptor = format!("{{\"m\":{i}}}").into_bytes();
                    let s = signer
                        .sign_message("veksel-request+json", descriptor.clone())
                        .await;
                    (descriptor, s)
                })
            })
            .collect();
        for t in tasks {
            let (descriptor, s) = t.await.unwrap();
            let s = s.unwrap();
            MessageSignature::parse(&s, &descriptor)
                .unwrap()
                .verify(&public)
                .unwrap();
            assert!(
                MessageSignature::parse(&s, b"{\"m\":-1}")
                    .unwrap()
                    .verify(&public)
                    .is_err()
            );
        }
        let signatures = key.1.load(Ordering::SeqCst) - 3;
        assert!(signatures < 32, "{signatures} signatures for 64 messages");
    }
}
