//! The registry: members, subsystems, gateways, global groups, API tokens and the
//! audit trail of every change, over the node's database.

use crate::model::*;
use std::collections::BTreeMap;
use veksel_id::{ClientId, GatewayId, MemberId, SubsystemId};
use veksel_proto::conf::{self, GlobalConf};
use veksel_store::sqlx::{self, Row};
use veksel_store::{Db, StoreError};

/// An issued certificate, as recorded.
#[derive(Debug, Clone, Copy)]
pub struct IssuedRecord<'a> {
    /// Serial number, hex.
    pub serial: &'a str,
    /// `gateway-auth` or `member-signing`.
    pub profile: &'a str,
    /// The subject's identifier.
    pub subject: &'a str,
    /// SHA-256 of the certificate, hex.
    pub sha256: &'a str,
    /// Expiry, Unix seconds.
    pub not_after: i64,
    /// Issue time, Unix ms.
    pub issued_at_ms: i64,
    /// The certificate, PEM.
    pub pem: &'a str,
}

/// Access to the authority's registry tables.
#[derive(Debug, Clone)]
pub struct Registry {
    db: Db,
    instance: String,
}

/// Result type of registry operations.
pub type Result<T> = std::result::Result<T, StoreError>;

fn not_found(what: impl Into<String>) -> StoreError {
    StoreError::NotFound(what.into())
}

/// Not found unless the statement touched a row.
fn found(done: sqlx::any::AnyQueryResult, what: impl FnOnce() -> String) -> Result<()> {
    if done.rows_affected() == 0 {
        return Err(not_found(what()));
    }
    Ok(())
}

fn conflict_on_unique(e: sqlx::Error, what: &str) -> StoreError {
    let e = StoreError::from(e);
    if e.is_unique_violation() {
        StoreError::Conflict(what.to_owned())
    } else {
        e
    }
}

