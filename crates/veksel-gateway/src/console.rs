//! The gateway's pages, on the admin listener under `/console`: readiness, the
//! subsystems hosted here with their services and access rights (which a security
//! officer edits), certificates with their expiry, and the message log with evidence
//! to download. Sign-in, sessions, CSRF and the layout come from `veksel_console`;
//! the rules on roles are the admin API's.
//!
//! People log in through the network's login as the relying party `people_client`:
//! a citizen to see who looked up data about them (`/console/me`), an officer the
//! gateway granted a role to work here (`/console/signin/person`). Both come back
//! to `/console/me/callback`, the one redirect URI the relying party registers.

use crate::Gateway;
use crate::admin::ROLES;
use crate::msglog::{self, LogQuery};
use crate::serverconf::validate_access;
use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use veksel_console::{Ctx, FormFields, Site, Words, message_page};
use veksel_id::SubsystemId;
use veksel_proto::access::{AccessRule, Endpoint, Subject};

use veksel_console::BASE;

/// The pages' routes.
pub fn router(gw: Arc<Gateway>) -> Router {
    veksel_console::routes::<Gateway>()
        .route("/console/", get(overview))
        .route("/console/clients/{id}", get(client_page))
        .route("/console/clients/{id}/access/{action}", post(change_access))
        .route("/console/clients/{id}/groups/{action}", post(change_group))
        .route("/console/log", get(log_page))
        .route("/console/log/{request_id}/evidence", get(evidence))
        .route("/console/monitoring", get(monitoring_page))
        .route("/console/me", get(me))
        .route("/console/me/login", get(me_login))
        .route(veksel_console::PERSON_SIGNIN, get(officer_login))
        .route("/console/me/callback", get(me_callback))
        .layer(axum::extract::DefaultBodyLimit::max(
            veksel_console::MAX_FORM,
        ))
        .with_state(gw)
}

/// The gateway's pages.
static SITE: Site = Site {
    ranks: &ROLES,
    nav: &[
        ("/", |w| w.overview),
        ("/log", |w| w.message_log),
        ("/monitoring", |w| w.monitoring),
        ("/people", |w| w.people),
    ],
};

impl veksel_console::Node for Gateway {
    fn site(&self) -> &'static Site {
        &SITE
    }
    fn sessions(&self) -> &veksel_console::Sessions {
        &self.console
    }
    fn db(&self) -> &veksel_store::Db {
        &self.db
    }
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
    fn name(&self) -> String {
        format!("Gateway {}", self.id())
    }
    fn test_login_officers(&self) -> bool {
        self.config.console_test_officers
    }
    fn people_login(&self) -> bool {
        self.config.people_client.is_some()
    }
    async fn record(
        &self,
        actor: &str,
        action: &'static str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Result<(), veksel_store::StoreError> {
        let change =
            crate::ledger::ConfigChange::new(self.clock.now_ms(), action, subject, actor, detail);
        let mut conn = self.db.pool().acquire().await?;
        change.store(&mut conn).await
    }
}

/// The context of a request to the gateway's pages.
async fn ctx(gw: &Gateway, headers: &HeaderMap, uri: &Uri) -> Ctx {
    Ctx::of(gw, headers, uri).await
}

// === Overview ===

struct ClientLine {
    id: String,
    path: String,
    services: usize,
}

struct CertLine {
    role: String,
    member: String,
    not_after: String,
    days: i64,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct Overview<'a> {
    w: &'static Words,
    problems: Vec<String>,
    warnings: Vec<String>,
    conf_version: String,
    conf_expires: String,
    clients: Vec<ClientLine>,
    certs: Vec<CertLine>,
    base: &'a str,
}

fn path_id(id: &SubsystemId) -> String {
    id.to_string().replace('/', ":")
}

