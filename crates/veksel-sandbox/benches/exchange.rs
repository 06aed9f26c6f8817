//! Throughput and latency of a two-hop exchange (client → consumer gateway → provider
//! gateway → backend, with signing, verification and message log) against a direct
//! call to the same backend. Load comes from `wrk` (Debian package `wrk`); every run
//! is bounded in time and everything listens on 127.0.0.1.
//!
//! Run: `cargo bench -p veksel-sandbox --bench exchange` (optionally
//! `VEKSEL_BENCH_SECONDS=20`). The table it prints goes into BENCHMARKS.md.

use std::process::Command;
use std::time::Duration;
use veksel_sandbox::{ORGS, Ports, Sandbox, SandboxOptions};

struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn parse_ms(v: &str) -> f64 {
    let v = v.trim();
    if let Some(x) = v.strip_suffix("us") {
        x.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
    } else if let Some(x) = v.strip_suffix("ms") {
        x.parse().unwrap_or(f64::NAN)
    } else if let Some(x) = v.strip_suffix('s') {
        x.parse::<f64>().unwrap_or(f64::NAN) * 1000.0
    } else {
        f64::NAN
    }
}

fn wrk(url: &str, headers: &[String], connections: u32, seconds: u64) -> Run {
    let mut cmd = Command::new("wrk");
    let threads = connections.min(2);
    cmd.args([
        "-t",
        &threads.to_string(),
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{seconds}s"),
        "--latency",
        "--timeout",
        "10s",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(|l| l.trim_start()[prefix.len()..].trim().to_owned())
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let p50 = field("50%").map(|v| parse_ms(&v)).unwrap_or(f64::NAN);
    let p99 = field("99%").map(|v| parse_ms(&v)).unwrap_or(f64::NAN);
    let non2xx = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let socket_errors = text.lines().filter(|l| l.contains("Socket errors")).count() as u64;
    if non2xx > 0 || socket_errors > 0 {
        eprintln!("wrk reported errors for {url}:\n{text}");
    }
    Run {
        rps,
        p50_ms: p50,
        p99_ms: p99,
        errors: non2xx + socket_errors,
    }
}

fn main() {
    let seconds: u64 = std::env::var("VEKSEL_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();
    for sync_commit in [true, false] {
        let sandbox = rt.block_on(async {
            let mut options = SandboxOptions::new(dir.path().join(format!("sync-{sync_commit}")));
            options.ports = Ports::ephemeral();
            options.sync_commit = sync_commit;
            Sandbox::start(options).await.expect("sandbox starts")
        });
        let info = sandbox.info.clone();
        let direct = format!(
            "http://127.0.0.1:{}/companies/12345678",
            info.ports.tax_backend
        );
        let via = format!(
            "{}/r1/{}/companies/12345678",
            info.gateways[2].client_url,
            ORGS[1].subsystem_id()
        );
        let client_header = vec![format!("X-Road-Client: {}", ORGS[2].subsystem_id())];
        // Warm up connections and caches.
        let _ = wrk(&via, &client_header, 4, 1);
        let durability = if sync_commit {
            "message log fsync on commit"
        } else {
            "message log crash-safe, no fsync"
        };
        for connections in [1u32, 32] {
            if sync_commit {
                let d = wrk(&direct, &[], connections, seconds);
                rows.push(("direct to backend".to_owned(), connections, d));
            }
            let g = wrk(&via, &client_header, connections, seconds);
            rows.push((
                format!("two gateways, signed, {durability}"),
                connections,
                g,
            ));
        }
        rt.block_on(sandbox.stop());
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\n| path | connections | requests/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, c, r) in &rows {
        println!(
            "| {name} | {c} | {:.0} | {:.2} | {:.2} | {} |",
            r.rps, r.p50_ms, r.p99_ms, r.errors
        );
    }
    let direct32 = rows
        .iter()
        .find(|r| r.0.starts_with("direct") && r.1 == 32)
        .map(|r| r.2.rps);
    for (name, c, r) in rows.iter().filter(|r| !r.0.starts_with("direct")) {
        if let Some(d) = direct32.filter(|_| *c == 32) {
            println!(
                "\n{name}, 32 connections: {:.1}% of direct throughput",
                100.0 * r.rps / d
            );
        }
    }
}
