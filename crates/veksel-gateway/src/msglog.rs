//! The message log, operational monitoring and the replay guard, written through one
//! task that groups concurrent writes into a single transaction (group commit): each
//! exchange still waits for its own record to be committed before the response is
//! released, but many exchanges share one commit (and one fsync when commits wait for
//! the disk).

use crate::merklelog;
use serde::Serialize;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use utoipa::ToSchema;
use veksel_merkle::Frontier;
use veksel_store::sqlx::{self, Row};
use veksel_store::{Db, StoreError};
use veksel_verify::log::LeafRecord;

/// Which side of an exchange a record was written by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The consumer's gateway (client proxy).
    Consumer,
    /// The provider's gateway (server proxy).
    Provider,
}

impl Side {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Consumer => "consumer",
            Side::Provider => "provider",
        }
    }
}

/// One message-log record: both signed descriptors of an exchange.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    /// `X-Road-Request-Id`.
    pub request_id: String,
    /// Side that wrote it.
    pub side: Side,
    /// `X-Road-Id`.
    pub xroad_id: String,
    /// Client.
    pub client: String,
    /// Service.
    pub service: String,
    /// HTTP method.
    pub method: String,
    /// Canonical target.
    pub target: String,
    /// Response status.
    pub status: u16,
    /// Consumer gateway.
    pub consumer_gateway: String,
    /// Provider gateway.
    pub provider_gateway: String,
    /// Canonical request descriptor (JSON).
    pub request_descriptor: Vec<u8>,
    /// Detached JWS over it.
    pub request_signature: String,
    /// Canonical response descriptor (JSON).
    pub response_descriptor: Vec<u8>,
    /// Detached JWS over it.
    pub response_signature: String,
    /// Request body, in full mode.
    pub request_body: Option<Vec<u8>>,
    /// Response body, in full mode.
    pub response_body: Option<Vec<u8>>,
    /// Why a body was not stored although the mode is full.
    pub body_note: Option<String>,
    /// Request body length.
    pub request_size: u64,
    /// Response body length.
    pub response_size: u64,
    /// Request creation time.
    pub created_at: i64,
    /// Time of logging.
    pub logged_at: i64,
}

/// One operational-monitoring record (X-Road op-monitoring equivalent).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpRecord {
    /// `X-Road-Request-Id` (empty when the request failed before one was assigned).
    pub request_id: String,
    /// `consumer` or `provider`.
    pub side: String,
    /// `X-Road-Id`.
    pub xroad_id: String,
    /// Client.
    pub client: String,
    /// Service.
    pub service: String,
    /// HTTP method.
    pub method: String,
    /// Consumer gateway.
    pub consumer_gateway: String,
    /// Provider gateway.
    pub provider_gateway: String,
    /// When the request arrived, Unix ms.
    pub request_in_ts: i64,
    /// When it was sent on, Unix ms.
    pub request_out_ts: Option<i64>,
    /// When the response arrived, Unix ms.
    pub response_in_ts: Option<i64>,
    /// When the response was released, Unix ms.
    pub response_out_ts: i64,
    /// Request body bytes.
    pub request_size: u64,
    /// Response body bytes.
    pub response_size: u64,
    /// HTTP status returned.
    pub status_code: Option<u16>,
    /// True when the exchange completed without a fault.
    pub succeeded: bool,
    /// Fault type, e.g. `Server.ServerProxy.AccessDenied`.
    pub fault_code: Option<String>,
    /// Fault message.
    pub fault_message: Option<String>,
}

enum Op {
    Message(Box<MessageRecord>, oneshot::Sender<Result<(), String>>),
    Monitor(Box<OpRecord>),
    Replay {
        request_id: String,
        expires_at: i64,
        reply: oneshot::Sender<Result<bool, String>>,
    },
}

/// Handle to the writer task.
#[derive(Debug, Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Op>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Op")
    }
}

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 512;

