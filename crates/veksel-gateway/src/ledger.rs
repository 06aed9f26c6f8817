//! The gateway's part in the network ledger: it witnesses the ledger and anchors its
//! own message log in it.
//!
//! As a witness (c2sp.org/tlog-witness semantics) it keeps the last ledger
//! checkpoint it cosigned, cosigns a new one only after a consistency proof from
//! that one verifies, and persists the new state before it cosigns. Two checkpoints
//! signed by the ledger that cannot both be true are kept as the proof of the
//! ledger's misbehaviour and raise an alarm: the `veksel_gateway_ledger_alarms`
//! metric, a `/readyz` problem and an error in the log.
//!
//! As an anchor, each new time-stamped head of its message log (size and root) is
//! submitted as a ledger entry signed with its authentication key.

use crate::Gateway;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::sync::Arc;
use std::time::Duration;
use veksel_merkle::checkpoint::{NoteVerifier, open_note};
use veksel_merkle::witness::{
    AddCheckpoint, Cosigner, WitnessError, WitnessPolicy, WitnessState, check_add_checkpoint,
};
use veksel_proto::ledger::{ENTRY_CTY, LedgerEntry};
use veksel_store::sqlx;

/// Database tables of the gateway's ledger roles.
pub const MIGRATION: &str = r#"
CREATE TABLE ledger_witness (
    origin TEXT PRIMARY KEY, vkey TEXT NOT NULL, size BIGINT NOT NULL,
    root {{BLOB}} NOT NULL, note TEXT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE ledger_alarms (
    id {{SERIAL_PK}}, at BIGINT NOT NULL, origin TEXT NOT NULL, why TEXT NOT NULL,
    previous TEXT NOT NULL, conflicting TEXT NOT NULL);
CREATE TABLE ledger_anchors (
    size BIGINT PRIMARY KEY, entry_sha256 TEXT NOT NULL, submitted_at BIGINT NOT NULL)
"#;

/// Local governance events waiting for (or done with) submission to the ledger.
pub const OUTBOX_MIGRATION: &str = r#"
CREATE TABLE ledger_outbox (
    id {{SERIAL_PK}}, at BIGINT NOT NULL, event TEXT NOT NULL, subject TEXT NOT NULL,
    document TEXT NOT NULL, salt TEXT NOT NULL, submitted_at BIGINT, entry_sha256 TEXT);
CREATE INDEX ledger_outbox_waiting ON ledger_outbox (submitted_at, id)
"#;

/// A change to this gateway's access configuration, on its way to the ledger.
///
/// The details (who did it, the new settings) stay here with a fresh salt; the
/// ledger gets a salted commitment to them. It is stored in the same transaction as
/// the change itself (a transactional outbox), so no crash can keep the one without
/// the other; the ledger loop submits it and retries until the authority takes it.
#[derive(Debug, Clone)]
pub struct ConfigChange {
    at_ms: i64,
    event: &'static str,
    subject: String,
    document: String,
    salt: String,
}

impl ConfigChange {
    /// `event` like `access.set`; `subject` the client or service it concerns;
    /// `change` the new settings (null for a removal).
    pub fn new(
        at_ms: i64,
        event: &'static str,
        subject: impl Into<String>,
        actor: &str,
        change: serde_json::Value,
    ) -> Self {
        Self {
            at_ms,
            event,
            subject: subject.into(),
            document: serde_json::json!({ "actor": actor, "change": change }).to_string(),
            salt: STANDARD.encode(veksel_proto::ledger::new_salt()),
        }
    }

    /// Queues the change inside the transaction that makes it.
    pub(crate) async fn store(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<(), veksel_store::StoreError> {
        sqlx::query(
            "INSERT INTO ledger_outbox (at, event, subject, document, salt) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(self.at_ms)
        .bind(self.event)
        .bind(&self.subject)
        .bind(&self.document)
        .bind(&self.salt)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Checks an entry about this gateway, signs it with the authentication key and
/// submits it to the ledger. Returns the authority's answer (it names the entry's
/// SHA-256) once the entry is queued.
pub async fn submit_entry(gw: &Gateway, entry: &LedgerEntry) -> Result<serde_json::Value, String> {
    entry.validate()?;
    let payload = serde_json::to_value(entry).map_err(|e| e.to_string())?;
    let keys = gw.keys.get();
    let (status, answer) =
        crate::management::post_signed(gw, &keys, "/ledger/v1/entries", ENTRY_CTY, &payload)
            .await?;
    if status != reqwest::StatusCode::ACCEPTED {
        return Err(format!(
            "the ledger refused the {} entry: HTTP {status}: {answer}",
            entry.kind()
        ));
    }
    Ok(answer)
}

/// Submits waiting local events, oldest first. Returns how many went.
pub async fn submit_events(gw: &Gateway) -> Result<usize, String> {
    let waiting: Vec<(i64, i64, String, String, String, String)> = sqlx::query_as(
        "SELECT id, at, event, subject, document, salt FROM ledger_outbox
         WHERE submitted_at IS NULL ORDER BY id LIMIT 100",
    )
    .fetch_all(gw.db.pool())
    .await
    .map_err(|e| e.to_string())?;
    let mut sent = 0;
    for (id, at, event, subject, document, salt) in waiting {
        let salt: [u8; 32] = STANDARD
            .decode(&salt)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or("a stored salt is not 32 bytes")?;
        let entry = LedgerEntry::GatewayEvent {
            at,
            gateway: gw.id().to_string(),
            event,
            subject,
            commitment: veksel_proto::ledger::commitment(&salt, document.as_bytes()),
        };
        let answer = submit_entry(gw, &entry).await?;
        sqlx::query("UPDATE ledger_outbox SET submitted_at = $1, entry_sha256 = $2 WHERE id = $3")
            .bind(gw.clock.now_ms())
            .bind(answer["entry_sha256"].as_str().unwrap_or_default())
            .bind(id)
            .execute(gw.db.pool())
            .await
            .map_err(|e| e.to_string())?;
        sent += 1;
    }
    Ok(sent)
}

/// The witness key's file in the data directory.
pub const WITNESS_KEY: &str = "witness.key";

/// A gateway's witness name: its identifier.
pub fn witness_name(gateway: &veksel_id::GatewayId) -> String {
    gateway.to_string()
}

/// Loads (or makes) the gateway's cosigning key.
pub fn load_cosigner(
    dir: &std::path::Path,
    gateway: &veksel_id::GatewayId,
) -> Result<Cosigner, String> {
    let pkcs8 = veksel_pki::keys::load_or_create_ed25519(&dir.join(WITNESS_KEY))
        .map_err(|e| e.to_string())?;
    Cosigner::from_pkcs8(&witness_name(gateway), &pkcs8).map_err(|e| e.to_string())
}

/// A recorded alarm: the ledger showed two histories.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Alarm {
    /// When it was raised, Unix ms.
    pub at: i64,
    /// The ledger's origin.
    pub origin: String,
    /// What does not match.
    pub why: String,
    /// The checkpoint this gateway had cosigned.
    pub previous: String,
    /// The conflicting checkpoint signed by the ledger.
    pub conflicting: String,
}

/// The alarms raised so far, newest first.
pub async fn alarms(gw: &Gateway) -> Result<Vec<Alarm>, veksel_store::StoreError> {
    let rows: Vec<(i64, String, String, String, String)> = sqlx::query_as(
        "SELECT at, origin, why, previous, conflicting FROM ledger_alarms ORDER BY id DESC LIMIT 100",
    )
    .fetch_all(gw.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(at, origin, why, previous, conflicting)| Alarm {
            at,
            origin,
            why,
            previous,
            conflicting,
        })
        .collect())
}

async fn raise(gw: &Gateway, origin: &str, why: &str, previous: &str, conflicting: &str) {
    tracing::error!(
        origin,
        why,
        "LEDGER ALARM: the ledger showed two inconsistent histories; both checkpoints are kept as evidence"
    );
    let stored = sqlx::query(
        "INSERT INTO ledger_alarms (at, origin, why, previous, conflicting) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(gw.clock.now_ms())
    .bind(origin)
    .bind(why)
    .bind(previous)
    .bind(conflicting)
    .execute(gw.db.pool())
    .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "could not store the ledger alarm");
    }
    gw.metrics.ledger_alarms.inc();
}

/// What one witnessing round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witnessed {
    /// The ledger has no checkpoint yet.
    Nothing,
    /// Cosigned the checkpoint of this size.
    Cosigned(u64),
    /// Refused it and raised an alarm.
    Alarm(String),
}

async fn state(gw: &Gateway) -> Result<Option<(String, WitnessState)>, String> {
    let row: Option<(String, i64, Vec<u8>, String)> =
        sqlx::query_as("SELECT vkey, size, root, note FROM ledger_witness LIMIT 1")
            .fetch_optional(gw.db.pool())
            .await
            .map_err(|e| e.to_string())?;
    let Some((vkey, size, root, note)) = row else {
        return Ok(None);
    };
    let root: [u8; 32] = root
        .try_into()
        .map_err(|_| "stored witness root is not 32 bytes".to_string())?;
    Ok(Some((
        vkey,
        WitnessState {
            size: u64::try_from(size).unwrap_or_default(),
            root,
            note,
        },
    )))
}

async fn get_text(gw: &Gateway, url: &str) -> Result<(reqwest::StatusCode, String), String> {
    let resp = gw
        .conf
        .http()
        .get(url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
    if text.len() > 1024 * 1024 {
        return Err(format!("{url}: answer larger than 1 MiB"));
    }
    Ok((status, text))
}

/// The ledger's verifier key (pinned at first contact: a later policy cannot swap
/// it) and this witness's state.
async fn pinned(gw: &Gateway) -> Result<(String, Option<WitnessState>), String> {
    let known = state(gw).await?;
    let vkey = match &known {
        Some((vkey, _)) => vkey.clone(),
        None => {
            let url = format!("{}/ledger/v1/policy", gw.conf.anchor().authority_url);
            let (status, text) = get_text(gw, &url).await?;
            if !status.is_success() {
                return Err(format!("ledger policy: HTTP {status}"));
            }
            WitnessPolicy::parse(&text).map_err(|e| e.to_string())?;
            text.lines()
                .find_map(|l| l.trim().strip_prefix("log "))
                .map(|k| k.trim().to_owned())
                .ok_or("the ledger policy names no log key")?
        }
    };
    Ok((vkey, known.map(|(_, s)| s)))
}

/// The witness side of c2sp.org/tlog-witness add-checkpoint: checks the request
/// against this witness's state, persists the new state, and only then cosigns.
/// Requests are serialised, so checking the old size and storing the new one are
/// one step. An inconsistent checkpoint raises the alarm and is refused. Returns
/// the cosignature line and the state now kept.
pub async fn add_checkpoint(
    gw: &Gateway,
    body: &str,
) -> Result<(String, WitnessState), WitnessError> {
    let _one_at_a_time = gw.witness_lock.lock().await;
    let request = AddCheckpoint::parse(body)?;
    let (vkey, known) = pinned(gw).await.map_err(WitnessError::Unavailable)?;
    let log = NoteVerifier::parse(&vkey).map_err(|e| WitnessError::Unavailable(e.to_string()))?;
    let new_state = match check_add_checkpoint(&request, &log, known.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            if let WitnessError::Fork {
                why,
                previous,
                conflicting,
            } = &e
            {
                raise(gw, log.name(), why, previous, conflicting).await;
            }
            return Err(e);
        }
    };
    sqlx::query(
        "INSERT INTO ledger_witness (origin, vkey, size, root, note, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root,
         note = excluded.note, updated_at = excluded.updated_at",
    )
    .bind(log.name())
    .bind(&vkey)
    .bind(i64::try_from(new_state.size).unwrap_or(i64::MAX))
    .bind(new_state.root.to_vec())
    .bind(&new_state.note)
    .bind(gw.clock.now_ms())
    .execute(gw.db.pool())
    .await
    .map_err(|e| WitnessError::Unavailable(e.to_string()))?;
    let opened = open_note(&new_state.note, std::slice::from_ref(&log))
        .map_err(|e| WitnessError::Malformed(e.to_string()))?;
    Ok((
        gw.cosigner.cosign(&opened.text, gw.clock.now_secs()),
        new_state,
    ))
}

/// One witnessing round: fetch the ledger's add-checkpoint request for this
/// gateway's size, answer it as [`add_checkpoint`] does, and post the cosignature.
pub async fn witness_once(gw: &Gateway) -> Result<Witnessed, String> {
    let base = format!("{}/ledger/v1", gw.conf.anchor().authority_url);
    let (vkey, known) = pinned(gw).await?;
    let old = known.as_ref().map_or(0, |s| s.size);
    let (status, text) = get_text(gw, &format!("{base}/witness/add-checkpoint?old={old}")).await?;
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(Witnessed::Nothing);
    }
    if status == reqwest::StatusCode::CONFLICT {
        let why = format!(
            "the ledger's size is now {} but it signed size {old} before (a rollback)",
            text.trim()
        );
        let origin = NoteVerifier::parse(&vkey)
            .map(|v| v.name().to_owned())
            .unwrap_or_default();
        let previous = known.map(|s| s.note).unwrap_or_default();
        raise(gw, &origin, &why, &previous, "").await;
        return Ok(Witnessed::Alarm(why));
    }
    if !status.is_success() {
        return Err(format!("ledger add-checkpoint: HTTP {status}"));
    }
    match add_checkpoint(gw, &text).await {
        Ok((line, WitnessState { size, note, .. })) => {
            let resp = gw
                .conf
                .http()
                .post(format!("{base}/witness/cosignature"))
                .header("content-type", "text/plain; charset=utf-8")
                .body(format!("{note}{line}"))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map_err(|e| format!("ledger cosignature: {e}"))?;
            if !resp.status().is_success() {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                return Err(format!(
                    "ledger cosignature refused: HTTP {status}: {}",
                    body.chars().take(300).collect::<String>()
                ));
            }
            Ok(Witnessed::Cosigned(size))
        }
        Err(WitnessError::Fork { why, .. }) => Ok(Witnessed::Alarm(why)),
        Err(e) => Err(e.to_string()),
    }
}

