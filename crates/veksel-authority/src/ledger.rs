//! The network ledger: an append-only Merkle log (RFC 9162) of governance events,
//! gateways' message-log anchors and members' document commitments, served as
//! c2sp.org/tlog-tiles with checkpoints that witnesses cosign.
//!
//! One sequencer turns the audit trail (every registry change, recorded by
//! [`crate::registry::Registry::audit`]) and submitted entries into leaves, in one
//! database transaction per batch, and keeps the tiles up to date. A checkpoint of
//! each new size is signed with the ledger key and offered to the witnesses; it is
//! published (served at `/ledger/v1/checkpoint`) only once the witness policy's
//! quorum has cosigned it.
//!
//! Witnesses are gateways, which accept no connections from the authority: they
//! fetch the tlog-witness add-checkpoint request from
//! `/ledger/v1/witness/add-checkpoint?old=<their size>` and post the note back with
//! their cosignature added. The messages are tlog-witness's; only the direction of
//! the connection differs.

use crate::AppState;
use crate::auth::{AdminRole, ObserverRole, verify_gateway_jws};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;
use veksel_admin::{ApiError, ApiResult, Authorized};
use veksel_merkle::checkpoint::{Checkpoint, NoteSigner, open_note, sign_note};
use veksel_merkle::tiles::{
    TILE_WIDTH, TileBuilder, TileId, TileKind, TiledTree, encode_entries, tiles_for_consistency,
};
use veksel_merkle::witness::{AddCheckpoint, WitnessPolicy, verify_cosignatures};
use veksel_merkle::{Frontier, Hash, leaf_hash};
use veksel_proto::ledger::{ENTRY_CTY, LedgerEntry, MAX_ENTRY_LEN, commitment, new_salt};
use veksel_store::sqlx::{self, Row};
use veksel_store::{Db, StoreError};

/// Most leaves sequenced in one transaction.
const BATCH: i64 = 4096;
/// Most entries waiting to be sequenced before submissions are refused (503).
const MAX_PENDING: i64 = 100_000;

/// Database tables of the ledger.
pub const MIGRATION: &str = r#"
CREATE TABLE ledger_entries (
    idx BIGINT PRIMARY KEY, data {{BLOB}} NOT NULL, kind TEXT NOT NULL,
    subject TEXT NOT NULL, at BIGINT NOT NULL);
CREATE INDEX ledger_entries_subject ON ledger_entries (subject, idx);
CREATE TABLE ledger_pending (
    id {{SERIAL_PK}}, data {{BLOB}} NOT NULL, kind TEXT NOT NULL,
    subject TEXT NOT NULL, at BIGINT NOT NULL);
CREATE TABLE ledger_tiles (
    level BIGINT NOT NULL, idx BIGINT NOT NULL, data {{BLOB}} NOT NULL,
    PRIMARY KEY (level, idx));
CREATE TABLE ledger_head (
    id BIGINT PRIMARY KEY, size BIGINT NOT NULL, peaks TEXT NOT NULL,
    audit_cursor BIGINT NOT NULL);
INSERT INTO ledger_head (id, size, peaks, audit_cursor) VALUES (1, 0, '', 0);
CREATE TABLE ledger_checkpoints (
    size BIGINT PRIMARY KEY, note TEXT NOT NULL, created_at BIGINT NOT NULL,
    published_at BIGINT);
CREATE TABLE ledger_cosignatures (
    size BIGINT NOT NULL, witness TEXT NOT NULL, line TEXT NOT NULL, at BIGINT NOT NULL,
    PRIMARY KEY (size, witness));
CREATE TABLE ledger_policy (id BIGINT PRIMARY KEY, text TEXT NOT NULL, updated_at BIGINT NOT NULL);
ALTER TABLE audit_events ADD COLUMN salt TEXT
"#;

/// The ledger's signing key and name.
pub struct LedgerKey {
    signer: NoteSigner,
    origin: String,
}

impl std::fmt::Debug for LedgerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerKey")
            .field("origin", &self.origin)
            .finish()
    }
}

impl LedgerKey {
    /// The key of the ledger of `instance`, from its PKCS#8 Ed25519 key.
    pub fn new(instance: &str, pkcs8: &[u8]) -> Result<Self, String> {
        let origin = origin_of(instance);
        let signer = NoteSigner::from_pkcs8(&origin, pkcs8).map_err(|e| e.to_string())?;
        Ok(Self { signer, origin })
    }

    /// The checkpoint origin (also the key name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The verifier key of the ledger's checkpoints.
    pub fn verifier_key(&self) -> String {
        self.signer.verifier_key()
    }

