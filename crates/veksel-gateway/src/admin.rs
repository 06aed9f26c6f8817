//! The gateway's admin API: hosted subsystems, services, access rights, local groups,
//! the message log and operational monitoring; plus health, readiness and metrics.
//! Calls need a bearer token whose role allows them (`admin`, `security-officer`,
//! `observer`).

use crate::Gateway;
use crate::ledger::ConfigChange;
use crate::msglog::{self, LogQuery, LoggedMessage, OpRecord};
use crate::serverconf::{self, ClientSettings, LocalClient, LocalGroup, ServiceConfig};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{OpenApi, ToSchema};
use veksel_admin::{ApiError, ApiErrorBody, ApiResult, Authorized, RoleCheck};
use veksel_id::SubsystemId;
use veksel_proto::access::AccessRule;
use veksel_store::tokens::TokenPrincipal;

/// Roles of gateway admin tokens, weakest first.
pub(crate) const ROLES: [&str; 3] = ["observer", "security-officer", "admin"];

async fn require(gw: &Gateway, h: &HeaderMap, needed: &str) -> ApiResult<TokenPrincipal> {
    let rank = |r: &str| ROLES.iter().position(|x| *x == r);
    veksel_admin::authenticate(
        &gw.db,
        h,
        needed,
        |have| matches!((rank(have), rank(needed)), (Some(a), Some(b)) if a >= b),
    )
    .await
}

/// Reading the configuration, the message log's metadata and monitoring.
#[derive(Debug)]
struct Observer;
/// Changing the configuration, reading stored bodies and evidence.
#[derive(Debug)]
struct SecurityOfficer;

impl RoleCheck for Observer {
    type State = Arc<Gateway>;
    type Principal = TokenPrincipal;
    async fn check(gw: &Arc<Gateway>, headers: &HeaderMap) -> ApiResult<TokenPrincipal> {
        require(gw, headers, "observer").await
    }
}

impl RoleCheck for SecurityOfficer {
    type State = Arc<Gateway>;
    type Principal = TokenPrincipal;
    async fn check(gw: &Arc<Gateway>, headers: &HeaderMap) -> ApiResult<TokenPrincipal> {
        require(gw, headers, "security-officer").await
    }
}

fn subsystem(raw: &str) -> ApiResult<SubsystemId> {
    veksel_admin::path_id(raw, "subsystem id")
}

/// Builds the admin router.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/clients", get(list_clients))
        .route(
            "/api/v1/clients/{id}",
            get(get_client).put(put_client).delete(delete_client),
        )
        .route(
            "/api/v1/clients/{id}/services/{code}",
            put(put_service).delete(delete_service),
        )
        .route("/api/v1/clients/{id}/access", put(put_access))
        .route(
            "/api/v1/clients/{id}/local-groups/{code}",
            put(put_local_group).delete(delete_local_group),
        )
        .route("/api/v1/message-log", get(message_log))
        .route(
            "/api/v1/message-log/{request_id}/bodies",
            get(message_bodies),
        )
        .route(
            "/api/v1/message-log/{request_id}/evidence",
            get(evidence_bundle),
        )
        .route("/api/v1/op-monitoring", get(op_monitoring))
        .route("/api/v1/certificates", get(certificates))
        .route("/api/v1/certificates/renew", post(renew_certificates))
        .route("/api/v1/management-requests", post(management_request))
        .route("/api/v1/ledger/commitments", post(ledger_commitment))
        .route("/api/v1/ledger/alarms", get(ledger_alarms))
        .route("/witness/v1/add-checkpoint", post(witness_add_checkpoint))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(gw)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "veksel gateway admin API",
        description = "Local configuration, message log and monitoring of a veksel gateway."
    ),
    paths(
        status,
        list_clients,
        get_client,
        put_client,
        delete_client,
        put_service,
        delete_service,
        put_access,
        put_local_group,
        delete_local_group,
        message_log,
        message_bodies,
        evidence_bundle,
        op_monitoring,
        certificates,
        renew_certificates,
        management_request,
        ledger_commitment,
        ledger_alarms,
        witness_add_checkpoint,
        healthz,
        readyz,
        metrics,
        openapi
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of the admin API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

/// Gateway status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// Gateway id.
    pub gateway: String,
    /// Version of the global configuration in use.
    pub conf_version: Option<u64>,
    /// Its expiry, RFC 3339.
    pub conf_expires_at: Option<String>,
    /// True when the configuration is valid now.
    pub conf_valid: bool,
    /// Last download error.
    pub conf_error: Option<String>,
    /// Members this gateway can sign for.
    pub signing_members: Vec<String>,
    /// Hosted subsystems configured locally.
    pub clients: Vec<String>,
    /// Time-stamping of the message log.
    pub stamping: crate::stamper::StampStatus,
}

