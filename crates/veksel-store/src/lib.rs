//! Storage plumbing shared by the authority and the gateway: one connection pool over
//! SQLite (the embedded default) or PostgreSQL (to scale out), chosen by URL, with
//! durability settings and a migration runner.
//!
//! Both backends run the same SQL text: queries use `$1`-style placeholders, which
//! SQLite and PostgreSQL both accept, and only types both share (64-bit integers,
//! text, blobs). Each node crate keeps its own schema as a list of [`Migration`]s with
//! one script per backend.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::path::Path;
use std::time::Duration;

pub use sqlx;

pub mod officers;
pub mod tokens;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error or could not be reached.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("migration {version} ({name}) failed: {detail}")]
    Migration {
        /// Migration version.
        version: i64,
        /// Migration name.
        name: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The URL names no supported database.
    #[error("unsupported database URL {0:?}: use sqlite:// or postgres://")]
    UnsupportedUrl(String),
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// A unique key already exists.
    #[error("already exists: {0}")]
    Conflict(String),
    /// The row does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A value given by the operator is not acceptable.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl StoreError {
    /// True if the error is a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.is_unique_violation(),
            StoreError::Conflict(_) => true,
            _ => false,
        }
    }
}

/// Which database a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file in the node's data directory.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// How the pool is set up.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Wait for the disk on every commit (power-loss durability). Without it a
    /// commit still survives a crash of the process (kill -9), but not of the machine.
    pub sync_commit: bool,
    /// Largest number of connections.
    pub max_connections: u32,
    /// How long to wait for a connection before failing.
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            sync_commit: true,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// One schema change: a script in the SQL both backends share, with placeholders for
/// the few types they spell differently: `{{SERIAL_PK}}` (an auto-incrementing 64-bit
/// primary key) and `{{BLOB}}` (bytes).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing version.
    pub version: i64,
    /// Short name.
    pub name: &'static str,
    /// The script; statements separated by `;`.
    pub sql: &'static str,
}

impl Migration {
    /// The script for a backend.
    pub fn script_for(&self, backend: Backend) -> String {
        let (serial, blob) = match backend {
            Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
            Backend::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
        };
        self.sql
            .replace("{{SERIAL_PK}}", serial)
            .replace("{{BLOB}}", blob)
    }
}

/// A connection pool to the node's database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Connects to a database URL (`sqlite://…` or `postgres://…`).
    pub async fn connect(url: &str, options: &DbOptions) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let sync = options.sync_commit;
        let max = match backend {
            // SQLite allows one writer at a time; more connections only queue on its lock.
            Backend::Sqlite => options.max_connections.min(4),
            Backend::Postgres => options.max_connections,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => {
                            // 8 KiB pages for a new file (an existing one keeps its
                            // own; it must come before WAL mode): a message-log
                            // record of about 1.5 KiB fills 4 KiB pages two to a page,
                            // and 8 KiB pages five, so records take a fifth less.
                            conn.execute("PRAGMA page_size=8192").await?;
                            conn.execute("PRAGMA journal_mode=WAL").await?;
                            conn.execute("PRAGMA foreign_keys=ON").await?;
                            conn.execute("PRAGMA busy_timeout=10000").await?;
                            if sync {
                                conn.execute("PRAGMA synchronous=FULL").await?;
                            } else {
                                conn.execute("PRAGMA synchronous=NORMAL").await?;
                            }
                        }
                        Backend::Postgres => {
                            if sync {
                                conn.execute("SET synchronous_commit = on").await?;
                            } else {
                                conn.execute("SET synchronous_commit = off").await?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        Ok(Self { pool, backend })
    }

    /// Opens (creating if needed) an SQLite file.
    pub async fn open_sqlite(path: &Path, options: &DbOptions) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::connect(&url, options).await
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the migrations not yet applied, each in its own transaction.
    pub async fn migrate(
        &self,
        component: &str,
        migrations: &[Migration],
    ) -> Result<(), StoreError> {
        self.pool
            .execute(
                "CREATE TABLE IF NOT EXISTS veksel_migrations (
                    component TEXT NOT NULL,
                    version BIGINT NOT NULL,
                    name TEXT NOT NULL,
                    PRIMARY KEY (component, version))",
            )
            .await?;
        for m in migrations {
            let done: Option<(i64,)> = sqlx::query_as(
                "SELECT version FROM veksel_migrations WHERE component = $1 AND version = $2",
            )
            .bind(component)
            .bind(m.version)
            .fetch_optional(&self.pool)
            .await?;
            if done.is_some() {
                continue;
            }
            let script = m.script_for(self.backend);
            let mut tx = self.pool.begin().await?;
            for stmt in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                tx.execute(sqlx::AssertSqlSafe(stmt.to_owned()))
                    .await
                    .map_err(|e| StoreError::Migration {
                        version: m.version,
                        name: m.name,
                        detail: e.to_string(),
                    })?;
            }
            sqlx::query(
                "INSERT INTO veksel_migrations (component, version, name) VALUES ($1, $2, $3)",
            )
            .bind(component)
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(
                component,
                version = m.version,
                name = m.name,
                "applied migration"
            );
        }
        Ok(())
    }

    /// Checks the database answers, for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The URL of database `db` on the PostgreSQL server of `url` (its database name
/// replaced or added; user, host, port and parameters kept).
pub fn postgres_url_with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // postgres://user@host:port/dbname — replace or add the last path segment.
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// The database name in a PostgreSQL URL, if it has one.
pub fn postgres_database_name(url: &str) -> Option<&str> {
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let rest = &base[scheme_end..];
    rest.find('/')
        .map(|i| &rest[i + 1..])
        .filter(|n| !n.is_empty())
}

