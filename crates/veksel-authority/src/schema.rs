//! The authority's database schema.

use veksel_store::Migration;

/// Migrations of the authority database.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "api tokens",
        sql: veksel_store::tokens::TOKENS_TABLE,
    },
    Migration {
        version: 2,
        name: "registry",
        sql: r#"
CREATE TABLE member_classes (code TEXT PRIMARY KEY, description TEXT NOT NULL);
CREATE TABLE members (
    id TEXT PRIMARY KEY, class TEXT NOT NULL REFERENCES member_classes(code),
    name TEXT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE subsystems (
    member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    code TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (member_id, code));
CREATE TABLE gateways (
    id TEXT PRIMARY KEY, owner_id TEXT NOT NULL REFERENCES members(id),
    address TEXT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE gateway_auth_certs (
    gateway_id TEXT NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL, cert_pem TEXT NOT NULL, not_after BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, sha256));
CREATE TABLE gateway_clients (
    gateway_id TEXT NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
    subsystem_id TEXT NOT NULL, PRIMARY KEY (gateway_id, subsystem_id));
CREATE TABLE global_groups (code TEXT PRIMARY KEY, description TEXT NOT NULL);
CREATE TABLE global_group_members (
    group_code TEXT NOT NULL REFERENCES global_groups(code) ON DELETE CASCADE,
    client_id TEXT NOT NULL, PRIMARY KEY (group_code, client_id));
CREATE TABLE enrolment_tokens (
    token_sha256 TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL, used_at BIGINT);
CREATE TABLE issued_certs (
    serial TEXT PRIMARY KEY, profile TEXT NOT NULL, subject TEXT NOT NULL,
    sha256 TEXT NOT NULL, not_after BIGINT NOT NULL, issued_at BIGINT NOT NULL, cert_pem TEXT NOT NULL);
CREATE TABLE conf_state (id BIGINT PRIMARY KEY, version BIGINT NOT NULL, content_sha256 TEXT NOT NULL);
CREATE TABLE audit_events (
    id {{SERIAL_PK}}, at BIGINT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL)
"#,
    },
    Migration {
        version: 3,
        name: "revocation",
        sql: r#"
ALTER TABLE issued_certs ADD COLUMN revoked_at BIGINT;
ALTER TABLE issued_certs ADD COLUMN revocation_reason TEXT;
CREATE INDEX issued_certs_sha256 ON issued_certs (sha256)
"#,
    },
    Migration {
        version: 4,
        name: "certificate renewal",
        sql: r#"
CREATE TABLE renewal_nonces (nonce TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)
"#,
    },
    Migration {
        version: 5,
        name: "external trust services",
        sql: r#"
CREATE TABLE trust_services (
    kind TEXT NOT NULL, name TEXT NOT NULL, cert_pem TEXT NOT NULL, url TEXT,
    priority BIGINT NOT NULL, added_at BIGINT NOT NULL, PRIMARY KEY (kind, name))
"#,
    },
    Migration {
        version: 6,
        name: "management requests",
        sql: r#"
CREATE TABLE management_requests (
    id {{SERIAL_PK}}, kind TEXT NOT NULL, state TEXT NOT NULL, change TEXT NOT NULL,
    submitted_by TEXT NOT NULL, consented BIGINT NOT NULL, signed_request TEXT,
    created_at BIGINT NOT NULL, decided_at BIGINT, decided_by TEXT, reason TEXT,
    status_token_sha256 TEXT, enrolment_token_delivered BIGINT NOT NULL DEFAULT 0);
CREATE INDEX management_requests_state ON management_requests (state, id);
CREATE TABLE management_policy (kind TEXT PRIMARY KEY, auto_approve BIGINT NOT NULL);
ALTER TABLE gateway_clients ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0
"#,
    },
    Migration {
        version: 7,
        name: "ledger",
        sql: crate::ledger::MIGRATION,
    },
    Migration {
        version: 8,
        name: "application source",
        sql: r#"
ALTER TABLE management_requests ADD COLUMN source TEXT;
CREATE INDEX management_requests_source ON management_requests (source, state)
"#,
    },
    Migration {
        version: 9,
        name: "token service",
        sql: crate::oauth::MIGRATION,
    },
    Migration {
        version: 10,
        name: "login for people",
        sql: crate::oidc::MIGRATION,
    },
    Migration {
        version: 11,
        name: "relying parties by management request",
        sql: r#"
INSERT INTO management_policy (kind, auto_approve) VALUES ('relying-party-registration', 1);
INSERT INTO management_policy (kind, auto_approve) VALUES ('relying-party-deletion', 1)
"#,
    },
    Migration {
        version: 12,
        name: "login through an external provider",
        sql: r#"
ALTER TABLE oidc_logins ADD COLUMN upstream_verifier TEXT;
ALTER TABLE oidc_logins ADD COLUMN upstream_nonce TEXT;
ALTER TABLE oidc_codes ADD COLUMN amr TEXT NOT NULL DEFAULT '["test"]'
"#,
    },
    Migration {
        version: 13,
        name: "people who work in the console",
        sql: veksel_store::officers::PEOPLE_TABLE,
    },
];