impl LogWriter {
    /// Starts the writer task over a database.
    pub fn start(db: Db) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8192);
        let task = tokio::spawn(write_loop(db, rx));
        (Self { tx }, task)
    }

    /// Writes a message-log record and waits until it is committed.
    pub async fn log_message(&self, record: MessageRecord) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Message(Box::new(record), reply))
            .await
            .map_err(|_| "message log writer has stopped".to_owned())?;
        rx.await
            .map_err(|_| "message log writer has stopped".to_owned())?
    }

    /// Queues an operational-monitoring record; does not wait (monitoring must never
    /// slow the exchange down). Dropped with a warning if the queue is full.
    pub fn monitor(&self, record: OpRecord) {
        if self.tx.try_send(Op::Monitor(Box::new(record))).is_err() {
            tracing::warn!("operational monitoring queue full; a record was dropped");
        }
    }

    /// Records a request id; `Ok(false)` means it was seen before (a replay).
    pub async fn claim_request_id(
        &self,
        request_id: &str,
        expires_at: i64,
    ) -> Result<bool, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Replay {
                request_id: request_id.to_owned(),
                expires_at,
                reply,
            })
            .await
            .map_err(|_| "replay guard writer has stopped".to_owned())?;
        rx.await
            .map_err(|_| "replay guard writer has stopped".to_owned())?
    }
}

async fn write_loop(db: Db, mut rx: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut head = merklelog::HeadCache::default();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let outcome = write_batch(&db, &batch, &mut head).await;
        for (op, result) in batch.drain(..).zip(outcome) {
            match op {
                Op::Message(_, reply) => {
                    let _ = reply.send(result.map(|_| ()));
                }
                Op::Replay { reply, .. } => {
                    let _ = reply.send(result);
                }
                Op::Monitor(_) => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "operational monitoring record lost");
                    }
                }
            }
        }
    }
}

/// Writes a batch in one transaction and returns one result per operation. If the
/// commit fails, every operation in the batch fails: nothing is acknowledged that
/// is not stored.
async fn write_batch(
    db: &Db,
    batch: &[Op],
    head: &mut merklelog::HeadCache,
) -> Vec<Result<bool, String>> {
    match try_write_batch(db, batch, head).await {
        Ok((results, Some((frontier, root_at)))) => {
            head.committed(frontier, root_at);
            results
        }
        Ok((results, None)) => results,
        Err(e) => {
            // The transaction rolled back: the frontier it advanced is not the head.
            head.reset();
            vec![Err(format!("message log database: {e}")); batch.len()]
        }
    }
}

/// One result per operation, and the new head if messages were appended.
type BatchOutcome = (Vec<Result<bool, String>>, Option<(Frontier, Option<i64>)>);

async fn try_write_batch(
    db: &Db,
    batch: &[Op],
    head: &merklelog::HeadCache,
) -> Result<BatchOutcome, String> {
    let mut tx = db.pool().begin().await.map_err(|e| e.to_string())?;
    let mut results = Vec::with_capacity(batch.len());
    // Loaded at the first message of the batch: each message becomes the next leaf.
    let mut frontier: Option<Frontier> = None;
    let mut last_logged = 0;
    for op in batch {
        let r = match op {
            Op::Message(m, _) => {
                if frontier.is_none() {
                    frontier = Some(
                        merklelog::load_frontier(&mut tx, db.backend(), head)
                            .await
                            .map_err(|e| e.to_string())?,
                    );
                }
                let Some(f) = frontier.as_mut() else {
                    return Err("no log frontier".into());
                };
                let leaf = leaf_record(i64::try_from(f.size()).unwrap_or(i64::MAX), m);
                let hash = leaf.hash();
                last_logged = last_logged.max(m.logged_at);
                let r = insert_message(&mut tx, &leaf, m, &hash).await.map(|()| true);
                f.push(hash);
                r
            }
            Op::Monitor(r) => insert_op(&mut tx, r).await.map(|()| true),
            Op::Replay { request_id, expires_at, .. } => sqlx::query(
                "INSERT INTO replay_guard (request_id, expires_at) VALUES ($1, $2) ON CONFLICT (request_id) DO NOTHING",
            )
            .bind(request_id)
            .bind(*expires_at)
            .execute(&mut *tx)
            .await
            .map(|d| d.rows_affected() == 1),
        };
        // A failed statement poisons a PostgreSQL transaction; fail the batch.
        results.push(Ok(r.map_err(|e| e.to_string())?));
    }
    let new_head = match frontier {
        Some(f) => {
            let root_at = merklelog::store_head(&mut tx, &f, last_logged, head)
                .await
                .map_err(|e| e.to_string())?;
            Some((f, root_at))
        }
        None => None,
    };
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok((results, new_head))
}

