//! The authority's HTTP API: admin registry API (bearer tokens with roles), gateway
//! enrolment, the signed global configuration, OpenAPI, health and metrics.

use crate::auth::{
    AdminRole, ObserverRole, RegistrationOfficerRole, check_fresh, verify_gateway_jws,
};
use crate::model::*;
use crate::tokens::issue_enrolment_token;
use crate::{AppState, changed, tokens};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use std::sync::Arc;
use time::Duration;
use utoipa::OpenApi;
use veksel_admin::{ApiError, ApiErrorBody, ApiResult, Authorized};
use veksel_id::{ClientId, GatewayId, MemberId, SubsystemId};
use veksel_pki::ca::Profile;
use veksel_pki::{CertInfo, certs_to_pem};

pub(crate) fn parse_id<T: std::str::FromStr<Err = veksel_id::IdError>>(
    raw: &str,
    what: &str,
) -> ApiResult<T> {
    veksel_admin::path_id(raw, what)
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/member-classes", get(list_member_classes))
        .route("/api/v1/member-classes/{code}", put(put_member_class))
        .route("/api/v1/members", get(list_members).post(add_member))
        .route(
            "/api/v1/members/{id}",
            get(get_member).delete(remove_member),
        )
        .route("/api/v1/members/{id}/subsystems", post(add_subsystem))
        .route(
            "/api/v1/members/{id}/subsystems/{code}",
            delete(remove_subsystem),
        )
        .route("/api/v1/gateways", get(list_gateways).post(add_gateway))
        .route(
            "/api/v1/gateways/{id}",
            get(get_gateway).delete(remove_gateway).patch(patch_gateway),
        )
        .route(
            "/api/v1/gateways/{id}/enrolment-token",
            post(new_enrolment_token),
        )
        .route(
            "/api/v1/gateways/{id}/clients/{subsystem}",
            put(add_gateway_client).delete(remove_gateway_client),
        )
        .route(
            "/api/v1/global-groups",
            get(list_global_groups).post(add_global_group),
        )
        .route("/api/v1/global-groups/{code}", delete(remove_global_group))
        .route(
            "/api/v1/global-groups/{code}/members/{client}",
            put(add_group_member).delete(remove_group_member),
        )
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route(
            "/api/v1/certificates",
            post(issue_certificate).get(list_certificates),
        )
        .route(
            "/api/v1/certificates/{serial}/revoke",
            post(revoke_certificate),
        )
        .route("/api/v1/configuration", get(conf_status))
        .route("/api/v1/audit-events", get(audit_events))
        .route("/api/v1/approved-cas", get(list_cas).post(add_ca))
        .route("/api/v1/approved-cas/{name}", delete(remove_ca))
        .route("/api/v1/approved-tsas", get(list_tsas).post(add_tsa))
        .route("/api/v1/approved-tsas/{name}", delete(remove_tsa))
        .route("/enrol/v1", post(enrol))
        .route("/renew/v1", post(renew))
        .route("/tsa/v1", post(time_stamp))
        .route("/ocsp/v1", post(ocsp_post))
        .route("/ocsp/v1/{request}", get(ocsp_get))
        .route("/conf/v1/global", get(global_conf))
        .route("/conf/v1/anchor", get(anchor))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::management::router())
        .merge(crate::ledger::router())
        .merge(crate::oauth::router())
        .merge(crate::token_endpoint::router())
        .merge(crate::oidc::router())
        .merge(crate::console::router())
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "veksel authority API", description = "Registry, certificate authority and signed global configuration of a veksel network."),
    paths(
        list_member_classes, put_member_class, list_members, add_member, get_member, remove_member,
        add_subsystem, remove_subsystem, list_gateways, add_gateway, get_gateway, remove_gateway,
        patch_gateway, new_enrolment_token, add_gateway_client, remove_gateway_client,
        list_global_groups, add_global_group, remove_global_group, add_group_member, remove_group_member,
        list_tokens, create_token, revoke_token, issue_certificate, list_certificates, revoke_certificate, conf_status, audit_events, enrol, renew, list_cas, add_ca, remove_ca, list_tsas, add_tsa, remove_tsa, time_stamp, ocsp_post, ocsp_get,
        global_conf, anchor, healthz, readyz, metrics
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3.1 document of this API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
        .merge_from(crate::management::ManagementDoc::openapi())
        .merge_from(crate::oauth::OAuthDoc::openapi())
        .merge_from(crate::token_endpoint::TokenDoc::openapi())
        .merge_from(crate::oidc::OidcDoc::openapi())
}

#[utoipa::path(get, path = "/openapi.json", security(()), responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

#[utoipa::path(get, path = "/api/v1/member-classes", responses((status = 200, body = Vec<MemberClassDto>)))]
async fn list_member_classes(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
) -> ApiResult<Json<Vec<MemberClassDto>>> {
    Ok(Json(s.registry.member_classes().await?))
}