    /// The policy in force until an operator sets one: the ledger's signature alone.
    fn default_policy(&self) -> String {
        format!("log {}\nquorum none\n", self.verifier_key())
    }
}

/// The checkpoint origin of an instance's ledger.
pub fn origin_of(instance: &str) -> String {
    format!("veksel.ledger/{instance}")
}

/// Position and frontier of the log as sequenced.
struct Head {
    size: u64,
    frontier: Frontier,
    audit_cursor: i64,
}

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn read_head(conn: &mut sqlx::AnyConnection) -> Result<Head, StoreError> {
    let row = sqlx::query("SELECT size, peaks, audit_cursor FROM ledger_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let size = u64::try_from(row.try_get::<i64, _>(0)?).map_err(store_err)?;
    let peaks_hex: String = row.try_get(1)?;
    let peaks_blob = hex::decode(peaks_hex).map_err(store_err)?;
    let peaks: Vec<Hash> = peaks_blob
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect();
    let frontier = Frontier::from_peaks(size, peaks)
        .ok_or_else(|| store_err("ledger head: peaks do not match the size"))?;
    Ok(Head {
        size,
        frontier,
        audit_cursor: row.try_get(2)?,
    })
}

/// The open (incomplete) tiles of a log of `size` leaves, lowest level first.
async fn open_tiles(
    conn: &mut sqlx::AnyConnection,
    size: u64,
) -> Result<Vec<Vec<Hash>>, StoreError> {
    let mut open = Vec::new();
    let mut level: u32 = 0;
    loop {
        let count = if level * 8 >= 64 {
            0
        } else {
            size >> (level * 8)
        };
        if count == 0 {
            break;
        }
        let width = (count % TILE_WIDTH) as u16;
        let mut hashes = Vec::new();
        if width > 0 {
            let tile = TileId {
                kind: TileKind::Hashes { level: level as u8 },
                index: count / TILE_WIDTH,
                width,
            };
            let data = tile_data(conn, &tile)
                .await?
                .ok_or_else(|| store_err(format!("{} is missing or too short", tile.path())))?;
            hashes = veksel_merkle::tiles::decode_hashes(&data).map_err(store_err)?;
        }
        open.push(hashes);
        level += 1;
    }
    Ok(open)
}

/// A leaf about to be sequenced.
struct NewLeaf {
    data: Vec<u8>,
    kind: &'static str,
    subject: String,
    at: i64,
}

/// Sequences waiting audit events and submitted entries into the log, at most
/// [`BATCH`] per call, in one transaction. Returns the new size.
pub async fn sequence(s: &AppState) -> Result<u64, StoreError> {
    let db = s.registry.db();
    let mut tx = db.pool().begin().await?;
    // Taking the head row's write lock first serialises sequencers (PostgreSQL with
    // several authority nodes; SQLite serialises writers anyway).
    sqlx::query("UPDATE ledger_head SET size = size WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    let mut head = read_head(&mut tx).await?;
    let mut leaves = Vec::new();

    let events = sqlx::query(
        "SELECT id, at, actor, action, subject, detail FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(head.audit_cursor)
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    for r in &events {
        let id: i64 = r.try_get(0)?;
        let at: i64 = r.try_get(1)?;
        let actor: String = r.try_get(2)?;
        let action: String = r.try_get(3)?;
        let subject: String = r.try_get(4)?;
        let detail: String = r.try_get(5)?;
        let salt = new_salt();
        // Who acted and what changed stay off the ledger; the entry commits to them.
        let document = serde_json::json!({ "actor": actor, "detail": detail }).to_string();
        let entry = LedgerEntry::Governance {
            at: at.max(1),
            record: id,
            event: ledger_event_name(&action),
            subject: if subject.is_empty() {
                "-".into()
            } else {
                subject.clone()
            },
            commitment: commitment(&salt, document.as_bytes()),
        };
        let data = sign_entry(s, &entry)?;
        sqlx::query("UPDATE audit_events SET salt = $1 WHERE id = $2")
            .bind(STANDARD.encode(salt))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        leaves.push(NewLeaf {
            data,
            kind: "governance",
            subject: entry.subject().to_owned(),
            at,
        });
        head.audit_cursor = id;
    }
    let room = BATCH - leaves.len() as i64;
    let pending =
        sqlx::query("SELECT id, data, kind, subject, at FROM ledger_pending ORDER BY id LIMIT $1")
            .bind(room)
            .fetch_all(&mut *tx)
            .await?;
    let mut last_pending = None;
    for r in &pending {
        last_pending = Some(r.try_get::<i64, _>(0)?);
        let kind: String = r.try_get(2)?;
        leaves.push(NewLeaf {
            data: r.try_get(1)?,
            kind: match kind.as_str() {
                "anchor" => "anchor",
                "gateway-event" => "gateway-event",
                _ => "commitment",
            },
            subject: r.try_get(3)?,
            at: r.try_get(4)?,
        });
    }
    if leaves.is_empty() {
        tx.rollback().await?;
        return Ok(head.size);
    }

    let mut builder =
        TileBuilder::resume(head.size, open_tiles(&mut tx, head.size).await?).map_err(store_err)?;
    let mut changed = std::collections::BTreeMap::new();
    for leaf in &leaves {
        let hash = leaf_hash(&leaf.data);
        sqlx::query(
            "INSERT INTO ledger_entries (idx, data, kind, subject, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(to_i64(head.size))
        .bind(&leaf.data)
        .bind(leaf.kind)
        .bind(&leaf.subject)
        .bind(leaf.at)
        .execute(&mut *tx)
        .await?;
        // The builder makes hash tiles only.
        for (id, hashes) in builder.push(hash) {
            if let TileKind::Hashes { level } = id.kind {
                changed.insert((level, id.index), hashes);
            }
        }
        head.frontier.push(hash);
        head.size += 1;
    }
    for ((level, index), hashes) in changed {
        sqlx::query(
            "INSERT INTO ledger_tiles (level, idx, data) VALUES ($1, $2, $3)
             ON CONFLICT (level, idx) DO UPDATE SET data = excluded.data",
        )
        .bind(i64::from(level))
        .bind(to_i64(index))
        .bind(hashes.concat())
        .execute(&mut *tx)
        .await?;
    }
    if let Some(last) = last_pending {
        sqlx::query("DELETE FROM ledger_pending WHERE id <= $1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE ledger_head SET size = $1, peaks = $2, audit_cursor = $3 WHERE id = 1")
        .bind(to_i64(head.size))
        .bind(hex::encode(head.frontier.peaks().concat()))
        .bind(head.audit_cursor)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(head.size)
}

/// Audit actions are `noun.verb` names; anything else is made to fit the entry's
/// event syntax rather than dropped.
fn ledger_event_name(action: &str) -> String {
    let name: String = action
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "event".into()
    } else {
        name
    }
}

fn sign_entry(s: &AppState, entry: &LedgerEntry) -> Result<Vec<u8>, StoreError> {
    let payload = serde_json::to_vec(entry).map_err(store_err)?;
    veksel_proto::jws::sign_compact(&s.conf_signer, ENTRY_CTY, true, &payload)
        .map(String::into_bytes)
        .map_err(store_err)
}

/// The policy in force.
pub async fn policy(s: &AppState) -> Result<(String, WitnessPolicy), StoreError> {
    let text: Option<String> = sqlx::query_scalar("SELECT text FROM ledger_policy WHERE id = 1")
        .fetch_optional(s.registry.db().pool())
        .await?;
    let text = text.unwrap_or_else(|| s.ledger.default_policy());
    let parsed = WitnessPolicy::parse(&text).map_err(store_err)?;
    Ok((text, parsed))
}

/// Signs a checkpoint of the current size if it is new, and publishes every
/// checkpoint whose cosignatures meet the policy. Returns the published size.
pub async fn checkpoint(s: &AppState) -> Result<Option<u64>, StoreError> {
    let db = s.registry.db();
    let mut conn = db.pool().acquire().await?;
    let head = read_head(&mut conn).await?;
    drop(conn);
    let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(size) FROM ledger_checkpoints")
        .fetch_one(db.pool())
        .await?;
    if latest.is_none_or(|l| l < to_i64(head.size)) && head.size > 0 {
        let body = Checkpoint {
            origin: s.ledger.origin.clone(),
            size: head.size,
            root: head.frontier.root(),
            extensions: vec![],
        }
        .body();
        let note = sign_note(&body, &[&s.ledger.signer]).map_err(store_err)?;
        sqlx::query(
            "INSERT INTO ledger_checkpoints (size, note, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(to_i64(head.size))
        .bind(note)
        .bind(s.clock.now_ms())
        .execute(db.pool())
        .await?;
    }
    try_publish(s).await
}

/// Publishes the newest checkpoint whose cosignatures satisfy the policy.
async fn try_publish(s: &AppState) -> Result<Option<u64>, StoreError> {
    Ok(current_published(s).await?.map(|(size, _)| size))
}

/// The newest checkpoint whose stored cosignatures meet the policy in force now,
/// as served (the note with the cosignature lines); marked published the first
/// time. A checkpoint published under an earlier, weaker policy is not served
/// once the policy asks for more.
pub(crate) async fn current_published(s: &AppState) -> Result<Option<(u64, String)>, StoreError> {
    let db = s.registry.db();
    let (_, policy) = policy(s).await?;
    let mut candidates: Vec<(i64, String, Option<i64>)> = sqlx::query_as(
        "SELECT size, note, published_at FROM ledger_checkpoints ORDER BY size DESC LIMIT 16",
    )
    .fetch_all(db.pool())
    .await?;
    candidates.extend(
        sqlx::query_as::<_, (i64, String, Option<i64>)>(
            "SELECT size, note, published_at FROM ledger_checkpoints
             WHERE published_at IS NOT NULL ORDER BY size DESC LIMIT 16",
        )
        .fetch_all(db.pool())
        .await?,
    );
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    candidates.dedup_by_key(|c| c.0);
    for (size, mut note, published_at) in candidates {
        let lines: Vec<(String, String)> = sqlx::query_as(
            "SELECT witness, line FROM ledger_cosignatures WHERE size = $1 ORDER BY witness",
        )
        .bind(size)
        .fetch_all(db.pool())
        .await?;
        let cosigners: BTreeSet<String> = lines
            .iter()
            .filter(|(w, _)| policy.witnesses.contains_key(w))
            .map(|(w, _)| w.clone())
            .collect();
        if !policy.satisfied_by(&cosigners) {
            continue;
        }
        if published_at.is_none() {
            sqlx::query("UPDATE ledger_checkpoints SET published_at = $1 WHERE size = $2")
                .bind(s.clock.now_ms())
                .bind(size)
                .execute(db.pool())
                .await?;
            tracing::info!(size, cosigners = ?cosigners, "ledger: checkpoint published");
        }
        for (_, line) in lines {
            note.push_str(&line);
        }
        return Ok(u64::try_from(size).ok().map(|size| (size, note)));
    }
    Ok(None)
}

// === What the console's explorer reads ===

/// A signed checkpoint with the cosignatures stored for it.
#[derive(Debug)]
pub(crate) struct CheckpointRow {
    pub size: u64,
    pub created_at: i64,
    pub published_at: Option<i64>,
    /// Witness names that cosigned.
    pub cosigners: Vec<String>,
}

/// The newest checkpoints signed, newest first.
pub(crate) async fn recent_checkpoints(
    s: &AppState,
    limit: i64,
) -> Result<Vec<CheckpointRow>, StoreError> {
    let pool = s.registry.db().pool();
    let rows: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT size, created_at, published_at FROM ledger_checkpoints ORDER BY size DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    // Every cosignature of the listed checkpoints in one query.
    let oldest = rows.last().map_or(0, |r| r.0);
    let lines: Vec<(i64, String)> = sqlx::query_as(
        "SELECT size, witness FROM ledger_cosignatures WHERE size >= $1 ORDER BY size, witness",
    )
    .bind(oldest)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (size, created_at, published_at) in rows {
        let cosigners = lines
            .iter()
            .filter(|(at, _)| *at == size)
            .map(|(_, w)| w.clone())
            .collect();
        out.push(CheckpointRow {
            size: u64::try_from(size).map_err(store_err)?,
            created_at,
            published_at,
            cosigners,
        });
    }
    Ok(out)
}

/// An entry as the ledger's table keeps it.
#[derive(Debug)]
pub(crate) struct EntryRow {
    pub index: u64,
    pub kind: String,
    pub subject: String,
    pub at: i64,
}

/// The sequenced size of the log.
pub(crate) async fn sequenced_size(s: &AppState) -> Result<u64, StoreError> {
    let mut conn = s.registry.db().pool().acquire().await?;
    Ok(read_head(&mut conn).await?.size)
}

/// At most `limit` entries before index `before`, newest first.
pub(crate) async fn entries_before(
    s: &AppState,
    before: u64,
    limit: i64,
) -> Result<Vec<EntryRow>, StoreError> {
    let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT idx, kind, subject, at FROM ledger_entries WHERE idx < $1 ORDER BY idx DESC LIMIT $2",
    )
    .bind(to_i64(before))
    .bind(limit)
    .fetch_all(s.registry.db().pool())
    .await?;
    rows.into_iter()
        .map(|(idx, kind, subject, at)| {
            Ok(EntryRow {
                index: u64::try_from(idx).map_err(store_err)?,
                kind,
                subject,
                at,
            })
        })
        .collect()
}

/// Entry `index` and its bytes, if it is sequenced.
pub(crate) async fn entry(
    s: &AppState,
    index: u64,
) -> Result<Option<(EntryRow, Vec<u8>)>, StoreError> {
    let row: Option<(String, String, i64, Vec<u8>)> =
        sqlx::query_as("SELECT kind, subject, at, data FROM ledger_entries WHERE idx = $1")
            .bind(to_i64(index))
            .fetch_optional(s.registry.db().pool())
            .await?;
    Ok(row.map(|(kind, subject, at, data)| {
        (
            EntryRow {
                index,
                kind,
                subject,
                at,
            },
            data,
        )
    }))
}

/// The tiles that prove entry `index` in the tree of `size`, and its bundle, as a
/// client of the tiles would fetch them.
pub(crate) async fn inclusion_tiles(
    s: &AppState,
    index: u64,
    size: u64,
) -> Result<TiledTree, StoreError> {
    let mut ids = veksel_merkle::tiles::tiles_for_inclusion(index, size).map_err(store_err)?;
    if let Some(first) = ids.first().copied() {
        ids.push(first.entries());
    }
    let mut conn = s.registry.db().pool().acquire().await?;
    let mut tree = TiledTree::new(size);
    for id in ids {
        let data = tile_data(&mut conn, &id)
            .await?
            .ok_or_else(|| store_err(format!("{} is missing", id.path())))?;
        tree.insert(id, &data).map_err(store_err)?;
    }
    Ok(tree)
}

/// Sequences and checkpoints every `period`, and soon after a change.
pub async fn run(state: Arc<AppState>, period: Duration, tiles_dir: Option<std::path::PathBuf>) {
    let mut exported = 0;
    loop {
        tokio::select! {
            () = state.ledger_changed.notified() => {
                // Let a burst of changes land in one batch.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            () = tokio::time::sleep(period) => {}
        }
        loop {
            match sequence(&state).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "ledger: sequencing failed");
                    break;
                }
            }
            // Drain a backlog batch by batch, checkpointing between batches.
            let backlog: Result<i64, _> = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM ledger_pending) + (SELECT COUNT(*) FROM audit_events WHERE id > (SELECT audit_cursor FROM ledger_head WHERE id = 1))",
            )
            .fetch_one(state.registry.db().pool())
            .await;
            if let Err(e) = checkpoint(&state).await {
                tracing::error!(error = %e, "ledger: checkpointing failed");
            }
            if let Some(dir) = &tiles_dir
                && let Err(e) = export_files(&state, dir, &mut exported).await
            {
                tracing::error!(error = %e, "ledger: exporting tiles failed");
            }
            if !matches!(backlog, Ok(n) if n > 0) {
                break;
            }
        }
    }
}

