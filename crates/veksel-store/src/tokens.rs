//! API tokens for admin APIs: random secrets shown once, stored only as SHA-256,
//! compared in constant time. Each node keeps them in its own `api_tokens` table
//! (created by [`TOKENS_TABLE`]); the role names are the node's to define.

use crate::{Db, StoreError};
use base64::Engine;
use subtle::ConstantTimeEq;

/// DDL of the table this module uses, for a node's migrations.
pub const TOKENS_TABLE: &str = "CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
    description TEXT NOT NULL, created_at BIGINT NOT NULL, revoked_at BIGINT)";

/// Prefix that makes veksel API tokens recognisable to secret scanners.
pub const API_TOKEN_PREFIX: &str = "vka_";

/// A random secret with a recognisable prefix (32 random bytes, base64url).
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    // aws-lc's system RNG does not fail on supported platforms; an all-zero token
    // would still be unique per row thanks to the UNIQUE constraint failing loudly.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// SHA-256 of a secret, lower-case hex: what is stored.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes()).as_ref())
}

/// An authenticated caller: token id and role name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPrincipal {
    /// Token id (safe to log; used as the actor in audit trails).
    pub id: String,
    /// Role name.
    pub role: String,
}

/// A token as listed, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Token id.
    pub id: String,
    /// Role name.
    pub role: String,
    /// What it is for.
    pub description: String,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Revocation time, Unix ms.
    pub revoked_at: Option<i64>,
}

/// Creates a token and returns `(id, secret)`; the secret is never stored.
pub async fn create(
    db: &Db,
    role: &str,
    description: &str,
    now_ms: i64,
) -> Result<(String, String), StoreError> {
    let token = random_secret(API_TOKEN_PREFIX);
    let mut id_bytes = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut id_bytes);
    let id = hex::encode(id_bytes);
    sqlx::query(
        "INSERT INTO api_tokens (id, token_sha256, role, description, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(secret_digest(&token))
    .bind(role)
    .bind(description)
    .bind(now_ms)
    .execute(db.pool())
    .await?;
    Ok((id, token))
}

/// Looks up a presented bearer token. Unknown, revoked and malformed tokens give `None`.
pub async fn authenticate(db: &Db, presented: &str) -> Result<Option<TokenPrincipal>, StoreError> {
    if !presented.starts_with(API_TOKEN_PREFIX) || presented.len() > 128 {
        return Ok(None);
    }
    let wanted = secret_digest(presented);
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT id, token_sha256, role FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(&wanted)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.and_then(|(id, stored, role)| {
        // The lookup matched on the digest; the constant-time comparison keeps the
        // final decision free of early exits on secret-derived bytes.
        bool::from(stored.as_bytes().ct_eq(wanted.as_bytes()))
            .then_some(TokenPrincipal { id, role })
    }))
}

/// Whether token `id` exists and is not revoked.
pub async fn is_active(db: &Db, id: &str) -> Result<bool, StoreError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM api_tokens WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
    Ok(row.is_some())
}

/// Lists tokens.
pub async fn list(db: &Db) -> Result<Vec<TokenRow>, StoreError> {
    let rows: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, role, description, created_at, revoked_at FROM api_tokens ORDER BY created_at, id",
    )
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, role, description, created_at, revoked_at)| TokenRow {
            id,
            role,
            description,
            created_at,
            revoked_at,
        })
        .collect())
}

/// Revokes a token.
pub async fn revoke(db: &Db, id: &str, now_ms: i64) -> Result<(), StoreError> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms)
            .bind(id)
            .execute(db.pool())
            .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("active token {id}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DbOptions, Migration};

    #[tokio::test]
    async fn create_authenticate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("t.db"), &DbOptions::default())
            .await
            .unwrap();
        db.migrate(
            "t",
            &[Migration {
                version: 1,
                name: "tokens",
                sql: TOKENS_TABLE,
            }],
        )
        .await
        .unwrap();
        let (id, secret) = create(&db, "admin", "test", 1).await.unwrap();
        assert!(secret.starts_with(API_TOKEN_PREFIX));
        let p = authenticate(&db, &secret).await.unwrap().unwrap();
        assert_eq!(
            p,
            TokenPrincipal {
                id: id.clone(),
                role: "admin".into()
            }
        );
        assert_eq!(authenticate(&db, "vka_wrong").await.unwrap(), None);
        assert_eq!(authenticate(&db, "garbage").await.unwrap(), None);
        let rows = list(&db).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert!(!format!("{rows:?}").contains(&secret));
        revoke(&db, &id, 2).await.unwrap();
        assert_eq!(authenticate(&db, &secret).await.unwrap(), None);
        assert!(revoke(&db, &id, 3).await.is_err());
    }
}
