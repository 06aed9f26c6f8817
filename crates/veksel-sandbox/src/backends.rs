//! Synthetic registers and a diagnostic service, served over plain HTTP on 127.0.0.1
//! as the providers' information systems of the sandbox.
//!
//! All data is generated deterministically from the identifier asked for; none of it
//! describes a real person or company.

use axum::body::Body;
use axum::extract::{Path, Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

const FIRST: &[&str] = &[
    "Aputsiaq", "Naja", "Malik", "Ivalu", "Inuk", "Nivi", "Hans", "Karen", "Ole", "Sofie",
];
const LAST: &[&str] = &[
    "Lyberth",
    "Kleist",
    "Olsen",
    "Petersen",
    "Berthelsen",
    "Jensen",
    "Motzfeldt",
    "Kristiansen",
];
const TOWNS: &[&str] = &[
    "Nuuk",
    "Sisimiut",
    "Ilulissat",
    "Qaqortoq",
    "Aasiaat",
    "Maniitsoq",
    "Tasiilaq",
];
const TRADES: &[&str] = &[
    "Fisheries",
    "Construction",
    "Tourism",
    "Shipping",
    "Retail",
    "Mining services",
];

fn seed(s: &str) -> usize {
    s.bytes().fold(7usize, |a, b| {
        a.wrapping_mul(131).wrapping_add(usize::from(b))
    })
}

fn person(id: &str) -> serde_json::Value {
    let h = seed(id);
    json!({
        "id": id,
        "given_name": FIRST[h % FIRST.len()],
        "family_name": LAST[(h / 7) % LAST.len()],
        "birth_date": format!("19{:02}-{:02}-{:02}", 40 + h % 60, 1 + h % 12, 1 + h % 28),
        "municipality": TOWNS[(h / 3) % TOWNS.len()],
        "synthetic": true
    })
}

fn company(id: &str) -> serde_json::Value {
    let h = seed(id);
    json!({
        "id": id,
        "name": format!("{} {} ApS", LAST[h % LAST.len()], TRADES[(h / 5) % TRADES.len()]),
        "trade": TRADES[(h / 5) % TRADES.len()],
        "town": TOWNS[(h / 11) % TOWNS.len()],
        "employees": 1 + h % 250,
        "synthetic": true
    })
}

fn valid_id(id: &str) -> bool {
    (6..=12).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

fn not_found(what: &str, id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "message": format!("no {what} with id {id}")})),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct NameQuery {
    name: Option<String>,
}

/// The population register: `GET /persons/{id}`, `GET /persons?name=`.
pub fn population_register() -> Router {
    Router::new()
        .route(
            "/persons/{id}",
            get(|Path(id): Path<String>| async move {
                if valid_id(&id) {
                    Json(person(&id)).into_response()
                } else {
                    not_found("person", &id)
                }
            }),
        )
        .route(
            "/persons",
            get(|Query(q): Query<NameQuery>| async move {
                let name = q.name.unwrap_or_default().to_lowercase();
                let hits: Vec<_> = (100_000..100_050)
                    .map(|n| person(&n.to_string()))
                    .filter(|p| {
                        name.is_empty()
                            || p["family_name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_lowercase()
                                .contains(&name)
                    })
                    .take(20)
                    .collect();
                Json(json!({"persons": hits}))
            }),
        )
        .route("/openapi.json", get(|| async { Json(persons_openapi()) }))
}

/// The OpenAPI description of the population register.
pub fn persons_openapi() -> serde_json::Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Population register (synthetic)", "version": "1.0.0"},
        "paths": {
            "/persons": {"get": {"summary": "Search persons by family name", "parameters": [{"name": "name", "in": "query", "schema": {"type": "string"}}], "responses": {"200": {"description": "Matches"}}}},
            "/persons/{id}": {"get": {"summary": "One person", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}], "responses": {"200": {"description": "The person"}, "404": {"description": "Unknown id"}}}}
        }
    })
}

