//! Retention: message-log records older than the configured age move out of the
//! database into archive files — the idea of X-Road's hash-linked log archives, over
//! veksel's Merkle log.
//!
//! An archive file is gzip-compressed JSON Lines named `{first:012}-{next:012}.jsonl.gz`
//! holding the log positions `first..next`:
//!
//! 1. `{"header":{…}}`: format, gateway, checkpoint origin, the range, the SHA-256 of
//!    the previous archive file, the Merkle frontier before `first` (so the file can be
//!    verified on its own), the kept roots and time stamps in `first+1..=next` — the
//!    last one always at `next` — and the signed global configuration naming the CAs
//!    the stamps are checked against;
//! 2. `{"record":{"leaf":{…},"request_body":…,"response_body":…}}` per record, in order,
//!    bodies in standard base64;
//! 3. `{"end":{"records":…,"root":…}}`: the root at `next`, and a sign the file is whole.
//!
//! The database keeps, per archived record, only its position, leaf hash, request id
//! and side (for inclusion proofs and evidence export), and per file its name, range,
//! SHA-256 and end frontier; so deleting, changing or swapping an archive file is
//! caught by `veksel log verify`, and a directory of archives verifies on its own with
//! the network's anchor.

use crate::merklelog::{self, LEAF_COLUMNS, store_err};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::io::Write;
use std::path::{Path, PathBuf};
use veksel_merkle::Frontier;
use veksel_store::Db;
use veksel_store::sqlx::{self, Row};
use veksel_verify::archive::{
    ArchiveReader, ArchivedRecord, End, FORMAT, Header, KeptRoot, KeptStamp, Line, safe_name,
};
use veksel_verify::log::{LeafRecord, LogVerifyError};

/// Records read from the database per query while archiving.
const PAGE: i64 = 500;

/// When records are archived.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Records logged longer ago than this are archived, milliseconds.
    pub after_ms: i64,
    /// Most records in one file (exceeded only when time stamps are further apart).
    pub max_records: i64,
}

/// A file written by [`archive_once`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// File name in the archive directory.
    pub file: String,
    /// First position.
    pub first_seq: i64,
    /// One past the last position.
    pub next_seq: i64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// Why archiving stopped. Nothing is removed from the database unless its file is
/// complete and on disk.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The database failed.
    #[error("message-log database: {0}")]
    Store(String),
    /// Writing the file failed.
    #[error("archive file {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        reason: String,
    },
    /// The log is not what it should be; `veksel log verify` names the problem.
    #[error("{0}; archiving stopped, run `veksel log verify`")]
    Corrupt(String),
}

