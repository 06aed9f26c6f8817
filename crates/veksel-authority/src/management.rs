//! Management requests (see [`veksel_proto::management`]): members apply to join,
//! gateways ask for changes about themselves, and the registration officer approves
//! or declines each request, unless the management policy approves its type at once.
//!
//! States: `submitted` → `approved` (the change is in the registry and the global
//! configuration) or `declined` (with a reason). A request is claimed (`approving`)
//! while its change is applied, so two officers cannot apply it twice; a change that
//! fails to apply returns the request to `submitted` with the error.

use crate::AppState;
use crate::auth::{
    AdminRole, ObserverRole, RegistrationOfficerRole, check_fresh, verify_gateway_jws,
    verify_signed,
};
use crate::model::EnrolmentToken;
use crate::tokens::issue_enrolment_token;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use utoipa::{OpenApi, ToSchema};
use veksel_admin::{ApiError, ApiResult, Authorized};
use veksel_proto::management::{CONSENT_CTY, Change, Consent, GatewayRequest, MANAGEMENT_CTY};
use veksel_store::StoreError;
use veksel_store::sqlx;
use veksel_store::tokens::{random_secret, secret_digest};

/// Prefix of applicants' status tokens.
pub const STATUS_TOKEN_PREFIX: &str = "vks_";

/// Most applications waiting for an officer; beyond it new ones are refused, so an
/// open endpoint cannot fill the database.
pub const MAX_PENDING_APPLICATIONS: i64 = 1000;

/// Most applications from one source address (an IPv6 /64) waiting for an officer:
/// anonymous callers cannot fill the shared quota above and lock out real applicants.
pub const MAX_PENDING_APPLICATIONS_PER_SOURCE: i64 = 5;

/// The source an application is counted against: the IPv4 address, or the /64 an
/// IPv6 address is in (one subscriber gets a whole /64).
fn application_source(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// A management request as the officer sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ManagementRequestDto {
    /// Request number.
    pub id: i64,
    /// `submitted`, `approving`, `approved` or `declined`.
    pub state: String,
    /// The change, tagged by `type`.
    #[schema(value_type = Object)]
    pub change: Change,
    /// Who submitted it: `applicant`, `gateway:{id}`, `enrolment:{id}`, `renewal:{id}`.
    pub submitted_by: String,
    /// True if the concerned member's signing key consented (gateway requests).
    pub consented: bool,
    /// When it was submitted, RFC 3339.
    pub created_at: String,
    /// When it was decided, RFC 3339.
    pub decided_at: Option<String>,
    /// Who decided: an API token id, or `policy`.
    pub decided_by: Option<String>,
    /// Why it was declined, or why applying it failed.
    pub reason: Option<String>,
}

/// Answer to an application.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplicationReceipt {
    /// Request number.
    pub id: i64,
    /// `submitted`.
    pub state: String,
    /// Shown once: present it as a bearer token to `GET /apply/v1/{id}`.
    pub status_token: String,
}

/// An application's state, for the applicant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplicationStatus {
    /// Request number.
    pub id: i64,
    /// `submitted`, `approving`, `approved` or `declined`.
    pub state: String,
    /// Why it was declined.
    pub reason: Option<String>,
    /// After approval, once: the one-time token `veksel gateway enrol` takes.
    pub enrolment: Option<EnrolmentToken>,
}

/// Body of a decline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decline {
    /// Told to the applicant or gateway.
    pub reason: String,
}

/// Which request types are approved without an officer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManagementPolicy {
    /// Request types approved on arrival when the concerned member consented.
    pub auto_approve: Vec<String>,
}

/// Filter of the request list.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only requests in this state.
    pub state: Option<String>,
}

type Row = (
    i64,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
);

const COLUMNS: &str =
    "id, state, change, submitted_by, consented, created_at, decided_at, decided_by, reason";

fn dto(r: Row) -> Result<ManagementRequestDto, StoreError> {
    Ok(ManagementRequestDto {
        id: r.0,
        state: r.1,
        change: serde_json::from_str(&r.2)
            .map_err(|e| StoreError::Corrupt(format!("management request {}: {e}", r.0)))?,
        submitted_by: r.3,
        consented: r.4 != 0,
        created_at: veksel_proto::rfc3339(r.5),
        decided_at: r.6.map(veksel_proto::rfc3339),
        decided_by: r.7,
        reason: r.8,
    })
}

