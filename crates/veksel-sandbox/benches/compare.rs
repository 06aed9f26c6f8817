//! The comparison: the same load against the backend directly, a two-hop nginx chain
//! with mutual TLS 1.3 between its two nginx instances (the cheapest possible "two
//! gateways"), and veksel's two gateways with signing and message log (metadata and
//! full mode, SQLite and PostgreSQL). Small (1 KiB), medium (100 KiB) and large
//! (100 MiB, streamed) bodies; 1 and 64 clients; requests per second at saturation,
//! p50/p99/p99.9 latency at a fixed moderate rate, CPU seconds per 1,000 requests and
//! peak RSS of each proxy process. Ratios to the nginx chain and to the direct call
//! are printed in the same run.
//!
//! One command does everything, installing nginx (Debian) and oha (crates.io) if
//! missing: `scripts/bench-compare`. Every server listens on 127.0.0.1; every load run
//! is bounded in time (`VEKSEL_COMPARE_SECONDS`, default 5). PostgreSQL rows need
//! `VEKSEL_TEST_DATABASE_URL`.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use veksel_sandbox::{Databases, ORGS, Ports, Sandbox, SandboxOptions};

const SIZES: [(&str, u64); 3] = [
    ("1k", 1024),
    ("100k", 100 * 1024),
    ("100m", 100 * 1024 * 1024),
];
const CLIENTS: [u32; 2] = [1, 64];

/// A port below the kernel's ephemeral range (32768 and up), so that no outgoing
/// connection of the load can take it between setting a node up and serving it.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 20) as u16 * 500;
    (0..500)
        .map(|_| base + NEXT.fetch_add(1, Ordering::Relaxed) % 500)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port")
}

/// Kills the servers it holds when dropped, also when a run panics.
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// CPU seconds (user + system) of a process and its direct children (nginx workers).
fn cpu_secs(pids: &[u32]) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    family(pids)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / ticks
}

/// The processes and their children.
fn family(pids: &[u32]) -> Vec<u32> {
    let mut all: Vec<u32> = pids.to_vec();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid.is_some_and(|p| pids.contains(&p)) {
                all.push(pid);
            }
        }
    }
    all
}

/// Resets the peak-RSS counters of processes (Linux `clear_refs` 5).
fn reset_peaks(pids: &[u32]) {
    for pid in family(pids) {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

/// Peak RSS in MiB of one process with its children.
fn peak_rss_mib(pid: u32) -> f64 {
    family(&[pid])
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .sum::<f64>()
        / 1024.0
}

struct Setup {
    name: String,
    /// URL of a body size (its key in [`SIZES`]).
    url: Box<dyn Fn(&str) -> String>,
    headers: Vec<(String, String)>,
    /// The proxy processes measured (empty for the direct call).
    pids: Vec<(String, u32)>,
}

#[derive(Default, Clone)]
struct Load {
    rps: f64,
    /// Response bytes per second, MiB.
    mib_s: f64,
    ok: u64,
    errors: u64,
    p50: f64,
    p99: f64,
    p999: f64,
}

/// How long a load run lasts.
#[derive(Clone, Copy)]
enum Bound {
    /// For this long; requests still in flight at the end are cut off.
    Seconds(u64),
    /// Until this many requests are done (each within oha's 60 s timeout). For large
    /// bodies: a timed run counts only requests that finished, so 64 clients moving
    /// 100 MiB each in 20 s measure in steps of 64 requests.
    Requests(u64),
}

fn oha(
    url: &str,
    headers: &[(String, String)],
    clients: u32,
    bound: Bound,
    rate: Option<u32>,
) -> Load {
    let mut cmd = Command::new("oha");
    cmd.args(["--no-tui", "--output-format", "json"]);
    match bound {
        Bound::Seconds(secs) => cmd.args(["-z", &format!("{secs}s")]),
        Bound::Requests(n) => cmd.args(["-n", &n.to_string()]),
    };
    cmd.args(["-c", &clients.to_string(), "-t", "60s"]);
    if let Some(q) = rate {
        cmd.args(["-q", &q.to_string()]);
    }
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .expect("oha is installed (scripts/bench-compare installs it)");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("oha output: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let codes = &v["statusCodeDistribution"];
    let ok = codes["200"].as_u64().unwrap_or(0);
    let bad: u64 = codes
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "200")
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    // Requests still in flight when the run's time is up are cut off by oha; they
    // are not failures of the server.
    let failed: u64 = v["errorDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "aborted due to deadline")
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let pct = |k: &str| v["latencyPercentiles"][k].as_f64().unwrap_or(f64::NAN) * 1000.0;
    let secs = match bound {
        Bound::Seconds(secs) => secs as f64,
        Bound::Requests(_) => v["summary"]["total"].as_f64().unwrap_or(f64::NAN),
    };
    Load {
        rps: ok as f64 / secs,
        mib_s: v["summary"]["sizePerSec"].as_f64().unwrap_or(f64::NAN) / 1_048_576.0,
        ok,
        errors: bad + failed,
        p50: pct("p50"),
        p99: pct("p99"),
        p999: pct("p99.9"),
    }
}

fn nginx(dir: &Path, name: &str, body: &str) -> Child {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes auto;\npid {d}/{name}.pid;\nerror_log {d}/{name}.err warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/{name}-body;\n proxy_temp_path {d}/{name}-proxy;\n\
             fastcgi_temp_path {d}/{name}-fcgi;\n uwsgi_temp_path {d}/{name}-uwsgi;\n scgi_temp_path {d}/{name}-scgi;\n\
             keepalive_requests 1000000;\n{body}\n}}\n",
            d = dir.display()
        ),
    )
    .expect("nginx conf");
    let child = Command::new("nginx")
        .args([
            "-p",
            &dir.display().to_string(),
            "-c",
            &conf.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed (scripts/bench-compare installs it)");
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl {args:?}");
}

/// A CA, a server certificate for nginx B and a client certificate for nginx A.
fn nginx_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=bench CA",
            ],
        ]
        .concat(),
    );
    for (name, ext) in [
        (
            "b",
            "subjectAltName=DNS:nginx-b\nextendedKeyUsage=serverAuth",
        ),
        ("a", "extendedKeyUsage=clientAuth"),
    ] {
        openssl(
            dir,
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN=nginx {name}"),
                ],
            ]
            .concat(),
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
}

