//! Plumbing shared by the authority's and the gateways' admin APIs: one error type
//! with stable codes, bearer-token authentication with roles, and identifiers in
//! paths.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use veksel_store::tokens::TokenPrincipal;
use veksel_store::{Db, StoreError};

/// The body of every admin API error.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiErrorBody {
    /// Stable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `invalid` (well-formed but not acceptable), `unavailable`,
    /// `internal`.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// An admin API error: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// Result of admin API handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// Any error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Self::not_found(format!("not found: {m}")),
            StoreError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            other => {
                // The cause goes to the log; the caller learns only that storage failed.
                tracing::error!(error = %other, "database error");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            code: self.code.to_owned(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Authenticates the bearer token of a request and checks its role with `allows`
/// (which gets the token's role name). `needed` names the role in the refusal.
pub async fn authenticate(
    db: &Db,
    headers: &HeaderMap,
    needed: &str,
    allows: impl FnOnce(&str) -> bool,
) -> ApiResult<TokenPrincipal> {
    let refuse =
        || ApiError::unauthorized("a valid bearer token is required (Authorization: Bearer vka_…)");
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(refuse)?;
    let principal = veksel_store::tokens::authenticate(db, presented.trim())
        .await?
        .ok_or_else(refuse)?;
    if !allows(&principal.role) {
        return Err(ApiError::forbidden(format!(
            "this operation needs the {needed} role"
        )));
    }
    Ok(principal)
}

/// A role that routes need, checked against the bearer token of a request.
///
/// Handlers take [`Authorized`] as their first extractor after `State`: axum runs
/// extractors that read only the request head before the one that reads the body, so a
/// request without a token of the right role is refused before its body is read or
/// parsed (an anonymous caller learns no field names and costs no body read).
pub trait RoleCheck: Send + Sync + 'static {
    /// The state the check reads tokens from.
    type State: Send + Sync;
    /// Who the caller is, once authenticated.
    type Principal: Send;
    /// Authenticates the request's headers and checks the role.
    fn check(
        state: &Self::State,
        headers: &HeaderMap,
    ) -> impl Future<Output = ApiResult<Self::Principal>> + Send;
}

/// A caller authenticated for role `R` (an extractor; see [`RoleCheck`]).
#[derive(Debug)]
pub struct Authorized<R: RoleCheck>(pub R::Principal);

impl<R: RoleCheck> axum::extract::FromRequestParts<R::State> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &R::State,
    ) -> Result<Self, ApiError> {
        R::check(state, &parts.headers).await.map(Authorized)
    }
}

/// Parses an identifier from a path parameter, where parts are separated by `:` (as
/// in X-Road's admin APIs; bodies use `/`).
pub fn path_id<T: std::str::FromStr<Err = veksel_id::IdError>>(
    raw: &str,
    what: &str,
) -> ApiResult<T> {
    raw.replace(':', "/")
        .parse()
        .map_err(|e: veksel_id::IdError| ApiError::bad_request(format!("{what}: {e}")))
}

/// An OpenMetrics text response.
pub fn metrics_response(text: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_codes() {
        let e: ApiError = StoreError::NotFound("member x".into()).into();
        assert_eq!((e.status, e.code), (StatusCode::NOT_FOUND, "not_found"));
        let e: ApiError = StoreError::Conflict("dup".into()).into();
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "conflict"));
        let e: ApiError = StoreError::Corrupt("secret detail".into()).into();
        assert_eq!(e.code, "unavailable");
        assert!(!e.message.contains("secret"), "causes stay in the log");
    }

    #[test]
    fn path_ids_use_colons() {
        let id: veksel_id::MemberId = path_id("GL:GOV:1", "member").unwrap();
        assert_eq!(id.to_string(), "GL/GOV/1");
        assert!(path_id::<veksel_id::MemberId>("GL:GOV", "member").is_err());
    }
}
