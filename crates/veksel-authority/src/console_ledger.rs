//! The ledger explorer of the authority's console: the published checkpoint with
//! the witness policy and each witness's cosignature, the recent checkpoints, the
//! entries, and one entry with its inclusion proof.
//!
//! The server checks an entry the way an outside auditor's client does
//! ([`veksel_verify::ledger_client::prove_entry`] and the policy's note
//! verification); then `ledger.js` checks it again in the browser from the bytes on
//! the page alone (SHA-256 and Ed25519 of Web Crypto), so what the page says is not
//! just the authority's word.

use crate::AppState;
use crate::ledger::{self, CheckpointRow, EntryRow};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::sync::Arc;
use veksel_console::{BASE, Ctx, Words};
use veksel_merkle::checkpoint::Checkpoint;
use veksel_merkle::witness::WitnessPolicy;

/// Entries a page lists.
const ENTRIES_PER_PAGE: i64 = 50;
/// Checkpoints listed.
const CHECKPOINTS: i64 = 10;
/// The script that checks an entry's proof in the browser.
const LEDGER_JS: &str = include_str!("../templates/console/ledger.js");

/// The explorer's routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/ledger", get(ledger_page))
        .route("/console/ledger/{index}", get(entry_page))
        .route("/console/ledger.js", get(script))
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        LEDGER_JS,
    )
        .into_response()
}

/// One witness of the policy and what it did for the published checkpoint.
struct WitnessLine {
    name: String,
    state: &'static str,
    at: String,
}

/// The published checkpoint as the page shows it.
struct Published {
    size: u64,
    root_hex: String,
    note: String,
}

struct CheckpointLine {
    size: u64,
    created_at: String,
    published_at: String,
    cosigners: String,
}

struct EntryLine {
    index: u64,
    kind: String,
    subject: String,
    at: String,
}

#[derive(Template)]
#[template(path = "console/ledger.html")]
struct LedgerView<'a> {
    w: &'static Words,
    base: &'a str,
    origin: &'a str,
    published: Option<Published>,
    policy_text: String,
    witnesses: Vec<WitnessLine>,
    quorum_met: bool,
    checkpoints: Vec<CheckpointLine>,
    entries: Vec<EntryLine>,
    sequenced: u64,
    older: Option<u64>,
}

/// The signed text of a note: everything before the blank line, with its final
/// newline.
fn note_body(note: &str) -> Option<&str> {
    note.rfind("\n\n").map(|split| &note[..=split])
}

