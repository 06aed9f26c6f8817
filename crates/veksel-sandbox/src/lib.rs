//! The sandbox: a whole veksel network on one machine — an authority, three
//! organisations with a gateway each, synthetic registers behind them, access rights
//! that allow some calls and deny others — set up through the same APIs an operator
//! uses, and described in `sandbox.json`.
//!
//! The integration tests build their networks with it too, on ephemeral ports and on
//! SQLite or PostgreSQL.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod backends;
pub mod bench;
pub mod slow_keys;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use veksel_authority::{AuthorityConfig, RunningAuthority};
use veksel_gateway::{GatewayConfig, Listeners, RunningGateway};
use veksel_proto::Clock;

/// The instance identifier of the sandbox network.
pub const INSTANCE: &str = "DEV";

/// One organisation of the sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Org {
    /// Member class.
    pub class: &'static str,
    /// Member code.
    pub code: &'static str,
    /// Legal name.
    pub name: &'static str,
    /// Its subsystem.
    pub subsystem: &'static str,
    /// Subsystem name.
    pub subsystem_name: &'static str,
    /// Short name used for directories.
    pub slug: &'static str,
}

/// The population register's index in [`ORGS`]: its console shows people who
/// looked them up.
pub const POPULATION_INDEX: usize = 0;

/// The three organisations: a population register agency, a tax agency, a municipality.
pub const ORGS: [Org; 3] = [
    Org {
        class: "GOV",
        code: "10000001",
        name: "Population Register Agency",
        subsystem: "population",
        subsystem_name: "Population register",
        slug: "population",
    },
    Org {
        class: "GOV",
        code: "10000002",
        name: "Tax Agency",
        subsystem: "tax",
        subsystem_name: "Tax registers",
        slug: "tax",
    },
    Org {
        class: "MUN",
        code: "30000003",
        name: "Municipality of Sermersooq",
        subsystem: "casework",
        subsystem_name: "Social casework",
        slug: "municipality",
    },
];

impl Org {
    /// `DEV/CLASS/CODE`.
    pub fn member(&self) -> String {
        format!("{INSTANCE}/{}/{}", self.class, self.code)
    }
    /// `DEV/CLASS/CODE/SUBSYSTEM`.
    pub fn subsystem_id(&self) -> String {
        format!("{}/{}", self.member(), self.subsystem)
    }
    /// `DEV/CLASS/CODE/gw1`.
    pub fn gateway_id(&self) -> String {
        format!("{}/gw1", self.member())
    }
}

/// Ports of every listener of the sandbox.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ports {
    /// Authority HTTPS.
    pub authority: u16,
    /// Gateway client sides, in [`ORGS`] order.
    pub client: [u16; 3],
    /// Gateway-to-gateway listeners.
    pub peer: [u16; 3],
    /// Gateway admin APIs.
    pub admin: [u16; 3],
    /// Population register backend.
    pub population_backend: u16,
    /// Tax registers backend.
    pub tax_backend: u16,
    /// Diagnostics backend.
    pub diagnostics_backend: u16,
}

impl Ports {
    /// The default layout: authority 4400, client sides 8080-8082, gateway peers
    /// 5500-5502, admin APIs 4410-4412, backends 9001-9003.
    pub fn default_layout() -> Self {
        Self {
            authority: 4400,
            client: [8081, 8082, 8080],
            peer: [5501, 5502, 5500],
            admin: [4411, 4412, 4410],
            population_backend: 9001,
            tax_backend: 9002,
            diagnostics_backend: 9003,
        }
    }
    /// Zero everywhere: let the kernel choose (tests).
    pub fn ephemeral() -> Self {
        Self {
            authority: 0,
            client: [0; 3],
            peer: [0; 3],
            admin: [0; 3],
            population_backend: 0,
            tax_backend: 0,
            diagnostics_backend: 0,
        }
    }
}

/// Where the nodes keep their data.
#[derive(Debug, Clone)]
pub enum Databases {
    /// SQLite files in each node's data directory.
    Sqlite,
    /// PostgreSQL: URLs for the authority and the three gateways.
    Postgres {
        /// Authority database URL.
        authority: String,
        /// Gateway database URLs, in [`ORGS`] order.
        gateways: [String; 3],
    },
}

