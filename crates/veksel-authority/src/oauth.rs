//! The token service for organisations: OAuth 2.0's JWT-bearer grant (RFC 7523) in
//! Maskinporten's shape, issuing ES256 access tokens (RFC 9068) for the scopes
//! members register, with RFC 8414 metadata, a JWKS whose keys rotate, RFC 7662
//! introspection and a revocation list that gateways get with the global
//! configuration.
//!
//! What the assertion says without state is checked by [`veksel_proto::oauth`]; here
//! the key is resolved (an `x5c` chain from an approved CA, or a `kid` naming a
//! signing certificate this authority issued), `jti` is used once, and scopes are
//! looked up: registered, granted to the consumer, delegated to a supplier. Every
//! issued token is logged as process state (who, which scopes, when; never the
//! token itself).

use crate::auth::{AdminRole, ObserverRole, RegistrationOfficerRole};
use crate::oauth_wire::{Form, OAuthError, no_store};
use crate::{AppState, AuthorityError, changed};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use utoipa::ToSchema;
use veksel_admin::{ApiError, ApiResult, Authorized};
use veksel_id::{ClientId, MemberId};
use veksel_pki::{CertInfo, KeyFile, certs_from_pem};
use veksel_proto::jws::SoftwareSigner;
use veksel_proto::management::{Change, Grantee};
use veksel_proto::oauth::{
    ACCESS_TOKEN_TYP, AccessTokenClaims, AssertionClaims, AssertionError, JWT_BEARER_GRANT, Jwk,
    Jwks, KeyRef, MAX_CLOCK_SKEW_SECS, OneOrMany, ParsedAssertion, TokenResponse, scopes,
};
use veksel_proto::oauth::{Delegation, RevokedTokens, TokenService};
use veksel_store::sqlx::{self, Row};
use veksel_store::{Db, StoreError};

/// Client authentication by a signed JWT (RFC 7523 §2.2), for introspection.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest resource indicator.
const MAX_RESOURCE_LEN: usize = 255;
/// Most resource indicators in one grant.
const MAX_RESOURCES: usize = 8;
/// Largest `authorization_details`, serialised.
const MAX_AUTHORIZATION_DETAILS: usize = 8 * 1024;
/// Directory of the token-signing keys in the data directory.
pub const KEYS_DIR: &str = "oauth-keys";