/// Submits the newest time-stamped head of the message log as an anchor, if it
/// was not submitted yet. Returns the anchored size.
pub async fn anchor_once(gw: &Gateway) -> Result<Option<u64>, String> {
    let latest: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT size, root FROM log_stamps ORDER BY size DESC LIMIT 1")
            .fetch_optional(gw.db.pool())
            .await
            .map_err(|e| e.to_string())?;
    let Some((size, root)) = latest else {
        return Ok(None);
    };
    let anchored: Option<i64> = sqlx::query_scalar("SELECT MAX(size) FROM ledger_anchors")
        .fetch_one(gw.db.pool())
        .await
        .map_err(|e| e.to_string())?;
    if anchored.is_some_and(|a| a >= size) {
        return Ok(None);
    }
    let entry = LedgerEntry::Anchor {
        at: gw.clock.now_ms(),
        gateway: gw.id().to_string(),
        origin: crate::stamper::origin(gw.id()),
        size: u64::try_from(size).unwrap_or_default(),
        root: STANDARD.encode(&root),
    };
    let answer = submit_entry(gw, &entry).await?;
    sqlx::query(
        "INSERT INTO ledger_anchors (size, entry_sha256, submitted_at) VALUES ($1, $2, $3)",
    )
    .bind(size)
    .bind(answer["entry_sha256"].as_str().unwrap_or_default())
    .bind(gw.clock.now_ms())
    .execute(gw.db.pool())
    .await
    .map_err(|e| e.to_string())?;
    Ok(u64::try_from(size).ok())
}

