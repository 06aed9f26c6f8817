//! What veksel's web pages share, whichever node serves them: sessions signed in
//! with an admin token, protection against cross-site requests, the security headers,
//! the layout, and the words of each language.
//!
//! Pages are rendered on the server (askama) and work without JavaScript: every
//! action is a form, every form works by keyboard. The Content Security Policy loads
//! nothing but the node's own stylesheet and scripts (no inline code); the one
//! script, the ledger explorer's, checks in the browser what the server already
//! checked.
//!
//! Operators sign in with an admin token, or with their own login as a person the
//! node granted a role ([`people`]). A session is a random 32-byte id in a
//! `HttpOnly`, `Secure`, `SameSite=Strict` cookie (`Lax` for a citizen looking at
//! their own lookups, who arrives from the identity provider's site), kept
//! in memory as its SHA-256 (a node restart signs everyone out), ended after 30 idle
//! minutes or 8 hours. Each has its own CSRF token, which every form
//! carries and every `POST` must present (compared in constant time); a `POST` from
//! another origin (`Origin`, `Sec-Fetch-Site`) is refused before that.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod chart;
pub mod people;
pub mod words;

use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;
use veksel_store::Db;
use veksel_store::tokens::TokenPrincipal;
pub use words::Words;

/// Where every node's pages live.
pub const BASE: &str = "/console";
/// The session cookie.
pub const SESSION_COOKIE: &str = "veksel_console";
/// Where a person starts signing in to work at a node (people's login); each node
/// serves it.
pub const PERSON_SIGNIN: &str = "/console/signin/person";
/// The role of a person's session: no admin role ranks it.
pub const PERSON_ROLE: &str = "person";
/// The language cookie.
pub const LANG_COOKIE: &str = "veksel_lang";
/// A session ends after this long without a request, ms.
const IDLE_MS: i64 = 30 * 60 * 1000;
/// A session ends this long after sign-in whatever happens, ms.
const MAX_AGE_MS: i64 = 8 * 3600 * 1000;
/// Most sessions a node keeps; the oldest go first.
const MAX_SESSIONS: usize = 1000;
/// Most of them citizens' sessions may take.
const MAX_CITIZEN_SESSIONS: usize = 800;
/// Largest form accepted, bytes.
pub const MAX_FORM: usize = 64 * 1024;

/// A language of the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Danish.
    Da,
}

impl Lang {
    /// Every language, in the order the switch shows them.
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Da];

    /// The language tag.
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Da => "da",
        }
    }

    /// The language a tag (`da`, `da-DK`, `en_GB`) names, if the pages have it.
    pub fn parse(s: &str) -> Option<Self> {
        match s
            .trim()
            .split(['-', '_'])
            .next()?
            .to_ascii_lowercase()
            .as_str()
        {
            "en" => Some(Self::En),
            "da" => Some(Self::Da),
            _ => None,
        }
    }

    /// The next language of [`Lang::ALL`]: the one a switch offers.
    pub fn other(self) -> Self {
        match self {
            Self::En => Self::Da,
            Self::Da => Self::En,
        }
    }

    /// The words of this language.
    pub fn words(self) -> &'static Words {
        match self {
            Self::En => &words::EN,
            Self::Da => &words::DA,
        }
    }

    /// The language chosen by the language cookie, else the first supported one of
    /// `Accept-Language`, else English.
    pub fn choose(headers: &HeaderMap) -> Self {
        Self::choose_preferring(None, headers)
    }

    /// Like [`Lang::choose`], but the first supported tag of `preferred` (space
    /// separated, as OpenID Connect's `ui_locales`) comes first.
    pub fn choose_preferring(preferred: Option<&str>, headers: &HeaderMap) -> Self {
        if let Some(l) = preferred
            .unwrap_or_default()
            .split(' ')
            .find_map(Self::parse)
        {
            return l;
        }
        if let Some(l) = cookie(headers, LANG_COOKIE).and_then(Self::parse) {
            return l;
        }
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(',')
            .map(|l| l.split(';').next().unwrap_or_default())
            .find_map(Self::parse)
            .unwrap_or(Self::En)
    }
}

/// A cookie's value.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The admin token's id (the actor in audit trails; never its secret).
    pub token_id: String,
    /// Its role.
    pub role: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// For a person signed in with people's login: their person number. A citizen
    /// has the role [`PERSON_ROLE`], which ranks nowhere; an officer has the role
    /// the node granted them (and `token_id` is `person:` and the number).
    pub person: Option<String>,
    /// An officer's name, as granted.
    pub name: Option<String>,
    created_ms: i64,
    last_seen_ms: i64,
}