#[utoipa::path(put, path = "/api/v1/member-classes/{code}", request_body = MemberClassBody, responses((status = 204)))]
async fn put_member_class(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path(code): Path<String>,
    Json(b): Json<MemberClassBody>,
) -> ApiResult<StatusCode> {
    veksel_id::validate_part("member class", 1, &code)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    s.registry.put_member_class(&code, &b.description).await?;
    changed(
        &s,
        &who,
        "member_class.put",
        &code,
        serde_json::json!({"description": b.description}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/members", responses((status = 200, body = Vec<MemberDto>)))]
async fn list_members(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
) -> ApiResult<Json<Vec<MemberDto>>> {
    Ok(Json(s.registry.members().await?))
}

#[utoipa::path(post, path = "/api/v1/members", request_body = NewMember, responses((status = 201, body = MemberDto), (status = 409, body = ApiErrorBody)))]
async fn add_member(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Json(b): Json<NewMember>,
) -> ApiResult<(StatusCode, Json<MemberDto>)> {
    let id: MemberId = parse_id(&b.id, "member id")?;
    if b.name.trim().is_empty() || b.name.len() > 255 {
        return Err(ApiError::bad_request("name must be 1 to 255 characters"));
    }
    s.registry
        .add_member(&id, &b.name, s.clock.now_ms())
        .await?;
    changed(
        &s,
        &who,
        "member.add",
        &id.to_string(),
        serde_json::json!({"name": b.name}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(s.registry.member(&id).await?)))
}

#[utoipa::path(get, path = "/api/v1/members/{id}", params(("id" = String, Path, description = "INSTANCE:CLASS:CODE")), responses((status = 200, body = MemberDto), (status = 404, body = ApiErrorBody)))]
async fn get_member(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
    Path(id): Path<String>,
) -> ApiResult<Json<MemberDto>> {
    Ok(Json(s.registry.member(&parse_id(&id, "member id")?).await?))
}

#[utoipa::path(delete, path = "/api/v1/members/{id}", params(("id" = String, Path, description = "INSTANCE:CLASS:CODE")), responses((status = 204), (status = 409, body = ApiErrorBody)))]
async fn remove_member(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: MemberId = parse_id(&id, "member id")?;
    s.registry.remove_member(&id).await?;
    changed(
        &s,
        &who,
        "member.remove",
        &id.to_string(),
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/members/{id}/subsystems", request_body = NewSubsystem, params(("id" = String, Path)), responses((status = 201, body = MemberDto)))]
async fn add_subsystem(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path(id): Path<String>,
    Json(b): Json<NewSubsystem>,
) -> ApiResult<(StatusCode, Json<MemberDto>)> {
    let member: MemberId = parse_id(&id, "member id")?;
    let sub = member
        .subsystem(&b.code)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    s.registry.add_subsystem(&sub, &b.name).await?;
    changed(
        &s,
        &who,
        "subsystem.add",
        &sub.to_string(),
        serde_json::json!({"name": b.name}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(s.registry.member(&member).await?)))
}

#[utoipa::path(delete, path = "/api/v1/members/{id}/subsystems/{code}", params(("id" = String, Path), ("code" = String, Path)), responses((status = 204)))]
async fn remove_subsystem(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path((id, code)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let member: MemberId = parse_id(&id, "member id")?;
    let sub = member
        .subsystem(&code)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    s.registry.remove_subsystem(&sub).await?;
    changed(
        &s,
        &who,
        "subsystem.remove",
        &sub.to_string(),
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/gateways", responses((status = 200, body = Vec<GatewayDto>)))]
async fn list_gateways(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
) -> ApiResult<Json<Vec<GatewayDto>>> {
    Ok(Json(s.registry.gateways().await?))
}

fn check_address(address: &str) -> ApiResult<()> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| ApiError::bad_request("address must be host:port"))?;
    if host.is_empty() || host.len() > 253 || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(ApiError::bad_request(
            "address must be host:port with a port 1-65535",
        ));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
    {
        return Err(ApiError::bad_request("address host has invalid characters"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/gateways", request_body = NewGateway, responses((status = 201, body = EnrolmentToken, description = "Gateway registered; the one-time enrolment token lets it obtain its certificates")))]
async fn add_gateway(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Json(b): Json<NewGateway>,
) -> ApiResult<(StatusCode, Json<EnrolmentToken>)> {
    let id: GatewayId = parse_id(&b.id, "gateway id")?;
    check_address(&b.address)?;
    s.registry
        .add_gateway(&id, &b.address, s.clock.now_ms())
        .await?;
    changed(
        &s,
        &who,
        "gateway.add",
        &id.to_string(),
        serde_json::json!({"address": b.address}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(issue_enrolment_token(&s, &id).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/gateways/{id}", params(("id" = String, Path)), responses((status = 200, body = GatewayDto)))]
async fn get_gateway(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
    Path(id): Path<String>,
) -> ApiResult<Json<GatewayDto>> {
    Ok(Json(
        s.registry.gateway(&parse_id(&id, "gateway id")?).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/gateways/{id}", params(("id" = String, Path)), responses((status = 204)))]
async fn remove_gateway(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: GatewayId = parse_id(&id, "gateway id")?;
    s.registry.remove_gateway(&id).await?;
    changed(
        &s,
        &who,
        "gateway.remove",
        &id.to_string(),
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(patch, path = "/api/v1/gateways/{id}", request_body = GatewayPatch, params(("id" = String, Path)), responses((status = 200, body = GatewayDto)))]
async fn patch_gateway(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path(id): Path<String>,
    Json(b): Json<GatewayPatch>,
) -> ApiResult<Json<GatewayDto>> {
    let id: GatewayId = parse_id(&id, "gateway id")?;
    check_address(&b.address)?;
    s.registry.set_gateway_address(&id, &b.address).await?;
    changed(
        &s,
        &who,
        "gateway.address",
        &id.to_string(),
        serde_json::json!({"address": b.address}),
    )
    .await?;
    Ok(Json(s.registry.gateway(&id).await?))
}

#[utoipa::path(post, path = "/api/v1/gateways/{id}/enrolment-token", params(("id" = String, Path)), responses((status = 201, body = EnrolmentToken)))]
async fn new_enrolment_token(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<EnrolmentToken>)> {
    let id: GatewayId = parse_id(&id, "gateway id")?;
    s.registry.gateway(&id).await?;
    let token = issue_enrolment_token(&s, &id).await?;
    s.registry
        .audit(
            s.clock.now_ms(),
            &who.id,
            "gateway.enrolment_token",
            &id.to_string(),
            "{}",
        )
        .await?;
    Ok((StatusCode::CREATED, Json(token)))
}

#[utoipa::path(put, path = "/api/v1/gateways/{id}/clients/{subsystem}", params(("id" = String, Path), ("subsystem" = String, Path, description = "INSTANCE:CLASS:CODE:SUBSYSTEM")), responses((status = 204)))]
async fn add_gateway_client(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path((id, sub)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id: GatewayId = parse_id(&id, "gateway id")?;
    let sub: SubsystemId = parse_id(&sub, "subsystem id")?;
    s.registry.add_gateway_client(&id, &sub).await?;
    changed(
        &s,
        &who,
        "gateway.client.add",
        &id.to_string(),
        serde_json::json!({"subsystem": sub.to_string()}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/gateways/{id}/clients/{subsystem}", params(("id" = String, Path), ("subsystem" = String, Path)), responses((status = 204)))]
async fn remove_gateway_client(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path((id, sub)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id: GatewayId = parse_id(&id, "gateway id")?;
    let sub: SubsystemId = parse_id(&sub, "subsystem id")?;
    s.registry.remove_gateway_client(&id, &sub).await?;
    changed(
        &s,
        &who,
        "gateway.client.remove",
        &id.to_string(),
        serde_json::json!({"subsystem": sub.to_string()}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/global-groups", responses((status = 200, body = Vec<GlobalGroupDto>)))]
async fn list_global_groups(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
) -> ApiResult<Json<Vec<GlobalGroupDto>>> {
    Ok(Json(s.registry.global_groups().await?))
}

#[utoipa::path(post, path = "/api/v1/global-groups", request_body = NewGlobalGroup, responses((status = 201)))]
async fn add_global_group(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Json(b): Json<NewGlobalGroup>,
) -> ApiResult<StatusCode> {
    s.registry.add_global_group(&b.code, &b.description).await?;
    changed(
        &s,
        &who,
        "global_group.add",
        &b.code,
        serde_json::json!({"description": b.description}),
    )
    .await?;
    Ok(StatusCode::CREATED)
}

#[utoipa::path(delete, path = "/api/v1/global-groups/{code}", params(("code" = String, Path)), responses((status = 204)))]
async fn remove_global_group(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path(code): Path<String>,
) -> ApiResult<StatusCode> {
    s.registry.remove_global_group(&code).await?;
    changed(
        &s,
        &who,
        "global_group.remove",
        &code,
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/global-groups/{code}/members/{client}", params(("code" = String, Path), ("client" = String, Path)), responses((status = 204)))]
async fn add_group_member(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path((code, client)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let client: ClientId = parse_id(&client, "client id")?;
    s.registry.add_global_group_member(&code, &client).await?;
    changed(
        &s,
        &who,
        "global_group.member.add",
        &code,
        serde_json::json!({"client": client.to_string()}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/global-groups/{code}/members/{client}", params(("code" = String, Path), ("client" = String, Path)), responses((status = 204)))]
async fn remove_group_member(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path((code, client)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let client: ClientId = parse_id(&client, "client id")?;
    s.registry
        .remove_global_group_member(&code, &client)
        .await?;
    changed(
        &s,
        &who,
        "global_group.member.remove",
        &code,
        serde_json::json!({"client": client.to_string()}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, body = Vec<TokenDto>)))]
async fn list_tokens(
    State(s): State<Arc<AppState>>,
    _: Authorized<AdminRole>,
) -> ApiResult<Json<Vec<TokenDto>>> {
    Ok(Json(tokens::list_api_tokens(s.registry.db()).await?))
}

#[utoipa::path(post, path = "/api/v1/tokens", request_body = NewToken, responses((status = 201, body = TokenCreated)))]
async fn create_token(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<AdminRole>,
    Json(b): Json<NewToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let created =
        tokens::create_api_token(s.registry.db(), b.role, &b.description, s.clock.now_ms()).await?;
    s.registry
        .audit(
            s.clock.now_ms(),
            &who.id,
            "token.create",
            &created.id,
            &serde_json::json!({"role": b.role.as_str()}).to_string(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", params(("id" = String, Path)), responses((status = 204)))]
async fn revoke_token(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<AdminRole>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    tokens::revoke_api_token(s.registry.db(), &id, s.clock.now_ms()).await?;
    s.registry
        .audit(s.clock.now_ms(), &who.id, "token.revoke", &id, "{}")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issues one certificate and records it; gateway auth certificates are also
/// registered on the gateway, so they appear in the next global configuration.
async fn issue(
    s: &AppState,
    actor: &str,
    profile: CertProfile,
    subject: &str,
    csr_pem: &str,
) -> ApiResult<IssuedCert> {
    if csr_pem.len() > 16 * 1024 {
        return Err(ApiError::bad_request("CSR is larger than 16 KiB"));
    }
    let now = s.clock.now();
    let validity = Duration::days(s.config.cert_validity_days);
    let (pki_profile, gateway) = match profile {
        CertProfile::GatewayAuth => {
            let id: GatewayId = parse_id(subject, "gateway id")?;
            let gw = s.registry.gateway(&id).await?;
            let host = gw
                .address
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_owned());
            (
                Profile::GatewayAuth {
                    gateway: id.clone(),
                    hosts: host.into_iter().collect(),
                },
                Some(id),
            )
        }
        CertProfile::MemberSigning => {
            let id: MemberId = parse_id(subject, "member id")?;
            let m = s.registry.member(&id).await?;
            (
                Profile::MemberSigning {
                    member: id,
                    name: m.name,
                },
                None,
            )
        }
    };
    let der =
        s.ca.issue_from_csr(csr_pem, &pki_profile, now, validity)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let info = CertInfo::parse(&der).map_err(|e| ApiError::internal(e.to_string()))?;
    let pem = certs_to_pem(std::slice::from_ref(&der));
    let kind = match profile {
        CertProfile::GatewayAuth => "gateway-auth",
        CertProfile::MemberSigning => "member-signing",
    };
    s.registry
        .record_issued(&crate::registry::IssuedRecord {
            serial: &info.serial_hex,
            profile: kind,
            subject,
            sha256: &info.sha256,
            not_after: info.not_after,
            issued_at_ms: s.clock.now_ms(),
            pem: &pem,
        })
        .await?;
    if let Some(gw) = gateway {
        s.registry
            .add_auth_cert(&gw, &info.sha256, &pem, info.not_after)
            .await?;
    }
    s.registry
        .audit(
            s.clock.now_ms(),
            actor,
            "certificate.issue",
            subject,
            &serde_json::json!({"profile": kind, "sha256": info.sha256, "serial": info.serial_hex})
                .to_string(),
        )
        .await?;
    s.conf_changed.notify_one();
    Ok(IssuedCert {
        subject: subject.replace(':', "/"),
        cert_pem: pem,
        sha256: info.sha256,
        not_after: veksel_proto::rfc3339(info.not_after * 1000),
    })
}

#[utoipa::path(post, path = "/api/v1/certificates", request_body = IssueRequest, responses((status = 201, body = IssuedCert), (status = 400, body = ApiErrorBody)))]
async fn issue_certificate(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Json(b): Json<IssueRequest>,
) -> ApiResult<(StatusCode, Json<IssuedCert>)> {
    let issued = issue(&s, &who.id, b.profile, &b.subject, &b.csr_pem).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Query of `GET /api/v1/certificates`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
struct SubjectQuery {
    /// Only certificates of this gateway or member (`/`-separated).
    subject: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/certificates", params(SubjectQuery), responses((status = 200, body = Vec<IssuedDto>)))]
async fn list_certificates(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
    Query(q): Query<SubjectQuery>,
) -> ApiResult<Json<Vec<IssuedDto>>> {
    Ok(Json(s.registry.issued(q.subject.as_deref()).await?))
}

#[utoipa::path(post, path = "/api/v1/certificates/{serial}/revoke", params(("serial" = String, Path, description = "serial number, hex")), request_body = RevokeRequest, responses((status = 204), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
async fn revoke_certificate(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Path(serial): Path<String>,
    Json(b): Json<RevokeRequest>,
) -> ApiResult<StatusCode> {
    if b.reason.len() > 200 {
        return Err(ApiError::bad_request(
            "reason is longer than 200 characters",
        ));
    }
    let serial = serial.to_ascii_lowercase();
    let sha256 = s
        .registry
        .revoke(&serial, &b.reason, s.clock.now_ms())
        .await?;
    // Tokens granted on a revoked signing certificate go with it.
    if let Some((profile, subject)) = s.registry.issued_subject(&serial).await?
        && profile == "member-signing"
        && let Ok(member) = subject.parse::<MemberId>()
    {
        crate::oauth::revoke_member_tokens(&s, &member).await?;
    }
    // Publishing at once is what bounds how long the network keeps trusting it.
    changed(
        &s,
        &who,
        "certificate.revoke",
        &serial,
        serde_json::json!({"sha256": sha256, "reason": b.reason}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/enrol/v1", request_body = EnrolRequest, security(("enrolment" = [])), responses((status = 200, body = EnrolResponse), (status = 401, body = ApiErrorBody)))]
async fn enrol(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    Json(b): Json<EnrolRequest>,
) -> ApiResult<Json<EnrolResponse>> {
    let presented = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("an enrolment token is required"))?;
    if b.signing.len() > 64 {
        return Err(ApiError::bad_request(
            "at most 64 signing CSRs per enrolment",
        ));
    }
    let gateway =
        tokens::consume_enrolment_token(s.registry.db(), presented.trim(), s.clock.now_ms())
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized("the enrolment token is unknown, used or expired")
            })?;
    let actor = format!("enrolment:{gateway}");
    let issued =
        issue_for_gateway(&s, &actor, &gateway, b.auth_csr_pem.as_deref(), &b.signing).await?;
    record_auth_registration(&s, &gateway, &issued, &actor).await?;
    Ok(Json(issued))
}

/// A new authentication certificate is a registration approved by how it was asked
/// for (enrolment token, or signature of the current certificate); it is kept in the
/// management requests beside the others.
async fn record_auth_registration(
    s: &AppState,
    gateway: &GatewayId,
    issued: &EnrolResponse,
    actor: &str,
) -> ApiResult<()> {
    if let Some(auth) = &issued.auth {
        let change = veksel_proto::management::Change::AuthCertRegistration {
            gateway: gateway.clone(),
            cert_sha256: auth.sha256.clone(),
        };
        crate::management::record_applied(s, &change, actor).await?;
    }
    Ok(())
}

/// Issues what an enrolment or a renewal asks for: a new authentication certificate
/// (registered beside the gateway's current ones) and signing certificates for the
/// members the gateway may sign for — its owner and those whose subsystems it hosts.
async fn issue_for_gateway(
    s: &AppState,
    actor: &str,
    gateway: &GatewayId,
    auth_csr_pem: Option<&str>,
    signing_csrs: &[SigningCsr],
) -> ApiResult<EnrolResponse> {
    if signing_csrs.len() > 64 {
        return Err(ApiError::bad_request("at most 64 signing CSRs per request"));
    }
    let gw = s.registry.gateway(gateway).await?;
    // A gateway may sign for its owner and for the members whose subsystems it hosts.
    let mut allowed: Vec<String> = vec![gateway.owner().to_string()];
    for c in &gw.clients {
        if let Ok(sub) = c.parse::<SubsystemId>() {
            allowed.push(sub.member().to_string());
        }
    }
    for req in signing_csrs {
        let member = req.member.replace(':', "/");
        if !allowed.contains(&member) {
            return Err(ApiError::forbidden(format!(
                "gateway {gateway} hosts no subsystem of member {member}"
            )));
        }
    }
    let auth = match auth_csr_pem {
        Some(csr) => Some(
            issue(
                s,
                actor,
                CertProfile::GatewayAuth,
                &gateway.to_string(),
                csr,
            )
            .await?,
        ),
        None => None,
    };
    let mut signing = Vec::new();
    for req in signing_csrs {
        signing.push(
            issue(
                s,
                actor,
                CertProfile::MemberSigning,
                &req.member,
                &req.csr_pem,
            )
            .await?,
        );
    }
    Ok(EnrolResponse {
        gateway: gateway.to_string(),
        auth,
        signing,
        ca_pem: s.ca.cert_pem(),
    })
}

fn check_service_url(what: &str, url: &str) -> ApiResult<()> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && has_host(url);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} must be an http:// or https:// URL with a host"
        )))
    }
}

/// True if the URL has a non-empty host part (no crate is needed for this much).
fn has_host(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default())
        .is_some_and(|host| !host.is_empty() && !host.contains(char::is_whitespace))
}

fn check_service_name(s: &AppState, name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 100 || name.contains(['/', '\\']) {
        return Err(ApiError::bad_request(
            "name must be 1 to 100 characters without slashes",
        ));
    }
    if name == s.own_ca_name() || name == s.own_tsa_name() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "that is the name of the authority's own service",
        ));
    }
    Ok(())
}

fn one_cert(pem: &str) -> ApiResult<(Vec<u8>, CertInfo)> {
    if pem.len() > 64 * 1024 {
        return Err(ApiError::bad_request("certificate is larger than 64 KiB"));
    }
    let certs = veksel_pki::certs_from_pem(pem)
        .map_err(|e| ApiError::bad_request(format!("certificate: {e}")))?;
    let [der] = certs.as_slice() else {
        return Err(ApiError::bad_request("give exactly one certificate"));
    };
    let info =
        CertInfo::parse(der).map_err(|e| ApiError::bad_request(format!("certificate: {e}")))?;
    Ok((der.clone(), info))
}

#[utoipa::path(get, path = "/api/v1/approved-cas", responses((status = 200, body = Vec<ApprovedCaDto>, description = "External CAs; the authority's own CA is always approved")))]
async fn list_cas(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
) -> ApiResult<Json<Vec<ApprovedCaDto>>> {
    Ok(Json(
        s.registry
            .trust_services("ca")
            .await?
            .into_iter()
            .map(|(name, cert_pem, ocsp_url, _)| ApprovedCaDto {
                name,
                cert_pem,
                ocsp_url,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/approved-cas", request_body = ApprovedCaDto, responses((status = 201, body = ApprovedCaDto), (status = 400, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
async fn add_ca(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<AdminRole>,
    Json(b): Json<ApprovedCaDto>,
) -> ApiResult<(StatusCode, Json<ApprovedCaDto>)> {
    check_service_name(&s, &b.name)?;
    let (_, info) = one_cert(&b.cert_pem)?;
    if !info.is_ca {
        return Err(ApiError::bad_request(
            "the certificate is not a CA certificate (basicConstraints cA)",
        ));
    }
    if let Some(url) = &b.ocsp_url {
        check_service_url("ocsp_url", url)?;
    }
    s.registry
        .add_trust_service(
            "ca",
            &b.name,
            &b.cert_pem,
            b.ocsp_url.as_deref(),
            0,
            s.clock.now_ms(),
        )
        .await?;
    changed(
        &s,
        &who,
        "approved_ca.add",
        &b.name,
        serde_json::json!({"sha256": info.sha256, "ocsp_url": b.ocsp_url}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(b)))
}

#[utoipa::path(delete, path = "/api/v1/approved-cas/{name}", params(("name" = String, Path)), responses((status = 204), (status = 404, body = ApiErrorBody)))]
async fn remove_ca(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<AdminRole>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.registry.remove_trust_service("ca", &name).await?;
    changed(&s, &who, "approved_ca.remove", &name, serde_json::json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/approved-tsas", responses((status = 200, body = Vec<ApprovedTsaDto>, description = "External TSAs; the authority's own TSA is always approved, with priority 100")))]
async fn list_tsas(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
) -> ApiResult<Json<Vec<ApprovedTsaDto>>> {
    Ok(Json(
        s.registry
            .trust_services("tsa")
            .await?
            .into_iter()
            .map(|(name, cert_pem, url, priority)| ApprovedTsaDto {
                name,
                url: url.unwrap_or_default(),
                cert_pem,
                priority,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/approved-tsas", request_body = ApprovedTsaDto, responses((status = 201, body = ApprovedTsaDto), (status = 400, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
async fn add_tsa(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<AdminRole>,
    Json(b): Json<ApprovedTsaDto>,
) -> ApiResult<(StatusCode, Json<ApprovedTsaDto>)> {
    check_service_name(&s, &b.name)?;
    check_service_url("url", &b.url)?;
    let (der, info) = one_cert(&b.cert_pem)?;
    // The gateways check tokens against the approved CAs: refuse a TSA they would not
    // accept, with the reason, rather than let stamping fail later.
    let mut cas = vec![s.ca.cert_pem()];
    cas.extend(
        s.registry
            .trust_services("ca")
            .await?
            .into_iter()
            .map(|c| c.1),
    );
    let roots = veksel_pki::verify::Roots::from_pems(cas.iter().map(String::as_str))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    roots
        .verify_for_eku(
            &[der],
            veksel_pki::tsa::EKU_TIME_STAMPING,
            s.clock.now_secs(),
        )
        .map_err(|e| {
            ApiError::bad_request(format!(
                "the certificate is not a time-stamping certificate from an approved CA: {e}"
            ))
        })?;
    s.registry
        .add_trust_service(
            "tsa",
            &b.name,
            &b.cert_pem,
            Some(&b.url),
            b.priority,
            s.clock.now_ms(),
        )
        .await?;
    changed(
        &s,
        &who,
        "approved_tsa.add",
        &b.name,
        serde_json::json!({"sha256": info.sha256, "url": b.url, "priority": b.priority}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(b)))
}

#[utoipa::path(delete, path = "/api/v1/approved-tsas/{name}", params(("name" = String, Path)), responses((status = 204), (status = 404, body = ApiErrorBody)))]
async fn remove_tsa(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<AdminRole>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.registry.remove_trust_service("tsa", &name).await?;
    changed(
        &s,
        &who,
        "approved_tsa.remove",
        &name,
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Media type in the JWS header of a renewal request, so no other signature by an
/// authentication key can be passed off as one.
pub const RENEWAL_CTY: &str = "veksel-renewal+json";

#[utoipa::path(post, path = "/renew/v1", security(()), request_body(content = String, content_type = "application/jose", description = "Compact JWS (ES256, cty veksel-renewal+json) over a RenewRequest, signed with the gateway's current authentication key, whose certificate is in x5c"), responses((status = 200, body = EnrolResponse), (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody), (status = 409, body = ApiErrorBody, description = "The request was replayed")))]
async fn renew(State(s): State<Arc<AppState>>, body: String) -> ApiResult<Json<EnrolResponse>> {
    let (gateway, payload) = verify_gateway_jws(&s, &body, RENEWAL_CTY, "renewal request").await?;
    let req: RenewRequest = serde_json::from_slice(&payload)
        .map_err(|e| ApiError::bad_request(format!("renewal request: {e}")))?;
    check_fresh(
        &s,
        &gateway,
        &req.gateway,
        req.created_at_ms,
        &req.nonce,
        "renewal request",
    )
    .await?;
    if let Some(csr) = &req.auth_csr_pem {
        // A new authentication key is registered with the gateway's signature (its
        // current key, above) and its owner's, as X-Road's registration request is.
        let consent = req.owner_consent.as_deref().ok_or_else(|| {
            ApiError::unauthorized(format!(
                "a new authentication key needs the consent of the owner {}, signed with its signing key (owner_consent)",
                gateway.owner()
            ))
        })?;
        let payload =
            crate::management::verify_member_consent(&s, consent, gateway.owner()).await?;
        let consent: veksel_proto::management::AuthKeyConsent = serde_json::from_slice(&payload)
            .map_err(|e| ApiError::unauthorized(format!("consent: {e}")))?;
        if consent.gateway != gateway
            || consent.nonce != req.nonce
            || consent.auth_csr_sha256 != veksel_pki::sha256_hex(csr.as_bytes())
        {
            return Err(ApiError::unauthorized("consent: it is for another request"));
        }
    }
    let actor = format!("renewal:{gateway}");
    let issued = issue_for_gateway(
        &s,
        &actor,
        &gateway,
        req.auth_csr_pem.as_deref(),
        &req.signing,
    )
    .await?;
    record_auth_registration(&s, &gateway, &issued, &actor).await?;
    Ok(Json(issued))
}

#[utoipa::path(post, path = "/tsa/v1", security(()), request_body(content = Vec<u8>, content_type = "application/timestamp-query", description = "RFC 3161 TimeStampReq (DER)"), responses((status = 200, description = "RFC 3161 TimeStampResp (DER): a token, or a rejection", content_type = "application/timestamp-reply")))]
async fn time_stamp(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
        != Some("application/timestamp-query")
    {
        return ApiError::bad_request("Content-Type must be application/timestamp-query")
            .into_response();
    }
    let mut serial = [0u8; 16];
    // A random 128-bit serial is unique without coordination between authority nodes.
    let _ = aws_lc_rs::rand::fill(&mut serial);
    let reply = s.tsa.respond(&body, s.clock.now_secs(), &serial);
    (
        [(header::CONTENT_TYPE, "application/timestamp-reply")],
        reply,
    )
        .into_response()
}

async fn ocsp_answer(s: &AppState, request: &[u8]) -> Response {
    let responder =
        match veksel_pki::ocsp::Responder::new(&s.ca, s.config.settings.ocsp_freshness_secs) {
            Ok(r) => r,
            Err(e) => return ApiError::internal(e.to_string()).into_response(),
        };
    let mut known = std::collections::BTreeMap::new();
    for serial in veksel_pki::ocsp::Responder::serials(request).unwrap_or_default() {
        match s.registry.revocation(&serial).await {
            Ok(state) => {
                known.insert(serial, state);
            }
            // An unreadable registry must not produce a "good" answer.
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let reply = responder.respond(request, s.clock.now_secs(), |serial| {
        match known.get(serial) {
            Some(Some(Some(at_ms))) => {
                veksel_pki::ocsp::Status::Revoked(u64::try_from(*at_ms / 1000).unwrap_or_default())
            }
            Some(Some(None)) => veksel_pki::ocsp::Status::Good,
            _ => veksel_pki::ocsp::Status::Unknown,
        }
    });
    ([(header::CONTENT_TYPE, "application/ocsp-response")], reply).into_response()
}

#[utoipa::path(post, path = "/ocsp/v1", security(()), request_body(content = Vec<u8>, content_type = "application/ocsp-request", description = "RFC 6960 OCSPRequest (DER)"), responses((status = 200, description = "RFC 6960 OCSPResponse (DER), signed by the CA", content_type = "application/ocsp-response")))]
async fn ocsp_post(State(s): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    ocsp_answer(&s, &body).await
}

#[utoipa::path(get, path = "/ocsp/v1/{request}", security(()), params(("request" = String, Path, description = "base64 of the DER OCSPRequest (RFC 6960 Appendix A.1)")), responses((status = 200, description = "RFC 6960 OCSPResponse (DER)", content_type = "application/ocsp-response")))]
async fn ocsp_get(State(s): State<Arc<AppState>>, Path(encoded): Path<String>) -> Response {
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim()))
        .unwrap_or_default();
    ocsp_answer(&s, &decoded).await
}

#[utoipa::path(get, path = "/api/v1/configuration", responses((status = 200, body = ConfStatus)))]
async fn conf_status(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
) -> ApiResult<Json<ConfStatus>> {
    let p = s.published();
    Ok(Json(ConfStatus {
        version: p.conf.version,
        generated_at: veksel_proto::rfc3339(p.conf.generated_at_ms),
        expires_at: veksel_proto::rfc3339(p.conf.expires_at_ms),
        members: p.conf.members.len(),
        gateways: p.conf.gateways.len(),
    }))
}

/// Query of `GET /api/v1/audit-events`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
struct Limit {
    /// Most events to return (default 100, at most 1000).
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit-events", params(Limit), responses((status = 200, body = Vec<AuditEvent>)))]
async fn audit_events(
    State(s): State<Arc<AppState>>,
    _: Authorized<ObserverRole>,
    Query(q): Query<Limit>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(s.registry.audit_events(limit).await?))
}

#[utoipa::path(get, path = "/conf/v1/global", security(()), responses((status = 200, description = "Compact JWS (ES256) of the global configuration", content_type = "application/jose"), (status = 304, description = "Not modified (If-None-Match)")))]
async fn global_conf(State(s): State<Arc<AppState>>, h: HeaderMap) -> Response {
    let p = s.published();
    let etag = format!("\"{}\"", p.etag);
    let not_modified = h
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if not_modified {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jose"),
    );
    (StatusCode::OK, headers, p.jws.clone()).into_response()
}

#[utoipa::path(get, path = "/conf/v1/anchor", security(()), responses((status = 200, description = "The anchor (for convenience; gateways must receive it out of band)")))]
async fn anchor(State(s): State<Arc<AppState>>) -> Json<veksel_proto::conf::Anchor> {
    Json(s.anchor.clone())
}

#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "The process is alive")))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", security(()), responses((status = 200, description = "Ready"), (status = 503, description = "Not ready; the body says why")))]
async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if let Err(e) = s.registry.db().ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: database: {e}\n"),
        )
            .into_response();
    }
    let p = s.published();
    let now = s.clock.now_ms();
    if p.conf.expires_at_ms <= now {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the published configuration (version {}) has expired; signing is failing\n", p.conf.version),
        )
            .into_response();
    }
    (
        StatusCode::OK,
        format!("ready: configuration version {}\n", p.conf.version),
    )
        .into_response()
}

#[utoipa::path(get, path = "/metrics", security(()), responses((status = 200, description = "Prometheus text format")))]
async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let p = s.published();
    s.metrics
        .conf_version
        .set(i64::try_from(p.conf.version).unwrap_or_default());
    s.metrics.conf_expires.set(p.conf.expires_at_ms / 1000);
    s.metrics.members.set(p.conf.members.len() as i64);
    s.metrics.gateways.set(p.conf.gateways.len() as i64);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &s.metrics.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    veksel_admin::metrics_response(out)
}