/// Routes of the ledger.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ledger/v1/checkpoint", get(get_checkpoint))
        .route("/ledger/v1/policy", get(get_policy))
        .route("/ledger/v1/tile/{*path}", get(get_tile))
        .route("/ledger/v1/entries", post(submit_entry))
        .route("/ledger/v1/witness/add-checkpoint", get(witness_request))
        .route("/ledger/v1/witness/cosignature", post(witness_cosignature))
        .route("/api/v1/ledger", get(status))
        .route("/api/v1/ledger/policy", axum::routing::put(put_policy))
        .route(
            "/api/v1/ledger/openings/{record}",
            get(opening).delete(erase),
        )
}

fn text_response(
    status: StatusCode,
    content_type: &str,
    cache: &str,
    body: impl Into<axum::body::Body>,
) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CACHE_CONTROL, cache.to_owned()),
        ],
        body.into(),
    )
        .into_response()
}

async fn get_checkpoint(State(s): State<Arc<AppState>>) -> ApiResult<Response> {
    let (_, note) = current_published(&s)
        .await?
        .ok_or_else(|| ApiError::not_found("the ledger has no published checkpoint yet"))?;
    Ok(text_response(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        "no-cache, max-age=2",
        note,
    ))
}

async fn get_policy(State(s): State<Arc<AppState>>) -> ApiResult<Response> {
    let (text, _) = policy(&s).await?;
    Ok(text_response(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        "no-cache",
        text,
    ))
}

