//! Archive files of a message log (`veksel-log-archive/1`) as anyone reads and checks
//! them: the format, a reader that hashes every byte, and [`verify_dir`], which checks
//! a directory of archives with nothing but the network's anchor. The gateway writes
//! them and checks them against its database with the same reader.
//!
//! An archive file is gzip-compressed JSON Lines named `{first:012}-{next:012}.jsonl.gz`
//! holding the log positions `first..next`: a header (format, gateway, origin, range,
//! the previous file's SHA-256, the frontier before `first`, the kept roots and time
//! stamps, the signed global configuration), one line per record with its stored
//! bodies, and an end line with the root at `next`.

use crate::log::{Checker, LeafRecord, LogVerifyError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read};
use std::path::Path;
use veksel_merkle::{Frontier, Hash};
use veksel_proto::conf::Anchor;

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Format identifier in every archive header.
pub const FORMAT: &str = "veksel-log-archive/1";

/// Longest line read from an archive: a record with two bodies of the largest size the
/// log stores (10 MiB by default), in base64, fits well.
const MAX_LINE: u64 = 64 * 1024 * 1024;

/// A kept batch root inside an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptRoot {
    /// Log size.
    pub size: i64,
    /// Root, base64.
    pub root: String,
}

/// A time stamp inside an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptStamp {
    /// Log size it covers.
    pub size: i64,
    /// Root at that size, base64.
    pub root: String,
    /// RFC 3161 token (CMS, DER), base64.
    pub token: String,
    /// The TSA that issued it.
    pub tsa: String,
}

/// First line of an archive file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The gateway whose log this is.
    pub gateway: String,
    /// Checkpoint origin the time stamps were made for.
    pub origin: String,
    /// First position held.
    pub first_seq: i64,
    /// One past the last position held; a time stamp covers exactly this size.
    pub next_seq: i64,
    /// SHA-256 (hex) of the previous archive file; none for the first.
    pub previous_sha256: Option<String>,
    /// Merkle frontier (peak hashes, base64) of the log before `first_seq`.
    pub start_peaks: Vec<String>,
    /// Kept batch roots in `first_seq+1..=next_seq`.
    pub roots: Vec<KeptRoot>,
    /// Time stamps in `first_seq+1..=next_seq`.
    pub stamps: Vec<KeptStamp>,
    /// The signed global configuration (compact JWS) when the file was written.
    pub global_configuration: String,
    /// The signing chains the file's records name, by their leaf's `x5t#S256`
    /// (records logged before chains were kept apart carry theirs in `x5c`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub signing_chains: crate::log::Chains,
    /// When the file was written, Unix milliseconds.
    pub created_at_ms: i64,
}

/// One archived record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedRecord {
    /// The record exactly as its leaf hash was computed.
    pub leaf: LeafRecord,
    /// The stored request body, base64.
    pub request_body: Option<String>,
    /// The stored response body, base64.
    pub response_body: Option<String>,
}

/// Last line of an archive file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {
    /// Records in the file.
    pub records: i64,
    /// Root of the log at `next_seq`, base64.
    pub root: String,
}

/// One line of an archive file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    /// The header.
    Header(Box<Header>),
    /// A record.
    Record(Box<ArchivedRecord>),
    /// The end.
    End(End),
}