impl Session {
    /// Whether the session's role is `role` or above in `ranks` (lowest first).
    pub fn has_role(&self, ranks: &[&str], role: &str) -> bool {
        let rank = |r: &str| ranks.iter().position(|x| *x == r);
        matches!((rank(&self.role), rank(role)), (Some(a), Some(b)) if a >= b)
    }

    /// Whether this is a citizen's session, which sees only their own lookups.
    pub fn is_citizen(&self) -> bool {
        self.role == PERSON_ROLE
    }
}

/// 32 random bytes, base64url.
fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

fn digest(id: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes()).as_ref(),
    );
    out
}

/// The sessions of one node, in memory.
#[derive(Debug, Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
    logins: Mutex<HashMap<String, PendingLogin>>,
}

/// A person's login on its way to the identity provider and back: what binds the
/// answer to it.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    /// The PKCE verifier.
    pub verifier: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// Whether the person signs in to work as an officer (otherwise to see their
    /// own lookups).
    pub officer: bool,
    created_ms: i64,
}

impl PendingLogin {
    /// Whether an ID token's or a code's `nonce` is this login's (constant time).
    pub fn nonce_matches(&self, nonce: Option<&str>) -> bool {
        nonce.is_some_and(|n| bool::from(n.as_bytes().ct_eq(self.nonce.as_bytes())))
    }
}

/// Whether a login's methods (`amr`) say the test login, which believes any person
/// number. None said counts as the test login: an officer's role is never taken on
/// a guess.
pub fn by_test_login(amr: &[String]) -> bool {
    amr.is_empty() || amr.iter().any(|m| m == "test")
}

/// Where a person's login goes and comes back.
#[derive(Debug, Clone, Copy)]
pub struct LoginTarget<'a> {
    /// The provider's authorization endpoint.
    pub authorize: &'a str,
    /// The relying party.
    pub client_id: &'a str,
    /// Where the provider sends the browser back.
    pub redirect_uri: &'a str,
    /// The path the login's cookie is sent to (the way back is under it).
    pub cookie_path: &'a str,
}

/// How long a person may take at the identity provider, ms.
const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;
/// The cookie that ties a person's login to their browser.
pub const LOGIN_COOKIE: &str = "veksel_me";