/// The content of a tile or bundle, if the log is large enough to have it.
async fn tile_data(
    conn: &mut sqlx::AnyConnection,
    tile: &TileId,
) -> Result<Option<Vec<u8>>, StoreError> {
    let width = usize::from(tile.width);
    Ok(match tile.kind {
        TileKind::Hashes { level } => {
            let data: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT data FROM ledger_tiles WHERE level = $1 AND idx = $2")
                    .bind(i64::from(level))
                    .bind(to_i64(tile.index))
                    .fetch_optional(&mut *conn)
                    .await?;
            data.filter(|d| d.len() >= width * 32).map(|mut d| {
                d.truncate(width * 32);
                d
            })
        }
        TileKind::Entries => {
            let start = tile.index.saturating_mul(TILE_WIDTH);
            let rows: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT data FROM ledger_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
            )
            .bind(to_i64(start))
            .bind(to_i64(start.saturating_add(u64::from(tile.width))))
            .fetch_all(&mut *conn)
            .await?;
            if rows.len() == width {
                Some(encode_entries(rows.iter().map(Vec::as_slice)).map_err(store_err)?)
            } else {
                None
            }
        }
    })
}

async fn get_tile(State(s): State<Arc<AppState>>, Path(path): Path<String>) -> ApiResult<Response> {
    let tile =
        TileId::parse(&format!("tile/{path}")).map_err(|e| ApiError::not_found(e.to_string()))?;
    let mut conn = s
        .registry
        .db()
        .pool()
        .acquire()
        .await
        .map_err(StoreError::from)?;
    let body = tile_data(&mut conn, &tile)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no {}", tile.path())))?;
    // A tile's content never changes (a partial tile is named by its width).
    Ok(text_response(
        StatusCode::OK,
        "application/octet-stream",
        "public, max-age=31536000, immutable",
        body,
    ))
}