impl Databases {
    /// PostgreSQL databases named after the one in `url`: `{name}_authority` and
    /// `{name}_{organisation}` for each gateway, created when missing.
    pub async fn postgres_with_prefix(url: &str) -> Result<Self> {
        let prefix = veksel_store::postgres_database_name(url).ok_or_else(|| {
            anyhow!("{url}: name a database (used as the prefix of the sandbox's)")
        })?;
        let database = |node: &str| {
            let name = format!("{prefix}_{node}");
            async move { veksel_store::ensure_postgres_database(url, &name).await }
        };
        Ok(Databases::Postgres {
            authority: database("authority").await?,
            gateways: [
                database(ORGS[0].slug).await?,
                database(ORGS[1].slug).await?,
                database(ORGS[2].slug).await?,
            ],
        })
    }
}

/// How to run the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Data directory; reused if it holds a sandbox already.
    pub data_dir: PathBuf,
    /// Ports on first start (later starts reuse the ones in `sandbox.json`).
    pub ports: Ports,
    /// Databases.
    pub databases: Databases,
    /// Validity of each signed global configuration, seconds.
    pub conf_validity_secs: u64,
    /// How often gateways poll the authority, seconds.
    pub conf_refresh_secs: u64,
    /// Time source shared by all nodes.
    pub clock: Clock,
    /// Message-log commits wait for the disk.
    pub sync_commit: bool,
    /// Oldest OCSP response gateways accept from each other, seconds.
    pub ocsp_freshness_secs: u64,
    /// How often each gateway time-stamps its message log, seconds.
    pub stamp_interval_secs: u64,
    /// Gateways (by [`ORGS`] index) whose members' signing keys live in a PKCS#11
    /// token instead of key files; applies when the gateway is first set up.
    pub hsm: std::collections::BTreeMap<usize, veksel_gateway::signing::HsmConfig>,
    /// How often the authority sequences the ledger and the gateways witness it, ms.
    pub ledger_interval_ms: u64,
    /// How people log in: the test login, or an external provider.
    pub people_login: veksel_authority::oidc::PeopleLogin,
}

impl SandboxOptions {
    /// Defaults for `veksel sandbox`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            ports: Ports::default_layout(),
            databases: Databases::Sqlite,
            conf_validity_secs: 600,
            conf_refresh_secs: 30,
            clock: Clock::system(),
            sync_commit: true,
            ocsp_freshness_secs: veksel_proto::conf::Settings::default().ocsp_freshness_secs,
            stamp_interval_secs: 60,
            hsm: std::collections::BTreeMap::new(),
            ledger_interval_ms: 1000,
            // A test network: people log in with the test login.
            people_login: veksel_authority::oidc::PeopleLogin {
                test_login: true,
                external: None,
                // People granted a role sign in to the consoles with the test
                // login too: a sandbox has nobody's real identity.
                test_officers: true,
            },
        }
    }
}

/// Where (under the authority's data directory) the sandbox's ledger is also
/// written as static tlog-tiles files.
pub const LEDGER_TILES_DIR: &str = "ledger-tiles";

/// One gateway as described in `sandbox.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayInfo {
    /// Gateway id.
    pub id: String,
    /// Owner's name.
    pub owner: String,
    /// The subsystem it hosts.
    pub subsystem: String,
    /// Base URL of the client side (r1).
    pub client_url: String,
    /// `host:port` of the gateway-to-gateway listener.
    pub peer_address: String,
    /// Base URL of the admin API.
    pub admin_url: String,
    /// Admin API token (sandbox only; keep real tokens secret).
    pub admin_token: String,
    /// Data directory.
    pub data_dir: PathBuf,
}

/// One service as described in `sandbox.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Service id.
    pub id: String,
    /// What it is.
    pub description: String,
    /// Who may call what.
    pub access: Vec<String>,
}

/// One call to try.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Example {
    /// What it shows.
    pub description: String,
    /// The command.
    pub curl: String,
    /// What to expect.
    pub expect: String,
}

