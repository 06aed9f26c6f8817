//! The message log as an append-only Merkle log (RFC 9162 hashing).
//!
//! Every record is a leaf: its position (`seq`, contiguous from 0) and every stored
//! column go into the leaf's canonical bytes, stored bodies by their SHA-256. After
//! each committed batch the tree's size and root are kept (`log_roots`), and the
//! current head with its frontier (`log_head`), so `verify` can recompute everything
//! and name the first record that was modified, removed, inserted or moved.

use base64::Engine;
use std::path::Path;
use veksel_merkle::{Frontier, Hash};
use veksel_store::sqlx::{self, Row};
use veksel_store::{Backend, Db, StoreError};
use veksel_verify::archive::{ArchiveReader, check_bodies, safe_name};
use veksel_verify::log::{Checker, LeafRecord, LogVerifyError};

fn sha256_hex(b: &[u8]) -> String {
    veksel_pki::sha256_hex(b)
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

    /// The frontier of the last committed batch, when known.
    pub fn frontier(&self) -> Option<&Frontier> {
        self.frontier.as_ref()
    }

    /// When the last batch root was kept, when known.
    pub fn last_root_at(&self) -> Option<i64> {
        self.last_root_at
    }
}

/// Creates the head row of an empty log (it exists before anyone locks it, so two
/// nodes starting an empty log cannot both begin at position 0).
pub const CREATE_HEAD: &str = "INSERT INTO log_head (id, size, root, peaks, updated_at) VALUES (1, 0, $1, $2, 0) ON CONFLICT (id) DO NOTHING";
/// Reads the head (SQLite: one writer; PostgreSQL locks the row, see [`load_frontier`]).
pub const SELECT_HEAD: &str = "SELECT size, peaks FROM log_head WHERE id = 1";
/// Stores the head after a batch.
pub const STORE_HEAD: &str =
    "INSERT INTO log_head (id, size, root, peaks, updated_at) VALUES (1, $1, $2, $3, $4)
 ON CONFLICT (id) DO UPDATE SET size = excluded.size, root = excluded.root, peaks = excluded.peaks,
   updated_at = excluded.updated_at";
/// When the last batch root was kept.
pub const LAST_ROOT_AT: &str = "SELECT at FROM log_roots ORDER BY size DESC LIMIT 1";
/// Keeps a batch root.
pub const KEEP_ROOT: &str =
    "INSERT INTO log_roots (size, root, at) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING";

/// True when a batch committed at `now_ms` keeps its root.
pub fn root_due(last_root_at: Option<i64>, now_ms: i64) -> bool {
    last_root_at.is_none_or(|at| now_ms - at >= ROOT_INTERVAL_MS)
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
        Backend::Sqlite => SELECT_HEAD,
    };
    // The head row exists before anyone locks it, so two nodes starting an empty log
    // cannot both begin at position 0.
    if !cache.head_row_exists {
        sqlx::query(CREATE_HEAD)
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
    sqlx::query(STORE_HEAD)
        .bind(size)
        .bind(root.clone())
        .bind(encode_peaks(f))
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    let last = match cache.last_root_at {
        Some(at) => Some(at),
        None => sqlx::query_as::<_, (i64,)>(LAST_ROOT_AT)
            .fetch_optional(&mut **tx)
            .await?
            .map(|(at,)| at),
    };
    if root_due(last, now_ms) {
        sqlx::query(KEEP_ROOT)
            .bind(size)
            .bind(root)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
        return Ok(Some(now_ms));
    }
    Ok(last)
}

/// Most bytes two packed descriptors may unpack to (a descriptor carries at most
/// 100 headers of 8 KiB).
const MAX_UNPACKED: u64 = 4 * 1024 * 1024;

/// The two signed descriptors of a record as the log stores them: deflated together
/// (they share ids, parties and gateways), about half their size. The leaf and
/// everything that reads a record see them whole; only the stored bytes change.
pub fn pack_descriptors(request: &[u8], response: &[u8]) -> Vec<u8> {
    use flate2::FlushCompress;
    thread_local! {
        // A compressor allocates and zeroes some 300 KiB of tables: made once per
        // thread and reset for each record (new per record it was a twentieth of the
        // gateway's CPU under load).
        static DEFLATE: std::cell::RefCell<flate2::Compress> =
            std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::fast(), false));
    }
    let len = u32::try_from(request.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    DEFLATE.with(|z| {
        let mut z = z.borrow_mut();
        z.reset();
        let mut out = Vec::with_capacity((request.len() + response.len()) / 2 + 64);
        for (part, flush) in [
            (&len[..], FlushCompress::None),
            (request, FlushCompress::None),
            (response, FlushCompress::Finish),
        ] {
            deflate_into(&mut z, part, &mut out, flush);
        }
        out
    })
}

