//! A veksel gateway (X-Road: security server).
//!
//! - **Client side** ([`exchange::outbound`]): information systems call it with
//!   X-Road's Message Protocol for REST (`/r1/...`), unchanged from X-Road.
//! - **Gateway to gateway** ([`exchange::inbound`], [`veksel_proto::peer`]): HTTP/2
//!   over mutual TLS 1.3 with the
//!   gateways' authentication certificates; every request and response signed by the
//!   member's signing key over a descriptor that covers the body digest; bodies
//!   stream.
//! - **Provider side**: services of hosted subsystems, deny-by-default access rights,
//!   metaservices.
//! - **Message log**: both signed descriptors of every exchange, committed before the
//!   response is released.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod archive;
pub mod body;
pub mod capture;
pub mod clients;
pub mod confclient;
pub mod console;
pub mod evidence;
pub mod exchange;
pub mod ledger;
pub mod management;
pub mod merklelog;
pub mod metrics;
pub mod msglog;
pub mod ocsp;
pub mod renewal;
pub mod schema;
pub mod serverconf;
pub mod signing;
pub mod stamper;
pub mod tokens;

use confclient::ConfClient;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use veksel_id::{GatewayId, MemberId, SubsystemId};
use veksel_net::{ServerLimits, Shutdown};
use veksel_pki::ca::make_csr;
use veksel_pki::{KeyFile, certs_from_pem};
use veksel_proto::Clock;
use veksel_proto::conf::Anchor;
use veksel_store::{Db, DbOptions};

/// Why the gateway could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Configuration or data-directory trouble.
    #[error("{0}")]
    Config(String),
    /// Key or certificate trouble.
    #[error(transparent)]
    Pki(#[from] veksel_pki::PkiError),
    /// Database trouble.
    #[error(transparent)]
    Store(#[from] veksel_store::StoreError),
    /// Enrolment with the authority failed.
    #[error("enrolment: {0}")]
    Enrol(String),
}

/// The gateway's configuration, kept as `gateway.json` in its data directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// This gateway's identifier.
    pub id: GatewayId,
    /// Client side (r1) for information systems; plain HTTP.
    pub client_listen: SocketAddr,
    /// Client side over HTTPS, for information systems that authenticate with a TLS
    /// client certificate (registered per subsystem). Off when absent.
    #[serde(default)]
    pub client_tls_listen: Option<SocketAddr>,
    /// Gateway-to-gateway side; mutual TLS. Must match the registered address's port.
    pub peer_listen: SocketAddr,
    /// Admin API, metrics and health; plain HTTP, keep it on loopback.
    pub admin_listen: SocketAddr,
    /// PostgreSQL URL; SQLite in the data directory when absent.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Each message-log commit waits for the disk (power-loss durability). Without it
    /// records still survive a crash of the gateway process.
    #[serde(default = "default_true")]
    pub sync_commit: bool,
    /// Time allowed for the peer gateway's response to start, seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// How the provider's replay guard makes a request id durable: `memory` (with the
    /// exchange's record; the default) or `database` (a commit of its own before the
    /// provider's system is called: for several nodes sharing one database that must
    /// never call a system twice for a replay; see `msglog::replay`).
    #[serde(default)]
    pub replay_claim: ReplayClaimMode,
    /// Time an information system may pause while it sends a request body, seconds;
    /// a longer pause fails the request with `Client.Timeout`.
    #[serde(default = "default_body_idle_timeout")]
    pub body_idle_timeout_secs: u64,
    /// Largest request or response body, bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// In `full` log mode, bodies up to this size are stored with the record.
    #[serde(default = "default_max_logged_body")]
    pub max_logged_body_bytes: u64,
    /// Memory all exchanges together may use for the bodies they keep in `full` log
    /// mode; a body that finds it in use is logged without its content (the record
    /// says why). A quarter is kept for response bodies, so it must be at least 4/3
    /// of `max_logged_body_bytes`. Absent: 256 MiB, or twice `max_logged_body_bytes`
    /// if that is more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_memory_bytes: Option<u64>,
    /// PEM files of CAs that providers' HTTPS information systems chain to.
    #[serde(default)]
    pub backend_ca_files: Vec<PathBuf>,
    /// How often the message log is time-stamped, seconds.
    #[serde(default = "default_stamp_interval")]
    pub stamp_interval_secs: u64,
    /// How long time-stamping may fail before `stamp_failure_mode` applies, seconds
    /// (X-Road's default: 4 hours).
    #[serde(default = "default_stamp_failure_limit")]
    pub stamp_failure_limit_secs: u64,
    /// What to do beyond the limit.
    #[serde(default)]
    pub stamp_failure_mode: stamper::StampFailureMode,
    /// Message-log records older than this move from the database into archive files,
    /// seconds (X-Road keeps 30 days); 0 keeps every record in the database.
    #[serde(default = "default_archive_after")]
    pub archive_after_secs: u64,
    /// Where archive files go; `archive` in the data directory when absent.
    #[serde(default)]
    pub archive_dir: Option<PathBuf>,
    /// How often the archiver looks for old records, seconds.
    #[serde(default = "default_archive_interval")]
    pub archive_interval_secs: u64,
    /// Most records per archive file.
    #[serde(default = "default_archive_max_records")]
    pub archive_max_records: u64,
    /// Operational-monitoring records are deleted after this many seconds (X-Road
    /// keeps 7 days); 0 keeps them.
    #[serde(default = "default_op_monitoring_keep")]
    pub op_monitoring_keep_secs: u64,
    /// Certificates are renewed this long before they expire, seconds.
    #[serde(default = "default_cert_renew_before")]
    pub cert_renew_before_secs: u64,
    /// `/readyz` warns when a certificate expires within this many seconds (renewal
    /// has then been failing for a while).
    #[serde(default = "default_cert_warn_before")]
    pub cert_warn_before_secs: u64,
    /// How often certificates are checked for renewal, seconds.
    #[serde(default = "default_cert_check_interval")]
    pub cert_check_interval_secs: u64,
    /// Members' signing keys live in this PKCS#11 token instead of key files.
    #[serde(default)]
    pub hsm: Option<signing::HsmConfig>,
    /// Sign messages in batches under one signature when they arrive faster than the
    /// key signs (a message that finds the key idle is signed alone, at once). Default:
    /// on.
    #[serde(default)]
    pub batch_signing: Option<bool>,
    /// Witness the network ledger (cosign its checkpoints after checking them).
    #[serde(default = "default_true")]
    pub witness: bool,
    /// How often the gateway witnesses the ledger and anchors its message log, ms.
    #[serde(default = "default_ledger_interval")]
    pub ledger_interval_ms: u64,
    /// The subsystem hosted here as whose relying party people log in to the console
    /// to see who looked up their data (registered with the redirect URI
    /// `{console_url}/console/me/callback`); none: people cannot log in here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub people_client: Option<SubsystemId>,
    /// Where people's browsers reach the console (the admin listener by default,
    /// `http://{admin_listen}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
    /// Whether a person logged in with the network's test login (which believes
    /// any person number) may act in a console role granted to them. Only for
    /// sandboxes and test networks; off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub console_test_officers: bool,
}