async fn insert_message(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    leaf: &LeafRecord,
    m: &MessageRecord,
    hash: &veksel_merkle::Hash,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO message_log (request_id, side, xroad_id, client, service, method, target, status,
            consumer_gateway, provider_gateway, request_descriptor, request_signature,
            response_descriptor, response_signature, request_body, response_body, body_note,
            request_size, response_size, created_at, logged_at, seq, leaf_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)",
    )
    .bind(&leaf.request_id)
    .bind(&leaf.side)
    .bind(&leaf.xroad_id)
    .bind(&leaf.client)
    .bind(&leaf.service)
    .bind(&leaf.method)
    .bind(&leaf.target)
    .bind(leaf.status)
    .bind(&leaf.consumer_gateway)
    .bind(&leaf.provider_gateway)
    .bind(&leaf.request_descriptor)
    .bind(&leaf.request_signature)
    .bind(&leaf.response_descriptor)
    .bind(&leaf.response_signature)
    // Borrowed, not cloned: full-mode bodies are up to max_logged_body_bytes each.
    .bind(m.request_body.as_deref())
    .bind(m.response_body.as_deref())
    .bind(leaf.body_note.clone())
    .bind(leaf.request_size)
    .bind(leaf.response_size)
    .bind(leaf.created_at)
    .bind(leaf.logged_at)
    .bind(leaf.seq)
    .bind(hash.to_vec())
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

async fn insert_op(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &OpRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO op_monitoring (request_id, side, xroad_id, client, service, method, consumer_gateway,
            provider_gateway, request_in_ts, request_out_ts, response_in_ts, response_out_ts,
            request_size, response_size, status_code, succeeded, fault_code, fault_message)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(&r.request_id)
    .bind(&r.side)
    .bind(&r.xroad_id)
    .bind(&r.client)
    .bind(&r.service)
    .bind(&r.method)
    .bind(&r.consumer_gateway)
    .bind(&r.provider_gateway)
    .bind(r.request_in_ts)
    .bind(r.request_out_ts)
    .bind(r.response_in_ts)
    .bind(r.response_out_ts)
    .bind(i64::try_from(r.request_size).unwrap_or(i64::MAX))
    .bind(i64::try_from(r.response_size).unwrap_or(i64::MAX))
    .bind(r.status_code.map(i64::from))
    .bind(i64::from(r.succeeded))
    .bind(r.fault_code.clone())
    .bind(r.fault_message.clone())
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// Deletes expired replay-guard entries now and then.
pub async fn replay_guard_janitor(db: Db, clock: veksel_proto::Clock) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        if let Err(e) = sqlx::query("DELETE FROM replay_guard WHERE expires_at < $1")
            .bind(clock.now_ms())
            .execute(db.pool())
            .await
        {
            tracing::warn!(error = %e, "replay guard cleanup failed");
        }
    }
}