/// Tables of the token service.
pub const MIGRATION: &str = r#"
CREATE TABLE oauth_scopes (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, description TEXT NOT NULL,
    delegable BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE oauth_scope_grantees (
    scope TEXT NOT NULL, grantee TEXT NOT NULL, PRIMARY KEY (scope, grantee));
CREATE TABLE oauth_delegations (
    scope TEXT NOT NULL, consumer TEXT NOT NULL, supplier TEXT NOT NULL,
    created_at BIGINT NOT NULL, PRIMARY KEY (scope, consumer, supplier));
CREATE TABLE oauth_assertions (
    client TEXT NOT NULL, jti TEXT NOT NULL, expires_at BIGINT NOT NULL,
    PRIMARY KEY (client, jti));
CREATE TABLE oauth_tokens (
    jti TEXT PRIMARY KEY, client_id TEXT NOT NULL, consumer TEXT NOT NULL,
    supplier TEXT, scope TEXT NOT NULL, aud TEXT NOT NULL,
    issued_at BIGINT NOT NULL, expires_at BIGINT NOT NULL);
CREATE INDEX oauth_tokens_issued ON oauth_tokens (issued_at);
CREATE TABLE oauth_keys (
    kid TEXT PRIMARY KEY, jwk TEXT NOT NULL, active_from BIGINT NOT NULL,
    retired_at BIGINT, withdrawn BIGINT NOT NULL DEFAULT 0);
CREATE TABLE oauth_revocations (member TEXT PRIMARY KEY, issued_before BIGINT NOT NULL);
INSERT INTO management_policy (kind, auto_approve) VALUES ('scope-registration', 1);
INSERT INTO management_policy (kind, auto_approve) VALUES ('scope-deletion', 1);
INSERT INTO management_policy (kind, auto_approve) VALUES ('scope-delegation', 1);
INSERT INTO management_policy (kind, auto_approve) VALUES ('scope-delegation-withdrawal', 1)
"#;

// === Signing keys ===

/// One token-signing key as published.
#[derive(Debug, Clone)]
struct KeyRow {
    jwk: Jwk,
    active_from_ms: i64,
    retired_at_ms: Option<i64>,
}

/// The token-signing keys: the one that signs now and every key whose tokens may
/// still be valid. Private keys live in [`KEYS_DIR`] (0600); the database holds the
/// public keys and when each was, or will be, in use.
#[derive(Debug)]
pub struct TokenKeys {
    dir: PathBuf,
    subject_salt: Vec<u8>,
    lifetime_secs: i64,
    current: RwLock<Option<(Jwk, Arc<SoftwareSigner>)>>,
    published: RwLock<Vec<KeyRow>>,
    /// One refresh at a time: a refresh that read the keys before a withdrawal must
    /// not write its view after the withdrawal's own refresh, or the withdrawn key
    /// would be published, and sign, again until the next one.
    refreshing: tokio::sync::Mutex<()>,
}

impl TokenKeys {
    /// Loads the keys, creating a first one for a new token service.
    pub async fn load(
        dir: &Path,
        db: &Db,
        lifetime_secs: u64,
        now_ms: i64,
    ) -> Result<Self, AuthorityError> {
        let keys_dir = dir.join(KEYS_DIR);
        std::fs::create_dir_all(&keys_dir).map_err(|e| AuthorityError::DataDir {
            path: keys_dir.clone(),
            message: e.to_string(),
        })?;
        // The key of people's pairwise subjects: random once, kept like a key.
        let salt_path = keys_dir.join("subject.salt");
        let subject_salt = veksel_pki::keys::load_or_create_salt(&salt_path)?;
        let keys = Self {
            dir: keys_dir,
            subject_salt,
            lifetime_secs: i64::try_from(lifetime_secs).unwrap_or(i64::MAX),
            current: RwLock::new(None),
            published: RwLock::new(Vec::new()),
            refreshing: tokio::sync::Mutex::new(()),
        };
        if keys.rows(db).await?.is_empty() {
            keys.create(db, now_ms).await?;
        }
        keys.refresh(db, now_ms).await?;
        Ok(keys)
    }

    async fn rows(&self, db: &Db) -> Result<Vec<KeyRow>, AuthorityError> {
        let rows = sqlx::query(
            "SELECT jwk, active_from, retired_at FROM oauth_keys WHERE withdrawn = 0 ORDER BY active_from",
        )
        .fetch_all(db.pool())
        .await
        .map_err(StoreError::from)?;
        rows.iter()
            .map(|r| {
                let jwk: String = r.try_get(0).map_err(StoreError::from)?;
                Ok(KeyRow {
                    jwk: serde_json::from_str(&jwk)
                        .map_err(|e| StoreError::Corrupt(format!("oauth key: {e}")))?,
                    active_from_ms: r.try_get(1).map_err(StoreError::from)?,
                    retired_at_ms: r.try_get(2).map_err(StoreError::from)?,
                })
            })
            .collect()
    }

    /// Makes a new key, in use from `active_from_ms`.
    async fn create(&self, db: &Db, active_from_ms: i64) -> Result<Jwk, AuthorityError> {
        let key = KeyFile::generate()?;
        let signer = key
            .signer(vec![])
            .map_err(|e| AuthorityError::Signing(e.to_string()))?;
        let jwk =
            Jwk::es256(&signer.public_key()).map_err(|e| AuthorityError::Signing(e.to_string()))?;
        std::fs::create_dir_all(&self.dir).map_err(|e| AuthorityError::DataDir {
            path: self.dir.clone(),
            message: e.to_string(),
        })?;
        key.save(&self.key_path(&jwk.kid))?;
        sqlx::query("INSERT INTO oauth_keys (kid, jwk, active_from) VALUES ($1, $2, $3)")
            .bind(&jwk.kid)
            .bind(serde_json::to_string(&jwk).map_err(|e| AuthorityError::Signing(e.to_string()))?)
            .bind(active_from_ms)
            .execute(db.pool())
            .await
            .map_err(StoreError::from)?;
        Ok(jwk)
    }

    fn key_path(&self, kid: &str) -> PathBuf {
        // A kid is a base64url thumbprint: safe as a file name.
        self.dir.join(format!("{kid}.key"))
    }

    /// Re-reads the keys: the newest one active at `now_ms` signs; a key stays
    /// published until the tokens it signed have expired.
    pub async fn refresh(&self, db: &Db, now_ms: i64) -> Result<(), AuthorityError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let rows = self.rows(db).await?;
        let current = rows
            .iter()
            .rev()
            .find(|k| k.active_from_ms <= now_ms && k.retired_at_ms.is_none_or(|r| r > now_ms))
            .or_else(|| rows.iter().rev().find(|k| k.active_from_ms <= now_ms))
            .ok_or_else(|| AuthorityError::Signing("no token-signing key is active".into()))?;
        let loaded = self
            .current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(jwk, _)| jwk.kid.clone()));
        if loaded.as_deref() != Some(current.jwk.kid.as_str()) {
            let signer = KeyFile::load(&self.key_path(&current.jwk.kid))?
                .signer(vec![])
                .map_err(|e| AuthorityError::Signing(e.to_string()))?;
            if signer.public_key() != current.jwk.point().unwrap_or_default() {
                return Err(AuthorityError::Signing(format!(
                    "the key file of token-signing key {} holds another key",
                    current.jwk.kid
                )));
            }
            if let Ok(mut c) = self.current.write() {
                *c = Some((current.jwk.clone(), Arc::new(signer)));
            }
        }
        let horizon = (self.lifetime_secs + MAX_CLOCK_SKEW_SECS) * 1000;
        let published = rows
            .into_iter()
            .filter(|k| k.retired_at_ms.is_none_or(|r| r + horizon > now_ms))
            .collect();
        if let Ok(mut p) = self.published.write() {
            *p = published;
        }
        Ok(())
    }

    /// The secret that makes people's subjects pairwise per relying party.
    pub fn subject_salt(&self) -> &[u8] {
        &self.subject_salt
    }

    /// The key that signs now.
    pub(crate) fn signer(&self) -> Option<(String, Arc<SoftwareSigner>)> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(jwk, s)| (jwk.kid.clone(), s.clone())))
    }

    /// The published keys (JWKS).
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self
                .published
                .read()
                .map(|p| p.iter().map(|k| k.jwk.clone()).collect())
                .unwrap_or_default(),
        }
    }
}