async fn overview(State(gw): State<Arc<Gateway>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = ctx(&gw, &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    let latest = gw.conf.latest();
    let now_secs = i64::try_from(gw.clock.now_secs()).unwrap_or(i64::MAX);
    let view = Overview {
        w: ctx.w(),
        problems: crate::admin::readiness_problems(&gw).await,
        warnings: crate::admin::readiness_warnings(&gw),
        conf_version: latest
            .as_ref()
            .map_or("–".into(), |c| c.conf().version.to_string()),
        conf_expires: latest.as_ref().map_or("–".into(), |c| {
            veksel_proto::rfc3339(c.conf().expires_at_ms)
        }),
        clients: gw
            .serverconf
            .current()
            .clients
            .values()
            .map(|c| ClientLine {
                id: c.id.to_string(),
                path: path_id(&c.id),
                services: c.services.len(),
            })
            .collect(),
        certs: crate::renewal::status(&gw.keys.get(), now_secs)
            .into_iter()
            .map(|c| CertLine {
                role: c.role,
                member: c.member.unwrap_or_default(),
                not_after: c.not_after,
                days: c.expires_in_secs.div_euclid(86_400),
            })
            .collect(),
        base: BASE,
    };
    ctx.page(StatusCode::OK, ctx.w().overview, &view)
}

// === A subsystem: services and access rights ===

struct ServiceLine {
    code: String,
    base_url: String,
    state: &'static str,
    requirements: String,
}

struct GroupLine {
    code: String,
    description: String,
    members: String,
}

struct RuleLine {
    key: String,
    subject: String,
    service: String,
    method: String,
    path: String,
}

#[derive(Template)]
#[template(path = "console/client.html")]
struct ClientView<'a> {
    w: &'static Words,
    base: &'a str,
    path_id: String,
    services: Vec<ServiceLine>,
    rules: Vec<RuleLine>,
    groups: Vec<GroupLine>,
    can_edit: bool,
    csrf: &'a str,
    notice: Option<&'a str>,
    error: Option<String>,
}

/// How a page writes a rule's subject, and reads it back from the form.
fn subject_text(s: &Subject) -> String {
    match s {
        Subject::Client(c) => c.to_string(),
        Subject::GlobalGroup(g) => g.to_string(),
        Subject::LocalGroup(code) => format!("local:{code}"),
    }
}

fn parse_subject(text: &str) -> Result<Subject, String> {
    let text = text.trim();
    if let Some(code) = text.strip_prefix("local:") {
        veksel_id::validate_part("local group", 1, code).map_err(|e| e.to_string())?;
        return Ok(Subject::LocalGroup(code.to_owned()));
    }
    if text.split('/').count() == 2 {
        return text
            .parse()
            .map(Subject::GlobalGroup)
            .map_err(|e: veksel_id::IdError| e.to_string());
    }
    text.parse()
        .map(Subject::Client)
        .map_err(|e: veksel_id::IdError| e.to_string())
}

/// A rule's key in a form: its digest, so that a removal names the rule, not a
/// position that another change may have moved.
fn rule_key(r: &AccessRule) -> String {
    let json = serde_json::to_vec(r).unwrap_or_default();
    hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json).as_ref()[..12])
}