/// Writes the published checkpoint, the policy and every tile and bundle it needs
/// into `dir` in the tlog-tiles layout, for a static web server or a CDN to serve.
/// Tiles already written are immutable and skipped; `done` is the size exported
/// last (0 after a restart: existing files are then checked, not rewritten).
pub async fn export_files(
    s: &AppState,
    dir: &std::path::Path,
    done: &mut u64,
) -> Result<(), StoreError> {
    let Some((size, note)) = current_published(s).await? else {
        return Ok(());
    };
    if size == *done {
        return Ok(());
    }
    let mut conn = s.registry.db().pool().acquire().await?;
    for tile in veksel_merkle::tiles::tiles_for_size(size, true) {
        let level = match tile.kind {
            TileKind::Hashes { level } => level,
            TileKind::Entries => 0,
        };
        let shift = u32::from(level) * 8;
        let first_changed = if shift >= 64 {
            0
        } else {
            (*done >> shift) / TILE_WIDTH
        };
        if tile.index < first_changed {
            continue;
        }
        let path = dir.join(tile.path());
        if path.exists() {
            continue;
        }
        let data = tile_data(&mut conn, &tile)
            .await?
            .ok_or_else(|| store_err(format!("{} is missing from the database", tile.path())))?;
        write_file(&path, &data)?;
    }
    write_file(&dir.join("policy"), policy(s).await?.0.as_bytes())?;
    // The checkpoint last: a reader never sees a checkpoint whose tiles are not there.
    write_file(&dir.join("checkpoint"), note.as_bytes())?;
    *done = size;
    Ok(())
}