/// The machine-readable description of the network (`sandbox.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxInfo {
    /// Instance.
    pub instance: String,
    /// Authority HTTPS base URL.
    pub authority_url: String,
    /// Authority admin token (sandbox only).
    pub authority_admin_token: String,
    /// The anchor file gateways trust.
    pub anchor_file: PathBuf,
    /// The authority's CA certificate (for `curl --cacert`).
    pub authority_ca_file: PathBuf,
    /// Gateways, in [`ORGS`] order.
    pub gateways: Vec<GatewayInfo>,
    /// Services and their access rights.
    pub services: Vec<ServiceInfo>,
    /// Calls to try.
    pub examples: Vec<Example>,
    /// Ports, reused on the next start.
    pub ports: Ports,
}

/// File name of the network description in the data directory.
pub const SANDBOX_JSON: &str = "sandbox.json";

/// A running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    /// The description.
    pub info: SandboxInfo,
    /// The authority (absent after [`Sandbox::stop_authority`]).
    pub authority: Option<RunningAuthority>,
    authority_dir: PathBuf,
    clock: Clock,
    /// The gateways, in [`ORGS`] order (`None` while stopped).
    pub gateways: Vec<Option<RunningGateway>>,
    backends: Vec<tokio::task::JoinHandle<()>>,
    backend_shutdown: veksel_net::Shutdown,
}

async fn listen(port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    veksel_net::bind(addr).await.map_err(|e| {
        anyhow!(
            "{e} (is another sandbox running? use --data-dir with another directory or stop it)"
        )
    })
}

fn port_of(l: &TcpListener) -> Result<u16> {
    Ok(l.local_addr()?.port())
}

struct Bound {
    authority: TcpListener,
    client: Vec<TcpListener>,
    peer: Vec<TcpListener>,
    admin: Vec<TcpListener>,
    backends: [TcpListener; 3],
}

impl Bound {
    async fn bind(p: &Ports) -> Result<Self> {
        let mut client = Vec::new();
        let mut peer = Vec::new();
        let mut admin = Vec::new();
        for i in 0..3 {
            client.push(listen(p.client[i]).await?);
            peer.push(listen(p.peer[i]).await?);
            admin.push(listen(p.admin[i]).await?);
        }
        Ok(Self {
            authority: listen(p.authority).await?,
            client,
            peer,
            admin,
            backends: [
                listen(p.population_backend).await?,
                listen(p.tax_backend).await?,
                listen(p.diagnostics_backend).await?,
            ],
        })
    }

    fn ports(&self) -> Result<Ports> {
        let three = |v: &[TcpListener]| -> Result<[u16; 3]> {
            Ok([port_of(&v[0])?, port_of(&v[1])?, port_of(&v[2])?])
        };
        Ok(Ports {
            authority: port_of(&self.authority)?,
            client: three(&self.client)?,
            peer: three(&self.peer)?,
            admin: three(&self.admin)?,
            population_backend: port_of(&self.backends[0])?,
            tax_backend: port_of(&self.backends[1])?,
            diagnostics_backend: port_of(&self.backends[2])?,
        })
    }
}

/// An HTTP client for the sandbox's own API calls, trusting the authority's CA.
fn api_client(anchor: &veksel_proto::conf::Anchor) -> Result<reqwest::Client> {
    let roots = veksel_pki::certs_from_pem(&anchor.authority_tls_ca_pem)?;
    let tls = veksel_pki::tls::https_client_config(&roots)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()?)
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let mut req = client.request(method.clone(), url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("{method} {url}: HTTP {status}: {text}");
    }
    Ok(if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text)?
    })
}

fn colon(id: &str) -> String {
    id.replace('/', ":")
}

