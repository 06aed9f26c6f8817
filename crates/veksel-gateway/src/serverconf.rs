//! The gateway's own configuration (X-Road: serverconf): which subsystems it hosts,
//! how their information systems authenticate, which services they provide, who may
//! call them, and how much of each exchange the message log keeps.
//!
//! Stored in the database so that several gateway nodes sharing one PostgreSQL serve
//! one gateway identity; each node keeps an in-memory snapshot that it reloads when
//! the version row changes.

use crate::ledger::ConfigChange;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use utoipa::ToSchema;
use veksel_id::{ClientId, MemberId, SubsystemId};
use veksel_proto::access::{AccessRule, Endpoint};
use veksel_store::{Db, StoreError, sqlx};

/// How much of each exchange the message log keeps for a subsystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogMode {
    /// Signed descriptors and bodies (up to the configured size).
    Full,
    /// Signed descriptors (with body digests), no bodies.
    #[default]
    Metadata,
    /// Nothing in the message log (operational monitoring still records the exchange).
    Off,
}

impl LogMode {
    fn as_str(self) -> &'static str {
        match self {
            LogMode::Full => "full",
            LogMode::Metadata => "metadata",
            LogMode::Off => "off",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(LogMode::Full),
            "metadata" => Some(LogMode::Metadata),
            "off" => Some(LogMode::Off),
            _ => None,
        }
    }
}

/// Settings of a hosted subsystem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// Message log mode.
    #[serde(default)]
    pub log_mode: LogMode,
    /// Information systems on the gateway's own machine may act as this subsystem
    /// over plain HTTP on the loopback interface.
    #[serde(default)]
    pub allow_loopback_http: bool,
    /// SHA-256 (hex) of TLS client certificates with which information systems may
    /// act as this subsystem over HTTPS.
    #[serde(default)]
    pub is_cert_sha256: Vec<String>,
    /// Services for whose calls the gateway gets an access token itself, signed with
    /// the member's key, when the information system sends none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenRule>,
}

/// The gateway gets a token with `scope` for calls of this subsystem to `service`;
/// the token's audience is the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRule {
    /// The service, `INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE`.
    #[schema(value_type = String)]
    pub service: veksel_id::ServiceId,
    /// The scope to ask for.
    pub scope: String,
    /// Ask as a supplier for this member (`consumer_org`), under its delegation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub consumer_org: Option<MemberId>,
}

/// A REST service provided by a hosted subsystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Base URL of the provider's information system (`http://` or `https://`).
    pub base_url: String,
    /// Time allowed for the provider's answer to start, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Disabled services refuse calls with `ServiceDisabled`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// OpenAPI 3 description (JSON or YAML text), served by `getOpenAPI`; its paths
    /// become the service's endpoints when `endpoints` is empty.
    #[serde(default)]
    pub openapi: Option<String>,
    /// Endpoints (method and path pattern) listed by `listMethods`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub endpoints: Vec<Endpoint>,
    /// Scopes a caller's access token must have (`Authorization: Bearer`), each on
    /// the whole service or on some of its endpoints; checked on top of access rights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<RequiredScope>,
    /// Calls must come for a person verified at this level or above (`substantial`
    /// or `high`): the caller's ID token, checked by both gateways. Without it a
    /// service takes `X-Road-UserId` as the unverified claim it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub person_level: Option<veksel_proto::person::Level>,
    /// Where a request names the person it is about (`{"path_segment": 0}` or
    /// `{"query": "pid"}`): the log then keeps a salted hash of that number, by which
    /// the person finds who looked them up (the citizens' data tracker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub about_person: Option<PersonParam>,
}

/// Where a request names the person it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PersonParam {
    /// The n-th segment (from 0) of the path after the service code.
    PathSegment(usize),
    /// A query parameter.
    Query(String),
}