/// What each witness of `policy` did for the checkpoint in `note`.
fn witness_lines(w: &'static Words, policy: &WitnessPolicy, note: &str) -> Vec<WitnessLine> {
    let body = note_body(note);
    let lines: Vec<&str> = note
        .rsplit_once("\n\n")
        .map(|(_, sigs)| sigs.lines().collect())
        .unwrap_or_default();
    policy
        .witnesses
        .iter()
        .map(|(name, verifier)| {
            let mut state = w.missing;
            let mut at = String::new();
            for line in &lines {
                match body.map(|b| verifier.verify_line(b, line)) {
                    Some(Ok(Some(time))) => {
                        state = w.verified;
                        at = veksel_proto::rfc3339(i64::try_from(time).unwrap_or(0) * 1000);
                        break;
                    }
                    Some(Ok(None)) => {}
                    Some(Err(_)) | None => {
                        state = w.does_not_verify;
                        break;
                    }
                }
            }
            WitnessLine {
                name: name.clone(),
                state,
                at,
            }
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct ListQuery {
    before: Option<u64>,
}

fn entry_line(e: EntryRow) -> EntryLine {
    EntryLine {
        index: e.index,
        kind: e.kind,
        subject: e.subject,
        at: veksel_proto::rfc3339(e.at),
    }
}

async fn ledger_view<'a>(
    s: &'a AppState,
    ctx: &'a Ctx,
    before: Option<u64>,
) -> Result<LedgerView<'a>, veksel_store::StoreError> {
    let w = ctx.w();
    let (policy_text, policy) = ledger::policy(s).await?;
    let published = ledger::current_published(s).await?;
    let (witnesses, quorum_met, published) = match published {
        Some((size, note)) => {
            let quorum_met = policy.verify(&note).is_ok();
            let root_hex = note_body(&note)
                .and_then(|b| Checkpoint::parse(b).ok())
                .map(|c| hex::encode(c.root))
                .unwrap_or_default();
            (
                witness_lines(w, &policy, &note),
                quorum_met,
                Some(Published {
                    size,
                    root_hex,
                    note,
                }),
            )
        }
        None => (Vec::new(), false, None),
    };
    let sequenced = ledger::sequenced_size(s).await?;
    let start = before.unwrap_or(sequenced).min(sequenced);
    let entries = ledger::entries_before(s, start, ENTRIES_PER_PAGE).await?;
    let older = entries
        .last()
        .filter(|e| e.index > 0 && entries.len() as i64 == ENTRIES_PER_PAGE)
        .map(|e| e.index);
    let time = |ms: Option<i64>| ms.map(veksel_proto::rfc3339).unwrap_or_default();
    Ok(LedgerView {
        w,
        base: BASE,
        origin: s.ledger.origin(),
        published,
        policy_text,
        witnesses,
        quorum_met,
        checkpoints: ledger::recent_checkpoints(s, CHECKPOINTS)
            .await?
            .into_iter()
            .map(|c: CheckpointRow| CheckpointLine {
                size: c.size,
                created_at: time(Some(c.created_at)),
                published_at: time(c.published_at),
                cosigners: c.cosigners.join(", "),
            })
            .collect(),
        entries: entries.into_iter().map(entry_line).collect(),
        sequenced,
        older,
    })
}

async fn ledger_page(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<ListQuery>,
) -> Response {
    let ctx = Ctx::of(s.as_ref(), &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    match ledger_view(&s, &ctx, q.before).await {
        Ok(view) => ctx.page(StatusCode::OK, ctx.w().ledger, &view),
        Err(e) => {
            tracing::error!(error = %e, "the ledger could not be read");
            ctx.unavailable(ctx.w().ledger)
        }
    }
}

/// An entry's proof and what the browser needs to check it.
struct ProofView {
    size: u64,
    root_b64: String,
    hashes: Vec<String>,
    /// Why the server's check failed, if it did.
    server_error: Option<String>,
    note: String,
}

#[derive(Template)]
#[template(path = "console/ledger_entry.html")]
struct EntryView<'a> {
    w: &'static Words,
    base: &'a str,
    index: u64,
    entry: EntryLine,
    signer: String,
    payload: String,
    raw: String,
    raw_b64: String,
    leaf_hex: String,
    proof: Option<ProofView>,
    policy_text: String,
}

async fn entry_view<'a>(
    s: &AppState,
    ctx: &'a Ctx,
    index: u64,
) -> Result<Option<EntryView<'a>>, veksel_store::StoreError> {
    let Some((row, raw)) = ledger::entry(s, index).await? else {
        return Ok(None);
    };
    let (policy_text, policy) = ledger::policy(s).await?;
    let (payload, signer) = match veksel_verify::ledger_client::check_entry(&raw) {
        Ok((entry, signer)) => (
            serde_json::to_string_pretty(&entry).unwrap_or_default(),
            signer,
        ),
        Err(e) => (e, String::new()),
    };
    let proof = match ledger::current_published(s).await? {
        Some((size, note)) if index < size => {
            let checked = policy.verify(&note).map_err(|e| e.to_string());
            let proven = match &checked {
                Ok((cp, _)) => {
                    let tree = ledger::inclusion_tiles(s, index, size).await?;
                    veksel_verify::ledger_client::prove_entry(&tree, cp, index).map(|p| (cp, p))
                }
                Err(e) => Err(e.clone()),
            };
            Some(match proven {
                Ok((cp, p)) => ProofView {
                    size,
                    root_b64: STANDARD.encode(cp.root),
                    hashes: p.proof.iter().map(hex::encode).collect(),
                    server_error: None,
                    note,
                },
                Err(e) => ProofView {
                    size,
                    root_b64: String::new(),
                    hashes: Vec::new(),
                    server_error: Some(e),
                    note,
                },
            })
        }
        _ => None,
    };
    Ok(Some(EntryView {
        w: ctx.w(),
        base: BASE,
        index,
        entry: entry_line(row),
        signer,
        payload,
        raw: String::from_utf8_lossy(&raw).into_owned(),
        raw_b64: STANDARD.encode(&raw),
        leaf_hex: hex::encode(veksel_merkle::leaf_hash(&raw)),
        proof,
        policy_text,
    }))
}

async fn entry_page(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Path(index): Path<String>,
) -> Response {
    let ctx = Ctx::of(s.as_ref(), &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    let Ok(index) = index.parse::<u64>() else {
        return ctx.not_found(&index);
    };
    let title = format!("{} {index}", ctx.w().entry);
    match entry_view(&s, &ctx, index).await {
        Ok(Some(view)) => ctx.page(StatusCode::OK, &title, &view),
        Ok(None) => ctx.not_found(&title),
        Err(e) => {
            tracing::error!(error = %e, "the ledger could not be read");
            ctx.unavailable(ctx.w().ledger)
        }
    }
}
