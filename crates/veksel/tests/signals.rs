//! `veksel sandbox` stops gracefully on SIGTERM (what systemd, container runtimes and
//! scripts send), as it does on Ctrl-C: it exits with status 0 and its gateways'
//! logs verify afterwards.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{spawn, wait_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_sandbox_gracefully() {
    veksel_pki::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut child = spawn(dir.path());
    wait_ready(&http, dir.path()).await;
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the sandbox did not stop within 30 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    for slug in ["municipality", "population", "tax"] {
        veksel_gateway::verify_log(&dir.path().join(slug))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{slug}: {e}"));
    }
}