fn write_file(path: &std::path::Path, data: &[u8]) -> Result<(), StoreError> {
    let io = |e: std::io::Error| store_err(format!("{}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Answer to a submitted entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Queued {
    /// Always `queued`: the entry is sequenced within a second or so.
    pub state: String,
    /// SHA-256 of the entry (its leaf hash is `SHA-256(0x00 || entry)`), hex.
    pub entry_sha256: String,
}

async fn submit_entry(
    State(s): State<Arc<AppState>>,
    body: String,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    if body.len() > MAX_ENTRY_LEN {
        return Err(ApiError::bad_request(format!(
            "a ledger entry is at most {MAX_ENTRY_LEN} bytes"
        )));
    }
    let (gateway, payload) = verify_gateway_jws(&s, &body, ENTRY_CTY, "ledger entry").await?;
    let entry: LedgerEntry = serde_json::from_slice(&payload)
        .map_err(|e| ApiError::bad_request(format!("ledger entry: {e}")))?;
    entry.validate().map_err(ApiError::bad_request)?;
    match &entry {
        LedgerEntry::Anchor { gateway: g, .. }
        | LedgerEntry::Commitment { gateway: g, .. }
        | LedgerEntry::GatewayEvent { gateway: g, .. }
            if *g == gateway.to_string() => {}
        LedgerEntry::Governance { .. } => {
            return Err(ApiError::forbidden(
                "governance events are recorded by the authority itself",
            ));
        }
        _ => {
            return Err(ApiError::forbidden(format!(
                "gateway {gateway} can only submit entries about itself"
            )));
        }
    }
    let now = s.clock.now_ms();
    if (entry.at() - now).abs() > 10 * 60 * 1000 {
        return Err(ApiError::bad_request(
            "the entry's time is more than 10 minutes from the authority's",
        ));
    }
    let db = s.registry.db();
    let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_pending")
        .fetch_one(db.pool())
        .await
        .map_err(StoreError::from)?;
    if waiting >= MAX_PENDING {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the ledger has too many entries waiting; retry later",
        ));
    }
    sqlx::query("INSERT INTO ledger_pending (data, kind, subject, at) VALUES ($1, $2, $3, $4)")
        .bind(body.trim().as_bytes())
        .bind(entry.kind())
        .bind(entry.subject())
        .bind(entry.at())
        .execute(db.pool())
        .await
        .map_err(StoreError::from)?;
    s.ledger_changed.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            state: "queued".into(),
            entry_sha256: veksel_pki::sha256_hex(body.trim().as_bytes()),
        }),
    ))
}