#[utoipa::path(get, path = "/api/v1/certificates", responses((status = 200, body = Vec<crate::renewal::CertStatus>)))]
async fn certificates(
    State(gw): State<Arc<Gateway>>,
    _: Authorized<Observer>,
) -> ApiResult<Json<Vec<crate::renewal::CertStatus>>> {
    Ok(Json(crate::renewal::status(
        &gw.keys.get(),
        i64::try_from(gw.clock.now_secs()).unwrap_or(i64::MAX),
    )))
}

/// Result of `POST /api/v1/certificates/renew`.
#[derive(Debug, Serialize, ToSchema)]
struct RenewResult {
    /// Certificates requested from the authority.
    requested: Vec<String>,
    /// True if new keys are in use.
    activated: bool,
    /// Why new keys are not in use yet (the gateway retries every 10 s).
    waiting: Option<String>,
    /// The certificates in use now.
    certificates: Vec<crate::renewal::CertStatus>,
}

#[utoipa::path(post, path = "/api/v1/certificates/renew", responses((status = 200, body = RenewResult), (status = 502, body = ApiErrorBody, description = "The authority refused or could not be reached")))]
async fn renew_certificates(
    State(gw): State<Arc<Gateway>>,
    Authorized(TokenPrincipal { id: who, .. }): Authorized<SecurityOfficer>,
) -> ApiResult<Json<RenewResult>> {
    tracing::info!(token = %who, "certificate renewal requested");
    let outcome = crate::renewal::round(&gw, true)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "renewal_failed", e))?;
    Ok(Json(RenewResult {
        requested: outcome.requested,
        activated: outcome.activated,
        waiting: outcome.waiting,
        certificates: crate::renewal::status(
            &gw.keys.get(),
            i64::try_from(gw.clock.now_secs()).unwrap_or(i64::MAX),
        ),
    }))
}

/// Submits a management request about this gateway to the authority, signed with
/// the authentication key and, when this gateway holds it, the concerned member's
/// signing key. Body: a change such as `{"type": "client-registration", "subsystem":
/// "DK/MUN/29189846/sag"}` (`gateway` defaults to this one). The answer is the
/// authority's: the request with its state, or its error.
#[utoipa::path(post, path = "/api/v1/management-requests", request_body(content = Object), responses((status = 202, description = "Submitted (or approved by the authority's policy)"), (status = 422, body = ApiErrorBody), (status = 502, body = ApiErrorBody, description = "The authority could not be reached")))]
async fn management_request(
    State(gw): State<Arc<Gateway>>,
    Authorized(TokenPrincipal { id: who, .. }): Authorized<SecurityOfficer>,
    Json(change): Json<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    use crate::management::SubmitError;
    let (status, answer) = crate::management::submit(&gw, change)
        .await
        .map_err(|e| match e {
            SubmitError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m)
            }
            SubmitError::Failed(m) => ApiError::new(StatusCode::BAD_GATEWAY, "authority", m),
        })?;
    tracing::info!(token = %who, status = status.as_u16(), "management request submitted");
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((status, Json(answer)))
}

/// A document commitment to put on the network ledger.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommitmentRequest {
    /// Short public label, e.g. `contract 2026-118 signed`.
    pub label: String,
    /// The salted commitment (base64 SHA-256), computed where the document is.
    pub commitment: String,
}