/// A message-log record as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoggedMessage {
    /// Row id.
    pub id: i64,
    /// `X-Road-Request-Id`.
    pub request_id: String,
    /// `consumer` or `provider`.
    pub side: String,
    /// `X-Road-Id`.
    pub xroad_id: String,
    /// Client.
    pub client: String,
    /// Service.
    pub service: String,
    /// Method.
    pub method: String,
    /// Target.
    pub target: String,
    /// Status.
    pub status: i64,
    /// Consumer gateway.
    pub consumer_gateway: String,
    /// Provider gateway.
    pub provider_gateway: String,
    /// Signed request descriptor (JSON text). Security officers only: it names the
    /// end user (`X-Road-UserId`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_descriptor: Option<String>,
    /// Detached JWS over the request descriptor (security officers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_signature: Option<String>,
    /// Signed response descriptor (JSON text; security officers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_descriptor: Option<String>,
    /// Detached JWS over the response descriptor (security officers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_signature: Option<String>,
    /// Whether bodies are stored with the record.
    pub has_bodies: bool,
    /// Why bodies are missing in full mode.
    pub body_note: Option<String>,
    /// Request body bytes.
    pub request_size: i64,
    /// Response body bytes.
    pub response_size: i64,
    /// Request creation time, RFC 3339.
    pub created_at: String,
    /// Logging time, RFC 3339.
    pub logged_at: String,
}

/// Filters for message-log and monitoring queries.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct LogQuery {
    /// Only this request id.
    pub request_id: Option<String>,
    /// Only this client.
    pub client: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Only records at or after this time, Unix ms.
    pub since: Option<i64>,
    /// Only records before this time, Unix ms.
    pub until: Option<i64>,
    /// Most records (default 100, at most 1000).
    pub limit: Option<i64>,
}

const FILTER: &str =
    "WHERE ($1 = '' OR request_id = $1) AND ($2 = '' OR client = $2) AND ($3 = '' OR service = $3)";

fn bind_filter<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    q: &LogQuery,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(q.request_id.clone().unwrap_or_default())
        .bind(q.client.clone().unwrap_or_default())
        .bind(q.service.clone().unwrap_or_default())
        .bind(q.since.unwrap_or(0))
        .bind(q.until.unwrap_or(i64::MAX))
        .bind(q.limit.unwrap_or(100).clamp(1, 1000))
}