impl Sandbox {
    /// Starts the sandbox, creating it on first use.
    pub async fn start(options: SandboxOptions) -> Result<Self> {
        veksel_pki::tls::install_default_provider();
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating {}", options.data_dir.display()))?;
        let info_path = options.data_dir.join(SANDBOX_JSON);
        let existing: Option<SandboxInfo> = match std::fs::read_to_string(&info_path) {
            Ok(t) => Some(
                serde_json::from_str(&t)
                    .with_context(|| format!("reading {}", info_path.display()))?,
            ),
            Err(_) => None,
        };
        let ports = existing.as_ref().map_or(options.ports, |i| i.ports);
        let bound = Bound::bind(&ports).await?;
        let ports = bound.ports()?;
        let Bound {
            authority: authority_listener,
            client,
            peer,
            admin,
            backends: backend_listeners,
        } = bound;

        let backend_shutdown = veksel_net::Shutdown::new();
        let routers = [
            backends::population_register(),
            backends::tax_registers(),
            backends::diagnostics(),
        ];
        let mut backend_tasks = Vec::new();
        for (listener, router) in backend_listeners.into_iter().zip(routers) {
            backend_tasks.push(tokio::spawn(veksel_net::serve(
                listener,
                None,
                move |_c| hyper_util_service(router.clone()),
                veksel_net::ServerLimits::default(),
                backend_shutdown.clone(),
            )));
        }

        let authority_dir = options.data_dir.join("authority");
        let fresh = existing.is_none() || !veksel_authority::is_initialised(&authority_dir);
        let authority_url = format!("https://127.0.0.1:{}", ports.authority);
        let mut admin_token = existing
            .as_ref()
            .map(|i| i.authority_admin_token.clone())
            .unwrap_or_default();
        if fresh {
            let mut config = AuthorityConfig::new(
                INSTANCE,
                SocketAddr::from(([127, 0, 0, 1], ports.authority)),
                &authority_url,
                vec!["127.0.0.1".into(), "localhost".into()],
            );
            config.conf_validity_secs = options.conf_validity_secs;
            config.settings.refresh_interval_secs = options.conf_refresh_secs;
            config.settings.ocsp_freshness_secs = options.ocsp_freshness_secs;
            config.ledger_interval_ms = options.ledger_interval_ms;
            config.ledger_tiles_dir = Some(PathBuf::from(LEDGER_TILES_DIR));
            config.people_login = Some(options.people_login.clone());
            if let Databases::Postgres { authority, .. } = &options.databases {
                config.database_url = Some(authority.clone());
            }
            let outcome = veksel_authority::init(&authority_dir, config, &options.clock).await?;
            admin_token = outcome.admin_token;
        }
        let authority = veksel_authority::start(
            &authority_dir,
            options.clock.clone(),
            Some(authority_listener),
        )
        .await?;
        let anchor = veksel_authority::read_anchor(&authority_dir)?;
        let api = api_client(&anchor)?;

        let mut enrolment_tokens = Vec::new();
        if fresh {
            enrolment_tokens = register_network(&api, &authority_url, &admin_token, &ports).await?;
        }

        let mut gateways = Vec::new();
        let mut infos = Vec::new();
        for (i, ((c, p), a)) in client.into_iter().zip(peer).zip(admin).enumerate() {
            let org = ORGS[i];
            let dir = options.data_dir.join(org.slug);
            let mut gw_admin_token = existing
                .as_ref()
                .and_then(|e| e.gateways.get(i))
                .map(|g| g.admin_token.clone())
                .unwrap_or_default();
            if fresh || !veksel_gateway::is_initialised(&dir) {
                let mut config = GatewayConfig::new(
                    org.gateway_id().parse()?,
                    SocketAddr::from(([127, 0, 0, 1], ports.client[i])),
                    SocketAddr::from(([127, 0, 0, 1], ports.peer[i])),
                    SocketAddr::from(([127, 0, 0, 1], ports.admin[i])),
                );
                config.sync_commit = options.sync_commit;
                config.stamp_interval_secs = options.stamp_interval_secs;
                config.hsm = options.hsm.get(&i).cloned();
                config.ledger_interval_ms = options.ledger_interval_ms;
                if i == POPULATION_INDEX {
                    config.people_client = Some(org.subsystem_id().parse()?);
                    config.console_test_officers = true;
                }
                if let Databases::Postgres { gateways, .. } = &options.databases {
                    config.database_url = Some(gateways[i].clone());
                }
                veksel_gateway::init(&dir, &config, &anchor)?;
                let token = enrolment_tokens
                    .get(i)
                    .ok_or_else(|| anyhow!("no enrolment token for {}", org.gateway_id()))?;
                veksel_gateway::enrol(&dir, token, &options.clock).await?;
                gw_admin_token =
                    veksel_gateway::create_admin_token(&dir, "admin", "sandbox", &options.clock)
                        .await?;
            }
            let running = veksel_gateway::start(
                &dir,
                options.clock.clone(),
                Listeners {
                    client: Some(c),
                    peer: Some(p),
                    admin: Some(a),
                    client_tls: None,
                },
            )
            .await?;
            infos.push(GatewayInfo {
                id: org.gateway_id(),
                owner: org.name.to_owned(),
                subsystem: org.subsystem_id(),
                client_url: format!("http://127.0.0.1:{}", ports.client[i]),
                peer_address: format!("127.0.0.1:{}", ports.peer[i]),
                admin_url: format!("http://127.0.0.1:{}", ports.admin[i]),
                admin_token: gw_admin_token,
                data_dir: dir,
            });
            gateways.push(running);
        }
        if fresh {
            configure_gateways(&infos, &ports).await?;
            let witnesses: Vec<String> = gateways
                .iter()
                .map(|g| g.gateway.cosigner.verifier_key())
                .collect();
            set_ledger_policy(&api, &authority_url, &admin_token, &witnesses).await?;
        }
        // Every gateway must see every other gateway's certificate before traffic flows:
        // publish now (the publisher would, a moment later) and have each one fetch it.
        authority.state.publish().await?;
        for g in &gateways {
            g.gateway.conf.refresh().await?;
        }
        let info = SandboxInfo {
            instance: INSTANCE.to_owned(),
            authority_url,
            authority_admin_token: admin_token,
            anchor_file: authority_dir.join(veksel_authority::files::ANCHOR),
            authority_ca_file: authority_dir.join(veksel_authority::files::CA_CERT),
            examples: examples(&infos),
            services: services_description(),
            gateways: infos,
            ports,
        };
        write_private(&info_path, &serde_json::to_string_pretty(&info)?)?;
        Ok(Self {
            info,
            authority: Some(authority),
            authority_dir,
            clock: options.clock.clone(),
            gateways: gateways.into_iter().map(Some).collect(),
            backends: backend_tasks,
            backend_shutdown,
        })
    }

