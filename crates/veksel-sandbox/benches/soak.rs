//! Soak: a whole network at half of its measured saturation for 30 minutes. Reports
//! per interval the exchanges, errors, the process's resident memory (authority, three
//! gateways and the load generator share this process) and the size of the two busy
//! gateways' SQLite files, then the summary: errors, RSS trend over the second half,
//! database bytes per exchange.
//!
//! Run: `cargo bench -p veksel-sandbox --bench soak` (`VEKSEL_SOAK_MINUTES=30`,
//! default 30; `VEKSEL_SOAK_RATE` to skip the saturation probe). Everything listens on
//! 127.0.0.1; the run is bounded by its duration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use veksel_sandbox::bench::constant_load;
use veksel_sandbox::{ORGS, Ports, Sandbox, SandboxOptions};

const INTERVAL_SECS: u64 = 60;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn db_bytes(dir: &std::path::Path) -> u64 {
    ["gateway.db", "gateway.db-wal", "gateway.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn main() {
    let minutes: u64 = std::env::var("VEKSEL_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(async {
        let mut options = SandboxOptions::new(dir.path().join("soak"));
        options.ports = Ports::ephemeral();
        let sandbox = Sandbox::start(options).await.expect("sandbox starts");
        let (consumer, provider) = (2, 1);
        let url = format!(
            "{}/r1/{}/companies/12345678",
            sandbox.info.gateways[consumer].client_url,
            ORGS[provider].subsystem_id()
        );
        let client = ORGS[consumer].subsystem_id();
        let rate: u64 = match std::env::var("VEKSEL_SOAK_RATE").ok().and_then(|v| v.parse().ok()) {
            Some(r) => r,
            None => {
                let (per_second, _) = constant_load(&url, &client, 32, 10).await.expect("probe");
                let saturation = per_second.iter().sum::<u64>() / 10;
                println!("saturation: {saturation} req/s (32 clients, 10 s)");
                saturation / 2
            }
        };
        println!("soak: {rate} req/s for {minutes} min");
        let dirs = [
            sandbox.info.gateways[consumer].data_dir.clone(),
            sandbox.info.gateways[provider].data_dir.clone(),
        ];
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let skipped = Arc::new(AtomicU64::new(0));
        let first_failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
        let db_start: u64 = dirs.iter().map(|d| db_bytes(d)).sum();
        let ok_start = 0u64;
        let start = Instant::now();
        let end = start + Duration::from_secs(minutes * 60);
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut next_report = start + Duration::from_secs(INTERVAL_SECS);
        let mut samples: Vec<(f64, u64)> = Vec::new();
        let mut last_ok = 0u64;
        println!("\n| minute | exchanges | errors | not sent (256 in flight) | RSS MiB | gateway DBs MiB |");
        println!("|---:|---:|---:|---:|---:|---:|");
        while Instant::now() < end {
            ticker.tick().await;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                // 256 requests outstanding: the network is not keeping up.
                skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (http, url, client) = (http.clone(), url.clone(), client.clone());
            let (ok_count, error_count) = (ok.clone(), errors.clone());
            let failures = first_failures.clone();
            let sent_at = start.elapsed().as_secs();
            tokio::spawn(async move {
                let failure = match http.get(&url).header("X-Road-Client", &client).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.err().map(|e| e.to_string()),
                    Ok(r) => Some(format!(
                        "HTTP {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Some(e.to_string()),
                };
                match failure {
                    None => {
                        ok_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(f) => {
                        error_count.fetch_add(1, Ordering::Relaxed);
                        let mut list = failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if list.len() < 5 {
                            list.push(format!("at {sent_at} s: {f}"));
                        }
                    }
                }
                drop(permit);
            });
            if Instant::now() >= next_report {
                next_report += Duration::from_secs(INTERVAL_SECS);
                let now_ok = ok.load(Ordering::Relaxed);
                let minute = start.elapsed().as_secs_f64() / 60.0;
                let rss = rss_bytes();
                samples.push((minute, rss));
                println!(
                    "| {:.0} | {} | {} | {} | {:.0} | {:.1} |",
                    minute,
                    now_ok - last_ok,
                    errors.load(Ordering::Relaxed),
                    skipped.load(Ordering::Relaxed),
                    rss as f64 / 1048576.0,
                    dirs.iter().map(|d| db_bytes(d)).sum::<u64>() as f64 / 1048576.0
                );
                last_ok = now_ok;
            }
        }
        tokio::time::sleep(Duration::from_secs(11)).await;
        let total = ok.load(Ordering::Relaxed) - ok_start;
        let db_growth = dirs.iter().map(|d| db_bytes(d)).sum::<u64>().saturating_sub(db_start);
        // Least-squares slope of RSS over the second half, MiB per hour.
        let half: Vec<&(f64, u64)> = samples.iter().skip(samples.len() / 2).collect();
        let n = half.len() as f64;
        let (mx, my) = (
            half.iter().map(|s| s.0).sum::<f64>() / n.max(1.0),
            half.iter().map(|s| s.1 as f64).sum::<f64>() / n.max(1.0),
        );
        let slope = half.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum::<f64>()
            / half.iter().map(|s| (s.0 - mx).powi(2)).sum::<f64>().max(1e-9);
        println!(
            "\nexchanges: {total}, errors: {}, RSS trend (second half): {:+.1} MiB/hour, \
             gateway databases: +{:.1} MiB = {:.0} bytes per exchange (both gateways, metadata log)",
            errors.load(Ordering::Relaxed),
            slope * 60.0 / 1048576.0,
            db_growth as f64 / 1048576.0,
            db_growth as f64 / total.max(1) as f64
        );
        for f in first_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            println!("failure {f}");
        }
        println!("not sent: {}", skipped.load(Ordering::Relaxed));
        sandbox.stop().await;
    });
}