/// Puts a member's document commitment on the network ledger, signed by this
/// gateway. The document and its salt stay with the member.
#[utoipa::path(post, path = "/api/v1/ledger/commitments", request_body = CommitmentRequest, responses((status = 202, description = "Queued in the ledger"), (status = 422, body = ApiErrorBody), (status = 502, body = ApiErrorBody)))]
async fn ledger_commitment(
    State(gw): State<Arc<Gateway>>,
    Authorized(TokenPrincipal { id: who, .. }): Authorized<SecurityOfficer>,
    Json(b): Json<CommitmentRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let probe = veksel_proto::ledger::LedgerEntry::Commitment {
        at: 1,
        gateway: gw.id().to_string(),
        label: b.label.clone(),
        commitment: b.commitment.clone(),
    };
    probe
        .validate()
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m))?;
    let answer = crate::ledger::append_commitment(&gw, &b.label, &b.commitment)
        .await
        .map_err(|m| ApiError::new(StatusCode::BAD_GATEWAY, "authority", m))?;
    tracing::info!(token = %who, label = %b.label, "ledger commitment submitted");
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// c2sp.org/tlog-witness add-checkpoint: this gateway as a witness of the network
/// ledger. No token: the ledger's signature on the checkpoint is the authorisation.
/// 200 with the cosignature line; 409 (`text/x.tlog.size`) with this witness's size
/// when the request's old size is not it; 403, 404, 400 or 422 as the protocol says.
#[utoipa::path(post, path = "/witness/v1/add-checkpoint", security(()), request_body(content = String, content_type = "text/plain"), responses((status = 200, description = "Cosignature line"), (status = 409, description = "This witness's latest size"), (status = 422, description = "The proof does not verify, or the ledger forked")))]
async fn witness_add_checkpoint(State(gw): State<Arc<Gateway>>, body: String) -> Response {
    use veksel_merkle::witness::WitnessError;
    match crate::ledger::add_checkpoint(&gw, &body).await {
        Ok((line, _)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            line,
        )
            .into_response(),
        Err(WitnessError::Conflict { latest }) => (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "text/x.tlog.size")],
            format!("{latest}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{e}\n"),
        )
            .into_response(),
    }
}

/// Ledger alarms this gateway raised as a witness, newest first, each with the two
/// conflicting checkpoints.
#[utoipa::path(get, path = "/api/v1/ledger/alarms", responses((status = 200, body = Vec<crate::ledger::Alarm>)))]
async fn ledger_alarms(
    State(gw): State<Arc<Gateway>>,
    _: Authorized<Observer>,
) -> ApiResult<Json<Vec<crate::ledger::Alarm>>> {
    Ok(Json(crate::ledger::alarms(&gw).await?))
}

#[utoipa::path(get, path = "/api/v1/status", responses((status = 200, body = Status)))]
async fn status(
    State(gw): State<Arc<Gateway>>,
    _: Authorized<Observer>,
) -> ApiResult<Json<Status>> {
    let latest = gw.conf.latest();
    Ok(Json(Status {
        gateway: gw.id().to_string(),
        conf_version: latest.as_ref().map(|c| c.conf().version),
        conf_expires_at: latest
            .as_ref()
            .map(|c| veksel_proto::rfc3339(c.conf().expires_at_ms)),
        conf_valid: gw.conf.current(veksel_id::Origin::ClientProxy).is_ok(),
        conf_error: gw.conf.last_error(),
        signing_members: gw
            .keys
            .get()
            .signers
            .keys()
            .map(ToString::to_string)
            .collect(),
        clients: gw
            .serverconf
            .current()
            .clients
            .keys()
            .map(ToString::to_string)
            .collect(),
        stamping: gw.stamper.status(),
    }))
}