// === What gateways get with the configuration ===

/// The token service's part of the global configuration.
pub(crate) async fn conf_part(s: &AppState, now_secs: i64) -> Result<TokenService, StoreError> {
    let pool = s.registry.db().pool();
    let horizon = now_secs - s.config.token_lifetime_secs() - MAX_CLOCK_SKEW_SECS;
    let revoked = sqlx::query_as::<_, (String, i64)>(
        "SELECT member, issued_before FROM oauth_revocations WHERE issued_before > $1 ORDER BY member",
    )
    .bind(horizon)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(member, issued_before)| {
        Ok(RevokedTokens {
            member: member.parse().map_err(corrupt)?,
            issued_before,
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    let delegations = sqlx::query_as::<_, (String, String, String)>(
        "SELECT scope, consumer, supplier FROM oauth_delegations ORDER BY scope, consumer, supplier",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(scope, consumer, supplier)| {
        Ok(Delegation {
            scope,
            consumer: consumer.parse().map_err(corrupt)?,
            supplier: supplier.parse().map_err(corrupt)?,
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(TokenService {
        issuer: s.issuer().to_owned(),
        keys: s.token_keys.jwks().keys,
        revoked,
        delegations,
    })
}

fn corrupt(e: veksel_id::IdError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Revokes every token of `member` issued until now: on a revoked signing
/// certificate, and at an officer's request.
pub(crate) async fn revoke_member_tokens(
    s: &AppState,
    member: &MemberId,
) -> Result<(), StoreError> {
    let now = i64::try_from(s.clock.now_secs()).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO oauth_revocations (member, issued_before) VALUES ($1, $2)
         ON CONFLICT (member) DO UPDATE SET issued_before = excluded.issued_before",
    )
    .bind(member.to_string())
    .bind(now)
    .execute(s.registry.db().pool())
    .await?;
    Ok(())
}

// === Scopes, from management requests ===

/// Applies an approved scope change.
pub(crate) async fn apply(s: &AppState, change: &Change) -> Result<(), StoreError> {
    let pool = s.registry.db().pool();
    match change {
        Change::ScopeRegistration {
            gateway,
            scope,
            description,
            consumers,
            delegable,
        } => {
            let owner = gateway.owner().to_string();
            check_prefix(s, scope, &owner).await?;
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO oauth_scopes (name, owner, description, delegable, updated_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO UPDATE SET description = excluded.description,
                 delegable = excluded.delegable, updated_at = excluded.updated_at",
            )
            .bind(scope)
            .bind(&owner)
            .bind(description)
            .bind(i64::from(*delegable))
            .bind(s.clock.now_ms())
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM oauth_scope_grantees WHERE scope = $1")
                .bind(scope)
                .execute(&mut *tx)
                .await?;
            let distinct: BTreeSet<String> = consumers.iter().map(ToString::to_string).collect();
            for grantee in distinct {
                sqlx::query("INSERT INTO oauth_scope_grantees (scope, grantee) VALUES ($1, $2)")
                    .bind(scope)
                    .bind(grantee)
                    .execute(&mut *tx)
                    .await?;
            }
            if !delegable {
                sqlx::query("DELETE FROM oauth_delegations WHERE scope = $1")
                    .bind(scope)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }
        Change::ScopeDeletion { gateway, scope } => {
            owned_scope(s, scope, gateway.owner()).await?;
            let mut tx = pool.begin().await?;
            for table in ["oauth_scope_grantees", "oauth_delegations"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE scope = $1"
                )))
                .bind(scope)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM oauth_scopes WHERE name = $1")
                .bind(scope)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }
        Change::ScopeDelegation {
            gateway,
            scope,
            supplier,
        } => {
            let consumer = gateway.owner();
            let found = find_scope(s, scope).await?;
            let Some(found) = found else {
                return Err(StoreError::NotFound(format!("scope {scope}")));
            };
            if !found.delegable {
                return Err(StoreError::Invalid(format!(
                    "scope {scope} may not be delegated"
                )));
            }
            if !may_get(s, &found, &ClientId::Member(consumer.clone())) {
                return Err(StoreError::Invalid(format!(
                    "{consumer} does not hold scope {scope}, so cannot delegate it"
                )));
            }
            sqlx::query(
                "INSERT INTO oauth_delegations (scope, consumer, supplier, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (scope, consumer, supplier) DO NOTHING",
            )
            .bind(scope)
            .bind(consumer.to_string())
            .bind(supplier.to_string())
            .bind(s.clock.now_ms())
            .execute(pool)
            .await?;
            Ok(())
        }
        Change::ScopeDelegationWithdrawal {
            gateway,
            scope,
            supplier,
        } => {
            let done = sqlx::query(
                "DELETE FROM oauth_delegations WHERE scope = $1 AND consumer = $2 AND supplier = $3",
            )
            .bind(scope)
            .bind(gateway.owner().to_string())
            .bind(supplier.to_string())
            .execute(pool)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!(
                    "delegation of {scope} by {} to {supplier}",
                    gateway.owner()
                )));
            }
            Ok(())
        }
        other => Err(StoreError::Invalid(format!(
            "{} is not a scope change",
            other.kind()
        ))),
    }
}

/// A prefix belongs to the member that registered a scope with it first.
async fn check_prefix(s: &AppState, scope: &str, owner: &str) -> Result<(), StoreError> {
    let prefix = scope.split_once(':').map_or(scope, |(p, _)| p);
    // Compared here, not with LIKE: `_` and `%` are legal in scope names and are
    // LIKE's wildcards.
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, owner FROM oauth_scopes WHERE owner <> $1")
            .bind(owner)
            .fetch_all(s.registry.db().pool())
            .await?;
    match rows
        .iter()
        .find(|(name, _)| name.split_once(':').map(|(p, _)| p) == Some(prefix))
    {
        Some((name, other)) => Err(StoreError::Conflict(format!(
            "the prefix {prefix:?} belongs to {other} (scope {name})"
        ))),
        None => Ok(()),
    }
}

async fn owned_scope(s: &AppState, scope: &str, owner: &MemberId) -> Result<(), StoreError> {
    match find_scope(s, scope).await? {
        Some(found) if found.owner == owner.to_string() => Ok(()),
        Some(found) => Err(StoreError::Conflict(format!(
            "scope {scope} belongs to {}",
            found.owner
        ))),
        None => Err(StoreError::NotFound(format!("scope {scope}"))),
    }
}

/// A registered scope.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScopeDto {
    /// The scope.
    pub name: String,
    /// The member that owns the API.
    pub owner: String,
    /// What it gives access to.
    pub description: String,
    /// Whether consumers may delegate it.
    pub delegable: bool,
    /// Who may get it.
    pub consumers: Vec<String>,
}

async fn find_scope(s: &AppState, name: &str) -> Result<Option<ScopeDto>, StoreError> {
    let pool = s.registry.db().pool();
    let row: Option<(String, String, i64)> =
        sqlx::query_as("SELECT owner, description, delegable FROM oauth_scopes WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    let Some((owner, description, delegable)) = row else {
        return Ok(None);
    };
    let consumers = sqlx::query_as::<_, (String,)>(
        "SELECT grantee FROM oauth_scope_grantees WHERE scope = $1 ORDER BY grantee",
    )
    .bind(name)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| r.0)
    .collect();
    Ok(Some(ScopeDto {
        name: name.to_owned(),
        owner,
        description,
        delegable: delegable != 0,
        consumers,
    }))
}

/// Whether `client` may get `scope`: the owner may; a grantee names the client, its
/// member, or a global group either is in.
fn may_get(s: &AppState, scope: &ScopeDto, client: &ClientId) -> bool {
    let member = client.member().to_string();
    if scope.owner == member {
        return true;
    }
    let published = s.published();
    scope.consumers.iter().any(|g| match g.parse::<Grantee>() {
        Ok(Grantee::Client(c)) => &c == client || c == ClientId::Member(client.member().clone()),
        Ok(Grantee::Group(id)) => published.conf.global_groups.iter().any(|group| {
            group.id == id
                && group
                    .members
                    .iter()
                    .any(|m| m == client || *m == ClientId::Member(client.member().clone()))
        }),
        Err(_) => false,
    })
}

// === The token endpoint ===

/// A client whose signed assertion checked out.
struct Authenticated {
    client: ClientId,
    claims: AssertionClaims,
}

/// Resolves the assertion's key, verifies it and checks its claims; the client must
/// be a registered member or subsystem whose signing certificate signed it.
async fn authenticate(s: &AppState, assertion: &str) -> Result<Authenticated, OAuthError> {
    let parsed = ParsedAssertion::parse(assertion)?;
    let unverified = parsed.unverified_claims()?;
    if unverified.iss.is_empty() {
        return Err(AssertionError::MissingClaim("iss").into());
    }
    let client: ClientId = unverified.iss.parse().map_err(|e| {
        OAuthError::new(
            "invalid_grant",
            format!("iss must be the client's member or subsystem identifier: {e}"),
        )
    })?;
    let now = i64::try_from(s.clock.now_secs()).unwrap_or(i64::MAX);
    let member = client.member();
    let cert = match parsed.key() {
        KeyRef::Chain(chain) => {
            let roots = s.published_roots().map_err(OAuthError::server)?;
            roots
                .verify_member_signing(chain, member, now.unsigned_abs())
                .map_err(|e| {
                    OAuthError::new(
                        "invalid_grant",
                        format!("x5c is not a valid signing certificate of {member}: {e}"),
                    )
                })?
        }
        KeyRef::Kid(kid) => registered_key(s, kid, member, now).await?,
    };
    if let Some(revoked_at) = s.registry.revoked_at(&cert.sha256).await? {
        return Err(OAuthError::new(
            "invalid_grant",
            format!(
                "the signing certificate {} was revoked at {}",
                cert.sha256,
                veksel_proto::rfc3339(revoked_at)
            ),
        ));
    }
    let claims = parsed.verify(&cert.public_key, s.issuer(), now)?;
    if !client_registered(s, &client) {
        return Err(OAuthError::new(
            "invalid_grant",
            format!("{client} is not a registered member or subsystem"),
        ));
    }
    Ok(Authenticated { client, claims })
}

/// Authenticates a client by its assertion (`private_key_jwt`, RFC 7523 §2.2),
/// spending its `jti`; the client is the assertion's `iss`.
pub(crate) async fn authenticate_client(
    s: &AppState,
    assertion: &str,
) -> Result<ClientId, OAuthError> {
    let caller = authenticate(s, assertion)
        .await
        .map_err(|e| OAuthError::new("invalid_client", e.description().to_owned()))?;
    let mut tx = s
        .registry
        .db()
        .pool()
        .begin()
        .await
        .map_err(StoreError::from)?;
    use_jti(&mut tx, &caller.client, &caller.claims)
        .await
        .map_err(|e| OAuthError::new("invalid_client", e.description().to_owned()))?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(caller.client)
}

/// A `kid` names a signing certificate this authority issued: its SHA-256, hex.
async fn registered_key(
    s: &AppState,
    kid: &str,
    member: &MemberId,
    now: i64,
) -> Result<CertInfo, OAuthError> {
    let unknown = || {
        OAuthError::new(
            "invalid_grant",
            format!(
                "kid {kid:?} is not a signing certificate of {member} issued by this authority"
            ),
        )
    };
    let kid = kid.to_ascii_lowercase();
    if kid.len() != 64 || !kid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    let pem = s
        .registry
        .signing_cert_pem(&kid, &member.to_string())
        .await?
        .ok_or_else(unknown)?;
    let der = certs_from_pem(&pem)
        .map_err(OAuthError::server)?
        .into_iter()
        .next()
        .ok_or_else(unknown)?;
    let roots = veksel_pki::verify::Roots::from_ders(vec![s.ca.cert_der().to_vec()])
        .map_err(OAuthError::server)?;
    roots
        .verify_member_signing(&[der], member, now.unsigned_abs())
        .map_err(|e| OAuthError::new("invalid_grant", format!("kid {kid}: {e}")))
}

fn client_registered(s: &AppState, client: &ClientId) -> bool {
    let published = s.published();
    published.conf.members.iter().any(|m| {
        &m.id == client.member()
            && client
                .as_subsystem()
                .is_none_or(|sub| m.subsystems.iter().any(|x| x.code == sub.code()))
    })
}

/// Uses the assertion's `jti` once per client; remembered until the assertion
/// expires (plus the skew), so it cannot be replayed inside its window.
async fn use_jti(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    client: &ClientId,
    claims: &AssertionClaims,
) -> Result<(), OAuthError> {
    let done = sqlx::query(
        "INSERT INTO oauth_assertions (client, jti, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (client, jti) DO NOTHING",
    )
    .bind(client.to_string())
    .bind(&claims.jti)
    .bind(
        claims
            .exp
            .unwrap_or_default()
            .saturating_add(MAX_CLOCK_SKEW_SECS),
    )
    .execute(&mut **tx)
    .await
    .map_err(StoreError::from)?;
    if done.rows_affected() == 0 {
        return Err(OAuthError::new(
            "invalid_grant",
            format!("the assertion's jti {:?} has been used before", claims.jti),
        ));
    }
    Ok(())
}

/// What the grant asks for, from the assertion and the form.
struct Asked {
    scopes: Vec<String>,
    resources: Vec<String>,
}

fn asked(claims: &AssertionClaims, form: &Form) -> Result<Asked, OAuthError> {
    let scope = match (claims.scope.as_str(), form.get("scope")) {
        ("", None) | ("", Some("")) => {
            return Err(OAuthError::new("invalid_scope", "no scope asked for"));
        }
        (claim, Some(param)) if !claim.is_empty() && !param.is_empty() && claim != param => {
            return Err(OAuthError::new(
                "invalid_request",
                "the scope parameter and the assertion's scope claim differ",
            ));
        }
        ("", Some(param)) => param.to_owned(),
        (claim, _) => claim.to_owned(),
    };
    let scopes = scopes(&scope)?.into_iter().map(str::to_owned).collect();
    let mut resources = form.all("resource");
    if let Some(r) = &claims.resource {
        for v in r.values() {
            if !resources.contains(&v) {
                resources.push(v);
            }
        }
    }
    if resources.len() > MAX_RESOURCES {
        return Err(OAuthError::new(
            "invalid_target",
            format!("at most {MAX_RESOURCES} resources"),
        ));
    }
    for r in &resources {
        if r.is_empty()
            || r.len() > MAX_RESOURCE_LEN
            || r.bytes().any(|b| !(0x21..=0x7e).contains(&b))
        {
            return Err(OAuthError::new(
                "invalid_target",
                format!(
                    "{r:?} is not a resource indicator (1 to {MAX_RESOURCE_LEN} visible ASCII characters)"
                ),
            ));
        }
    }
    Ok(Asked { scopes, resources })
}

/// The JWT-bearer grant (RFC 7523 §2.1) at the token endpoint.
pub(crate) async fn jwt_bearer_grant(s: &AppState, form: &Form) -> Result<Response, OAuthError> {
    let Authenticated { client, claims } = authenticate(s, form.required("assertion")?).await?;
    let asked = asked(&claims, form)?;
    let (consumer, supplier) = match &claims.consumer_org {
        Some(org) if org != &client.member().to_string() => {
            let consumer: MemberId = org.parse().map_err(|e| {
                OAuthError::new("invalid_request", format!("consumer_org {org:?}: {e}"))
            })?;
            (consumer, Some(client.member().clone()))
        }
        _ => (client.member().clone(), None),
    };
    let mut owners = BTreeSet::new();
    for name in &asked.scopes {
        let scope = find_scope(s, name)
            .await?
            .ok_or_else(|| OAuthError::new("invalid_scope", format!("unknown scope {name}")))?;
        match &supplier {
            None => {
                if !may_get(s, &scope, &client) {
                    return Err(OAuthError::new(
                        "invalid_scope",
                        format!("scope {name} is not granted to {client}"),
                    ));
                }
            }
            Some(supplier) => {
                if !may_get(s, &scope, &ClientId::Member(consumer.clone())) {
                    return Err(OAuthError::new(
                        "invalid_scope",
                        format!("scope {name} is not granted to {consumer}"),
                    ));
                }
                if !scope.delegable || !delegated(s, name, &consumer, supplier).await? {
                    return Err(OAuthError::new(
                        "invalid_grant",
                        format!("{consumer} has not delegated scope {name} to {supplier}"),
                    ));
                }
            }
        }
        owners.insert(scope.owner);
    }
    if let Some(details) = &claims.authorization_details
        && details.to_string().len() > MAX_AUTHORIZATION_DETAILS
    {
        return Err(OAuthError::new(
            "invalid_authorization_details",
            format!("authorization_details is larger than {MAX_AUTHORIZATION_DETAILS} bytes"),
        ));
    }
    let aud = if asked.resources.is_empty() {
        owners.into_iter().collect()
    } else {
        asked.resources
    };
    let now = i64::try_from(s.clock.now_secs()).unwrap_or(i64::MAX);
    let lifetime = s.config.token_lifetime_secs();
    let access = AccessTokenClaims {
        iss: s.issuer().to_owned(),
        sub: client.to_string(),
        client_id: client.to_string(),
        consumer: consumer.to_string(),
        supplier: supplier.as_ref().map(ToString::to_string),
        scope: asked.scopes.join(" "),
        aud: if aud.len() == 1 {
            OneOrMany::One(aud[0].clone())
        } else {
            OneOrMany::Many(aud.clone())
        },
        iat: now,
        exp: now + lifetime,
        jti: uuid::Uuid::new_v4().to_string(),
        authorization_details: claims.authorization_details.clone(),
    };
    let (kid, signer) = s
        .token_keys
        .signer()
        .ok_or_else(|| OAuthError::server("no token-signing key"))?;
    let payload = serde_json::to_vec(&access).map_err(OAuthError::server)?;
    let jwt = veksel_proto::jws::sign_jwt(signer.as_ref(), &kid, ACCESS_TOKEN_TYP, &payload)
        .map_err(OAuthError::server)?;
    let mut tx = s
        .registry
        .db()
        .pool()
        .begin()
        .await
        .map_err(StoreError::from)?;
    use_jti(&mut tx, &client, &claims).await?;
    sqlx::query(
        "INSERT INTO oauth_tokens (jti, client_id, consumer, supplier, scope, aud, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&access.jti)
    .bind(&access.client_id)
    .bind(&access.consumer)
    .bind(access.supplier.as_deref())
    .bind(&access.scope)
    .bind(aud.join(" "))
    .bind(now * 1000)
    .bind(access.exp * 1000)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from)?;
    tx.commit().await.map_err(StoreError::from)?;
    s.metrics.tokens_issued.inc();
    let mut r = Json(TokenResponse {
        access_token: jwt,
        token_type: "Bearer".into(),
        expires_in: lifetime,
        scope: access.scope,
    })
    .into_response();
    no_store(r.headers_mut());
    Ok(r)
}

async fn delegated(
    s: &AppState,
    scope: &str,
    consumer: &MemberId,
    supplier: &MemberId,
) -> Result<bool, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT created_at FROM oauth_delegations WHERE scope = $1 AND consumer = $2 AND supplier = $3",
    )
    .bind(scope)
    .bind(consumer.to_string())
    .bind(supplier.to_string())
    .fetch_optional(s.registry.db().pool())
    .await?;
    Ok(row.is_some())
}

