//! The authority's pages under `/console`: the configuration it publishes, the
//! members and their subsystems, the management requests waiting for a decision,
//! which a registration officer approves or declines with a reason, and the ledger
//! explorer ([`crate::console_ledger`]). Sign-in, sessions, CSRF and the layout come
//! from `veksel_console`; approving and declining go through the same code as the
//! admin API.
//!
//! People the authority granted a role sign in through its own login (the test
//! login, or the external provider behind it) as the built-in relying party
//! [`oidc::CONSOLE_CLIENT_ID`]; the code is spent here, not at the token endpoint.

use crate::AppState;
use crate::management::{self, ManagementRequestDto};
use crate::oidc;
use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use std::sync::Arc;
use veksel_console::{Ctx, FormFields, Site, Words, message_page, see_other};

use veksel_console::BASE;
/// The authority's roles, lowest first.
const RANKS: [&str; 3] = ["observer", "registration-officer", "admin"];
/// Requests shown as decided recently.
const RECENT: i64 = 20;

static SITE: Site = Site {
    ranks: &RANKS,
    nav: &[
        ("/", |w| w.overview),
        ("/requests", |w| w.requests),
        ("/members", |w| w.members),
        ("/certificates", |w| w.issued_certificates),
        ("/trust", |w| w.trust),
        ("/audit", |w| w.audit_trail),
        ("/ledger", |w| w.ledger),
        ("/people", |w| w.people),
    ],
};

/// The pages' routes.
pub fn router() -> Router<Arc<AppState>> {
    veksel_console::routes::<AppState>()
        .route("/console/", get(overview))
        .route("/console/requests", get(requests_page))
        .route("/console/requests/{id}/{decision}", post(decide))
        .route("/console/members", get(members_page))
        .route("/console/certificates", get(certificates_page))
        .route("/console/trust", get(trust_page))
        .route("/console/audit", get(audit_page))
        .route(veksel_console::PERSON_SIGNIN, get(person_sign_in))
        .route("/console/signin/callback", get(person_callback))
        .merge(crate::console_ledger::router())
        .layer(axum::extract::DefaultBodyLimit::max(
            veksel_console::MAX_FORM,
        ))
}

impl veksel_console::Node for AppState {
    fn site(&self) -> &'static Site {
        &SITE
    }
    fn sessions(&self) -> &veksel_console::Sessions {
        &self.console
    }
    fn db(&self) -> &veksel_store::Db {
        self.registry.db()
    }
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
    fn name(&self) -> String {
        format!("Authority {}", self.config.instance)
    }
    fn test_login_officers(&self) -> bool {
        self.config
            .people_login
            .as_ref()
            .is_some_and(|p| p.test_login && p.test_officers)
    }
    fn people_login(&self) -> bool {
        self.config
            .people_login
            .as_ref()
            .is_some_and(|p| p.test_login || p.external.is_some())
    }
    async fn record(
        &self,
        actor: &str,
        action: &'static str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Result<(), veksel_store::StoreError> {
        self.registry
            .audit(
                self.clock.now_ms(),
                actor,
                action,
                subject,
                &detail.to_string(),
            )
            .await?;
        self.ledger_changed.notify_one();
        Ok(())
    }
}

// === People's sign-in ===

/// Sends a person to the authority's own login, as the console's relying party.
async fn person_sign_in(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    use veksel_console::Node;
    let failed = || see_other(&format!("{BASE}/signin?failed"), None);
    if !s.people_login() {
        return failed();
    }
    let target = veksel_console::LoginTarget {
        authorize: "/oidc/v1/authorize",
        client_id: oidc::CONSOLE_CLIENT_ID,
        redirect_uri: &oidc::console_redirect_uri(&s),
        cookie_path: &format!("{BASE}/signin"),
    };
    let lang = veksel_console::Lang::choose(&headers);
    s.console
        .send_to_login(true, s.clock.now_ms(), target, lang)
        .unwrap_or_else(failed)
}

#[derive(serde::Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
}

/// The way back from the login: the state bound to this browser, the code spent
/// for the console with this login's verifier, the nonce the same; then the role
/// the authority granted the person, if any.
async fn person_callback(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<Callback>,
) -> Response {
    let failed = |why: &str| {
        tracing::warn!(reason = %why, "a person's sign-in to the console could not be completed");
        see_other(&format!("{BASE}/signin?failed"), None)
    };
    let (Some(state), Some(code)) = (q.state.as_deref(), q.code.as_deref()) else {
        return failed("no code or state (the login was refused or cancelled)");
    };
    let Some(login) = s.console.finish_login(&headers, state, s.clock.now_ms()) else {
        return failed("unknown, expired or foreign state");
    };
    if !login.officer {
        return failed("not an officer's login");
    }
    let spent = oidc::spend_code(
        &s,
        code,
        oidc::CONSOLE_CLIENT_ID,
        &oidc::console_redirect_uri(&s),
        &login.verifier,
    )
    .await;
    let spent = match spent {
        Ok(c) => c,
        Err(e) => return failed(&e.to_string()),
    };
    if !login.nonce_matches(spent.nonce.as_deref()) {
        return failed("the code is for another login (nonce)");
    }
    veksel_console::people::officer_signed_in(
        s.as_ref(),
        &headers,
        &spent.pid,
        spent.by_test_login(),
    )
    .await
}