impl Sessions {
    /// Starts a person's login: its `state`, and what the answer must match.
    fn start_login(&self, officer: bool, now_ms: i64) -> Option<(String, PendingLogin)> {
        let (state, verifier, nonce) = (random_token()?, random_token()?, random_token()?);
        let login = PendingLogin {
            verifier,
            nonce,
            officer,
            created_ms: now_ms,
        };
        let mut map = self.logins.lock().ok()?;
        map.retain(|_, l| now_ms - l.created_ms < LOGIN_TTL_MS);
        // Full: the oldest login waiting goes, so that a flood of started logins
        // cannot keep everyone else from logging in (it only shortens their time).
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, l)| l.created_ms)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(state.clone(), login.clone());
        Some((state, login))
    }

    /// Ends a login whose answer names `state`, if the browser's login cookie names
    /// it too and it is not too old; each login ends once.
    pub fn finish_login(
        &self,
        headers: &HeaderMap,
        state: &str,
        now_ms: i64,
    ) -> Option<PendingLogin> {
        let cookie_state = cookie(headers, LOGIN_COOKIE)?;
        if !bool::from(cookie_state.as_bytes().ct_eq(state.as_bytes())) {
            return None;
        }
        let login = self.logins.lock().ok()?.remove(state)?;
        (now_ms - login.created_ms < LOGIN_TTL_MS).then_some(login)
    }

    /// Starts a person's login and sends the browser to `authorize` (an OpenID
    /// Connect authorization endpoint) as the relying party `client_id`, to come
    /// back to `redirect_uri` (under `cookie_path`, where the login's cookie goes):
    /// code flow, PKCE and a nonce. `None` when no login can be started now.
    pub fn send_to_login(
        &self,
        officer: bool,
        now_ms: i64,
        to: LoginTarget<'_>,
        lang: Lang,
    ) -> Option<Response> {
        let (state, login) = self.start_login(officer, now_ms)?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", to.client_id)
            .append_pair("redirect_uri", to.redirect_uri)
            .append_pair("scope", "openid")
            .append_pair("state", &state)
            .append_pair("nonce", &login.nonce)
            .append_pair(
                "code_challenge",
                &veksel_proto::oauth::pkce_challenge(&login.verifier),
            )
            .append_pair("code_challenge_method", "S256")
            .append_pair("ui_locales", lang.code())
            .finish();
        Some(see_other(
            &format!("{}?{query}", to.authorize),
            Some(&format!(
                "{LOGIN_COOKIE}={state}; Path={}; Max-Age=600; HttpOnly; Secure; SameSite=Lax",
                to.cookie_path
            )),
        ))
    }

    /// Opens a session for `principal`; returns the `Set-Cookie` value.
    pub fn open(&self, principal: &TokenPrincipal, now_ms: i64) -> Option<String> {
        self.insert(
            principal.id.clone(),
            principal.role.clone(),
            None,
            None,
            now_ms,
        )
    }

    /// Opens a session for a citizen whose login verified `person`; returns the
    /// `Set-Cookie` value.
    pub fn open_person(&self, person: &str, now_ms: i64) -> Option<String> {
        self.insert(
            "person".into(),
            PERSON_ROLE.into(),
            Some(person.to_owned()),
            None,
            now_ms,
        )
    }

    /// Opens a session for a person the node granted a role; returns the
    /// `Set-Cookie` value.
    pub fn open_officer(
        &self,
        officer: &veksel_store::officers::Officer,
        now_ms: i64,
    ) -> Option<String> {
        self.insert(
            people::actor(&officer.person_id),
            officer.role.clone(),
            Some(officer.person_id.clone()),
            Some(officer.name.clone()),
            now_ms,
        )
    }

    fn insert(
        &self,
        token_id: String,
        role: String,
        person: Option<String>,
        name: Option<String>,
        now_ms: i64,
    ) -> Option<String> {
        let is_citizen = role == PERSON_ROLE;
        let (id, csrf) = (random_token()?, random_token()?);
        let session = Session {
            token_id,
            role,
            csrf,
            person,
            name,
            created_ms: now_ms,
            last_seen_ms: now_ms,
        };
        let mut map = self.by_digest.lock().ok()?;
        map.retain(|_, s| live(s, now_ms));
        // Citizens log in without any role here, so they may not crowd operators
        // out: past their share the least recently used citizen goes, and when the
        // node is full a citizen goes before an operator does.
        let citizens = map.values().filter(|s| s.is_citizen()).count();
        let full = map.len() >= MAX_SESSIONS;
        if full || (is_citizen && citizens >= MAX_CITIZEN_SESSIONS) {
            let lru = |only_citizens: bool| {
                map.iter()
                    .filter(|(_, s)| !only_citizens || s.is_citizen())
                    .min_by_key(|(_, s)| s.last_seen_ms)
                    .map(|(k, _)| *k)
            };
            if let Some(k) = lru(true).or_else(|| lru(false)) {
                map.remove(&k);
            }
        }
        map.insert(digest(&id), session);
        // A citizen arrives from the identity provider's site, so their session's
        // cookie must travel on that navigation (Lax); it reads only their own
        // lookups, and every form still needs its CSRF token. An operator's session
        // stays Strict (an officer's login ends on a page of this node that moves
        // on, so the cookie's first use is a same-site navigation).
        let same_site = if is_citizen { "Lax" } else { "Strict" };
        Some(format!(
            "{SESSION_COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite={same_site}",
            MAX_AGE_MS / 1000
        ))
    }

    /// The request's session, if it has a live one (which then counts as used now).
    pub fn current(&self, headers: &HeaderMap, now_ms: i64) -> Option<Session> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let mut map = self.by_digest.lock().ok()?;
        let key = digest(id);
        match map.get_mut(&key) {
            Some(s) if live(s, now_ms) => {
                s.last_seen_ms = now_ms;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the request's session.
    pub fn close(&self, headers: &HeaderMap) {
        if let (Some(id), Ok(mut map)) = (cookie(headers, SESSION_COOKIE), self.by_digest.lock()) {
            map.remove(&digest(id));
        }
    }

    /// Ends every session of an admin token (it was revoked), or of an officer
    /// (`person:` and their number: their grant was removed or changed).
    pub fn close_token(&self, token_id: &str) {
        if let Ok(mut map) = self.by_digest.lock() {
            map.retain(|_, s| s.token_id != token_id);
        }
    }
}

fn live(s: &Session, now_ms: i64) -> bool {
    now_ms - s.last_seen_ms < IDLE_MS && now_ms - s.created_ms < MAX_AGE_MS
}

/// The `Set-Cookie` value that forgets the session.
pub fn forget_session() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// Why a request was refused before it did anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No live session: sign in.
    SignedOut,
    /// A `POST` from another site, or without this session's CSRF token.
    CrossSite,
    /// The session's role may not do this.
    Role,
}

/// A form's fields.
#[derive(Debug, Default)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    /// Parses an `application/x-www-form-urlencoded` body of at most [`MAX_FORM`]
    /// bytes.
    pub fn parse(body: &[u8]) -> Option<Self> {
        (body.len() <= MAX_FORM).then(|| {
            Self(
                form_urlencoded::parse(body)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
            )
        })
    }

    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Checks that a `POST` comes from this node's own pages in this session: not from