/// Creates database `name` on the PostgreSQL server of `server_url` unless it exists;
/// returns its URL. Names are limited to lower-case letters, digits and `_` (they
/// cannot be bound as parameters in `CREATE DATABASE`).
pub async fn ensure_postgres_database(server_url: &str, name: &str) -> Result<String, StoreError> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StoreError::Invalid(format!(
            "database name {name:?}: use 1 to 63 lower-case letters, digits or _"
        )));
    }
    install_default_drivers();
    // Connected to the server's maintenance database: the wanted one may not exist.
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&postgres_url_with_database(server_url, "postgres"))
        .await?;
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&admin)
        .await?;
    if exists.is_none() {
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
    }
    admin.close().await;
    Ok(postgres_url_with_database(server_url, name))
}

/// Drops database `name` on the PostgreSQL server of `server_url`, ending the
/// connections still open to it.
pub async fn drop_postgres_database(server_url: &str, name: &str) -> Result<(), StoreError> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StoreError::Invalid(format!("database name {name:?}")));
    }
    install_default_drivers();
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&postgres_url_with_database(server_url, "postgres"))
        .await?;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .execute(&admin)
        .await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .await?;
    admin.close().await;
    Ok(())
}

/// Test helper: a fresh PostgreSQL database on the server named by
/// `VEKSEL_TEST_DATABASE_URL`, or `None` (with a note on stderr) when the variable is
/// unset. CI always sets it.
pub mod testing {
    use super::*;

    /// A throwaway database; dropped by [`TestDatabase::drop_database`].
    #[derive(Debug)]
    pub struct TestDatabase {
        /// URL of the new database.
        pub url: String,
        admin_url: String,
        name: String,
    }

    /// The server URL for PostgreSQL tests, if configured.
    pub fn postgres_server_url() -> Option<String> {
        match std::env::var("VEKSEL_TEST_DATABASE_URL") {
            Ok(u) if !u.is_empty() => Some(u),
            _ => {
                eprintln!(
                    "VEKSEL_TEST_DATABASE_URL is unset: skipping the PostgreSQL variant of this test"
                );
                None
            }
        }
    }

    impl TestDatabase {
        /// Creates a uniquely named database on the server.
        pub async fn create(server_url: &str, prefix: &str) -> Result<Self, StoreError> {
            let name = format!("veksel_{prefix}_{}", uuid::Uuid::new_v4().simple());
            install_default_drivers();
            let admin = AnyPoolOptions::new()
                .max_connections(1)
                .connect(server_url)
                .await?;
            admin
                .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await?;
            admin.close().await;
            Ok(Self {
                url: postgres_url_with_database(server_url, &name),
                admin_url: server_url.to_owned(),
                name,
            })
        }

        /// Drops the database (terminating leftover connections).
        pub async fn drop_database(&self) -> Result<(), StoreError> {
            drop_postgres_database(&self.admin_url, &self.name).await
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn database_url_rewrite() {
            assert_eq!(
                crate::postgres_url_with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
                "postgres://postgres@127.0.0.1:5432/x"
            );
            assert_eq!(
                crate::postgres_url_with_database("postgres://u@h:1?sslmode=disable", "x"),
                "postgres://u@h:1/x?sslmode=disable"
            );
            assert_eq!(
                crate::postgres_database_name("postgres://u@h:1/veksel?sslmode=disable"),
                Some("veksel")
            );
            assert_eq!(crate::postgres_database_name("postgres://u@h:1"), None);
            assert_eq!(crate::postgres_database_name("postgres://u@h:1/"), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[Migration] = &[Migration {
        version: 1,
        name: "t",
        sql: "CREATE TABLE t (id {{SERIAL_PK}}, name TEXT NOT NULL UNIQUE, data {{BLOB}})",
    }];

    async fn exercise(db: &Db) {
        db.migrate("test", M).await.unwrap();
        db.migrate("test", M).await.unwrap();
        let (id,): (i64,) =
            sqlx::query_as("INSERT INTO t (name, data) VALUES ($1, $2) RETURNING id")
                .bind("a")
                .bind(vec![1u8, 2, 3])
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert!(id > 0);
        let err: StoreError = sqlx::query("INSERT INTO t (name) VALUES ($1)")
            .bind("a")
            .execute(db.pool())
            .await
            .unwrap_err()
            .into();
        assert!(err.is_unique_violation(), "{err}");
        let (data,): (Vec<u8>,) = sqlx::query_as("SELECT data FROM t WHERE name = $1")
            .bind("a")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(data, vec![1, 2, 3]);
        db.ping().await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("x.db"), &DbOptions::default())
            .await
            .unwrap();
        assert_eq!(db.backend(), Backend::Sqlite);
        exercise(&db).await;
    }

    #[tokio::test]
    async fn postgres() {
        let Some(server) = testing::postgres_server_url() else {
            return;
        };
        let tdb = testing::TestDatabase::create(&server, "store")
            .await
            .unwrap();
        let db = Db::connect(&tdb.url, &DbOptions::default()).await.unwrap();
        assert_eq!(db.backend(), Backend::Postgres);
        exercise(&db).await;
        db.close().await;
        tdb.drop_database().await.unwrap();
    }

    #[tokio::test]
    async fn refuses_other_urls() {
        assert!(matches!(
            Db::connect("mysql://x", &DbOptions::default()).await,
            Err(StoreError::UnsupportedUrl(_))
        ));
    }
}