impl Registry {
    /// Wraps a migrated database.
    pub fn new(db: Db, instance: String) -> Self {
        Self { db, instance }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The instance this authority governs.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Records a governance event. Events later feed the network ledger.
    pub async fn audit(
        &self,
        now_ms: i64,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO audit_events (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)")
            .bind(now_ms)
            .bind(actor)
            .bind(action)
            .bind(subject)
            .bind(detail)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Recent audit events, newest first.
    pub async fn audit_events(&self, limit: i64) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, subject, detail FROM audit_events ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get(0)?,
                    at: veksel_proto::rfc3339(r.try_get(1)?),
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    subject: r.try_get(4)?,
                    detail: r.try_get(5)?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    // === Member classes ===

    /// Adds or updates a member class.
    pub async fn put_member_class(&self, code: &str, description: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO member_classes (code, description) VALUES ($1, $2)
             ON CONFLICT (code) DO UPDATE SET description = excluded.description",
        )
        .bind(code)
        .bind(description)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// All member classes.
    pub async fn member_classes(&self) -> Result<Vec<MemberClassDto>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT code, description FROM member_classes ORDER BY code")
                .fetch_all(self.db.pool())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(code, description)| MemberClassDto { code, description })
            .collect())
    }

    // === Members and subsystems ===

    /// Registers a member. The class must exist and the instance must be this one.
    pub async fn add_member(&self, id: &MemberId, name: &str, now_ms: i64) -> Result<()> {
        if id.instance() != self.instance {
            return Err(StoreError::Conflict(format!(
                "member {id} is not in instance {}",
                self.instance
            )));
        }
        let class: Option<(String,)> =
            sqlx::query_as("SELECT code FROM member_classes WHERE code = $1")
                .bind(id.class())
                .fetch_optional(self.db.pool())
                .await?;
        if class.is_none() {
            return Err(not_found(format!("member class {}", id.class())));
        }
        sqlx::query("INSERT INTO members (id, class, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id.to_string())
            .bind(id.class())
            .bind(name)
            .bind(now_ms)
            .execute(self.db.pool())
            .await
            .map_err(|e| conflict_on_unique(e, &format!("member {id}")))?;
        Ok(())
    }

    /// Removes a member and its subsystems. Refused while it owns gateways.
    pub async fn remove_member(&self, id: &MemberId) -> Result<()> {
        let owned: Option<(String,)> =
            sqlx::query_as("SELECT id FROM gateways WHERE owner_id = $1 LIMIT 1")
                .bind(id.to_string())
                .fetch_optional(self.db.pool())
                .await?;
        if let Some((gw,)) = owned {
            return Err(StoreError::Conflict(format!(
                "member {id} still owns gateway {gw}; remove the gateway first"
            )));
        }
        let mut tx = self.db.pool().begin().await?;
        let prefix = format!("{id}/");
        sqlx::query("DELETE FROM gateway_clients WHERE substr(subsystem_id, 1, length($1)) = $1")
            .bind(&prefix)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM global_group_members WHERE client_id = $1 OR substr(client_id, 1, length($2)) = $2")
            .bind(id.to_string())
            .bind(&prefix)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM members WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!("member {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// All members with their subsystems.
    pub async fn members(&self) -> Result<Vec<MemberDto>> {
        let members: Vec<(String, String)> =
            sqlx::query_as("SELECT id, name FROM members ORDER BY id")
                .fetch_all(self.db.pool())
                .await?;
        let subs: Vec<(String, String, String)> =
            sqlx::query_as("SELECT member_id, code, name FROM subsystems ORDER BY member_id, code")
                .fetch_all(self.db.pool())
                .await?;
        let mut by_member: BTreeMap<String, Vec<SubsystemDto>> = BTreeMap::new();
        for (m, code, name) in subs {
            by_member
                .entry(m)
                .or_default()
                .push(SubsystemDto { code, name });
        }
        Ok(members
            .into_iter()
            .map(|(id, name)| MemberDto {
                subsystems: by_member.remove(&id).unwrap_or_default(),
                id,
                name,
            })
            .collect())
    }

    /// One member.
    pub async fn member(&self, id: &MemberId) -> Result<MemberDto> {
        self.members()
            .await?
            .into_iter()
            .find(|m| m.id == id.to_string())
            .ok_or_else(|| not_found(format!("member {id}")))
    }

    /// Adds a subsystem to a member.
    pub async fn add_subsystem(&self, id: &SubsystemId, name: &str) -> Result<()> {
        self.member(id.member()).await?;
        sqlx::query("INSERT INTO subsystems (member_id, code, name) VALUES ($1, $2, $3)")
            .bind(id.member().to_string())
            .bind(id.code())
            .bind(name)
            .execute(self.db.pool())
            .await
            .map_err(|e| conflict_on_unique(e, &format!("subsystem {id}")))?;
        Ok(())
    }

    /// Removes a subsystem, its registrations on gateways and its group memberships.
    pub async fn remove_subsystem(&self, id: &SubsystemId) -> Result<()> {
        let mut tx = self.db.pool().begin().await?;
        sqlx::query("DELETE FROM gateway_clients WHERE subsystem_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM global_group_members WHERE client_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM subsystems WHERE member_id = $1 AND code = $2")
            .bind(id.member().to_string())
            .bind(id.code())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!("subsystem {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn subsystem_exists(&self, id: &SubsystemId) -> Result<bool> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT code FROM subsystems WHERE member_id = $1 AND code = $2")
                .bind(id.member().to_string())
                .bind(id.code())
                .fetch_optional(self.db.pool())
                .await?;
        Ok(row.is_some())
    }

    async fn client_exists(&self, id: &ClientId) -> Result<bool> {
        match id {
            ClientId::Member(m) => Ok(self.member(m).await.is_ok()),
            ClientId::Subsystem(s) => self.subsystem_exists(s).await,
        }
    }

    // === Gateways ===

    /// Registers a gateway of a member at an address.
    pub async fn add_gateway(&self, id: &GatewayId, address: &str, now_ms: i64) -> Result<()> {
        self.member(id.owner()).await?;
        sqlx::query(
            "INSERT INTO gateways (id, owner_id, address, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(id.owner().to_string())
        .bind(address)
        .bind(now_ms)
        .execute(self.db.pool())
        .await
        .map_err(|e| conflict_on_unique(e, &format!("gateway {id}")))?;
        Ok(())
    }

    /// Changes a gateway's address.
    pub async fn set_gateway_address(&self, id: &GatewayId, address: &str) -> Result<()> {
        let done = sqlx::query("UPDATE gateways SET address = $1 WHERE id = $2")
            .bind(address)
            .bind(id.to_string())
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!("gateway {id}")));
        }
        Ok(())
    }

    /// Removes a gateway, its certificates and client registrations.
    pub async fn remove_gateway(&self, id: &GatewayId) -> Result<()> {
        let mut tx = self.db.pool().begin().await?;
        for table in ["gateway_clients", "gateway_auth_certs", "enrolment_tokens"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE gateway_id = $1"
            )))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query("DELETE FROM gateways WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!("gateway {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// All gateways.
    pub async fn gateways(&self) -> Result<Vec<GatewayDto>> {
        let gws: Vec<(String, String)> =
            sqlx::query_as("SELECT id, address FROM gateways ORDER BY id")
                .fetch_all(self.db.pool())
                .await?;
        let certs: Vec<(String, String)> = sqlx::query_as(
            "SELECT gateway_id, sha256 FROM gateway_auth_certs ORDER BY gateway_id, sha256",
        )
        .fetch_all(self.db.pool())
        .await?;
        let clients: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT gateway_id, subsystem_id, disabled FROM gateway_clients ORDER BY gateway_id, subsystem_id")
                .fetch_all(self.db.pool())
                .await?;
        let mut certs_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, h) in certs {
            certs_of.entry(g).or_default().push(h);
        }
        let mut clients_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut disabled_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, c, disabled) in clients {
            let of = if disabled != 0 {
                &mut disabled_of
            } else {
                &mut clients_of
            };
            of.entry(g).or_default().push(c);
        }
        Ok(gws
            .into_iter()
            .map(|(id, address)| GatewayDto {
                auth_cert_sha256: certs_of.remove(&id).unwrap_or_default(),
                clients: clients_of.remove(&id).unwrap_or_default(),
                disabled_clients: disabled_of.remove(&id).unwrap_or_default(),
                id,
                address,
            })
            .collect())
    }

    /// One gateway.
    pub async fn gateway(&self, id: &GatewayId) -> Result<GatewayDto> {
        self.gateways()
            .await?
            .into_iter()
            .find(|g| g.id == id.to_string())
            .ok_or_else(|| not_found(format!("gateway {id}")))
    }

    /// Registers a subsystem as hosted by a gateway.
    pub async fn add_gateway_client(
        &self,
        gateway: &GatewayId,
        client: &SubsystemId,
    ) -> Result<()> {
        self.gateway(gateway).await?;
        if !self.subsystem_exists(client).await? {
            return Err(not_found(format!("subsystem {client}")));
        }
        sqlx::query("INSERT INTO gateway_clients (gateway_id, subsystem_id) VALUES ($1, $2)")
            .bind(gateway.to_string())
            .bind(client.to_string())
            .execute(self.db.pool())
            .await
            .map_err(|e| conflict_on_unique(e, &format!("{client} on {gateway}")))?;
        Ok(())
    }

    /// Removes a hosted subsystem from a gateway.
    pub async fn remove_gateway_client(
        &self,
        gateway: &GatewayId,
        client: &SubsystemId,
    ) -> Result<()> {
        let done =
            sqlx::query("DELETE FROM gateway_clients WHERE gateway_id = $1 AND subsystem_id = $2")
                .bind(gateway.to_string())
                .bind(client.to_string())
                .execute(self.db.pool())
                .await?;
        found(done, || format!("{client} on {gateway}"))
    }

    /// Disables or enables a hosted subsystem; a disabled one is left out of the
    /// global configuration.
    pub async fn set_client_disabled(
        &self,
        gateway: &GatewayId,
        client: &SubsystemId,
        disabled: bool,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE gateway_clients SET disabled = $1 WHERE gateway_id = $2 AND subsystem_id = $3",
        )
        .bind(i64::from(disabled))
        .bind(gateway.to_string())
        .bind(client.to_string())
        .execute(self.db.pool())
        .await?;
        found(done, || format!("{client} on {gateway}"))
    }

    /// Registers an authentication certificate of a gateway.
    pub async fn add_auth_cert(
        &self,
        gateway: &GatewayId,
        sha256: &str,
        cert_pem: &str,
        not_after: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO gateway_auth_certs (gateway_id, sha256, cert_pem, not_after) VALUES ($1, $2, $3, $4)
             ON CONFLICT (gateway_id, sha256) DO NOTHING",
        )
        .bind(gateway.to_string())
        .bind(sha256)
        .bind(cert_pem)
        .bind(not_after)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    // === Global groups ===

    /// Creates a global group.
    pub async fn add_global_group(&self, code: &str, description: &str) -> Result<()> {
        veksel_id::validate_part("global group", 1, code)
            .map_err(|e| StoreError::Conflict(e.to_string()))?;
        sqlx::query("INSERT INTO global_groups (code, description) VALUES ($1, $2)")
            .bind(code)
            .bind(description)
            .execute(self.db.pool())
            .await
            .map_err(|e| conflict_on_unique(e, &format!("global group {code}")))?;
        Ok(())
    }

    /// Deletes a global group.
    pub async fn remove_global_group(&self, code: &str) -> Result<()> {
        let mut tx = self.db.pool().begin().await?;
        sqlx::query("DELETE FROM global_group_members WHERE group_code = $1")
            .bind(code)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM global_groups WHERE code = $1")
            .bind(code)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!("global group {code}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds a member or subsystem to a global group.
    pub async fn add_global_group_member(&self, code: &str, client: &ClientId) -> Result<()> {
        if !self.global_groups().await?.iter().any(|g| g.code == code) {
            return Err(not_found(format!("global group {code}")));
        }
        if !self.client_exists(client).await? {
            return Err(not_found(format!("client {client}")));
        }
        sqlx::query("INSERT INTO global_group_members (group_code, client_id) VALUES ($1, $2)")
            .bind(code)
            .bind(client.to_string())
            .execute(self.db.pool())
            .await
            .map_err(|e| conflict_on_unique(e, &format!("{client} in {code}")))?;
        Ok(())
    }

    /// Removes a member from a global group.
    pub async fn remove_global_group_member(&self, code: &str, client: &ClientId) -> Result<()> {
        let done = sqlx::query(
            "DELETE FROM global_group_members WHERE group_code = $1 AND client_id = $2",
        )
        .bind(code)
        .bind(client.to_string())
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!("{client} in {code}")));
        }
        Ok(())
    }

    /// All global groups with members.
    pub async fn global_groups(&self) -> Result<Vec<GlobalGroupDto>> {
        let groups: Vec<(String, String)> =
            sqlx::query_as("SELECT code, description FROM global_groups ORDER BY code")
                .fetch_all(self.db.pool())
                .await?;
        let members: Vec<(String, String)> = sqlx::query_as(
            "SELECT group_code, client_id FROM global_group_members ORDER BY group_code, client_id",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut of: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, c) in members {
            of.entry(g).or_default().push(c);
        }
        Ok(groups
            .into_iter()
            .map(|(code, description)| GlobalGroupDto {
                id: format!("{}/{code}", self.instance),
                members: of.remove(&code).unwrap_or_default(),
                code,
                description,
            })
            .collect())
    }

    // === Issued certificates ===

    /// Records an issued certificate.
    pub async fn record_issued(&self, cert: &IssuedRecord<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO issued_certs (serial, profile, subject, sha256, not_after, issued_at, cert_pem)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(cert.serial)
        .bind(cert.profile)
        .bind(cert.subject)
        .bind(cert.sha256)
        .bind(cert.not_after)
        .bind(cert.issued_at_ms)
        .bind(cert.pem)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Revokes an issued certificate by serial (hex) and returns its SHA-256.
    pub async fn revoke(&self, serial_hex: &str, reason: &str, now_ms: i64) -> Result<String> {
        let row: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT sha256, revoked_at FROM issued_certs WHERE serial = $1")
                .bind(serial_hex)
                .fetch_optional(self.db.pool())
                .await?;
        let (sha256, revoked) =
            row.ok_or_else(|| not_found(format!("certificate with serial {serial_hex}")))?;
        if revoked.is_some() {
            return Err(StoreError::Conflict(format!(
                "certificate {serial_hex} is already revoked"
            )));
        }
        sqlx::query(
            "UPDATE issued_certs SET revoked_at = $1, revocation_reason = $2 WHERE serial = $3",
        )
        .bind(now_ms)
        .bind(reason)
        .bind(serial_hex)
        .execute(self.db.pool())
        .await?;
        Ok(sha256)
    }

    /// Issued certificates, newest first, optionally of one subject.
    pub async fn issued(&self, subject: Option<&str>) -> Result<Vec<IssuedDto>> {
        let rows = sqlx::query(
            "SELECT serial, profile, subject, sha256, not_after, issued_at, revoked_at, revocation_reason
             FROM issued_certs WHERE ($1 = '' OR subject = $1) ORDER BY issued_at DESC",
        )
        .bind(subject.unwrap_or_default())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(IssuedDto {
                    serial: r.try_get(0)?,
                    profile: r.try_get(1)?,
                    subject: r.try_get(2)?,
                    sha256: r.try_get(3)?,
                    not_after: veksel_proto::rfc3339(r.try_get::<i64, _>(4)? * 1000),
                    issued_at: veksel_proto::rfc3339(r.try_get(5)?),
                    revoked_at: r.try_get::<Option<i64>, _>(6)?.map(veksel_proto::rfc3339),
                    revocation_reason: r.try_get(7)?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Profile and subject of an issued certificate by serial (hex).
    pub async fn issued_subject(&self, serial_hex: &str) -> Result<Option<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT profile, subject FROM issued_certs WHERE serial = $1")
                .bind(serial_hex)
                .fetch_optional(self.db.pool())
                .await?,
        )
    }

    /// When a certificate this authority issued was revoked, by SHA-256 (hex).
    pub async fn revoked_at(&self, sha256: &str) -> Result<Option<i64>> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT revoked_at FROM issued_certs WHERE sha256 = $1 AND revoked_at IS NOT NULL",
        )
        .bind(sha256)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.and_then(|r| r.0))
    }

    /// The PEM of a member signing certificate this authority issued to `member`,
    /// by SHA-256 (hex).
    pub async fn signing_cert_pem(&self, sha256: &str, member: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT cert_pem FROM issued_certs WHERE sha256 = $1 AND subject = $2 AND profile = 'member-signing'",
        )
        .bind(sha256)
        .bind(member)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|r| r.0))
    }

    /// Revocation state of a certificate by serial (hex): `None` if unknown, else
    /// `Some(revoked_at_ms)`.
    pub async fn revocation(&self, serial_hex: &str) -> Result<Option<Option<i64>>> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT revoked_at FROM issued_certs WHERE serial = $1")
                .bind(serial_hex)
                .fetch_optional(self.db.pool())
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// External trust services of `kind` (`ca` or `tsa`): (name, cert PEM, URL,
    /// priority), by priority then name.
    pub async fn trust_services(
        &self,
        kind: &str,
    ) -> Result<Vec<(String, String, Option<String>, i64)>> {
        Ok(sqlx::query_as(
            "SELECT name, cert_pem, url, priority FROM trust_services WHERE kind = $1 ORDER BY priority, name",
        )
        .bind(kind)
        .fetch_all(self.db.pool())
        .await?)
    }

    /// Adds an external trust service.
    pub async fn add_trust_service(
        &self,
        kind: &str,
        name: &str,
        cert_pem: &str,
        url: Option<&str>,
        priority: i64,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO trust_services (kind, name, cert_pem, url, priority, added_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(kind)
        .bind(name)
        .bind(cert_pem)
        .bind(url)
        .bind(priority)
        .bind(now_ms)
        .execute(self.db.pool())
        .await
        .map_err(|e| conflict_on_unique(e, &format!("{kind} {name}")))?;
        Ok(())
    }

    /// Removes an external trust service.
    pub async fn remove_trust_service(&self, kind: &str, name: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM trust_services WHERE kind = $1 AND name = $2")
            .bind(kind)
            .bind(name)
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!("{kind} {name}")));
        }
        Ok(())
    }

    /// Accepts a renewal nonce once: false if it was seen before it expired.
    pub async fn use_nonce(&self, nonce: &str, now_ms: i64, expires_at_ms: i64) -> Result<bool> {
        sqlx::query("DELETE FROM renewal_nonces WHERE expires_at < $1")
            .bind(now_ms)
            .execute(self.db.pool())
            .await?;
        let done = sqlx::query(
            "INSERT INTO renewal_nonces (nonce, expires_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(expires_at_ms)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// SHA-256 of revoked certificates that have not expired at `now_secs`.
    pub async fn revoked_unexpired(&self, now_secs: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT sha256 FROM issued_certs WHERE revoked_at IS NOT NULL AND not_after > $1 ORDER BY sha256",
        )
        .bind(now_secs)
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    // === Global configuration ===

    /// Builds the configuration content (version and times left at zero).
    pub async fn conf_content(
        &self,
        settings: conf::Settings,
        approved_cas: Vec<conf::ApprovedCa>,
        approved_tsas: Vec<conf::ApprovedTsa>,
        token_service: Option<veksel_proto::oauth::TokenService>,
        now_secs: i64,
    ) -> Result<GlobalConf> {
        let corrupt = |e: veksel_id::IdError| StoreError::Corrupt(e.to_string());
        let member_classes = self
            .member_classes()
            .await?
            .into_iter()
            .map(|c| conf::MemberClass {
                code: c.code,
                description: c.description,
            })
            .collect();
        let members = self
            .members()
            .await?
            .into_iter()
            .map(|m| {
                Ok(conf::Member {
                    id: m.id.parse().map_err(corrupt)?,
                    name: m.name,
                    subsystems: m
                        .subsystems
                        .into_iter()
                        .map(|s| conf::Subsystem {
                            code: s.code,
                            name: s.name,
                        })
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let revoked = self.revoked_unexpired(now_secs).await?;
        // A renewed gateway's old certificate stays listed until it expires, so peers
        // accept both while it switches over; then it drops out.
        let expired: Vec<String> = sqlx::query_as::<_, (String,)>(
            "SELECT sha256 FROM gateway_auth_certs WHERE not_after <= $1",
        )
        .bind(now_secs)
        .fetch_all(self.db.pool())
        .await?
        .into_iter()
        .map(|r| r.0)
        .collect();
        let gateways = self
            .gateways()
            .await?
            .into_iter()
            .map(|g| {
                Ok(conf::Gateway {
                    id: g.id.parse().map_err(corrupt)?,
                    address: g.address,
                    auth_cert_sha256: g
                        .auth_cert_sha256
                        .into_iter()
                        .filter(|h| !revoked.contains(h) && !expired.contains(h))
                        .collect(),
                    clients: g
                        .clients
                        .iter()
                        .map(|c| c.parse().map_err(corrupt))
                        .collect::<Result<Vec<_>>>()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let global_groups = self
            .global_groups()
            .await?
            .into_iter()
            .map(|g| {
                Ok(conf::GlobalGroup {
                    id: g.id.parse().map_err(corrupt)?,
                    description: g.description,
                    members: g
                        .members
                        .iter()
                        .map(|c| c.parse().map_err(corrupt))
                        .collect::<Result<Vec<_>>>()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GlobalConf {
            format: conf::CONF_FORMAT,
            instance: self.instance.clone(),
            version: 0,
            generated_at_ms: 0,
            expires_at_ms: 0,
            settings,
            member_classes,
            members,
            gateways,
            approved_cas,
            approved_tsas,
            revoked_cert_sha256: revoked,
            global_groups,
            token_service,
        })
    }

    /// Returns the configuration version for content with this hash, bumping the
    /// version when the content changed since the last call.
    pub async fn conf_version_for(&self, content_sha256: &str, now_ms: i64) -> Result<u64> {
        let mut tx = self.db.pool().begin().await?;
        // Write first: on SQLite a transaction that reads and then writes fails at
        // once (SQLITE_BUSY, no waiting) when another writer, such as the ledger's
        // sequencer, committed in between; taking the write lock up front makes it wait.
        sqlx::query("UPDATE conf_state SET version = version WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT version, content_sha256 FROM conf_state WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
        let previous = row.as_ref().map(|(v, _)| *v);
        let version = match row {
            Some((v, h)) if h == content_sha256 => v,
            Some((v, _)) => {
                sqlx::query("UPDATE conf_state SET version = $1, content_sha256 = $2 WHERE id = 1")
                    .bind(v + 1)
                    .bind(content_sha256)
                    .execute(&mut *tx)
                    .await?;
                v + 1
            }
            None => {
                sqlx::query(
                    "INSERT INTO conf_state (id, version, content_sha256) VALUES (1, 1, $1)",
                )
                .bind(content_sha256)
                .execute(&mut *tx)
                .await?;
                1
            }
        };
        if previous != Some(version) {
            // A new version is a governance event (it lands in the ledger).
            sqlx::query("INSERT INTO audit_events (at, actor, action, subject, detail) VALUES ($1, 'authority', 'configuration.publish', $2, $3)")
                .bind(now_ms)
                .bind(version.to_string())
                .bind(serde_json::json!({ "content_sha256": content_sha256 }).to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(u64::try_from(version).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Regression: versioning read before it wrote, so on SQLite a second writer
    /// committing in between failed the publication outright (SQLITE_BUSY without
    /// waiting) and gateways saw the change only a whole publish period later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_versioning_waits_instead_of_failing_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("a.db"), &Default::default())
            .await
            .unwrap();
        db.migrate("authority", crate::schema::MIGRATIONS)
            .await
            .unwrap();
        let registry = Arc::new(Registry::new(db, "TEST".into()));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let registry = registry.clone();
            tasks.push(tokio::spawn(async move {
                registry
                    .conf_version_for(&format!("{i:064x}"), 1_000 + i)
                    .await
            }));
        }
        let mut versions = Vec::new();
        for t in tasks {
            versions.push(
                t.await
                    .unwrap()
                    .expect("versioning failed under contention"),
            );
        }
        versions.sort_unstable();
        // Each distinct content got its own version, one after the other.
        assert_eq!(versions, (1..=16).collect::<Vec<u64>>());
    }
}