/// Reads message-log records, newest first.
pub async fn query_messages(db: &Db, q: &LogQuery) -> Result<Vec<LoggedMessage>, StoreError> {
    let sql = format!(
        "SELECT id, request_id, side, xroad_id, client, service, method, target, status, consumer_gateway,
            provider_gateway, request_descriptor, request_signature, response_descriptor, response_signature,
            CASE WHEN request_body IS NULL AND response_body IS NULL THEN 0 ELSE 1 END,
            body_note, request_size, response_size, created_at, logged_at
         FROM message_log {FILTER} AND logged_at >= $4 AND logged_at < $5 ORDER BY id DESC LIMIT $6"
    );
    let rows = bind_filter(sqlx::query(sqlx::AssertSqlSafe(sql)), q)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            Ok(LoggedMessage {
                id: r.try_get(0)?,
                request_id: r.try_get(1)?,
                side: r.try_get(2)?,
                xroad_id: r.try_get(3)?,
                client: r.try_get(4)?,
                service: r.try_get(5)?,
                method: r.try_get(6)?,
                target: r.try_get(7)?,
                status: r.try_get(8)?,
                consumer_gateway: r.try_get(9)?,
                provider_gateway: r.try_get(10)?,
                request_descriptor: Some(r.try_get(11)?),
                request_signature: Some(r.try_get(12)?),
                response_descriptor: Some(r.try_get(13)?),
                response_signature: Some(r.try_get(14)?),
                has_bodies: r.try_get::<i64, _>(15)? != 0,
                body_note: r.try_get(16)?,
                request_size: r.try_get(17)?,
                response_size: r.try_get(18)?,
                created_at: veksel_proto::rfc3339(r.try_get(19)?),
                logged_at: veksel_proto::rfc3339(r.try_get(20)?),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

impl LoggedMessage {
    /// The record as an observer may read it: its metadata without the signed
    /// descriptors, which name end users (the rule evidence export applies).
    pub fn metadata_only(self) -> Self {
        Self {
            request_descriptor: None,
            request_signature: None,
            response_descriptor: None,
            response_signature: None,
            ..self
        }
    }
}

/// Stored request and response bodies of one record.
pub type Bodies = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The stored bodies of one record: `(request, response)`.
pub async fn message_bodies(db: &Db, request_id: &str, side: &str) -> Result<Bodies, StoreError> {
    let row: Option<Bodies> = sqlx::query_as(
        "SELECT request_body, response_body FROM message_log WHERE request_id = $1 AND side = $2",
    )
    .bind(request_id)
    .bind(side)
    .fetch_optional(db.pool())
    .await?;
    row.ok_or_else(|| StoreError::NotFound(format!("message {request_id} ({side})")))
}

/// Reads operational-monitoring records, newest first.
pub async fn query_monitoring(db: &Db, q: &LogQuery) -> Result<Vec<OpRecord>, StoreError> {
    let sql = format!(
        "SELECT request_id, side, xroad_id, client, service, method, consumer_gateway, provider_gateway,
            request_in_ts, request_out_ts, response_in_ts, response_out_ts, request_size, response_size,
            status_code, succeeded, fault_code, fault_message
         FROM op_monitoring {FILTER} AND response_out_ts >= $4 AND response_out_ts < $5 ORDER BY id DESC LIMIT $6"
    );
    let rows = bind_filter(sqlx::query(sqlx::AssertSqlSafe(sql)), q)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            Ok(OpRecord {
                request_id: r.try_get(0)?,
                side: r.try_get(1)?,
                xroad_id: r.try_get(2)?,
                client: r.try_get(3)?,
                service: r.try_get(4)?,
                method: r.try_get(5)?,
                consumer_gateway: r.try_get(6)?,
                provider_gateway: r.try_get(7)?,
                request_in_ts: r.try_get(8)?,
                request_out_ts: r.try_get(9)?,
                response_in_ts: r.try_get(10)?,
                response_out_ts: r.try_get(11)?,
                request_size: u64::try_from(r.try_get::<i64, _>(12)?).unwrap_or_default(),
                response_size: u64::try_from(r.try_get::<i64, _>(13)?).unwrap_or_default(),
                status_code: r
                    .try_get::<Option<i64>, _>(14)?
                    .and_then(|s| u16::try_from(s).ok()),
                succeeded: r.try_get::<i64, _>(15)? != 0,
                fault_code: r.try_get(16)?,
                fault_message: r.try_get(17)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// The leaf of a new record at position `seq`.
pub(crate) fn leaf_record(seq: i64, m: &MessageRecord) -> LeafRecord {
    LeafRecord {
        v: 1,
        seq,
        request_id: m.request_id.clone(),
        side: m.side.as_str().to_owned(),
        xroad_id: m.xroad_id.clone(),
        client: m.client.clone(),
        service: m.service.clone(),
        method: m.method.clone(),
        target: m.target.clone(),
        status: i64::from(m.status),
        consumer_gateway: m.consumer_gateway.clone(),
        provider_gateway: m.provider_gateway.clone(),
        request_descriptor: String::from_utf8_lossy(&m.request_descriptor).into_owned(),
        request_signature: m.request_signature.clone(),
        response_descriptor: String::from_utf8_lossy(&m.response_descriptor).into_owned(),
        response_signature: m.response_signature.clone(),
        request_body_sha256: m.request_body.as_deref().map(veksel_pki::sha256_hex),
        response_body_sha256: m.response_body.as_deref().map(veksel_pki::sha256_hex),
        body_note: m.body_note.clone(),
        request_size: i64::try_from(m.request_size).unwrap_or(i64::MAX),
        response_size: i64::try_from(m.response_size).unwrap_or(i64::MAX),
        created_at: m.created_at,
        logged_at: m.logged_at,
    }
}
