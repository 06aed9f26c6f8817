//! The message log, operational monitoring and the replay guard: their records, the
//! one writer that commits them in groups ([`writer`]), the replay guard in memory
//! ([`replay`]), and the queries of the admin API.

pub mod replay;
pub mod writer;

pub use writer::{LogWriter, ReplayClaim, WriteError};

use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;
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
    /// The person both gateways verified (from the request descriptor), to find a
    /// person's records by.
    pub person_id: Option<String>,
    /// The salted hash of the person the request is about, where the service says
    /// which parameter names them (see [`crate::Gateway::subject_hash`]).
    pub subject_hash: Option<String>,
    /// The chains of the two signing certificates, by their leaf's `x5t#S256`, as
    /// [`veksel_proto::peer::encode_chain`] writes them: kept once per certificate.
    pub signing_chains: Vec<(String, String)>,
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

/// Deletes expired replay-guard entries now and then, in the database and in memory.
pub async fn replay_guard_janitor(
    db: Db,
    clock: veksel_proto::Clock,
    memory: std::sync::Arc<replay::ReplayGuard>,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        memory.purge(clock.now_ms());
        if let Err(e) = sqlx::query("DELETE FROM replay_guard WHERE expires_at < $1")
            .bind(clock.now_ms())
            .execute(db.pool())
            .await
        {
            tracing::warn!(error = %e, "replay guard cleanup failed");
        }
    }
}

/// The replay claims committed and still in their window (loaded at start): those of
/// exchanges that ended in a fault, and the provider's records logged within the
/// window (a record is its request's claim).
pub async fn unexpired_claims(
    db: &Db,
    now_ms: i64,
    window_ms: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut claims: Vec<(String, i64)> =
        sqlx::query_as("SELECT request_id, expires_at FROM replay_guard WHERE expires_at >= $1")
            .bind(now_ms)
            .fetch_all(db.pool())
            .await?;
    let logged: Vec<(String,)> = sqlx::query_as(
        "SELECT request_id FROM message_log WHERE side = 'provider' AND logged_at >= $1",
    )
    .bind(now_ms.saturating_sub(window_ms))
    .fetch_all(db.pool())
    .await?;
    let until = now_ms.saturating_add(window_ms);
    claims.extend(logged.into_iter().map(|(id,)| (id, until)));
    Ok(claims)
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
    /// The person both gateways verified from their ID token (security officers
    /// only). An `X-Road-UserId` in the descriptor is the information system's
    /// unverified claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
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
    /// Only records of exchanges for this verified person (message log only;
    /// security officers only).
    pub person: Option<String>,
    /// Only records at or after this time, Unix ms.
    pub since: Option<i64>,
    /// Only records before this time, Unix ms.
    pub until: Option<i64>,
    /// Most records (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// A value bound to a query's placeholder.
enum Bind {
    Text(String),
    Int(i64),
}

/// The `WHERE … ORDER BY id DESC LIMIT …` of a log query with only the filters given,
/// each its own placeholder: a database uses an index for `request_id = $1`, not for
/// `($1 = '' OR request_id = $1)`. `time` names the column the time range is on.
fn filtered(q: &LogQuery, time: &str, with_person: bool) -> (String, Vec<Bind>) {
    let mut conditions = Vec::new();
    let mut binds = Vec::new();
    let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let mut texts = vec![
        ("request_id", given(&q.request_id)),
        ("client", given(&q.client)),
        ("service", given(&q.service)),
    ];
    if with_person {
        texts.push(("person_id", given(&q.person)));
    }
    for (column, value) in texts {
        if let Some(v) = value {
            binds.push(Bind::Text(v));
            conditions.push(format!("{column} = ${}", binds.len()));
        }
    }
    binds.push(Bind::Int(q.since.unwrap_or(0)));
    conditions.push(format!("{time} >= ${}", binds.len()));
    binds.push(Bind::Int(q.until.unwrap_or(i64::MAX)));
    conditions.push(format!("{time} < ${}", binds.len()));
    binds.push(Bind::Int(q.limit.unwrap_or(100).clamp(1, 1000)));
    let sql = format!(
        "WHERE {} ORDER BY id DESC LIMIT ${}",
        conditions.join(" AND "),
        binds.len()
    );
    (sql, binds)
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for b in binds {
        query = match b {
            Bind::Text(t) => query.bind(t),
            Bind::Int(i) => query.bind(i),
        };
    }
    query
}

/// What a reader of the message log gets of each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Everything, the signed descriptors (which name end users) included.
    Full,
    /// The metadata only: the descriptors are neither read nor unpacked.
    Metadata,
}

