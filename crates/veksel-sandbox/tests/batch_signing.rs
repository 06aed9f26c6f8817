//! Batch signing with slow keys: both gateways' member keys take 20 ms per signature
//! (as a network HSM might); concurrent exchanges share signatures, every exchange
//! succeeds, the message logs verify, an exchange's evidence bundle verifies offline,
//! and openssl checks the batch signature while an independent Merkle check places
//! the logged descriptor in the signed batch.

mod common;

use common::*;
use std::time::Duration;
use veksel_gateway::{merklelog, stamper};
use veksel_sandbox::ORGS;
use veksel_sandbox::slow_keys::slow_down;
use veksel_verify::evidence;

const CONCURRENT: usize = 24;

async fn batches(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let consumer = net.sandbox().gateway(MUNICIPALITY).unwrap().clone();
    let provider = net.sandbox().gateway(POPULATION).unwrap().clone();
    // Slow enough that the 24 requests' arrival spread on a loaded machine (both
    // backends' variants run at once) stays well inside a dozen signatures' time.
    let delay = Duration::from_millis(60);
    let consumer_signatures = slow_down(&consumer, delay, true).unwrap();
    let provider_signatures = slow_down(&provider, delay, true).unwrap();

    let muni = ORGS[MUNICIPALITY].subsystem_id();
    let calls = (0..CONCURRENT).map(|i| {
        let (http, muni) = (net.http.clone(), muni.clone());
        let url = format!(
            "{}/r1/{}/persons/01017012{i:02}",
            net.client_url(MUNICIPALITY),
            ORGS[POPULATION].subsystem_id()
        );
        tokio::spawn(async move {
            let r = http
                .get(url)
                .header("X-Road-Client", muni)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{:?}", fault(&r));
            r.headers()["x-road-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        })
    });
    let mut ids = Vec::new();
    for c in calls.collect::<Vec<_>>() {
        ids.push(c.await.unwrap());
    }
    let (made_c, made_p) = (
        consumer_signatures.load(std::sync::atomic::Ordering::Relaxed),
        provider_signatures.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(
        made_c < CONCURRENT as u64 / 2 && made_p < CONCURRENT as u64 / 2,
        "{CONCURRENT} exchanges took {made_c} request and {made_p} response signatures"
    );

    // The provider logged batch signatures; both logs verify whole.
    let records = message_log(&net, POPULATION, "limit=100").await;
    let batched: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["request_signature"].as_str().unwrap().contains('~'))
        .collect();
    assert!(!batched.is_empty(), "no request was signed in a batch");
    for gw in [&consumer, &provider] {
        stamper::stamp_and_record(gw).await;
        let origin = stamper::origin(gw.id());
        let roots = gw.conf.latest().unwrap().roots.clone();
        let report = merklelog::verify(&gw.db, &gw.archive_dir, &origin, Some(&roots))
            .await
            .unwrap();
        assert_eq!(report.records, CONCURRENT as u64, "{report:?}");
    }

    // An exchange signed in a batch has evidence that verifies offline.
    let id = batched[0]["request_id"].as_str().unwrap();
    let (url, token) = net.admin(POPULATION);
    let bundle: evidence::Bundle = get_json(
        &net,
        &format!("{url}/api/v1/message-log/{id}/evidence?side=provider"),
        &token,
    )
    .await;
    let anchor: veksel_proto::conf::Anchor =
        serde_json::from_str(&std::fs::read_to_string(&net.sandbox().info.anchor_file).unwrap())
            .unwrap();
    assert_eq!(evidence::verify(&bundle, &anchor).unwrap().request_id, id);

    // Third-party check: openssl verifies the batch JWS with the certificate it
    // names; a few lines of Python recompute the Merkle path from the descriptor.
    let signature = batched[0]["request_signature"].as_str().unwrap();
    let descriptor = batched[0]["request_descriptor"].as_str().unwrap();
    let (jws, proof) = signature.split_once('~').unwrap();
    let dir = tempfile::tempdir().unwrap();
    use base64::Engine;
    let cert = message_signing_cert(&net, POPULATION, signature).await;
    let cert_pem = veksel_pki::certs_to_pem(&[cert]);
    assert!(openssl_verifies_jws(dir.path(), jws, None, &cert_pem));
    let manifest = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws.split('.').nth(1).unwrap())
        .unwrap();
    std::fs::write(dir.path().join("manifest.json"), manifest).unwrap();
    std::fs::write(
        dir.path().join("proof.json"),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(proof)
            .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("descriptor"), descriptor).unwrap();
    let check = |descriptor_file: &str| {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!("{PYTHON_RFC9162}{BATCH_CHECK}"))
            .arg(dir.path())
            .arg(descriptor_file)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(check("descriptor").trim(), "in batch");
    std::fs::write(
        dir.path().join("other"),
        records[0]["response_descriptor"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(check("other").trim(), "NOT in batch");
    net.stop().await;
}

/// RFC 9162 inclusion check of `cty || 0x00 || descriptor` against the manifest root.
const BATCH_CHECK: &str = r#"
import base64, hashlib, json, sys, os
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
p = json.load(open(os.path.join(d, "proof.json")))
desc = open(os.path.join(d, sys.argv[2]), "rb").read()
unb = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
leaf = hashlib.sha256(b"\x00" + p["cty"].encode() + b"\x00" + desc).digest()
root = rfc9162_root(leaf, p["index"], m["size"], [unb(h) for h in p["path"]])
print("in batch" if root == unb(m["root"]) and m["typ"] == "veksel-batch/1" else "NOT in batch")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_keys_sign_in_batches_sqlite() {
    batches(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_keys_sign_in_batches_postgres() {
    batches(Backend::Postgres).await;
}