async fn load(s: &AppState, id: i64) -> ApiResult<ManagementRequestDto> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM management_requests WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(s.registry.db().pool())
    .await
    .map_err(StoreError::from)?;
    Ok(dto(row.ok_or_else(|| {
        ApiError::not_found(format!("no management request {id}"))
    })?)?)
}

/// What a new request carries besides its change.
struct Submission<'a> {
    submitted_by: &'a str,
    consented: bool,
    signed_request: Option<&'a str>,
    status_token_sha256: Option<&'a str>,
    /// Where an anonymous application came from.
    source: Option<&'a str>,
}

async fn insert(s: &AppState, change: &Change, sub: &Submission<'_>) -> ApiResult<i64> {
    let text = serde_json::to_string(change).map_err(|e| ApiError::internal(e.to_string()))?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO management_requests
             (kind, state, change, submitted_by, consented, signed_request, created_at, status_token_sha256, source)
         VALUES ($1, 'submitted', $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(change.kind())
    .bind(&text)
    .bind(sub.submitted_by)
    .bind(i64::from(sub.consented))
    .bind(sub.signed_request)
    .bind(s.clock.now_ms())
    .bind(sub.status_token_sha256)
    .bind(sub.source)
    .fetch_one(s.registry.db().pool())
    .await
    .map_err(StoreError::from)?;
    s.registry
        .audit(
            s.clock.now_ms(),
            sub.submitted_by,
            "management_request.submit",
            &id.to_string(),
            &text,
        )
        .await?;
    Ok(id)
}

/// Records a change that was approved by the way it was made (an enrolment token, or
/// a renewal signed with the current certificate) and is already applied.
pub async fn record_applied(s: &AppState, change: &Change, submitted_by: &str) -> ApiResult<()> {
    let id = insert(
        s,
        change,
        &Submission {
            submitted_by,
            consented: true,
            signed_request: None,
            status_token_sha256: None,
            source: None,
        },
    )
    .await?;
    finish(s, id, "approved", "policy", None).await
}

async fn finish(
    s: &AppState,
    id: i64,
    state: &str,
    decided_by: &str,
    reason: Option<&str>,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE management_requests SET state = $1, decided_at = $2, decided_by = $3, reason = $4 WHERE id = $5",
    )
    .bind(state)
    .bind(s.clock.now_ms())
    .bind(decided_by)
    .bind(reason)
    .bind(id)
    .execute(s.registry.db().pool())
    .await
    .map_err(StoreError::from)?;
    s.registry
        .audit(
            s.clock.now_ms(),
            decided_by,
            &format!("management_request.{state}"),
            &id.to_string(),
            &serde_json::json!({ "reason": reason }).to_string(),
        )
        .await?;
    Ok(())
}

/// Puts a change into the registry.
async fn apply(s: &AppState, change: &Change) -> Result<(), StoreError> {
    let r = &s.registry;
    let now_ms = s.clock.now_ms();
    match change {
        Change::MemberApplication {
            member,
            name,
            gateway,
            address,
            ..
        } => {
            r.add_member(member, name, now_ms).await?;
            r.add_gateway(gateway, address, now_ms).await
        }
        // Registered when the certificate was issued.
        Change::AuthCertRegistration { .. } => Ok(()),
        Change::ClientRegistration {
            gateway,
            subsystem,
            name,
        } => {
            if !r.subsystem_exists(subsystem).await? {
                r.add_subsystem(subsystem, name.as_deref().unwrap_or(subsystem.code()))
                    .await?;
            }
            r.add_gateway_client(gateway, subsystem).await
        }
        Change::ClientDeletion { gateway, subsystem } => {
            r.remove_gateway_client(gateway, subsystem).await
        }
        Change::ClientDisable { gateway, subsystem } => {
            r.set_client_disabled(gateway, subsystem, true).await
        }
        Change::ClientEnable { gateway, subsystem } => {
            r.set_client_disabled(gateway, subsystem, false).await
        }
        Change::AddressChange { gateway, address } => r.set_gateway_address(gateway, address).await,
        Change::GatewayDeletion { gateway } => r.remove_gateway(gateway).await,
        Change::ScopeRegistration { .. }
        | Change::ScopeDeletion { .. }
        | Change::ScopeDelegation { .. }
        | Change::ScopeDelegationWithdrawal { .. } => crate::oauth::apply(s, change).await,
        Change::RelyingPartyRegistration { .. } | Change::RelyingPartyDeletion { .. } => {
            crate::oidc::apply(s, change).await
        }
    }
}