#[utoipa::path(get, path = "/api/v1/clients", responses((status = 200, body = Vec<LocalClient>)))]
async fn list_clients(
    State(gw): State<Arc<Gateway>>,
    _: Authorized<Observer>,
) -> ApiResult<Json<Vec<LocalClient>>> {
    Ok(Json(
        gw.serverconf.current().clients.values().cloned().collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/clients/{id}", params(("id" = String, Path, description = "INSTANCE:CLASS:CODE:SUBSYSTEM")), responses((status = 200, body = LocalClient)))]
async fn get_client(
    State(gw): State<Arc<Gateway>>,
    _: Authorized<Observer>,
    Path(id): Path<String>,
) -> ApiResult<Json<LocalClient>> {
    let id = subsystem(&id)?;
    gw.serverconf
        .current()
        .clients
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("local client {id}")))
}

#[utoipa::path(put, path = "/api/v1/clients/{id}", request_body = ClientSettings, params(("id" = String, Path)), responses((status = 204)))]
async fn put_client(
    State(gw): State<Arc<Gateway>>,
    Authorized(TokenPrincipal { id: who, .. }): Authorized<SecurityOfficer>,
    Path(id): Path<String>,
    Json(b): Json<ClientSettings>,
) -> ApiResult<StatusCode> {
    let id = subsystem(&id)?;
    if b.is_cert_sha256
        .iter()
        .any(|c| c.len() != 64 || !c.chars().all(|x| x.is_ascii_hexdigit()))
    {
        return Err(ApiError::bad_request(
            "is_cert_sha256 entries must be 64 hex digits",
        ));
    }
    if b.tokens.len() > 64 {
        return Err(ApiError::bad_request("at most 64 token rules per client"));
    }
    for rule in &b.tokens {
        veksel_proto::management::validate_scope_name(&rule.scope)
            .map_err(ApiError::bad_request)?;
    }
    let change = ConfigChange::new(
        gw.clock.now_ms(),
        "client.set",
        id.to_string(),
        &who,
        serde_json::to_value(&b).unwrap_or_default(),
    );
    gw.serverconf.put_client(&id, &b, &change).await?;
    tracing::info!(actor = %who, client = %id, "local client configured");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/clients/{id}", params(("id" = String, Path)), responses((status = 204)))]
async fn delete_client(
    State(gw): State<Arc<Gateway>>,
    Authorized(TokenPrincipal { id: who, .. }): Authorized<SecurityOfficer>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = subsystem(&id)?;
    let change = ConfigChange::new(
        gw.clock.now_ms(),
        "client.remove",
        id.to_string(),
        &who,
        serde_json::Value::Null,
    );
    gw.serverconf.remove_client(&id, &change).await?;
    tracing::info!(actor = %who, client = %id, "local client removed");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/clients/{id}/services/{code}", request_body = ServiceConfig, params(("id" = String, Path), ("code" = String, Path)), responses((status = 204), (status = 400, body = ApiErrorBody)))]
async fn put_service(
    State(gw): State<Arc<Gateway>>,
    Authorized(TokenPrincipal { id: who, .. }): Authorized<SecurityOfficer>,
    Path((id, code)): Path<(String, String)>,
    Json(b): Json<ServiceConfig>,
) -> ApiResult<StatusCode> {
    let id = subsystem(&id)?;
    serverconf::validate_service(&code, &b).map_err(ApiError::bad_request)?;
    let change = ConfigChange::new(
        gw.clock.now_ms(),
        "service.set",
        format!("{id}/{code}"),
        &who,
        serde_json::to_value(&b).unwrap_or_default(),
    );
    gw.serverconf.put_service(&id, &code, &b, &change).await?;
    tracing::info!(actor = %who, client = %id, service = %code, "service configured");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/clients/{id}/services/{code}", params(("id" = String, Path), ("code" = String, Path)), responses((status = 204)))]
async fn delete_service(
    State(gw): State<Arc<Gateway>>,
    Authorized(TokenPrincipal { id: who, .. }): Authorized<SecurityOfficer>,
    Path((id, code)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = subsystem(&id)?;
    let change = ConfigChange::new(
        gw.clock.now_ms(),
        "service.remove",
        format!("{id}/{code}"),
        &who,
        serde_json::Value::Null,
    );
    gw.serverconf.remove_service(&id, &code, &change).await?;
    tracing::info!(actor = %who, client = %id, service = %code, "service removed");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/clients/{id}/access", request_body(content = serde_json::Value, description = "The complete list of access rules: [{subject: {type: client|global_group|local_group, id}, service_code, endpoint: {method, path}}]"), params(("id" = String, Path)), responses((status = 204)))]
async fn put_access(
    State(gw): State<Arc<Gateway>>,
    Authorized(TokenPrincipal { id: who, .. }): Authorized<SecurityOfficer>,
    Path(id): Path<String>,
    Json(rules): Json<Vec<AccessRule>>,
) -> ApiResult<StatusCode> {
    let id = subsystem(&id)?;
    serverconf::validate_access(&rules).map_err(ApiError::bad_request)?;
    let change = ConfigChange::new(
        gw.clock.now_ms(),
        "access.set",
        id.to_string(),
        &who,
        serde_json::to_value(&rules).unwrap_or_default(),
    );
    gw.serverconf.put_access(&id, &rules, &change).await?;
    tracing::info!(actor = %who, client = %id, rules = rules.len(), "access rights replaced");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/clients/{id}/local-groups/{code}", request_body = LocalGroup, params(("id" = String, Path), ("code" = String, Path)), responses((status = 204)))]
async fn put_local_group(
    State(gw): State<Arc<Gateway>>,
    Authorized(TokenPrincipal { id: who, .. }): Authorized<SecurityOfficer>,
    Path((id, code)): Path<(String, String)>,
    Json(b): Json<LocalGroup>,
) -> ApiResult<StatusCode> {
    let id = subsystem(&id)?;
    veksel_id::validate_part("local group", 0, &code)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let change = ConfigChange::new(
        gw.clock.now_ms(),
        "local_group.set",
        format!("{id}/{code}"),
        &who,
        serde_json::to_value(&b).unwrap_or_default(),
    );
    gw.serverconf
        .put_local_group(&id, &code, &b, &change)
        .await?;
    tracing::info!(actor = %who, client = %id, group = %code, "local group configured");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/clients/{id}/local-groups/{code}", params(("id" = String, Path), ("code" = String, Path)), responses((status = 204)))]
async fn delete_local_group(
    State(gw): State<Arc<Gateway>>,
    Authorized(TokenPrincipal { id: who, .. }): Authorized<SecurityOfficer>,
    Path((id, code)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = subsystem(&id)?;
    let change = ConfigChange::new(
        gw.clock.now_ms(),
        "local_group.remove",
        format!("{id}/{code}"),
        &who,
        serde_json::Value::Null,
    );
    gw.serverconf
        .remove_local_group(&id, &code, &change)
        .await?;
    tracing::info!(actor = %who, client = %id, group = %code, "local group removed");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/message-log", params(LogQuery), responses((status = 200, body = Vec<LoggedMessage>)))]
async fn message_log(
    State(gw): State<Arc<Gateway>>,
    Authorized(caller): Authorized<Observer>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Vec<LoggedMessage>>> {
    if caller.role == "observer" && q.person.is_some() {
        // Which exchanges concern a person is itself personal data.
        return Err(ApiError::forbidden(
            "finding records by person is for security officers",
        ));
    }
    // Descriptors name end users: observers get what evidence export would let them
    // have, which is the metadata.
    let detail = if caller.role == "observer" {
        msglog::Detail::Metadata
    } else {
        msglog::Detail::Full
    };
    Ok(Json(msglog::query_messages(&gw.db, &q, detail).await?))
}

/// Which side's record to read bodies from.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct SideQuery {
    /// `consumer` or `provider`.
    side: String,
    /// `request` or `response`.
    part: String,
}

#[utoipa::path(get, path = "/api/v1/message-log/{request_id}/bodies", params(("request_id" = String, Path), SideQuery), responses((status = 200, description = "The stored body bytes"), (status = 404, body = ApiErrorBody)))]
async fn message_bodies(
    State(gw): State<Arc<Gateway>>,
    _: Authorized<SecurityOfficer>,
    Path(id): Path<String>,
    Query(q): Query<SideQuery>,
) -> ApiResult<Response> {
    // Bodies can hold personal data: only security officers and admins read them.
    let (request, response) = msglog::message_bodies(&gw.db, &id, &q.side).await?;
    let body = match q.part.as_str() {
        "request" => request,
        "response" => response,
        _ => return Err(ApiError::bad_request("part must be request or response")),
    };
    let body = body.ok_or_else(|| ApiError::not_found("no body is stored for this record"))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

/// Which side's record to export.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct EvidenceQuery {
    /// `consumer` or `provider`.
    side: String,
}

#[utoipa::path(get, path = "/api/v1/message-log/{request_id}/evidence", params(("request_id" = String, Path), EvidenceQuery), responses((status = 200, description = "Evidence bundle (veksel-evidence/1)"), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody, description = "Not yet time-stamped")))]
async fn evidence_bundle(
    State(gw): State<Arc<Gateway>>,
    _: Authorized<SecurityOfficer>,
    Path(id): Path<String>,
    Query(q): Query<EvidenceQuery>,
) -> ApiResult<Json<veksel_verify::evidence::Bundle>> {
    // Descriptors carry end-user identifiers (X-Road-UserId): security officers only.
    let conf = gw
        .conf
        .latest()
        .ok_or_else(|| ApiError::internal("no global configuration"))?;
    match crate::evidence::export(&gw.db, &gw.archive_dir, gw.id(), &id, &q.side, &conf.jws).await {
        Ok(b) => Ok(Json(b)),
        Err(crate::evidence::ExportError::NotFound { .. }) => Err(ApiError::not_found(format!(
            "no {} record of request {id}",
            q.side
        ))),
        Err(e @ crate::evidence::ExportError::NotStamped { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

#[utoipa::path(get, path = "/api/v1/op-monitoring", params(LogQuery), responses((status = 200, body = Vec<OpRecord>)))]
async fn op_monitoring(
    State(gw): State<Arc<Gateway>>,
    _: Authorized<Observer>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Vec<OpRecord>>> {
    Ok(Json(msglog::query_monitoring(&gw.db, &q).await?))
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Reasons the gateway cannot serve exchanges now (empty when ready).
pub async fn readiness_problems(gw: &Gateway) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(f) = gw.conf.current(veksel_id::Origin::ClientProxy) {
        problems.push(format!("global configuration: {}", f.message));
    }
    if let Err(e) = gw.db.ping().await {
        problems.push(format!("database: {e}"));
    }
    let now = gw.clock.now_secs();
    match gw
        .keys
        .get()
        .auth_chain
        .first()
        .map(|c| veksel_pki::CertInfo::parse(c))
    {
        Some(Ok(info)) if i64::try_from(now).unwrap_or(i64::MAX) >= info.not_after => {
            problems.push("the authentication certificate has expired".into());
        }
        Some(Ok(_)) => {}
        _ => problems.push("no readable authentication certificate".into()),
    }
    match crate::ledger::alarms(gw).await {
        Ok(alarms) => {
            if let Some(a) = alarms.first() {
                problems.push(format!(
                    "LEDGER ALARM ({} in all): {} (the conflicting checkpoints are kept; see the gateway's ledger_alarms table)",
                    alarms.len(),
                    a.why
                ));
            }
        }
        Err(e) => problems.push(format!("ledger alarms: {e}")),
    }
    let limit_ms = i64::try_from(gw.config.stamp_failure_limit_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    if let Some(ms) = gw.stamper.failing_for_ms(gw.clock.now_ms())
        && ms > limit_ms
        && gw.config.stamp_failure_mode == crate::stamper::StampFailureMode::FailClosed
    {
        problems.push(format!(
            "time-stamping has failed for {} s (limit {} s); exchanges are refused: {}",
            ms / 1000,
            gw.config.stamp_failure_limit_secs,
            gw.stamper.status().last_error.unwrap_or_default()
        ));
    }
    let keys = gw.keys.get();
    if let Some(conf) = gw.conf.latest() {
        let own = keys
            .auth_chain
            .iter()
            .take(1)
            .chain(keys.signers.values().filter_map(|s| s.cert_chain().first()));
        for cert in own {
            let hash = veksel_pki::sha256_hex(cert);
            if conf.index.is_revoked(&hash) {
                problems.push(format!(
                    "this gateway's certificate {hash} has been revoked; enrol again"
                ));
            } else if let Err(e) = crate::ocsp::check(
                &conf,
                gw.ocsp.for_cert(cert).as_deref().map(String::as_str),
                cert,
                gw.clock.now_secs(),
            ) {
                problems.push(format!("peers will refuse this gateway: {e}"));
            }
        }
    }
    for c in gw.serverconf.current().clients.keys() {
        if keys.signer(c.member()).is_none_or(|s| {
            s.cert_chain()
                .first()
                .and_then(|d| veksel_pki::CertInfo::parse(d).ok())
                .is_none_or(|i| i64::try_from(now).unwrap_or(i64::MAX) >= i.not_after)
        }) {
            problems.push(format!(
                "no valid signing key for member {} (client {c}): missing or expired",
                c.member()
            ));
        }
    }
    problems
}

/// Conditions that do not stop the gateway but need an operator.
pub fn readiness_warnings(gw: &Gateway) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(ms) = gw.stamper.failing_for_ms(gw.clock.now_ms()) {
        warnings.push(format!(
            "time-stamping of the message log has failed for {} s: {}",
            ms / 1000,
            gw.stamper.status().last_error.unwrap_or_default()
        ));
    }
    if let Some(e) = gw.ocsp.last_error() {
        warnings.push(format!("the last OCSP refresh failed: {e}"));
    }
    let now = i64::try_from(gw.clock.now_secs()).unwrap_or(i64::MAX);
    let warn_before = i64::try_from(gw.config.cert_warn_before_secs).unwrap_or(i64::MAX);
    let renewal = gw.renewal_error.lock().ok().and_then(|e| e.clone());
    for c in crate::renewal::status(&gw.keys.get(), now) {
        if c.expires_in_secs > 0 && c.expires_in_secs < warn_before {
            warnings.push(format!(
                "the {} certificate{} expires in {} days ({}); renewal: {}",
                c.role,
                c.member.map(|m| format!(" of {m}")).unwrap_or_default(),
                c.expires_in_secs / 86_400,
                c.not_after,
                renewal.as_deref().unwrap_or("not attempted yet")
            ));
        }
    }
    if let Some(e) = &renewal {
        warnings.push(format!("certificate renewal: {e}"));
    }
    if let Some(e) = gw.archive_error.lock().ok().and_then(|e| e.clone()) {
        warnings.push(format!("the last message-log archiving round failed: {e}"));
    }
    warnings
}

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "Ready"), (status = 503, description = "Not ready; the body lists why")))]
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let problems = readiness_problems(&gw).await;
    if problems.is_empty() {
        let warnings = readiness_warnings(&gw);
        if warnings.is_empty() {
            (StatusCode::OK, "ready\n").into_response()
        } else {
            (
                StatusCode::OK,
                format!("ready, with warnings:\n- {}\n", warnings.join("\n- ")),
            )
                .into_response()
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n- {}\n", problems.join("\n- ")),
        )
            .into_response()
    }
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    if let Some(c) = gw.conf.latest() {
        gw.metrics
            .conf_version
            .set(i64::try_from(c.conf().version).unwrap_or_default());
        gw.metrics.conf_expires.set(c.conf().expires_at_ms / 1000);
    }
    let stamping = gw.stamper.status();
    gw.metrics
        .stamped_records
        .set(i64::try_from(stamping.stamped_size).unwrap_or(i64::MAX));
    gw.metrics
        .stamping_failing
        .set(gw.stamper.failing_for_ms(gw.clock.now_ms()).unwrap_or(0) / 1000);
    // Certificates replaced by a renewal drop out of the gauge.
    gw.metrics.certificate_expiry.clear();
    for c in crate::renewal::status(
        &gw.keys.get(),
        i64::try_from(gw.clock.now_secs()).unwrap_or(i64::MAX),
    ) {
        gw.metrics
            .certificate_expiry
            .get_or_create(&crate::metrics::CertLabels {
                role: c.role,
                member: c.member.unwrap_or_default(),
            })
            .set(c.expires_in_secs);
    }
    veksel_admin::metrics_response(gw.metrics.render())
}