fn client_view<'a>(
    ctx: &'a Ctx,
    gw: &Gateway,
    id: &SubsystemId,
    notice: Option<&'a str>,
    error: Option<String>,
) -> Option<ClientView<'a>> {
    let conf = gw.serverconf.current();
    let client = conf.clients.get(id)?;
    let w = ctx.w();
    let can_edit = ctx.may("security-officer");
    Some(ClientView {
        w,
        base: BASE,
        path_id: path_id(id),
        services: client
            .services
            .iter()
            .map(|(code, s)| ServiceLine {
                code: code.clone(),
                base_url: s.base_url.clone(),
                state: if s.enabled { w.enabled } else { w.disabled },
                requirements: s
                    .scopes
                    .iter()
                    .map(|r| format!("{} {}", w.requires_scope, r.scope))
                    .chain(s.person_level.map(|l| format!("{} {l}", w.requires_person)))
                    .collect::<Vec<_>>()
                    .join("; "),
            })
            .collect(),
        rules: client
            .access
            .iter()
            .map(|r| RuleLine {
                key: rule_key(r),
                subject: subject_text(&r.subject),
                service: r.service_code.clone(),
                method: r.endpoint.method.clone(),
                path: r.endpoint.path.clone(),
            })
            .collect(),
        groups: client
            .local_groups
            .iter()
            .map(|(code, g)| GroupLine {
                code: code.clone(),
                description: g.description.clone(),
                members: g
                    .members
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect(),
        can_edit,
        csrf: ctx.csrf(),
        notice,
        error,
    })
}

async fn client_page(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    uri: Uri,
    Path(raw): Path<String>,
) -> Response {
    let ctx = ctx(&gw, &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    let Ok(id) = veksel_admin::path_id::<SubsystemId>(&raw, "subsystem") else {
        return ctx.not_found(&raw);
    };
    let notice = match uri.query() {
        Some("added") => Some(ctx.w().access_added),
        Some("removed") => Some(ctx.w().access_removed),
        Some("gone") => Some(ctx.w().rule_gone),
        Some("group-saved") => Some(ctx.w().group_saved),
        Some("group-deleted") => Some(ctx.w().group_deleted),
        _ => None,
    };
    match client_view(&ctx, &gw, &id, notice, None) {
        Some(view) => ctx.page(StatusCode::OK, &id.to_string(), &view),
        None => ctx.not_found(&id.to_string()),
    }
}

/// The checks of a change to a subsystem's access rights: a security officer's
/// session, a form from this console, a subsystem hosted here.
fn change_allowed(
    ctx: &Ctx,
    gw: &Gateway,
    headers: &HeaderMap,
    raw: &str,
    form: &FormFields,
) -> Result<(SubsystemId, Vec<AccessRule>), Box<Response>> {
    ctx.check_post("security-officer", headers, form)
        .map_err(|r| Box::new(ctx.refused(r)))?;
    let id = veksel_admin::path_id::<SubsystemId>(raw, "subsystem")
        .map_err(|_| Box::new(ctx.not_found(raw)))?;
    let rules = gw
        .serverconf
        .current()
        .clients
        .get(&id)
        .map(|c| c.access.clone())
        .ok_or_else(|| Box::new(ctx.not_found(raw)))?;
    Ok((id, rules))
}

async fn save_access(
    gw: &Gateway,
    ctx: &Ctx,
    id: &SubsystemId,
    rules: &[AccessRule],
) -> Result<(), Box<Response>> {
    let actor = ctx.session.as_ref().map_or("", |s| s.token_id.as_str());
    let change = crate::ledger::ConfigChange::new(
        gw.clock.now_ms(),
        "access.set",
        id.to_string(),
        actor,
        serde_json::to_value(rules).unwrap_or_default(),
    );
    match gw.serverconf.put_access(id, rules, &change).await {
        Ok(()) => {
            tracing::info!(actor = %actor, client = %id, rules = rules.len(), "access rights replaced in the console");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "access rights could not be saved");
            Err(Box::new(ctx.unavailable(ctx.w().refused)))
        }
    }
}

/// Adds (`add`) or removes (`remove`) one access right of a subsystem.
async fn change_access(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    uri: Uri,
    Path((raw, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let ctx = ctx(&gw, &headers, &uri).await;
    let form = FormFields::parse(&body).unwrap_or_default();
    let (id, mut rules) = match change_allowed(&ctx, &gw, &headers, &raw, &form) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let outcome = match action.as_str() {
        "add" => match rule_of(&form) {
            Ok(rule) if rules.contains(&rule) => "added",
            Ok(rule) => {
                rules.push(rule);
                "added"
            }
            Err(e) => {
                return match client_view(&ctx, &gw, &id, None, Some(e)) {
                    Some(view) => ctx.page(StatusCode::BAD_REQUEST, &id.to_string(), &view),
                    None => ctx.not_found(&raw),
                };
            }
        },
        "remove" => {
            let key = form.get("rule").unwrap_or_default();
            let before = rules.len();
            rules.retain(|r| rule_key(r) != key);
            if rules.len() == before {
                "gone"
            } else {
                "removed"
            }
        }
        _ => return ctx.not_found(&action),
    };
    let changed = gw
        .serverconf
        .current()
        .clients
        .get(&id)
        .is_some_and(|c| c.access != rules);
    if changed && let Err(r) = save_access(&gw, &ctx, &id, &rules).await {
        return *r;
    }
    veksel_console::see_other(&format!("{BASE}/clients/{}?{outcome}", path_id(&id)), None)
}

/// Most members of one local group.
const MAX_GROUP_MEMBERS: usize = 1000;

/// Saves (`save`: creates or replaces) or deletes (`delete`) a local group.
async fn change_group(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    uri: Uri,
    Path((raw, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let ctx = ctx(&gw, &headers, &uri).await;
    let form = FormFields::parse(&body).unwrap_or_default();
    let id = match change_allowed(&ctx, &gw, &headers, &raw, &form) {
        Ok((id, _)) => id,
        Err(r) => return *r,
    };
    let code = form.get("code").unwrap_or_default().trim().to_owned();
    let actor = ctx.session.as_ref().map_or("", |s| s.token_id.as_str());
    let subject = format!("{id}/{code}");
    let outcome = match action.as_str() {
        "save" => match group_of(&form, &code) {
            Ok(group) => {
                let change = crate::ledger::ConfigChange::new(
                    gw.clock.now_ms(),
                    "local_group.set",
                    subject,
                    actor,
                    serde_json::to_value(&group).unwrap_or_default(),
                );
                gw.serverconf
                    .put_local_group(&id, &code, &group, &change)
                    .await
                    .map(|()| "group-saved")
            }
            Err(e) => {
                return match client_view(&ctx, &gw, &id, None, Some(e)) {
                    Some(view) => ctx.page(StatusCode::BAD_REQUEST, &id.to_string(), &view),
                    None => ctx.not_found(&raw),
                };
            }
        },
        "delete" => {
            let change = crate::ledger::ConfigChange::new(
                gw.clock.now_ms(),
                "local_group.remove",
                subject,
                actor,
                serde_json::Value::Null,
            );
            match gw.serverconf.remove_local_group(&id, &code, &change).await {
                // Deleted by someone else meanwhile: the list shows it is gone.
                Err(veksel_store::StoreError::NotFound(_)) => Ok("group-deleted"),
                other => other.map(|()| "group-deleted"),
            }
        }
        _ => return ctx.not_found(&action),
    };
    match outcome {
        Ok(done) => {
            tracing::info!(actor = %actor, client = %id, group = %code, action = %done, "local group changed in the console");
            veksel_console::see_other(&format!("{BASE}/clients/{}?{done}", path_id(&id)), None)
        }
        Err(e) => {
            tracing::error!(error = %e, "a local group could not be changed");
            ctx.unavailable(ctx.w().local_groups)
        }
    }
}

/// The local group the form describes: a code, a description, members one per line.
fn group_of(form: &FormFields, code: &str) -> Result<crate::serverconf::LocalGroup, String> {
    veksel_id::validate_part("local group", 0, code).map_err(|e| e.to_string())?;
    let description = form
        .get("description")
        .unwrap_or_default()
        .trim()
        .to_owned();
    if description.chars().count() > 200 {
        return Err("a description has at most 200 characters".into());
    }
    let members = form
        .get("members")
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<veksel_id::ClientId>()
                .map_err(|e| format!("member {l:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if members.len() > MAX_GROUP_MEMBERS {
        return Err(format!("at most {MAX_GROUP_MEMBERS} members"));
    }
    Ok(crate::serverconf::LocalGroup {
        description,
        members,
    })
}

/// The access right the add form describes.
fn rule_of(form: &FormFields) -> Result<AccessRule, String> {
    let field = |name: &str| form.get(name).unwrap_or_default().trim().to_owned();
    let rule = AccessRule {
        subject: parse_subject(&field("subject"))?,
        service_code: field("service"),
        endpoint: Endpoint {
            method: field("method").to_ascii_uppercase(),
            path: field("path"),
        },
    };
    validate_access(std::slice::from_ref(&rule))?;
    Ok(rule)
}

// === The message log ===

#[derive(serde::Deserialize, Default)]
struct LogForm {
    client: Option<String>,
    service: Option<String>,
    request_id: Option<String>,
    person: Option<String>,
}

struct LogLine {
    time: String,
    request_id: String,
    side: String,
    client: String,
    service: String,
    method: String,
    status: i64,
}

#[derive(Template)]
#[template(path = "console/log.html")]
struct LogView<'a> {
    w: &'static Words,
    base: &'a str,
    officer: bool,
    client: String,
    service: String,
    request_id: String,
    person: String,
    rows: Vec<LogLine>,
}

fn filled(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().chars().take(300).collect::<String>())
        .filter(|s| !s.is_empty())
}

async fn log_page(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    uri: Uri,
    Query(f): Query<LogForm>,
) -> Response {
    let ctx = ctx(&gw, &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    let officer = ctx.may("security-officer");
    let q = LogQuery {
        client: filled(f.client),
        service: filled(f.service),
        request_id: filled(f.request_id),
        // Which exchanges concern a person is itself personal data.
        person: filled(f.person).filter(|_| officer),
        limit: Some(200),
        ..LogQuery::default()
    };
    let rows = match msglog::query_messages(&gw.db, &q, msglog::Detail::Metadata).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the message log could not be read");
            return ctx.unavailable(ctx.w().message_log);
        }
    };
    let view = LogView {
        w: ctx.w(),
        base: BASE,
        officer,
        client: q.client.clone().unwrap_or_default(),
        service: q.service.clone().unwrap_or_default(),
        request_id: q.request_id.clone().unwrap_or_default(),
        person: q.person.clone().unwrap_or_default(),
        rows: rows
            .into_iter()
            .map(|r| LogLine {
                time: r.logged_at,
                request_id: r.request_id,
                side: r.side,
                client: r.client,
                service: r.service,
                method: r.method,
                status: r.status,
            })
            .collect(),
    };
    ctx.page(StatusCode::OK, ctx.w().message_log, &view)
}

#[derive(serde::Deserialize)]
struct SideQuery {
    side: String,
}

async fn evidence(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    uri: Uri,
    Path(request_id): Path<String>,
    Query(q): Query<SideQuery>,
) -> Response {
    let ctx = ctx(&gw, &headers, &uri).await;
    // Descriptors name end users: security officers only, as in the admin API.
    if let Err(r) = ctx.require("security-officer") {
        return ctx.refused(r);
    }
    let Some(conf) = gw.conf.latest() else {
        return ctx.not_found(&request_id);
    };
    let side = if q.side == "provider" {
        "provider"
    } else {
        "consumer"
    };
    match crate::evidence::export(
        &gw.db,
        &gw.archive_dir,
        gw.id(),
        &request_id,
        side,
        &conf.jws,
    )
    .await
    {
        Ok(bundle) => {
            let mut r = axum::Json(bundle).into_response();
            let name = format!(
                "attachment; filename=\"evidence-{}-{side}.json\"",
                request_id
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect::<String>()
            );
            if let Ok(v) = HeaderValue::from_str(&name) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Err(e @ crate::evidence::ExportError::NotStamped { .. }) => message_page(
            ctx.frame(),
            StatusCode::CONFLICT,
            ctx.w().evidence,
            &e.to_string(),
            Some((&format!("{BASE}/log"), ctx.w().back)),
        ),
        Err(e) => {
            tracing::info!(error = %e, "no evidence for the console");
            ctx.not_found(&request_id)
        }
    }
}

// === The citizens' data tracker ===

struct LookupLine {
    at: String,
    organisation: String,
    service: String,
    why: String,
}

#[derive(Template)]
#[template(path = "console/me.html")]
struct MeView<'a> {
    w: &'static Words,
    base: &'a str,
    person: Option<&'a str>,
    lookups: Vec<LookupLine>,
    available: bool,
    failed: bool,
}

/// A person's own page: who looked up data about them in this register. Signed
/// out, it offers the national login.
async fn me(State(gw): State<Arc<Gateway>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = ctx(&gw, &headers, &uri).await;
    let w = ctx.w();
    let mut view = MeView {
        w,
        base: BASE,
        person: ctx.person(),
        lookups: Vec::new(),
        available: gw.config.people_client.is_some(),
        failed: uri.query() == Some("failed"),
    };
    if let Some(person) = ctx.person() {
        let lookups = match msglog::lookups_about(&gw.db, &gw.subject_hash(person), 500).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "lookups could not be read");
                return ctx.unavailable(w.my_lookups);
            }
        };
        let names: std::collections::HashMap<String, String> = gw
            .conf
            .latest()
            .map(|c| {
                c.conf()
                    .members
                    .iter()
                    .map(|m| (m.id.to_string(), m.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        view.lookups = lookups
            .into_iter()
            .map(|l| {
                let member = l
                    .client
                    .parse::<SubsystemId>()
                    .map(|c| c.member().to_string())
                    .unwrap_or_default();
                LookupLine {
                    at: l.at,
                    organisation: match names.get(&member) {
                        Some(name) => format!("{name} ({})", l.client),
                        None => l.client,
                    },
                    service: l.service,
                    why: l.issue.unwrap_or_default(),
                }
            })
            .collect();
    }
    ctx.page(StatusCode::OK, w.my_lookups, &view)
}

fn me_redirect_uri(gw: &Gateway) -> String {
    format!("{}{BASE}/me/callback", gw.config.console_url())
}

/// Where a person's login that did not end in a session goes back to.
fn login_failed(officer: bool) -> Response {
    let to = if officer {
        format!("{BASE}/signin?failed")
    } else {
        format!("{BASE}/me?failed")
    };
    veksel_console::see_other(&to, None)
}

/// Sends a citizen to the network's login, to see their lookups.
async fn me_login(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    person_login(&gw, &headers, false)
}

/// Sends an officer to the network's login, to work here in the role granted.
async fn officer_login(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    person_login(&gw, &headers, true)
}

/// Sends the person to the network's login, as the relying party `people_client`.
fn person_login(gw: &Gateway, headers: &HeaderMap, officer: bool) -> Response {
    let failed = || login_failed(officer);
    let (Some(client), Some(conf)) = (&gw.config.people_client, gw.conf.latest()) else {
        return failed();
    };
    let Some(issuer) = conf.conf().token_service.as_ref().map(|t| t.issuer.clone()) else {
        return failed();
    };
    let target = veksel_console::LoginTarget {
        authorize: &format!("{issuer}/oidc/v1/authorize"),
        client_id: &client.to_string(),
        redirect_uri: &me_redirect_uri(gw),
        cookie_path: &format!("{BASE}/me"),
    };
    let lang = veksel_console::Lang::choose(headers);
    gw.console
        .send_to_login(officer, gw.clock.now_ms(), target, lang)
        .unwrap_or_else(failed)
}

#[derive(serde::Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
}

/// The way back from the network's login: the code redeemed with the member's key,
/// the ID token verified with the provider's keys of the global configuration,
/// issued to `people_client` for this login's nonce; then the person's session.
async fn me_callback(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let now_ms = gw.clock.now_ms();
    let (Some(client), Some(state)) = (&gw.config.people_client, q.state.as_deref()) else {
        return login_failed(false);
    };
    let Some(login) = gw.console.finish_login(&headers, state, now_ms) else {
        return login_failed(false);
    };
    let failed = || login_failed(login.officer);
    let Some(code) = q.code.as_deref() else {
        return failed();
    };
    let now = now_ms.div_euclid(1000);
    let answer = crate::tokens::redeem_code(
        &gw.conf,
        &gw.keys.get(),
        client,
        code,
        &me_redirect_uri(&gw),
        &login.verifier,
        now,
    )
    .await;
    let person = answer.map_err(|e| e.to_string()).and_then(|a| {
        let token = a["id_token"].as_str().ok_or("no id_token")?.to_owned();
        let conf = gw
            .conf
            .current(veksel_id::Origin::ClientProxy)
            .map_err(|f| f.message)?;
        let claims = conf.id_token(&token, now).map_err(|e| e.to_string())?;
        if !login.nonce_matches(claims.nonce.as_deref()) {
            return Err("the ID token is for another login (nonce)".to_owned());
        }
        let by_test_login = veksel_console::by_test_login(&claims.amr);
        veksel_proto::person::accept(&claims, &token, &client.to_string(), now)
            .map(|p| (p, by_test_login))
            .map_err(|e| e.to_string())
    });
    match person {
        Ok((p, by_test_login)) if login.officer => {
            veksel_console::people::officer_signed_in(gw.as_ref(), &headers, &p.id, by_test_login)
                .await
        }
        Ok((p, _)) => match gw.console.open_person(&p.id, now_ms) {
            Some(cookie) => {
                tracing::info!(level = %p.level, "a person signed in to see their lookups");
                veksel_console::see_other(&format!("{BASE}/me"), Some(&cookie))
            }
            None => failed(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "a person's login could not be completed");
            failed()
        }
    }
}

// === Monitoring ===

struct ServiceStats {
    service: String,
    side: String,
    count: usize,
    failed: usize,
    p50: String,
    p95: String,
}

#[derive(Template)]
#[template(path = "console/monitoring.html")]
struct MonitoringView {
    w: &'static Words,
    chart: String,
    stats: Vec<ServiceStats>,
}

/// Most monitoring records a page reads.
const CHART_RECORDS: i64 = 50_000;

async fn monitoring_page(State(gw): State<Arc<Gateway>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = ctx(&gw, &headers, &uri).await;
    if let Err(r) = ctx.require("observer") {
        return ctx.refused(r);
    }
    let w = ctx.w();
    let now = gw.clock.now_ms();
    let since = now - 3_600_000;
    let timings = match msglog::timings_since(&gw.db, since, CHART_RECORDS).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "monitoring could not be read");
            return ctx.unavailable(w.monitoring);
        }
    };
    let first_minute = since.div_euclid(60_000) + 1;
    let mut bars: Vec<veksel_console::chart::Bar> = (0..60)
        .map(|i| veksel_console::chart::Bar {
            label: veksel_proto::rfc3339((first_minute + i) * 60_000)
                .get(11..16)
                .unwrap_or_default()
                .to_owned(),
            good: 0,
            bad: 0,
        })
        .collect();
    let mut by_service: std::collections::BTreeMap<(String, String), (Vec<i64>, usize)> =
        std::collections::BTreeMap::new();
    for t in &timings {
        let minute = t.at_ms.div_euclid(60_000) - first_minute;
        if let Some(bar) = usize::try_from(minute).ok().and_then(|m| bars.get_mut(m)) {
            if t.succeeded {
                bar.good += 1;
            } else {
                bar.bad += 1;
            }
        }
        let entry = by_service
            .entry((t.service.clone(), t.side.clone()))
            .or_default();
        entry.0.push(t.duration_ms);
        entry.1 += usize::from(!t.succeeded);
    }
    let stats = by_service
        .into_iter()
        .map(|((service, side), (mut durations, failed))| {
            durations.sort_unstable();
            let p = |q| {
                veksel_console::chart::percentile(&durations, q)
                    .map_or_else(String::new, |v| v.to_string())
            };
            ServiceStats {
                service,
                side,
                count: durations.len(),
                failed,
                p50: p(50),
                p95: p(95),
            }
        })
        .collect();
    let view = MonitoringView {
        w,
        chart: veksel_console::chart::stacked_bars(
            "per-minute",
            w.exchanges_per_minute,
            w.exchanges_chart_desc,
            &bars,
        ),
        stats,
    };
    ctx.page(StatusCode::OK, w.monitoring, &view)
}