fn wait_ok(url: &str, headers: &[(String, String)]) {
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut r = client.get(url);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        if r.send().is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered 200");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn veksel_bin() -> PathBuf {
    std::env::var_os("VEKSEL_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/veksel"),
        PathBuf::from,
    )
}

/// A veksel network for the comparison: set up with the sandbox, then the
/// authority and the two gateways of the exchange run as `veksel` processes of their
/// own (so their CPU and memory are theirs alone), with a `files` service on the
/// population register's gateway pointing at the nginx backend.
struct VekselNet {
    children: Reaper,
    client_url: String,
    admins: Vec<(String, String)>,
    consumer_pid: u32,
    provider_pid: u32,
}

fn colon(id: &str) -> String {
    id.replace('/', ":")
}

fn veksel_net(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    databases: Databases,
    backend: u16,
) -> VekselNet {
    let mut options = SandboxOptions::new(dir.to_owned());
    // Fixed ports: the nodes are set up here and served again by their own processes.
    options.ports = Ports {
        authority: free_port(),
        client: [free_port(), free_port(), free_port()],
        peer: [free_port(), free_port(), free_port()],
        admin: [free_port(), free_port(), free_port()],
        population_backend: free_port(),
        tax_backend: free_port(),
        diagnostics_backend: free_port(),
    };
    options.databases = databases;
    let sandbox = rt.block_on(Sandbox::start(options)).expect("sandbox");
    let info = sandbox.info.clone();
    rt.block_on(sandbox.stop());
    let (pop, muni) = (0, 2);
    let spawn = |args: &[&str]| {
        Command::new(veksel_bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the veksel binary (cargo build --release -p veksel)")
    };
    let authority = spawn(&[
        "authority",
        "serve",
        "--data-dir",
        &dir.join("authority").display().to_string(),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let provider = spawn(&[
        "gateway",
        "serve",
        "--data-dir",
        &info.gateways[pop].data_dir.display().to_string(),
    ]);
    let consumer = spawn(&[
        "gateway",
        "serve",
        "--data-dir",
        &info.gateways[muni].data_dir.display().to_string(),
    ]);
    // Reaped from here on, also if setting them up fails.
    let children = Reaper(vec![authority, provider, consumer]);
    let admins = vec![
        (
            info.gateways[pop].admin_url.clone(),
            info.gateways[pop].admin_token.clone(),
        ),
        (
            info.gateways[muni].admin_url.clone(),
            info.gateways[muni].admin_token.clone(),
        ),
    ];
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (url, _) in &admins {
        while client.get(format!("{url}/healthz")).send().is_err() {
            assert!(Instant::now() < deadline, "gateway {url} did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let call = |url: String, token: &str, body: Value| {
        let r = client
            .put(&url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .expect("admin call");
        assert!(r.status().is_success(), "{url}: {}", r.status());
    };
    let pop_client = format!(
        "{}/api/v1/clients/{}",
        admins[0].0,
        colon(&ORGS[pop].subsystem_id())
    );
    call(
        format!("{pop_client}/services/files"),
        &admins[0].1,
        json!({"base_url": format!("http://127.0.0.1:{backend}/files"), "endpoints": [{"method": "GET", "path": "/*"}]}),
    );
    call(
        format!("{pop_client}/access"),
        &admins[0].1,
        json!([{"subject": {"type": "client", "id": ORGS[muni].subsystem_id()}, "service_code": "files", "endpoint": {"method": "GET", "path": "/*"}}]),
    );
    VekselNet {
        provider_pid: children.0[1].id(),
        consumer_pid: children.0[2].id(),
        children,
        client_url: info.gateways[muni].client_url.clone(),
        admins,
    }
}

impl VekselNet {
    fn log_mode(&self, mode: &str) {
        let client = reqwest::blocking::Client::new();
        for (i, org) in [(0usize, 0usize), (1, 2)] {
            let (url, token) = &self.admins[i];
            let r = client
                .put(format!(
                    "{url}/api/v1/clients/{}",
                    colon(&ORGS[org].subsystem_id())
                ))
                .bearer_auth(token)
                .json(&json!({"log_mode": mode, "allow_loopback_http": true}))
                .send()
                .expect("admin call");
            assert!(r.status().is_success());
        }
    }

    fn setup(&self, name: &str) -> Setup {
        let base = format!("{}/r1/{}/files", self.client_url, ORGS[0].subsystem_id());
        Setup {
            name: name.to_owned(),
            url: Box::new(move |size| format!("{base}/{size}")),
            headers: vec![("X-Road-Client".into(), ORGS[2].subsystem_id())],
            pids: vec![
                ("consumer".into(), self.consumer_pid),
                ("provider".into(), self.provider_pid),
            ],
        }
    }

    fn stop(self) {
        drop(self.children);
    }
}

struct Row {
    setup: String,
    size: &'static str,
    clients: u32,
    load: Load,
    cpu_per_1000: f64,
    rss: Vec<(String, f64)>,
}

/// `VEKSEL_COMPARE_SIZES=100m` (a comma-separated list) runs only those body sizes,
/// for a quick check of one row of the table.
fn size_wanted(size: &str) -> bool {
    std::env::var("VEKSEL_COMPARE_SIZES").map_or(true, |v| v.split(',').any(|s| s.trim() == size))
}

fn measure(
    setup: &Setup,
    secs: u64,
    rows: &mut Vec<Row>,
    latency: &mut Vec<(String, &'static str, Load)>,
) {
    for (size, _) in SIZES.iter().copied().filter(|(s, _)| size_wanted(s)) {
        let url = (setup.url)(size);
        wait_ok(&url, &setup.headers);
        for clients in CLIENTS {
            let pids: Vec<u32> = setup.pids.iter().map(|(_, p)| *p).collect();
            reset_peaks(&pids);
            let cpu0 = cpu_secs(&pids);
            // 100 MiB bodies: a number of requests (two rounds of 64; 24 for one
            // client), timed, rather than a time with the finished ones counted.
            let run = if size == "100m" {
                Bound::Requests(u64::from(clients * 2).max(24))
            } else {
                Bound::Seconds(secs)
            };
            let load = oha(&url, &setup.headers, clients, run, None);
            let cpu = cpu_secs(&pids) - cpu0;
            let rss = setup
                .pids
                .iter()
                .map(|(n, p)| (n.clone(), peak_rss_mib(*p)))
                .collect();
            eprintln!(
                "{:<26} {size:>5} {clients:>3} clients: {:>9.1} req/s, {} errors",
                setup.name, load.rps, load.errors
            );
            rows.push(Row {
                setup: setup.name.clone(),
                size,
                clients,
                cpu_per_1000: if load.ok > 0 {
                    cpu * 1000.0 / load.ok as f64
                } else {
                    f64::NAN
                },
                load,
                rss,
            });
        }
        // Latency at a fixed moderate rate: well below every setup's saturation.
        let rate = if size == "100m" { 2 } else { 100 };
        let l = oha(
            &url,
            &setup.headers,
            4,
            Bound::Seconds(secs.max(5) * 2),
            Some(rate),
        );
        latency.push((setup.name.clone(), size, l));
    }
}

fn main() {
    let secs: u64 = std::env::var("VEKSEL_COMPARE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    veksel_pki::tls::install_default_provider();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // The backend: nginx serving files of each size.
    let files = d.join("files");
    std::fs::create_dir_all(&files).expect("files");
    for (name, len) in SIZES {
        let f = std::fs::File::create(files.join(name)).expect("file");
        f.set_len(len).expect("size");
    }
    let backend = free_port();
    let mut servers = Reaper(vec![nginx(
        d,
        "backend",
        &format!(
            " server {{ listen 127.0.0.1:{backend}; location /files/ {{ root {}; }} }}",
            d.display()
        ),
    )]);
    // The nginx chain: A (plain HTTP in) → mutual TLS 1.3 → B → backend.
    nginx_certs(d);
    let (a, b) = (free_port(), free_port());
    servers.0.push(nginx(
        d,
        "b",
        &format!(
            " upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}\n server {{ listen 127.0.0.1:{b} ssl;\n  ssl_protocols TLSv1.3;\n  ssl_certificate {d}/b.pem; ssl_certificate_key {d}/b.key;\n  ssl_client_certificate {d}/ca.pem; ssl_verify_client on;\n  location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}",
            d = d.display()
        ),
    ));
    servers.0.push(nginx(
        d,
        "a",
        &format!(
            " upstream b {{ server 127.0.0.1:{b}; keepalive 128; }}\n server {{ listen 127.0.0.1:{a};\n  location / {{ proxy_pass https://b; proxy_http_version 1.1; proxy_set_header Connection \"\";\n   proxy_ssl_protocols TLSv1.3; proxy_ssl_certificate {d}/a.pem; proxy_ssl_certificate_key {d}/a.key;\n   proxy_ssl_trusted_certificate {d}/ca.pem; proxy_ssl_verify on; proxy_ssl_name nginx-b; proxy_ssl_server_name on; proxy_ssl_session_reuse on; }} }}",
            d = d.display()
        ),
    ));

    let mut rows = Vec::new();
    let mut latency = Vec::new();
    measure(
        &Setup {
            name: "direct".into(),
            url: Box::new(move |s| format!("http://127.0.0.1:{backend}/files/{s}")),
            headers: vec![],
            pids: vec![("backend".into(), servers.0[0].id())],
        },
        secs,
        &mut rows,
        &mut latency,
    );
    measure(
        &Setup {
            name: "nginx chain (mTLS)".into(),
            url: Box::new(move |s| format!("http://127.0.0.1:{a}/files/{s}")),
            headers: vec![],
            pids: vec![
                ("A".into(), servers.0[2].id()),
                ("B".into(), servers.0[1].id()),
            ],
        },
        secs,
        &mut rows,
        &mut latency,
    );

    let mut networks = vec![("sqlite", Databases::Sqlite, None)];
    match veksel_store::testing::postgres_server_url() {
        Some(server) => {
            let dbs: Vec<_> = ["cmp_authority", "cmp_gw0", "cmp_gw1", "cmp_gw2"]
                .iter()
                .map(|n| {
                    rt.block_on(veksel_store::testing::TestDatabase::create(&server, n))
                        .expect("database")
                })
                .collect();
            networks.push((
                "postgres",
                Databases::Postgres {
                    authority: dbs[0].url.clone(),
                    gateways: [dbs[1].url.clone(), dbs[2].url.clone(), dbs[3].url.clone()],
                },
                Some(dbs),
            ));
        }
        None => eprintln!("PostgreSQL rows skipped: VEKSEL_TEST_DATABASE_URL is not set"),
    }
    for (label, databases, dbs) in networks {
        let net = veksel_net(&rt, &d.join(label), databases, backend);
        for mode in ["metadata", "full"] {
            net.log_mode(mode);
            measure(
                &net.setup(&format!("veksel {label} {mode}")),
                secs,
                &mut rows,
                &mut latency,
            );
        }
        net.stop();
        for db in dbs.into_iter().flatten() {
            rt.block_on(db.drop_database()).expect("drop");
        }
    }
    drop(servers);

    print_tables(&rows, &latency, secs);
}

fn print_tables(rows: &[Row], latency: &[(String, &'static str, Load)], secs: u64) {
    println!(
        "\n### Saturation ({secs} s per run; 100 MiB: 24 requests with 1 client, 128 with 64, timed)\n"
    );
    println!(
        "| setup | body | clients | req/s | MiB/s | × nginx chain | × direct | errors | CPU s / 1,000 req | peak RSS MiB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let find = |name: &str| {
            rows.iter()
                .find(|o| o.setup.starts_with(name) && o.size == r.size && o.clients == r.clients)
                .map_or(f64::NAN, |o| o.load.rps)
        };
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {} | {:.3} | {} |",
            r.setup,
            r.size,
            r.clients,
            r.load.rps,
            r.load.mib_s,
            r.load.rps / find("nginx"),
            r.load.rps / find("direct"),
            r.load.errors,
            r.cpu_per_1000,
            r.rss
                .iter()
                .map(|(n, m)| format!("{n} {m:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("\n### Latency at a fixed rate (100 req/s; 2 req/s for 100 MiB), 4 clients, ms\n");
    println!("| setup | body | p50 | p99 | p99.9 | p50 × nginx chain | errors |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (setup, size, l) in latency {
        let nginx = latency
            .iter()
            .find(|(s, z, _)| s.starts_with("nginx") && z == size)
            .map_or(f64::NAN, |(_, _, n)| n.p50);
        println!(
            "| {setup} | {size} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            l.p50,
            l.p99,
            l.p999,
            l.p50 / nginx,
            l.errors
        );
    }
}