/// Feeds `input` to the compressor, growing `out` as needed; with
/// [`flate2::FlushCompress::Finish`], until the stream has ended.
fn deflate_into(
    z: &mut flate2::Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: flate2::FlushCompress,
) {
    let finish = flush == flate2::FlushCompress::Finish;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        let before = z.total_in();
        // Compressing into memory with room to write fails only on a corrupt stream
        // state, which a reset compressor does not have.
        let status = z.compress_vec(input, out, flush);
        let used = usize::try_from(z.total_in() - before).unwrap_or(input.len());
        input = input.get(used..).unwrap_or_default();
        match status {
            Ok(flate2::Status::StreamEnd) => return,
            Ok(_) if !finish && input.is_empty() => return,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "deflating descriptors failed");
                return;
            }
        }
    }
}

/// The descriptors [`pack_descriptors`] packed: `(request, response)`.
pub fn unpack_descriptors(packed: &[u8]) -> Result<(String, String), String> {
    use std::io::Read;
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(packed)
        .take(MAX_UNPACKED)
        .read_to_end(&mut raw)
        .map_err(|e| format!("packed descriptors: {e}"))?;
    let (len, rest) = raw
        .split_first_chunk::<4>()
        .ok_or("packed descriptors are cut short")?;
    let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
    if len > rest.len() {
        return Err("packed descriptors are cut short".into());
    }
    let (request, response) = rest.split_at(len);
    let text = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|_| "packed descriptors are not UTF-8".to_owned())
    };
    Ok((text(request)?, text(response)?))
}

/// A record's two descriptors from its row: packed (`descriptors_z`) or, for records
/// stored before descriptors were packed, as they are.
fn descriptors_of(
    row: &sqlx::any::AnyRow,
    request_col: usize,
    response_col: usize,
    packed_col: usize,
) -> Result<(String, String), sqlx::Error> {
    match row.try_get::<Option<Vec<u8>>, _>(packed_col)? {
        Some(z) => unpack_descriptors(&z).map_err(|e| sqlx::Error::Decode(e.into())),
        None => Ok((row.try_get(request_col)?, row.try_get(response_col)?)),
    }
}

/// The columns [`leaf_from_row`] reads, in its order.
pub const LEAF_COLUMNS: &str = "seq, request_id, side, xroad_id, client, service, method, target, status, consumer_gateway,
    provider_gateway, request_descriptor, request_signature, response_descriptor, response_signature,
    request_body, response_body, body_note, request_size, response_size, created_at, logged_at, leaf_hash,
    descriptors_z";

