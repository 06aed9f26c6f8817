//! The authority of a veksel network (X-Road: central server plus trust services):
//! the registry of members, subsystems, gateways and global groups; the certificate
//! authority that issues gateway authentication and member signing certificates; and
//! the signed global configuration every gateway polls.
//!
//! The authority is never in the data path: gateways exchange messages peer to peer
//! and only come here for configuration and certificates.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod auth;
pub mod console;
pub mod console_ledger;
pub mod ledger;
pub mod management;
pub mod model;
pub mod oauth;
pub mod oauth_wire;
pub mod oidc;
pub mod registry;
pub mod schema;
pub mod token_endpoint;
pub mod tokens;
pub mod upstream;

use model::Role;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as MetricsRegistry;
use registry::Registry;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use veksel_net::{ServerLimits, Shutdown};
use veksel_pki::ca::{CertificateAuthority, Profile, make_csr, self_signed_signing_cert};
use veksel_pki::{KeyFile, certs_from_pem, certs_to_pem};
use veksel_proto::Clock;
use veksel_proto::conf::{Anchor, ApprovedCa, ApprovedTsa, GlobalConf, Settings};
use veksel_proto::jws::SoftwareSigner;
use veksel_store::{Db, DbOptions};

/// Why the authority could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// A file in the data directory is missing or unreadable.
    #[error("{path}: {message}")]
    DataDir {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Key or certificate trouble.
    #[error(transparent)]
    Pki(#[from] veksel_pki::PkiError),
    /// Database trouble.
    #[error(transparent)]
    Store(#[from] veksel_store::StoreError),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The listener could not be bound or TLS set up.
    #[error("server: {0}")]
    Server(String),
}

/// The authority's configuration, kept as `authority.json` in its data directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityConfig {
    /// Instance identifier, e.g. `GL`.
    pub instance: String,
    /// Address to listen on (HTTPS).
    pub listen: SocketAddr,
    /// Public HTTPS base URL gateways use, e.g. `https://authority.example:4400`.
    pub public_url: String,
    /// Host names and IP addresses in the TLS certificate.
    pub tls_hosts: Vec<String>,
    /// PostgreSQL URL; SQLite in the data directory when absent.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Validity of each signed configuration, seconds (X-Road default: 600).
    pub conf_validity_secs: u64,
    /// Settings published to gateways.
    pub settings: Settings,
    /// How long enrolment tokens stay valid, seconds.
    pub enrolment_token_ttl_secs: u64,
    /// Validity of issued certificates, days.
    pub cert_validity_days: i64,
    /// Policy OID of the time-stamping service (set your own registered OID).
    #[serde(default = "default_tsa_policy")]
    pub tsa_policy_oid: String,
    /// How often the ledger sequences new entries and signs a checkpoint, ms.
    #[serde(default = "default_ledger_interval")]
    pub ledger_interval_ms: u64,
    /// Also write the ledger's checkpoint and tiles to this directory (relative to
    /// the data directory), for a static web server or CDN to serve.
    #[serde(default)]
    pub ledger_tiles_dir: Option<PathBuf>,
    /// Life of the access tokens the token service issues, seconds (default 120).
    #[serde(default)]
    pub token_lifetime_secs: Option<u64>,
    /// How people log in (OpenID Connect); nobody can when absent.
    #[serde(default)]
    pub people_login: Option<oidc::PeopleLogin>,
    /// How long the token log keeps an issued token's record after it expired, days
    /// (default 365).
    #[serde(default)]
    pub token_log_retention_days: Option<u64>,
}

fn default_ledger_interval() -> u64 {
    1000
}

fn default_tsa_policy() -> String {
    veksel_pki::tsa::VEKSEL_TSA_POLICY.to_owned()
}

impl AuthorityConfig {
    /// Defaults for a new authority.
    pub fn new(
        instance: &str,
        listen: SocketAddr,
        public_url: &str,
        tls_hosts: Vec<String>,
    ) -> Self {
        Self {
            instance: instance.to_owned(),
            listen,
            public_url: public_url.trim_end_matches('/').to_owned(),
            tls_hosts,
            database_url: None,
            conf_validity_secs: 600,
            settings: Settings::default(),
            enrolment_token_ttl_secs: 24 * 3600,
            cert_validity_days: 365,
            tsa_policy_oid: default_tsa_policy(),
            ledger_interval_ms: default_ledger_interval(),
            ledger_tiles_dir: None,
            token_lifetime_secs: None,
            people_login: None,
            token_log_retention_days: None,
        }
    }

    /// Life of access tokens, seconds: between 10 s and a day.
    pub fn token_lifetime_secs(&self) -> i64 {
        let secs = self
            .token_lifetime_secs
            .unwrap_or(veksel_proto::oauth::DEFAULT_TOKEN_LIFETIME_SECS)
            .clamp(10, 24 * 3600);
        i64::try_from(secs).unwrap_or(120)
    }
}

/// Files of the data directory.
pub mod files {
    /// Configuration.
    pub const CONFIG: &str = "authority.json";
    /// CA key.
    pub const CA_KEY: &str = "ca.key";
    /// CA certificate.
    pub const CA_CERT: &str = "ca.pem";
    /// Configuration-signing key.
    pub const CONF_KEY: &str = "conf-signing.key";
    /// Configuration-signing certificate.
    pub const CONF_CERT: &str = "conf-signing.pem";
    /// TLS key.
    pub const TLS_KEY: &str = "tls.key";
    /// TLS certificate.
    pub const TLS_CERT: &str = "tls.pem";
    /// The anchor to hand to gateways.
    pub const ANCHOR: &str = "anchor.json";
    /// Time-stamping key.
    pub const TSA_KEY: &str = "tsa.key";
    /// Time-stamping certificate.
    pub const TSA_CERT: &str = "tsa.pem";
    /// SQLite database.
    pub const DB: &str = "authority.db";
    /// The ledger's checkpoint-signing key (Ed25519).
    pub const LEDGER_KEY: &str = "ledger.key";
}

fn read(dir: &Path, name: &str) -> Result<String, AuthorityError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|e| AuthorityError::DataDir {
        path,
        message: e.to_string(),
    })
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), AuthorityError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| AuthorityError::DataDir {
        path,
        message: e.to_string(),
    })
}

