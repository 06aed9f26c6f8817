//! The wire of the OAuth endpoints: their forms (RFC 6749 §3.2) and their error
//! answers (§5.2), shared by the grants of organisations and of people.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use veksel_proto::oauth::AssertionError;
use veksel_store::StoreError;

/// Largest form accepted at the token and introspection endpoints.
const MAX_FORM: usize = 64 * 1024;

/// An RFC 6749 §5.2 error answer.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    /// An error answer; `invalid_client` is 401, the others 400.
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: if error == "invalid_client" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            },
            error,
            description: description.into(),
        }
    }

    /// The service failed; the cause goes to the log, not to the client.
    pub fn server(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "token service failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: "the token service could not answer; try again".into(),
        }
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.description)
    }
}

impl From<AssertionError> for OAuthError {
    fn from(e: AssertionError) -> Self {
        Self::new(e.oauth_error(), e.to_string())
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        Self::server(e)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        no_store(r.headers_mut());
        r
    }
}

/// Token answers and login pages are never cached (RFC 6749 §5.1).
pub fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A form's parameters; each may appear once (RFC 6749 §3.2), except `resource`
/// (RFC 8707 §2).
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Parses an `application/x-www-form-urlencoded` body of at most 64 KiB.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form_type {
            return Err(OAuthError::new(
                "invalid_request",
                "the request must be application/x-www-form-urlencoded",
            ));
        }
        Self::from_body(body).map_err(|m| OAuthError::new("invalid_request", m))
    }

    /// Reads a form body of at most 64 KiB whose fields appear once each (but
    /// `resource`), whatever its media type says; the login page's form too.
    pub fn from_body(body: &[u8]) -> Result<Self, String> {
        if body.len() > MAX_FORM {
            return Err(format!("the request is larger than {MAX_FORM} bytes"));
        }
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if name != "resource" && pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("the parameter {name} is given more than once"));
            }
        }
        Ok(Self(pairs))
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A parameter that must be there and not empty.
    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| OAuthError::new("invalid_request", format!("{name} is missing")))
    }
}

impl OAuthError {
    /// What went wrong, as told to the client.
    pub fn description(&self) -> &str {
        &self.description
    }
}