async fn ctx(s: &AppState, headers: &HeaderMap, uri: &Uri) -> Ctx {
    Ctx::of(s, headers, uri).await
}

// === Overview ===

#[derive(Template)]
#[template(path = "console/overview.html")]
struct Overview<'a> {
    w: &'static Words,
    base: &'a str,
    version: u64,
    generated_at: String,
    expires_at: String,
    members: usize,
    gateways: usize,
    pending: usize,
}

async fn overview(State(s): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = ctx(&s, &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    let pending = match management::requests(&s, Some("submitted"), 1000).await {
        Ok(r) => r.len(),
        Err(e) => {
            tracing::error!(error = %e, "requests could not be read");
            return ctx.unavailable(ctx.w().overview);
        }
    };
    let p = s.published();
    let view = Overview {
        w: ctx.w(),
        base: BASE,
        version: p.conf.version,
        generated_at: veksel_proto::rfc3339(p.conf.generated_at_ms),
        expires_at: veksel_proto::rfc3339(p.conf.expires_at_ms),
        members: p.conf.members.len(),
        gateways: p.conf.gateways.len(),
        pending,
    };
    ctx.page(StatusCode::OK, ctx.w().overview, &view)
}

// === Management requests ===

struct RequestLine {
    id: i64,
    kind: &'static str,
    change: String,
    submitted_by: String,
    created_at: String,
    consented: &'static str,
    state: String,
    decided_by: String,
    reason: String,
}

impl RequestLine {
    fn of(r: ManagementRequestDto, w: &'static Words) -> Self {
        let mut change = serde_json::to_value(&r.change).unwrap_or_default();
        if let Some(fields) = change.as_object_mut() {
            fields.remove("type");
        }
        Self {
            id: r.id,
            kind: r.change.kind(),
            change: change.to_string(),
            submitted_by: r.submitted_by,
            created_at: r.created_at,
            consented: if r.consented { w.yes } else { w.no },
            state: r.state,
            decided_by: r.decided_by.unwrap_or_default(),
            reason: r.reason.unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/requests.html")]
struct RequestsView<'a> {
    w: &'static Words,
    base: &'a str,
    can_decide: bool,
    csrf: &'a str,
    notice: Option<&'a str>,
    error: Option<String>,
    pending: Vec<RequestLine>,
    recent: Vec<RequestLine>,
}

async fn requests_view<'a>(
    s: &AppState,
    ctx: &'a Ctx,
    notice: Option<&'a str>,
    error: Option<String>,
) -> Result<RequestsView<'a>, veksel_store::StoreError> {
    let w = ctx.w();
    let pending = management::requests(s, Some("submitted"), 1000).await?;
    let recent = management::requests(s, None, RECENT + pending.len() as i64).await?;
    Ok(RequestsView {
        w,
        base: BASE,
        can_decide: ctx.may("registration-officer"),
        csrf: ctx.csrf(),
        notice,
        error,
        pending: pending.into_iter().map(|r| RequestLine::of(r, w)).collect(),
        recent: recent
            .into_iter()
            .filter(|r| r.state != "submitted")
            .take(RECENT as usize)
            .map(|r| RequestLine::of(r, w))
            .collect(),
    })
}

async fn requests_page(State(s): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = ctx(&s, &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    let notice = match uri.query() {
        Some("approved") => Some(ctx.w().approved_notice),
        Some("declined") => Some(ctx.w().declined_notice),
        _ => None,
    };
    match requests_view(&s, &ctx, notice, None).await {
        Ok(view) => ctx.page(StatusCode::OK, ctx.w().requests, &view),
        Err(e) => {
            tracing::error!(error = %e, "requests could not be read");
            ctx.unavailable(ctx.w().requests)
        }
    }
}

/// Approves (`approve`) or declines (`decline`, with the form's `reason`) a request.
async fn decide(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Path((id, decision)): Path<(i64, String)>,
    body: Bytes,
) -> Response {
    let ctx = ctx(&s, &headers, &uri).await;
    let form = FormFields::parse(&body).unwrap_or_default();
    let who = match ctx.check_post("registration-officer", &headers, &form) {
        Ok(session) => session.token_id.clone(),
        Err(r) => return ctx.refused(r),
    };
    let outcome = match decision.as_str() {
        "approve" => management::approve(&s, id, &who).await.map(|_| "approved"),
        "decline" => {
            let reason = form.get("reason").unwrap_or_default().trim();
            management::decline(&s, id, &who, reason)
                .await
                .map(|_| "declined")
        }
        _ => return ctx.not_found(&decision),
    };
    match outcome {
        Ok(done) => {
            tracing::info!(actor = %who, id, decision = %done, "management request decided in the console");
            see_other(&format!("{BASE}/requests?{done}"), None)
        }
        // Already decided, not applicable, or no reason: the list again, saying why.
        Err(e) => {
            let status = e.status();
            match requests_view(&s, &ctx, None, Some(format!("{id}: {}", e.message()))).await {
                Ok(view) => ctx.page(status, ctx.w().requests, &view),
                Err(_) => message_page(ctx.frame(), status, ctx.w().requests, e.message(), None),
            }
        }
    }
}

// === Members ===

struct MemberLine {
    id: String,
    name: String,
    subsystems: String,
}

#[derive(Template)]
#[template(path = "console/members.html")]
struct MembersView {
    w: &'static Words,
    members: Vec<MemberLine>,
}

async fn members_page(State(s): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = ctx(&s, &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    let members = match s.registry.members().await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "members could not be read");
            return ctx.unavailable(ctx.w().members);
        }
    };
    let view = MembersView {
        w: ctx.w(),
        members: members
            .into_iter()
            .map(|m| MemberLine {
                id: m.id,
                name: m.name,
                subsystems: m
                    .subsystems
                    .iter()
                    .map(|s| s.code.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect(),
    };
    ctx.page(StatusCode::OK, ctx.w().members, &view)
}

// === Certificates and trust services ===

#[derive(Template)]
#[template(path = "console/certificates.html")]
struct CertificatesView {
    w: &'static Words,
    certs: Vec<crate::model::IssuedDto>,
}

async fn certificates_page(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let ctx = ctx(&s, &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    match s.registry.issued(None).await {
        Ok(certs) => ctx.page(
            StatusCode::OK,
            ctx.w().issued_certificates,
            &CertificatesView { w: ctx.w(), certs },
        ),
        Err(e) => {
            tracing::error!(error = %e, "certificates could not be read");
            ctx.unavailable(ctx.w().issued_certificates)
        }
    }
}

struct TrustLine {
    name: String,
    subject: String,
    not_after: String,
    url: String,
    priority: String,
}

#[derive(Template)]
#[template(path = "console/trust.html")]
struct TrustView {
    w: &'static Words,
    cas: Vec<TrustLine>,
    tsas: Vec<TrustLine>,
}

async fn trust_page(State(s): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = ctx(&s, &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    let lines = |kind: &'static str| {
        let s = &s;
        async move {
            s.registry.trust_services(kind).await.map(|rows| {
                rows.into_iter()
                    .map(|(name, pem, url, priority)| {
                        let cert = veksel_pki::certs_from_pem(&pem)
                            .ok()
                            .and_then(|c| c.into_iter().next())
                            .and_then(|der| veksel_pki::CertInfo::parse(&der).ok());
                        TrustLine {
                            name,
                            subject: cert.as_ref().map(|c| c.subject.clone()).unwrap_or_default(),
                            not_after: cert
                                .as_ref()
                                .map(|c| veksel_proto::rfc3339(c.not_after * 1000))
                                .unwrap_or_default(),
                            url: url.unwrap_or_default(),
                            priority: if kind == "tsa" {
                                priority.to_string()
                            } else {
                                String::new()
                            },
                        }
                    })
                    .collect::<Vec<_>>()
            })
        }
    };
    match (lines("ca").await, lines("tsa").await) {
        (Ok(cas), Ok(tsas)) => ctx.page(
            StatusCode::OK,
            ctx.w().trust,
            &TrustView {
                w: ctx.w(),
                cas,
                tsas,
            },
        ),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "trust services could not be read");
            ctx.unavailable(ctx.w().trust)
        }
    }
}

// === The audit trail ===

/// Audit events a page shows.
const AUDIT_EVENTS: i64 = 200;

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditView {
    w: &'static Words,
    events: Vec<crate::model::AuditEvent>,
}

async fn audit_page(State(s): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = ctx(&s, &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    match s.registry.audit_events(AUDIT_EVENTS).await {
        Ok(events) => ctx.page(
            StatusCode::OK,
            ctx.w().audit_trail,
            &AuditView { w: ctx.w(), events },
        ),
        Err(e) => {
            tracing::error!(error = %e, "the audit trail could not be read");
            ctx.unavailable(ctx.w().audit_trail)
        }
    }
}
