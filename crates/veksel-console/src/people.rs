//! People who work in the console by their own login: an admin grants a person
//! number one of the node's roles on the people page, and from then on that person
//! signs in through people's login (the network's, or an external provider behind
//! it) instead of with an admin token. Their session carries the granted role and
//! ends as soon as the grant is removed or changed; the audit trail names them as
//! `person:` and their number.
//!
//! How the login itself runs differs by node (the authority is its own identity
//! provider, a gateway is a relying party of the authority); both end in
//! [`officer_signed_in`].

use crate::{Ctx, FormFields, Node, StatusCode, Template, Words, html, see_other};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use std::sync::Arc;
use veksel_store::StoreError;
use veksel_store::officers::{self, Officer};

/// The actor an officer's actions are recorded under.
pub fn actor(person_id: &str) -> String {
    format!("person:{person_id}")
}

#[derive(Template)]
#[template(path = "signed_in.html")]
struct SignedIn<'a> {
    lang: &'static str,
    w: &'static Words,
    to: &'a str,
}

/// Ends an officer's login whose person number `person_id` the node's login just
/// verified: a session with the role granted to them, or back to the sign-in page
/// if they have none here.
///
/// The session's cookie is `SameSite=Strict`, and the login arrives from the
/// identity provider's site, where a browser would not send it; so the answer is a
/// page of this node that moves on by itself, and the cookie's first use is a
/// same-site navigation.
///
/// A login with the test login (`by_test_login`), which believes any person number,
/// is refused unless the node allows it (sandboxes): otherwise anyone who knew a
/// granted person's number could act in their role.
pub async fn officer_signed_in<N: Node>(
    node: &N,
    headers: &HeaderMap,
    person_id: &str,
    by_test_login: bool,
) -> Response {
    let base = crate::BASE;
    if by_test_login && !node.test_login_officers() {
        tracing::warn!("a person logged in with the test login tried to sign in to the console");
        return see_other(&format!("{base}/signin?test-login"), None);
    }
    let grant = match officers::find(node.db(), person_id).await {
        Ok(Some(g)) if node.site().ranks.contains(&g.role.as_str()) => g,
        Ok(_) => {
            tracing::warn!("a person without a role here tried to sign in to the console");
            return see_other(&format!("{base}/signin?no-role"), None);
        }
        Err(e) => {
            tracing::error!(error = %e, "grants could not be read");
            return see_other(&format!("{base}/signin?failed"), None);
        }
    };
    let Some(cookie) = node.sessions().open_officer(&grant, node.now_ms()) else {
        return see_other(&format!("{base}/signin?failed"), None);
    };
    tracing::info!(actor = %actor(person_id), role = %grant.role, "an officer signed in to the console");
    let lang = crate::Lang::choose(headers);
    let to = format!("{base}/");
    let page = SignedIn {
        lang: lang.code(),
        w: lang.words(),
        to: &to,
    };
    let mut r = match page.render() {
        Ok(body) => html(StatusCode::OK, body),
        Err(_) => return see_other(&to, Some(&cookie)),
    };
    if let Ok(v) = axum::http::HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(axum::http::header::SET_COOKIE, v);
    }
    r
}

// === The people page ===

/// The role that manages grants: the node's highest.
fn admin_role<N: Node>(node: &N) -> &'static str {
    node.site().ranks.last().copied().unwrap_or("admin")
}

struct GrantLine {
    person_id: String,
    name: String,
    role: String,
    granted_by: String,
    granted_at: String,
}

#[derive(Template)]
#[template(path = "people.html")]
struct PeopleView<'a> {
    w: &'static Words,
    base: &'a str,
    csrf: &'a str,
    roles: &'static [&'static str],
    grants: Vec<GrantLine>,
    notice: Option<&'a str>,
    error: Option<String>,
    people_login: bool,
}

async fn view<'a, N: Node>(
    node: &N,
    ctx: &'a Ctx,
    notice: Option<&'a str>,
    error: Option<String>,
) -> Result<PeopleView<'a>, StoreError> {
    let grants = officers::list(node.db()).await?;
    Ok(PeopleView {
        w: ctx.w(),
        base: crate::BASE,
        csrf: ctx.csrf(),
        roles: node.site().ranks,
        grants: grants
            .into_iter()
            .map(|g: Officer| GrantLine {
                person_id: g.person_id,
                name: g.name,
                role: g.role,
                granted_by: g.granted_by,
                granted_at: veksel_proto::rfc3339(g.granted_at),
            })
            .collect(),
        notice,
        error,
        people_login: node.people_login(),
    })
}