/// Reads message-log records, newest first.
pub async fn query_messages(
    db: &Db,
    q: &LogQuery,
    detail: Detail,
) -> Result<Vec<LoggedMessage>, StoreError> {
    let descriptors = match detail {
        Detail::Full => {
            "request_descriptor, request_signature, response_descriptor, response_signature"
        }
        Detail::Metadata => "'', '', '', ''",
    };
    let (packed, person) = match detail {
        Detail::Full => ("descriptors_z", "person_id"),
        Detail::Metadata => ("NULL", "NULL"),
    };
    let (filter, binds) = filtered(q, "logged_at", true);
    let sql = format!(
        "SELECT id, request_id, side, xroad_id, client, service, method, target, status, consumer_gateway,
            provider_gateway, {descriptors},
            CASE WHEN request_body IS NULL AND response_body IS NULL THEN 0 ELSE 1 END,
            body_note, request_size, response_size, created_at, logged_at, {packed}, {person}
         FROM message_log {filter}"
    );
    let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            let message = LoggedMessage {
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
                request_descriptor: None,
                request_signature: None,
                response_descriptor: None,
                response_signature: None,
                person: None,
                has_bodies: r.try_get::<i64, _>(15)? != 0,
                body_note: r.try_get(16)?,
                request_size: r.try_get(17)?,
                response_size: r.try_get(18)?,
                created_at: veksel_proto::rfc3339(r.try_get(19)?),
                logged_at: veksel_proto::rfc3339(r.try_get(20)?),
            };
            if detail == Detail::Metadata {
                return Ok(message);
            }
            let (request_descriptor, response_descriptor) =
                match r.try_get::<Option<Vec<u8>>, _>(21)? {
                    Some(z) => crate::merklelog::unpack_descriptors(&z)
                        .map_err(|e| sqlx::Error::Decode(e.into()))?,
                    None => (r.try_get(11)?, r.try_get(13)?),
                };
            Ok(LoggedMessage {
                request_descriptor: Some(request_descriptor),
                request_signature: Some(r.try_get(12)?),
                response_descriptor: Some(response_descriptor),
                response_signature: Some(r.try_get(14)?),
                person: r.try_get(22)?,
                ..message
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// One exchange as monitoring charts count it.
#[derive(Debug, Clone)]
pub struct Timing {
    /// `consumer` or `provider`.
    pub side: String,
    /// The service.
    pub service: String,
    /// When the answer left, Unix ms.
    pub at_ms: i64,
    /// From request in to answer out, ms.
    pub duration_ms: i64,
    /// Whether it succeeded.
    pub succeeded: bool,
}

/// The monitoring records of exchanges answered at or after `since_ms`, newest
/// first, at most `limit`.
pub async fn timings_since(db: &Db, since_ms: i64, limit: i64) -> Result<Vec<Timing>, StoreError> {
    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT side, service, response_out_ts, response_out_ts - request_in_ts, succeeded
         FROM op_monitoring WHERE response_out_ts >= $1 ORDER BY response_out_ts DESC LIMIT $2",
    )
    .bind(since_ms)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(side, service, at_ms, duration_ms, ok)| Timing {
            side,
            service,
            at_ms,
            duration_ms,
            succeeded: ok != 0,
        })
        .collect())
}

/// A lookup of a person's data, as the person sees it.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// When, RFC 3339.
    pub at: String,
    /// The calling subsystem.
    pub client: String,
    /// The service.
    pub service: String,
    /// `X-Road-Issue`: the case the caller gave, if any.
    pub issue: Option<String>,
}

/// The provider's records of requests about the person whose salted hash is
/// `subject_hash`, newest first.
pub async fn lookups_about(
    db: &Db,
    subject_hash: &str,
    limit: i64,
) -> Result<Vec<Lookup>, StoreError> {
    let rows = sqlx::query(
        "SELECT client, service, logged_at, request_descriptor, descriptors_z FROM message_log
         WHERE subject_hash = $1 AND side = 'provider' ORDER BY id DESC LIMIT $2",
    )
    .bind(subject_hash)
    .bind(limit.clamp(1, 10_000))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let descriptor: String = match r.try_get::<Option<Vec<u8>>, _>(4)? {
                Some(z) => {
                    crate::merklelog::unpack_descriptors(&z)
                        .map_err(|e| sqlx::Error::Decode(e.into()))?
                        .0
                }
                None => r.try_get(3)?,
            };
            let issue =
                serde_json::from_str::<veksel_proto::descriptor::RequestDescriptor>(&descriptor)
                    .map_err(|e| sqlx::Error::Decode(e.into()))?
                    .issue;
            Ok(Lookup {
                client: r.try_get(0)?,
                service: r.try_get(1)?,
                at: veksel_proto::rfc3339(r.try_get(2)?),
                issue,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
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
    let (filter, binds) = filtered(q, "response_out_ts", false);
    let sql = format!(
        "SELECT request_id, side, xroad_id, client, service, method, consumer_gateway, provider_gateway,
            request_in_ts, request_out_ts, response_in_ts, response_out_ts, request_size, response_size,
            status_code, succeeded, fault_code, fault_message
         FROM op_monitoring {filter}"
    );
    let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
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
