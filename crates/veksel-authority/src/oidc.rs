//! Login for people: an OpenID Connect provider (authorization code flow with PKCE,
//! discovery, ID tokens with `pid` and an `acr` level) whose login page is served
//! by the authority in the network's languages.
//!
//! People log in one of two ways. The test login of test identity providers asks for
//! a person number and believes it; it is for sandboxes and test networks, is off
//! unless `people_login.test_login` is set, and says so on the page and in the `amr`
//! claim (`test`). In production the person is sent on to the national provider
//! (`people_login.external`, see [`crate::upstream`]) and comes back to
//! `/oidc/v1/callback`; either way the authority issues the ID token. Relying parties
//! are registered by an officer or by their member; public ones must use PKCE, and
//! members' own systems authenticate with their signing key (`private_key_jwt`).

use crate::auth::{ObserverRole, RegistrationOfficerRole};
use crate::oauth_wire::{Form, OAuthError, no_store};
use crate::upstream::{ExternalProvider, Upstream, UpstreamError};
use crate::{AppState, changed};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use veksel_admin::{ApiError, ApiResult, Authorized};
use veksel_console::Lang;
use veksel_proto::jws::sign_jwt;
use veksel_proto::oauth::OneOrMany;
use veksel_proto::person::Level;
use veksel_store::sqlx;
use veksel_store::{Db, StoreError};

/// Tables of the login service.
pub const MIGRATION: &str = r#"
CREATE TABLE oidc_clients (
    client_id TEXT PRIMARY KEY, name TEXT NOT NULL, redirect_uris TEXT NOT NULL,
    auth_method TEXT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE oidc_logins (
    id TEXT PRIMARY KEY, csrf_sha256 TEXT NOT NULL, client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL, state TEXT, nonce TEXT, code_challenge TEXT NOT NULL,
    acr TEXT NOT NULL, expires_at BIGINT NOT NULL);
CREATE TABLE oidc_codes (
    code_sha256 TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL, nonce TEXT, pid TEXT NOT NULL, acr TEXT NOT NULL,
    auth_time BIGINT NOT NULL, expires_at BIGINT NOT NULL, used BIGINT NOT NULL DEFAULT 0)
"#;

/// How long a login page may wait for its person, seconds.
const LOGIN_TTL_SECS: i64 = 600;
/// How long an authorization code lives, seconds.
const CODE_TTL_SECS: i64 = 60;
/// Life of an ID token, seconds.
const ID_TOKEN_TTL_SECS: i64 = 300;
/// The cookie that binds a login page to the browser that opened it.
const LOGIN_COOKIE: &str = "veksel_login";
/// Longest value of any authorization parameter.
const MAX_PARAM: usize = 512;
/// Most redirect URIs of one relying party.
const MAX_REDIRECT_URIS: usize = 10;
/// The stylesheet of the login page, served from the authority itself so the page
/// needs no inline style and its policy can forbid them.
const LOGIN_CSS: &str = include_str!("../templates/login.css");

/// How people log in, in `authority.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeopleLogin {
    /// The test login: a person types a person number (6 to 12 digits) and is
    /// believed. Only for sandboxes and test networks.
    #[serde(default)]
    pub test_login: bool,
    /// An external OpenID Connect provider (ID-porten, MitID) people log in with
    /// instead; the authority is its relying party and issues its own ID tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalProvider>,
    /// Whether a person logged in with the test login may act in a role the
    /// authority's console granted them. The test login believes any person
    /// number, so this hands the roles to anyone who knows the numbers: only for
    /// sandboxes; off by default.
    #[serde(default)]
    pub test_officers: bool,
}

impl PeopleLogin {
    /// The external provider at run time, if one is configured (its secret and
    /// trust roots read from `dir`).
    pub fn upstream(&self, dir: &std::path::Path) -> Result<Option<Upstream>, String> {
        match &self.external {
            None => Ok(None),
            Some(_) if self.test_login => {
                Err("test_login and external exclude each other: choose one".into())
            }
            Some(p) => Upstream::new(p.clone(), dir).map(Some),
        }
    }
}

// === The page's words ===

/// The login page's words in a language.
fn words(lang: Lang) -> &'static Words {
    match lang {
        Lang::En => &EN,
        Lang::Da => &DA,
    }
}

/// The strings of the login page in one language.
#[derive(Debug)]
pub struct Words {
    title: &'static str,
    test_notice: &'static str,
    wants: &'static str,
    pid_label: &'static str,
    pid_hint: &'static str,
    level_legend: &'static str,
    substantial: &'static str,
    high: &'static str,
    submit: &'static str,
    pid_error: &'static str,
    expired: &'static str,
    other_language: &'static str,
}

const EN: Words = Words {
    title: "Log in",
    test_notice: "Test login: no real identity is checked. For test networks only.",
    wants: "wants to know who you are",
    pid_label: "Person number",
    pid_hint: "6 to 12 digits, as in the test population",
    level_legend: "Level of assurance",
    substantial: "Substantial",
    high: "High",
    submit: "Log in",
    pid_error: "A person number has 6 to 12 digits and nothing else.",
    expired: "This login page has expired or was opened in another browser. Go back to the service and start again.",
    other_language: "Dansk",
};