impl PersonParam {
    /// The person number a request names, if it names one that could be one (1 to 64
    /// visible ASCII characters).
    pub fn person(&self, segments: &[String], query: Option<&str>) -> Option<String> {
        let value = match self {
            Self::PathSegment(i) => segments.get(*i).cloned(),
            Self::Query(name) => form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned()),
        }?;
        let ok = !value.is_empty()
            && value.len() <= veksel_proto::person::MAX_PERSON_ID_LEN
            && value.bytes().all(|b| b.is_ascii_graphic());
        ok.then_some(value)
    }
}

/// A scope a service requires of the access tokens its callers present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequiredScope {
    /// The scope, registered at the network's token service.
    pub scope: String,
    /// The endpoints it is required on; the whole service when empty.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub endpoints: Vec<Endpoint>,
}

impl ServiceConfig {
    /// The scopes a call of `method` on `segments` needs.
    pub fn scopes_for(&self, method: &str, segments: &[String]) -> Vec<&str> {
        self.scopes
            .iter()
            .filter(|r| {
                r.endpoints.is_empty() || r.endpoints.iter().any(|e| e.matches(method, segments))
            })
            .map(|r| r.scope.as_str())
            .collect()
    }
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_true() -> bool {
    true
}

/// A local group of a hosted subsystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalGroup {
    /// Description.
    pub description: String,
    /// Members.
    #[schema(value_type = Vec<String>)]
    pub members: Vec<ClientId>,
}

/// Everything the gateway knows about one hosted subsystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalClient {
    /// The subsystem.
    #[schema(value_type = String)]
    pub id: SubsystemId,
    /// Its settings.
    pub settings: ClientSettings,
    /// Services it provides, by service code.
    pub services: BTreeMap<String, ServiceConfig>,
    /// Who may call its services.
    #[schema(value_type = Vec<Object>)]
    pub access: Vec<AccessRule>,
    /// Its local groups, by code.
    pub local_groups: BTreeMap<String, LocalGroup>,
}

impl LocalClient {
    /// Local groups of this subsystem that contain `client`.
    pub fn local_groups_of(&self, client: &ClientId) -> Vec<String> {
        self.local_groups
            .iter()
            .filter(|(_, g)| g.members.contains(client))
            .map(|(code, _)| code.clone())
            .collect()
    }
}

/// A snapshot of the whole local configuration.
#[derive(Debug, Clone, Default)]
pub struct ServerConf {
    /// Version of the snapshot (increases on every change).
    pub version: i64,
    /// Hosted subsystems.
    pub clients: BTreeMap<SubsystemId, LocalClient>,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn parse_json<T: for<'de> Deserialize<'de>>(s: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Validates a service configuration before it is stored.
pub fn validate_service(code: &str, s: &ServiceConfig) -> Result<(), String> {
    veksel_id::validate_part("service", 4, code).map_err(|e| e.to_string())?;
    if veksel_proto::r1::Metaservice::from_code(code).is_some() {
        return Err(format!("{code} is a reserved metaservice code"));
    }
    let url: http::Uri = s.base_url.parse().map_err(|e| format!("base_url: {e}"))?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("base_url must be an http:// or https:// URL".into()),
    }
    if url.host().is_none() {
        return Err("base_url has no host".into());
    }
    if url.query().is_some() {
        return Err("base_url must not have a query".into());
    }
    if s.timeout_ms == 0 || s.timeout_ms > 3_600_000 {
        return Err("timeout_ms must be between 1 and 3600000".into());
    }
    for e in &s.endpoints {
        let m = e.method.as_str();
        if m != "*" && http::Method::from_bytes(m.as_bytes()).is_err() {
            return Err(format!("endpoint method {m:?} is not an HTTP method"));
        }
        if !e.path.starts_with('/') {
            return Err(format!("endpoint path {:?} must start with '/'", e.path));
        }
    }
    if let Some(doc) = &s.openapi
        && doc.len() > 4 * 1024 * 1024
    {
        return Err("openapi description is larger than 4 MiB".into());
    }
    if s.scopes.len() > 32 {
        return Err("at most 32 required scopes per service".into());
    }
    match &s.about_person {
        Some(PersonParam::PathSegment(i)) if *i >= 32 => {
            return Err(format!(
                "about_person: path segment {i} is past the 32 a path may name"
            ));
        }
        Some(PersonParam::Query(name))
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            return Err(format!(
                "about_person: query parameter {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
            ));
        }
        _ => {}
    }
    for r in &s.scopes {
        veksel_proto::management::validate_scope_name(&r.scope)?;
        if r.endpoints.iter().any(|e| !e.path.starts_with('/')) {
            return Err(format!(
                "an endpoint of scope {} must start with '/'",
                r.scope
            ));
        }
    }
    Ok(())
}

