//! Revoking a certificate at the authority reaches every gateway with the next
//! configuration: a revoked signing certificate and a revoked authentication
//! certificate are refused network-wide, with precise errors, well within 60 s.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use veksel_sandbox::ORGS;

async fn revoke(net: &Net, subject: &str, profile: &str) {
    let (http, url, token) = authority_client(net);
    let certs: Vec<Value> = http
        .get(format!("{url}/api/v1/certificates?subject={subject}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let serial = certs.iter().find(|c| c["profile"] == profile).unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = http
        .post(format!("{url}/api/v1/certificates/{serial}/revoke"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"reason": "keyCompromise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let again = http
        .post(format!("{url}/api/v1/certificates/{serial}/revoke"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"reason": "again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}

/// Asks the authority's OCSP responder with `openssl ocsp -url` about a certificate.
fn openssl_ocsp(net: &Net, cert: &std::path::Path) -> String {
    let info = &net.sandbox().info;
    let out = std::process::Command::new("openssl")
        .args(["ocsp", "-issuer"])
        .arg(&info.authority_ca_file)
        .arg("-cert")
        .arg(cert)
        .arg("-url")
        .arg(format!("{}/ocsp/v1", info.authority_url))
        .arg("-CAfile")
        .arg(&info.authority_ca_file)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Calls until the answer carries `fault`, for at most 60 s; returns the body.
async fn refused_within_a_minute(
    net: &Net,
    org: usize,
    client: &str,
    path: &str,
    fault: &str,
) -> Value {
    let start = Instant::now();
    loop {
        let r = net.r1(org, client, path).await;
        if r.headers().get("x-road-error").is_some_and(|v| v == fault) {
            return r.json().await.unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still not refused after 60 s (last status {})",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn revocation(b: Backend) {
    // Gateways poll every second here; the default is 30 s, still inside the bound.
    let Some(net) = Net::start_with(b, |o| o.conf_refresh_secs = 1).await else {
        return;
    };
    let muni = ORGS[MUNICIPALITY].subsystem_id();
    let persons = format!("{}/persons/0101701234", ORGS[POPULATION].subsystem_id());
    let companies = format!("{}/companies/12345678", ORGS[TAX].subsystem_id());
    assert_eq!(net.r1(MUNICIPALITY, &muni, &persons).await.status(), 200);
    assert_eq!(net.r1(MUNICIPALITY, &muni, &companies).await.status(), 200);
    let signing_cert = net.sandbox().info.gateways[MUNICIPALITY]
        .data_dir
        .join("signing")
        .join(format!(
            "{}.pem",
            ORGS[MUNICIPALITY].member().replace('/', ":")
        ));
    let before = openssl_ocsp(&net, &signing_cert);
    assert!(
        before.contains("Response verify OK") && before.contains(": good"),
        "{before}"
    );

    // The tax agency's authentication certificate: nobody talks to that gateway.
    revoke(&net, &ORGS[TAX].gateway_id(), "gateway-auth").await;
    let body = refused_within_a_minute(
        &net,
        MUNICIPALITY,
        &muni,
        &companies,
        "Server.ClientProxy.SslAuthenticationFailed",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("not registered"),
        "{body}"
    );

    // The municipality's signing certificate: providers refuse what it signs.
    revoke(&net, &ORGS[MUNICIPALITY].member(), "member-signing").await;
    let body = refused_within_a_minute(
        &net,
        MUNICIPALITY,
        &muni,
        &persons,
        "Server.ServerProxy.IncorrectCertificate",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    let after = openssl_ocsp(&net, &signing_cert);
    assert!(
        after.contains("Response verify OK") && after.contains(": revoked"),
        "{after}"
    );

    // Both affected gateways say why they cannot serve.
    for org in [MUNICIPALITY, TAX] {
        let (url, _) = net.admin(org);
        let start = Instant::now();
        loop {
            let r = net.http.get(format!("{url}/readyz")).send().await.unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            if status == 503 && text.contains("has been revoked") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The population register itself is unaffected.
    let tax = ORGS[POPULATION].subsystem_id();
    let echo = format!("{}/echo/x", ORGS[POPULATION].subsystem_id());
    assert_eq!(net.r1(POPULATION, &tax, &echo).await.status(), 200);
    net.stop().await;
}
both_backends!(
    revoked_certificates_are_refused_network_wide_within_a_minute,
    revocation
);

async fn stale_ocsp(b: Backend) {
    let Some(mut net) = Net::start_with(b, |o| o.ocsp_freshness_secs = 60).await else {
        return;
    };
    let muni = ORGS[MUNICIPALITY].subsystem_id();
    let persons = format!("{}/persons/0101701234", ORGS[POPULATION].subsystem_id());
    assert_eq!(net.r1(MUNICIPALITY, &muni, &persons).await.status(), 200);

    // Without the responder, the gateways' OCSP responses age past the limit and
    // peers stop accepting them, although configuration and certificates are valid.
    net.sandbox.as_mut().unwrap().stop_authority().await;
    net.clock.advance(120_000);
    let body = expect_fault(
        net.r1(MUNICIPALITY, &muni, &persons).await,
        500,
        "Server.ClientProxy.SslAuthenticationFailed",
    )
    .await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("OCSP response") && message.contains("more than the 60 s allowed"),
        "{body}"
    );
    let (url, _) = net.admin(MUNICIPALITY);
    let r = net.http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("peers will refuse this gateway"), "{text}");

    // With the responder back, the refresh loop fetches fresh responses and
    // exchanges resume by themselves.
    net.sandbox
        .as_mut()
        .unwrap()
        .start_authority()
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let r = net.r1(MUNICIPALITY, &muni, &persons).await;
        if r.status() == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no recovery after 60 s: {}",
            r.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    net.stop().await;
}
both_backends!(stale_ocsp_responses_are_refused_until_refreshed, stale_ocsp);