const DA: Words = Words {
    title: "Log ind",
    test_notice: "Testlogin: ingen rigtig identitet kontrolleres. Kun til testnet.",
    wants: "vil vide, hvem du er",
    pid_label: "Personnummer",
    pid_hint: "6 til 12 cifre, som i testbefolkningen",
    level_legend: "Sikringsniveau",
    substantial: "Betydeligt",
    high: "Højt",
    submit: "Log ind",
    pid_error: "Et personnummer har 6 til 12 cifre og intet andet.",
    expired: "Denne loginside er udløbet eller blev åbnet i en anden browser. Gå tilbage til tjenesten og start forfra.",
    other_language: "English",
};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    lang: &'a str,
    other_lang: &'a str,
    w: &'a Words,
    instance: &'a str,
    client_name: &'a str,
    login_id: &'a str,
    pid: &'a str,
    acr: &'a str,
    error: Option<&'a str>,
    switch_href: Option<String>,
}

#[derive(Template)]
#[template(path = "login_error.html")]
struct ErrorPage<'a> {
    lang: &'a str,
    title: &'a str,
    message: &'a str,
}

/// Security headers of every page: nothing but the authority's own stylesheet
/// loads, forms go only to the authority and, after login, to the relying party.
fn page(status: StatusCode, html: String, form_target: Option<&str>) -> Response {
    let mut r = veksel_console::html(status, html);
    let h = r.headers_mut();
    // The login form goes back to the relying party's origin too.
    if let Some(origin) = form_target
        && let Ok(v) = HeaderValue::from_str(&format!(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {origin}; frame-ancestors 'none'; base-uri 'none'"
        ))
    {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    // The way to the relying party must not carry the login page's address.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    no_store(h);
    r
}

fn error_page(lang: Lang, status: StatusCode, message: &str) -> Response {
    let html = ErrorPage {
        lang: lang.code(),
        title: words(lang).title,
        message,
    }
    .render()
    .unwrap_or_else(|_| message.to_owned());
    page(status, html, None)
}

// === Relying parties ===

/// A registered relying party.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcClient {
    /// The client id. For `private_key_jwt`, a member or subsystem id whose
    /// member's signing key authenticates it.
    pub client_id: String,
    /// Shown on the login page.
    pub name: String,
    /// Exact redirect URIs (https, or http on a loopback address).
    pub redirect_uris: Vec<String>,
    /// `none` (public: PKCE only) or `private_key_jwt`.
    pub auth_method: String,
}

impl OidcClient {
    fn validate(&self) -> Result<(), String> {
        let text_ok =
            |v: &str| !v.trim().is_empty() && v.len() <= 200 && !v.chars().any(char::is_control);
        if !text_ok(&self.client_id) || !text_ok(&self.name) {
            return Err(
                "client_id and name must have 1 to 200 characters and no control characters".into(),
            );
        }
        match self.auth_method.as_str() {
            "none" => {}
            "private_key_jwt" => {
                self.client_id.parse::<veksel_id::ClientId>().map_err(|e| {
                    format!("a private_key_jwt client_id is a member or subsystem id: {e}")
                })?;
            }
            other => {
                return Err(format!(
                    "auth_method {other:?} is not none or private_key_jwt"
                ));
            }
        }
        if self.redirect_uris.is_empty() || self.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(format!("1 to {MAX_REDIRECT_URIS} redirect_uris"));
        }
        for uri in &self.redirect_uris {
            let parsed: http::Uri = uri
                .parse()
                .map_err(|e| format!("redirect_uri {uri}: {e}"))?;
            let host = parsed.host().unwrap_or_default();
            let loopback = host == "127.0.0.1" || host == "[::1]" || host == "localhost";
            let scheme_ok = match parsed.scheme_str() {
                Some("https") => true,
                Some("http") => loopback,
                _ => false,
            };
            if !scheme_ok || uri.contains('#') || uri.len() > MAX_PARAM {
                return Err(format!(
                    "redirect_uri {uri} must be https (http only on loopback), without a fragment"
                ));
            }
        }
        Ok(())
    }
}

/// The relying party of the authority's own console, built in: people whose
/// person number has a role at the authority sign in to its pages through this
/// login. It cannot be registered, and its codes are redeemed inside the
/// authority only (never at the token endpoint).
pub const CONSOLE_CLIENT_ID: &str = "veksel-console";

/// Where the authority's console receives its people's logins.
pub fn console_redirect_uri(s: &AppState) -> String {
    format!(
        "{}{}/signin/callback",
        s.issuer().trim_end_matches('/'),
        veksel_console::BASE
    )
}

/// A relying party people may log in to: the console, or a registered one.
async fn find_client(s: &AppState, client_id: &str) -> Result<Option<OidcClient>, StoreError> {
    if client_id == CONSOLE_CLIENT_ID {
        return Ok(Some(OidcClient {
            client_id: CONSOLE_CLIENT_ID.into(),
            name: format!("veksel console, authority {}", s.config.instance),
            redirect_uris: vec![console_redirect_uri(s)],
            auth_method: "none".into(),
        }));
    }
    stored_client(s.registry.db(), client_id).await
}