/// Moves a `submitted` request to `state`; only one caller can. Anything else is a
/// conflict naming the request's state.
async fn claim(s: &AppState, id: i64, state: &str) -> ApiResult<()> {
    let done = sqlx::query(
        "UPDATE management_requests SET state = $1 WHERE id = $2 AND state = 'submitted'",
    )
    .bind(state)
    .bind(id)
    .execute(s.registry.db().pool())
    .await
    .map_err(StoreError::from)?;
    if done.rows_affected() == 0 {
        let request = load(s, id).await?;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "management request {id} is {}, not submitted",
                request.state
            ),
        ));
    }
    Ok(())
}

/// Claims a submitted request, applies its change and marks it approved. On failure
/// the request returns to `submitted` with the reason.
pub(crate) async fn approve(
    s: &AppState,
    id: i64,
    decided_by: &str,
) -> ApiResult<ManagementRequestDto> {
    claim(s, id, "approving").await?;
    let request = load(s, id).await?;
    if let Err(e) = apply(s, &request.change).await {
        let reason = format!("could not apply: {e}");
        sqlx::query(
            "UPDATE management_requests SET state = 'submitted', reason = $1 WHERE id = $2",
        )
        .bind(&reason)
        .bind(id)
        .execute(s.registry.db().pool())
        .await
        .map_err(StoreError::from)?;
        return Err(ApiError::from(e));
    }
    finish(s, id, "approved", decided_by, None).await?;
    s.conf_changed.notify_one();
    load(s, id).await
}

async fn auto_approves(s: &AppState, kind: &str) -> ApiResult<bool> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT auto_approve FROM management_policy WHERE kind = $1")
            .bind(kind)
            .fetch_optional(s.registry.db().pool())
            .await
            .map_err(StoreError::from)?;
    Ok(row.is_some_and(|r| r.0 != 0))
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

/// Routes of management requests.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/apply/v1", post(apply_to_join))
        .route("/apply/v1/{id}", get(application_status))
        .route("/manage/v1", post(gateway_request))
        .route("/api/v1/management-requests", get(list))
        .route("/api/v1/management-requests/{id}", get(get_one))
        .route(
            "/api/v1/management-requests/{id}/approve",
            post(approve_request),
        )
        .route(
            "/api/v1/management-requests/{id}/decline",
            post(decline_request),
        )
        .route("/api/v1/management-policy", get(get_policy).put(put_policy))
}

#[derive(OpenApi)]
#[openapi(paths(
    apply_to_join,
    application_status,
    gateway_request,
    list,
    get_one,
    approve_request,
    decline_request,
    get_policy,
    put_policy
))]
pub(crate) struct ManagementDoc;