fn db_err(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Store(e.to_string())
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Writes through to `inner` and hashes what was written.
struct HashingWriter<W> {
    inner: W,
    digest: aws_lc_rs::digest::Context,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads through from `inner` and hashes what was read.
struct FileWriter {
    lines: tokio::sync::mpsc::Sender<Vec<u8>>,
    done: tokio::task::JoinHandle<std::io::Result<String>>,
}

impl FileWriter {
    fn create(path: PathBuf) -> Self {
        let (lines, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let done = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let file = std::fs::File::create(&path)?;
            let mut gz = flate2::write::GzEncoder::new(
                HashingWriter {
                    inner: std::io::BufWriter::new(file),
                    digest: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
                },
                flate2::Compression::default(),
            );
            while let Some(line) = rx.blocking_recv() {
                gz.write_all(&line)?;
            }
            let mut hashing = gz.finish()?;
            hashing.flush()?;
            let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            Ok(hex::encode(hashing.digest.finish().as_ref()))
        });
        Self { lines, done }
    }

    async fn line(&self, line: &Line) -> Result<(), String> {
        let mut bytes = serde_json::to_vec(line).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        self.lines
            .send(bytes)
            .await
            .map_err(|_| "the writer stopped".to_owned())
    }

    async fn finish(self) -> Result<String, String> {
        drop(self.lines);
        self.done
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

/// Moves the oldest records that are older than the policy's age and covered by a
/// time stamp into one new archive file. Returns `None` when there is nothing to move.
pub async fn archive_once(
    db: &Db,
    dir: &Path,
    gateway: &veksel_id::GatewayId,
    conf_jws: &str,
    policy: Policy,
    now_ms: i64,
) -> Result<Option<Archived>, ArchiveError> {
    let last: Option<(i64, String, Vec<u8>)> = sqlx::query_as(
        "SELECT next_seq, sha256, end_peaks FROM log_archives ORDER BY first_seq DESC LIMIT 1",
    )
    .fetch_optional(db.pool())
    .await
    .map_err(db_err)?;
    let (first, previous_sha256, start) = match last {
        Some((next, sha, peaks)) => (
            next,
            Some(sha),
            merklelog::frontier_from_row(next, &peaks).map_err(db_err)?,
        ),
        None => (0, None, Frontier::new()),
    };
    let cutoff = now_ms.saturating_sub(policy.after_ms);
    let (youngest,): (Option<i64>,) =
        sqlx::query_as("SELECT MIN(seq) FROM message_log WHERE seq >= $1 AND logged_at >= $2")
            .bind(first)
            .bind(cutoff)
            .fetch_one(db.pool())
            .await
            .map_err(db_err)?;
    let head: Option<(i64,)> = sqlx::query_as("SELECT size FROM log_head WHERE id = 1")
        .fetch_optional(db.pool())
        .await
        .map_err(db_err)?;
    let old_enough = youngest.unwrap_or(head.map_or(0, |h| h.0));
    if old_enough <= first {
        return Ok(None);
    }
    // A file ends where a time stamp covers the log, so each file is evidence on its own.
    let capped = old_enough.min(first.saturating_add(policy.max_records.max(1)));
    let stamp_sql =
        |agg: &str| format!("SELECT {agg}(size) FROM log_stamps WHERE size > $1 AND size <= $2");
    let (within_cap,): (Option<i64>,) = sqlx::query_as(sqlx::AssertSqlSafe(stamp_sql("MAX")))
        .bind(first)
        .bind(capped)
        .fetch_one(db.pool())
        .await
        .map_err(db_err)?;
    let next = match within_cap {
        Some(n) => n,
        None => {
            let (beyond_cap,): (Option<i64>,) =
                sqlx::query_as(sqlx::AssertSqlSafe(stamp_sql("MIN")))
                    .bind(first)
                    .bind(old_enough)
                    .fetch_one(db.pool())
                    .await
                    .map_err(db_err)?;
            match beyond_cap {
                Some(n) => n,
                None => return Ok(None),
            }
        }
    };
    let roots: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT size, root FROM log_roots WHERE size > $1 AND size <= $2 ORDER BY size",
    )
    .bind(first)
    .bind(next)
    .fetch_all(db.pool())
    .await
    .map_err(db_err)?;
    let stamps: Vec<(i64, Vec<u8>, Vec<u8>, String)> = sqlx::query_as(
        "SELECT size, root, token, tsa FROM log_stamps WHERE size > $1 AND size <= $2 ORDER BY size",
    )
    .bind(first)
    .bind(next)
    .fetch_all(db.pool())
    .await
    .map_err(db_err)?;
    let end_stamp_root = stamps
        .last()
        .filter(|s| s.0 == next)
        .map(|s| s.1.clone())
        .ok_or_else(|| ArchiveError::Corrupt(format!("no time stamp at size {next}")))?;
    let header = Header {
        format: FORMAT.to_owned(),
        gateway: gateway.to_string(),
        origin: crate::stamper::origin(gateway),
        first_seq: first,
        next_seq: next,
        previous_sha256,
        start_peaks: start.peaks().iter().map(|p| b64(p)).collect(),
        roots: roots
            .into_iter()
            .map(|(size, root)| KeptRoot {
                size,
                root: b64(&root),
            })
            .collect(),
        stamps: stamps
            .into_iter()
            .map(|(size, root, token, tsa)| KeptStamp {
                size,
                root: b64(&root),
                token: b64(&token),
                tsa,
            })
            .collect(),
        global_configuration: conf_jws.to_owned(),
        // Every chain this gateway keeps: among them those the file's records name.
        signing_chains: merklelog::signing_chains(db).await.map_err(db_err)?,
        created_at_ms: now_ms,
    };

    std::fs::create_dir_all(dir).map_err(|e| ArchiveError::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let name = format!("{first:012}-{next:012}.jsonl.gz");
    let partial = dir.join(format!(
        ".{name}.{}-{}.partial",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let io_err = |path: &Path, reason: String| ArchiveError::Io {
        path: path.display().to_string(),
        reason,
    };
    let writer = FileWriter::create(partial.clone());
    let written = write_records(db, &writer, header, start, next).await;
    let end = match written {
        Ok(end) if end.root()[..] == end_stamp_root[..] => end,
        Ok(_) => {
            let _ = writer.finish().await;
            let _ = std::fs::remove_file(&partial);
            return Err(ArchiveError::Corrupt(format!(
                "the records up to {next} do not give the root time-stamped at that size"
            )));
        }
        Err(e) => {
            let _ = writer.finish().await;
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let sha256 = writer.finish().await.map_err(|e| io_err(&partial, e))?;
    let path = dir.join(&name);
    if !claim_name(db, &partial, &path, first).await? {
        return Ok(None);
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e.to_string()))?;

    // Only now, with the file whole on disk, do the records leave the database.
    let mut tx = db.pool().begin().await.map_err(db_err)?;
    sqlx::query(
        "INSERT INTO log_archives (first_seq, next_seq, file, sha256, end_peaks, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(first)
    .bind(next)
    .bind(&name)
    .bind(&sha256)
    .bind(merklelog::encode_peaks(&end))
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    sqlx::query(
        "INSERT INTO log_leaves (seq, leaf_hash, request_id, side)
         SELECT seq, leaf_hash, request_id, side FROM message_log WHERE seq >= $1 AND seq < $2",
    )
    .bind(first)
    .bind(next)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    sqlx::query("DELETE FROM message_log WHERE seq >= $1 AND seq < $2")
        .bind(first)
        .bind(next)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(Some(Archived {
        file: name,
        first_seq: first,
        next_seq: next,
        sha256,
    }))
}

/// Gives the finished file its name, unless another archiver (a second node, or
/// `veksel log archive` beside a running gateway) got there first. A file under the
/// name that the database does not list and that nobody has touched for ten minutes is
/// the leftover of a crash and is replaced.
async fn claim_name(
    db: &Db,
    partial: &Path,
    path: &Path,
    first: i64,
) -> Result<bool, ArchiveError> {
    let io_err = |e: std::io::Error| ArchiveError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    match std::fs::hard_link(partial, path) {
        Ok(()) => {
            let _ = std::fs::remove_file(partial);
            return Ok(true);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            let _ = std::fs::remove_file(partial);
            return Err(io_err(e));
        }
    }
    let (listed,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM log_archives WHERE first_seq = $1")
            .bind(first)
            .fetch_one(db.pool())
            .await
            .map_err(db_err)?;
    let stale = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(600));
    if listed == 0 && stale {
        std::fs::rename(partial, path).map_err(io_err)?;
        return Ok(true);
    }
    let _ = std::fs::remove_file(partial);
    Ok(false)
}

/// Writes header, records `start.size()..next` and end; returns the frontier at `next`.
/// Every record's leaf hash is recomputed on the way: a log that does not verify is
/// not archived.
async fn write_records(
    db: &Db,
    writer: &FileWriter,
    header: Header,
    start: Frontier,
    next: i64,
) -> Result<Frontier, ArchiveError> {
    let write = |e: String| ArchiveError::Io {
        path: "(archive)".into(),
        reason: e,
    };
    let first = header.first_seq;
    writer
        .line(&Line::Header(Box::new(header)))
        .await
        .map_err(write)?;
    let mut frontier = start;
    let mut after = first - 1;
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEAF_COLUMNS} FROM message_log WHERE seq > $1 AND seq < $2 ORDER BY seq LIMIT $3"
        )))
        .bind(after)
        .bind(next)
        .bind(PAGE)
        .fetch_all(db.pool())
        .await
        .map_err(db_err)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let (leaf, stored) = merklelog::leaf_from_row(row).map_err(db_err)?;
            if u64::try_from(leaf.seq).ok() != Some(frontier.size()) {
                return Err(ArchiveError::Corrupt(format!(
                    "position {} is missing from the message log",
                    frontier.size()
                )));
            }
            let hash = leaf.hash();
            if stored.as_deref() != Some(&hash[..]) {
                return Err(ArchiveError::Corrupt(format!(
                    "record {} does not match its leaf hash",
                    leaf.seq
                )));
            }
            let request_body: Option<Vec<u8>> = row.try_get(15).map_err(db_err)?;
            let response_body: Option<Vec<u8>> = row.try_get(16).map_err(db_err)?;
            after = leaf.seq;
            writer
                .line(&Line::Record(Box::new(ArchivedRecord {
                    leaf,
                    request_body: request_body.as_deref().map(b64),
                    response_body: response_body.as_deref().map(b64),
                })))
                .await
                .map_err(write)?;
            frontier.push(hash);
        }
    }
    let size = i64::try_from(frontier.size()).unwrap_or(i64::MAX);
    if size != next {
        return Err(ArchiveError::Corrupt(format!(
            "the message log ends at {size}, before the time-stamped size {next}"
        )));
    }
    writer
        .line(&Line::End(End {
            records: next - first,
            root: b64(&frontier.root()),
        }))
        .await
        .map_err(write)?;
    Ok(frontier)
}

/// The archived record at `seq`, read from the file that holds it and checked against
/// the leaf hash the database kept.
pub async fn find_record(
    db: &Db,
    dir: &Path,
    seq: i64,
) -> Result<Option<LeafRecord>, LogVerifyError> {
    let row: Option<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT a.file, l.leaf_hash FROM log_archives a JOIN log_leaves l ON l.seq = $1
         WHERE a.first_seq <= $1 AND a.next_seq > $1",
    )
    .bind(seq)
    .fetch_optional(db.pool())
    .await
    .map_err(store_err)?;
    let Some((file, kept)) = row else {
        return Ok(None);
    };
    if !safe_name(&file) {
        return Err(LogVerifyError::Archive {
            file,
            reason: "the database lists an unsafe file name".into(),
        });
    }
    let mut reader = ArchiveReader::open(&dir.join(&file))?;
    while let Some(record) = reader.next_record()? {
        if record.leaf.seq == seq {
            if record.leaf.hash()[..] != kept[..] {
                return Err(LogVerifyError::Record {
                    seq,
                    request_id: record.leaf.request_id,
                    reason: "the archived record does not match its leaf hash".into(),
                });
            }
            return Ok(Some(record.leaf));
        }
    }
    Ok(None)
}