/// Witnesses the ledger and anchors the message log forever.
pub async fn ledger_loop(gw: Arc<Gateway>) {
    let period = Duration::from_millis(gw.config.ledger_interval_ms.max(100));
    loop {
        tokio::time::sleep(period).await;
        if gw.conf.current(veksel_id::Origin::ClientProxy).is_err() {
            continue;
        }
        if gw.config.witness {
            match witness_once(&gw).await {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ledger: witnessing failed"),
            }
        }
        if let Err(e) = anchor_once(&gw).await {
            tracing::warn!(error = %e, "ledger: anchoring failed");
        }
        if let Err(e) = submit_events(&gw).await {
            tracing::warn!(error = %e, "ledger: submitting local events failed");
        }
    }
}

/// Submits a member's commitment to a document (computed by the member with
/// [`veksel_proto::ledger::commitment`]; the document and its salt never leave the
/// member) as a ledger entry signed by this gateway. Returns the authority's answer.
pub async fn append_commitment(
    gw: &Gateway,
    label: &str,
    commitment: &str,
) -> Result<serde_json::Value, String> {
    let entry = LedgerEntry::Commitment {
        at: gw.clock.now_ms(),
        gateway: gw.id().to_string(),
        label: label.to_owned(),
        commitment: commitment.to_owned(),
    };
    submit_entry(gw, &entry).await
}
