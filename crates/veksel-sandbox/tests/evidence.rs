//! Evidence bundles: exported for an exchange, verified offline with only the anchor,
//! refused with a clear reason when any byte changes, and checkable with other tools
//! (openssl for the time stamp, an independent Python RFC 9162 verifier for the proof).

mod common;

use common::*;
use veksel_gateway::stamper;
use veksel_sandbox::ORGS;
use veksel_verify::evidence::{self, Bundle};

const PYTHON_INCLUSION: &str = r#"
import base64, hashlib, json, sys
b = json.load(open(sys.argv[1]))
data = json.dumps(b["record"], separators=(",", ":"), ensure_ascii=False).encode()
assert data == open(sys.argv[2], "rb").read(), "the documented canonical form"
leaf = hashlib.sha256(b"\x00" + data).digest()
path = [base64.b64decode(h) for h in b["inclusion_proof"]]
ok = rfc9162_root(leaf, b["record"]["seq"], b["tree_size"], path) == base64.b64decode(b["root"])
print("inclusion ok" if ok else "inclusion FAILED")
"#;

async fn bundles(b: Backend) {
    // These tests stamp by hand and count what is stamped: the periodic stamper must
    // not run in between.
    let Some(net) = Net::start_with(b, |o| o.stamp_interval_secs = 3600).await else {
        return;
    };
    let muni = ORGS[MUNICIPALITY].subsystem_id();
    let mut ids = Vec::new();
    for i in 0..7 {
        let r = net
            .r1(
                MUNICIPALITY,
                &muni,
                &format!("{}/persons/010170123{i}", ORGS[POPULATION].subsystem_id()),
            )
            .await;
        assert_eq!(r.status(), 200);
        ids.push(
            r.headers()["x-road-request-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    let (url, token) = net.admin(POPULATION);
    let get = |id: &str, side: &str| {
        net.http
            .get(format!(
                "{url}/api/v1/message-log/{id}/evidence?side={side}"
            ))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(
        get(&ids[3], "provider").await.unwrap().status(),
        409,
        "not stamped yet"
    );
    for org in [MUNICIPALITY, POPULATION] {
        stamper::stamp_and_record(net.sandbox().gateway(org).unwrap()).await;
    }
    let resp = get(&ids[3], "provider").await.unwrap();
    assert_eq!(resp.status(), 200);
    let bundle: Bundle = resp.json().await.unwrap();
    assert_eq!(get("no-such-id", "provider").await.unwrap().status(), 404);
    let anchor: veksel_proto::conf::Anchor =
        serde_json::from_str(&std::fs::read_to_string(&net.sandbox().info.anchor_file).unwrap())
            .unwrap();
    let proven = evidence::verify(&bundle, &anchor).unwrap();
    assert_eq!(proven.request_id, ids[3]);
    assert_eq!((proven.position, proven.tree_size), (3, 7));
    assert_eq!(proven.client, muni);

    // The consumer's record, exported from the data directory, proves the same exchange.
    let consumer = veksel_gateway::export_evidence(
        &net.sandbox().info.gateways[MUNICIPALITY].data_dir,
        &ids[5],
        "consumer",
    )
    .await
    .unwrap();
    assert_eq!(
        evidence::verify(&consumer, &anchor).unwrap().request_id,
        ids[5]
    );

    // Other tools: openssl checks the time stamp over the checkpoint; an independent
    // Python implementation checks the inclusion proof.
    let dir = tempfile::tempdir().unwrap();
    let write = |n: &str, d: &[u8]| {
        let p = dir.path().join(n);
        std::fs::write(&p, d).unwrap();
        p
    };
    use base64::Engine;
    let token_path = write(
        "token.der",
        &base64::engine::general_purpose::STANDARD
            .decode(&bundle.time_stamp_token)
            .unwrap(),
    );
    let cp_path = write("checkpoint", bundle.checkpoint.as_bytes());
    let out = std::process::Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(&token_path)
        .arg("-data")
        .arg(&cp_path)
        .arg("-CAfile")
        .arg(&net.sandbox().info.authority_ca_file)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verification: OK"),
        "{out:?}"
    );
    let bundle_path = write("bundle.json", &serde_json::to_vec(&bundle).unwrap());
    let leaf_path = write("leaf", &bundle.record.bytes());
    let script = write(
        "inclusion.py",
        format!("{PYTHON_RFC9162}{PYTHON_INCLUSION}").as_bytes(),
    );
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&bundle_path)
        .arg(&leaf_path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "inclusion ok",
        "{out:?}"
    );

    // Each part, changed, gives a clear reason.
    let fails = |b: &Bundle, step: &str| {
        let e = evidence::verify(b, &anchor).unwrap_err();
        assert!(e.contains(step), "expected {step}, got {e}");
    };
    let mut x = bundle.clone();
    x.record.status = 500;
    fails(&x, "step 2");
    let mut x = bundle.clone();
    x.inclusion_proof[0] = bundle.root.clone();
    fails(&x, "step 2");
    let mut x = bundle.clone();
    x.checkpoint = x.checkpoint.replacen("\n7\n", "\n8\n", 1);
    fails(&x, "step 3");
    let mut x = bundle.clone();
    x.global_configuration = x.global_configuration.replacen('e', "f", 1);
    fails(&x, "step 1");
    // The signing chains are kept beside the record: each must be the certificate its
    // signature names, and present.
    assert_eq!(bundle.signing_chains.len(), 2, "both signers' chains");
    let mut x = bundle.clone();
    let chains: Vec<Vec<String>> = x.signing_chains.values().cloned().collect();
    for (value, other) in x.signing_chains.values_mut().zip(chains.iter().rev()) {
        *value = other.clone();
    }
    fails(&x, "step 4");
    let mut x = bundle.clone();
    let first = x.signing_chains.keys().next().unwrap().clone();
    x.signing_chains.remove(&first);
    fails(&x, "step 4");
    let mut other_anchor = anchor.clone();
    other_anchor.conf_signing_cert_pem =
        std::fs::read_to_string(net.dir.path().join("authority/tls.pem")).unwrap();
    assert!(
        evidence::verify(&bundle, &other_anchor)
            .unwrap_err()
            .contains("step 1")
    );

    // And so does any changed byte: parse or verification fails, never success.
    let bytes = serde_json::to_vec(&bundle).unwrap();
    let mut checked = 0;
    for i in 0..bytes.len() {
        let mut changed = bytes.clone();
        changed[i] ^= 0x01;
        if let Ok(b) = serde_json::from_slice::<Bundle>(&changed) {
            assert!(
                evidence::verify(&b, &anchor).is_err(),
                "byte {i} changed and the bundle still verifies: ...{}...",
                String::from_utf8_lossy(&bytes[i.saturating_sub(60)..(i + 20).min(bytes.len())])
            );
        }
        checked += 1;
    }
    assert_eq!(checked, bytes.len());
    net.stop().await;
}
both_backends!(
    evidence_bundles_verify_offline_and_fail_on_any_change,
    bundles
);
