//! Who may call the authority: admin tokens with their roles, and requests that
//! gateways sign with their authentication keys (management requests, renewals,
//! ledger submissions). One module, so every API of the authority authenticates the
//! same way.

use crate::AppState;
use crate::model::Role;
use crate::tokens;
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;
use veksel_admin::{ApiError, ApiResult, RoleCheck};
use veksel_id::GatewayId;
use veksel_pki::CertInfo;

/// The caller's admin token, which must allow `role`.
pub(crate) async fn require(
    state: &AppState,
    headers: &HeaderMap,
    role: Role,
) -> ApiResult<tokens::Principal> {
    let p = veksel_admin::authenticate(state.registry.db(), headers, role.as_str(), |have| {
        Role::parse(have).is_some_and(|r| r.allows(role))
    })
    .await?;
    let role = Role::parse(&p.role)
        .ok_or_else(|| ApiError::internal(format!("token {} has an unknown role", p.id)))?;
    Ok(tokens::Principal { id: p.id, role })
}

/// Reading the registry, the ledger and requests.
#[derive(Debug)]
pub(crate) struct ObserverRole;
/// Registry changes, certificates and deciding requests.
#[derive(Debug)]
pub(crate) struct RegistrationOfficerRole;
/// Everything, including tokens and trust anchors.
#[derive(Debug)]
pub(crate) struct AdminRole;

macro_rules! role_check {
    ($($marker:ident => $role:expr),*) => {$(
        impl RoleCheck for $marker {
            type State = Arc<AppState>;
            type Principal = tokens::Principal;
            async fn check(s: &Arc<AppState>, headers: &HeaderMap) -> ApiResult<tokens::Principal> {
                require(s, headers, $role).await
            }
        }
    )*};
}
role_check!(ObserverRole => Role::Observer, RegistrationOfficerRole => Role::RegistrationOfficer, AdminRole => Role::Admin);

/// A renewal request is accepted this long after (and before) its creation time.
const RENEWAL_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Checks a request a gateway signed with its authentication key (a compact JWS with
/// the certificate in `x5c`): the certificate chains to the authority's CA, is a
/// current, unrevoked authentication certificate of the gateway it names, and signed
/// the payload. Returns the gateway and the payload.
pub(crate) async fn verify_gateway_jws(
    s: &AppState,
    body: &str,
    cty: &str,
    what: &str,
) -> ApiResult<(GatewayId, Vec<u8>)> {
    let (info, payload) = verify_signed(s, body, cty, what, |roots, chain, now| {
        roots
            .verify(chain, veksel_pki::verify::Usage::TlsClient, now)
            .map_err(|e| {
                format!("the {what} is not signed with a valid authentication certificate: {e}")
            })
    })
    .await?;
    let gateway: GatewayId = info
        .subject_serial_number
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|_| ApiError::unauthorized("the certificate names no gateway"))?;
    let registered = s
        .registry
        .gateway(&gateway)
        .await
        .map(|g| g.auth_cert_sha256.contains(&info.sha256))
        .unwrap_or(false);
    if !registered {
        return Err(ApiError::unauthorized(format!(
            "certificate {} is not a current authentication certificate of gateway {gateway}",
            info.sha256
        )));
    }
    Ok((gateway, payload))
}

/// Checks a compact JWS of content type `cty` (at most 128 KiB) whose certificate is
/// in `x5c`: `check_chain` validates the chain against the authority's CA at the
/// current time, the certificate must not be revoked, and the signature must verify.
/// Returns the certificate and the payload.
pub(crate) async fn verify_signed(
    s: &AppState,
    body: &str,
    cty: &str,
    what: &str,
    check_chain: impl FnOnce(&veksel_pki::verify::Roots, &[Vec<u8>], u64) -> Result<CertInfo, String>,
) -> ApiResult<(CertInfo, Vec<u8>)> {
    if body.len() > 128 * 1024 {
        return Err(ApiError::bad_request(format!(
            "the {what} is larger than 128 KiB"
        )));
    }
    let jws = veksel_proto::jws::Unverified::parse(body.trim(), None)
        .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))?;
    if jws.header.cty.as_deref() != Some(cty) {
        return Err(ApiError::bad_request(format!(
            "{what}: the JWS content type must be {cty}"
        )));
    }
    let chain = jws
        .header
        .chain_der()
        .map_err(|e| ApiError::unauthorized(format!("{what}: {e}")))?;
    let roots = veksel_pki::verify::Roots::from_ders(vec![s.ca.cert_der().to_vec()])
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let now_secs = u64::try_from(s.clock.now_ms() / 1000).unwrap_or_default();
    let info = check_chain(&roots, &chain, now_secs).map_err(ApiError::unauthorized)?;
    if s.registry
        .revoked_unexpired(i64::try_from(now_secs).unwrap_or(i64::MAX))
        .await?
        .contains(&info.sha256)
    {
        return Err(ApiError::unauthorized(format!(
            "{what}: certificate {} is revoked",
            info.sha256
        )));
    }
    let payload = jws
        .verify(&info.public_key)
        .map_err(|_| ApiError::unauthorized(format!("the {what}'s signature does not verify")))?;
    Ok((info, payload))
}

/// A signed gateway request must name the gateway that signed it, be recent, and be
/// used once (its nonce is remembered past the time window).
pub(crate) async fn check_fresh(
    s: &AppState,
    signer: &GatewayId,
    named: &str,
    created_at_ms: i64,
    nonce: &str,
    what: &str,
) -> ApiResult<()> {
    if named != signer.to_string() {
        return Err(ApiError::unauthorized(format!(
            "the {what} is for gateway {named}, but signed by gateway {signer}"
        )));
    }
    let now_ms = s.clock.now_ms();
    if (created_at_ms - now_ms).abs() > RENEWAL_WINDOW_MS {
        return Err(ApiError::bad_request(format!(
            "the {what} was not made within the last 5 minutes (check the clock)"
        )));
    }
    if nonce.is_empty() || nonce.len() > 128 {
        return Err(ApiError::bad_request(
            "the nonce must have 1 to 128 characters",
        ));
    }
    if !s
        .registry
        .use_nonce(
            &format!("{signer}/{nonce}"),
            now_ms,
            now_ms + 2 * RENEWAL_WINDOW_MS,
        )
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("this {what} was already used"),
        ));
    }
    Ok(())
}
