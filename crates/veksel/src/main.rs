//! `veksel`: one binary for every role in a veksel network.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use veksel_proto::Clock;

// glibc's malloc took about 13 % of a gateway's CPU under load (perf); the
// comparison that chose this one is in BENCHMARKS.md.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "veksel",
    version,
    about = "Secure data exchange for the public sector (X-Road compatible)"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole network on this machine: an authority and three gateways with
    /// synthetic registers.
    Sandbox {
        /// Where the network keeps its state (reused on the next run).
        #[arg(long, default_value = "sandbox-data")]
        data_dir: PathBuf,
        /// Use ports chosen by the kernel instead of the default layout.
        #[arg(long)]
        ephemeral_ports: bool,
        /// Keep the nodes' data in PostgreSQL instead of SQLite files: a database URL
        /// whose name is used as a prefix (`…/veksel` gives the databases
        /// `veksel_authority`, `veksel_population`, `veksel_tax` and
        /// `veksel_municipality`, created when missing). Applies when the sandbox is
        /// first set up in its data directory.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
    },
    /// The authority: registry, certificate authority, global configuration.
    Authority {
        #[command(subcommand)]
        command: AuthorityCommand,
    },
    /// A gateway (X-Road: security server).
    Gateway {
        #[command(subcommand)]
        command: GatewayCommand,
    },
    /// The message log of a gateway.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Evidence bundles: one exchange with everything needed to prove it offline.
    Evidence {
        #[command(subcommand)]
        command: EvidenceCommand,
    },
    /// The network ledger: verify, audit and follow it; commit to documents.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Access tokens of the network's token service.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The data broker: check dataset definitions, verify a signed answer.
    Broker {
        #[command(subcommand)]
        command: BrokerCommand,
    },
}

#[derive(Subcommand)]
enum BrokerCommand {
    /// Read every dataset definition (*.toml, *.json) of a directory and say what
    /// each offers, or the first mistake; exits 1 on a mistake.
    CheckDatasets {
        /// The directory.
        dir: PathBuf,
    },
    /// Verify an answer offline: its X-Signature-JWT against the exact body, the
    /// broker's published key set and what was asked; exits 1 if it does not hold.
    Verify(Box<VerifyAnswer>),
}