// === Introspection ===

#[utoipa::path(post, path = "/oauth/v1/introspect", security(()), request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "token=<access token>&client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=<JWT>"), responses((status = 200, description = "RFC 7662 answer; active false for a token the caller may not see"), (status = 401, description = "invalid_client")))]
async fn introspect(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = Form::parse(&headers, &body)?;
    if form.required("client_assertion_type")? != CLIENT_ASSERTION_TYPE {
        return Err(OAuthError::new(
            "invalid_client",
            format!("client_assertion_type must be {CLIENT_ASSERTION_TYPE}"),
        ));
    }
    let caller = authenticate_client(&s, form.required("client_assertion")?).await?;
    let token = form.required("token")?;
    let now = i64::try_from(s.clock.now_secs()).unwrap_or(i64::MAX);
    let keys = s.token_keys.jwks().keys;
    let inactive = || {
        let mut r = Json(serde_json::json!({"active": false})).into_response();
        no_store(r.headers_mut());
        r
    };
    let Ok(claims) = veksel_proto::oauth::verify_access_token(token, &keys, s.issuer(), now) else {
        return Ok(inactive());
    };
    if claims.exp <= now || revoked(&s, &claims).await? {
        return Ok(inactive());
    }
    // Only a party the token is for learns what it says: an owner of one of its
    // scopes, or a member its audience names.
    let caller_member = caller.member().to_string();
    let mut entitled = claims
        .aud
        .values()
        .iter()
        .any(|a| a == &caller_member || a.starts_with(&format!("{caller_member}/")));
    for name in claims.scopes() {
        if entitled {
            break;
        }
        entitled = find_scope(&s, name)
            .await?
            .is_some_and(|sc| sc.owner == caller_member);
    }
    if !entitled {
        return Ok(inactive());
    }
    let mut answer = serde_json::to_value(&claims).map_err(OAuthError::server)?;
    if let Some(fields) = answer.as_object_mut() {
        fields.insert("active".into(), true.into());
        fields.insert("token_type".into(), "Bearer".into());
    }
    let mut r = Json(answer).into_response();
    no_store(r.headers_mut());
    Ok(r)
}