/// One retention round: archive files until no old, time-stamped record is left in
/// the database (at most 1,000 files a round), then delete operational-monitoring
/// records past their keeping time.
pub async fn round(
    db: &Db,
    dir: &Path,
    config: &crate::GatewayConfig,
    conf_jws: &str,
    now_ms: i64,
) -> Result<Vec<Archived>, ArchiveError> {
    let mut written = Vec::new();
    if config.archive_after_secs > 0 {
        let policy = Policy {
            after_ms: i64::try_from(config.archive_after_secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
            max_records: i64::try_from(config.archive_max_records).unwrap_or(i64::MAX),
        };
        while written.len() < 1000 {
            match archive_once(db, dir, &config.id, conf_jws, policy, now_ms).await? {
                Some(a) => {
                    tracing::info!(file = %a.file, first = a.first_seq, next = a.next_seq, "message-log records archived");
                    written.push(a);
                }
                None => break,
            }
        }
    }
    if config.op_monitoring_keep_secs > 0 {
        let keep_ms = i64::try_from(config.op_monitoring_keep_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        sqlx::query("DELETE FROM op_monitoring WHERE response_out_ts < $1")
            .bind(now_ms.saturating_sub(keep_ms))
            .execute(db.pool())
            .await
            .map_err(db_err)?;
    }
    Ok(written)
}

/// A round for a running gateway, its outcome kept for `/readyz`.
pub async fn round_for(gw: &crate::Gateway) -> Result<Vec<Archived>, ArchiveError> {
    let result = match gw.conf.latest() {
        Some(conf) => {
            round(
                &gw.db,
                &gw.archive_dir,
                &gw.config,
                &conf.jws,
                gw.clock.now_ms(),
            )
            .await
        }
        None => Err(ArchiveError::Corrupt(
            "no global configuration to put into the archive".into(),
        )),
    };
    if let Ok(mut e) = gw.archive_error.lock() {
        *e = result.as_ref().err().map(ToString::to_string);
    }
    result
}

/// Runs a round every `archive_interval_secs`.
pub async fn archive_loop(gw: std::sync::Arc<crate::Gateway>) {
    let interval = std::time::Duration::from_secs(gw.config.archive_interval_secs.max(1));
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = round_for(&gw).await {
            tracing::warn!(error = %e, "archiving the message log failed");
        }
    }
}