/// another origin, and with the session's CSRF token (`csrf` field).
pub fn check_post(
    headers: &HeaderMap,
    host: Option<&str>,
    session: &Session,
    form: &FormFields,
) -> Result<(), Refusal> {
    if !same_origin(headers, host) {
        return Err(Refusal::CrossSite);
    }
    let presented = form.get("csrf").unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes())) {
        Ok(())
    } else {
        Err(Refusal::CrossSite)
    }
}

/// False for a request a browser says comes from another origin (`Origin` other
/// than `host`, the node as the request names it, or `Sec-Fetch-Site` other than
/// `same-origin` or `none`).
pub fn same_origin(headers: &HeaderMap, host: Option<&str>) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let same = host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(h)
        });
        if !same {
            return false;
        }
    }
    !headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "same-origin" && v != "none")
}

/// A page with the console's security headers.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with its own forms,
    // and the origin check could not tell them from another site's.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `303 See Other` to `to`, optionally setting a cookie.
pub fn see_other(to: &str, set_cookie: Option<&str>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The stylesheet of every page.
pub fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../templates/console.css"),
    )
        .into_response()
}

/// A link of the navigation.
#[derive(Debug, Clone)]
pub struct NavLink {
    /// Where it goes.
    pub href: String,
    /// What it says.
    pub label: &'static str,
    /// Whether it is the page shown.
    pub current: bool,
}

#[derive(Template)]
#[template(path = "layout.html")]
struct Layout<'a> {
    lang: &'static str,
    w: &'static Words,
    node: &'a str,
    title: &'a str,
    base: &'a str,
    nav: &'a [NavLink],
    session: Option<&'a Session>,
    here: &'a str,
    langs: Vec<LangLink>,
    content: &'a str,
}

struct LangLink {
    code: &'static str,
    name: &'static str,
    current: bool,
}

/// What the layout around a page needs to know.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The page's language.
    pub lang: Lang,
    /// The node: "Gateway DEV/GOV/10000001/gw1".
    pub node: &'a str,
    /// Where the console lives: `/console`.
    pub base: &'a str,
    /// The navigation.
    pub nav: &'a [NavLink],
    /// Who is signed in.
    pub session: Option<&'a Session>,
    /// The page shown (path and query, form-encoded), where a language switch
    /// returns to.
    pub here: &'a str,
}

/// Wraps a page's rendered content in the layout.
pub fn page(frame: Frame<'_>, status: StatusCode, title: &str, content: &str) -> Response {
    let rendered = Layout {
        lang: frame.lang.code(),
        w: frame.lang.words(),
        node: frame.node,
        title,
        base: frame.base,
        nav: frame.nav,
        session: frame.session,
        here: frame.here,
        langs: Lang::ALL
            .iter()
            .map(|l| LangLink {
                code: l.code(),
                name: l.words().language_name,
                current: *l == frame.lang,
            })
            .collect(),
        content,
    }
    .render();
    match rendered {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "a page could not be rendered");
            html(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        }
    }
}

/// A word of the catalogue, chosen for the page's language.
pub type Label = fn(&Words) -> &'static str;

/// What a node's pages are: where they live, how its roles rank, what the
/// navigation links.
#[derive(Debug)]
pub struct Site {
    /// The node's roles, lowest first.
    pub ranks: &'static [&'static str],
    /// The navigation once signed in: paths under [`BASE`] and their labels.
    pub nav: &'static [(&'static str, Label)],
}

/// What every page of a request needs: its language, its session, the node and
/// the navigation. Nodes make one per request with [`Ctx::new`].
#[derive(Debug)]
pub struct Ctx {
    /// The page's language.
    pub lang: Lang,
    /// The signed-in session, if any.
    pub session: Option<Session>,
    node: String,
    base: &'static str,
    ranks: &'static [&'static str],
    here: String,
    nav: Vec<NavLink>,
    host: Option<String>,
    people_login: bool,
}

/// The node as a request names it: `Host` (HTTP/1.1), or the URI's authority
/// (HTTP/2's `:authority`).
pub fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
}

