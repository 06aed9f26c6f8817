//! Crash consistency: under load, the whole sandbox process is killed with SIGKILL at
//! random moments and restarted. Every response a client received must have its
//! message-log records on both gateways afterwards, every log must verify, and the
//! network must serve again after each restart. Two more tests stop the process at
//! the exact points where a small answer's two records are apart: the provider's
//! being committed while the answer's head is already on its way, and the consumer's
//! not yet committed though the provider's is.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{MUNI, spawn_env, spawn_with, wait_ready};

/// A little pseudo-randomness without a dependency: the clock's nanoseconds.
fn jitter(max_ms: u64) -> u64 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    n % max_ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_logged_exchange_sqlite() {
    kill_9_under_load(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_logged_exchange_postgres() {
    let Some(server) = veksel_store::testing::postgres_server_url() else {
        return;
    };
    let prefix = format!("veksel_crash_{}", uuid::Uuid::new_v4().simple());
    kill_9_under_load(Some(veksel_store::postgres_url_with_database(
        &server, &prefix,
    )))
    .await;
    for node in ["authority", "population", "tax", "municipality"] {
        veksel_store::drop_postgres_database(&server, &format!("{prefix}_{node}"))
            .await
            .unwrap();
    }
}

/// SIGKILLs a sandbox under load four times; `postgres` keeps its data in databases
/// named after that URL instead of SQLite files.
async fn kill_9_under_load(postgres: Option<String>) {
    veksel_pki::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let args: Vec<&str> = match &postgres {
        Some(url) => vec!["--postgres", url],
        None => vec![],
    };
    let spawn = |dir: &std::path::Path| spawn_with(dir, &args);
    let mut child = spawn(dir.path());
    let mut info = wait_ready(&http, dir.path()).await;
    let received: Arc<Mutex<BTreeSet<(String, String)>>> = Default::default();

    for round in 0..4 {
        let client_url = info["gateways"][2]["client_url"]
            .as_str()
            .unwrap()
            .to_owned();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..8 {
            let (http, received, stop, client_url) = (
                http.clone(),
                received.clone(),
                stop.clone(),
                client_url.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 10_000 {
                    i += 1;
                    let (provider, path) = if (i + w).is_multiple_of(2) {
                        (
                            "DEV/GOV/10000002/tax",
                            "DEV/GOV/10000002/tax/companies/12345678",
                        )
                    } else {
                        (
                            "DEV/GOV/10000001/population",
                            "DEV/GOV/10000001/population/persons/0101701234",
                        )
                    };
                    let Ok(resp) = http
                        .get(format!("{client_url}/r1/{path}"))
                        .header("X-Road-Client", MUNI)
                        .send()
                        .await
                    else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    if resp.status() != 200 {
                        continue;
                    }
                    let id = resp.headers()["x-road-request-id"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    // Only a response whose body arrived whole counts as received.
                    if resp.bytes().await.is_ok() {
                        received.lock().unwrap().insert((id, provider.to_owned()));
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + jitter(900))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            w.await.unwrap();
        }
        child = spawn(dir.path());
        info = wait_ready(&http, dir.path()).await;
        let resp = company(&http, &info, &format!("1234567{round}")).await;
        assert_eq!(resp.status(), 200, "serving again after restart {round}");
    }
    interrupt(child);

    let received = received.lock().unwrap().clone();
    eprintln!("{} exchanges received across 4 SIGKILLs", received.len());
    assert!(
        received.len() > 20,
        "the load produced exchanges ({})",
        received.len()
    );
    for (slug, side) in [
        ("municipality", "consumer"),
        ("population", "provider"),
        ("tax", "provider"),
    ] {
        let gw_dir = dir.path().join(slug);
        // The PostgreSQL variant must not have run on SQLite after all.
        let config = veksel_gateway::read_config(&gw_dir).unwrap();
        assert_eq!(
            config.database_url.is_some(),
            postgres.is_some(),
            "{slug}: {:?}",
            config.database_url
        );
        assert_eq!(
            gw_dir.join(veksel_gateway::files::DB).exists(),
            postgres.is_none(),
            "{slug}: SQLite file"
        );
        let report = veksel_gateway::verify_log(&gw_dir)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{slug}: {e}"));
        assert!(report.records > 0, "{slug}");
        let logged = logged_ids(&gw_dir, side).await;
        for (id, provider) in &received {
            let concerned = slug == "municipality"
                || provider.contains(if slug == "tax" {
                    "10000002"
                } else {
                    "10000001"
                });
            if concerned {
                assert!(
                    logged.contains(id),
                    "{slug} has no {side} record of received exchange {id}"
                );
            }
        }
    }
}

/// Asks the sandbox at `info` for a company of the tax register, as the municipality.
async fn company(
    http: &reqwest::Client,
    info: &serde_json::Value,
    number: &str,
) -> reqwest::Response {
    http.get(format!(
        "{}/r1/DEV/GOV/10000002/tax/companies/{number}",
        info["gateways"][2]["client_url"].as_str().unwrap()
    ))
    .header("X-Road-Client", MUNI)
    .send()
    .await
    .unwrap()
}

/// Stops the sandbox as an operator would (SIGINT) and waits for it.
fn interrupt(mut child: std::process::Child) {
    common::interrupt_and_wait(&mut child);
}

/// The request ids a gateway's message log holds for one side.
async fn logged_ids(gw_dir: &std::path::Path, side: &str) -> BTreeSet<String> {
    let config = veksel_gateway::read_config(gw_dir).unwrap();
    let db = veksel_gateway::open_db(gw_dir, &config).await.unwrap();
    let rows: Vec<(String,)> =
        veksel_store::sqlx::query_as("SELECT request_id FROM message_log WHERE side = $1")
            .bind(side)
            .fetch_all(db.pool())
            .await
            .unwrap();
    db.close().await;
    rows.into_iter().map(|r| r.0).collect()
}

/// Runs a sandbox that aborts at `point` on its first exchange, checks the client got
/// no answer, restarts it without the crash point, and returns the request ids
/// logged by the consumer (municipality) and the provider (tax) afterwards, after
/// checking both logs verify and the network serves again.
async fn crash_at(point: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    veksel_pki::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut child = spawn_env(dir.path(), &[], &[("VEKSEL_TEST_CRASH_AT", point)]);
    let info = wait_ready(&http, dir.path()).await;
    let client_url = info["gateways"][2]["client_url"].as_str().unwrap();
    let answer = http
        .get(format!(
            "{client_url}/r1/DEV/GOV/10000002/tax/companies/12345678"
        ))
        .header("X-Road-Client", MUNI)
        .send()
        .await;
    // The head may have left before the crash; the body must not arrive whole.
    let received = match answer {
        Ok(resp) if resp.status() == 200 => resp.bytes().await.is_ok(),
        _ => false,
    };
    assert!(
        !received,
        "{point}: an answer arrived from a crashing gateway"
    );
    let status = child.wait().unwrap();
    assert!(!status.success(), "{point}: the process aborted: {status}");

    let child = spawn_with(dir.path(), &[]);
    let info = wait_ready(&http, dir.path()).await;
    let resp = company(&http, &info, "12345678").await;
    assert_eq!(resp.status(), 200, "{point}: serving again");
    let served = resp.headers()["x-road-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(resp.bytes().await.is_ok());
    interrupt(child);

    let mut logs = Vec::new();
    for (slug, side) in [("municipality", "consumer"), ("tax", "provider")] {
        let gw_dir = dir.path().join(slug);
        veksel_gateway::verify_log(&gw_dir)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{point}: {slug}: {e}"));
        let mut ids = logged_ids(&gw_dir, side).await;
        assert!(
            ids.remove(&served),
            "{point}: {slug} logged the exchange after the restart"
        );
        logs.push(ids);
    }
    let provider = logs.pop().unwrap();
    let consumer = logs.pop().unwrap();
    (consumer, provider)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_the_provider_commits_leaves_no_record_released() {
    let (consumer, provider) = crash_at("provider-answered").await;
    // The signed head was out, but the body waits for the provider's commit, and the
    // consumer's record for the body: neither side holds the crashed exchange.
    assert!(consumer.is_empty(), "consumer: {consumer:?}");
    assert!(provider.is_empty(), "provider: {provider:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_consumer_commits_leaves_only_the_provider_record() {
    let (consumer, provider) = crash_at("consumer-verified").await;
    // The provider committed and released the body; the consumer died checking it
    // and never released it to its client: the provider's record is evidence of an
    // answer given, the consumer has none of an answer received.
    assert!(consumer.is_empty(), "consumer: {consumer:?}");
    assert_eq!(provider.len(), 1, "provider: {provider:?}");
}