/// The tax agency's registers: `GET /companies/{id}`, `GET /incomes/{id}`.
pub fn tax_registers() -> Router {
    Router::new()
        .route(
            "/companies/{id}",
            get(|Path(id): Path<String>| async move {
                if valid_id(&id) { Json(company(&id)).into_response() } else { not_found("company", &id) }
            }),
        )
        .route(
            "/incomes/{id}",
            get(|Path(id): Path<String>| async move {
                if !valid_id(&id) {
                    return not_found("person", &id);
                }
                let h = seed(&id);
                Json(json!({"id": id, "year": 2025, "taxable_income_dkk": 180_000 + (h % 500) * 1_000, "synthetic": true})).into_response()
            }),
        )
}

/// The diagnostic service:
/// - `/status/{code}` answers with that status and a JSON error body,
/// - `/redirect` answers `302 Found` to `/echo`,
/// - `/bytes/{n}` streams `n` bytes of a repeating pattern (`?pause_ms=` pauses after
///   the first block),
/// - `/sleep/{ms}` answers after `ms` milliseconds (at most a minute),
/// - `/digest` consumes the body and returns its length and SHA-256,
/// - anything else echoes method, path, query, headers and body as JSON.
pub fn diagnostics() -> Router {
    Router::new()
        .route(
            "/status/{code}",
            any(|Path(code): Path<u16>| async move {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
                (
                    status,
                    Json(json!({"error": "requested_status", "status": status.as_u16()})),
                )
                    .into_response()
            }),
        )
        .route(
            "/redirect",
            any(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "/echo")],
                    "redirecting\n",
                )
                    .into_response()
            }),
        )
        .route("/bytes/{n}", get(bytes))
        .route(
            "/sleep/{ms}",
            any(|Path(ms): Path<u64>| async move {
                tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
                Json(json!({"slept_ms": ms.min(60_000)}))
            }),
        )
        .route("/digest", any(digest))
        .fallback(echo)
}

/// The repeating pattern `/bytes/{n}` serves, for checking large transfers: byte `i`
/// of the stream is `i % 251`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Length of [`pattern_block`]: a whole number of pattern periods, so consecutive
/// blocks continue the pattern.
pub const PATTERN_BLOCK_LEN: usize = 251 * 4096;

/// One block of the pattern, shared so streaming it copies nothing.
pub fn pattern_block() -> bytes::Bytes {
    static BLOCK: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    BLOCK
        .get_or_init(|| {
            (0..PATTERN_BLOCK_LEN as u64)
                .map(pattern_byte)
                .collect::<Vec<u8>>()
                .into()
        })
        .clone()
}

/// The pattern as a stream of `n` bytes.
pub fn pattern_stream(
    n: u64,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let block = pattern_block();
    futures_util::stream::unfold(0u64, move |sent| {
        let block = block.clone();
        async move {
            if sent >= n {
                return None;
            }
            let len = (PATTERN_BLOCK_LEN as u64).min(n - sent);
            Some((Ok(block.slice(..len as usize)), sent + len))
        }
    })
}

/// Options of `/bytes/{n}`.
#[derive(Debug, Deserialize)]
struct BytesOptions {
    /// Pause after the first block, milliseconds (at most a minute): tests use it to
    /// act while a body is under way.
    pause_ms: Option<u64>,
}

async fn bytes(Path(n): Path<u64>, Query(options): Query<BytesOptions>) -> Response {
    let pause = std::time::Duration::from_millis(options.pause_ms.unwrap_or(0).min(60_000));
    let stream = pattern_stream(n)
        .enumerate()
        .then(move |(i, block)| async move {
            if i == 1 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            block
        });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(header::CONTENT_LENGTH, n.into());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

async fn digest(req: Request) -> Response {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut length = 0u64;
    let mut stream = req.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                length += c.len() as u64;
                ctx.update(&c);
            }
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("body error: {e}\n")).into_response();
            }
        }
    }
    Json(json!({"length": length, "sha256": hex::encode(ctx.finish().as_ref())})).into_response()
}

async fn echo(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "echo takes at most 1 MiB; use /digest\n",
            )
                .into_response();
        }
    };
    let headers: Vec<(String, String)> = header_list(&parts.headers);
    Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_length": body.len(),
    }))
    .into_response()
}

fn header_list(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}