/// Body of `POST /apply/v1`: a `member-application` change.
#[utoipa::path(post, path = "/apply/v1", security(()), request_body(content = Object, description = "{\"type\":\"member-application\",\"member\",\"name\",\"gateway\",\"address\",\"contact\"}"), responses((status = 202, body = ApplicationReceipt), (status = 422), (status = 503, description = "Too many applications wait for an officer")))]
async fn apply_to_join(
    State(s): State<Arc<AppState>>,
    axum::Extension(conn): axum::Extension<veksel_net::ConnInfo>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<ApplicationReceipt>)> {
    if body.len() > 16 * 1024 {
        return Err(ApiError::bad_request("an application is at most 16 KiB"));
    }
    let change: Change =
        serde_json::from_slice(&body).map_err(|e| unprocessable(format!("application: {e}")))?;
    let Change::MemberApplication { member, .. } = &change else {
        return Err(unprocessable(
            "only member-application requests are accepted here; gateways use /manage/v1",
        ));
    };
    change.validate().map_err(unprocessable)?;
    let classes = s.registry.member_classes().await?;
    if !classes.iter().any(|c| c.code == member.class()) {
        return Err(unprocessable(format!(
            "member class {} is not one of this network's: {}",
            member.class(),
            classes
                .iter()
                .map(|c| c.code.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if member.instance() != s.registry.instance() {
        return Err(unprocessable(format!(
            "member {member} is not in instance {}",
            s.registry.instance()
        )));
    }
    if s.registry.member(member).await.is_ok() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("member {member} is already registered"),
        ));
    }
    let source = application_source(conn.remote.ip());
    // Counting and inserting one application at a time keeps concurrent submissions
    // from one source from all passing the count.
    let _one_at_a_time = s.applications.lock().await;
    let (from_source,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM management_requests WHERE source = $1 AND state = 'submitted'",
    )
    .bind(&source)
    .fetch_one(s.registry.db().pool())
    .await
    .map_err(StoreError::from)?;
    if from_source >= MAX_PENDING_APPLICATIONS_PER_SOURCE {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            format!(
                "{from_source} applications from {source} wait for the registration officer already; \
                 wait for their decision"
            ),
        ));
    }
    let (pending,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM management_requests WHERE kind = 'member-application' AND state = 'submitted'",
    )
    .fetch_one(s.registry.db().pool())
    .await
    .map_err(StoreError::from)?;
    if pending >= MAX_PENDING_APPLICATIONS {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many applications wait for the registration officer; try again later",
        ));
    }
    let status_token = random_secret(STATUS_TOKEN_PREFIX);
    let digest = secret_digest(&status_token);
    let id = insert(
        &s,
        &change,
        &Submission {
            submitted_by: "applicant",
            consented: false,
            signed_request: None,
            status_token_sha256: Some(&digest),
            source: Some(&source),
        },
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ApplicationReceipt {
            id,
            state: "submitted".into(),
            status_token,
        }),
    ))
}