    /// Stops every node cleanly.
    pub async fn stop(self) {
        for g in self.gateways.into_iter().flatten() {
            g.stop().await;
        }
        if let Some(a) = self.authority {
            a.stop().await;
        }
        self.backend_shutdown.trigger();
        for b in self.backends {
            let _ = b.await;
        }
    }

    /// Stops the authority only; the gateways go on with their cached configuration.
    pub async fn stop_authority(&mut self) {
        if let Some(a) = self.authority.take() {
            a.stop().await;
        }
    }

    /// Starts the authority again after [`Sandbox::stop_authority`], on its old port.
    pub async fn start_authority(&mut self) -> Result<()> {
        if self.authority.is_none() {
            let listener = listen(self.info.ports.authority).await?;
            self.authority = Some(
                veksel_authority::start(&self.authority_dir, self.clock.clone(), Some(listener))
                    .await?,
            );
        }
        Ok(())
    }

    /// Stops one gateway (index in [`ORGS`]); [`Sandbox::start_gateway`] brings it back.
    pub async fn stop_gateway(&mut self, i: usize) {
        if let Some(g) = self.gateways.get_mut(i).and_then(Option::take) {
            g.stop().await;
        }
    }

    /// Starts a gateway stopped with [`Sandbox::stop_gateway`] on its old ports.
    pub async fn start_gateway(&mut self, i: usize) -> Result<()> {
        let peer = listen(self.info.ports.peer[i]).await?;
        self.start_gateway_with_peer(i, peer).await
    }

    /// Starts a stopped gateway with its gateway-to-gateway side on `peer` instead of
    /// its registered address (tests put an impostor at that address).
    pub async fn start_gateway_with_peer(&mut self, i: usize, peer: TcpListener) -> Result<()> {
        let p = self.info.ports;
        let running = veksel_gateway::start(
            &self.info.gateways[i].data_dir,
            self.clock.clone(),
            Listeners {
                client: Some(listen(p.client[i]).await?),
                peer: Some(peer),
                admin: Some(listen(p.admin[i]).await?),
                client_tls: None,
            },
        )
        .await?;
        running.gateway.conf.refresh().await?;
        if let Some(slot) = self.gateways.get_mut(i) {
            *slot = Some(running);
        }
        Ok(())
    }

    /// The running gateway of an organisation (index in [`ORGS`]), if it runs.
    pub fn gateway(&self, i: usize) -> Option<&Arc<veksel_gateway::Gateway>> {
        self.gateways
            .get(i)
            .and_then(Option::as_ref)
            .map(|g| &g.gateway)
    }
}