fn db_options() -> DbOptions {
    DbOptions::default()
}

async fn open_db(dir: &Path, config: &AuthorityConfig) -> Result<Db, AuthorityError> {
    let db = match &config.database_url {
        Some(url) => Db::connect(url, &db_options()).await?,
        None => Db::open_sqlite(&dir.join(files::DB), &db_options()).await?,
    };
    db.migrate("authority", schema::MIGRATIONS).await?;
    Ok(db)
}

/// What `init` produced.
#[derive(Debug)]
pub struct InitOutcome {
    /// A bootstrap API token with the admin role (shown once).
    pub admin_token: String,
    /// The anchor to hand to gateways.
    pub anchor: Anchor,
}

/// True if `dir` already holds an initialised authority.
pub fn is_initialised(dir: &Path) -> bool {
    dir.join(files::CONFIG).exists()
}

/// Creates a new authority in `dir`: CA, configuration-signing key, TLS certificate,
/// anchor, database with the default member classes, and a first admin token.
pub async fn init(
    dir: &Path,
    config: AuthorityConfig,
    clock: &Clock,
) -> Result<InitOutcome, AuthorityError> {
    std::fs::create_dir_all(dir).map_err(|e| AuthorityError::DataDir {
        path: dir.to_owned(),
        message: e.to_string(),
    })?;
    if is_initialised(dir) {
        return Err(AuthorityError::DataDir {
            path: dir.join(files::CONFIG),
            message: "already initialised; refusing to overwrite".into(),
        });
    }
    veksel_id::validate_part("instance", 0, &config.instance).map_err(|e| {
        AuthorityError::DataDir {
            path: dir.to_owned(),
            message: e.to_string(),
        }
    })?;
    let now = clock.now();
    let ca = CertificateAuthority::create(
        &format!("{} veksel CA", config.instance),
        now,
        time::Duration::days(20 * 365),
    )?;
    ca.key().save(&dir.join(files::CA_KEY))?;
    write(dir, files::CA_CERT, &ca.cert_pem())?;

    let conf_key = KeyFile::generate()?;
    let conf_cert = self_signed_signing_cert(
        &conf_key,
        &format!("{} global configuration signing", config.instance),
        now,
        time::Duration::days(20 * 365),
    )?;
    conf_key.save(&dir.join(files::CONF_KEY))?;
    let conf_cert_pem = certs_to_pem(&[conf_cert]);
    write(dir, files::CONF_CERT, &conf_cert_pem)?;

    let tls_key = KeyFile::generate()?;
    let tls_cert = ca.issue_from_csr(
        &make_csr(&tls_key, "authority")?,
        &Profile::TlsServer {
            hosts: config.tls_hosts.clone(),
        },
        now,
        time::Duration::days(5 * 365),
    )?;
    tls_key.save(&dir.join(files::TLS_KEY))?;
    write(dir, files::TLS_CERT, &certs_to_pem(&[tls_cert]))?;

    let anchor = Anchor {
        format: veksel_proto::conf::ANCHOR_FORMAT,
        instance: config.instance.clone(),
        conf_url: format!("{}/conf/v1/global", config.public_url),
        authority_url: config.public_url.clone(),
        conf_signing_cert_pem: conf_cert_pem,
        authority_tls_ca_pem: ca.cert_pem(),
        generated_at_ms: clock.now_ms(),
    };
    write(
        dir,
        files::ANCHOR,
        &serde_json::to_string_pretty(&anchor)
            .map_err(|e| AuthorityError::Signing(e.to_string()))?,
    )?;

    let db = open_db(dir, &config).await?;
    let registry = Registry::new(db.clone(), config.instance.clone());
    for (code, description) in [
        ("GOV", "Government agencies"),
        ("MUN", "Municipalities"),
        ("COM", "Companies"),
        ("ORG", "Non-profit organisations"),
    ] {
        registry.put_member_class(code, description).await?;
    }
    let token =
        tokens::create_api_token(&db, Role::Admin, "bootstrap admin token", clock.now_ms()).await?;
    registry
        .audit(
            clock.now_ms(),
            "init",
            "authority.init",
            &config.instance,
            "{}",
        )
        .await?;
    db.close().await;
    write(
        dir,
        files::CONFIG,
        &serde_json::to_string_pretty(&config)
            .map_err(|e| AuthorityError::Signing(e.to_string()))?,
    )?;
    Ok(InitOutcome {
        admin_token: token.token,
        anchor,
    })
}