/// Query of a witness's request.
#[derive(Debug, Deserialize)]
struct WitnessQuery {
    /// The size the witness last cosigned (0 when new).
    old: u64,
}

/// Loads the tiles a consistency proof needs and computes it.
async fn consistency(db: &Db, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
    if old == 0 || old == new {
        return Ok(vec![]);
    }
    let mut tree = TiledTree::new(new);
    let mut conn = db.pool().acquire().await?;
    for tile in tiles_for_consistency(old, new).map_err(store_err)? {
        let data = tile_data(&mut conn, &tile)
            .await?
            .ok_or_else(|| store_err(format!("{} is missing or too short", tile.path())))?;
        tree.insert(tile, &data).map_err(store_err)?;
    }
    veksel_merkle::consistency_proof(&tree, old, new).map_err(store_err)
}

async fn witness_request(
    State(s): State<Arc<AppState>>,
    Query(q): Query<WitnessQuery>,
) -> ApiResult<Response> {
    let db = s.registry.db();
    let latest: Option<(i64, String)> =
        sqlx::query_as("SELECT size, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(db.pool())
            .await
            .map_err(StoreError::from)?;
    let (size, note) =
        latest.ok_or_else(|| ApiError::not_found("the ledger has no checkpoint yet"))?;
    let size = u64::try_from(size).unwrap_or_default();
    if q.old > size {
        // The witness has seen more of this log than the log has now: tell it our
        // size in tlog-witness's form; the witness treats it as a rollback.
        return Ok(text_response(
            StatusCode::CONFLICT,
            "text/x.tlog.size",
            "no-store",
            format!("{size}\n"),
        ));
    }
    let proof = consistency(db, q.old, size).await?;
    let request = AddCheckpoint {
        old_size: q.old,
        proof,
        checkpoint: note,
    };
    Ok(text_response(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        "no-store",
        request.body(),
    ))
}

async fn witness_cosignature(
    State(s): State<Arc<AppState>>,
    body: String,
) -> ApiResult<StatusCode> {
    if body.len() > 64 * 1024 {
        return Err(ApiError::bad_request(
            "a cosigned checkpoint is at most 64 KiB",
        ));
    }
    let (_, policy) = policy(&s).await?;
    let opened = open_note(&body, std::slice::from_ref(&policy.log))
        .map_err(|e| ApiError::bad_request(format!("cosigned checkpoint: {e}")))?;
    let cp = Checkpoint::parse(&opened.text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let db = s.registry.db();
    let stored: Option<String> =
        sqlx::query_scalar("SELECT note FROM ledger_checkpoints WHERE size = $1")
            .bind(to_i64(cp.size))
            .fetch_optional(db.pool())
            .await
            .map_err(StoreError::from)?;
    let Some(stored) = stored else {
        return Err(ApiError::not_found(format!(
            "no checkpoint of size {}",
            cp.size
        )));
    };
    if !stored.starts_with(&opened.text) {
        return Err(ApiError::bad_request(
            "not the checkpoint the ledger signed for that size",
        ));
    }
    let cosigners = verify_cosignatures(&opened.text, &opened.other_signatures, &policy.witnesses)
        .map_err(|e| ApiError::unauthorized(format!("cosignature: {e}")))?;
    if cosigners.is_empty() {
        return Err(ApiError::unauthorized(
            "no cosignature from a witness of the ledger's policy",
        ));
    }
    for witness in &cosigners {
        let Some(verifier) = policy.witnesses.get(witness) else {
            continue;
        };
        let line = opened
            .other_signatures
            .iter()
            .find(|l| matches!(verifier.verify_line(&opened.text, l), Ok(Some(_))))
            .cloned()
            .unwrap_or_default();
        sqlx::query(
            "INSERT INTO ledger_cosignatures (size, witness, line, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (size, witness) DO NOTHING",
        )
        .bind(to_i64(cp.size))
        .bind(witness)
        .bind(format!("{line}\n"))
        .bind(s.clock.now_ms())
        .execute(db.pool())
        .await
        .map_err(StoreError::from)?;
    }
    try_publish(&s).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The ledger's state, for operators.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerStatus {
    /// Checkpoint origin (and key name).
    pub origin: String,
    /// Verifier key of the ledger's signature.
    pub verifier_key: String,
    /// Leaves sequenced.
    pub size: u64,
    /// Size of the latest published checkpoint.
    pub published_size: Option<u64>,
    /// Entries waiting to be sequenced.
    pub pending: i64,
    /// Size of the newest signed checkpoint and the witnesses that cosigned it.
    pub newest_checkpoint: Option<u64>,
    /// Witnesses that cosigned the newest checkpoint.
    pub newest_cosigners: Vec<String>,
    /// The witness policy in force.
    pub policy: String,
}

async fn status(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
) -> ApiResult<Json<LedgerStatus>> {
    let db = s.registry.db();
    let mut conn = db.pool().acquire().await.map_err(StoreError::from)?;
    let head = read_head(&mut conn).await?;
    drop(conn);
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_pending")
        .fetch_one(db.pool())
        .await
        .map_err(StoreError::from)?;
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(size) FROM ledger_checkpoints")
        .fetch_one(db.pool())
        .await
        .map_err(StoreError::from)?;
    let newest_cosigners: Vec<String> = match newest {
        Some(n) => sqlx::query_scalar(
            "SELECT witness FROM ledger_cosignatures WHERE size = $1 ORDER BY witness",
        )
        .bind(n)
        .fetch_all(db.pool())
        .await
        .map_err(StoreError::from)?,
        None => vec![],
    };
    Ok(Json(LedgerStatus {
        origin: s.ledger.origin.clone(),
        verifier_key: s.ledger.verifier_key(),
        size: head.size,
        published_size: current_published(&s).await?.map(|(size, _)| size),
        pending,
        newest_checkpoint: newest.and_then(|n| u64::try_from(n).ok()),
        newest_cosigners,
        policy: policy(&s).await?.0,
    }))
}

async fn put_policy(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<AdminRole>,
    body: Bytes,
) -> ApiResult<Response> {
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the policy is not UTF-8"))?;
    let parsed = WitnessPolicy::parse(text)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()))?;
    if parsed.log.name() != s.ledger.origin
        || veksel_merkle::checkpoint::NoteVerifier::parse(&s.ledger.verifier_key())
            .ok()
            .as_ref()
            != Some(&parsed.log)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "the policy's log key must be this ledger's: {}",
                s.ledger.verifier_key()
            ),
        ));
    }
    sqlx::query(
        "INSERT INTO ledger_policy (id, text, updated_at) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at",
    )
    .bind(text)
    .bind(s.clock.now_ms())
    .execute(s.registry.db().pool())
    .await
    .map_err(StoreError::from)?;
    crate::changed(
        &s,
        &who,
        "ledger_policy.set",
        "ledger-policy",
        serde_json::json!({ "witnesses": parsed.witnesses.keys().collect::<Vec<_>>() }),
    )
    .await?;
    s.ledger_changed.notify_one();
    Ok(text_response(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        "no-store",
        text.to_owned(),
    ))
}