async fn stored_client(db: &Db, client_id: &str) -> Result<Option<OidcClient>, StoreError> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT name, redirect_uris, auth_method FROM oidc_clients WHERE client_id = $1",
    )
    .bind(client_id)
    .fetch_optional(db.pool())
    .await?;
    row.map(|(name, uris, auth_method)| {
        Ok(OidcClient {
            client_id: client_id.to_owned(),
            name,
            redirect_uris: serde_json::from_str(&uris)
                .map_err(|e| StoreError::Corrupt(format!("redirect_uris: {e}")))?,
            auth_method,
        })
    })
    .transpose()
}

// === The authorization endpoint and the login page ===

/// Parameters of an authorization request (OpenID Connect Core §3.1.2.1).
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    acr_values: Option<String>,
    ui_locales: Option<String>,
}

fn sha256_hex(v: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v).as_ref())
}

/// 32 random bytes, base64url; none without randomness (a fixed secret would be
/// guessable).
fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// The origin of a URI, for the page's form-action.
fn origin(uri: &str) -> Option<String> {
    let parsed: http::Uri = uri.parse().ok()?;
    Some(format!(
        "{}://{}",
        parsed.scheme_str()?,
        parsed.authority()?
    ))
}

/// A redirect back to the relying party with an error (RFC 6749 §4.1.2.1).
fn redirect_error(
    redirect_uri: &str,
    state: Option<&str>,
    issuer: &str,
    error: &str,
    description: &str,
) -> Response {
    let mut url = format!(
        "{redirect_uri}{}error={error}&error_description={}",
        if redirect_uri.contains('?') { '&' } else { '?' },
        urlencode(description)
    );
    if let Some(state) = state {
        url.push_str(&format!("&state={}", urlencode(state)));
    }
    url.push_str(&format!("&iss={}", urlencode(issuer)));
    see_other(&url)
}

fn see_other(url: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    no_store(r.headers_mut());
    r
}

fn urlencode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