impl Ctx {
    /// The context of a request to `uri` for the pages of `site` on the node called
    /// `node`.
    pub fn new(
        site: &'static Site,
        sessions: &Sessions,
        now_ms: i64,
        headers: &HeaderMap,
        uri: &axum::http::Uri,
        node: String,
    ) -> Self {
        let (base, ranks) = (BASE, site.ranks);
        let lang = Lang::choose(headers);
        let session = sessions.current(headers, now_ms);
        let path = uri.path();
        let nav = match &session {
            Some(s) if !s.is_citizen() => site
                .nav
                .iter()
                .map(|(to, label)| {
                    let href = format!("{base}{to}");
                    NavLink {
                        current: path == href,
                        href,
                        label: label(lang.words()),
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        let here = uri.path_and_query().map_or(path, |p| p.as_str());
        Self {
            lang,
            session,
            node,
            base,
            ranks,
            here: form_urlencoded::byte_serialize(here.as_bytes()).collect(),
            nav,
            host: request_host(headers, uri),
            people_login: false,
        }
    }

    /// Like [`Ctx::new`], and the session ends if its admin token was revoked since
    /// sign-in, or its officer's grant removed or changed (or if that cannot be
    /// checked: a session is never kept on a guess).
    pub async fn load(
        site: &'static Site,
        sessions: &Sessions,
        db: &Db,
        now_ms: i64,
        headers: &HeaderMap,
        uri: &axum::http::Uri,
        node: String,
    ) -> Self {
        let mut ctx = Self::new(site, sessions, now_ms, headers, uri, node);
        if let Some(s) = ctx.session.as_ref().filter(|s| !s.is_citizen()) {
            let active = match &s.person {
                None => veksel_store::tokens::is_active(db, &s.token_id).await,
                Some(person) => veksel_store::officers::find(db, person)
                    .await
                    .map(|grant| grant.is_some_and(|g| g.role == s.role)),
            };
            if !matches!(active, Ok(true)) {
                sessions.close_token(&s.token_id);
                ctx.session = None;
                ctx.nav.clear();
            }
        }
        ctx
    }

    /// The page's words.
    pub fn w(&self) -> &'static Words {
        self.lang.words()
    }

    /// The layout's view of this request.
    pub fn frame(&self) -> Frame<'_> {
        Frame {
            lang: self.lang,
            node: &self.node,
            base: self.base,
            nav: &self.nav,
            session: self.session.as_ref(),
            here: &self.here,
        }
    }

    /// The session, if its role is `role` or above.
    pub fn require(&self, role: &str) -> Result<&Session, Refusal> {
        match &self.session {
            None => Err(Refusal::SignedOut),
            Some(s) if s.has_role(self.ranks, role) => Ok(s),
            Some(_) => Err(Refusal::Role),
        }
    }

    /// The citizen signed in with people's login to see their own lookups, if one is.
    pub fn person(&self) -> Option<&str> {
        self.session
            .as_ref()
            .filter(|s| s.is_citizen())
            .and_then(|s| s.person.as_deref())
    }

    /// Who acts in this session, as audit trails name them: the admin token's id,
    /// or `person:` and an officer's number.
    pub fn actor(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.token_id.as_str())
    }

    /// Whether the session's role is `role` or above.
    pub fn may(&self, role: &str) -> bool {
        self.require(role).is_ok()
    }

    /// The session's CSRF token, for the page's forms.
    pub fn csrf(&self) -> &str {
        self.session.as_ref().map_or("", |s| s.csrf.as_str())
    }

    /// The answer to a refused request.
    pub fn refused(&self, r: Refusal) -> Response {
        refused(self.frame(), r)
    }

    /// Checks a `POST`: a session of `role` or above, from this node's own page (see
    /// [`check_post`]).
    pub fn check_post(
        &self,
        role: &str,
        headers: &HeaderMap,
        form: &FormFields,
    ) -> Result<&Session, Refusal> {
        let s = self.require(role)?;
        check_post(headers, self.host.as_deref(), s, form)?;
        Ok(s)
    }

    /// A page whose content `template` renders.
    pub fn page<T: Template>(&self, status: StatusCode, title: &str, template: &T) -> Response {
        match template.render() {
            Ok(content) => page(self.frame(), status, title, &content),
            Err(e) => {
                tracing::error!(error = %e, "a page could not be rendered");
                message_page(
                    self.frame(),
                    StatusCode::INTERNAL_SERVER_ERROR,
                    title,
                    "internal error",
                    None,
                )
            }
        }
    }

    /// The database failed: the page says to try again.
    pub fn unavailable(&self, title: &str) -> Response {
        message_page(
            self.frame(),
            StatusCode::SERVICE_UNAVAILABLE,
            title,
            self.w().unavailable,
            None,
        )
    }

    /// Nothing is at the address: the page says what was looked for.
    pub fn not_found(&self, what: &str) -> Response {
        let w = self.w();
        message_page(
            self.frame(),
            StatusCode::NOT_FOUND,
            w.not_found,
            what,
            Some((&format!("{}/", self.base), w.back)),
        )
    }

    /// Signs in with the admin token in the form's `token` field, if it is valid and
    /// the form comes from this node's own page.
    pub async fn sign_in(
        &self,
        db: &Db,
        sessions: &Sessions,
        headers: &HeaderMap,
        body: &[u8],
        now_ms: i64,
    ) -> Response {
        let same_site = same_origin(headers, self.host.as_deref());
        sign_in(
            db,
            sessions,
            self.frame(),
            self.people_login,
            same_site,
            body,
            now_ms,
        )
        .await
    }

    /// The sign-in page, saying why the last attempt failed if it did.
    pub fn sign_in_page(&self, error: Option<&str>, status: StatusCode) -> Response {
        sign_in_page(self.frame(), self.people_login, error, status)
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignIn<'a> {
    w: &'static Words,
    base: &'a str,
    error: Option<&'a str>,
    people_login: bool,
}

#[derive(Template)]
#[template(path = "message.html")]
struct Message<'a> {
    message: &'a str,
    back: Option<(&'a str, &'a str)>,
}

/// The sign-in page (an admin token, and people's login where the node has it),
/// with an error if the last attempt failed.
pub fn sign_in_page(
    frame: Frame<'_>,
    people_login: bool,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let w = frame.lang.words();
    match (SignIn {
        w,
        base: frame.base,
        error,
        people_login,
    })
    .render()
    {
        Ok(content) => page(frame, status, w.sign_in, &content),
        Err(e) => {
            tracing::error!(error = %e, "the sign-in page could not be rendered");
            html(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        }
    }
}

/// A page that says one thing, with a way back.
pub fn message_page(
    frame: Frame<'_>,
    status: StatusCode,
    title: &str,
    message: &str,
    back: Option<(&str, &str)>,
) -> Response {
    match (Message { message, back }).render() {
        Ok(content) => page(frame, status, title, &content),
        Err(_) => html(status, message.to_owned()),
    }
}

/// The answer to a refused request: sign in, or a page saying why.
pub fn refused(frame: Frame<'_>, refusal: Refusal) -> Response {
    let w = frame.lang.words();
    match refusal {
        Refusal::SignedOut => see_other(&format!("{}/signin", frame.base), None),
        Refusal::CrossSite => {
            message_page(frame, StatusCode::FORBIDDEN, w.refused, w.cross_site, None)
        }
        Refusal::Role => message_page(frame, StatusCode::FORBIDDEN, w.refused, w.needs_role, None),
    }
}

/// Signs in with the admin token in the form's `token` field, if it is valid.
async fn sign_in(
    db: &Db,
    sessions: &Sessions,
    frame: Frame<'_>,
    people_login: bool,
    same_site: bool,
    body: &[u8],
    now_ms: i64,
) -> Response {
    let w = frame.lang.words();
    // Another site must not sign a browser in with a token of its choosing.
    if !same_site {
        return refused(frame, Refusal::CrossSite);
    }
    let token = FormFields::parse(body)
        .and_then(|f| f.get("token").map(|t| t.trim().to_owned()))
        .unwrap_or_default();
    let principal = match veksel_store::tokens::authenticate(db, &token).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return sign_in_page(
                frame,
                people_login,
                Some(w.bad_token),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "tokens could not be read");
            return sign_in_page(
                frame,
                people_login,
                Some(w.unavailable),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
    };
    match sessions.open(&principal, now_ms) {
        Some(cookie) => {
            tracing::info!(actor = %principal.id, role = %principal.role, "signed in to the console");
            see_other(&format!("{}/", frame.base), Some(&cookie))
        }
        None => sign_in_page(
            frame,
            people_login,
            Some(w.unavailable),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    }
}

/// Switches the language (a cookie, for a year) and goes back to `to` if it is a
/// page of the console.
pub fn switch_language(base: &str, lang: &str, to: Option<&str>) -> Response {
    let lang = Lang::parse(lang).unwrap_or(Lang::En);
    let back = to
        .filter(|t| t.starts_with(base) && !t.contains("//") && !t.contains('\\'))
        .unwrap_or(base);
    see_other(
        back,
        Some(&format!(
            "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; Secure; SameSite=Lax",
            lang.code()
        )),
    )
}

/// A node that serves the pages: what the routes every node shares need of it.
pub trait Node: Send + Sync + 'static {
    /// Its pages.
    fn site(&self) -> &'static Site;
    /// Its sessions.
    fn sessions(&self) -> &Sessions;
    /// Its database, which holds its admin tokens.
    fn db(&self) -> &Db;
    /// Now, Unix ms (the node's clock).
    fn now_ms(&self) -> i64;
    /// Its name in the pages' header: "Gateway DEV/GOV/10000001/gw1".
    fn name(&self) -> String;
    /// Whether people can log in at this node; they start at [`PERSON_SIGNIN`].
    fn people_login(&self) -> bool;
    /// Whether a person who logged in with the test login may act in a role
    /// granted to them (sandboxes only).
    fn test_login_officers(&self) -> bool;
    /// Records a change made in the pages in the node's audit trail (which feeds
    /// the network ledger): who, what (`noun.verb`), about what, and the details,
    /// which stay off the ledger.
    fn record(
        &self,
        actor: &str,
        action: &'static str,
        subject: &str,
        detail: serde_json::Value,
    ) -> impl Future<Output = Result<(), veksel_store::StoreError>> + Send;
}

impl Ctx {
    /// The context of a request to `node`'s pages.
    pub async fn of<N: Node>(node: &N, headers: &HeaderMap, uri: &axum::http::Uri) -> Self {
        let mut ctx = Self::load(
            node.site(),
            node.sessions(),
            node.db(),
            node.now_ms(),
            headers,
            uri,
            node.name(),
        )
        .await;
        ctx.people_login = node.people_login();
        ctx
    }
}

/// The routes every node's pages share: the stylesheet, sign-in and sign-out, the
/// language switch.
pub fn routes<N: Node>() -> axum::Router<std::sync::Arc<N>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/console", get(|| async { see_other("/console/", None) }))
        .route("/console/console.css", get(|| async { stylesheet() }))
        .route(
            "/console/signin",
            get(sign_in_page_route::<N>).post(sign_in_route::<N>),
        )
        .route("/console/signout", post(sign_out_route::<N>))
        .route("/console/lang", get(language_route))
        .merge(people::routes::<N>())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM))
}