#[utoipa::path(get, path = "/apply/v1/{id}", params(("id" = i64, Path)), security(("bearer" = [])), responses((status = 200, body = ApplicationStatus, description = "Bearer: the status token of the application"), (status = 401)))]
async fn application_status(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Json<ApplicationStatus>> {
    let presented = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    let row: Option<(Option<String>, i64)> = sqlx::query_as(
        "SELECT status_token_sha256, enrolment_token_delivered FROM management_requests WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(s.registry.db().pool())
    .await
    .map_err(StoreError::from)?;
    // Unknown request and wrong token answer alike, so ids cannot be probed.
    let denied = || ApiError::unauthorized("unknown application or wrong status token");
    let (Some(expected), delivered) = row.ok_or_else(denied)? else {
        return Err(denied());
    };
    if !bool::from(
        secret_digest(presented)
            .as_bytes()
            .ct_eq(expected.as_bytes()),
    ) {
        return Err(denied());
    }
    let request = load(&s, id).await?;
    let mut enrolment = None;
    if request.state == "approved" && delivered == 0 {
        // The enrolment token is made when the applicant first asks after approval
        // and shown once; the officer can make another for the gateway if it is lost.
        let taken = sqlx::query(
            "UPDATE management_requests SET enrolment_token_delivered = 1 WHERE id = $1 AND enrolment_token_delivered = 0",
        )
        .bind(id)
        .execute(s.registry.db().pool())
        .await
        .map_err(StoreError::from)?;
        if taken.rows_affected() == 1 {
            enrolment = Some(issue_enrolment_token(&s, request.change.gateway()).await?);
        }
    }
    Ok(Json(ApplicationStatus {
        id,
        state: request.state,
        reason: request.reason,
        enrolment,
    }))
}

/// Body: a compact JWS (content type `veksel-management+json`) signed with the
/// gateway's authentication key over a `GatewayRequest`.
#[utoipa::path(post, path = "/manage/v1", security(()), request_body(content = String, content_type = "application/jose"), responses((status = 202, body = ManagementRequestDto, description = "Submitted, or approved at once by the management policy"), (status = 401), (status = 409), (status = 422)))]
async fn gateway_request(
    State(s): State<Arc<AppState>>,
    body: String,
) -> ApiResult<(StatusCode, Json<ManagementRequestDto>)> {
    let what = "management request";
    let (gateway, payload) = verify_gateway_jws(&s, &body, MANAGEMENT_CTY, what).await?;
    let req: GatewayRequest =
        serde_json::from_slice(&payload).map_err(|e| unprocessable(format!("{what}: {e}")))?;
    check_fresh(
        &s,
        &gateway,
        &req.gateway.to_string(),
        req.created_at_ms,
        &req.nonce,
        what,
    )
    .await?;
    if req.change.gateway() != &gateway {
        return Err(ApiError::forbidden(format!(
            "gateway {gateway} may only ask for changes to itself, not to {}",
            req.change.gateway()
        )));
    }
    if matches!(
        req.change,
        Change::MemberApplication { .. } | Change::AuthCertRegistration { .. }
    ) {
        return Err(unprocessable(format!(
            "{} requests are not made here: members apply at /apply/v1, certificates are registered by enrolment and renewal",
            req.change.kind()
        )));
    }
    req.change.validate().map_err(unprocessable)?;
    let consented = match &req.consent {
        Some(jws) => {
            verify_consent(&s, jws, &req).await?;
            true
        }
        None => false,
    };
    let id = insert(
        &s,
        &req.change,
        &Submission {
            submitted_by: &format!("gateway:{gateway}"),
            consented,
            signed_request: Some(body.trim()),
            status_token_sha256: None,
            source: None,
        },
    )
    .await?;
    if consented && auto_approves(&s, req.change.kind()).await? {
        // A policy approval that cannot be applied leaves the request for an officer.
        if let Err(e) = approve(&s, id, "policy").await {
            tracing::info!(id, error = ?e, "policy approval could not be applied");
        }
    }
    Ok((StatusCode::ACCEPTED, Json(load(&s, id).await?)))
}

/// Checks a member's consent: a compact JWS (content type `CONSENT_CTY`) signed by a
/// current, unrevoked signing certificate of `member`; returns what it signs.
pub(crate) async fn verify_member_consent(
    s: &AppState,
    jws: &str,
    member: &veksel_id::MemberId,
) -> ApiResult<Vec<u8>> {
    let (_, payload) = verify_signed(s, jws, CONSENT_CTY, "consent", |roots, chain, now| {
        roots
            .verify_member_signing(chain, member, now)
            .map_err(|e| format!("consent: not signed with a signing certificate of {member}: {e}"))
    })
    .await?;
    Ok(payload)
}

/// The consent must be by the member the change concerns, over the same gateway,
/// nonce and change.
async fn verify_consent(s: &AppState, jws: &str, req: &GatewayRequest) -> ApiResult<()> {
    let payload = verify_member_consent(s, jws, req.change.consenting_member()).await?;
    let consent: Consent = serde_json::from_slice(&payload)
        .map_err(|e| ApiError::unauthorized(format!("consent: {e}")))?;
    if consent.gateway != req.gateway || consent.nonce != req.nonce || consent.change != req.change
    {
        return Err(ApiError::unauthorized("consent: it is for another request"));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/management-requests", params(ListQuery), responses((status = 200, body = Vec<ManagementRequestDto>)))]
async fn list(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<ManagementRequestDto>>> {
    Ok(Json(requests(&s, q.state.as_deref(), 1000).await?))
}

/// The newest `limit` requests, in one state or all.
pub(crate) async fn requests(
    s: &AppState,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<ManagementRequestDto>, StoreError> {
    let rows: Vec<Row> = match state {
        Some(state) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM management_requests WHERE state = $1 ORDER BY id DESC LIMIT $2"
        )))
        .bind(state)
        .bind(limit)
        .fetch_all(s.registry.db().pool())
        .await,
        None => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM management_requests ORDER BY id DESC LIMIT $1"
            )))
            .bind(limit)
            .fetch_all(s.registry.db().pool())
            .await
        }
    }?;
    rows.into_iter().map(dto).collect()
}

