//! Does batch signing keep throughput when the signing key is slow? Two-hop exchanges
//! under constant load with the members' keys as files (fast), and with every
//! signature taking 20 ms (a network HSM's pace, emulated: SoftHSM2 signs in
//! microseconds) — one signature per message, then in batches. With one signature
//! per message each gateway is capped near 50 signatures/s; batches lift the cap.
//!
//! Run: `cargo bench -p veksel-sandbox --bench batch_signing` (optionally
//! `VEKSEL_BENCH_SECONDS=20`, `VEKSEL_BENCH_CLIENTS=128`). Load: 32 concurrent clients in this process, bounded by
//! the run time; everything listens on 127.0.0.1.

use std::sync::atomic::Ordering;
use std::time::Duration;
use veksel_sandbox::bench::constant_load;
use veksel_sandbox::slow_keys::slow_down;
use veksel_sandbox::{ORGS, Ports, Sandbox, SandboxOptions};

const DELAY: Duration = Duration::from_millis(20);

fn main() {
    let seconds: u64 = std::env::var("VEKSEL_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let clients: usize = std::env::var("VEKSEL_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "\n| keys | signing | req/s | signatures/s per gateway | messages per signature | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (n, (keys, slow, batch)) in [
        ("files", false, false),
        ("files", false, true),
        ("20 ms per signature", true, false),
        ("20 ms per signature", true, true),
    ]
    .into_iter()
    .enumerate()
    {
        rt.block_on(async {
            let mut options = SandboxOptions::new(dir.path().join(format!("run-{n}")));
            options.ports = Ports::ephemeral();
            let sandbox = Sandbox::start(options).await.expect("sandbox starts");
            let (consumer, provider) = (2, 1);
            let mut counters = Vec::new();
            for org in [consumer, provider] {
                let gw = sandbox.gateway(org).expect("gateway runs");
                let delay = if slow { DELAY } else { Duration::ZERO };
                counters.push(slow_down(gw, delay, batch).expect("keys replaced"));
            }
            let url = format!(
                "{}/r1/{}/companies/12345678",
                sandbox.info.gateways[consumer].client_url,
                ORGS[provider].subsystem_id()
            );
            let client = ORGS[consumer].subsystem_id();
            let _ = constant_load(&url, &client, clients, 1)
                .await
                .expect("load runs");
            let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            let (per_second, errors) = constant_load(&url, &client, clients, seconds)
                .await
                .expect("load runs");
            let signatures: u64 = counters
                .iter()
                .zip(&before)
                .map(|(c, b)| c.load(Ordering::Relaxed) - b)
                .sum();
            let exchanges: u64 = per_second.iter().sum();
            let rate = exchanges as f64 / seconds as f64;
            let signature_rate = signatures as f64 / 2.0 / seconds as f64;
            println!(
                "| {keys} | {} | {rate:.0} | {signature_rate:.0} | {:.1} | {errors} |",
                if batch { "batches" } else { "one per message" },
                2.0 * exchanges as f64 / signatures.max(1) as f64,
            );
            sandbox.stop().await;
        });
        std::thread::sleep(Duration::from_millis(200));
    }
}
