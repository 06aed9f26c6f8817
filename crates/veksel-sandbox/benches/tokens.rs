//! The token service and tokens on the exchange: how many tokens the authority
//! issues per second, and what checking a bearer token adds to an exchange at the
//! provider's gateway.
//!
//! 1. Issuance: assertions are signed before the clock starts (each with its own
//!    `jti`), then posted by concurrent clients for a bounded time; every grant is
//!    fully checked (chain, revocation, scopes, replay) and logged.
//! 2. The check alone, in process: a token verified with the configuration's keys
//!    (one ECDSA verification) and then from the gateway's memory, plus the scope,
//!    audience and consumer rules.
//! 3. End to end, one connection: the same service with and without a required
//!    scope, in interleaved rounds, so the machine's drift falls on both.
//!
//! Run: `cargo bench -p veksel-sandbox --bench tokens` (`VEKSEL_BENCH_SECONDS`,
//! default 8, for the issuance runs). Everything listens on 127.0.0.1.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use veksel_proto::oauth::Grant;
use veksel_sandbox::{ORGS, Ports, Sandbox, SandboxOptions};

const ROUNDS: usize = 6;
const CALLS_PER_ROUND: usize = 500;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

async fn send_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: serde_json::Value,
) {
    let resp = http
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("admin API answers");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
}

