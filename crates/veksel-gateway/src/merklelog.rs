//! The message log as an append-only Merkle log (RFC 9162 hashing).
//!
//! Every record is a leaf: its position (`seq`, contiguous from 0) and every stored
//! column go into the leaf's canonical bytes, stored bodies by their SHA-256. After
//! each committed batch the tree's size and root are kept (`log_roots`), and the
//! current head with its frontier (`log_head`), so `verify` can recompute everything
//! and name the first record that was modified, removed, inserted or moved.

use crate::msglog::MessageRecord;
use serde::{Deserialize, Serialize};
use veksel_merkle::{Frontier, Hash, leaf_hash};
use veksel_store::sqlx::{self, Row};
use veksel_store::{Backend, Db, StoreError};

/// The canonical content of one leaf. Field order is the serialisation order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafRecord {
    /// Format version.
    pub v: u32,
    /// Position in the log.
    pub seq: i64,
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
    /// Signed request descriptor.
    pub request_descriptor: String,
    /// Its JWS.
    pub request_signature: String,
    /// Signed response descriptor.
    pub response_descriptor: String,
    /// Its JWS.
    pub response_signature: String,
    /// SHA-256 (hex) of the stored request body.
    pub request_body_sha256: Option<String>,
    /// SHA-256 (hex) of the stored response body.
    pub response_body_sha256: Option<String>,
    /// Why bodies are missing in full mode.
    pub body_note: Option<String>,
    /// Request body length.
    pub request_size: i64,
    /// Response body length.
    pub response_size: i64,
    /// Request creation time.
    pub created_at: i64,
    /// Logging time.
    pub logged_at: i64,
}

fn sha256_hex(b: &[u8]) -> String {
    veksel_pki::sha256_hex(b)
}

impl LeafRecord {
    /// The leaf for a new record at position `seq`.
    pub fn from_message(seq: i64, m: &MessageRecord) -> Self {
        Self {
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
            request_body_sha256: m.request_body.as_deref().map(sha256_hex),
            response_body_sha256: m.response_body.as_deref().map(sha256_hex),
            body_note: m.body_note.clone(),
            request_size: i64::try_from(m.request_size).unwrap_or(i64::MAX),
            response_size: i64::try_from(m.response_size).unwrap_or(i64::MAX),
            created_at: m.created_at,
            logged_at: m.logged_at,
        }
    }

    /// Canonical bytes.
    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The leaf hash.
    pub fn hash(&self) -> Hash {
        leaf_hash(&self.bytes())
    }
}

pub(crate) fn encode_peaks(f: &Frontier) -> Vec<u8> {
    f.peaks().iter().flat_map(|p| p.iter().copied()).collect()
}

pub(crate) fn frontier_from_row(size: i64, peaks: &[u8]) -> Result<Frontier, StoreError> {
    let size = u64::try_from(size).map_err(|_| StoreError::Corrupt("negative log size".into()))?;
    let hashes: Vec<Hash> = peaks
        .chunks(32)
        .map(|c| {
            c.try_into()
                .map_err(|_| StoreError::Corrupt("log frontier is not whole hashes".into()))
        })
        .collect::<Result<_, _>>()?;
    Frontier::from_peaks(size, hashes)
        .ok_or_else(|| StoreError::Corrupt("log frontier does not fit the log size".into()))
}

/// What the message-log writer remembers of the head it last committed, so that a
/// batch costs one statement for the head instead of four. With SQLite the writer is
/// the only one appending, so its own frontier is current; with PostgreSQL several
/// nodes may append, so the head is still read under a row lock every batch.
#[derive(Debug, Default)]
pub struct HeadCache {
    frontier: Option<Frontier>,
    head_row_exists: bool,
    last_root_at: Option<i64>,
}

impl HeadCache {
    /// Remembers the head of a committed batch.
    pub fn committed(&mut self, frontier: Frontier, last_root_at: Option<i64>) {
        self.frontier = Some(frontier);
        self.head_row_exists = true;
        self.last_root_at = last_root_at;
    }

