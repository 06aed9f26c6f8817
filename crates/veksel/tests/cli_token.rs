//! `veksel token get` and `veksel token verify` against a running sandbox: a member
//! gets a token with the signing key in its gateway's data directory, and another
//! gateway's data directory verifies it offline with its cached configuration.

use std::path::Path;
use std::time::Duration;

mod common;
use common::{interrupt_and_wait, spawn, veksel, wait_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_get_and_verify_tokens_from_the_command_line() {
    veksel_pki::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(dir.path());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let info = wait_ready(&http, dir.path()).await;
    let gateway = |i: usize, field: &str| info["gateways"][i][field].as_str().unwrap().to_owned();
    // The tax agency registers a scope for the municipality.
    let resp = http
        .post(format!(
            "{}/api/v1/management-requests",
            gateway(1, "admin_url")
        ))
        .bearer_auth(gateway(1, "admin_token"))
        .json(
            &serde_json::json!({"type": "scope-registration", "scope": "tax:income",
            "description": "Income", "consumers": ["DEV/MUN/30000003"], "delegable": false}),
        )
        .send()
        .await
        .unwrap();
    let request: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(request["state"], "approved", "{request}");

    let municipality = gateway(2, "data_dir");
    let tax = gateway(1, "data_dir");
    let service = "DEV/GOV/10000002/tax/incomes";
    let (ok, out) = veksel(&[
        "token",
        "get",
        "--data-dir",
        &municipality,
        "--client",
        "DEV/MUN/30000003",
        "--scope",
        "tax:income",
        "--resource",
        service,
    ]);
    assert!(ok, "{out}");
    let token = out.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{out}");

    // The token service publishes its keys with the configuration; the tax
    // gateway's cached copy has them once it has refreshed.
    let mut verified = (false, String::new());
    for _ in 0..100 {
        verified = veksel(&[
            "token",
            "verify",
            "--data-dir",
            &tax,
            "--scope",
            "tax:income",
            "--audience",
            service,
            &token,
        ]);
        if verified.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out) = verified;
    assert!(ok, "{out}");
    let claims: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(claims["consumer"], "DEV/MUN/30000003");
    assert_eq!(claims["aud"], service);

    let (ok, out) = veksel(&[
        "token",
        "verify",
        "--data-dir",
        &tax,
        "--scope",
        "tax:inc",
        &token,
    ]);
    assert!(!ok && out.contains("does not have scope tax:inc"), "{out}");
    let (ok, out) = veksel(&[
        "token",
        "verify",
        "--data-dir",
        &tax,
        "--audience",
        "DEV/GOV/10000002/tax/companies",
        &token,
    ]);
    assert!(!ok && out.contains("not for"), "{out}");
    // A signature character in the middle carries six bits of the signature.
    let at = token.len() - 10;
    let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
    let (ok, out) = veksel(&["token", "verify", "--data-dir", &tax, &tampered]);
    assert!(!ok && out.contains("signature"), "{out}");
    // A scope the member does not hold: the token service's refusal, verbatim.
    let (ok, out) = veksel(&[
        "token",
        "get",
        "--data-dir",
        &municipality,
        "--client",
        "DEV/MUN/30000003",
        "--scope",
        "tax:debt",
    ]);
    assert!(!ok && out.contains("invalid_scope"), "{out}");
    // A member whose key this gateway does not hold.
    let (ok, out) = veksel(&[
        "token",
        "get",
        "--data-dir",
        &municipality,
        "--client",
        "DEV/GOV/10000002",
        "--scope",
        "tax:income",
    ]);
    assert!(!ok && out.contains("no signing key"), "{out}");
    assert!(Path::new(&municipality).join("gateway.json").exists());
    interrupt_and_wait(&mut child);
}