fn default_ledger_interval() -> u64 {
    10_000
}

fn default_cert_renew_before() -> u64 {
    30 * 86_400
}
fn default_cert_warn_before() -> u64 {
    14 * 86_400
}
fn default_cert_check_interval() -> u64 {
    3600
}

fn default_archive_after() -> u64 {
    30 * 86_400
}
fn default_archive_interval() -> u64 {
    3600
}
fn default_archive_max_records() -> u64 {
    100_000
}
fn default_op_monitoring_keep() -> u64 {
    7 * 86_400
}

fn default_stamp_interval() -> u64 {
    60
}
fn default_stamp_failure_limit() -> u64 {
    4 * 3600
}

fn default_true() -> bool {
    true
}
fn default_request_timeout() -> u64 {
    60
}
fn default_body_idle_timeout() -> u64 {
    30
}
fn default_max_body() -> u64 {
    8 * 1024 * 1024 * 1024
}
fn default_max_logged_body() -> u64 {
    10 * 1024 * 1024
}
fn default_capture_memory() -> u64 {
    256 * 1024 * 1024
}

impl GatewayConfig {
    /// Defaults for a gateway.
    pub fn new(
        id: GatewayId,
        client_listen: SocketAddr,
        peer_listen: SocketAddr,
        admin_listen: SocketAddr,
    ) -> Self {
        Self {
            id,
            client_listen,
            client_tls_listen: None,
            peer_listen,
            admin_listen,
            database_url: None,
            sync_commit: true,
            request_timeout_secs: default_request_timeout(),
            body_idle_timeout_secs: default_body_idle_timeout(),
            replay_claim: ReplayClaimMode::default(),
            max_body_bytes: default_max_body(),
            max_logged_body_bytes: default_max_logged_body(),
            capture_memory_bytes: None,
            backend_ca_files: Vec::new(),
            stamp_interval_secs: default_stamp_interval(),
            stamp_failure_limit_secs: default_stamp_failure_limit(),
            stamp_failure_mode: stamper::StampFailureMode::default(),
            archive_after_secs: default_archive_after(),
            archive_dir: None,
            archive_interval_secs: default_archive_interval(),
            archive_max_records: default_archive_max_records(),
            op_monitoring_keep_secs: default_op_monitoring_keep(),
            cert_renew_before_secs: default_cert_renew_before(),
            cert_warn_before_secs: default_cert_warn_before(),
            cert_check_interval_secs: default_cert_check_interval(),
            hsm: None,
            batch_signing: None,
            witness: true,
            ledger_interval_ms: default_ledger_interval(),
            people_client: None,
            console_test_officers: false,
            console_url: None,
        }
    }