/// Refuses access rules that could never match: a path that does not start with
/// `/`, a method that is not `*` or an HTTP method, a malformed service code.
pub fn validate_access(rules: &[AccessRule]) -> Result<(), String> {
    for r in rules {
        if !r.endpoint.path.starts_with('/') {
            return Err(format!(
                "endpoint path {:?} must start with '/'",
                r.endpoint.path
            ));
        }
        let m = &r.endpoint.method;
        if m != "*" && (m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic())) {
            return Err(format!("method {m:?} is not * or an HTTP method"));
        }
        veksel_id::validate_part("service", 4, &r.service_code).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Endpoints named in an OpenAPI 3 JSON description (`paths` × methods), with
/// `{param}` path templates turned into `*`.
pub fn endpoints_from_openapi(doc: &str) -> Vec<Endpoint> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(doc) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(paths) = v.get("paths").and_then(|p| p.as_object()) {
        for (path, item) in paths {
            let pattern: String = path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') && seg.ends_with('}') {
                        "*"
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            if let Some(ops) = item.as_object() {
                for method in [
                    "get", "put", "post", "delete", "options", "head", "patch", "trace",
                ] {
                    if ops.contains_key(method) {
                        out.push(Endpoint {
                            method: method.to_ascii_uppercase(),
                            path: pattern.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// Reads and writes the local configuration and keeps the snapshot current.
#[derive(Debug, Clone)]
pub struct ServerConfStore {
    db: Db,
    snapshot: Arc<RwLock<Arc<ServerConf>>>,
    /// One reload at a time: a periodic reload that read the tables before a change
    /// committed could otherwise install its older snapshot after the change's own
    /// reload installed the new one.
    reloading: Arc<tokio::sync::Mutex<()>>,
}

impl ServerConfStore {
    /// Loads the snapshot from the database.
    pub async fn load(db: Db) -> Result<Self, StoreError> {
        let store = Self {
            db,
            snapshot: Arc::new(RwLock::new(Arc::new(ServerConf::default()))),
            reloading: Arc::new(tokio::sync::Mutex::new(())),
        };
        store.reload().await?;
        Ok(store)
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<ServerConf> {
        match self.snapshot.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    async fn stored_version(&self) -> Result<i64, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM serverconf_version WHERE id = 1")
                .fetch_optional(self.db.pool())
                .await?;
        Ok(row.map_or(0, |r| r.0))
    }

    /// Reloads the snapshot if another node (or this one) changed the configuration.
    pub async fn reload_if_changed(&self) -> Result<(), StoreError> {
        if self.stored_version().await? != self.current().version {
            self.reload().await?;
        }
        Ok(())
    }

    /// Reloads the snapshot from the database.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        let version = self.stored_version().await?;
        let mut clients = BTreeMap::new();
        let rows: Vec<(String, String, i64, String, String)> = sqlx::query_as(
            "SELECT id, log_mode, allow_loopback_http, is_cert_sha256, tokens FROM local_clients",
        )
        .fetch_all(self.db.pool())
        .await?;
        for (id, mode, loopback, certs, tokens) in rows {
            let sid: SubsystemId = id
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("client {id}: {e}")))?;
            clients.insert(
                sid.clone(),
                LocalClient {
                    id: sid,
                    settings: ClientSettings {
                        log_mode: LogMode::parse(&mode)
                            .ok_or_else(|| StoreError::Corrupt(format!("log mode {mode}")))?,
                        allow_loopback_http: loopback != 0,
                        is_cert_sha256: parse_json(&certs, "is_cert_sha256")?,
                        tokens: parse_json(&tokens, "token rules")?,
                    },
                    services: BTreeMap::new(),
                    access: Vec::new(),
                    local_groups: BTreeMap::new(),
                },
            );
        }
        type ServiceRow = (
            String,
            String,
            String,
            i64,
            i64,
            Option<String>,
            String,
            String,
            Option<String>,
            Option<String>,
        );
        let services: Vec<ServiceRow> = sqlx::query_as(
            "SELECT client_id, code, base_url, timeout_ms, enabled, openapi, endpoints, scopes, person_level, about_person FROM services",
        )
        .fetch_all(self.db.pool())
        .await?;
        for (
            cid,
            code,
            base_url,
            timeout_ms,
            enabled,
            openapi,
            endpoints,
            scopes,
            person_level,
            about_person,
        ) in services
        {
            if let Some(c) = clients.values_mut().find(|c| c.id.to_string() == cid) {
                c.services.insert(
                    code,
                    ServiceConfig {
                        base_url,
                        timeout_ms: u64::try_from(timeout_ms).unwrap_or(30_000),
                        enabled: enabled != 0,
                        openapi,
                        endpoints: parse_json(&endpoints, "endpoints")?,
                        scopes: parse_json(&scopes, "required scopes")?,
                        person_level: match person_level {
                            None => None,
                            Some(l) => Some(veksel_proto::person::Level::from_acr(&l).ok_or_else(
                                || StoreError::Corrupt(format!("person level {l:?}")),
                            )?),
                        },
                        about_person: match about_person {
                            None => None,
                            Some(p) => Some(parse_json(&p, "about_person")?),
                        },
                    },
                );
            }
        }
        let access: Vec<(String, String)> =
            sqlx::query_as("SELECT client_id, rules FROM access_rights")
                .fetch_all(self.db.pool())
                .await?;
        for (cid, rules) in access {
            if let Some(c) = clients.values_mut().find(|c| c.id.to_string() == cid) {
                c.access = parse_json(&rules, "access rules")?;
            }
        }
        let groups: Vec<(String, String, String, String)> =
            sqlx::query_as("SELECT client_id, code, description, members FROM local_groups")
                .fetch_all(self.db.pool())
                .await?;
        for (cid, code, description, members) in groups {
            if let Some(c) = clients.values_mut().find(|c| c.id.to_string() == cid) {
                c.local_groups.insert(
                    code,
                    LocalGroup {
                        description,
                        members: parse_json(&members, "local group members")?,
                    },
                );
            }
        }
        let conf = Arc::new(ServerConf { version, clients });
        match self.snapshot.write() {
            Ok(mut g) => *g = conf,
            Err(p) => *p.into_inner() = conf,
        }
        Ok(())
    }

    async fn bump(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO serverconf_version (id, version) VALUES (1, 1)
             ON CONFLICT (id) DO UPDATE SET version = serverconf_version.version + 1",
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn commit(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Any>,
        change: &ConfigChange,
    ) -> Result<(), StoreError> {
        change.store(&mut tx).await?;
        self.bump(&mut tx).await?;
        tx.commit().await?;
        self.reload().await
    }

    fn require_client(&self, id: &SubsystemId) -> Result<(), StoreError> {
        if self.current().clients.contains_key(id) {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("local client {id}")))
        }
    }

    /// Adds or updates a hosted subsystem.
    pub async fn put_client(
        &self,
        id: &SubsystemId,
        s: &ClientSettings,
        change: &ConfigChange,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO local_clients (id, log_mode, allow_loopback_http, is_cert_sha256, tokens) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET log_mode = excluded.log_mode,
               allow_loopback_http = excluded.allow_loopback_http, is_cert_sha256 = excluded.is_cert_sha256,
               tokens = excluded.tokens",
        )
        .bind(id.to_string())
        .bind(s.log_mode.as_str())
        .bind(i64::from(s.allow_loopback_http))
        .bind(json(&s.is_cert_sha256))
        .bind(json(&s.tokens))
        .execute(&mut *tx)
        .await?;
        self.commit(tx, change).await
    }

    /// Removes a hosted subsystem and everything configured for it.
    pub async fn remove_client(
        &self,
        id: &SubsystemId,
        change: &ConfigChange,
    ) -> Result<(), StoreError> {
        self.require_client(id)?;
        let mut tx = self.db.pool().begin().await?;
        for table in ["services", "access_rights", "local_groups"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE client_id = $1"
            )))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM local_clients WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        self.commit(tx, change).await
    }

    /// Adds or replaces a service.
    pub async fn put_service(
        &self,
        id: &SubsystemId,
        code: &str,
        s: &ServiceConfig,
        change: &ConfigChange,
    ) -> Result<(), StoreError> {
        self.require_client(id)?;
        let mut s = s.clone();
        if s.endpoints.is_empty()
            && let Some(doc) = &s.openapi
        {
            s.endpoints = endpoints_from_openapi(doc);
        }
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO services (client_id, code, base_url, timeout_ms, enabled, openapi, endpoints, scopes, person_level, about_person)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (client_id, code) DO UPDATE SET base_url = excluded.base_url,
               timeout_ms = excluded.timeout_ms, enabled = excluded.enabled,
               openapi = excluded.openapi, endpoints = excluded.endpoints, scopes = excluded.scopes,
               person_level = excluded.person_level, about_person = excluded.about_person",
        )
        .bind(id.to_string())
        .bind(code)
        .bind(&s.base_url)
        .bind(i64::try_from(s.timeout_ms).unwrap_or(30_000))
        .bind(i64::from(s.enabled))
        .bind(s.openapi.clone())
        .bind(json(&s.endpoints))
        .bind(json(&s.scopes))
        .bind(s.person_level.map(|l| l.as_str()))
        .bind(s.about_person.as_ref().map(json))
        .execute(&mut *tx)
        .await?;
        self.commit(tx, change).await
    }

    /// Removes a service.
    pub async fn remove_service(
        &self,
        id: &SubsystemId,
        code: &str,
        change: &ConfigChange,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query("DELETE FROM services WHERE client_id = $1 AND code = $2")
            .bind(id.to_string())
            .bind(code)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("service {id}/{code}")));
        }
        self.commit(tx, change).await
    }

    /// Replaces the access rights of a hosted subsystem.
    pub async fn put_access(
        &self,
        id: &SubsystemId,
        rules: &[AccessRule],
        change: &ConfigChange,
    ) -> Result<(), StoreError> {
        self.require_client(id)?;
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO access_rights (client_id, rules) VALUES ($1, $2)
             ON CONFLICT (client_id) DO UPDATE SET rules = excluded.rules",
        )
        .bind(id.to_string())
        .bind(json(&rules))
        .execute(&mut *tx)
        .await?;
        self.commit(tx, change).await
    }

    /// Adds or replaces a local group.
    pub async fn put_local_group(
        &self,
        id: &SubsystemId,
        code: &str,
        g: &LocalGroup,
        change: &ConfigChange,
    ) -> Result<(), StoreError> {
        self.require_client(id)?;
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO local_groups (client_id, code, description, members) VALUES ($1, $2, $3, $4)
             ON CONFLICT (client_id, code) DO UPDATE SET description = excluded.description, members = excluded.members",
        )
        .bind(id.to_string())
        .bind(code)
        .bind(&g.description)
        .bind(json(&g.members))
        .execute(&mut *tx)
        .await?;
        self.commit(tx, change).await
    }

    /// Removes a local group.
    pub async fn remove_local_group(
        &self,
        id: &SubsystemId,
        code: &str,
        change: &ConfigChange,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query("DELETE FROM local_groups WHERE client_id = $1 AND code = $2")
            .bind(id.to_string())
            .bind(code)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("local group {code} of {id}")));
        }
        self.commit(tx, change).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn outbox_events(db: &Db) -> Vec<(String, String)> {
        sqlx::query_as("SELECT event, subject FROM ledger_outbox ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap()
    }

    /// A change that fails leaves no ledger event, one that succeeds leaves exactly
    /// one. (That the two share one transaction is what `commit` does; a crash between
    /// them cannot be staged here.)
    #[tokio::test]
    async fn failed_changes_leave_no_ledger_event_and_successful_ones_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("g.db"), &Default::default())
            .await
            .unwrap();
        db.migrate("gateway", crate::schema::MIGRATIONS)
            .await
            .unwrap();
        let store = ServerConfStore::load(db.clone()).await.unwrap();
        let id: SubsystemId = "DEV/GOV/1/casework".parse().unwrap();
        let change =
            |event| ConfigChange::new(1, event, id.to_string(), "tester", serde_json::Value::Null);

        // Fails: no such service, no such client.
        assert!(
            store
                .remove_service(&id, "x", &change("service.remove"))
                .await
                .is_err()
        );
        assert!(
            store
                .put_access(&id, &[], &change("access.set"))
                .await
                .is_err()
        );
        assert!(outbox_events(&db).await.is_empty());

        store
            .put_client(&id, &ClientSettings::default(), &change("client.set"))
            .await
            .unwrap();
        store
            .put_access(&id, &[], &change("access.set"))
            .await
            .unwrap();
        assert!(
            store
                .remove_service(&id, "x", &change("service.remove"))
                .await
                .is_err()
        );
        assert_eq!(
            outbox_events(&db).await,
            [
                ("client.set".to_owned(), id.to_string()),
                ("access.set".to_owned(), id.to_string())
            ]
        );
        assert!(store.current().clients.contains_key(&id));
    }

    #[test]
    fn openapi_paths_become_endpoints() {
        let doc = r#"{"openapi":"3.0.0","paths":{"/persons/{id}":{"get":{},"delete":{}},"/persons":{"post":{}}}}"#;
        let eps = endpoints_from_openapi(doc);
        assert!(eps.contains(&Endpoint {
            method: "GET".into(),
            path: "/persons/*".into()
        }));
        assert!(eps.contains(&Endpoint {
            method: "DELETE".into(),
            path: "/persons/*".into()
        }));
        assert!(eps.contains(&Endpoint {
            method: "POST".into(),
            path: "/persons".into()
        }));
        assert!(endpoints_from_openapi("not json").is_empty());
    }

    #[test]
    fn service_validation() {
        let ok = ServiceConfig {
            base_url: "http://127.0.0.1:9000/api".into(),
            timeout_ms: 1000,
            enabled: true,
            openapi: None,
            endpoints: vec![Endpoint::any()],
            scopes: vec![],
            person_level: None,
            about_person: None,
        };
        assert!(validate_service("persons", &ok).is_ok());
        for (param, valid) in [
            (PersonParam::PathSegment(0), true),
            (PersonParam::PathSegment(32), false),
            (PersonParam::Query("pid".into()), true),
            (PersonParam::Query(String::new()), false),
            (PersonParam::Query("p id&x".into()), false),
        ] {
            let s = ServiceConfig {
                about_person: Some(param.clone()),
                ..ok.clone()
            };
            assert_eq!(validate_service("persons", &s).is_ok(), valid, "{param:?}");
        }
        let segments = vec!["0101701234".to_owned(), "x".to_owned()];
        assert_eq!(
            PersonParam::PathSegment(0)
                .person(&segments, None)
                .as_deref(),
            Some("0101701234")
        );
        assert_eq!(PersonParam::PathSegment(2).person(&segments, None), None);
        assert_eq!(
            PersonParam::Query("pid".into())
                .person(&[], Some("a=1&pid=0202802345"))
                .as_deref(),
            Some("0202802345")
        );
        assert_eq!(
            PersonParam::Query("pid".into()).person(&[], Some("pid=has%20space")),
            None,
            "not a person number"
        );
        assert!(validate_service("listMethods", &ok).is_err());
        assert!(validate_service("bad_code", &ok).is_err());
        let mut bad = ok.clone();
        bad.base_url = "file:///etc/passwd".into();
        assert!(validate_service("x", &bad).is_err());
        let mut bad = ok.clone();
        bad.base_url = "http://h/?a=1".into();
        assert!(validate_service("x", &bad).is_err());
        let mut bad = ok;
        bad.endpoints = vec![Endpoint {
            method: "GET".into(),
            path: "nope".into(),
        }];
        assert!(validate_service("x", &bad).is_err());
    }
}
