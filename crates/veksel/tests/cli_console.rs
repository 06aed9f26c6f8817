//! Evidence downloaded through the console passes `veksel evidence verify`: the
//! sandbox binary runs, the municipality looks up a person, a security officer signs
//! in to the municipality's gateway console, finds the exchange in the message log
//! and downloads its evidence from the link the page gives; the command accepts it,
//! and refuses it once a byte of the bundle is changed.

use std::path::Path;
use std::time::Duration;

mod common;
use common::{MUNI, spawn, veksel, wait_ready};

/// The first `href` after `marker` in a page.
fn href_after<'a>(page: &'a str, marker: &str) -> Option<&'a str> {
    let at = page.find(marker)?;
    let rest = &page[..at];
    let start = rest.rfind("href=\"")? + 6;
    page[start..].split('"').next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_from_the_console_passes_the_command() {
    veksel_pki::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(dir.path());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let info = wait_ready(&http, dir.path()).await;
    let gateway = &info["gateways"][2];
    let resp = http
        .get(format!(
            "{}/r1/DEV/GOV/10000001/population/persons/0101701234",
            gateway["client_url"].as_str().unwrap()
        ))
        .header("X-Road-Client", MUNI)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-road-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    // Signed in with the admin token; the log searched by the request id.
    let admin = gateway["admin_url"].as_str().unwrap();
    let resp = http
        .post(format!("{admin}/console/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "token={}",
            gateway["admin_token"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page_url = format!("{admin}/console/log?request_id={request_id}");
    // The record is downloadable once a time stamp covers it: within the stamp
    // interval (60 s in the sandbox).
    let mut bundle = Vec::new();
    for _ in 0..1200 {
        let page = http
            .get(&page_url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let link = href_after(&page, "Download evidence").expect("the evidence link");
        let resp = http
            .get(format!("{admin}{}", link.replace("&amp;", "&")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            bundle = resp.bytes().await.unwrap().to_vec();
            break;
        }
        assert_eq!(resp.status(), 409, "not yet stamped, or a failure");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!bundle.is_empty(), "the record was never stamped");
    common::interrupt_and_wait(&mut child);

    let file = dir.path().join("evidence.json");
    std::fs::write(&file, &bundle).unwrap();
    let anchor = dir.path().join("municipality").join("anchor.json");
    let verify = |f: &Path| {
        veksel(&[
            "evidence",
            "verify",
            f.to_str().unwrap(),
            "--anchor",
            anchor.to_str().unwrap(),
        ])
    };
    let (ok, out) = verify(&file);
    assert!(ok, "{out}");
    assert!(out.contains(&request_id), "{out}");
    // One changed character of the signed request descriptor: refused.
    let text = String::from_utf8(bundle).unwrap();
    let tampered = text.replacen("casework", "caseworc", 1);
    assert_ne!(tampered, text);
    let bad = dir.path().join("tampered.json");
    std::fs::write(&bad, tampered).unwrap();
    let (ok, out) = verify(&bad);
    assert!(!ok, "{out}");
}