fn hyper_util_service(
    router: axum::Router,
) -> hyper_util::service::TowerToHyperService<axum::Router> {
    hyper_util::service::TowerToHyperService::new(router)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Registers members, subsystems, gateways and the global group; returns the
/// gateways' enrolment tokens in [`ORGS`] order.
async fn register_network(
    api: &reqwest::Client,
    url: &str,
    token: &str,
    ports: &Ports,
) -> Result<Vec<String>> {
    use reqwest::Method;
    let mut tokens = Vec::new();
    for org in ORGS {
        call(
            api,
            Method::POST,
            &format!("{url}/api/v1/members"),
            token,
            Some(json!({"id": org.member(), "name": org.name})),
        )
        .await?;
        call(
            api,
            Method::POST,
            &format!("{url}/api/v1/members/{}/subsystems", colon(&org.member())),
            token,
            Some(json!({"code": org.subsystem, "name": org.subsystem_name})),
        )
        .await?;
    }
    for (i, org) in ORGS.iter().enumerate() {
        let created = call(
            api,
            Method::POST,
            &format!("{url}/api/v1/gateways"),
            token,
            Some(
                json!({"id": org.gateway_id(), "address": format!("127.0.0.1:{}", ports.peer[i])}),
            ),
        )
        .await?;
        call(
            api,
            Method::PUT,
            &format!(
                "{url}/api/v1/gateways/{}/clients/{}",
                colon(&org.gateway_id()),
                colon(&org.subsystem_id())
            ),
            token,
            None,
        )
        .await?;
        tokens.push(
            created["token"]
                .as_str()
                .ok_or_else(|| anyhow!("no enrolment token in {created}"))?
                .to_owned(),
        );
    }
    call(
        api,
        Method::POST,
        &format!("{url}/api/v1/global-groups"),
        token,
        Some(
            json!({"code": "sandbox-members", "description": "Every organisation of the sandbox"}),
        ),
    )
    .await?;
    for org in ORGS {
        call(
            api,
            Method::PUT,
            &format!(
                "{url}/api/v1/global-groups/sandbox-members/members/{}",
                colon(&org.subsystem_id())
            ),
            token,
            None,
        )
        .await?;
    }
    Ok(tokens)
}

fn rule(subject: serde_json::Value, service: &str, method: &str, path: &str) -> serde_json::Value {
    json!({"subject": subject, "service_code": service, "endpoint": {"method": method, "path": path}})
}

/// Configures hosted subsystems, services, access rights and local groups through
/// each gateway's admin API.
/// The sandbox's witness policy: the ledger's checkpoints are published once a
/// majority of the gateways has cosigned them.
async fn set_ledger_policy(
    api: &reqwest::Client,
    url: &str,
    token: &str,
    witness_keys: &[String],
) -> Result<()> {
    let status: serde_json::Value = call(
        api,
        reqwest::Method::GET,
        &format!("{url}/api/v1/ledger"),
        token,
        None,
    )
    .await?;
    let log_key = status["verifier_key"]
        .as_str()
        .ok_or_else(|| anyhow!("the authority names no ledger key"))?;
    let mut policy = format!("log {log_key}\n");
    let mut names = Vec::new();
    for vkey in witness_keys {
        let name = vkey.split('+').next().unwrap_or_default();
        policy.push_str(&format!("witness {name} {vkey}\n"));
        names.push(name.to_owned());
    }
    let majority = names.len() / 2 + 1;
    policy.push_str(&format!(
        "group gateways {majority} {}\nquorum gateways\n",
        names.join(" ")
    ));
    let resp = api
        .put(format!("{url}/api/v1/ledger/policy"))
        .bearer_auth(token)
        .body(policy)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(anyhow!(
            "setting the ledger policy: HTTP {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        ));
    }
    Ok(())
}

async fn configure_gateways(gws: &[GatewayInfo], ports: &Ports) -> Result<()> {
    use reqwest::Method;
    let api = reqwest::Client::new();
    let [population, tax, municipality] = ORGS;
    let everyone = json!({"type": "global_group", "id": format!("{INSTANCE}/sandbox-members")});
    for (i, org) in ORGS.iter().enumerate() {
        let g = &gws[i];
        call(
            &api,
            Method::PUT,
            &format!("{}/api/v1/clients/{}", g.admin_url, colon(&org.subsystem_id())),
            &g.admin_token,
            Some(json!({"log_mode": if i == 0 { "full" } else { "metadata" }, "allow_loopback_http": true})),
        )
        .await?;
    }
    let pop = &gws[0];
    let pop_url = format!(
        "{}/api/v1/clients/{}",
        pop.admin_url,
        colon(&population.subsystem_id())
    );
    let persons_openapi = json!({
        "openapi": "3.0.3",
        "info": {"title": "Persons (synthetic population register)", "version": "1.0.0"},
        "paths": {
            "/": {"get": {"summary": "Search by family name", "parameters": [{"name": "name", "in": "query", "schema": {"type": "string"}}], "responses": {"200": {"description": "Matches"}}}},
            "/{id}": {"get": {"summary": "One person by id", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}], "responses": {"200": {"description": "The person"}, "404": {"description": "Unknown id"}}}}
        }
    });
    call(
        &api,
        Method::PUT,
        &format!("{pop_url}/services/persons"),
        &pop.admin_token,
        // A lookup names its person in the path: the register's log keeps a salted
        // hash of the number, by which the person finds who looked them up.
        Some(
            json!({"base_url": format!("http://127.0.0.1:{}/persons", ports.population_backend),
            "openapi": persons_openapi.to_string(), "about_person": {"path_segment": 0}}),
        ),
    )
    .await?;
    // People log in to the register's console as its subsystem's relying party.
    call(
        &api,
        Method::POST,
        &format!("{}/api/v1/management-requests", pop.admin_url),
        &pop.admin_token,
        Some(
            json!({"type": "relying-party-registration", "subsystem": population.subsystem_id(),
            "name": "Population register: who used data about me",
            "redirect_uris": [format!("{}/console/me/callback", pop.admin_url)]}),
        ),
    )
    .await?;
    call(
        &api,
        Method::PUT,
        &format!("{pop_url}/services/echo"),
        &pop.admin_token,
        Some(json!({"base_url": format!("http://127.0.0.1:{}", ports.diagnostics_backend), "endpoints": [{"method": "*", "path": "/**"}]})),
    )
    .await?;
    call(
        &api,
        Method::PUT,
        &format!("{pop_url}/access"),
        &pop.admin_token,
        Some(json!([
            rule(
                json!({"type": "client", "id": municipality.subsystem_id()}),
                "persons",
                "GET",
                "/*"
            ),
            rule(
                json!({"type": "client", "id": tax.subsystem_id()}),
                "persons",
                "GET",
                "/**"
            ),
            rule(everyone.clone(), "echo", "*", "/**"),
        ])),
    )
    .await?;

    let t = &gws[1];
    let tax_url = format!(
        "{}/api/v1/clients/{}",
        t.admin_url,
        colon(&tax.subsystem_id())
    );
    for (code, path) in [("companies", "companies"), ("incomes", "incomes")] {
        call(
            &api,
            Method::PUT,
            &format!("{tax_url}/services/{code}"),
            &t.admin_token,
            Some(json!({"base_url": format!("http://127.0.0.1:{}/{path}", ports.tax_backend), "endpoints": [{"method": "GET", "path": "/*"}]})),
        )
        .await?;
    }
    call(
        &api,
        Method::PUT,
        &format!("{tax_url}/local-groups/auditors"),
        &t.admin_token,
        Some(json!({"description": "Agencies that may read incomes", "members": [population.subsystem_id()]})),
    )
    .await?;
    call(
        &api,
        Method::PUT,
        &format!("{tax_url}/access"),
        &t.admin_token,
        Some(json!([
            rule(everyone, "companies", "GET", "/*"),
            rule(
                json!({"type": "local_group", "id": "auditors"}),
                "incomes",
                "GET",
                "/*"
            ),
        ])),
    )
    .await?;
    Ok(())
}