/// Reads the anchor of an initialised authority.
pub fn read_anchor(dir: &Path) -> Result<Anchor, AuthorityError> {
    serde_json::from_str(&read(dir, files::ANCHOR)?).map_err(|e| AuthorityError::DataDir {
        path: dir.join(files::ANCHOR),
        message: e.to_string(),
    })
}

/// Reads the configuration of an initialised authority.
pub fn read_config(dir: &Path) -> Result<AuthorityConfig, AuthorityError> {
    serde_json::from_str(&read(dir, files::CONFIG)?).map_err(|e| AuthorityError::DataDir {
        path: dir.join(files::CONFIG),
        message: e.to_string(),
    })
}

/// The time-stamping authority's key and certificate, made on first start (also for
/// authorities initialised before time-stamping existed).
fn load_or_create_tsa(
    dir: &Path,
    ca: &CertificateAuthority,
    config: &AuthorityConfig,
    clock: &Clock,
) -> Result<veksel_pki::tsa::TimeStampAuthority, AuthorityError> {
    if !dir.join(files::TSA_CERT).exists() {
        let key = KeyFile::generate()?;
        let cert = ca.issue_from_csr(
            &make_csr(&key, "tsa")?,
            &Profile::TimeStamping {
                name: format!("{} veksel time-stamping authority", config.instance),
            },
            clock.now(),
            time::Duration::days(10 * 365),
        )?;
        key.save(&dir.join(files::TSA_KEY))?;
        write(dir, files::TSA_CERT, &certs_to_pem(&[cert]))?;
    }
    let cert = certs_from_pem(&read(dir, files::TSA_CERT)?)?
        .into_iter()
        .next()
        .ok_or_else(|| AuthorityError::DataDir {
            path: dir.join(files::TSA_CERT),
            message: "no certificate".into(),
        })?;
    Ok(veksel_pki::tsa::TimeStampAuthority::new(
        KeyFile::load(&dir.join(files::TSA_KEY))?,
        cert,
        &config.tsa_policy_oid,
    )?)
}

