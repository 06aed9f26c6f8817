//! Running the `veksel` binary's sandbox from tests.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The municipality's client subsystem.
pub const MUNI: &str = "DEV/MUN/30000003/casework";

/// Starts `veksel sandbox` on ephemeral ports in `dir`.
pub fn spawn(dir: &Path) -> Child {
    spawn_with(dir, &[])
}

/// Starts `veksel sandbox` on ephemeral ports in `dir` with more arguments.
pub fn spawn_with(dir: &Path, args: &[&str]) -> Child {
    spawn_env(dir, args, &[])
}

/// Starts `veksel sandbox` on ephemeral ports in `dir` with more arguments and
/// environment variables.
pub fn spawn_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_veksel"))
        .args(["sandbox", "--ephemeral-ports", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("veksel starts")
}

/// Waits until the municipality's gateway is ready; returns `sandbox.json`.
pub async fn wait_ready(http: &reqwest::Client, dir: &Path) -> serde_json::Value {
    for _ in 0..300 {
        if let Ok(text) = std::fs::read_to_string(dir.join("sandbox.json"))
            && let Ok(info) = serde_json::from_str::<serde_json::Value>(&text)
        {
            let url = format!(
                "{}/readyz",
                info["gateways"][2]["admin_url"]
                    .as_str()
                    .unwrap_or_default()
            );
            if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                return info;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sandbox did not become ready");
}

/// Runs a `veksel` command; returns whether it succeeded and its output.
pub fn veksel(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veksel"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("veksel runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Stops a sandbox as Ctrl-C would and waits for it.
pub fn interrupt_and_wait(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap();
}