fn services_description() -> Vec<ServiceInfo> {
    let [population, tax, municipality] = ORGS;
    vec![
        ServiceInfo {
            id: format!("{}/persons", population.subsystem_id()),
            description: "Synthetic population register: GET /{id} (6-12 digits), GET /?name="
                .into(),
            access: vec![
                format!("{}: GET /*", municipality.subsystem_id()),
                format!("{}: GET /**", tax.subsystem_id()),
            ],
        },
        ServiceInfo {
            id: format!("{}/echo", population.subsystem_id()),
            description:
                "Diagnostics: echoes the request; /status/{code}, /redirect, /bytes/{n}, /digest"
                    .into(),
            access: vec![format!(
                "global group {INSTANCE}/sandbox-members: any method, any path"
            )],
        },
        ServiceInfo {
            id: format!("{}/companies", tax.subsystem_id()),
            description: "Synthetic business register: GET /{id}".into(),
            access: vec![format!("global group {INSTANCE}/sandbox-members: GET /*")],
        },
        ServiceInfo {
            id: format!("{}/incomes", tax.subsystem_id()),
            description: "Synthetic income register: GET /{id}".into(),
            access: vec![format!(
                "local group auditors ({}): GET /*",
                population.subsystem_id()
            )],
        },
    ]
}