struct HashingReader<R> {
    inner: R,
    digest: aws_lc_rs::digest::Context,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

/// Compresses and writes an archive on a blocking thread, so compression never holds
/// up the runtime that serves exchanges.
/// Reads an archive file line by line, hashing every byte of it.
pub struct ArchiveReader {
    file: String,
    lines: std::io::BufReader<flate2::read::GzDecoder<HashingReader<std::fs::File>>>,
    header: Header,
    end: Option<End>,
}

impl std::fmt::Debug for ArchiveReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveReader")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl ArchiveReader {
    /// Opens a file and reads its header.
    pub fn open(path: &Path) -> Result<Self, LogVerifyError> {
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let bad = |reason: String| LogVerifyError::Archive {
            file: file.clone(),
            reason,
        };
        let f = std::fs::File::open(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        let mut reader = Self {
            file: file.clone(),
            lines: std::io::BufReader::new(flate2::read::GzDecoder::new(HashingReader {
                inner: f,
                digest: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            })),
            header: Header {
                format: String::new(),
                gateway: String::new(),
                origin: String::new(),
                first_seq: 0,
                next_seq: 0,
                previous_sha256: None,
                start_peaks: vec![],
                roots: vec![],
                stamps: vec![],
                global_configuration: String::new(),
                signing_chains: Default::default(),
                created_at_ms: 0,
            },
            end: None,
        };
        match reader.read_line()? {
            Some(Line::Header(h)) if h.format == FORMAT => reader.header = *h,
            Some(Line::Header(h)) => return Err(bad(format!("unknown format {:?}", h.format))),
            _ => return Err(bad("it does not begin with a header".into())),
        }
        Ok(reader)
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn bad(&self, reason: impl Into<String>) -> LogVerifyError {
        LogVerifyError::Archive {
            file: self.file.clone(),
            reason: reason.into(),
        }
    }

    fn read_line(&mut self) -> Result<Option<Line>, LogVerifyError> {
        let mut buf = Vec::new();
        let n = (&mut self.lines)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .map_err(|e| self.bad(format!("cannot be decompressed: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() != Some(&b'\n') {
            return Err(self.bad("a line is cut off or longer than allowed"));
        }
        serde_json::from_slice(&buf)
            .map(Some)
            .map_err(|e| self.bad(format!("a line is not a valid archive entry: {e}")))
    }

    /// The next record; `None` after the end line.
    pub fn next_record(&mut self) -> Result<Option<ArchivedRecord>, LogVerifyError> {
        if self.end.is_some() {
            return Ok(None);
        }
        match self.read_line()? {
            Some(Line::Record(r)) => Ok(Some(*r)),
            Some(Line::End(e)) => {
                self.end = Some(e);
                Ok(None)
            }
            Some(Line::Header(_)) => Err(self.bad("a second header")),
            None => Err(self.bad("it ends without its end line: the file is cut off")),
        }
    }

    /// Reads to the end of the file: nothing may follow the end line. Returns the end
    /// line and the SHA-256 (hex) of the whole file.
    pub fn finish(mut self) -> Result<(End, String), LogVerifyError> {
        while self.end.is_none() {
            self.next_record()?;
        }
        if self.read_line()?.is_some() {
            return Err(self.bad("there are lines after the end line"));
        }
        let file = self.file.clone();
        let end = self.end.take().ok_or_else(|| self.bad("no end line"))?;
        let mut hashing = self.lines.into_inner().into_inner();
        let mut rest = Vec::new();
        hashing
            .read_to_end(&mut rest)
            .map_err(|e| LogVerifyError::Archive {
                file: file.clone(),
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(LogVerifyError::Archive {
                file,
                reason: format!("{} bytes follow the compressed data", rest.len()),
            });
        }
        Ok((end, hex::encode(hashing.digest.finish().as_ref())))
    }
}

/// Stored bodies must be the ones whose hashes the record carries.
pub fn check_bodies(r: &ArchivedRecord) -> Result<(), LogVerifyError> {
    for (what, body, sha) in [
        ("request", &r.request_body, &r.leaf.request_body_sha256),
        ("response", &r.response_body, &r.leaf.response_body_sha256),
    ] {
        let actual = match body {
            Some(b) => Some(veksel_pki::sha256_hex(&STANDARD.decode(b).map_err(
                |_| LogVerifyError::Record {
                    seq: r.leaf.seq,
                    request_id: r.leaf.request_id.clone(),
                    reason: format!("the archived {what} body is not base64"),
                },
            )?)),
            None => None,
        };
        if actual.as_ref() != sha.as_ref() {
            return Err(LogVerifyError::Record {
                seq: r.leaf.seq,
                request_id: r.leaf.request_id.clone(),
                reason: format!("the archived {what} body is not the one that was logged"),
            });
        }
    }
    Ok(())
}

/// True for a file name without path or hidden-file tricks.
pub fn safe_name(file: &str) -> bool {
    !file.is_empty()
        && !file.starts_with('.')
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// What [`verify_dir`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirReport {
    /// Files checked, in order.
    pub files: Vec<String>,
    /// Records in them.
    pub records: u64,
    /// First position held (0 unless older files were moved elsewhere).
    pub first_seq: i64,
    /// One past the last position.
    pub next_seq: i64,
    /// Time stamps checked.
    pub stamps_checked: u64,
    /// Kept roots checked.
    pub roots_checked: u64,
}

fn decode_hash(file: &str, what: &str, s: &str) -> Result<Vec<u8>, LogVerifyError> {
    STANDARD
        .decode(s)
        .ok()
        .filter(|h| h.len() == 32)
        .ok_or_else(|| LogVerifyError::Archive {
            file: file.to_owned(),
            reason: format!("{what} is not a base64 SHA-256 hash"),
        })
}

/// Verifies a directory of archive files with nothing but the network's anchor: the
/// chain of file hashes, every record, and every kept root and time stamp against the
/// tree recomputed from the records (stamps checked against the CAs of the signed
/// configuration each file carries).
pub fn verify_dir(dir: &Path, anchor: &Anchor) -> Result<DirReport, LogVerifyError> {
    let mut files: Vec<(i64, String)> = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| LogVerifyError::Archive {
        file: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if safe_name(&name) && name.ends_with(".jsonl.gz") {
            let reader = ArchiveReader::open(&entry.path())?;
            files.push((reader.header().first_seq, name));
        }
    }
    files.sort();
    let first_file = files.first().ok_or_else(|| LogVerifyError::Archive {
        file: dir.display().to_string(),
        reason: "no archive files".into(),
    })?;
    let mut report = DirReport {
        files: vec![],
        records: 0,
        first_seq: first_file.0,
        next_seq: first_file.0,
        stamps_checked: 0,
        roots_checked: 0,
    };
    let mut previous: Option<(String, Frontier)> = None;
    let mut conf_roots: Option<(String, veksel_pki::verify::Roots)> = None;
    for (_, file) in files {
        let bad = |reason: String| LogVerifyError::Archive {
            file: file.clone(),
            reason,
        };
        let mut reader = ArchiveReader::open(&dir.join(&file))?;
        let h = reader.header().clone();
        let gateway: veksel_id::GatewayId = h
            .gateway
            .parse()
            .map_err(|e| bad(format!("gateway: {e}")))?;
        if h.origin != crate::log::origin(&gateway) {
            return Err(bad("its checkpoint origin is not its gateway's".into()));
        }
        let peaks: Vec<Hash> = h
            .start_peaks
            .iter()
            .map(|p| {
                decode_hash(&file, "a start peak", p)
                    .and_then(|v| v.try_into().map_err(|_| bad("a start peak".into())))
            })
            .collect::<Result<_, _>>()?;
        let start = Frontier::from_peaks(u64::try_from(h.first_seq).unwrap_or(u64::MAX), peaks)
            .ok_or_else(|| bad("its starting frontier does not fit its first position".into()))?;
        match &previous {
            Some((sha, end)) => {
                if h.previous_sha256.as_ref() != Some(sha) {
                    return Err(bad(
                        "it does not name the file before it: a file is missing or was replaced"
                            .into(),
                    ));
                }
                if &start != end {
                    return Err(bad(format!(
                        "it starts at {}, but the file before it ends at {}",
                        h.first_seq,
                        end.size()
                    )));
                }
            }
            None if h.first_seq == 0 && h.previous_sha256.is_some() => {
                return Err(bad("the first file names a previous one".into()));
            }
            None => {}
        }
        if h.stamps.last().map(|s| s.size) != Some(h.next_seq) {
            return Err(bad("it does not end at a time-stamped size".into()));
        }
        if conf_roots
            .as_ref()
            .is_none_or(|(jws, _)| *jws != h.global_configuration)
        {
            let (_, roots) = crate::evidence::network_conf(&h.global_configuration, anchor)
                .map_err(|e| bad(format!("global configuration: {e}")))?;
            conf_roots = Some((h.global_configuration.clone(), roots));
        }
        let cas = conf_roots.as_ref().map(|(_, r)| r);
        let roots = h
            .roots
            .iter()
            .map(|r| Ok((r.size, decode_hash(&file, "a kept root", &r.root)?)))
            .collect::<Result<Vec<_>, LogVerifyError>>()?;
        let stamps = h
            .stamps
            .iter()
            .map(|s| {
                Ok((
                    s.size,
                    decode_hash(&file, "a stamped root", &s.root)?,
                    STANDARD
                        .decode(&s.token)
                        .map_err(|_| bad("a time-stamp token is not base64".into()))?,
                ))
            })
            .collect::<Result<Vec<_>, LogVerifyError>>()?;
        let mut checker = Checker::new(start, roots, stamps, &h.origin, cas, &h.signing_chains);
        while let Some(record) = reader.next_record()? {
            check_bodies(&record)?;
            checker.push(&record.leaf)?;
        }
        let (end, sha) = reader.finish()?;
        let (frontier, roots_checked, stamps_checked) = checker.finish()?;
        if i64::try_from(frontier.size()).unwrap_or(i64::MAX) != h.next_seq
            || end.records != h.next_seq - h.first_seq
        {
            return Err(bad(format!(
                "it should hold positions {}..{}",
                h.first_seq, h.next_seq
            )));
        }
        if end.root != b64(&frontier.root()) {
            return Err(bad("its end root is not the recomputed root".into()));
        }
        report.records += u64::try_from(end.records).unwrap_or_default();
        report.next_seq = h.next_seq;
        report.roots_checked += roots_checked;
        report.stamps_checked += stamps_checked;
        report.files.push(file.clone());
        previous = Some((sha, frontier));
    }
    Ok(report)
}
