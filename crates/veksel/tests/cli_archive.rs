//! The operator's commands for retention: `veksel log archive` moves old, stamped
//! records into archive files, `veksel log verify --data-dir` checks archives and
//! database as one log, and `veksel log verify --archive-dir --anchor` checks a copied
//! archive directory alone; a changed archive makes both fail with exit status 1.

use std::path::Path;
use std::time::Duration;

mod common;
use common::{MUNI, spawn, veksel, wait_ready};

/// The records a gateway's newest time stamp covers, from its metrics.
async fn stamped(http: &reqwest::Client, metrics_url: &str) -> usize {
    let text = http
        .get(metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("veksel_gateway_stamped_records "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs the sandbox, makes `calls` exchanges, and stops it once the tax gateway has
/// time-stamped them all (when `calls` > 0).
async fn run_sandbox_and_call(dir: &Path, calls: usize) -> serde_json::Value {
    let mut child = spawn(dir);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let info = wait_ready(&http, dir).await;
    for i in 0..calls {
        let resp = http
            .get(format!(
                "{}/r1/DEV/GOV/10000002/tax/companies/1234567{}",
                info["gateways"][2]["client_url"].as_str().unwrap(),
                i % 10
            ))
            .header("X-Road-Client", MUNI)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let metrics_url = format!(
        "{}/metrics",
        info["gateways"][2]["admin_url"].as_str().unwrap()
    );
    let started = std::time::Instant::now();
    while calls > 0 && stamped(&http, &metrics_url).await < calls {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {} of {calls} records stamped",
            stamped(&http, &metrics_url).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    common::interrupt_and_wait(&mut child);
    info
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_archive_and_verify_from_the_command_line() {
    veksel_pki::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let info = run_sandbox_and_call(dir.path(), 0).await;
    let gw_dir = info["gateways"][2]["data_dir"].as_str().unwrap().to_owned();
    let gw = Path::new(&gw_dir);

    // Keep records one second, stamp every second.
    let config_path = gw.join("gateway.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["archive_after_secs"] = 1.into();
    config["stamp_interval_secs"] = 1.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    run_sandbox_and_call(dir.path(), 6).await;
    std::thread::sleep(Duration::from_millis(1100));

    let (ok, out) = veksel(&["log", "archive", "--data-dir", &gw_dir]);
    assert!(ok && out.contains("archived positions 0.."), "{out}");
    let (ok, out) = veksel(&["log", "verify", "--data-dir", &gw_dir]);
    assert!(
        ok && out.contains("6 records (6 in archive files)"),
        "{out}"
    );
    let archive_dir = gw.join("archive");
    let anchor = gw.join("anchor.json");
    let verify_archive_dir = || {
        veksel(&[
            "log",
            "verify",
            "--archive-dir",
            archive_dir.to_str().unwrap(),
            "--anchor",
            anchor.to_str().unwrap(),
        ])
    };
    let (ok, out) = verify_archive_dir();
    assert!(ok && out.contains("ok: 1 files, positions 0..6"), "{out}");

    // A flipped byte in the archive: both checks fail and say where.
    let file = std::fs::read_dir(&archive_dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".jsonl.gz"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let (ok, out) = veksel(&["log", "verify", "--data-dir", &gw_dir]);
    // Depending on where the byte lands, the archive is undecodable or decodes to a
    // record that is not the one logged.
    assert!(
        !ok && (out.contains("FAILED: archive 000000000000-") || out.contains("FAILED: record")),
        "{out}"
    );
    let (ok, out) = verify_archive_dir();
    assert!(!ok && out.contains("FAILED"), "{out}");
}