/// What a governance entry's commitment opens to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Opening {
    /// The audit record.
    pub record: i64,
    /// The salt, base64.
    pub salt: String,
    /// The committed details, exactly as hashed.
    pub document: String,
}

/// The salt and details behind a governance entry, for whoever may see the audit
/// trail: `commitment(salt, document)` equals the entry's commitment.
async fn opening(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
    Path(record): Path<i64>,
) -> ApiResult<Json<Opening>> {
    let row: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT actor, detail, salt FROM audit_events WHERE id = $1")
            .bind(record)
            .fetch_optional(s.registry.db().pool())
            .await
            .map_err(StoreError::from)?;
    match row {
        None => Err(ApiError::not_found(format!("no audit record {record}"))),
        Some((_, _, None)) => Err(ApiError::new(
            StatusCode::GONE,
            "erased",
            format!("audit record {record} was erased or is not in the ledger yet"),
        )),
        Some((actor, detail, Some(salt))) => Ok(Json(Opening {
            record,
            salt,
            document: serde_json::json!({ "actor": actor, "detail": detail }).to_string(),
        })),
    }
}

/// Erases the details and the salt of an audit record (the right to erasure). The
/// ledger entry stays, and no longer resolves to anything.
async fn erase(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<AdminRole>,
    Path(record): Path<i64>,
) -> ApiResult<StatusCode> {
    let done = sqlx::query(
        "UPDATE audit_events SET actor = 'erased', detail = '{}', salt = NULL WHERE id = $1",
    )
    .bind(record)
    .execute(s.registry.db().pool())
    .await
    .map_err(StoreError::from)?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found(format!("no audit record {record}")));
    }
    crate::changed(
        &s,
        &who,
        "audit_record.erase",
        &record.to_string(),
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