type NodeState<N> = axum::extract::State<std::sync::Arc<N>>;

async fn sign_in_page_route<N: Node>(
    axum::extract::State(node): NodeState<N>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let ctx = Ctx::of(node.as_ref(), &headers, &uri).await;
    let w = ctx.w();
    // A person's login that did not end in a session comes back here saying why.
    let error = match uri.query() {
        Some("failed") => Some(w.person_login_failed),
        Some("no-role") => Some(w.no_role_here),
        Some("test-login") => Some(w.test_login_not_for_officers),
        _ => None,
    };
    let status = if error.is_some() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    ctx.sign_in_page(error, status)
}

async fn sign_in_route<N: Node>(
    axum::extract::State(node): NodeState<N>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    Ctx::of(node.as_ref(), &headers, &uri)
        .await
        .sign_in(node.db(), node.sessions(), &headers, &body, node.now_ms())
        .await
}

async fn sign_out_route<N: Node>(
    axum::extract::State(node): NodeState<N>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    let ctx = Ctx::of(node.as_ref(), &headers, &uri).await;
    let form = FormFields::parse(&body).unwrap_or_default();
    // Anyone signed in may sign out, a person as well as an operator.
    let checked = match &ctx.session {
        None => Err(Refusal::SignedOut),
        Some(s) => check_post(&headers, ctx.host.as_deref(), s, &form),
    };
    if let Err(r) = checked {
        return ctx.refused(r);
    }
    node.sessions().close(&headers);
    see_other(&format!("{BASE}/signin"), Some(&forget_session()))
}