    /// Where people's browsers reach the console.
    pub fn console_url(&self) -> String {
        self.console_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.admin_listen))
    }

    /// The `full`-mode capture budget in force, bytes.
    pub fn capture_memory(&self) -> u64 {
        self.capture_memory_bytes.unwrap_or_else(|| {
            default_capture_memory().max(self.max_logged_body_bytes.saturating_mul(2))
        })
    }

    /// The archive directory for a gateway in `data_dir`.
    pub fn archive_dir(&self, data_dir: &Path) -> PathBuf {
        self.archive_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("archive"))
    }
}

/// How the provider's replay guard makes a request id durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayClaimMode {
    /// Checked in memory, committed with the exchange's record.
    #[default]
    Memory,
    /// Committed before the provider's system is called.
    Database,
}

/// Files of the data directory.
pub mod files {
    /// Configuration.
    pub const CONFIG: &str = "gateway.json";
    /// The anchor received out of band.
    pub const ANCHOR: &str = "anchor.json";
    /// Authentication key.
    pub const AUTH_KEY: &str = "auth.key";
    /// Authentication certificate.
    pub const AUTH_CERT: &str = "auth.pem";
    /// Directory of member signing keys and certificates.
    pub const SIGNING_DIR: &str = "signing";
    /// Cached global configuration.
    pub const CONF_CACHE: &str = "globalconf.jws";
    /// SQLite database.
    pub const DB: &str = "gateway.db";
    /// The salt of the hashes of the persons requests are about (0600).
    pub const SUBJECT_SALT: &str = "subject.salt";
}

fn signing_stem(member: &MemberId) -> String {
    member.to_string().replace('/', ":")
}

/// A named point on the exchange path where the crash tests stop the process: when
/// `VEKSEL_TEST_CRASH_AT` names it, the process aborts there (as a kill -9 would
/// stop it). Unset, as everywhere but in those tests, it costs one load.
pub fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("VEKSEL_TEST_CRASH_AT").ok())
        .as_deref()
        == Some(name)
    {
        eprintln!("VEKSEL_TEST_CRASH_AT={name}: aborting");
        std::process::abort();
    }
}

pub use veksel_net::error_chain;

pub(crate) fn io_err(path: &Path, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Config(format!("{}: {e}", path.display()))
}