/// A record as stored, with the leaf hash stored beside it.
pub fn leaf_from_row(
    row: &sqlx::any::AnyRow,
) -> Result<(LeafRecord, Option<Vec<u8>>), sqlx::Error> {
    let request_body: Option<Vec<u8>> = row.try_get(15)?;
    let response_body: Option<Vec<u8>> = row.try_get(16)?;
    let (request_descriptor, response_descriptor) = descriptors_of(row, 11, 13, 23)?;
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
        request_descriptor,
        request_signature: row.try_get(12)?,
        response_descriptor,
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

/// A storage error while verifying.
pub(crate) fn store_err(e: impl std::fmt::Display) -> LogVerifyError {
    LogVerifyError::Store(e.to_string())
}

/// Checks the whole message log — the archive files first, then the database:
/// positions, leaf hashes, stored bodies, every stored batch root, time stamp and the
/// head. Returns the first problem, in log order.
///
/// Each time stamp must cover exactly the recomputed root at its size (for the
/// checkpoint with `origin`) and verify against `cas` (the approved CAs).
pub async fn verify(
    db: &Db,
    archive_dir: &Path,
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
    let chains = signing_chains(db).await.map_err(store_err)?;
    let mut checker = Checker::new(Frontier::new(), roots, stamps, origin, cas, &chains);
    let archived = verify_listed(db, archive_dir, &mut checker).await?;
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

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn peaks_b64(f: &Frontier) -> Vec<String> {
    f.peaks().iter().map(|p| b64(p)).collect()
}

/// Checks the archive files the database lists, in order, feeding their records to
/// `checker` and comparing each with the leaf hash the database kept for it. Returns
/// how many records were archived.
async fn verify_listed(
    db: &Db,
    dir: &Path,
    checker: &mut Checker<'_>,
) -> Result<u64, LogVerifyError> {
    let listed: Vec<(i64, i64, String, String)> = sqlx::query_as(
        "SELECT first_seq, next_seq, file, sha256 FROM log_archives ORDER BY first_seq",
    )
    .fetch_all(db.pool())
    .await
    .map_err(store_err)?;
    let mut previous: Option<String> = None;
    let mut archived = 0u64;
    for (first, next, file, sha256) in listed {
        let bad = |reason: String| LogVerifyError::Archive {
            file: file.clone(),
            reason,
        };
        if !safe_name(&file) {
            return Err(bad("the database lists an unsafe file name".into()));
        }
        let at = i64::try_from(checker.frontier().size()).unwrap_or(i64::MAX);
        if first != at {
            return Err(bad(format!(
                "it starts at position {first}, but the log before it ends at {at}"
            )));
        }
        let mut reader = ArchiveReader::open(&dir.join(&file))?;
        let h = reader.header();
        if h.first_seq != first || h.next_seq != next {
            return Err(bad(format!(
                "it holds {}..{}, the database says {first}..{next}",
                h.first_seq, h.next_seq
            )));
        }
        if h.previous_sha256 != previous {
            return Err(bad("it does not name the previous archive file".into()));
        }
        if h.start_peaks != peaks_b64(checker.frontier()) {
            return Err(bad(
                "its starting frontier is not the log's before it".into()
            ));
        }
        let kept: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, leaf_hash FROM log_leaves WHERE seq >= $1 AND seq < $2 ORDER BY seq",
        )
        .bind(first)
        .bind(next)
        .fetch_all(db.pool())
        .await
        .map_err(store_err)?;
        let mut kept = kept.into_iter();
        while let Some(record) = reader.next_record()? {
            check_bodies(&record)?;
            let stored = kept.next().filter(|(seq, _)| *seq == record.leaf.seq);
            checker.push_stored(&record.leaf, stored.as_ref().map(|(_, h)| h.as_slice()))?;
        }
        let (end, actual) = reader.finish()?;
        if actual != sha256 {
            return Err(bad(format!(
                "its SHA-256 is {actual}, the database recorded {sha256}: the file was changed or replaced"
            )));
        }
        if i64::try_from(checker.frontier().size()).unwrap_or(i64::MAX) != next
            || end.records != next - first
        {
            return Err(bad(format!(
                "it should hold {} records, it holds {}",
                next - first,
                end.records
            )));
        }
        if end.root != b64(&checker.frontier().root()) {
            return Err(bad("its end root is not the recomputed root".into()));
        }
        archived += u64::try_from(next - first).unwrap_or_default();
        previous = Some(sha256);
    }
    let (after_archives,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM log_leaves WHERE seq >= $1")
            .bind(i64::try_from(checker.frontier().size()).unwrap_or(i64::MAX))
            .fetch_one(db.pool())
            .await
            .map_err(store_err)?;
    if after_archives > 0 {
        return Err(LogVerifyError::Position {
            seq: i64::try_from(checker.frontier().size()).unwrap_or(i64::MAX),
            reason: "records were archived into a file the database no longer lists".into(),
        });
    }
    Ok(archived)
}

/// Every signing chain the log names, for checking its records (see
/// [`veksel_verify::log::Chains`]).
pub async fn signing_chains(db: &Db) -> Result<veksel_verify::log::Chains, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT x5t, chain FROM signing_chains")
        .fetch_all(db.pool())
        .await?;
    Ok(rows
        .into_iter()
        .map(|(x5t, chain)| (x5t, chain.split(',').map(str::to_owned).collect()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_pack_small_and_unpack_exactly() {
        let request = br#"{"typ":"veksel-request/1","request_id":"f0b075a1","client":"DEV/MUN/30000003/casework"}"#;
        let response = br#"{"typ":"veksel-response/1","request_id":"f0b075a1","client":"DEV/MUN/30000003/casework"}"#;
        let packed = pack_descriptors(request, response);
        assert!(
            packed.len() < request.len() + response.len(),
            "{}",
            packed.len()
        );
        let (q, r) = unpack_descriptors(&packed).unwrap();
        assert_eq!((q.as_bytes(), r.as_bytes()), (&request[..], &response[..]));
        assert!(unpack_descriptors(b"not deflate").is_err());
        assert!(unpack_descriptors(&packed[..packed.len() / 2]).is_err());
        // A length that points past the end is refused, not trusted.
        let liar = {
            use std::io::Write;
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&1000u32.to_be_bytes()).unwrap();
            z.write_all(b"short").unwrap();
            z.finish().unwrap()
        };
        assert!(unpack_descriptors(&liar).is_err());
    }

    #[test]
    fn a_reused_compressor_packs_each_record_alone() {
        // Large enough to fill the output several times over, and small ones after it:
        // nothing of one record may leak into the next.
        let big: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        let big = base64::engine::general_purpose::STANDARD.encode(big);
        for (request, response) in [
            (big.as_bytes(), b"{}".as_slice()),
            (b"{\"a\":1}", b"{\"b\":2}"),
            (b"", b""),
            (b"x", big.as_bytes()),
        ] {
            let packed = pack_descriptors(request, response);
            assert_eq!(packed, pack_descriptors(request, response));
            let (q, r) = unpack_descriptors(&packed).unwrap();
            assert_eq!((q.as_bytes(), r.as_bytes()), (request, response));
        }
    }
}
