//! The token endpoint: the JWT-bearer grant for organisations
//! ([`crate::oauth`]) and the authorization code grant for people's logins
//! ([`crate::oidc`]).

use crate::AppState;
use crate::oauth_wire::{Form, OAuthError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use std::sync::Arc;
use veksel_proto::oauth::JWT_BEARER_GRANT;

#[utoipa::path(post, path = "/oauth/v1/token", security(()), request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>[&scope=…][&resource=…], or grant_type=authorization_code&code=…&redirect_uri=…&code_verifier=…&client_id=…"), responses((status = 200, description = "RFC 6749 §5.1: access_token, token_type Bearer, expires_in, scope"), (status = 400, description = "RFC 6749 §5.2 error: invalid_request, invalid_grant, invalid_scope, invalid_target, unsupported_grant_type")))]
async fn token(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = Form::parse(&headers, &body)?;
    match form.required("grant_type")? {
        JWT_BEARER_GRANT => crate::oauth::jwt_bearer_grant(&s, &form).await,
        "authorization_code" => crate::oidc::code_grant(&s, &form).await,
        other => Err(OAuthError::new(
            "unsupported_grant_type",
            format!("{other} is not supported; use {JWT_BEARER_GRANT} or authorization_code"),
        )),
    }
}

/// The token endpoint's route.
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/oauth/v1/token", post(token))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(token))]
pub(crate) struct TokenDoc;