/// Reads the configuration of an initialised gateway.
pub fn read_config(dir: &Path) -> Result<GatewayConfig, GatewayError> {
    let path = dir.join(files::CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    serde_json::from_str(&text).map_err(|e| io_err(&path, e))
}

/// Reads the anchor of an initialised gateway.
pub fn read_anchor(dir: &Path) -> Result<Anchor, GatewayError> {
    let path = dir.join(files::ANCHOR);
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    serde_json::from_str(&text).map_err(|e| io_err(&path, e))
}

/// True if `dir` holds an initialised gateway.
pub fn is_initialised(dir: &Path) -> bool {
    dir.join(files::CONFIG).exists()
}

/// The gateway's keys: its authentication key and the signing keys of the members
/// whose subsystems it hosts.
#[derive(Debug)]
pub struct KeyStore {
    /// Authentication certificate chain (leaf first).
    pub auth_chain: Vec<Vec<u8>>,
    /// Authentication key.
    pub auth_key: KeyFile,
    /// Signers by member.
    pub signers: BTreeMap<MemberId, signing::MemberSigner>,
    /// Authentication certificates replaced by a renewal while this process ran and
    /// not expired: connections opened before the switch still present them.
    pub previous_auth: Vec<Vec<u8>>,
}

/// The gateway's current keys. A renewal replaces them as a whole while exchanges go
/// on: each exchange takes the set current when it starts.
#[derive(Debug)]
pub struct KeyRing {
    current: std::sync::RwLock<Arc<KeyStore>>,
}

impl KeyRing {
    /// Starts with `keys`.
    pub fn new(keys: KeyStore) -> Self {
        Self {
            current: std::sync::RwLock::new(Arc::new(keys)),
        }
    }

    /// The current keys.
    pub fn get(&self) -> Arc<KeyStore> {
        match self.current.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the keys.
    pub fn set(&self, keys: KeyStore) {
        let next = Arc::new(keys);
        match self.current.write() {
            Ok(mut k) => *k = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}

impl KeyStore {
    /// Loads the keys from a data directory.
    pub fn load(dir: &Path) -> Result<Self, GatewayError> {
        let auth_path = dir.join(files::AUTH_CERT);
        let auth_chain = certs_from_pem(
            &std::fs::read_to_string(&auth_path).map_err(|e| io_err(&auth_path, e))?,
        )?;
        let auth_key = KeyFile::load(&dir.join(files::AUTH_KEY))?;
        let config = read_config(dir)?;
        let batch = config.batch_signing.unwrap_or(true);
        let hsm = config.hsm;
        let mut signers = BTreeMap::new();
        let sdir = dir.join(files::SIGNING_DIR);
        if let Ok(entries) = std::fs::read_dir(&sdir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                    continue;
                }
                let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                let member: MemberId = stem
                    .replace(':', "/")
                    .parse()
                    .map_err(|e| io_err(&path, format!("not a member id: {e}")))?;
                let chain =
                    certs_from_pem(&std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?)?;
                let key = signing::load_signer(&path, chain, hsm.as_ref())?;
                signers.insert(
                    member,
                    Arc::new(signing::MessageSigner::new(key, batch, hsm.is_some())),
                );
            }
        }
        Ok(Self {
            auth_chain,
            auth_key,
            signers,
            previous_auth: Vec::new(),
        })
    }

    /// The signer for a member.
    pub fn signer(&self, member: &MemberId) -> Option<signing::MemberSigner> {
        self.signers.get(member).cloned()
    }
}

/// Writes the configuration and anchor of a new gateway into `dir`.
pub fn init(dir: &Path, config: &GatewayConfig, anchor: &Anchor) -> Result<(), GatewayError> {
    std::fs::create_dir_all(dir.join(files::SIGNING_DIR)).map_err(|e| io_err(dir, e))?;
    if is_initialised(dir) {
        return Err(GatewayError::Config(format!(
            "{} is already initialised",
            dir.display()
        )));
    }
    let anchor_text =
        serde_json::to_string_pretty(anchor).map_err(|e| GatewayError::Config(e.to_string()))?;
    std::fs::write(dir.join(files::ANCHOR), anchor_text).map_err(|e| io_err(dir, e))?;
    let text =
        serde_json::to_string_pretty(config).map_err(|e| GatewayError::Config(e.to_string()))?;
    std::fs::write(dir.join(files::CONFIG), text).map_err(|e| io_err(dir, e))?;
    Ok(())
}

/// Obtains certificates from the authority with a one-time enrolment token: an
/// authentication certificate if the gateway has none, and a signing certificate for
/// every member whose subsystems it hosts and that it has no key for yet. Keys are
/// generated here and never leave the data directory.
pub async fn enrol(dir: &Path, token: &str, clock: &Clock) -> Result<Vec<String>, GatewayError> {
    veksel_pki::tls::install_default_provider();
    let config = read_config(dir)?;
    let anchor = read_anchor(dir)?;
    let conf = ConfClient::new(anchor.clone(), dir.join(files::CONF_CACHE), clock.clone())?;
    conf.refresh().await?;
    let state = conf
        .latest()
        .ok_or_else(|| GatewayError::Enrol("no global configuration".into()))?;
    let mut members = vec![config.id.owner().clone()];
    if let Some(gw) = state.index.gateway(&config.id) {
        members.extend(gw.clients.iter().map(|c| c.member().clone()));
    }
    members.sort();
    members.dedup();
    let sdir = dir.join(files::SIGNING_DIR);
    std::fs::create_dir_all(&sdir).map_err(|e| io_err(&sdir, e))?;
    let mut pending_keys = Vec::new();
    let mut signing = Vec::new();
    for m in &members {
        let stem = signing_stem(m);
        if sdir.join(format!("{stem}.pem")).exists() {
            continue;
        }
        let key = signing::NewKey::generate(&config, m)?;
        signing.push(serde_json::json!({"member": m.to_string(), "csr_pem": key.csr(m.code())?}));
        pending_keys.push((m.clone(), key));
    }
    let auth_missing = !dir.join(files::AUTH_CERT).exists();
    let auth_key = if auth_missing {
        Some(KeyFile::generate()?)
    } else {
        None
    };
    let auth_csr = match &auth_key {
        Some(k) => Some(make_csr(k, config.id.code())?),
        None => None,
    };
    if auth_csr.is_none() && signing.is_empty() {
        return Ok(Vec::new());
    }
    let body = serde_json::json!({"auth_csr_pem": auth_csr, "signing": signing});
    let resp = conf
        .http()
        .post(format!("{}/enrol/v1", anchor.authority_url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| GatewayError::Enrol(e.to_string()))?;
    let status = resp.status();
    let answer: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| GatewayError::Enrol(e.to_string()))?;
    if !status.is_success() {
        return Err(GatewayError::Enrol(format!(
            "the authority refused (HTTP {status}): {}",
            answer
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("no message")
        )));
    }
    let mut issued = Vec::new();
    if let Some(key) = auth_key {
        let pem = answer["auth"]["cert_pem"].as_str().ok_or_else(|| {
            GatewayError::Enrol("answer has no authentication certificate".into())
        })?;
        key.save(&dir.join(files::AUTH_KEY))?;
        std::fs::write(dir.join(files::AUTH_CERT), pem).map_err(|e| io_err(dir, e))?;
        issued.push(format!("authentication certificate for {}", config.id));
    }
    let certs = answer["signing"].as_array().cloned().unwrap_or_default();
    for (member, key) in pending_keys {
        let pem = certs
            .iter()
            .find(|c| c["subject"].as_str() == Some(member.to_string().as_str()))
            .and_then(|c| c["cert_pem"].as_str())
            .ok_or_else(|| {
                GatewayError::Enrol(format!("answer has no signing certificate for {member}"))
            })?;
        let stem = signing_stem(&member);
        key.save(&sdir, &stem)?;
        std::fs::write(sdir.join(format!("{stem}.pem")), pem).map_err(|e| io_err(&sdir, e))?;
        issued.push(format!("signing certificate for {member}"));
    }
    Ok(issued)
}

/// Everything the request handlers share.
#[derive(Debug)]
pub struct Gateway {
    /// Configuration.
    pub config: GatewayConfig,
    /// Time source.
    pub clock: Clock,
    /// Global configuration.
    pub conf: Arc<ConfClient>,
    /// Local configuration.
    pub serverconf: serverconf::ServerConfStore,
    /// Keys, replaced when certificates are renewed.
    pub keys: KeyRing,
    /// Data directory.
    pub dir: PathBuf,
    /// Message log writer.
    pub log: msglog::LogWriter,
    /// Database.
    pub db: Db,
    /// Client to peer gateways.
    pub peers: clients::PeerClient,
    /// Client to providers' information systems.
    pub backends: clients::BackendClient,
    /// Metrics.
    pub metrics: metrics::Metrics,
    /// Time-stamping state.
    pub stamper: stamper::Stamper,
    /// This gateway's OCSP responses.
    pub ocsp: ocsp::Staples,
    /// Where message-log archives go.
    pub archive_dir: PathBuf,
    /// The last archiving error, if the last round failed.
    pub archive_error: std::sync::Mutex<Option<String>>,
    /// Why the last renewal round failed or its keys still wait, if so.
    pub renewal_error: renewal::LastError,
    /// The key this gateway cosigns ledger checkpoints with.
    pub cosigner: Arc<veksel_merkle::witness::Cosigner>,
    /// Serialises witnessing: checking the old size and storing the new one are one
    /// step.
    pub witness_lock: tokio::sync::Mutex<()>,
    /// Memory lent to the body copies of `full` log mode.
    pub capture_budget: capture::CaptureBudget,
    /// Peers' batch signatures already checked: one check per batch, not per message.
    pub verified_batches: veksel_proto::batch::VerifiedBatches,
    /// One certificate-renewal round at a time (the periodic check and an operator's
    /// forced renewal both move files in and out of `pending/`).
    pub renewal_lock: tokio::sync::Mutex<()>,
    /// Access tokens this gateway got for its clients' calls.
    pub tokens: tokens::TokenCache,
    /// Sessions of the console's pages.
    pub console: veksel_console::Sessions,
    /// Keys the hashes of the persons requests are about (`subject.salt`).
    subject_key: aws_lc_rs::hmac::Key,
}

impl Gateway {
    /// What `full` log mode keeps of a request body (of the response:
    /// [`capture::CapturePolicy::for_response`]); none in other modes.
    pub fn capture_policy(&self, mode: serverconf::LogMode) -> Option<capture::CapturePolicy> {
        (mode == serverconf::LogMode::Full).then(|| capture::CapturePolicy {
            up_to: self.config.max_logged_body_bytes,
            budget: self.capture_budget.clone(),
            direction: capture::Direction::Request,
        })
    }

    /// This gateway's id.
    pub fn id(&self) -> &GatewayId {
        &self.config.id
    }

    /// The salted hash of a person number, as the message log keeps the person a
    /// request is about: without the salt, which never leaves this gateway, a hash
    /// cannot be tried against the few million possible numbers.
    pub fn subject_hash(&self, person: &str) -> String {
        hex::encode(aws_lc_rs::hmac::sign(&self.subject_key, person.as_bytes()).as_ref())
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct RunningGateway {
    /// Shared state (for tests and the sandbox).
    pub gateway: Arc<Gateway>,
    /// Address of the client side.
    pub client_addr: SocketAddr,
    /// Address of the HTTPS client side, when configured.
    pub client_tls_addr: Option<SocketAddr>,
    /// Address of the gateway-to-gateway side.
    pub peer_addr: SocketAddr,
    /// Address of the admin API.
    pub admin_addr: SocketAddr,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
    writer: Option<msglog::writer::Writer>,
}

impl RunningGateway {
    /// Stops accepting, drains in-flight exchanges, stops background tasks.
    pub async fn stop(self) {
        self.shutdown.trigger();
        for t in self.tasks {
            let _ = t.await;
        }
        for t in self.background {
            t.abort();
            let _ = t.await;
        }
        if let Some(writer) = self.writer {
            self.gateway.log.stop(writer).await;
        }
        self.gateway.db.close().await;
    }
}

/// Pre-bound listeners (tests and the sandbox bind before they know the ports).
#[derive(Debug, Default)]
pub struct Listeners {
    /// Client side.
    pub client: Option<tokio::net::TcpListener>,
    /// HTTPS client side.
    pub client_tls: Option<tokio::net::TcpListener>,
    /// Gateway-to-gateway side.
    pub peer: Option<tokio::net::TcpListener>,
    /// Admin API.
    pub admin: Option<tokio::net::TcpListener>,
}

async fn bind_or(
    l: Option<tokio::net::TcpListener>,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, GatewayError> {
    match l {
        Some(l) => Ok(l),
        None => veksel_net::bind(addr)
            .await
            .map_err(|e| GatewayError::Config(e.to_string())),
    }
}

/// Opens the gateway database as configured.
pub async fn open_db(dir: &Path, config: &GatewayConfig) -> Result<Db, GatewayError> {
    let options = DbOptions {
        sync_commit: config.sync_commit,
        ..DbOptions::default()
    };
    let db = match &config.database_url {
        Some(url) => Db::connect(url, &options).await?,
        None => Db::open_sqlite(&dir.join(files::DB), &options).await?,
    };
    db.migrate("gateway", schema::MIGRATIONS).await?;
    Ok(db)
}

/// Starts an initialised and enrolled gateway.
pub async fn start(
    dir: &Path,
    clock: Clock,
    listeners: Listeners,
) -> Result<RunningGateway, GatewayError> {
    veksel_pki::tls::install_default_provider();
    let config = read_config(dir)?;
    let capture_budget = capture::CaptureBudget::new(config.capture_memory());
    let largest_copy = config.max_logged_body_bytes.div_ceil(capture::UNIT) * capture::UNIT;
    if capture_budget.largest_request_copy() < largest_copy {
        return Err(GatewayError::Config(format!(
            "capture_memory_bytes ({}) must be at least 4/3 of max_logged_body_bytes ({}): a \
             quarter is kept for response bodies, and a request body of the largest size \
             could never be stored",
            config.capture_memory(),
            config.max_logged_body_bytes
        )));
    }
    let anchor = read_anchor(dir)?;
    renewal::recover(dir)?;
    let keys = KeyStore::load(dir)?;
    let conf = Arc::new(ConfClient::new(
        anchor,
        dir.join(files::CONF_CACHE),
        clock.clone(),
    )?);
    if let Err(e) = conf.refresh().await {
        // Keep going on the cached copy while it is valid; exchanges fail with
        // OutdatedGlobalConf otherwise, and /readyz says why.
        tracing::warn!(error = %e, "initial global configuration download failed");
    }
    let db = open_db(dir, &config).await?;
    let serverconf = serverconf::ServerConfStore::load(db.clone()).await?;
    let sqlite_path = config.database_url.is_none().then(|| dir.join(files::DB));
    let (log, writer) = msglog::LogWriter::start(msglog::writer::Target::for_db(
        &db,
        sqlite_path,
        config.sync_commit,
    ))
    .map_err(GatewayError::Config)?;
    // A request stays replayable for its lifetime plus the clock skew allowed; the
    // configuration says how long that is, 10 minutes when none is cached yet.
    let window_ms = conf
        .latest()
        .map(|c| {
            let s = &c.conf().settings;
            s.request_ttl_ms.saturating_add(s.max_clock_skew_ms)
        })
        .unwrap_or(600_000);
    log.replays
        .load(msglog::unexpired_claims(&db, clock.now_ms(), window_ms).await?);

    let verifier = veksel_pki::tls::GatewayPeerVerifier::new(conf.clone());
    // One replaceable certificate for every TLS role, so a renewal swaps it everywhere.
    let peer_cert = veksel_pki::tls::StapledCert::new(&keys.auth_chain, keys.auth_key.rustls_key())
        .map_err(|e| GatewayError::Config(format!("TLS: {e}")))?;
    let peer_client_tls =
        veksel_pki::tls::gateway_client_config_with(peer_cert.clone(), verifier.clone())
            .map_err(|e| GatewayError::Config(format!("TLS client: {e}")))?;
    let server_tls = veksel_pki::tls::gateway_server_config(peer_cert.clone(), verifier)
        .map_err(|e| GatewayError::Config(format!("TLS server: {e}")))?;
    let mut backend_roots = Vec::new();
    for f in &config.backend_ca_files {
        backend_roots.extend(certs_from_pem(
            &std::fs::read_to_string(f).map_err(|e| io_err(f, e))?,
        )?);
    }
    let subject_key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        &veksel_pki::keys::load_or_create_salt(&dir.join(files::SUBJECT_SALT))?,
    );
    let backends = clients::backend_client(&backend_roots)
        .map_err(|e| GatewayError::Config(format!("backend TLS: {e}")))?;

    let gateway = Arc::new(Gateway {
        peers: clients::peer_client(Arc::new(peer_client_tls)),
        backends,
        metrics: metrics::Metrics::new(),
        stamper: stamper::Stamper::default(),
        ocsp: ocsp::Staples::new(peer_cert),
        archive_dir: config.archive_dir(dir),
        archive_error: std::sync::Mutex::new(None),
        renewal_error: std::sync::Mutex::new(None),
        cosigner: Arc::new(ledger::load_cosigner(dir, &config.id).map_err(GatewayError::Config)?),
        witness_lock: tokio::sync::Mutex::new(()),
        capture_budget,
        verified_batches: veksel_proto::batch::VerifiedBatches::default(),
        renewal_lock: tokio::sync::Mutex::new(()),
        tokens: tokens::TokenCache::default(),
        console: veksel_console::Sessions::default(),
        subject_key,
        config: config.clone(),
        clock: clock.clone(),
        conf: conf.clone(),
        serverconf: serverconf.clone(),
        keys: KeyRing::new(keys),
        dir: dir.to_owned(),
        log,
        db: db.clone(),
    });

    // Peers accept this gateway only with fresh OCSP responses: get them first.
    if let Err(e) = ocsp::refresh(&gateway).await {
        tracing::warn!(error = %e, "initial OCSP refresh failed");
    }
    let client_l = bind_or(listeners.client, config.client_listen).await?;
    let peer_l = bind_or(listeners.peer, config.peer_listen).await?;
    let admin_l = bind_or(listeners.admin, config.admin_listen).await?;
    let addr = |l: &tokio::net::TcpListener| {
        l.local_addr()
            .map_err(|e| GatewayError::Config(e.to_string()))
    };
    let (client_addr, peer_addr, admin_addr) = (addr(&client_l)?, addr(&peer_l)?, addr(&admin_l)?);
    let shutdown = Shutdown::new();

    let g = gateway.clone();
    let client_task = tokio::spawn(veksel_net::serve(
        client_l,
        None,
        move |conn| exchange::outbound::service(g.clone(), conn),
        ServerLimits::default(),
        shutdown.clone(),
    ));
    let g = gateway.clone();
    let peer_task = tokio::spawn(veksel_net::serve(
        peer_l,
        Some(Arc::new(server_tls)),
        move |conn| exchange::inbound::service(g.clone(), conn),
        ServerLimits {
            // Peers pool their connections for 90 s (clients::peer_client): closing
            // idle ones after that keeps a pooled request from racing the close.
            // Only gateways with registered certificates get this far.
            idle_timeout: std::time::Duration::from_secs(120),
            ..ServerLimits::default()
        },
        shutdown.clone(),
    ));
    let mut tasks = Vec::new();
    let mut client_tls_addr = None;
    if let Some(addr) = config.client_tls_listen {
        let tls =
            veksel_pki::tls::information_system_server_config(gateway.ocsp.tls_cert().clone())
                .map_err(|e| GatewayError::Config(format!("client-side TLS: {e}")))?;
        let listener = bind_or(listeners.client_tls, addr).await?;
        client_tls_addr = Some(
            listener
                .local_addr()
                .map_err(|e| GatewayError::Config(e.to_string()))?,
        );
        let g = gateway.clone();
        tasks.push(tokio::spawn(veksel_net::serve(
            listener,
            Some(Arc::new(tls)),
            move |conn| exchange::outbound::service(g.clone(), conn),
            ServerLimits::default(),
            shutdown.clone(),
        )));
    }
    let router = admin::router(gateway.clone()).merge(console::router(gateway.clone()));
    let admin_task = tokio::spawn(veksel_net::serve(
        admin_l,
        None,
        move |_conn| hyper_util::service::TowerToHyperService::new(router.clone()),
        ServerLimits::default(),
        shutdown.clone(),
    ));
    let poll_task = tokio::spawn(conf.clone().poll_loop());
    let stamp_task = tokio::spawn(stamper::stamp_loop(gateway.clone()));
    let ocsp_task = tokio::spawn(ocsp::refresh_loop(gateway.clone()));
    let archive_task = tokio::spawn(archive::archive_loop(gateway.clone()));
    let renewal_task = tokio::spawn(renewal::renewal_loop(gateway.clone()));
    let ledger_task = tokio::spawn(ledger::ledger_loop(gateway.clone()));
    let janitor = tokio::spawn(msglog::replay_guard_janitor(
        db.clone(),
        clock.clone(),
        gateway.log.replays.clone(),
    ));
    let sc = serverconf.clone();
    let reload = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            if let Err(e) = sc.reload_if_changed().await {
                tracing::warn!(error = %e, "reloading local configuration failed");
            }
        }
    });
    tracing::info!(gateway = %config.id, %client_addr, %peer_addr, %admin_addr, "gateway listening");
    Ok(RunningGateway {
        gateway,
        client_addr,
        peer_addr,
        admin_addr,
        shutdown,
        client_tls_addr,
        tasks: {
            tasks.extend([client_task, peer_task, admin_task]);
            tasks
        },
        background: vec![
            poll_task,
            stamp_task,
            ocsp_task,
            archive_task,
            renewal_task,
            ledger_task,
            janitor,
            reload,
        ],
        writer: Some(writer),
    })
}

/// Verifies a gateway's whole message log (see [`merklelog::verify`]).
pub async fn verify_log(
    dir: &Path,
) -> Result<Result<merklelog::VerifyReport, veksel_verify::log::LogVerifyError>, GatewayError> {
    let config = read_config(dir)?;
    let db = open_db(dir, &config).await?;
    // Time stamps are checked against the CAs of the cached global configuration.
    let roots = ConfClient::new(
        read_anchor(dir)?,
        dir.join(files::CONF_CACHE),
        Clock::system(),
    )
    .ok()
    .and_then(|c| c.latest())
    .map(|s| s.roots.clone());
    let result = merklelog::verify(
        &db,
        &config.archive_dir(dir),
        &stamper::origin(&config.id),
        roots.as_ref(),
    )
    .await;
    db.close().await;
    Ok(result)
}

/// A gateway's configuration, database and cached signed global configuration, for
/// commands that work on its data directory.
async fn open_offline(dir: &Path) -> Result<(GatewayConfig, Db, String), GatewayError> {
    let config = read_config(dir)?;
    let conf = std::fs::read_to_string(dir.join(files::CONF_CACHE))
        .map_err(|e| GatewayError::Config(format!("no cached global configuration: {e}")))?;
    let db = open_db(dir, &config).await?;
    Ok((config, db, conf))
}

/// Runs one retention round on a gateway's data directory (the gateway may be running:
/// archiving does not touch the log head).
pub async fn archive_log(dir: &Path) -> Result<Vec<archive::Archived>, GatewayError> {
    let (config, db, conf) = open_offline(dir).await?;
    let result = archive::round(
        &db,
        &config.archive_dir(dir),
        &config,
        &conf,
        Clock::system().now_ms(),
    )
    .await;
    db.close().await;
    result.map_err(|e| GatewayError::Config(e.to_string()))
}

/// Exports the evidence bundle of one exchange from a gateway's data directory.
pub async fn export_evidence(
    dir: &Path,
    request_id: &str,
    side: &str,
) -> Result<veksel_verify::evidence::Bundle, GatewayError> {
    let (config, db, conf) = open_offline(dir).await?;
    let result = evidence::export(
        &db,
        &config.archive_dir(dir),
        &config.id,
        request_id,
        side,
        &conf,
    )
    .await;
    db.close().await;
    result.map_err(|e| GatewayError::Config(e.to_string()))
}

/// Creates an admin API token for the gateway (stored hashed; the secret is returned once).
pub async fn create_admin_token(
    dir: &Path,
    role: &str,
    description: &str,
    clock: &Clock,
) -> Result<String, GatewayError> {
    let config = read_config(dir)?;
    let db = open_db(dir, &config).await?;
    let (_, token) = veksel_store::tokens::create(&db, role, description, clock.now_ms()).await?;
    db.close().await;
    Ok(token)
}
