//! The console's pages with a full message log: how long each page takes, seen from a
//! browser on the same machine, once 10,000 exchanges (20,000 records on the
//! population register's gateway: both its log and its monitoring) are in.
//!
//! The target (issue 12): every page answers within 100 ms for 10,000 log records.
//! Each page is asked for 50 times in a row with a signed-in session; the table gives
//! the median, the 95th percentile and the slowest.
//!
//! The authority's pages are measured with a ledger of 20,000 governance events
//! (`VEKSEL_BENCH_LEDGER`) besides the set-up's, sequenced, signed and cosigned.
//!
//! Run: `cargo bench -p veksel-sandbox --bench console` (`VEKSEL_BENCH_RECORDS`,
//! default 10,000). Everything listens on 127.0.0.1; the load is bounded in count
//! and in time (3 minutes each for the exchanges and the ledger).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use veksel_sandbox::{ORGS, Ports, Sandbox, SandboxOptions};

const ROUNDS: usize = 50;
const CLIENTS: usize = 16;
/// The person whose lookups the data tracker lists: one exchange in a hundred.
const TRACKED: &str = "0101701234";

fn main() {
    let records: usize = std::env::var("VEKSEL_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger_events: usize = std::env::var("VEKSEL_BENCH_LEDGER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    rt.block_on(run(dir.path(), records, ledger_events));
}

/// Signs in to the console at `base` with an admin token; the session cookie.
async fn sign_in(http: &reqwest::Client, base: &str, token: &str) -> String {
    let resp = http
        .post(format!("{base}/console/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .expect("sign-in");
    resp.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("cookie value")
        .to_owned()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(dir: &std::path::Path, records: usize, ledger_events: usize) {
    let mut options = SandboxOptions::new(dir.join("net"));
    options.ports = Ports::ephemeral();
    // Benchmarks measure the pages, not the disk's fsync.
    options.sync_commit = false;
    let sandbox = Sandbox::start(options).await.expect("sandbox starts");
    let info = &sandbox.info;
    let population = &info.gateways[0];
    let municipality = info.gateways[2].client_url.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    // The exchanges: the municipality looks up persons, one in a hundred the
    // tracked one, each for a case.
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(180);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (http, url, next) = (http.clone(), municipality.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= records || Instant::now() > deadline {
                    return;
                }
                let person = if n % 100 == 0 {
                    TRACKED.to_owned()
                } else {
                    format!("{:010}", 1_000_000_000 + n)
                };
                let resp = http
                    .get(format!(
                        "{url}/r1/{}/persons/{person}",
                        ORGS[0].subsystem_id()
                    ))
                    .header("X-Road-Client", ORGS[2].subsystem_id())
                    .header("X-Road-Issue", format!("case {n}"))
                    .send()
                    .await
                    .expect("the exchange is answered");
                assert!(resp.headers().get("x-road-error").is_none());
            }
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
    let done = next.load(Ordering::Relaxed).min(records);
    println!(
        "{done} exchanges in {:.1} s ({CLIENTS} clients); the population register's gateway holds {done} message-log and {done} monitoring records\n",
        started.elapsed().as_secs_f64()
    );

    // A security officer's session, and the tracked person's.
    let admin = &population.admin_url;
    let officer = sign_in(&http, admin, &population.admin_token).await;
    let gw = sandbox.gateway(0).expect("the register's gateway");
    let person = gw
        .console
        .open_person(TRACKED, gw.clock.now_ms())
        .expect("a person's session")
        .split(';')
        .next()
        .expect("cookie value")
        .to_owned();
    let some_request: Vec<serde_json::Value> = http
        .get(format!("{admin}/api/v1/message-log?limit=1"))
        .bearer_auth(&population.admin_token)
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("JSON");
    let request_id = some_request[0]["request_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let client_page = format!(
        "/console/clients/{}",
        ORGS[0].subsystem_id().replace('/', ":")
    );
    let pages: Vec<(&str, String, &str)> = vec![
        ("overview", "/console/".into(), &officer),
        (
            "subsystem, services and access rights",
            client_page,
            &officer,
        ),
        ("message log, newest 200", "/console/log".into(), &officer),
        (
            "message log by request id",
            format!("/console/log?request_id={request_id}"),
            &officer,
        ),
        (
            "message log by client",
            format!("/console/log?client={}", ORGS[2].subsystem_id()),
            &officer,
        ),
        (
            "monitoring, the last hour",
            "/console/monitoring".into(),
            &officer,
        ),
        (
            "who has used data about me (100 lookups)",
            "/console/me".into(),
            &person,
        ),
    ];
    // The authority's pages, with its admin token's session, over its TLS.
    let roots = veksel_pki::certs_from_pem(
        &std::fs::read_to_string(&info.authority_ca_file).expect("the authority's CA"),
    )
    .expect("PEM");
    let authority_http = reqwest::Client::builder()
        .use_preconfigured_tls(veksel_pki::tls::https_client_config(&roots).expect("TLS"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let authority = &info.authority_url;
    let registrar = sign_in(&authority_http, authority, &info.authority_admin_token).await;
    // A ledger of some size: governance events, each of which the ledger turns
    // into a signed entry, until the witnesses have cosigned a checkpoint of all.
    let state = &sandbox.authority.as_ref().expect("the authority").state;
    let started = Instant::now();
    for n in 0..ledger_events {
        state
            .registry
            .audit(
                state.clock.now_ms(),
                "bench",
                "bench.event",
                &n.to_string(),
                "{}",
            )
            .await
            .expect("an audit event");
    }
    state.ledger_changed.notify_one();
    let deadline = Instant::now() + Duration::from_secs(180);
    let ledger_size = loop {
        let status: serde_json::Value = authority_http
            .get(format!("{authority}/api/v1/ledger"))
            .bearer_auth(&info.authority_admin_token)
            .send()
            .await
            .expect("ledger status")
            .json()
            .await
            .expect("JSON");
        if let Some(size) = status["published_size"].as_u64()
            && size >= ledger_events as u64
        {
            break size;
        }
        assert!(Instant::now() < deadline, "no published checkpoint");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "the ledger's published checkpoint has {ledger_size} entries ({ledger_events} events added, sequenced and cosigned in {:.1} s)\n",
        started.elapsed().as_secs_f64()
    );
    let authority_pages: Vec<(&str, String, &str)> = vec![
        ("authority: overview", "/console/".into(), &registrar),
        (
            "authority: requests",
            "/console/requests".into(),
            &registrar,
        ),
        (
            "authority: audit trail",
            "/console/audit".into(),
            &registrar,
        ),
        (
            "authority: ledger explorer",
            "/console/ledger".into(),
            &registrar,
        ),
        (
            "authority: a ledger entry with its proof",
            format!("/console/ledger/{}", ledger_size / 2),
            &registrar,
        ),
        ("authority: people", "/console/people".into(), &registrar),
    ];

    println!("| page | p50 ms | p95 ms | slowest ms | bytes |");
    println!("|---|---:|---:|---:|---:|");
    let gateway_pages = pages
        .into_iter()
        .map(|(n, p, c)| (n, admin.as_str(), p, c, &http));
    let authority_pages = authority_pages
        .into_iter()
        .map(|(n, p, c)| (n, authority.as_str(), p, c, &authority_http));
    for (name, base, path, cookie, http) in gateway_pages.chain(authority_pages) {
        let mut times = Vec::with_capacity(ROUNDS);
        let mut bytes = 0;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let resp = http
                .get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .expect("page");
            assert_eq!(resp.status(), 200, "{path}");
            bytes = resp.bytes().await.expect("body").len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {bytes} |",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            times[times.len() - 1]
        );
    }
    sandbox.stop().await;
}
