//! Evidence bundles: one exchange, exported with everything needed to prove it to a
//! third party offline — the logged record, its inclusion proof in the message log,
//! the checkpoint and its RFC 3161 time stamp, and the signed global configuration that
//! names the approved CAs. [`verify`] needs only the bundle and the network's anchor.
//!
//! The bundle is JSON (`veksel-evidence/1`); every binary part is standard base64 and
//! every signature is in a standard format (ES256 JWS, CMS time-stamp token), so the
//! checks can be repeated with other tools (docs/evidence.md).

use crate::merklelog::{self, LEAF_COLUMNS};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use veksel_merkle::checkpoint::Checkpoint;
use veksel_merkle::{Hash, inclusion_proof};
use veksel_store::sqlx::{self, Row};
use veksel_store::{Db, StoreError};
use veksel_verify::evidence::{Bundle, FORMAT};

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No such record.
    #[error("no {side} record of request {request_id} in this gateway's message log")]
    NotFound {
        /// Request id.
        request_id: String,
        /// Side.
        side: String,
    },
    /// The record is not covered by a time stamp yet.
    #[error(
        "record {seq} is not yet covered by a time stamp; the next stamp comes within the stamp interval"
    )]
    NotStamped {
        /// Its position.
        seq: i64,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something stored is inconsistent.
    #[error("{0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for ExportError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

fn b64(h: &[u8]) -> String {
    STANDARD.encode(h)
}

/// Exports the bundle of one exchange from a gateway's database.
pub async fn export(
    db: &Db,
    archive_dir: &std::path::Path,
    gateway: &veksel_id::GatewayId,
    request_id: &str,
    side: &str,
    conf_jws: &str,
) -> Result<Bundle, ExportError> {
    let not_found = || ExportError::NotFound {
        request_id: request_id.to_owned(),
        side: side.to_owned(),
    };
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LEAF_COLUMNS} FROM message_log WHERE request_id = $1 AND side = $2 AND seq IS NOT NULL"
    )))
    .bind(request_id)
    .bind(side)
    .fetch_optional(db.pool())
    .await?;
    let record = match row {
        Some(row) => merklelog::leaf_from_row(&row)?.0,
        None => {
            // Archived: the database still knows its position; the file has the record.
            let seq: (i64,) =
                sqlx::query_as("SELECT seq FROM log_leaves WHERE request_id = $1 AND side = $2")
                    .bind(request_id)
                    .bind(side)
                    .fetch_optional(db.pool())
                    .await?
                    .ok_or_else(not_found)?;
            crate::archive::find_record(db, archive_dir, seq.0)
                .await
                .map_err(|e| ExportError::Corrupt(e.to_string()))?
                .ok_or_else(not_found)?
        }
    };
    let stamp: Option<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT size, root, token FROM log_stamps WHERE size > $1 ORDER BY size LIMIT 1",
    )
    .bind(record.seq)
    .fetch_optional(db.pool())
    .await?;
    let (size, root, token) = stamp.ok_or(ExportError::NotStamped { seq: record.seq })?;
    // The proof needs the leaf hashes up to the stamped size; they are read in order.
    let rows = sqlx::query(
        "SELECT leaf_hash FROM (SELECT seq, leaf_hash FROM log_leaves WHERE seq < $1
           UNION ALL SELECT seq, leaf_hash FROM message_log WHERE seq IS NOT NULL AND seq < $1) AS t
         ORDER BY seq",
    )
    .bind(size)
    .fetch_all(db.pool())
    .await?;
    let leaves: Vec<Hash> = rows
        .iter()
        .map(|r| {
            r.try_get::<Vec<u8>, _>(0)
                .map_err(ExportError::from)
                .and_then(|v| {
                    v.try_into()
                        .map_err(|_| ExportError::Corrupt("a leaf hash is not 32 bytes".into()))
                })
        })
        .collect::<Result<_, _>>()?;
    let size_u = u64::try_from(size).unwrap_or_default();
    if leaves.len() as u64 != size_u {
        return Err(ExportError::Corrupt(format!(
            "the log has {} leaves below the stamped size {size}",
            leaves.len()
        )));
    }
    let seq = u64::try_from(record.seq).unwrap_or_default();
    let proof =
        inclusion_proof(&leaves, seq, size_u).map_err(|e| ExportError::Corrupt(e.to_string()))?;
    let root: Hash = root
        .try_into()
        .map_err(|_| ExportError::Corrupt("stamped root is not 32 bytes".into()))?;
    let checkpoint = Checkpoint {
        origin: crate::stamper::origin(gateway),
        size: size_u,
        root,
        extensions: vec![],
    };
    let named: Vec<String> = [
        (&record.request_signature, &record.request_descriptor),
        (&record.response_signature, &record.response_descriptor),
    ]
    .into_iter()
    .filter_map(|(sig, desc)| {
        veksel_proto::batch::MessageSignature::parse(sig, desc.as_bytes())
            .ok()
            .and_then(|m| m.header().x5t_s256.clone())
    })
    .collect();
    let signing_chains = merklelog::signing_chains(db)
        .await?
        .into_iter()
        .filter(|(x5t, _)| named.contains(x5t))
        .collect();
    Ok(Bundle {
        signing_chains,
        format: FORMAT.to_owned(),
        gateway: gateway.to_string(),
        record,
        tree_size: size_u,
        root: b64(&root),
        inclusion_proof: proof.iter().map(|h| b64(h)).collect(),
        checkpoint: checkpoint.body(),
        time_stamp_token: b64(&token),
        global_configuration: conf_jws.to_owned(),
    })
}