async fn authorize(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    Query(q): Query<AuthorizeQuery>,
) -> Result<Response, Response> {
    let lang = Lang::choose_preferring(q.ui_locales.as_deref(), &headers);
    let bad = |m: &str| error_page(lang, StatusCode::BAD_REQUEST, m);
    let too_long = [
        &q.client_id,
        &q.redirect_uri,
        &q.scope,
        &q.state,
        &q.nonce,
        &q.code_challenge,
        &q.acr_values,
        &q.ui_locales,
    ]
    .iter()
    .any(|v| v.as_ref().is_some_and(|v| v.len() > MAX_PARAM));
    if too_long {
        return Err(bad(&format!(
            "A parameter is longer than {MAX_PARAM} characters."
        )));
    }
    // Until the client and its redirect URI are known good, errors are shown here:
    // redirecting them would make the authority an open redirector.
    let client_id = q
        .client_id
        .as_deref()
        .ok_or_else(|| bad("client_id is missing."))?;
    let client = find_client(&s, client_id)
        .await
        .map_err(|e| error_page(lang, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?
        .ok_or_else(|| bad("This service is not registered for login."))?;
    let redirect_uri = q
        .redirect_uri
        .as_deref()
        .ok_or_else(|| bad("redirect_uri is missing."))?;
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Err(bad("redirect_uri is not one the service registered."));
    }
    let state = q.state.as_deref();
    let fail = |error: &str, description: &str| {
        redirect_error(redirect_uri, state, s.issuer(), error, description)
    };
    if q.response_type.as_deref() != Some("code") {
        return Err(fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        ));
    }
    if !q
        .scope
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .any(|v| v == "openid")
    {
        return Err(fail("invalid_scope", "scope must include openid"));
    }
    let challenge = q.code_challenge.as_deref().unwrap_or_default();
    if q.code_challenge_method.as_deref() != Some("S256") || challenge.len() != 43 {
        return Err(fail(
            "invalid_request",
            "PKCE is required: code_challenge (S256, 43 characters) and code_challenge_method=S256",
        ));
    }
    let acr = match q.acr_values.as_deref() {
        None | Some("") => Level::Substantial.as_str(),
        Some(values) => match values.split(' ').find_map(Level::from_acr) {
            Some(level) => level.as_str(),
            None => {
                return Err(fail(
                    "invalid_request",
                    "acr_values names no supported level (substantial, high)",
                ));
            }
        },
    };
    let now = i64::try_from(s.clock.now_secs()).unwrap_or(i64::MAX);
    let upstream = match &s.upstream {
        Some(up) => Some((
            up,
            up.endpoints(now)
                .await
                .map_err(|e| upstream_failed(up, &e, &fail))?,
        )),
        None if s.config.people_login.as_ref().is_some_and(|p| p.test_login) => None,
        None => {
            return Err(fail(
                "temporarily_unavailable",
                "no login method is configured for people",
            ));
        }
    };
    let tokens = (
        random_token(),
        random_token(),
        random_token(),
        random_token(),
    );
    let (Some(login_id), Some(csrf), Some(verifier), Some(upstream_nonce)) = tokens else {
        return Err(error_page(
            lang,
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness",
        ));
    };
    // The external provider's code is bound to this login by PKCE and its ID token
    // by the nonce; both stay here.
    let (verifier, upstream_nonce) = match upstream {
        Some(_) => (Some(verifier), Some(upstream_nonce)),
        None => (None, None),
    };
    let pool = s.registry.db().pool();
    let stored = async {
        sqlx::query("DELETE FROM oidc_logins WHERE expires_at < $1").bind(now).execute(pool).await?;
        sqlx::query(
            "INSERT INTO oidc_logins (id, csrf_sha256, client_id, redirect_uri, state, nonce, code_challenge, acr, expires_at, upstream_verifier, upstream_nonce)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&login_id)
        .bind(sha256_hex(csrf.as_bytes()))
        .bind(client_id)
        .bind(redirect_uri)
        .bind(state)
        .bind(q.nonce.as_deref())
        .bind(challenge)
        .bind(acr)
        .bind(now + LOGIN_TTL_SECS)
        .bind(verifier.as_deref())
        .bind(upstream_nonce.as_deref())
        .execute(pool)
        .await
    }
    .await;
    stored.map_err(|e| error_page(lang, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    let cookie = format!(
        "{LOGIN_COOKIE}={csrf}; Path=/oidc/v1; Max-Age={LOGIN_TTL_SECS}; HttpOnly; Secure; SameSite=Lax"
    );
    if let (Some((up, endpoints)), Some(verifier), Some(nonce)) =
        (upstream, verifier.as_deref(), upstream_nonce.as_deref())
    {
        let level = Level::from_acr(acr).unwrap_or(Level::Substantial);
        let url = up.authorization_url(
            &endpoints,
            s.issuer(),
            &login_id,
            nonce,
            &veksel_proto::oauth::pkce_challenge(verifier),
            level,
        );
        let mut r = see_other(&url);
        set_cookie(&mut r, &cookie);
        return Ok(r);
    }
    // The other language is the same request again with ui_locales set.
    let other = lang.other();
    let mut query: Vec<(String, String)> =
        form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .filter(|(k, _)| k != "ui_locales")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    query.push(("ui_locales".into(), other.code().into()));
    let switch = format!(
        "/oidc/v1/authorize?{}",
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish()
    );
    let view = LoginView {
        client: &client,
        login_id: &login_id,
        pid: "",
        acr,
        error: None,
        redirect_uri,
        switch_href: Some(switch),
    };
    let mut r = login_page(&s, lang, &view, StatusCode::OK);
    set_cookie(&mut r, &cookie);
    Ok(r)
}

fn set_cookie(r: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// The relying party's error for a login the external provider could not finish;
/// the details are logged, the description names the provider and the reason.
fn upstream_failed(
    up: &Upstream,
    e: &UpstreamError,
    fail: &dyn Fn(&str, &str) -> Response,
) -> Response {
    tracing::warn!(provider = %up.provider.name, error = %e, "login through the external provider failed");
    let description: String = format!("{}: {e}", up.provider.name)
        .chars()
        .take(300)
        .collect();
    fail(e.oauth_error(), &description)
}

/// What one rendering of the login page shows.
struct LoginView<'a> {
    client: &'a OidcClient,
    login_id: &'a str,
    pid: &'a str,
    acr: &'a str,
    error: Option<&'a str>,
    redirect_uri: &'a str,
    switch_href: Option<String>,
}

fn login_page(s: &AppState, lang: Lang, v: &LoginView<'_>, status: StatusCode) -> Response {
    let html = LoginPage {
        lang: lang.code(),
        other_lang: lang.other().code(),
        w: words(lang),
        instance: &s.config.instance,
        client_name: &v.client.name,
        login_id: v.login_id,
        pid: v.pid,
        acr: v.acr,
        error: v.error,
        switch_href: v.switch_href.clone(),
    }
    .render();
    match html {
        Ok(html) => page(status, html, origin(v.redirect_uri).as_deref()),
        Err(e) => error_page(lang, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// A login waiting for its person, as stored.
#[derive(Debug)]
struct PendingLogin {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    challenge: String,
    acr: String,
    upstream_verifier: Option<String>,
    upstream_nonce: Option<String>,
}

/// Why a pending login cannot go on.
enum LoginProblem {
    /// Unknown, expired, or opened in another browser.
    Expired,
    /// The database failed.
    Store(sqlx::Error),
}

/// The pending login `id`, if the request comes from the browser it was opened in
/// and it has not expired.
async fn pending_login(
    s: &AppState,
    id: &str,
    headers: &HeaderMap,
    now: i64,
) -> Result<PendingLogin, LoginProblem> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT csrf_sha256, client_id, redirect_uri, state, nonce, code_challenge, acr, expires_at, upstream_verifier, upstream_nonce FROM oidc_logins WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(s.registry.db().pool())
    .await
    .map_err(LoginProblem::Store)?
    .ok_or(LoginProblem::Expired)?;
    let read = || -> Result<(String, i64, PendingLogin), sqlx::Error> {
        Ok((
            row.try_get("csrf_sha256")?,
            row.try_get("expires_at")?,
            PendingLogin {
                client_id: row.try_get("client_id")?,
                redirect_uri: row.try_get("redirect_uri")?,
                state: row.try_get("state")?,
                nonce: row.try_get("nonce")?,
                challenge: row.try_get("code_challenge")?,
                acr: row.try_get("acr")?,
                upstream_verifier: row.try_get("upstream_verifier")?,
                upstream_nonce: row.try_get("upstream_nonce")?,
            },
        ))
    };
    let (csrf_sha256, expires_at, login) = read().map_err(LoginProblem::Store)?;
    // The cookie proves the request comes from the browser the login was opened in.
    let presented = veksel_console::cookie(headers, LOGIN_COOKIE).unwrap_or_default();
    let same_browser: bool = sha256_hex(presented.as_bytes())
        .as_bytes()
        .ct_eq(csrf_sha256.as_bytes())
        .into();
    if !same_browser || expires_at < now {
        return Err(LoginProblem::Expired);
    }
    Ok(login)
}

/// Who logged in, as the code records them.
struct LoggedIn<'a> {
    pid: &'a str,
    acr: &'a str,
    amr: &'a [String],
    auth_time: i64,
}

/// Ends a pending login: it is deleted and a code issued in one transaction, so of
/// two completions only one gets a code (`None` for the other).
async fn complete_login(
    s: &AppState,
    login_id: &str,
    login: &PendingLogin,
    person: &LoggedIn<'_>,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let Some(code) = random_token() else {
        return Err(sqlx::Error::Protocol("no randomness".into()));
    };
    let amr = serde_json::to_string(person.amr).unwrap_or_else(|_| "[]".into());
    let mut tx = s.registry.db().pool().begin().await?;
    let deleted = sqlx::query("DELETE FROM oidc_logins WHERE id = $1")
        .bind(login_id)
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() != 1 {
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO oidc_codes (code_sha256, client_id, redirect_uri, code_challenge, nonce, pid, acr, auth_time, expires_at, amr)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(sha256_hex(code.as_bytes()))
    .bind(&login.client_id)
    .bind(&login.redirect_uri)
    .bind(&login.challenge)
    .bind(login.nonce.as_deref())
    .bind(person.pid)
    .bind(person.acr)
    .bind(person.auth_time)
    .bind(now + CODE_TTL_SECS)
    .bind(amr)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(code))
}

/// Ends a login with a code for the relying party, or the expired page when it
/// ended before (the same form submitted twice, the same way back taken twice).
async fn finish_login(
    s: &AppState,
    lang: Lang,
    login_id: &str,
    login: &PendingLogin,
    person: &LoggedIn<'_>,
    now: i64,
) -> Result<Response, Response> {
    match complete_login(s, login_id, login, person, now).await {
        Ok(Some(code)) => Ok(back_with_code(s, login, &code)),
        Ok(None) => Err(error_page(
            lang,
            StatusCode::BAD_REQUEST,
            words(lang).expired,
        )),
        Err(e) => Err(error_page(
            lang,
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        )),
    }
}

/// Sends the person back to the relying party with the code, and forgets the
/// login cookie.
fn back_with_code(s: &AppState, login: &PendingLogin, code: &str) -> Response {
    let redirect_uri = &login.redirect_uri;
    let mut url = format!(
        "{redirect_uri}{}code={code}&iss={}",
        if redirect_uri.contains('?') { '&' } else { '?' },
        urlencode(s.issuer())
    );
    if let Some(state) = &login.state {
        url.push_str(&format!("&state={}", urlencode(state)));
    }
    let mut r = see_other(&url);
    set_cookie(
        &mut r,
        &format!("{LOGIN_COOKIE}=; Path=/oidc/v1; Max-Age=0; HttpOnly; Secure; SameSite=Lax"),
    );
    r
}

async fn login(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let fallback = Lang::choose(&headers);
    if body.len() > 16 * 1024 {
        return Err(error_page(
            fallback,
            StatusCode::PAYLOAD_TOO_LARGE,
            "The form is too large.",
        ));
    }
    let form =
        Form::from_body(&body).map_err(|m| error_page(fallback, StatusCode::BAD_REQUEST, &m))?;
    let (Some(login_id), Some(pid)) = (form.get("login"), form.get("pid")) else {
        return Err(error_page(
            fallback,
            StatusCode::BAD_REQUEST,
            "The form has no login or pid field.",
        ));
    };
    let lang = form.get("lang").and_then(Lang::parse).unwrap_or(fallback);
    let expired = || error_page(lang, StatusCode::BAD_REQUEST, words(lang).expired);
    let now = i64::try_from(s.clock.now_secs()).unwrap_or(i64::MAX);
    if !s.config.people_login.as_ref().is_some_and(|p| p.test_login) {
        return Err(expired());
    }
    let pending = match pending_login(&s, login_id, &headers, now).await {
        // A login that went to an external provider cannot be finished here.
        Ok(p) if p.upstream_nonce.is_none() => p,
        Ok(_) | Err(LoginProblem::Expired) => return Err(expired()),
        Err(LoginProblem::Store(e)) => {
            return Err(error_page(
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            ));
        }
    };
    let client = find_client(&s, &pending.client_id)
        .await
        .map_err(|e| error_page(lang, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?
        .ok_or_else(expired)?;
    // The person may choose a higher level than asked for, never a lower one.
    let acr = form
        .get("acr")
        .filter(|a| {
            Level::from_acr(a)
                .zip(Level::from_acr(&pending.acr))
                .is_some_and(|(chosen, asked)| chosen >= asked)
        })
        .unwrap_or(&pending.acr)
        .to_owned();
    let pid = pid.trim();
    if !(6..=12).contains(&pid.len()) || !pid.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = pid.chars().take(32).collect();
        let view = LoginView {
            client: &client,
            login_id,
            pid: &shown,
            acr: &acr,
            error: Some(words(lang).pid_error),
            redirect_uri: &pending.redirect_uri,
            switch_href: None,
        };
        return Err(login_page(&s, lang, &view, StatusCode::BAD_REQUEST));
    }
    let person = LoggedIn {
        pid,
        acr: &acr,
        amr: &["test".to_owned()],
        auth_time: now,
    };
    finish_login(&s, lang, login_id, &pending, &person, now).await
}

// === The way back from an external provider ===

/// What the external provider sends the person back with (RFC 6749 §4.1.2, RFC
/// 9207's `iss`).
#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, Response> {
    let lang = Lang::choose(&headers);
    let Some(up) = s.upstream.as_ref() else {
        return Err(error_page(
            lang,
            StatusCode::NOT_FOUND,
            "No external identity provider is configured.",
        ));
    };
    let expired = || error_page(lang, StatusCode::BAD_REQUEST, words(lang).expired);
    let too_long = [&q.code, &q.state, &q.iss, &q.error, &q.error_description]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| v.len() > 2 * MAX_PARAM));
    let Some(login_id) = q.state.as_deref().filter(|_| !too_long) else {
        return Err(expired());
    };
    let now = i64::try_from(s.clock.now_secs()).unwrap_or(i64::MAX);
    let pending = match pending_login(&s, login_id, &headers, now).await {
        Ok(p) => p,
        Err(LoginProblem::Expired) => return Err(expired()),
        Err(LoginProblem::Store(e)) => {
            return Err(error_page(
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            ));
        }
    };
    let (Some(verifier), Some(nonce)) = (&pending.upstream_verifier, &pending.upstream_nonce)
    else {
        // A test login's id at the external provider's door.
        return Err(expired());
    };
    let fail = |error: &str, description: &str| {
        redirect_error(
            &pending.redirect_uri,
            pending.state.as_deref(),
            s.issuer(),
            error,
            description,
        )
    };
    // Each way back is used once, whatever its outcome: claim it first.
    let claimed = sqlx::query("UPDATE oidc_logins SET upstream_verifier = NULL WHERE id = $1 AND upstream_verifier IS NOT NULL")
        .bind(login_id)
        .execute(s.registry.db().pool())
        .await
        .map_err(|e| error_page(lang, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    if claimed.rows_affected() != 1 {
        return Err(expired());
    }
    let outcome = match (&q.iss, &q.error, &q.code) {
        // RFC 9207: an answer naming another issuer is a mix-up, whatever it says.
        (Some(iss), _, _) if iss != up.provider.issuer() => Err(UpstreamError::IdToken(format!(
            "the answer names issuer {iss:?}, not {}",
            up.provider.issuer()
        ))),
        (_, Some(error), _) => Err(UpstreamError::Refused {
            error: error.clone(),
            description: q.error_description.clone(),
        }),
        (_, None, Some(code)) => {
            let wanted = Level::from_acr(&pending.acr).unwrap_or(Level::Substantial);
            up.redeem(s.issuer(), code, verifier, nonce, wanted, now)
                .await
        }
        (_, None, None) => Err(UpstreamError::Refused {
            error: "invalid_request".into(),
            description: Some("the answer has neither code nor error".into()),
        }),
    };
    let person = outcome.map_err(|e| upstream_failed(up, &e, &fail))?;
    let logged_in = LoggedIn {
        pid: &person.pid,
        acr: person.level.as_str(),
        amr: &person.amr,
        auth_time: person.auth_time,
    };
    finish_login(&s, lang, login_id, &pending, &logged_in, now).await
}

// === The code grant at the token endpoint ===

pub use veksel_proto::person::IdTokenClaims;

/// The pairwise subject of a person for a relying party: a keyed hash, so relying
/// parties cannot link their users by `sub` (they can by `pid`, which they are
/// given because public services need it).
fn pairwise_sub(s: &AppState, client_id: &str, pid: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, s.token_keys.subject_salt());
    let tag = aws_lc_rs::hmac::sign(&key, format!("{client_id}\0{pid}").as_bytes());
    URL_SAFE_NO_PAD.encode(&tag.as_ref()[..20])
}

type CodeRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
    i64,
    i64,
    String,
);

/// What an authorization code said, once spent.
#[derive(Debug)]
pub(crate) struct SpentCode {
    /// The person number.
    pub pid: String,
    /// The level of assurance (`acr`).
    pub acr: String,
    /// The nonce of the authorization request.
    pub nonce: Option<String>,
    auth_time: i64,
    amr: String,
}

impl SpentCode {
    /// Whether the person logged in with the test login (or the method is not
    /// known: then they are treated as if they had).
    pub fn by_test_login(&self) -> bool {
        veksel_console::by_test_login(
            &serde_json::from_str::<Vec<String>>(&self.amr).unwrap_or_default(),
        )
    }
}

/// Spends an authorization code for `client_id`: once, in time, with the redirect
/// URI and the PKCE verifier of the request it answers.
pub(crate) async fn spend_code(
    s: &AppState,
    code: &str,
    client_id: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<SpentCode, OAuthError> {
    // RFC 7636 §4.1: 43 to 128 unreserved characters.
    if !(43..=128).contains(&verifier.len())
        || !verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err(OAuthError::new(
            "invalid_request",
            "code_verifier must be 43 to 128 unreserved characters",
        ));
    }
    let pool = s.registry.db().pool();
    let now = i64::try_from(s.clock.now_secs()).unwrap_or(i64::MAX);
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    // Spent first: of two redemptions of one code, only one passes this line.
    let spent = sqlx::query("UPDATE oidc_codes SET used = 1 WHERE code_sha256 = $1 AND used = 0")
        .bind(sha256_hex(code.as_bytes()))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
    let row: Option<CodeRow> = sqlx::query_as(
        "SELECT client_id, redirect_uri, code_challenge, nonce, pid, acr, auth_time, expires_at, used, amr FROM oidc_codes WHERE code_sha256 = $1",
    )
    .bind(sha256_hex(code.as_bytes()))
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::from)?;
    tx.commit().await.map_err(StoreError::from)?;
    let invalid = |m: &str| OAuthError::new("invalid_grant", m.to_owned());
    let Some((
        code_client,
        code_redirect,
        challenge,
        nonce,
        pid,
        acr,
        auth_time,
        expires_at,
        _,
        amr,
    )) = row
    else {
        return Err(invalid("unknown authorization code"));
    };
    if spent.rows_affected() == 0 {
        return Err(invalid("the authorization code has been used before"));
    }
    if expires_at < now {
        return Err(invalid("the authorization code has expired"));
    }
    if code_client != client_id {
        return Err(invalid(
            "the authorization code was issued to another client",
        ));
    }
    if code_redirect != redirect_uri {
        return Err(invalid(
            "redirect_uri differs from the authorization request's",
        ));
    }
    let computed = veksel_proto::oauth::pkce_challenge(verifier);
    if !bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
        return Err(invalid("code_verifier does not match the code_challenge"));
    }
    Ok(SpentCode {
        pid,
        acr,
        nonce,
        auth_time,
        amr,
    })
}