/// The language switch's query.
#[derive(Debug, serde::Deserialize)]
struct LangQuery {
    l: String,
    to: Option<String>,
}

async fn language_route(axum::extract::Query(q): axum::extract::Query<LangQuery>) -> Response {
    switch_language(BASE, &q.l, q.to.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn principal() -> TokenPrincipal {
        TokenPrincipal {
            id: "tok-1".into(),
            role: "observer".into(),
        }
    }

    #[test]
    fn sessions_live_until_idle_or_old_and_end_on_sign_out() {
        let sessions = Sessions::default();
        let set = sessions.open(&principal(), 0).unwrap();
        assert!(set.contains("HttpOnly; Secure; SameSite=Strict"));
        let cookie = set.split(';').next().unwrap().to_owned();
        let h = headers(&[("cookie", &cookie)]);
        let s = sessions.current(&h, 1000).unwrap();
        assert_eq!(
            (s.token_id.as_str(), s.role.as_str()),
            ("tok-1", "observer")
        );
        // Used every 20 minutes it lives until the 8 hours are up.
        let mut t = 1000;
        while t < MAX_AGE_MS - 20 * 60 * 1000 {
            t += 20 * 60 * 1000;
            assert!(sessions.current(&h, t).is_some(), "at {t}");
        }
        assert!(sessions.current(&h, MAX_AGE_MS + 1).is_none());
        // Idle for 30 minutes: gone.
        let set = sessions.open(&principal(), 0).unwrap();
        let h = headers(&[("cookie", set.split(';').next().unwrap())]);
        assert!(sessions.current(&h, IDLE_MS + 1).is_none());
        // Signed out, or a made-up id: none.
        let set = sessions.open(&principal(), 0).unwrap();
        let h = headers(&[("cookie", set.split(';').next().unwrap())]);
        sessions.close(&h);
        assert!(sessions.current(&h, 1).is_none());
        assert!(
            sessions
                .current(&headers(&[("cookie", "veksel_console=made-up")]), 1)
                .is_none()
        );
        // A revoked token's sessions end.
        let set = sessions.open(&principal(), 0).unwrap();
        let h = headers(&[("cookie", set.split(';').next().unwrap())]);
        sessions.close_token("tok-1");
        assert!(sessions.current(&h, 1).is_none());
    }

    #[test]
    fn citizens_cannot_crowd_out_operators_nor_started_logins_block_new_ones() {
        let sessions = Sessions::default();
        let operator = sessions.open(&principal(), 0).unwrap();
        let h = headers(&[("cookie", operator.split(';').next().unwrap())]);
        for n in 0..MAX_SESSIONS as i64 + 50 {
            sessions.open_person("0101701234", n + 1).unwrap();
        }
        assert!(
            sessions.current(&h, MAX_SESSIONS as i64 + 100).is_some(),
            "the operator's session survives a flood of citizens"
        );
        let count = sessions.by_digest.lock().unwrap().len();
        assert_eq!(count, MAX_CITIZEN_SESSIONS + 1);
        // A flood of started logins: the newest still starts, the oldest went.
        let (first, _) = sessions.start_login(false, 0).unwrap();
        for n in 0..MAX_SESSIONS as i64 {
            sessions.start_login(false, n + 1).unwrap();
        }
        let logins = sessions.logins.lock().unwrap();
        assert_eq!(logins.len(), MAX_SESSIONS);
        assert!(!logins.contains_key(&first));
    }

    #[test]
    fn posts_need_the_same_origin_and_the_session_token() {
        const HOST: Option<&str> = Some("127.0.0.1:8600");
        let sessions = Sessions::default();
        let set = sessions.open(&principal(), 0).unwrap();
        let cookie = set.split(';').next().unwrap().to_owned();
        let s = sessions
            .current(&headers(&[("cookie", &cookie)]), 1)
            .unwrap();
        let form = FormFields::parse(format!("csrf={}&x=1", s.csrf).as_bytes()).unwrap();
        let same = headers(&[
            ("host", "127.0.0.1:8600"),
            ("origin", "http://127.0.0.1:8600"),
        ]);
        assert_eq!(check_post(&same, HOST, &s, &form), Ok(()));
        assert_eq!(check_post(&headers(&[]), HOST, &s, &form), Ok(()));
        for bad in [
            headers(&[
                ("host", "127.0.0.1:8600"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[("host", "127.0.0.1:8600"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:8600"), ("sec-fetch-site", "cross-site")]),
            headers(&[("host", "127.0.0.1:8600"), ("sec-fetch-site", "same-site")]),
        ] {
            assert_eq!(
                check_post(&bad, HOST, &s, &form),
                Err(Refusal::CrossSite),
                "{bad:?}"
            );
        }
        let forged = FormFields::parse(b"csrf=guess&x=1").unwrap();
        assert_eq!(
            check_post(&same, HOST, &s, &forged),
            Err(Refusal::CrossSite)
        );
        let none = FormFields::parse(b"x=1").unwrap();
        assert_eq!(check_post(&same, HOST, &s, &none), Err(Refusal::CrossSite));
        assert!(FormFields::parse(&vec![b'a'; MAX_FORM + 1]).is_none());
    }

    #[test]
    fn roles_rank_and_languages_are_chosen() {
        let s = Session {
            token_id: "t".into(),
            role: "security-officer".into(),
            csrf: String::new(),
            person: None,
            name: None,
            created_ms: 0,
            last_seen_ms: 0,
        };
        let ranks = ["observer", "security-officer", "admin"];
        assert!(s.has_role(&ranks, "observer"));
        assert!(s.has_role(&ranks, "security-officer"));
        assert!(!s.has_role(&ranks, "admin"));
        assert!(!s.has_role(&ranks, "unknown"));
        assert_eq!(
            Lang::choose(&headers(&[("accept-language", "da-DK,da;q=0.9")])),
            Lang::Da
        );
        assert_eq!(
            Lang::choose(&headers(&[
                ("accept-language", "da"),
                ("cookie", "veksel_lang=en")
            ])),
            Lang::En
        );
        assert_eq!(
            Lang::choose(&headers(&[("accept-language", "fr")])),
            Lang::En
        );
        // The switch goes back only to a page of the console.
        let r = switch_language("/console", "da", Some("https://evil.example/"));
        assert_eq!(r.headers()["location"], "/console");
        let r = switch_language("/console", "da", Some("/console//evil.example"));
        assert_eq!(r.headers()["location"], "/console");
        let r = switch_language("/console", "da", Some("/console/log?client=x"));
        assert_eq!(r.headers()["location"], "/console/log?client=x");
    }
}