    /// Forgets everything after a failed batch: the next one reads the database.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The current frontier inside a write transaction; on PostgreSQL the head row is
/// locked, so nodes sharing the database append one batch at a time.
pub async fn load_frontier(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    cache: &HeadCache,
) -> Result<Frontier, StoreError> {
    if backend == Backend::Sqlite
        && let Some(f) = &cache.frontier
    {
        return Ok(f.clone());
    }
    let sql = match backend {
        Backend::Postgres => "SELECT size, peaks FROM log_head WHERE id = 1 FOR UPDATE",
        Backend::Sqlite => "SELECT size, peaks FROM log_head WHERE id = 1",
    };
    // The head row exists before anyone locks it, so two nodes starting an empty log
    // cannot both begin at position 0.
    if !cache.head_row_exists {
        sqlx::query(
            "INSERT INTO log_head (id, size, root, peaks, updated_at) VALUES (1, 0, $1, $2, 0) ON CONFLICT (id) DO NOTHING",
        )
        .bind(veksel_merkle::empty_root().to_vec())
        .bind(Vec::<u8>::new())
        .execute(&mut **tx)
        .await?;
    }
    let (size, peaks): (i64, Vec<u8>) = sqlx::query_as(sql).fetch_one(&mut **tx).await?;
    frontier_from_row(size, &peaks)
}

/// Batch roots are kept at most this often; between them the head still moves.
const ROOT_INTERVAL_MS: i64 = 1000;

/// Stores the head, and the root of this batch if the last kept root is older than
/// [`ROOT_INTERVAL_MS`]. Returns when the last root was kept.
pub async fn store_head(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    f: &Frontier,
    now_ms: i64,
    cache: &HeadCache,
) -> Result<Option<i64>, StoreError> {
    let size = i64::try_from(f.size()).unwrap_or(i64::MAX);
    let root = f.root().to_vec();
    sqlx::query(
        "INSERT INTO log_head (id, size, root, peaks, updated_at) VALUES (1, $1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET size = excluded.size, root = excluded.root, peaks = excluded.peaks,
           updated_at = excluded.updated_at",
    )
    .bind(size)
    .bind(root.clone())
    .bind(encode_peaks(f))
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    let last = match cache.last_root_at {
        Some(at) => Some(at),
        None => sqlx::query_as::<_, (i64,)>("SELECT at FROM log_roots ORDER BY size DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?
            .map(|(at,)| at),
    };
    if last.is_none_or(|at| now_ms - at >= ROOT_INTERVAL_MS) {
        sqlx::query("INSERT INTO log_roots (size, root, at) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING")
            .bind(size)
            .bind(root)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
        return Ok(Some(now_ms));
    }
    Ok(last)
}

/// The columns [`leaf_from_row`] reads, in its order.
pub const LEAF_COLUMNS: &str = "seq, request_id, side, xroad_id, client, service, method, target, status, consumer_gateway,
    provider_gateway, request_descriptor, request_signature, response_descriptor, response_signature,
    request_body, response_body, body_note, request_size, response_size, created_at, logged_at, leaf_hash";

/// A record as stored, with the leaf hash stored beside it.
pub fn leaf_from_row(
    row: &sqlx::any::AnyRow,
) -> Result<(LeafRecord, Option<Vec<u8>>), sqlx::Error> {
    let request_body: Option<Vec<u8>> = row.try_get(15)?;
    let response_body: Option<Vec<u8>> = row.try_get(16)?;
    let leaf = LeafRecord {
        v: 1,
        seq: row.try_get(0)?,
        request_id: row.try_get(1)?,
        side: row.try_get(2)?,
        xroad_id: row.try_get(3)?,
        client: row.try_get(4)?,
        service: row.try_get(5)?,
        method: row.try_get(6)?,
        target: row.try_get(7)?,
        status: row.try_get(8)?,
        consumer_gateway: row.try_get(9)?,
        provider_gateway: row.try_get(10)?,
        request_descriptor: row.try_get(11)?,
        request_signature: row.try_get(12)?,
        response_descriptor: row.try_get(13)?,
        response_signature: row.try_get(14)?,
        request_body_sha256: request_body.as_deref().map(sha256_hex),
        response_body_sha256: response_body.as_deref().map(sha256_hex),
        body_note: row.try_get(17)?,
        request_size: row.try_get(18)?,
        response_size: row.try_get(19)?,
        created_at: row.try_get(20)?,
        logged_at: row.try_get(21)?,
    };
    Ok((leaf, row.try_get(22)?))
}

/// The outcome of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Of them, records in archive files.
    pub archived: u64,
    /// Root of the whole log.
    pub root: Hash,
    /// Stored batch roots that were checked.
    pub roots_checked: u64,
    /// Time stamps that were checked.
    pub stamps_checked: u64,
    /// Records written before the log became a Merkle log (not covered).
    pub uncovered: u64,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogVerifyError {
    /// A record's content does not match what was logged.
    #[error("record {seq} (request {request_id}): {reason}")]
    Record {
        /// Its position.
        seq: i64,
        /// Its request id.
        request_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A record is missing or out of place.
    #[error("position {seq}: {reason}")]
    Position {
        /// The position expected.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
    /// The recomputed tree disagrees with a stored root.
    #[error(
        "the log's root at size {size} does not match the recomputed tree: a record before position {size} was changed"
    )]
    Root {
        /// The size of the stored root.
        size: i64,
    },
    /// A time stamp does not fit the log or does not verify.
    #[error("time stamp at size {size}: {reason}")]
    Stamp {
        /// The size the stamp claims to cover.
        size: i64,
        /// What is wrong.
        reason: String,
    },
    /// The database could not be read.
    #[error("reading the log: {0}")]
    Store(String),
    /// An archive file is missing, changed, out of its chain or malformed.
    #[error("archive {file}: {reason}")]
    Archive {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
}

/// A storage error while verifying.
pub(crate) fn store_err(e: impl std::fmt::Display) -> LogVerifyError {
    LogVerifyError::Store(e.to_string())
}

/// A time stamp as kept: log size, stamped root, token.
pub type KeptStamp = (i64, Vec<u8>, Vec<u8>);

/// Recomputes the log leaf by leaf and checks every kept root and time stamp when the
/// recomputed tree reaches its size: over the database, over archive files, or both
/// in turn.
#[derive(Debug)]
pub struct Checker<'a> {
    frontier: Frontier,
    roots: std::iter::Peekable<std::vec::IntoIter<(i64, Vec<u8>)>>,
    stamps: std::iter::Peekable<std::vec::IntoIter<KeptStamp>>,
    origin: &'a str,
    cas: Option<&'a veksel_pki::verify::Roots>,
    roots_checked: u64,
    stamps_checked: u64,
}

impl<'a> Checker<'a> {
    /// Starts at `start` (empty for a whole log) with the kept roots `(size, root)` and
    /// stamps `(size, root, token)` in size order; those at or below the start are
    /// outside what is checked and skipped.
    pub fn new(
        start: Frontier,
        roots: Vec<(i64, Vec<u8>)>,
        stamps: Vec<KeptStamp>,
        origin: &'a str,
        cas: Option<&'a veksel_pki::verify::Roots>,
    ) -> Self {
        let first = i64::try_from(start.size()).unwrap_or(i64::MAX);
        let mut roots = roots.into_iter().peekable();
        while roots.next_if(|(size, _)| *size <= first).is_some() {}
        let mut stamps = stamps.into_iter().peekable();
        while stamps.next_if(|(size, _, _)| *size <= first).is_some() {}
        Self {
            frontier: start,
            roots,
            stamps,
            origin,
            cas,
            roots_checked: 0,
            stamps_checked: 0,
        }
    }

    /// The tree recomputed so far.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// Adds the next record, whose leaf hash was stored as `stored`; it must match.
    pub fn push_stored(
        &mut self,
        leaf: &LeafRecord,
        stored: Option<&[u8]>,
    ) -> Result<(), LogVerifyError> {
        self.push_inner(leaf, Some(stored))
    }

    /// Adds the next record, with no stored leaf hash to compare (archive files alone:
    /// a changed record then shows as a root or stamp that no longer matches).
    pub fn push(&mut self, leaf: &LeafRecord) -> Result<(), LogVerifyError> {
        self.push_inner(leaf, None)
    }

    fn push_inner(
        &mut self,
        leaf: &LeafRecord,
        stored: Option<Option<&[u8]>>,
    ) -> Result<(), LogVerifyError> {
        let expected = i64::try_from(self.frontier.size()).unwrap_or(i64::MAX);
        if leaf.seq != expected {
            return Err(LogVerifyError::Position {
                seq: expected,
                reason: format!(
                    "the next record found is at position {}: records are missing or out of order",
                    leaf.seq
                ),
            });
        }
        let bad = |reason: String| LogVerifyError::Record {
            seq: leaf.seq,
            request_id: leaf.request_id.clone(),
            reason,
        };
        let hash = leaf.hash();
        if let Some(stored) = stored
            && stored != Some(&hash[..])
        {
            return Err(bad(
                "its content does not match its leaf hash (modified, or moved from another position)"
                    .into(),
            ));
        }
        check_signed_content(leaf).map_err(bad)?;
        self.frontier.push(hash);
        let size = i64::try_from(self.frontier.size()).unwrap_or(i64::MAX);
        while let Some((root_size, root)) = self.roots.next_if(|(s, _)| *s <= size) {
            if root_size != size {
                return Err(LogVerifyError::Position {
                    seq: root_size,
                    reason: "a kept root's size is not a position the log passed".into(),
                });
            }
            if root != self.frontier.root() {
                return Err(LogVerifyError::Root { size });
            }
            self.roots_checked += 1;
        }
        while let Some((stamp_size, stamped_root, token)) =
            self.stamps.next_if(|(s, _, _)| *s <= size)
        {
            check_stamp(
                stamp_size,
                size,
                &stamped_root,
                &token,
                &self.frontier,
                self.origin,
                self.cas,
            )?;
            self.stamps_checked += 1;
        }
        Ok(())
    }

    /// Ends the check: no kept root or stamp may lie beyond the recomputed tree.
    /// Returns the tree, and how many roots and stamps were checked.
    pub fn finish(mut self) -> Result<(Frontier, u64, u64), LogVerifyError> {
        if let Some((size, _, _)) = self.stamps.next() {
            return Err(LogVerifyError::Stamp {
                size,
                reason: format!(
                    "a time stamp covers {size} records, but the log has only {}",
                    self.frontier.size()
                ),
            });
        }
        if let Some((size, _)) = self.roots.next() {
            return Err(LogVerifyError::Position {
                seq: i64::try_from(self.frontier.size()).unwrap_or(i64::MAX),
                reason: format!("the log once had {size} records; the last ones are missing"),
            });
        }
        Ok((self.frontier, self.roots_checked, self.stamps_checked))
    }
}

/// Checks the whole message log — the archive files first, then the database:
/// positions, leaf hashes, stored bodies, every stored batch root, time stamp and the
/// head. Returns the first problem, in log order.
///
/// Each time stamp must cover exactly the recomputed root at its size (for the
/// checkpoint with `origin`) and verify against `cas` (the approved CAs).
pub async fn verify(
    db: &Db,
    archive_dir: &std::path::Path,
    origin: &str,
    cas: Option<&veksel_pki::verify::Roots>,
) -> Result<VerifyReport, LogVerifyError> {
    let roots: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT size, root FROM log_roots ORDER BY size")
            .fetch_all(db.pool())
            .await
            .map_err(store_err)?;
    let stamps: Vec<(i64, Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT size, root, token FROM log_stamps ORDER BY size")
            .fetch_all(db.pool())
            .await
            .map_err(store_err)?;
    let mut checker = Checker::new(Frontier::new(), roots, stamps, origin, cas);
    let archived = crate::archive::verify_listed(db, archive_dir, &mut checker).await?;
    let mut after: i64 = i64::try_from(checker.frontier().size()).unwrap_or(i64::MAX) - 1;
    const PAGE: i64 = 500;
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEAF_COLUMNS} FROM message_log WHERE seq IS NOT NULL AND seq > $1 ORDER BY seq LIMIT $2"
        )))
        .bind(after)
        .bind(PAGE)
        .fetch_all(db.pool())
        .await
        .map_err(store_err)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let (leaf, stored) = leaf_from_row(row).map_err(store_err)?;
            checker.push_stored(&leaf, stored.as_deref())?;
            after = leaf.seq;
        }
    }
    let (frontier, roots_checked, stamps_checked) = checker.finish()?;
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT size, root FROM log_head WHERE id = 1")
            .fetch_optional(db.pool())
            .await
            .map_err(store_err)?;
    if let Some((size, root)) = head {
        if u64::try_from(size).ok() != Some(frontier.size()) {
            return Err(LogVerifyError::Position {
                seq: i64::try_from(frontier.size()).unwrap_or(i64::MAX),
                reason: format!("the log head says {size} records"),
            });
        }
        if root != frontier.root() {
            return Err(LogVerifyError::Root { size });
        }
    }
    let (uncovered,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM message_log WHERE seq IS NULL")
        .fetch_one(db.pool())
        .await
        .map_err(store_err)?;
    Ok(VerifyReport {
        records: frontier.size(),
        archived,
        root: frontier.root(),
        roots_checked,
        stamps_checked,
        uncovered: u64::try_from(uncovered).unwrap_or_default(),
    })
}