/// The currently published configuration.
#[derive(Debug)]
pub struct Published {
    /// The document.
    pub conf: GlobalConf,
    /// Its compact JWS.
    pub jws: String,
    /// Entity tag (hash of the JWS).
    pub etag: String,
}

/// Metrics of the authority.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: MetricsRegistry,
    conf_version: Gauge,
    conf_expires: Gauge,
    members: Gauge,
    gateways: Gauge,
    tokens_issued: prometheus_client::metrics::counter::Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut m = Self::default();
        m.registry.register(
            "veksel_authority_conf_version",
            "Version of the published global configuration",
            m.conf_version.clone(),
        );
        m.registry.register(
            "veksel_authority_conf_expires_seconds",
            "Expiry of the published global configuration, Unix seconds",
            m.conf_expires.clone(),
        );
        m.registry.register(
            "veksel_authority_members",
            "Registered members",
            m.members.clone(),
        );
        m.registry.register(
            "veksel_authority_gateways",
            "Registered gateways",
            m.gateways.clone(),
        );
        m.registry.register(
            "veksel_authority_access_tokens_issued",
            "Access tokens issued by the token service",
            m.tokens_issued.clone(),
        );
        m
    }
}

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct AppState {
    /// Registry tables.
    pub registry: Registry,
    /// The certificate authority.
    pub ca: CertificateAuthority,
    /// Signs the global configuration.
    pub conf_signer: SoftwareSigner,
    /// The time-stamping authority.
    pub tsa: veksel_pki::tsa::TimeStampAuthority,
    /// Time source.
    pub clock: Clock,
    /// Configuration.
    pub config: AuthorityConfig,
    /// The anchor.
    pub anchor: Anchor,
    /// Wakes the publisher after a registry change.
    pub conf_changed: Notify,
    /// The ledger's key.
    pub ledger: ledger::LedgerKey,
    /// Wakes the ledger's sequencer.
    pub ledger_changed: Notify,
    /// Applications to join are counted and stored one at a time.
    pub applications: tokio::sync::Mutex<()>,
    /// The token service's signing keys.
    pub token_keys: oauth::TokenKeys,
    /// The external identity provider people log in with, when one is configured.
    pub upstream: Option<upstream::Upstream>,
    /// Sessions of the console's pages.
    pub console: veksel_console::Sessions,
    published: RwLock<Arc<Published>>,
    metrics: Metrics,
}

/// Failover position of the authority's own TSA among the approved TSAs.
pub const OWN_TSA_PRIORITY: i64 = 100;

impl AppState {
    /// Name of the authority's own CA in the configuration.
    pub fn own_ca_name(&self) -> String {
        format!("{} veksel CA", self.config.instance)
    }

    /// Name of the authority's own TSA in the configuration.
    pub fn own_tsa_name(&self) -> String {
        format!("{} veksel TSA", self.config.instance)
    }

    /// The token service's issuer identifier: the authority's public URL.
    pub fn issuer(&self) -> &str {
        &self.config.public_url
    }

    /// The approved CAs of the published configuration as trust roots.
    pub fn published_roots(&self) -> Result<veksel_pki::verify::Roots, veksel_pki::PkiError> {
        let published = self.published();
        veksel_pki::verify::Roots::from_pems(
            published
                .conf
                .approved_cas
                .iter()
                .map(|ca| ca.cert_pem.as_str()),
        )
    }

