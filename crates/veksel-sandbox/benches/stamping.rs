//! Does time-stamping the message log make throughput dip? Per-second throughput of
//! two-hop exchanges under constant load, with the log stamped every second, every
//! 10 s, and not at all during the run. Each stamp is a round trip to the TSA and a
//! database write beside the exchanges; a dip would show as a low second.
//!
//! Run: `cargo bench -p veksel-sandbox --bench stamping` (optionally
//! `VEKSEL_BENCH_SECONDS=30`). Load: 32 concurrent clients in the same process, bounded
//! by the run time; everything listens on 127.0.0.1.

use std::time::Duration;
use veksel_sandbox::bench::constant_load;
use veksel_sandbox::{ORGS, Ports, Sandbox, SandboxOptions};
use veksel_store::sqlx;

const CLIENTS: usize = 32;

struct Run {
    label: &'static str,
    stamps: i64,
    per_second: Vec<u64>,
    errors: u64,
}

async fn stamps(sandbox: &Sandbox, org: usize) -> i64 {
    let db = &sandbox.gateway(org).expect("gateway runs").db;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM log_stamps")
        .fetch_one(db.pool())
        .await
        .expect("stamps readable");
    n
}

fn main() {
    let seconds: u64 = std::env::var("VEKSEL_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut runs = Vec::new();
    for (label, interval) in [
        ("every second", 1u64),
        ("every 10 s", 10),
        ("none during the run", 3600),
    ] {
        let run = rt.block_on(async {
            let mut options = SandboxOptions::new(dir.path().join(format!("stamp-{interval}")));
            options.ports = Ports::ephemeral();
            options.stamp_interval_secs = interval;
            let sandbox = Sandbox::start(options).await.expect("sandbox starts");
            let url = format!(
                "{}/r1/{}/companies/12345678",
                sandbox.info.gateways[2].client_url,
                ORGS[1].subsystem_id()
            );
            let client = ORGS[2].subsystem_id();
            // Warm-up: connections, caches, first stamps.
            let _ = constant_load(&url, &client, CLIENTS, 2)
                .await
                .expect("load runs");
            let before = stamps(&sandbox, 2).await;
            let (per_second, errors) = constant_load(&url, &client, CLIENTS, seconds)
                .await
                .expect("load runs");
            let after = stamps(&sandbox, 2).await;
            sandbox.stop().await;
            Run {
                label,
                stamps: after - before,
                per_second,
                errors,
            }
        });
        runs.push(run);
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "\n| stamping | stamps in the run | mean req/s | lowest second | highest second | CV | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        let n = r.per_second.len().max(1) as f64;
        let mean = r.per_second.iter().sum::<u64>() as f64 / n;
        let var = r
            .per_second
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        println!(
            "| {} | {} | {:.0} | {} | {} | {:.1} % | {} |",
            r.label,
            r.stamps,
            mean,
            r.per_second.iter().min().copied().unwrap_or(0),
            r.per_second.iter().max().copied().unwrap_or(0),
            100.0 * var.sqrt() / mean.max(1.0),
            r.errors
        );
    }
    for r in &runs {
        println!("\n{}: {:?}", r.label, r.per_second);
    }
}