async fn people_page<N: Node>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let ctx = Ctx::of(node.as_ref(), &headers, &uri).await;
    if let Err(r) = ctx.require(admin_role(node.as_ref())) {
        return ctx.refused(r);
    }
    let w = ctx.w();
    let notice = match uri.query() {
        Some("granted") => Some(w.role_granted),
        Some("revoked") => Some(w.role_revoked),
        _ => None,
    };
    match view(node.as_ref(), &ctx, notice, None).await {
        Ok(v) => ctx.page(StatusCode::OK, w.people, &v),
        Err(e) => {
            tracing::error!(error = %e, "grants could not be read");
            ctx.unavailable(w.people)
        }
    }
}

/// The page again with an error, for a change that could not be made.
async fn refused_change<N: Node>(
    node: &N,
    ctx: &Ctx,
    status: StatusCode,
    error: String,
) -> Response {
    match view(node, ctx, None, Some(error)).await {
        Ok(v) => ctx.page(status, ctx.w().people, &v),
        Err(_) => ctx.unavailable(ctx.w().people),
    }
}

/// A `POST` of the people page: its context, its form and who sends it, if an
/// admin sends it from this node's own page.
async fn admin_post<N: Node>(
    node: &N,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<(Ctx, FormFields, String), Response> {
    let ctx = Ctx::of(node, headers, uri).await;
    let form = FormFields::parse(body).unwrap_or_default();
    let actor = match ctx.check_post(admin_role(node), headers, &form) {
        Ok(s) => s.token_id.clone(),
        Err(r) => return Err(ctx.refused(r)),
    };
    Ok((ctx, form, actor))
}

/// Grants the form's `role` to the person numbered `person` called `name`.
async fn grant<N: Node>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response {
    let (ctx, form, actor) = match admin_post(node.as_ref(), &headers, &uri, &body).await {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    let field = |k: &str| form.get(k).unwrap_or_default().trim().to_owned();
    let (person_id, name, role) = (field("person"), field("name"), field("role"));
    if !node.site().ranks.contains(&role.as_str()) {
        let known = node.site().ranks.join(", ");
        return refused_change(
            node.as_ref(),
            &ctx,
            StatusCode::BAD_REQUEST,
            format!("{role:?}: {known}"),
        )
        .await;
    }
    if let Err(e) = officers::check_grant(&person_id, &name) {
        return refused_change(node.as_ref(), &ctx, StatusCode::BAD_REQUEST, e).await;
    }
    let officer = Officer {
        person_id: person_id.clone(),
        name: name.clone(),
        role: role.clone(),
        granted_by: actor.clone(),
        granted_at: node.now_ms(),
    };
    let done = async {
        officers::grant(node.db(), &officer).await?;
        let detail = serde_json::json!({ "person": person_id, "name": name, "role": role });
        node.record(&actor, "console.person.grant", &role, detail)
            .await
    }
    .await;
    match done {
        Ok(()) => {
            // A changed role takes effect now: the person signs in again.
            node.sessions().close_token(&self::actor(&person_id));
            tracing::info!(actor = %actor, role = %role, "a person was granted a console role");
            see_other(&format!("{}/people?granted", crate::BASE), None)
        }
        Err(e) => {
            tracing::error!(error = %e, "a grant could not be stored");
            ctx.unavailable(ctx.w().people)
        }
    }
}

/// Removes the grant of the person numbered in the path.
async fn revoke<N: Node>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    uri: Uri,
    Path(person_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let (ctx, _, actor) = match admin_post(node.as_ref(), &headers, &uri, &body).await {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    let done = async {
        officers::revoke(node.db(), &person_id).await?;
        let detail = serde_json::json!({ "person": person_id });
        node.record(&actor, "console.person.revoke", "-", detail)
            .await
    }
    .await;
    match done {
        Ok(()) => {
            node.sessions().close_token(&self::actor(&person_id));
            tracing::info!(actor = %actor, "a person's console role was removed");
            see_other(&format!("{}/people?revoked", crate::BASE), None)
        }
        Err(StoreError::NotFound(m)) => {
            refused_change(node.as_ref(), &ctx, StatusCode::NOT_FOUND, m).await
        }
        Err(e) => {
            tracing::error!(error = %e, "a grant could not be removed");
            ctx.unavailable(ctx.w().people)
        }
    }
}

/// The people page's routes.
pub(crate) fn routes<N: Node>() -> axum::Router<Arc<N>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/console/people", get(people_page::<N>))
        .route("/console/people/grant", post(grant::<N>))
        .route("/console/people/{person}/revoke", post(revoke::<N>))
}