    /// The configuration currently served.
    pub fn published(&self) -> Arc<Published> {
        match self.published.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Builds, versions and signs the configuration from the registry.
    pub async fn publish(&self) -> Result<Arc<Published>, AuthorityError> {
        let mut approved = vec![ApprovedCa {
            name: self.own_ca_name(),
            cert_pem: self.ca.cert_pem(),
            ocsp_url: Some(format!("{}/ocsp/v1", self.config.public_url)),
        }];
        for (name, cert_pem, ocsp_url, _) in self.registry.trust_services("ca").await? {
            approved.push(ApprovedCa {
                name,
                cert_pem,
                ocsp_url,
            });
        }
        let mut tsas = vec![(
            OWN_TSA_PRIORITY,
            ApprovedTsa {
                name: self.own_tsa_name(),
                url: format!("{}/tsa/v1", self.config.public_url),
                cert_pem: certs_to_pem(&[self.tsa.cert_der().to_vec()]),
            },
        )];
        for (name, cert_pem, url, priority) in self.registry.trust_services("tsa").await? {
            tsas.push((
                priority,
                ApprovedTsa {
                    name,
                    url: url.unwrap_or_default(),
                    cert_pem,
                },
            ));
        }
        // Gateways try TSAs in this order and fail over to the next.
        tsas.sort_by_key(|(priority, _)| *priority);
        let tsas = tsas.into_iter().map(|(_, t)| t).collect();
        let now_secs = i64::try_from(self.clock.now_secs()).unwrap_or(i64::MAX);
        // A key due to sign from now on starts signing here.
        self.token_keys
            .refresh(self.registry.db(), self.clock.now_ms())
            .await?;
        let token_service = oauth::conf_part(self, now_secs).await?;
        let mut conf = self
            .registry
            .conf_content(
                self.config.settings.clone(),
                approved,
                tsas,
                Some(token_service),
                now_secs,
            )
            .await?;
        let content =
            serde_json::to_vec(&conf).map_err(|e| AuthorityError::Signing(e.to_string()))?;
        conf.version = self
            .registry
            .conf_version_for(&veksel_pki::sha256_hex(&content), self.clock.now_ms())
            .await?;
        let now = self.clock.now_ms();
        conf.generated_at_ms = now;
        conf.expires_at_ms =
            now + i64::try_from(self.config.conf_validity_secs).unwrap_or(600) * 1000;
        let jws = conf
            .sign(&self.conf_signer)
            .map_err(|e| AuthorityError::Signing(e.to_string()))?;
        let etag = veksel_pki::sha256_hex(jws.as_bytes())[..32].to_owned();
        let published = Arc::new(Published { conf, jws, etag });
        match self.published.write() {
            Ok(mut g) => *g = published.clone(),
            Err(poisoned) => *poisoned.into_inner() = published.clone(),
        }
        Ok(published)
    }
}

/// A running authority.
#[derive(Debug)]
pub struct RunningAuthority {
    /// Address it listens on.
    pub addr: SocketAddr,
    /// Shared state (for tests and the sandbox).
    pub state: Arc<AppState>,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<()>,
    publisher: tokio::task::JoinHandle<()>,
    sequencer: tokio::task::JoinHandle<()>,
}

impl RunningAuthority {
    /// Stops serving and waits for in-flight requests.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.server.await;
        self.publisher.abort();
        let _ = self.publisher.await;
        self.sequencer.abort();
        let _ = self.sequencer.await;
        self.state.registry.db().close().await;
    }
}