async fn revoked(s: &AppState, claims: &AccessTokenClaims) -> Result<bool, StoreError> {
    let client_member = claims
        .client_id
        .parse::<ClientId>()
        .map(|c| c.member().to_string())
        .unwrap_or_default();
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT issued_before FROM oauth_revocations WHERE member = $1 OR member = $2",
    )
    .bind(client_member)
    .bind(&claims.consumer)
    .fetch_all(s.registry.db().pool())
    .await?;
    Ok(rows.iter().any(|(before,)| claims.iat <= *before))
}

// === Metadata and keys ===

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", security(()), responses((status = 200, description = "RFC 8414 authorization server metadata")))]
async fn metadata(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let base = &s.config.public_url;
    Json(serde_json::json!({
        "issuer": s.issuer(),
        "token_endpoint": format!("{base}/oauth/v1/token"),
        "jwks_uri": format!("{base}/oauth/v1/jwks"),
        "introspection_endpoint": format!("{base}/oauth/v1/introspect"),
        "grant_types_supported": [JWT_BEARER_GRANT],
        "response_types_supported": ["token"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "authorization_details_types_supported": [],
    }))
}

#[utoipa::path(get, path = "/oauth/v1/jwks", security(()), responses((status = 200, description = "The token-signing keys (RFC 7517)")))]
async fn jwks(State(s): State<Arc<AppState>>) -> Response {
    let mut r = Json(s.token_keys.jwks()).into_response();
    // Short enough that a rotated key is seen before it signs.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    r
}

// === Admin ===

#[utoipa::path(get, path = "/api/v1/oauth/scopes", responses((status = 200, body = Vec<ScopeDto>)))]
async fn list_scopes(
    State(s): State<Arc<AppState>>,
    Authorized(_): Authorized<ObserverRole>,
) -> ApiResult<Json<Vec<ScopeDto>>> {
    let names: Vec<(String,)> = sqlx::query_as("SELECT name FROM oauth_scopes ORDER BY name")
        .fetch_all(s.registry.db().pool())
        .await
        .map_err(StoreError::from)?;
    let mut out = Vec::with_capacity(names.len());
    for (name,) in names {
        if let Some(scope) = find_scope(&s, &name).await? {
            out.push(scope);
        }
    }
    Ok(Json(out))
}

/// An issued token as logged (never the token).
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedTokenDto {
    /// The token's id.
    pub jti: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The member it acts for.
    pub consumer: String,
    /// The supplier acting under a delegation.
    pub supplier: Option<String>,
    /// Granted scopes.
    pub scope: String,
    /// Audience, space-separated.
    pub aud: String,
    /// When, RFC 3339.
    pub issued_at: String,
    /// Until, RFC 3339.
    pub expires_at: String,
}

/// Filter of the token log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TokenLogQuery {
    /// Only tokens of this consumer member.
    pub consumer: Option<String>,
    /// Most rows (default 100, at most 1000).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/oauth/tokens", params(TokenLogQuery), responses((status = 200, body = Vec<IssuedTokenDto>)))]
async fn token_log(
    State(s): State<Arc<AppState>>,
    Authorized(_): Authorized<ObserverRole>,
    Query(q): Query<TokenLogQuery>,
) -> ApiResult<Json<Vec<IssuedTokenDto>>> {
    let rows = sqlx::query(
        "SELECT jti, client_id, consumer, supplier, scope, aud, issued_at, expires_at FROM oauth_tokens
         WHERE ($1 = '' OR consumer = $1) ORDER BY issued_at DESC, jti LIMIT $2",
    )
    .bind(q.consumer.unwrap_or_default())
    .bind(q.limit.unwrap_or(100).clamp(1, 1000))
    .fetch_all(s.registry.db().pool())
    .await
    .map_err(StoreError::from)?;
    let out = rows
        .iter()
        .map(|r| {
            Ok(IssuedTokenDto {
                jti: r.try_get(0)?,
                client_id: r.try_get(1)?,
                consumer: r.try_get(2)?,
                supplier: r.try_get(3)?,
                scope: r.try_get(4)?,
                aud: r.try_get(5)?,
                issued_at: veksel_proto::rfc3339(r.try_get(6)?),
                expires_at: veksel_proto::rfc3339(r.try_get(7)?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(StoreError::from)?;
    Ok(Json(out))
}

/// How to rotate the token-signing key.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// Seconds until the new key signs (default: twice the configuration refresh
    /// interval, so every gateway has it before the first token it signs).
    pub activate_in_secs: Option<u64>,
    /// Withdraw the current key at once, for a key that is compromised: the new key
    /// signs at once (`activate_in_secs` is ignored), and the old key's tokens stop
    /// verifying as soon as gateways have the new configuration.
    #[serde(default)]
    pub withdraw_current: bool,
}

/// The published keys and which one signs.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeysDto {
    /// The key that signs now.
    pub signing_kid: Option<String>,
    /// The published keys.
    #[schema(value_type = Object)]
    pub jwks: Jwks,
}

fn keys_dto(s: &AppState) -> KeysDto {
    KeysDto {
        signing_kid: s.token_keys.signer().map(|(kid, _)| kid),
        jwks: s.token_keys.jwks(),
    }
}

#[utoipa::path(get, path = "/api/v1/oauth/keys", responses((status = 200, body = KeysDto)))]
async fn list_keys(
    State(s): State<Arc<AppState>>,
    Authorized(_): Authorized<ObserverRole>,
) -> Json<KeysDto> {
    Json(keys_dto(&s))
}

#[utoipa::path(post, path = "/api/v1/oauth/keys/rotate", request_body = RotateRequest, responses((status = 200, body = KeysDto)))]
async fn rotate_keys(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<AdminRole>,
    body: Option<Json<RotateRequest>>,
) -> ApiResult<Json<KeysDto>> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let now = s.clock.now_ms();
    // A withdrawn key must not sign another token, so its successor signs at once.
    let delay = if b.withdraw_current {
        0
    } else {
        b.activate_in_secs
            .unwrap_or(2 * s.config.settings.refresh_interval_secs)
            .min(7 * 24 * 3600)
    };
    let active_from = now + i64::try_from(delay).unwrap_or(0) * 1000;
    let db = s.registry.db();
    let previous = s.token_keys.signer().map(|(kid, _)| kid);
    let jwk = s
        .token_keys
        .create(db, active_from)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(kid) = &previous {
        sqlx::query("UPDATE oauth_keys SET retired_at = $1, withdrawn = $2 WHERE kid = $3")
            .bind(active_from)
            .bind(i64::from(b.withdraw_current))
            .bind(kid)
            .execute(db.pool())
            .await
            .map_err(StoreError::from)?;
    }
    s.token_keys
        .refresh(db, now)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    changed(
        &s,
        &who,
        "oauth.key.rotate",
        &jwk.kid,
        serde_json::json!({"previous": previous, "active_from_ms": active_from, "withdraw_current": b.withdraw_current}),
    )
    .await?;
    Ok(Json(keys_dto(&s)))
}

/// Whose tokens to revoke.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokensRequest {
    /// The member: tokens it got, or that act for it, issued until now.
    pub member: String,
}

#[utoipa::path(post, path = "/api/v1/oauth/revocations", request_body = RevokeTokensRequest, responses((status = 204), (status = 404)))]
async fn revoke_tokens(
    State(s): State<Arc<AppState>>,
    Authorized(who): Authorized<RegistrationOfficerRole>,
    Json(b): Json<RevokeTokensRequest>,
) -> ApiResult<StatusCode> {
    let member: MemberId = veksel_admin::path_id(&b.member, "member id")?;
    s.registry.member(&member).await?;
    revoke_member_tokens(&s, &member).await?;
    changed(
        &s,
        &who,
        "oauth.tokens.revoke",
        &member.to_string(),
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Routes of the token service.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/oauth/v1/introspect", post(introspect))
        .route("/oauth/v1/jwks", get(jwks))
        .route("/api/v1/oauth/scopes", get(list_scopes))
        .route("/api/v1/oauth/tokens", get(token_log))
        .route("/api/v1/oauth/keys", get(list_keys))
        .route("/api/v1/oauth/keys/rotate", post(rotate_keys))
        .route("/api/v1/oauth/revocations", post(revoke_tokens))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    introspect,
    metadata,
    jwks,
    list_scopes,
    token_log,
    list_keys,
    rotate_keys,
    revoke_tokens
))]
pub(crate) struct OAuthDoc;

/// Forgets used assertion ids once their assertions have expired, and the token
/// log's records once they are older than its retention (process state is kept for
/// accountability, not for ever).
pub async fn purge(s: &AppState) -> Result<(), StoreError> {
    let now = i64::try_from(s.clock.now_secs()).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM oauth_assertions WHERE expires_at < $1")
        .bind(now)
        .execute(s.registry.db().pool())
        .await?;
    let retention_days = i64::try_from(s.config.token_log_retention_days.unwrap_or(365))
        .unwrap_or(i64::MAX / 86_400_000);
    let keep_after_ms = now
        .saturating_mul(1000)
        .saturating_sub(retention_days.saturating_mul(86_400_000));
    sqlx::query("DELETE FROM oauth_tokens WHERE expires_at < $1")
        .bind(keep_after_ms)
        .execute(s.registry.db().pool())
        .await?;
    Ok(())
}