fn main() {
    let seconds: u64 = std::env::var("VEKSEL_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(run(dir.path(), seconds));
}

async fn run(dir: &std::path::Path, seconds: u64) {
    let mut options = SandboxOptions::new(dir.join("net"));
    options.ports = Ports::ephemeral();
    let sandbox = Sandbox::start(options).await.expect("sandbox starts");
    let info = &sandbox.info;
    let plain = reqwest::Client::new();
    let (tax, municipality) = (ORGS[1], ORGS[2]);
    let service = format!("{}/companies", tax.subsystem_id());
    send_json(
        &plain,
        reqwest::Method::POST,
        &format!("{}/api/v1/management-requests", info.gateways[1].admin_url),
        &info.gateways[1].admin_token,
        json!({"type": "scope-registration", "scope": "tax:companies", "description": "Companies",
               "consumers": [municipality.member()], "delegable": false}),
    )
    .await;
    let ca = std::fs::read_to_string(&info.authority_ca_file).expect("CA file");
    let roots = veksel_pki::certs_from_pem(&ca).expect("CA");
    let authority = reqwest::Client::builder()
        .use_preconfigured_tls(veksel_pki::tls::https_client_config(&roots).expect("TLS"))
        .build()
        .expect("client");
    let issuer = info.authority_url.clone();
    let gw = sandbox.gateway(2).expect("municipality's gateway");
    let signer = gw
        .keys
        .get()
        .signer(&municipality.member().parse().expect("member id"))
        .expect("signing key");
    let grant = Grant {
        client: municipality.member(),
        scope: "tax:companies".into(),
        resources: vec![service.clone()],
        consumer_org: None,
    };

    // 1. Issuance.
    println!("## Token issuance ({seconds} s per run, SQLite)\n");
    println!("| concurrent clients | tokens/s | p50 ms | p99 ms | refused |");
    println!("|---|---|---|---|---|");
    for clients in [1usize, 8, 32] {
        // Enough assertions for the run, signed before it starts.
        let now = now_secs();
        let count = 3000 * seconds as usize;
        let assertions: Arc<Vec<String>> = Arc::new(
            (0..count)
                .map(|_| {
                    grant
                        .assertion(
                            signer.as_ref(),
                            &issuer,
                            now,
                            &uuid::Uuid::new_v4().to_string(),
                        )
                        .expect("assertion")
                })
                .collect(),
        );
        let next = Arc::new(AtomicUsize::new(0));
        let url = format!("{issuer}/oauth/v1/token");
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (http, url, assertions, next) = (
                authority.clone(),
                url.clone(),
                assertions.clone(),
                next.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let (mut latencies, mut refused) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(a) = assertions.get(i) else { break };
                    let t = Instant::now();
                    let resp = http
                        .post(&url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(format!(
                            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={a}"
                        ))
                        .send()
                        .await;
                    let ok = match resp {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        refused += 1;
                    }
                }
                (latencies, refused)
            }));
        }
        let (mut all, mut refused) = (Vec::new(), 0);
        for t in tasks {
            let (l, r) = t.await.expect("client task");
            all.extend(l);
            refused += r;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let all = sorted(all);
        println!(
            "| {clients} | {:.0} | {:.2} | {:.2} | {refused} |",
            all.len() as f64 / elapsed,
            percentile(&all, 0.5),
            percentile(&all, 0.99)
        );
    }

    // 2. The check alone.
    let resp = authority
        .post(format!("{issuer}/oauth/v1/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            grant
                .assertion(
                    signer.as_ref(),
                    &issuer,
                    now_secs(),
                    &uuid::Uuid::new_v4().to_string()
                )
                .expect("assertion")
        ))
        .send()
        .await
        .expect("token service answers");
    let answer: veksel_proto::oauth::TokenResponse = resp.json().await.expect("token");
    let token = answer.access_token;
    let provider = sandbox.gateway(1).expect("tax gateway");
    let conf = provider.conf.latest().expect("configuration");
    let ts = conf.conf().token_service.clone().expect("token service");
    let service_id: veksel_id::ServiceId = service.parse().expect("service id");
    let caller: veksel_id::MemberId = municipality.member().parse().expect("member");
    const N: u32 = 2000;
    let t = Instant::now();
    for _ in 0..N {
        let c = veksel_proto::oauth::verify_access_token(&token, &ts.keys, &ts.issuer, now_secs())
            .expect("valid");
        veksel_proto::oauth::authorise(&c, "tax:companies", &service_id, &caller, &ts)
            .expect("admitted");
    }
    let uncached = t.elapsed().as_secs_f64() * 1e6 / f64::from(N);
    let t = Instant::now();
    for _ in 0..N * 10 {
        let c = conf.access_token(&token, now_secs()).expect("valid");
        veksel_proto::oauth::authorise(&c, "tax:companies", &service_id, &caller, &ts)
            .expect("admitted");
    }
    let cached = t.elapsed().as_secs_f64() * 1e6 / f64::from(N * 10);
    println!("\n## The gateway's token check, in process\n");
    println!("| | µs per check |");
    println!("|---|---|");
    println!("| signature verified (first use of a token) | {uncached:.1} |");
    println!("| from memory (every later use) | {cached:.2} |");

    // 3. End to end, one connection, with and without a required scope.
    let client_url = format!(
        "{}/api/v1/clients/{}",
        info.gateways[1].admin_url,
        tax.subsystem_id().replace('/', ":")
    );
    let current: serde_json::Value = plain
        .get(&client_url)
        .bearer_auth(&info.gateways[1].admin_token)
        .send()
        .await
        .expect("admin API")
        .json()
        .await
        .expect("client JSON");
    let without = current["services"]["companies"].clone();
    let mut with = without.clone();
    with["scopes"] = json!([{"scope": "tax:companies"}]);
    let url = format!(
        "{}/r1/{}/companies/12345678",
        info.gateways[2].client_url,
        tax.subsystem_id()
    );
    let client = municipality.subsystem_id();
    let http = reqwest::Client::new();
    let (mut plain_ms, mut scoped_ms) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for scoped in [round % 2 == 0, round % 2 == 1] {
            let body = if scoped {
                with.clone()
            } else {
                without.clone()
            };
            send_json(
                &plain,
                reqwest::Method::PUT,
                &format!("{client_url}/services/companies"),
                &info.gateways[1].admin_token,
                body,
            )
            .await;
            let into = if scoped {
                &mut scoped_ms
            } else {
                &mut plain_ms
            };
            for i in 0..CALLS_PER_ROUND + 50 {
                let mut req = http.get(&url).header("X-Road-Client", &client);
                if scoped {
                    req = req.bearer_auth(&token);
                }
                let t = Instant::now();
                let resp = req.send().await.expect("exchange");
                assert_eq!(resp.status(), 200, "round {round}, scoped {scoped}");
                resp.bytes().await.expect("body");
                // The first calls of a round warm the configuration change.
                if i >= 50 {
                    into.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
    }
    let (plain_ms, scoped_ms) = (sorted(plain_ms), sorted(scoped_ms));
    println!(
        "\n## One connection, {} exchanges each, {ROUNDS} interleaved rounds\n",
        plain_ms.len()
    );
    println!("| service | p50 ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (label, v) in [
        ("no scope required", &plain_ms),
        ("scope required, bearer token", &scoped_ms),
    ] {
        println!(
            "| {label} | {:.3} | {:.3} | {:.3} |",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99)
        );
    }
    println!(
        "\np50 added by the token: {:.3} ms",
        percentile(&scoped_ms, 0.5) - percentile(&plain_ms, 0.5)
    );
    sandbox.stop().await;
}

fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time")
}