fn check_stamp(
    stamp_size: i64,
    size: i64,
    stamped_root: &[u8],
    token: &[u8],
    frontier: &Frontier,
    origin: &str,
    cas: Option<&veksel_pki::verify::Roots>,
) -> Result<(), LogVerifyError> {
    let bad = |reason: String| LogVerifyError::Stamp {
        size: stamp_size,
        reason,
    };
    if stamp_size != size {
        return Err(bad("the stamp's size is not a position in the log".into()));
    }
    let root = frontier.root();
    if stamped_root != root {
        return Err(LogVerifyError::Root { size });
    }
    let cas = cas.ok_or_else(|| {
        bad(
            "no approved CAs to check the time stamp against (no cached global configuration)"
                .into(),
        )
    })?;
    let hash = crate::stamper::stamped_hash(origin, u64::try_from(size).unwrap_or_default(), &root);
    veksel_pki::tsa::verify_token(token, &hash, cas, &[]).map_err(|e| bad(e.to_string()))?;
    Ok(())
}

/// The signed descriptors must verify with the keys in their own `x5c` certificates,
/// and the stored columns must agree with what was signed.
pub fn check_signed_content(leaf: &LeafRecord) -> Result<(), String> {
    for (what, descriptor, signature) in [
        ("request", &leaf.request_descriptor, &leaf.request_signature),
        (
            "response",
            &leaf.response_descriptor,
            &leaf.response_signature,
        ),
    ] {
        let parsed = veksel_proto::batch::MessageSignature::parse(signature, descriptor.as_bytes())
            .map_err(|e| format!("{what} signature is malformed: {e}"))?;
        let chain = parsed
            .header()
            .chain_der()
            .map_err(|e| format!("{what} signature: {e}"))?;
        let cert = chain
            .first()
            .ok_or_else(|| format!("{what} signature carries no certificate"))?;
        let info = veksel_pki::CertInfo::parse(cert)
            .map_err(|e| format!("{what} signing certificate: {e}"))?;
        parsed.verify(&info.public_key).map_err(|_| {
            format!("the {what} signature does not verify over the logged {what} descriptor")
        })?;
    }
    let req: veksel_proto::descriptor::RequestDescriptor =
        serde_json::from_str(&leaf.request_descriptor)
            .map_err(|e| format!("request descriptor: {e}"))?;
    let resp: veksel_proto::descriptor::ResponseDescriptor =
        serde_json::from_str(&leaf.response_descriptor)
            .map_err(|e| format!("response descriptor: {e}"))?;
    let consistent = req.request_id == leaf.request_id
        && resp.request_id == leaf.request_id
        && req.client.to_string() == leaf.client
        && req.service.to_string() == leaf.service
        && req.method == leaf.method
        && req.target == leaf.target
        && i64::from(resp.status) == leaf.status
        && resp.request_hash
            == veksel_proto::descriptor::request_hash(leaf.request_descriptor.as_bytes());
    if !consistent {
        return Err("the stored fields disagree with the signed descriptors".into());
    }
    Ok(())
}