fn examples(gws: &[GatewayInfo]) -> Vec<Example> {
    let [population, tax, municipality] = ORGS;
    let muni = &gws[2];
    let taxgw = &gws[1];
    let r1 = |g: &GatewayInfo, client: &Org, path: &str| {
        format!(
            "curl -si '{}/r1/{path}' -H 'X-Road-Client: {}'",
            g.client_url,
            client.subsystem_id()
        )
    };
    vec![
        Example {
            description: "The municipality looks up a person in the population register".into(),
            curl: r1(
                muni,
                &municipality,
                &format!("{}/persons/0101701234", population.subsystem_id()),
            ),
            expect: "200 with the person as JSON and X-Road-* response headers".into(),
        },
        Example {
            description: "The municipality looks up a company in the business register".into(),
            curl: r1(
                muni,
                &municipality,
                &format!("{}/companies/12345678", tax.subsystem_id()),
            ),
            expect: "200 with the company".into(),
        },
        Example {
            description: "The municipality tries the income register, which it may not use".into(),
            curl: r1(
                muni,
                &municipality,
                &format!("{}/incomes/0101701234", tax.subsystem_id()),
            ),
            expect: "500 with X-Road-Error: Server.ServerProxy.AccessDenied".into(),
        },
        Example {
            description: "The municipality may look up one person but not search".into(),
            curl: r1(
                muni,
                &municipality,
                &format!("{}/persons?name=olsen", population.subsystem_id()),
            ),
            expect: "500 with X-Road-Error: Server.ServerProxy.AccessDenied".into(),
        },
        Example {
            description: "The tax agency may search".into(),
            curl: r1(
                taxgw,
                &tax,
                &format!("{}/persons?name=olsen", population.subsystem_id()),
            ),
            expect: "200 with matching persons".into(),
        },
        Example {
            description: "The echo service shows what the provider received".into(),
            curl: format!(
                "curl -si -X POST '{}/r1/{}/echo/anything?x=1' -H 'X-Road-Client: {}' -H 'Content-Type: text/plain' --data 'hello'",
                muni.client_url,
                population.subsystem_id(),
                municipality.subsystem_id()
            ),
            expect: "200 with method, path, query, headers and body as the provider saw them"
                .into(),
        },
        Example {
            description: "A provider error passes through unchanged".into(),
            curl: r1(
                muni,
                &municipality,
                &format!("{}/echo/status/418", population.subsystem_id()),
            ),
            expect: "418 from the provider, no X-Road-Error".into(),
        },
        Example {
            description: "Services of the population register (metaservice)".into(),
            curl: r1(
                muni,
                &municipality,
                &format!("{}/listMethods", population.subsystem_id()),
            ),
            expect: "200 with the service list".into(),
        },
        Example {
            description: "Every member and subsystem (metaservice)".into(),
            curl: format!(
                "curl -s '{}/listClients' -H 'Accept: application/json'",
                muni.client_url
            ),
            expect: "200 with the client list".into(),
        },
        Example {
            description: "The municipality gateway's message log".into(),
            curl: format!(
                "curl -s '{}/api/v1/message-log?limit=5' -H 'Authorization: Bearer {}'",
                muni.admin_url, muni.admin_token
            ),
            expect: "the signed descriptors of the last exchanges".into(),
        },
    ]
}
