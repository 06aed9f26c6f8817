//! Batch time-stamping of the message log (RFC 3161).
//!
//! Every stamp interval, if the log has grown, the stamper takes the log head and
//! asks the approved time-stamping authorities, in order, for a token over the
//! SHA-256 of a checkpoint of it (c2sp.org/tlog-checkpoint text: origin, size, root),
//! so one token covers every record up to that size and binds the size too. It runs
//! beside the exchanges and never blocks them. When no TSA has answered for longer than
//! the configured limit, the gateway either keeps serving and says so in `/readyz`, or
//! refuses exchanges with `TimestampingFailed` — as configured.

use crate::Gateway;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use veksel_id::{Fault, FaultCode, Origin};
use veksel_store::sqlx;

/// What the gateway does when time-stamping keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StampFailureMode {
    /// Refuse exchanges until a TSA answers again (X-Road's behaviour).
    #[default]
    FailClosed,
    /// Keep exchanging; `/readyz` and the metrics report the problem.
    KeepServing,
}

pub use veksel_verify::log::{origin, stamped_hash};

#[derive(Debug, Default, Clone)]
struct State {
    last_success_ms: Option<i64>,
    failing_since_ms: Option<i64>,
    last_error: Option<String>,
    stamped_size: u64,
}

/// The stamper's state, shared with the request handlers.
#[derive(Debug, Default)]
pub struct Stamper {
    state: Mutex<State>,
}

/// A snapshot for `/readyz`, metrics and the admin API.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StampStatus {
    /// When a TSA last answered, Unix ms.
    pub last_success_ms: Option<i64>,
    /// Since when every attempt has failed, Unix ms.
    pub failing_since_ms: Option<i64>,
    /// The last error.
    pub last_error: Option<String>,
    /// Records covered by the newest stamp.
    pub stamped_size: u64,
}

impl Stamper {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The current status.
    pub fn status(&self) -> StampStatus {
        self.with(|s| StampStatus {
            last_success_ms: s.last_success_ms,
            failing_since_ms: s.failing_since_ms,
            last_error: s.last_error.clone(),
            stamped_size: s.stamped_size,
        })
    }

    /// How long stamping has been failing at `now_ms`, if it is.
    pub fn failing_for_ms(&self, now_ms: i64) -> Option<i64> {
        self.with(|s| s.failing_since_ms.map(|since| now_ms - since))
    }

    /// Refuses exchanges when stamping has failed longer than allowed and the gateway
    /// fails closed.
    pub fn check(&self, gw: &Gateway, origin_side: Origin) -> Result<(), Fault> {
        let limit_ms = i64::try_from(gw.config.stamp_failure_limit_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        match self.failing_for_ms(gw.clock.now_ms()) {
            Some(ms)
                if ms > limit_ms
                    && gw.config.stamp_failure_mode == StampFailureMode::FailClosed =>
            {
                Err(Fault {
                    origin: origin_side,
                    code: FaultCode::TimestampingFailed,
                    message: format!(
                        "no time-stamping authority has answered for {} s (limit {} s): {}",
                        ms / 1000,
                        gw.config.stamp_failure_limit_secs,
                        self.with(|s| s.last_error.clone()).unwrap_or_default()
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Stamps the current log head once, if it grew. Returns the size stamped, if any.
pub async fn stamp_once(gw: &Gateway) -> Result<Option<u64>, String> {
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT size, root FROM log_head WHERE id = 1")
            .fetch_optional(gw.db.pool())
            .await
            .map_err(|e| format!("reading the log head: {e}"))?;
    let Some((size, root)) = head else {
        return Ok(None);
    };
    let last: Option<(i64,)> =
        sqlx::query_as("SELECT size FROM log_stamps ORDER BY size DESC LIMIT 1")
            .fetch_optional(gw.db.pool())
            .await
            .map_err(|e| format!("reading the stamps: {e}"))?;
    if size == 0 || last.is_some_and(|(s,)| s >= size) {
        gw.stamper
            .with(|s| s.stamped_size = u64::try_from(last.map_or(0, |l| l.0)).unwrap_or_default());
        return Ok(None);
    }
    let root: [u8; 32] = root
        .try_into()
        .map_err(|_| "the log head root is not 32 bytes".to_owned())?;
    let size_u = u64::try_from(size).unwrap_or_default();
    let hash = stamped_hash(&origin(gw.id()), size_u, &root);
    let conf = gw
        .conf
        .current(Origin::ClientProxy)
        .map_err(|f| f.message)?;
    if conf.conf().approved_tsas.is_empty() {
        return Err("the global configuration approves no time-stamping authority".into());
    }
    let mut errors = Vec::new();
    for tsa in &conf.conf().approved_tsas {
        match request_token(gw, &conf, tsa, &hash).await {
            Ok((token, gen_time)) => {
                sqlx::query(
                    "INSERT INTO log_stamps (size, root, token, tsa, gen_time, stamped_at) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (size) DO NOTHING",
                )
                .bind(size)
                .bind(root.to_vec())
                .bind(token)
                .bind(&tsa.name)
                .bind(i64::try_from(gen_time).unwrap_or_default())
                .bind(gw.clock.now_ms())
                .execute(gw.db.pool())
                .await
                .map_err(|e| format!("storing the stamp: {e}"))?;
                return Ok(Some(size_u));
            }
            Err(e) => errors.push(format!("{}: {e}", tsa.name)),
        }
    }
    Err(errors.join("; "))
}

async fn request_token(
    gw: &Gateway,
    conf: &crate::confclient::ConfState,
    tsa: &veksel_proto::conf::ApprovedTsa,
    hash: &[u8],
) -> Result<(Vec<u8>, u64), String> {
    let mut nonce = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut nonce);
    let req = veksel_pki::tsa::request(hash, Some(u64::from_be_bytes(nonce)), true)
        .map_err(|e| e.to_string())?;
    let body = gw
        .conf
        .post_der(&tsa.url, "application/timestamp-query", req, 64 * 1024)
        .await?;
    let token = veksel_pki::tsa::token_from_response(&body).map_err(|e| e.to_string())?;
    let tsa_certs = veksel_pki::certs_from_pem(&tsa.cert_pem).map_err(|e| e.to_string())?;
    let stamp = veksel_pki::tsa::verify_token(&token, hash, &conf.roots, &tsa_certs)
        .map_err(|e| e.to_string())?;
    // The token must come from the TSA the configuration names, not merely any TSA.
    if !tsa_certs
        .iter()
        .any(|c| veksel_pki::sha256_hex(c) == stamp.tsa.sha256)
    {
        return Err("the token is signed by a certificate other than the approved one".into());
    }
    Ok((token, stamp.gen_time))
}

/// Stamps forever at the configured interval.
pub async fn stamp_loop(gw: std::sync::Arc<Gateway>) {
    let interval = Duration::from_secs(gw.config.stamp_interval_secs.max(1));
    loop {
        tokio::time::sleep(interval).await;
        stamp_and_record(&gw).await;
    }
}

/// One stamping round with its outcome recorded in the stamper's state.
pub async fn stamp_and_record(gw: &Gateway) {
    let now = gw.clock.now_ms();
    match stamp_once(gw).await {
        Ok(size) => gw.stamper.with(|s| {
            s.last_success_ms = Some(now);
            s.failing_since_ms = None;
            s.last_error = None;
            if let Some(size) = size {
                s.stamped_size = size;
            }
        }),
        Err(e) => {
            tracing::warn!(error = %e, "time-stamping the message log failed");
            gw.stamper.with(|s| {
                s.failing_since_ms.get_or_insert(now);
                s.last_error = Some(e);
            });
        }
    }
}