/// `grant_type=authorization_code` at the token endpoint.
pub(crate) async fn code_grant(s: &AppState, form: &Form) -> Result<Response, OAuthError> {
    let code = form.required("code")?;
    let redirect_uri = form.required("redirect_uri")?;
    let verifier = form.required("code_verifier")?;
    let client_id = match (form.get("client_id"), form.get("client_assertion")) {
        (_, Some(assertion)) => {
            if form.get("client_assertion_type") != Some(crate::oauth::CLIENT_ASSERTION_TYPE) {
                return Err(OAuthError::new(
                    "invalid_client",
                    "client_assertion_type must be jwt-bearer",
                ));
            }
            let caller = crate::oauth::authenticate_client(s, assertion).await?;
            caller.to_string()
        }
        (Some(id), None) => id.to_owned(),
        (None, None) => return Err(OAuthError::new("invalid_client", "client_id is missing")),
    };
    // The console's codes are spent inside the authority; here, they are unknown.
    let client = stored_client(s.registry.db(), &client_id)
        .await?
        .ok_or_else(|| {
            OAuthError::new(
                "invalid_client",
                format!("{client_id} is not a registered relying party"),
            )
        })?;
    if client.auth_method == "private_key_jwt" && form.get("client_assertion").is_none() {
        return Err(OAuthError::new(
            "invalid_client",
            format!("{client_id} must authenticate with a client assertion"),
        ));
    }
    let SpentCode {
        pid,
        acr,
        nonce,
        auth_time,
        amr,
    } = spend_code(s, code, &client_id, redirect_uri, verifier).await?;
    let now = i64::try_from(s.clock.now_secs()).unwrap_or(i64::MAX);
    let sub = pairwise_sub(s, &client_id, &pid);
    let id_token = IdTokenClaims {
        iss: s.issuer().to_owned(),
        sub: sub.clone(),
        aud: OneOrMany::One(client_id.clone()),
        iat: now,
        exp: now + ID_TOKEN_TTL_SECS,
        auth_time,
        nonce,
        acr: acr.clone(),
        amr: serde_json::from_str(&amr).unwrap_or_default(),
        pid: pid.clone(),
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let (kid, signer) = s
        .token_keys
        .signer()
        .ok_or_else(|| OAuthError::server("no token-signing key"))?;
    let id_jwt = sign_jwt(
        signer.as_ref(),
        &kid,
        "JWT",
        &serde_json::to_vec(&id_token).map_err(OAuthError::server)?,
    )
    .map_err(OAuthError::server)?;
    let access = serde_json::json!({
        "iss": s.issuer(), "sub": sub, "client_id": client_id, "aud": s.issuer(),
        "scope": "openid", "pid": pid, "acr": acr, "iat": now, "exp": now + ID_TOKEN_TTL_SECS,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let access_jwt = sign_jwt(
        signer.as_ref(),
        &kid,
        veksel_proto::oauth::ACCESS_TOKEN_TYP,
        access.to_string().as_bytes(),
    )
    .map_err(OAuthError::server)?;
    let mut r = Json(serde_json::json!({
        "access_token": access_jwt, "token_type": "Bearer", "expires_in": ID_TOKEN_TTL_SECS,
        "id_token": id_jwt, "scope": "openid",
    }))
    .into_response();
    no_store(r.headers_mut());
    Ok(r)
}

// === Discovery and the stylesheet ===

async fn discovery(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let base = &s.config.public_url;
    Json(serde_json::json!({
        "issuer": s.issuer(),
        "authorization_endpoint": format!("{base}/oidc/v1/authorize"),
        "token_endpoint": format!("{base}/oauth/v1/token"),
        "jwks_uri": format!("{base}/oauth/v1/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", veksel_proto::oauth::JWT_BEARER_GRANT],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid"],
        "claims_supported": ["iss", "sub", "aud", "iat", "exp", "auth_time", "nonce", "acr", "amr", "pid"],
        "acr_values_supported": Level::ALL.map(Level::as_str),
        "ui_locales_supported": ["en", "da"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

async fn stylesheet() -> Response {
    let mut r = LOGIN_CSS.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

// === Admin ===

#[utoipa::path(post, path = "/api/v1/oidc/clients", request_body = OidcClient, responses((status = 201, body = OidcClient), (status = 400), (status = 409)))]
async fn add_client(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Json(b): Json<OidcClient>,
) -> ApiResult<(StatusCode, Json<OidcClient>)> {
    b.validate().map_err(ApiError::bad_request)?;
    if b.client_id == CONSOLE_CLIENT_ID {
        return Err(ApiError::bad_request(format!(
            "{CONSOLE_CLIENT_ID} is the authority's own console"
        )));
    }
    let done = sqlx::query(
        "INSERT INTO oidc_clients (client_id, name, redirect_uris, auth_method, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (client_id) DO NOTHING",
    )
    .bind(&b.client_id)
    .bind(&b.name)
    .bind(serde_json::to_string(&b.redirect_uris).unwrap_or_default())
    .bind(&b.auth_method)
    .bind(s.clock.now_ms())
    .execute(s.registry.db().pool())
    .await
    .map_err(StoreError::from)?;
    if done.rows_affected() == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("relying party {} exists", b.client_id),
        ));
    }
    changed(
        &s,
        &who,
        "oidc.client.add",
        &b.client_id,
        serde_json::to_value(&b).unwrap_or_default(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(b)))
}

#[utoipa::path(get, path = "/api/v1/oidc/clients", responses((status = 200, body = Vec<OidcClient>)))]
async fn list_clients(
    State(s): State<Arc<AppState>>,
    Authorized(_): Authorized<ObserverRole>,
) -> ApiResult<Json<Vec<OidcClient>>> {
    let ids: Vec<(String,)> =
        sqlx::query_as("SELECT client_id FROM oidc_clients ORDER BY client_id")
            .fetch_all(s.registry.db().pool())
            .await
            .map_err(StoreError::from)?;
    let mut out = Vec::new();
    for (id,) in ids {
        if let Some(c) = stored_client(s.registry.db(), &id).await? {
            out.push(c);
        }
    }
    Ok(Json(out))
}

#[utoipa::path(delete, path = "/api/v1/oidc/clients/{id}", params(("id" = String, Path)), responses((status = 204), (status = 404)))]
async fn remove_client(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let done = sqlx::query("DELETE FROM oidc_clients WHERE client_id = $1")
        .bind(&id)
        .execute(s.registry.db().pool())
        .await
        .map_err(StoreError::from)?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found(format!("relying party {id}")));
    }
    changed(&s, &who, "oidc.client.remove", &id, serde_json::json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Applies an approved relying-party change: a member's subsystem, which
/// authenticates with the member's signing key (`private_key_jwt`).
pub(crate) async fn apply(
    s: &AppState,
    change: &veksel_proto::management::Change,
) -> Result<(), StoreError> {
    use veksel_proto::management::Change;
    let pool = s.registry.db().pool();
    match change {
        Change::RelyingPartyRegistration {
            subsystem,
            name,
            redirect_uris,
            ..
        } => {
            let client = OidcClient {
                client_id: subsystem.to_string(),
                name: name.clone(),
                redirect_uris: redirect_uris.clone(),
                auth_method: "private_key_jwt".into(),
            };
            client.validate().map_err(StoreError::Invalid)?;
            sqlx::query(
                "INSERT INTO oidc_clients (client_id, name, redirect_uris, auth_method, created_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (client_id) DO UPDATE SET name = excluded.name,
                 redirect_uris = excluded.redirect_uris, auth_method = excluded.auth_method",
            )
            .bind(&client.client_id)
            .bind(&client.name)
            .bind(serde_json::to_string(&client.redirect_uris).unwrap_or_default())
            .bind(&client.auth_method)
            .bind(s.clock.now_ms())
            .execute(pool)
            .await?;
            Ok(())
        }
        Change::RelyingPartyDeletion { subsystem, .. } => {
            let done = sqlx::query("DELETE FROM oidc_clients WHERE client_id = $1")
                .bind(subsystem.to_string())
                .execute(pool)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("relying party {subsystem}")));
            }
            Ok(())
        }
        other => Err(StoreError::Invalid(format!(
            "{} is not a relying-party change",
            other.kind()
        ))),
    }
}

/// Routes of the login service.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oidc/v1/authorize", get(authorize))
        .route("/oidc/v1/login", post(login))
        .route(crate::upstream::CALLBACK_PATH, get(callback))
        .route("/oidc/v1/login.css", get(stylesheet))
        .route("/api/v1/oidc/clients", get(list_clients).post(add_client))
        .route("/api/v1/oidc/clients/{id}", delete(remove_client))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(add_client, list_clients, remove_client))]
pub(crate) struct OidcDoc;