/// What `veksel broker verify` checks an answer against.
#[derive(clap::Args)]
struct VerifyAnswer {
    /// The answer's body, exactly as received.
    #[arg(long)]
    body: PathBuf,
    /// The X-Signature-JWT header's value, or @FILE to read it from a file.
    #[arg(long)]
    signature: String,
    /// The broker's JWKS (JSON).
    #[arg(long)]
    jwks: PathBuf,
    /// The broker (the signature's iss).
    #[arg(long)]
    issuer: String,
    /// The requestor the answer was for.
    #[arg(long)]
    requestor: String,
    /// The subject asked about.
    #[arg(long)]
    subject: String,
    /// The dataset asked for.
    #[arg(long)]
    dataset: String,
    /// The purpose given.
    #[arg(long)]
    purpose: String,
    /// The accreditation or request id, if known.
    #[arg(long)]
    request: Option<String>,
    /// The dataset version relied on, if any.
    #[arg(long)]
    dataset_version: Option<u32>,
    /// Oldest answer accepted, seconds.
    #[arg(long, default_value_t = 86_400)]
    max_age: i64,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Get an access token with a member's signing key from a gateway's data
    /// directory (the JWT-bearer grant); prints the token.
    Get {
        /// The gateway's data directory (its keys and cached configuration).
        #[arg(long)]
        data_dir: PathBuf,
        /// The client: a member or subsystem id whose member's key the gateway holds.
        #[arg(long)]
        client: String,
        /// Space-separated scopes.
        #[arg(long)]
        scope: String,
        /// The token's audience, e.g. a service id (repeatable).
        #[arg(long)]
        resource: Vec<String>,
        /// Ask as a supplier for this member, under its delegation.
        #[arg(long)]
        consumer_org: Option<String>,
        /// Print the token service's whole JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Verify an access token with the keys of a gateway's cached configuration;
    /// prints its claims.
    Verify {
        /// The gateway's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Also require this scope (whole-name match).
        #[arg(long)]
        scope: Option<String>,
        /// Also require this audience.
        #[arg(long)]
        audience: Option<String>,
        /// The token; `-` reads it from standard input.
        token: String,
    },
}

/// Which ledger, trusted how.
#[derive(Args)]
struct LedgerTarget {
    /// The network's anchor (authority URL and TLS trust).
    #[arg(
        long,
        required_unless_present = "tiles_dir",
        conflicts_with = "tiles_dir"
    )]
    anchor: Option<PathBuf>,
    /// Read the ledger from a directory in the tlog-tiles layout (a mirror or the
    /// authority's static export) instead of the authority.
    #[arg(long)]
    tiles_dir: Option<PathBuf>,
    /// A witness policy file to verify checkpoints under (the ledger's key, the
    /// witnesses, the quorum). Without it the authority's current policy is trusted.
    #[arg(long)]
    policy: Option<PathBuf>,
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Fetch the latest published checkpoint and verify it under the policy.
    Checkpoint {
        #[command(flatten)]
        target: LedgerTarget,
    },
    /// Verify a saved checkpoint note under a policy, offline.
    VerifyCheckpoint {
        /// The witness policy file.
        #[arg(long)]
        policy: PathBuf,
        /// The checkpoint note file.
        note: PathBuf,
    },
    /// Verify that a newer checkpoint (default: the latest) extends an older one.
    Consistency {
        #[command(flatten)]
        target: LedgerTarget,
        /// The older checkpoint note file.
        old: PathBuf,
        /// The newer checkpoint note file.
        new: Option<PathBuf>,
    },
    /// Show one entry with its inclusion proof in the latest checkpoint.
    Show {
        #[command(flatten)]
        target: LedgerTarget,
        /// Position in the log.
        index: u64,
    },
    /// Audit the whole log from its tiles: every tile, entry and signature.
    Audit {
        #[command(flatten)]
        target: LedgerTarget,
    },
    /// Copy the whole ledger (audited first) into a directory anyone can serve as
    /// static files or audit offline with --tiles-dir.
    Mirror {
        #[command(flatten)]
        target: LedgerTarget,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the entries about a member, subsystem or gateway (and what lies under
    /// it); with --follow, keep watching.
    Monitor {
        #[command(flatten)]
        target: LedgerTarget,
        /// Identifier, e.g. `GL/GOV/10000001`.
        subject: String,
        /// First position to look at.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep following the log.
        #[arg(long)]
        follow: bool,
        /// Seconds between looks when following.
        #[arg(long, default_value_t = 10)]
        interval_secs: u64,
    },
    /// Commit to a document on the ledger through one of the member's gateways. The
    /// document stays here; its salt is written beside it (`<document>.salt`).
    Append {
        /// The gateway's admin API, e.g. `http://127.0.0.1:4002`.
        #[arg(long)]
        admin_url: String,
        /// File holding an admin token (security officer).
        #[arg(long)]
        token_file: PathBuf,
        /// Public label of the entry.
        #[arg(long)]
        label: String,
        /// The document.
        #[arg(long)]
        document: PathBuf,
    },
}

#[derive(Subcommand)]
enum EvidenceCommand {
    /// Export the bundle of one exchange from a gateway's data directory.
    Export {
        #[arg(long)]
        data_dir: PathBuf,
        /// X-Road-Request-Id of the exchange.
        #[arg(long)]
        request_id: String,
        /// Which gateway's record: consumer or provider.
        #[arg(long, default_value = "consumer", value_parser = ["consumer", "provider"])]
        side: String,
        /// Where to write the bundle (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle offline with the network's anchor; explains any failure.
    Verify {
        /// The bundle.
        bundle: PathBuf,
        /// The anchor of the network.
        #[arg(long)]
        anchor: PathBuf,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Check the whole message log — archive files, then the database: positions, leaf
    /// hashes, signatures, stored roots and time stamps. Names the first modified,
    /// removed, inserted or moved record or file; exits 1 if any.
    Verify {
        /// A gateway's data directory.
        #[arg(
            long,
            required_unless_present = "archive_dir",
            conflicts_with = "archive_dir"
        )]
        data_dir: Option<PathBuf>,
        /// A directory of archive files alone (copied off a gateway), checked with the
        /// network's anchor.
        #[arg(long, requires = "anchor")]
        archive_dir: Option<PathBuf>,
        /// The anchor of the network (with --archive-dir).
        #[arg(long)]
        anchor: Option<PathBuf>,
    },
    /// Move records older than the gateway's `archive_after_secs` into archive files
    /// now (the gateway also does this every `archive_interval_secs`).
    Archive {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuthorityCommand {
    /// Create a new authority: CA, configuration-signing key, TLS certificate, anchor,
    /// database, and a first admin token (printed once).
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        /// Instance identifier, e.g. GL.
        #[arg(long)]
        instance: String,
        /// Public HTTPS base URL, e.g. https://authority.example.gl:4400.
        #[arg(long)]
        public_url: String,
        /// Listen address.
        #[arg(long, default_value = "0.0.0.0:4400")]
        listen: SocketAddr,
        /// Host names and IPs for the TLS certificate (repeatable).
        #[arg(long = "tls-host", required = true)]
        tls_hosts: Vec<String>,
        /// PostgreSQL URL (SQLite in the data directory otherwise).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Serve the authority.
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Call the authority's admin API.
    #[command(flatten)]
    Api(ApiCommand),
}

#[derive(Subcommand)]
enum ApiCommand {
    /// Register a member: ID (INSTANCE/CLASS/CODE) and NAME.
    AddMember {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        name: String,
    },
    /// Add a subsystem to a member.
    AddSubsystem {
        #[command(flatten)]
        api: ApiArgs,
        member: String,
        code: String,
        name: String,
    },
    /// Register a gateway at ADDRESS (host:port); prints its one-time enrolment token.
    AddGateway {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        address: String,
    },
    /// Register a subsystem as hosted by a gateway.
    AddGatewayClient {
        #[command(flatten)]
        api: ApiArgs,
        gateway: String,
        subsystem: String,
    },
    /// Create an API token with a role (admin, registration-officer, observer).
    CreateToken {
        #[command(flatten)]
        api: ApiArgs,
        role: String,
        description: String,
    },
    /// Any admin API call: METHOD PATH [JSON body].
    Call {
        #[command(flatten)]
        api: ApiArgs,
        method: String,
        path: String,
        body: Option<String>,
    },
}

#[derive(Args, Clone)]
struct ApiArgs {
    /// Base URL of the API.
    #[arg(long, env = "VEKSEL_URL")]
    url: String,
    /// Bearer token.
    #[arg(long, env = "VEKSEL_TOKEN", hide_env_values = true)]
    token: String,
    /// CA certificate (PEM) to trust for HTTPS, e.g. the authority's ca.pem.
    #[arg(long, env = "VEKSEL_CA")]
    ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum GatewayCommand {
    /// Create a gateway's configuration from the anchor the authority handed out.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        /// The anchor file (from the authority, out of band).
        #[arg(long)]
        anchor: PathBuf,
        /// Gateway id, INSTANCE/CLASS/CODE/GATEWAY.
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "127.0.0.1:8080")]
        client_listen: SocketAddr,
        #[arg(long, default_value = "0.0.0.0:5500")]
        peer_listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8081")]
        admin_listen: SocketAddr,
        #[arg(long)]
        database_url: Option<String>,
        /// Keep members' signing keys in this PKCS#11 module's token (e.g.
        /// /usr/lib/softhsm/libsofthsm2.so) instead of key files.
        #[arg(long, requires_all = ["pkcs11_token", "pkcs11_pin_file"])]
        pkcs11_module: Option<PathBuf>,
        /// Label of the PKCS#11 token.
        #[arg(long, requires = "pkcs11_module")]
        pkcs11_token: Option<String>,
        /// File holding the token's user PIN (keep it 0600).
        #[arg(long, requires = "pkcs11_module")]
        pkcs11_pin_file: Option<PathBuf>,
    },
    /// Generate keys and obtain certificates with a one-time enrolment token.
    Enrol {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, env = "VEKSEL_ENROLMENT_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Create an admin API token (admin, security-officer, observer); printed once.
    CreateToken {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "admin")]
        role: String,
        #[arg(long, default_value = "created with veksel gateway create-token")]
        description: String,
    },
    /// Serve the gateway.
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Any admin API call on a gateway: METHOD PATH [JSON body].
    Call {
        #[command(flatten)]
        api: ApiArgs,
        method: String,
        path: String,
        body: Option<String>,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    veksel_pki::tls::install_default_provider();
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let clock = Clock::system();
    match cli.command {
        Command::Sandbox {
            data_dir,
            ephemeral_ports,
            postgres,
        } => sandbox(data_dir, ephemeral_ports, postgres).await,
        Command::Authority { command } => authority(command, clock).await,
        Command::Gateway { command } => gateway(command, clock).await,
        Command::Evidence { command } => evidence(command).await,
        Command::Ledger { command } => ledger(command).await,
        Command::Token { command } => token(command, clock).await,
        Command::Broker { command } => broker(command, &clock),
        Command::Log {
            command:
                LogCommand::Verify {
                    data_dir: Some(data_dir),
                    ..
                },
        } => verify_log(&data_dir).await,
        Command::Log {
            command:
                LogCommand::Verify {
                    archive_dir: Some(dir),
                    anchor: Some(anchor),
                    ..
                },
        } => verify_archives(&dir, &anchor),
        Command::Log {
            command: LogCommand::Verify { .. },
        } => anyhow::bail!("give --data-dir, or --archive-dir with --anchor"),
        Command::Log {
            command: LogCommand::Archive { data_dir },
        } => {
            let written = veksel_gateway::archive_log(&data_dir).await?;
            for a in &written {
                println!(
                    "archived positions {}..{} into {} (sha256 {})",
                    a.first_seq, a.next_seq, a.file, a.sha256
                );
            }
            if written.is_empty() {
                println!(
                    "nothing to archive: no time-stamped records older than the retention age"
                );
            }
            Ok(())
        }
    }
}

async fn sandbox(data_dir: PathBuf, ephemeral: bool, postgres: Option<String>) -> Result<()> {
    let mut options = veksel_sandbox::SandboxOptions::new(data_dir.clone());
    if ephemeral {
        options.ports = veksel_sandbox::Ports::ephemeral();
    }
    if let Some(url) = postgres {
        options.databases = veksel_sandbox::Databases::postgres_with_prefix(&url).await?;
    }
    let sandbox = veksel_sandbox::Sandbox::start(options).await?;
    let info = &sandbox.info;
    println!(
        "\nveksel sandbox is running (instance {}).\n",
        info.instance
    );
    println!(
        "  {:<28} {}   (admin token in {})",
        "Authority",
        info.authority_url,
        data_dir.join(veksel_sandbox::SANDBOX_JSON).display()
    );
    for g in &info.gateways {
        println!(
            "  {:<28} client side {}   admin {}   hosts {}",
            g.owner, g.client_url, g.admin_url, g.subsystem
        );
    }
    println!("\nTry:\n");
    for e in &info.examples {
        println!("# {}  ->  {}", e.description, e.expect);
        println!("{}\n", e.curl);
    }
    println!(
        "The network is described in {}. Press Ctrl-C to stop.",
        data_dir.join(veksel_sandbox::SANDBOX_JSON).display()
    );
    wait_for_signal()
        .await
        .context("waiting for Ctrl-C or SIGTERM")?;
    println!("\nstopping...");
    sandbox.stop().await;
    println!(
        "stopped; state kept in {} for the next run",
        data_dir.display()
    );
    Ok(())
}

async fn ledger_client(
    target: &LedgerTarget,
) -> Result<veksel_verify::ledger_client::LedgerClient> {
    let policy = match &target.policy {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => {
            eprintln!("note: no --policy given; trusting the ledger's current witness policy");
            None
        }
    };
    if let Some(dir) = &target.tiles_dir {
        return veksel_verify::ledger_client::LedgerClient::from_directory(dir, policy)
            .await
            .map_err(anyhow::Error::msg);
    }
    let anchor_file = target
        .anchor
        .as_ref()
        .context("give --anchor or --tiles-dir")?;
    let anchor: veksel_proto::conf::Anchor = serde_json::from_str(
        &std::fs::read_to_string(anchor_file)
            .with_context(|| format!("reading {}", anchor_file.display()))?,
    )
    .context("the anchor file is not a veksel anchor")?;
    veksel_verify::ledger_client::LedgerClient::connect(&anchor, policy)
        .await
        .map_err(anyhow::Error::msg)
}

fn print_checkpoint(cp: &veksel_verify::ledger_client::VerifiedCheckpoint) {
    use base64::Engine;
    println!(
        "checkpoint of {}: {} entries, root {}, cosigned by {}",
        cp.checkpoint.origin,
        cp.checkpoint.size,
        base64::engine::general_purpose::STANDARD.encode(cp.checkpoint.root),
        if cp.cosigners.is_empty() {
            "no witness (the policy requires none)".to_owned()
        } else {
            cp.cosigners.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    );
}

fn print_entry(e: &veksel_verify::ledger_client::ProvenEntry) -> Result<()> {
    println!(
        "{} {} signed by {}: {}",
        e.index,
        e.entry.kind(),
        e.signer,
        serde_json::to_string(&e.entry)?
    );
    Ok(())
}

async fn ledger(command: LedgerCommand) -> Result<()> {
    use anyhow::Error;
    match command {
        LedgerCommand::Checkpoint { target } => {
            let client = ledger_client(&target).await?;
            let cp = client.checkpoint().await.map_err(Error::msg)?;
            print_checkpoint(&cp);
            print!("{}", cp.note);
        }
        LedgerCommand::VerifyCheckpoint { policy, note } => {
            let policy = veksel_merkle::witness::WitnessPolicy::parse(
                &std::fs::read_to_string(&policy)
                    .with_context(|| format!("reading {}", policy.display()))?,
            )?;
            let text = std::fs::read_to_string(&note)
                .with_context(|| format!("reading {}", note.display()))?;
            let (cp, cosigners) = policy.verify(&text)?;
            print_checkpoint(&veksel_verify::ledger_client::VerifiedCheckpoint {
                note: text,
                checkpoint: cp,
                cosigners,
            });
        }
        LedgerCommand::Consistency { target, old, new } => {
            let client = ledger_client(&target).await?;
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let old = client.verify_note(&read(&old)?).map_err(Error::msg)?;
            let new = match new {
                Some(p) => client.verify_note(&read(&p)?).map_err(Error::msg)?,
                None => client.checkpoint().await.map_err(Error::msg)?,
            };
            let proof = client
                .consistency(&old.checkpoint, &new.checkpoint)
                .await
                .map_err(Error::msg)?;
            println!(
                "consistent: the log of {} entries extends the log of {} ({} proof hashes)",
                new.checkpoint.size,
                old.checkpoint.size,
                proof.len()
            );
        }
        LedgerCommand::Show { target, index } => {
            let client = ledger_client(&target).await?;
            let cp = client.checkpoint().await.map_err(Error::msg)?;
            print_checkpoint(&cp);
            let e = client
                .entry(&cp.checkpoint, index)
                .await
                .map_err(Error::msg)?;
            print_entry(&e)?;
            use base64::Engine;
            for h in &e.proof {
                println!(
                    "  proof {}",
                    base64::engine::general_purpose::STANDARD.encode(h)
                );
            }
            println!("  entry {}", e.raw);
        }
        LedgerCommand::Audit { target } => {
            let client = ledger_client(&target).await?;
            let cp = client.checkpoint().await.map_err(Error::msg)?;
            print_checkpoint(&cp);
            let entries = client.audit(&cp.checkpoint).await.map_err(Error::msg)?;
            let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
            for e in &entries {
                *kinds.entry(e.entry.kind()).or_default() += 1;
            }
            println!(
                "audit passed: {} entries ({kinds:?}); every tile, leaf hash and signature checks",
                entries.len()
            );
        }
        LedgerCommand::Mirror { target, out } => {
            let client = ledger_client(&target).await?;
            let cp = client.mirror(&out).await.map_err(Error::msg)?;
            print_checkpoint(&cp);
            println!("mirrored into {}", out.display());
        }
        LedgerCommand::Monitor {
            target,
            subject,
            from,
            follow,
            interval_secs,
        } => {
            let client = ledger_client(&target).await?;
            let mut from = from;
            let mut last: Option<veksel_merkle::checkpoint::Checkpoint> = None;
            loop {
                let cp = client.checkpoint().await.map_err(Error::msg)?;
                if let Some(old) = &last {
                    client
                        .consistency(old, &cp.checkpoint)
                        .await
                        .map_err(Error::msg)?;
                }
                for e in client
                    .monitor(&cp.checkpoint, from, &subject)
                    .await
                    .map_err(Error::msg)?
                {
                    print_entry(&e)?;
                }
                from = cp.checkpoint.size;
                last = Some(cp.checkpoint);
                if !follow {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(interval_secs.max(1))).await;
            }
        }
        LedgerCommand::Append {
            admin_url,
            token_file,
            label,
            document,
        } => {
            let token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("reading {}", token_file.display()))?;
            let doc = std::fs::read(&document)
                .with_context(|| format!("reading {}", document.display()))?;
            let salt = veksel_proto::ledger::new_salt();
            let commitment = veksel_proto::ledger::commitment(&salt, &doc);
            let salt_file = PathBuf::from(format!("{}.salt", document.display()));
            veksel_pki::keys::write_secret_text(&salt_file, &hex::encode(salt))?;
            let resp = reqwest::Client::new()
                .post(format!(
                    "{}/api/v1/ledger/commitments",
                    admin_url.trim_end_matches('/')
                ))
                .bearer_auth(token.trim())
                .json(&serde_json::json!({"label": label, "commitment": commitment}))
                .send()
                .await?;
            let status = resp.status();
            let answer: serde_json::Value = resp.json().await.unwrap_or_default();
            if !status.is_success() {
                bail!("the gateway refused: HTTP {status}: {answer}");
            }
            println!(
                "committed: {commitment} (salt in {}; keep it with the document)",
                salt_file.display()
            );
        }
    }
    Ok(())
}

async fn evidence(command: EvidenceCommand) -> Result<()> {
    match command {
        EvidenceCommand::Export {
            data_dir,
            request_id,
            side,
            out,
        } => {
            let bundle = veksel_gateway::export_evidence(&data_dir, &request_id, &side).await?;
            std::fs::write(&out, serde_json::to_string_pretty(&bundle)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "evidence of request {request_id} ({side}) written to {}",
                out.display()
            );
            Ok(())
        }
        EvidenceCommand::Verify { bundle, anchor } => {
            let bundle: veksel_verify::evidence::Bundle = serde_json::from_str(
                &std::fs::read_to_string(&bundle)
                    .with_context(|| format!("reading {}", bundle.display()))?,
            )
            .context("the bundle is not a veksel evidence bundle")?;
            let anchor: veksel_proto::conf::Anchor = serde_json::from_str(
                &std::fs::read_to_string(&anchor)
                    .with_context(|| format!("reading {}", anchor.display()))?,
            )
            .context("the anchor file is not valid")?;
            match veksel_verify::evidence::verify(&bundle, &anchor) {
                Ok(p) => {
                    println!(
                        "ok: request {} from {} to {} (status {}) is record {} of {} in the log of {}, which existed by {} (time stamp)",
                        p.request_id,
                        p.client,
                        p.service,
                        p.status,
                        p.position,
                        p.tree_size,
                        bundle.gateway,
                        veksel_proto::rfc3339(
                            i64::try_from(p.existed_by).unwrap_or_default() * 1000
                        )
                    );
                    Ok(())
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}

fn verify_archives(dir: &std::path::Path, anchor: &std::path::Path) -> Result<()> {
    let anchor: veksel_proto::conf::Anchor = serde_json::from_str(
        &std::fs::read_to_string(anchor)
            .with_context(|| format!("reading {}", anchor.display()))?,
    )
    .with_context(|| format!("parsing {}", anchor.display()))?;
    match veksel_verify::archive::verify_dir(dir, &anchor) {
        Ok(r) => {
            println!(
                "ok: {} files, positions {}..{} ({} records), {} stored roots and {} time stamps checked",
                r.files.len(),
                r.first_seq,
                r.next_seq,
                r.records,
                r.roots_checked,
                r.stamps_checked
            );
            if r.first_seq > 0 {
                println!(
                    "note: the first file starts at position {}; the files before it are not here",
                    r.first_seq
                );
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            std::process::exit(1);
        }
    }
}

async fn verify_log(data_dir: &std::path::Path) -> Result<()> {
    use base64::Engine;
    match veksel_gateway::verify_log(data_dir).await? {
        Ok(report) => {
            println!(
                "ok: {} records ({} in archive files), root {}, {} stored roots and {} time stamps checked",
                report.records,
                report.archived,
                base64::engine::general_purpose::STANDARD.encode(report.root),
                report.roots_checked,
                report.stamps_checked
            );
            if report.uncovered > 0 {
                println!(
                    "note: {} older records predate the Merkle log and are not covered",
                    report.uncovered
                );
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            std::process::exit(1);
        }
    }
}

async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn authority(command: AuthorityCommand, clock: Clock) -> Result<()> {
    match command {
        AuthorityCommand::Init {
            data_dir,
            instance,
            public_url,
            listen,
            tls_hosts,
            database_url,
        } => {
            let mut config =
                veksel_authority::AuthorityConfig::new(&instance, listen, &public_url, tls_hosts);
            config.database_url = database_url;
            let outcome = veksel_authority::init(&data_dir, config, &clock).await?;
            println!("authority created in {}", data_dir.display());
            println!(
                "anchor for gateways: {}",
                data_dir.join(veksel_authority::files::ANCHOR).display()
            );
            println!(
                "admin token (shown once, keep it secret):\n{}",
                outcome.admin_token
            );
            Ok(())
        }
        AuthorityCommand::Serve { data_dir } => {
            let running = veksel_authority::start(&data_dir, clock, None).await?;
            wait_for_signal().await?;
            running.stop().await;
            Ok(())
        }
        AuthorityCommand::Api(api) => authority_api(api).await,
    }
}

fn http_client(ca: Option<&PathBuf>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = ca {
        let pem =
            std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
        let roots = veksel_pki::certs_from_pem(&pem)?;
        builder = builder.use_preconfigured_tls(veksel_pki::tls::https_client_config(&roots)?);
    }
    Ok(builder.build()?)
}

async fn api_call(
    api: &ApiArgs,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let client = http_client(api.ca.as_ref())?;
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .context("HTTP method")?;
    let url = format!("{}{}", api.url.trim_end_matches('/'), path);
    let mut req = client.request(method.clone(), &url).bearer_auth(&api.token);
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
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

fn print(v: &serde_json::Value) -> Result<()> {
    if !v.is_null() {
        println!("{}", serde_json::to_string_pretty(v)?);
    }
    Ok(())
}

fn colon(id: &str) -> String {
    id.replace('/', ":")
}

fn parse_body(body: Option<String>) -> Result<Option<serde_json::Value>> {
    body.map(|b| serde_json::from_str(&b).context("body must be JSON"))
        .transpose()
}

async fn authority_api(cmd: ApiCommand) -> Result<()> {
    use serde_json::json;
    let v = match cmd {
        ApiCommand::AddMember { api, id, name } => {
            api_call(
                &api,
                "POST",
                "/api/v1/members",
                Some(json!({"id": id, "name": name})),
            )
            .await?
        }
        ApiCommand::AddSubsystem {
            api,
            member,
            code,
            name,
        } => {
            api_call(
                &api,
                "POST",
                &format!("/api/v1/members/{}/subsystems", colon(&member)),
                Some(json!({"code": code, "name": name})),
            )
            .await?
        }
        ApiCommand::AddGateway { api, id, address } => {
            api_call(
                &api,
                "POST",
                "/api/v1/gateways",
                Some(json!({"id": id, "address": address})),
            )
            .await?
        }
        ApiCommand::AddGatewayClient {
            api,
            gateway,
            subsystem,
        } => {
            api_call(
                &api,
                "PUT",
                &format!(
                    "/api/v1/gateways/{}/clients/{}",
                    colon(&gateway),
                    colon(&subsystem)
                ),
                None,
            )
            .await?
        }
        ApiCommand::CreateToken {
            api,
            role,
            description,
        } => {
            api_call(
                &api,
                "POST",
                "/api/v1/tokens",
                Some(json!({"role": role, "description": description})),
            )
            .await?
        }
        ApiCommand::Call {
            api,
            method,
            path,
            body,
        } => api_call(&api, &method, &path, parse_body(body)?).await?,
    };
    print(&v)
}

async fn gateway(command: GatewayCommand, clock: Clock) -> Result<()> {
    match command {
        GatewayCommand::Init {
            data_dir,
            anchor,
            id,
            client_listen,
            peer_listen,
            admin_listen,
            database_url,
            pkcs11_module,
            pkcs11_token,
            pkcs11_pin_file,
        } => {
            let text = std::fs::read_to_string(&anchor)
                .with_context(|| format!("reading {}", anchor.display()))?;
            let anchor: veksel_proto::conf::Anchor =
                serde_json::from_str(&text).context("the anchor file is not valid")?;
            let mut config = veksel_gateway::GatewayConfig::new(
                id.parse()?,
                client_listen,
                peer_listen,
                admin_listen,
            );
            config.database_url = database_url;
            if let (Some(module), Some(token_label), Some(pin_file)) =
                (pkcs11_module, pkcs11_token, pkcs11_pin_file)
            {
                // Absolute, because the gateway may later run from another directory.
                let hsm = veksel_gateway::signing::HsmConfig {
                    module: std::path::absolute(&module)?,
                    token_label,
                    pin_file: std::path::absolute(&pin_file)?,
                };
                // Fails here rather than at enrolment if the token is not reachable.
                veksel_gateway::signing::open_hsm(&hsm)?;
                config.hsm = Some(hsm);
            }
            veksel_gateway::init(&data_dir, &config, &anchor)?;
            println!(
                "gateway {id} initialised in {}; next: veksel gateway enrol",
                data_dir.display()
            );
            Ok(())
        }
        GatewayCommand::Enrol { data_dir, token } => {
            let issued = veksel_gateway::enrol(&data_dir, &token, &clock).await?;
            if issued.is_empty() {
                println!("nothing to do: the gateway already has every certificate it needs");
            }
            for i in issued {
                println!("obtained {i}");
            }
            Ok(())
        }
        GatewayCommand::CreateToken {
            data_dir,
            role,
            description,
        } => {
            if !["admin", "security-officer", "observer"].contains(&role.as_str()) {
                bail!("role must be admin, security-officer or observer");
            }
            let token =
                veksel_gateway::create_admin_token(&data_dir, &role, &description, &clock).await?;
            println!("{token}");
            Ok(())
        }
        GatewayCommand::Serve { data_dir } => {
            let running =
                veksel_gateway::start(&data_dir, clock, veksel_gateway::Listeners::default())
                    .await?;
            wait_for_signal().await?;
            running.stop().await;
            Ok(())
        }
        GatewayCommand::Call {
            api,
            method,
            path,
            body,
        } => print(&api_call(&api, &method, &path, parse_body(body)?).await?),
    }
}

/// The cached global configuration and HTTP client of a gateway's data directory,
/// read without writing anything (the gateway may be running).
fn gateway_conf(
    data_dir: &std::path::Path,
    clock: &Clock,
) -> Result<(
    veksel_gateway::confclient::ConfClient,
    std::sync::Arc<veksel_gateway::confclient::ConfState>,
)> {
    let anchor = veksel_gateway::read_anchor(data_dir)?;
    let conf = veksel_gateway::confclient::ConfClient::new(
        anchor,
        data_dir.join(veksel_gateway::files::CONF_CACHE),
        clock.clone(),
    )?;
    let state = conf.latest().with_context(|| {
        format!(
            "{} has no valid cached global configuration; start the gateway once",
            data_dir.display()
        )
    })?;
    Ok((conf, state))
}

fn broker(command: BrokerCommand, clock: &Clock) -> Result<()> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    match command {
        BrokerCommand::CheckDatasets { dir } => {
            let catalogue = veksel_broker::Catalogue::load_dir(&dir)?;
            for d in catalogue.all() {
                let purposes: Vec<String> = d
                    .purposes
                    .iter()
                    .map(|p| format!("{} ({})", p.id, p.fields.join(", ")))
                    .collect();
                println!(
                    "{} v{}: {} fields from {} sources; purposes: {}",
                    d.name,
                    d.version,
                    d.fields.len(),
                    d.sources.len(),
                    purposes.join("; ")
                );
            }
            Ok(())
        }
        BrokerCommand::Verify(args) => {
            let VerifyAnswer {
                body,
                signature,
                jwks,
                issuer,
                requestor,
                subject,
                dataset,
                purpose,
                request,
                dataset_version,
                max_age,
            } = *args;
            let signature = match signature.strip_prefix('@') {
                Some(file) => String::from_utf8(read(std::path::Path::new(file))?)
                    .context("the signature file is not text")?,
                None => signature,
            };
            let keys: veksel_proto::oauth::Jwks =
                serde_json::from_slice(&read(&jwks)?).context("the key set is not a JWKS")?;
            let expected = veksel_broker::answer::Expected {
                issuer: &issuer,
                requestor: &requestor,
                subject: &subject,
                dataset: &dataset,
                purpose: &purpose,
                dataset_version,
                request: request.as_deref(),
            };
            let now = i64::try_from(clock.now_secs()).unwrap_or(i64::MAX);
            let claims = veksel_broker::answer::verify(
                &signature,
                &read(&body)?,
                &keys,
                &expected,
                now,
                max_age,
            )?;
            println!(
                "ok: {} v{} for {} ({}), request {}, signed by {} at {}",
                claims.dataset,
                claims.dataset_version,
                claims.aud,
                claims.purpose,
                claims.request,
                claims.iss,
                veksel_proto::rfc3339(claims.iat.saturating_mul(1000))
            );
            Ok(())
        }
    }
}

async fn token(command: TokenCommand, clock: Clock) -> Result<()> {
    match command {
        TokenCommand::Get {
            data_dir,
            client,
            scope,
            resource,
            consumer_org,
            json,
        } => {
            let (conf, _) = gateway_conf(&data_dir, &clock)?;
            let keys = veksel_gateway::KeyStore::load(&data_dir)?;
            let grant = veksel_proto::oauth::Grant {
                client,
                scope,
                resources: resource,
                consumer_org,
            };
            let now = i64::try_from(clock.now_secs())?;
            let answer = veksel_gateway::tokens::fetch(&conf, &keys, now, &grant).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("{}", answer.access_token);
            }
            Ok(())
        }
        TokenCommand::Verify {
            data_dir,
            scope,
            audience,
            token,
        } => {
            let token = if token == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(
                    &mut std::io::Read::take(std::io::stdin(), 64 * 1024),
                    &mut text,
                )?;
                text.trim().to_owned()
            } else {
                token
            };
            let (_, state) = gateway_conf(&data_dir, &clock)?;
            let now = i64::try_from(clock.now_secs())?;
            let claims = state.access_token(&token, now)?;
            if let Some(ts) = &state.conf().token_service
                && let Some(r) = veksel_proto::oauth::revocation_of(&claims, ts)
            {
                bail!(
                    "the token is revoked: the tokens of {} issued until then are",
                    r.member
                );
            }
            if let Some(scope) = scope
                && !claims.scopes().contains(&scope.as_str())
            {
                bail!(
                    "the token does not have scope {scope} (it has: {})",
                    claims.scope
                );
            }
            if let Some(aud) = audience
                && !claims.aud.values().contains(&aud)
            {
                bail!("the token is for {:?}, not for {aud}", claims.aud.values());
            }
            println!("{}", serde_json::to_string_pretty(&*claims)?);
            Ok(())
        }
    }
}
