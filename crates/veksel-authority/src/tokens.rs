//! API tokens with the authority's roles, and one-time gateway enrolment tokens.

use crate::model::{Role, TokenCreated, TokenDto};
use veksel_id::GatewayId;
use veksel_store::{Db, StoreError, sqlx, tokens};

/// Prefix of enrolment tokens.
pub const ENROLMENT_TOKEN_PREFIX: &str = "vke_";

/// An authenticated API caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Token id, used as the actor in the audit trail.
    pub id: String,
    /// Its role.
    pub role: Role,
}

/// Creates an API token and returns the secret (the only time it is visible).
pub async fn create_api_token(
    db: &Db,
    role: Role,
    description: &str,
    now_ms: i64,
) -> Result<TokenCreated, StoreError> {
    let (id, token) = tokens::create(db, role.as_str(), description, now_ms).await?;
    Ok(TokenCreated { id, role, token })
}

/// Looks up a bearer token. Unknown, revoked and malformed tokens all give `None`.
pub async fn authenticate(db: &Db, presented: &str) -> Result<Option<Principal>, StoreError> {
    Ok(tokens::authenticate(db, presented).await?.and_then(|p| {
        Some(Principal {
            role: Role::parse(&p.role)?,
            id: p.id,
        })
    }))
}

/// Lists API tokens (never their secrets).
pub async fn list_api_tokens(db: &Db) -> Result<Vec<TokenDto>, StoreError> {
    tokens::list(db)
        .await?
        .into_iter()
        .map(|t| {
            Ok(TokenDto {
                role: Role::parse(&t.role)
                    .ok_or_else(|| StoreError::Corrupt(format!("role {}", t.role)))?,
                id: t.id,
                description: t.description,
                created_at: veksel_proto::rfc3339(t.created_at),
                revoked_at: t.revoked_at.map(veksel_proto::rfc3339),
            })
        })
        .collect()
}

/// Revokes an API token.
pub async fn revoke_api_token(db: &Db, id: &str, now_ms: i64) -> Result<(), StoreError> {
    tokens::revoke(db, id, now_ms).await
}

/// Creates a one-time enrolment token for a gateway.
pub async fn create_enrolment_token(
    db: &Db,
    gateway: &GatewayId,
    expires_at_ms: i64,
) -> Result<String, StoreError> {
    let token = tokens::random_secret(ENROLMENT_TOKEN_PREFIX);
    sqlx::query(
        "INSERT INTO enrolment_tokens (token_sha256, gateway_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(tokens::secret_digest(&token))
    .bind(gateway.to_string())
    .bind(expires_at_ms)
    .execute(db.pool())
    .await?;
    Ok(token)
}

/// Consumes an enrolment token, returning the gateway it was made for. A used,
/// expired or unknown token gives `None`.
pub async fn consume_enrolment_token(
    db: &Db,
    presented: &str,
    now_ms: i64,
) -> Result<Option<GatewayId>, StoreError> {
    if !presented.starts_with(ENROLMENT_TOKEN_PREFIX) || presented.len() > 128 {
        return Ok(None);
    }
    let digest = tokens::secret_digest(presented);
    // One UPDATE both checks and consumes, so two concurrent uses cannot both win.
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE enrolment_tokens SET used_at = $1
         WHERE token_sha256 = $2 AND used_at IS NULL AND expires_at > $1
         RETURNING gateway_id",
    )
    .bind(now_ms)
    .bind(&digest)
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some((g,)) => g
            .parse()
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("{e}"))),
        None => Ok(None),
    }
}

/// Issues a one-time enrolment token for a registered gateway.
pub(crate) async fn issue_enrolment_token(
    s: &crate::AppState,
    id: &GatewayId,
) -> veksel_admin::ApiResult<crate::model::EnrolmentToken> {
    let expires = s.clock.now_ms() + s.config.enrolment_token_ttl_secs as i64 * 1000;
    let token = create_enrolment_token(s.registry.db(), id, expires).await?;
    Ok(crate::model::EnrolmentToken {
        gateway: id.to_string(),
        token,
        expires_at: veksel_proto::rfc3339(expires),
    })
}
