//! Slow signing keys, for benchmarks and tests of batch signing: a key that takes a
//! fixed time per signature, as a network HSM or a smart card does. SoftHSM2 signs
//! in microseconds and cannot show the effect.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use veksel_gateway::signing::MessageSigner;
use veksel_gateway::{Gateway, KeyStore};
use veksel_proto::jws::{JwsError, Signer};

/// A key that takes `delay` for each signature, one signature at a time (a device
/// has a fixed signing rate, however many callers wait), and counts them.
#[derive(Debug)]
pub struct SlowKey {
    key: Arc<dyn Signer>,
    delay: Duration,
    signatures: Arc<AtomicU64>,
    device: Arc<std::sync::Mutex<()>>,
}

impl Signer for SlowKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwsError> {
        let _busy = self
            .device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::thread::sleep(self.delay);
        self.signatures.fetch_add(1, Ordering::Relaxed);
        self.key.sign(message)
    }

    fn cert_chain(&self) -> &[Vec<u8>] {
        self.key.cert_chain()
    }
}

/// Replaces every member signing key of a running gateway by a [`SlowKey`] over the
/// same key, signing in batches if `batch`; returns the count of signatures made. A
/// zero `delay` keeps the key as fast as a key file, signing on the async workers.
pub fn slow_down(
    gw: &Gateway,
    delay: Duration,
    batch: bool,
) -> Result<Arc<AtomicU64>, veksel_gateway::GatewayError> {
    let signatures = Arc::new(AtomicU64::new(0));
    // One device per gateway, shared by its members' keys, as an HSM is.
    let device = Arc::new(std::sync::Mutex::new(()));
    let current = gw.keys.get();
    // The authentication key is not cloneable by design; the new set reads it again.
    let mut keys = KeyStore::load(&gw.dir)?;
    keys.previous_auth = current.previous_auth.clone();
    keys.signers = current
        .signers
        .iter()
        .map(|(member, s)| {
            let slow = SlowKey {
                key: s.key(),
                delay,
                signatures: signatures.clone(),
                device: device.clone(),
            };
            (
                member.clone(),
                Arc::new(MessageSigner::new(Arc::new(slow), batch, !delay.is_zero())),
            )
        })
        .collect();
    gw.keys.set(keys);
    Ok(signatures)
}