/// Starts an initialised authority. `listener` may be pre-bound (tests, sandbox);
/// otherwise the configured address is bound.
pub async fn start(
    dir: &Path,
    clock: Clock,
    listener: Option<tokio::net::TcpListener>,
) -> Result<RunningAuthority, AuthorityError> {
    veksel_pki::tls::install_default_provider();
    let config = read_config(dir)?;
    let anchor = read_anchor(dir)?;
    let ca = CertificateAuthority::from_parts(
        &read(dir, files::CA_CERT)?,
        KeyFile::load(&dir.join(files::CA_KEY))?,
    )?;
    let conf_cert = certs_from_pem(&read(dir, files::CONF_CERT)?)?;
    let conf_signer = KeyFile::load(&dir.join(files::CONF_KEY))?
        .signer(conf_cert)
        .map_err(|e| AuthorityError::Signing(e.to_string()))?;
    let tsa = load_or_create_tsa(dir, &ca, &config, &clock)?;
    let ledger_pkcs8 = veksel_pki::keys::load_or_create_ed25519(&dir.join(files::LEDGER_KEY))?;
    let ledger =
        ledger::LedgerKey::new(&config.instance, &ledger_pkcs8).map_err(AuthorityError::Signing)?;
    let tls_chain = certs_from_pem(&read(dir, files::TLS_CERT)?)?;
    let tls_key = KeyFile::load(&dir.join(files::TLS_KEY))?;
    let tls = veksel_pki::tls::https_server_config(&tls_chain, tls_key.rustls_key())
        .map_err(|e| AuthorityError::Server(e.to_string()))?;
    let db = open_db(dir, &config).await?;
    let token_keys = oauth::TokenKeys::load(
        dir,
        &db,
        config.token_lifetime_secs().unsigned_abs(),
        clock.now_ms(),
    )
    .await?;
    let upstream = match config.people_login.as_ref() {
        Some(people) => people
            .upstream(dir)
            .map_err(|message| AuthorityError::DataDir {
                path: dir.join(files::CONFIG),
                message: format!("people_login: {message}"),
            })?,
        None => None,
    };
    let registry = Registry::new(db, config.instance.clone());
    let placeholder = Arc::new(Published {
        conf: GlobalConf {
            format: veksel_proto::conf::CONF_FORMAT,
            instance: config.instance.clone(),
            version: 0,
            generated_at_ms: 0,
            expires_at_ms: 0,
            settings: config.settings.clone(),
            member_classes: vec![],
            members: vec![],
            gateways: vec![],
            approved_cas: vec![],
            approved_tsas: vec![],
            revoked_cert_sha256: vec![],
            global_groups: vec![],
            token_service: None,
        },
        jws: String::new(),
        etag: String::new(),
    });
    let state = Arc::new(AppState {
        registry,
        ca,
        conf_signer,
        tsa,
        clock,
        config: config.clone(),
        anchor,
        conf_changed: Notify::new(),
        ledger,
        ledger_changed: Notify::new(),
        applications: tokio::sync::Mutex::new(()),
        token_keys,
        upstream,
        console: veksel_console::Sessions::default(),
        published: RwLock::new(placeholder),
        metrics: Metrics::new(),
    });
    state.publish().await?;

    let publisher = tokio::spawn(publish_loop(state.clone()));
    let sequencer = tokio::spawn(ledger::run(
        state.clone(),
        Duration::from_millis(config.ledger_interval_ms.max(10)),
        config.ledger_tiles_dir.as_ref().map(|d| dir.join(d)),
    ));
    let listener = match listener {
        Some(l) => l,
        None => veksel_net::bind(config.listen)
            .await
            .map_err(|e| AuthorityError::Server(e.to_string()))?,
    };
    let addr = listener
        .local_addr()
        .map_err(|e| AuthorityError::Server(e.to_string()))?;
    let shutdown = Shutdown::new();
    let router = api::router(state.clone());
    let server = tokio::spawn(veksel_net::serve(
        listener,
        Some(Arc::new(tls)),
        move |conn| veksel_net::with_conn_info(router.clone(), conn),
        ServerLimits::default(),
        shutdown.clone(),
    ));
    tracing::info!(%addr, instance = %config.instance, "authority listening");
    Ok(RunningAuthority {
        addr,
        state,
        shutdown,
        server,
        publisher,
        sequencer,
    })
}

/// Re-signs the configuration on every registry change and well before expiry
/// (X-Road regenerates every 60 s with a 600 s validity).
async fn publish_loop(state: Arc<AppState>) {
    let validity = Duration::from_secs(state.config.conf_validity_secs.max(1));
    let period = (validity / 5)
        .min(Duration::from_secs(60))
        .max(Duration::from_millis(200));
    // A failed publication is retried soon, not a whole period later: gateways
    // would otherwise wait up to a minute for a change the operator already made.
    let mut wait = period;
    loop {
        tokio::select! {
            () = state.conf_changed.notified() => {
                // Coalesce bursts of changes (an enrolment issues several certificates).
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            () = tokio::time::sleep(wait) => {}
        }
        if let Err(e) = oauth::purge(&state).await {
            tracing::warn!(error = %e, "could not forget expired assertion ids");
        }
        wait = match state.publish().await {
            Ok(_) => period,
            Err(e) => {
                tracing::error!(error = %e, "could not publish the global configuration");
                Duration::from_secs(1).min(period)
            }
        };
    }
}

/// Records a registry change in the audit trail and wakes the configuration
/// publisher and the ledger sequencer.
pub(crate) async fn changed(
    state: &AppState,
    who: &tokens::Principal,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
) -> veksel_admin::ApiResult<()> {
    state
        .registry
        .audit(
            state.clock.now_ms(),
            &who.id,
            action,
            subject,
            &detail.to_string(),
        )
        .await?;
    state.conf_changed.notify_one();
    state.ledger_changed.notify_one();
    Ok(())
}