#[utoipa::path(get, path = "/api/v1/management-requests/{id}", params(("id" = i64, Path)), responses((status = 200, body = ManagementRequestDto), (status = 404)))]
async fn get_one(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
    Path(id): Path<i64>,
) -> ApiResult<Json<ManagementRequestDto>> {
    Ok(Json(load(&s, id).await?))
}

#[utoipa::path(post, path = "/api/v1/management-requests/{id}/approve", params(("id" = i64, Path)), responses((status = 200, body = ManagementRequestDto, description = "Approved; the change is in the registry and the next configuration"), (status = 409, description = "Not submitted, or the change conflicts with the registry")))]
async fn approve_request(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path(id): Path<i64>,
) -> ApiResult<Json<ManagementRequestDto>> {
    Ok(Json(approve(&s, id, &who.id).await?))
}

#[utoipa::path(post, path = "/api/v1/management-requests/{id}/decline", params(("id" = i64, Path)), request_body = Decline, responses((status = 200, body = ManagementRequestDto), (status = 409)))]
async fn decline_request(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path(id): Path<i64>,
    Json(b): Json<Decline>,
) -> ApiResult<Json<ManagementRequestDto>> {
    Ok(Json(decline(&s, id, &who.id, &b.reason).await?))
}

/// Declines a submitted request with a reason (1 to 1000 characters).
pub(crate) async fn decline(
    s: &AppState,
    id: i64,
    decided_by: &str,
    reason: &str,
) -> ApiResult<ManagementRequestDto> {
    if reason.trim().is_empty() || reason.chars().count() > 1000 {
        return Err(unprocessable(
            "a reason of 1 to 1000 characters is required",
        ));
    }
    claim(s, id, "declined").await?;
    finish(s, id, "declined", decided_by, Some(reason)).await?;
    load(s, id).await
}

#[utoipa::path(get, path = "/api/v1/management-policy", responses((status = 200, body = ManagementPolicy)))]
async fn get_policy(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
) -> ApiResult<Json<ManagementPolicy>> {
    read_policy(&s).await
}

async fn read_policy(s: &AppState) -> ApiResult<Json<ManagementPolicy>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT kind FROM management_policy WHERE auto_approve <> 0 ORDER BY kind")
            .fetch_all(s.registry.db().pool())
            .await
            .map_err(StoreError::from)?;
    Ok(Json(ManagementPolicy {
        auto_approve: rows.into_iter().map(|r| r.0).collect(),
    }))
}

#[utoipa::path(put, path = "/api/v1/management-policy", request_body = ManagementPolicy, responses((status = 200, body = ManagementPolicy), (status = 422)))]
async fn put_policy(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<AdminRole>,
    Json(b): Json<ManagementPolicy>,
) -> ApiResult<Json<ManagementPolicy>> {
    const AUTOMATIC: [&str; 11] = [
        "client-registration",
        "client-deletion",
        "client-disable",
        "client-enable",
        "address-change",
        "scope-registration",
        "scope-deletion",
        "scope-delegation",
        "scope-delegation-withdrawal",
        "relying-party-registration",
        "relying-party-deletion",
    ];
    for kind in &b.auto_approve {
        if !AUTOMATIC.contains(&kind.as_str()) {
            return Err(unprocessable(format!(
                "{kind:?} cannot be approved by policy; these can: {}",
                AUTOMATIC.join(", ")
            )));
        }
    }
    let mut tx = s
        .registry
        .db()
        .pool()
        .begin()
        .await
        .map_err(StoreError::from)?;
    sqlx::query("DELETE FROM management_policy")
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
    for kind in &b.auto_approve {
        sqlx::query("INSERT INTO management_policy (kind, auto_approve) VALUES ($1, 1) ON CONFLICT (kind) DO NOTHING")
            .bind(kind)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    s.registry
        .audit(
            s.clock.now_ms(),
            &who.id,
            "management_policy.set",
            "management-policy",
            &serde_json::to_string(&b).unwrap_or_default(),
        )
        .await?;
    read_policy(&s).await
}
