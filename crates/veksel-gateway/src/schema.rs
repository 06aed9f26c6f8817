//! The gateway's database schema: local configuration (hosted subsystems, services,
//! access rights, local groups), the message log, operational monitoring and the
//! replay guard.

use veksel_store::Migration;

/// Migrations of the gateway database.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "api tokens",
        sql: veksel_store::tokens::TOKENS_TABLE,
    },
    Migration {
        version: 2,
        name: "server configuration",
        sql: r#"
CREATE TABLE local_clients (
    id TEXT PRIMARY KEY, log_mode TEXT NOT NULL, allow_loopback_http BIGINT NOT NULL,
    is_cert_sha256 TEXT NOT NULL);
CREATE TABLE services (
    client_id TEXT NOT NULL REFERENCES local_clients(id) ON DELETE CASCADE,
    code TEXT NOT NULL, base_url TEXT NOT NULL, timeout_ms BIGINT NOT NULL,
    enabled BIGINT NOT NULL, openapi TEXT, endpoints TEXT NOT NULL,
    PRIMARY KEY (client_id, code));
CREATE TABLE access_rights (
    client_id TEXT NOT NULL REFERENCES local_clients(id) ON DELETE CASCADE,
    rules TEXT NOT NULL, PRIMARY KEY (client_id));
CREATE TABLE local_groups (
    client_id TEXT NOT NULL REFERENCES local_clients(id) ON DELETE CASCADE,
    code TEXT NOT NULL, description TEXT NOT NULL, members TEXT NOT NULL,
    PRIMARY KEY (client_id, code));
CREATE TABLE serverconf_version (id BIGINT PRIMARY KEY, version BIGINT NOT NULL)
"#,
    },
    Migration {
        version: 3,
        name: "message log and monitoring",
        sql: r#"
CREATE TABLE message_log (
    id {{SERIAL_PK}},
    request_id TEXT NOT NULL, side TEXT NOT NULL, xroad_id TEXT NOT NULL,
    client TEXT NOT NULL, service TEXT NOT NULL, method TEXT NOT NULL, target TEXT NOT NULL,
    status BIGINT NOT NULL, consumer_gateway TEXT NOT NULL, provider_gateway TEXT NOT NULL,
    request_descriptor TEXT NOT NULL, request_signature TEXT NOT NULL,
    response_descriptor TEXT NOT NULL, response_signature TEXT NOT NULL,
    request_body {{BLOB}}, response_body {{BLOB}}, body_note TEXT,
    request_size BIGINT NOT NULL, response_size BIGINT NOT NULL,
    created_at BIGINT NOT NULL, logged_at BIGINT NOT NULL,
    UNIQUE (request_id, side));
CREATE INDEX message_log_logged_at ON message_log (logged_at);
CREATE TABLE op_monitoring (
    id {{SERIAL_PK}},
    request_id TEXT NOT NULL, side TEXT NOT NULL, xroad_id TEXT NOT NULL,
    client TEXT NOT NULL, service TEXT NOT NULL, method TEXT NOT NULL,
    consumer_gateway TEXT NOT NULL, provider_gateway TEXT NOT NULL,
    request_in_ts BIGINT NOT NULL, request_out_ts BIGINT, response_in_ts BIGINT,
    response_out_ts BIGINT NOT NULL, request_size BIGINT NOT NULL, response_size BIGINT NOT NULL,
    status_code BIGINT, succeeded BIGINT NOT NULL, fault_code TEXT, fault_message TEXT);
CREATE INDEX op_monitoring_time ON op_monitoring (response_out_ts);
CREATE TABLE replay_guard (request_id TEXT PRIMARY KEY, expires_at BIGINT NOT NULL);
CREATE INDEX replay_guard_expiry ON replay_guard (expires_at)
"#,
    },
    Migration {
        version: 4,
        name: "message log as a Merkle log",
        sql: r#"
ALTER TABLE message_log ADD COLUMN seq BIGINT;
ALTER TABLE message_log ADD COLUMN leaf_hash {{BLOB}};
CREATE UNIQUE INDEX message_log_seq ON message_log (seq);
CREATE TABLE log_head (
    id BIGINT PRIMARY KEY, size BIGINT NOT NULL, root {{BLOB}} NOT NULL, peaks {{BLOB}} NOT NULL,
    updated_at BIGINT NOT NULL);
CREATE TABLE log_roots (size BIGINT PRIMARY KEY, root {{BLOB}} NOT NULL, at BIGINT NOT NULL)
"#,
    },
    Migration {
        version: 5,
        name: "time stamps of the message log",
        sql: r#"
CREATE TABLE log_stamps (
    size BIGINT PRIMARY KEY, root {{BLOB}} NOT NULL, token {{BLOB}} NOT NULL, tsa TEXT NOT NULL,
    gen_time BIGINT NOT NULL, stamped_at BIGINT NOT NULL)
"#,
    },
    Migration {
        version: 6,
        name: "message-log archives",
        sql: r#"
CREATE TABLE log_archives (
    first_seq BIGINT PRIMARY KEY, next_seq BIGINT NOT NULL, file TEXT NOT NULL,
    sha256 TEXT NOT NULL, end_peaks {{BLOB}} NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE log_leaves (
    seq BIGINT PRIMARY KEY, leaf_hash {{BLOB}} NOT NULL, request_id TEXT NOT NULL, side TEXT NOT NULL);
CREATE INDEX log_leaves_request ON log_leaves (request_id, side)
"#,
    },
    Migration {
        version: 7,
        name: "ledger witness and anchors",
        sql: crate::ledger::MIGRATION,
    },
    Migration {
        version: 8,
        name: "ledger outbox of local governance events",
        sql: crate::ledger::OUTBOX_MIGRATION,
    },
    Migration {
        version: 9,
        name: "signing chains kept once",
        sql: r#"
CREATE TABLE signing_chains (x5t TEXT PRIMARY KEY, chain TEXT NOT NULL, first_seen BIGINT NOT NULL)
"#,
    },
    Migration {
        version: 10,
        name: "descriptors stored compressed",
        sql: r#"
ALTER TABLE message_log ADD COLUMN descriptors_z {{BLOB}}
"#,
    },
    Migration {
        version: 11,
        name: "scopes services require, tokens clients get",
        sql: r#"
ALTER TABLE services ADD COLUMN scopes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE local_clients ADD COLUMN tokens TEXT NOT NULL DEFAULT '[]'
"#,
    },
    Migration {
        version: 12,
        name: "verified persons",
        sql: r#"
ALTER TABLE services ADD COLUMN person_level TEXT;
ALTER TABLE message_log ADD COLUMN person_id TEXT;
CREATE INDEX message_log_person ON message_log (person_id, logged_at)
"#,
    },
    Migration {
        version: 13,
        name: "the persons requests are about",
        sql: r#"
ALTER TABLE services ADD COLUMN about_person TEXT;
ALTER TABLE message_log ADD COLUMN subject_hash TEXT;
CREATE INDEX message_log_subject ON message_log (subject_hash, logged_at)
"#,
    },
    Migration {
        version: 14,
        name: "people who work in the console",
        sql: veksel_store::officers::PEOPLE_TABLE,
    },
];
