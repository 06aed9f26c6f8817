//! Certificate renewal and key rotation without downtime: under continuous load, every
//! certificate of a consumer and of a provider gateway is renewed and the new keys
//! take over with no failed exchange; the authority's renewal endpoint refuses replays,
//! foreign signatures and malformed requests; `/readyz` and the metrics report expiry.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use veksel_gateway::renewal;
use veksel_sandbox::ORGS;

fn now_secs(net: &Net) -> i64 {
    net.clock.now_ms() / 1000
}

async fn rotation(b: Backend) {
    let Some(mut net) = Net::start_with(b, |o| o.conf_refresh_secs = 1).await else {
        return;
    };
    let muni = ORGS[MUNICIPALITY].subsystem_id();
    let targets = [
        format!("{}/persons/0101701234", ORGS[POPULATION].subsystem_id()),
        format!("{}/companies/12345678", ORGS[TAX].subsystem_id()),
    ];

    // Continuous load from the municipality to both providers.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..4usize {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let url = format!("{}/r1/{}", net.client_url(MUNICIPALITY), targets[w % 2]);
        let (http, muni) = (net.http.clone(), muni.clone());
        workers.push(tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                match http.get(&url).header("X-Road-Client", &muni).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        failures.lock().unwrap().push(format!("{status}: {text}"));
                    }
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Every certificate of the consumer's and of a provider's gateway is renewed.
    for org in [MUNICIPALITY, POPULATION] {
        let gw = net.sandbox().gateway(org).unwrap().clone();
        let before = renewal::status(&gw.keys.get(), now_secs(&net));
        let outcome = renew_now(&gw).await;
        assert_eq!(outcome.requested.len(), before.len(), "{outcome:?}");
        let after = renewal::status(&gw.keys.get(), now_secs(&net));
        assert_eq!(after.len(), before.len());
        for (a, b) in after.iter().zip(&before) {
            assert_ne!(a.sha256, b.sha256, "{} was replaced", a.role);
        }
        // The old authentication certificate stays listed until it expires, the new
        // one is listed too.
        let conf = gw.conf.latest().unwrap();
        let listed = &conf.index.gateway(&gw.config.id).unwrap().auth_cert_sha256;
        assert!(listed.contains(&before[0].sha256) && listed.contains(&after[0].sha256));
        // Keys on disk are private, and nothing is left pending.
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(gw.dir.join("auth.key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        assert!(!gw.dir.join(renewal::PENDING_DIR).exists());
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "failed exchanges during rotation: {failures:?}"
    );
    assert!(ok.load(Ordering::Relaxed) > 20, "the load ran");

    // New exchanges are signed with the new keys.
    let r = net.r1(MUNICIPALITY, &muni, &targets[0]).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-road-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let record = &message_log(&net, POPULATION, &format!("request_id={id}")).await[0];
    let signing_now = renewal::status(
        &net.sandbox().gateway(MUNICIPALITY).unwrap().keys.get(),
        now_secs(&net),
    )[1]
    .clone();
    let x5c = message_signing_cert(
        &net,
        POPULATION,
        record["request_signature"].as_str().unwrap(),
    )
    .await;
    assert_eq!(veksel_pki::sha256_hex(&x5c), signing_now.sha256);

    // A restarted gateway starts on its new keys.
    let auth_now = renewal::status(
        &net.sandbox().gateway(MUNICIPALITY).unwrap().keys.get(),
        now_secs(&net),
    )[0]
    .sha256
    .clone();
    let sb = net.sandbox.as_mut().unwrap();
    sb.stop_gateway(MUNICIPALITY).await;
    sb.start_gateway(MUNICIPALITY).await.unwrap();
    let gw = net.sandbox().gateway(MUNICIPALITY).unwrap().clone();
    assert_eq!(
        renewal::status(&gw.keys.get(), now_secs(&net))[0].sha256,
        auth_now
    );
    assert_eq!(net.r1(MUNICIPALITY, &muni, &targets[1]).await.status(), 200);
    net.stop().await;
}
both_backends!(
    certificates_renew_and_keys_rotate_under_load_without_a_failed_exchange,
    rotation
);

async fn refusals(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let info = &net.sandbox().info;
    let (http, _, _) = authority_client(&net);
    let url = format!("{}/renew/v1", info.authority_url);
    let keys = veksel_gateway::KeyStore::load(&info.gateways[MUNICIPALITY].data_dir).unwrap();
    let signer = keys.auth_key.signer(keys.auth_chain.clone()).unwrap();
    let muni_gw = ORGS[MUNICIPALITY].gateway_id();
    let payload = |gateway: &str, at: i64, nonce: &str| {
        serde_json::json!({"gateway": gateway, "created_at_ms": at, "nonce": nonce, "signing": []})
            .to_string()
    };
    let post = |body: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(&url)
                .header("content-type", "application/jose")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let sign = |cty: &str, p: &str| {
        veksel_proto::jws::sign_compact(&signer, cty, true, p.as_bytes()).unwrap()
    };
    let now = net.clock.now_ms();

    // A valid request (no new certificates asked for) is accepted once, not twice.
    let good = sign(renewal::RENEWAL_CTY, &payload(&muni_gw, now, "n-1"));
    assert_eq!(post(good.clone()).await.0, 200);
    let (status, body) = post(good).await;
    assert_eq!(status, 409, "{body}");
    // Another content type: not a renewal request.
    let (status, body) = post(sign("veksel-request+json", &payload(&muni_gw, now, "n-2"))).await;
    assert!(
        status == 400 && body.contains("content type"),
        "{status} {body}"
    );
    // Signed by the municipality for the tax agency's gateway.
    let (status, body) = post(sign(
        renewal::RENEWAL_CTY,
        &payload(&ORGS[TAX].gateway_id(), now, "n-3"),
    ))
    .await;
    assert!(
        status == 401 && body.contains("signed by gateway"),
        "{status} {body}"
    );
    // Too old.
    let (status, body) = post(sign(
        renewal::RENEWAL_CTY,
        &payload(&muni_gw, now - 3_600_000, "n-4"),
    ))
    .await;
    assert!(
        status == 400 && body.contains("5 minutes"),
        "{status} {body}"
    );
    // A certificate from another CA.
    let (cert, key) = outsider_auth_cert(&muni_gw);
    let foreign = key.signer(vec![cert]).unwrap();
    let jws = veksel_proto::jws::sign_compact(
        &foreign,
        renewal::RENEWAL_CTY,
        true,
        payload(&muni_gw, now, "n-5").as_bytes(),
    )
    .unwrap();
    let (status, body) = post(jws).await;
    assert!(
        status == 401 && body.contains("valid authentication certificate"),
        "{status} {body}"
    );
    // Tampered payload, garbage.
    let mut parts: Vec<String> = sign(renewal::RENEWAL_CTY, &payload(&muni_gw, now, "n-6"))
        .split('.')
        .map(str::to_owned)
        .collect();
    parts[1] = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload(&muni_gw, now, "n-7"))
    };
    let (status, body) = post(parts.join(".")).await;
    assert!(
        status == 401 && body.contains("does not verify"),
        "{status} {body}"
    );
    assert_eq!(post("not a jws".into()).await.0, 400);

    // A new authentication key needs the owner's consent, by the owner's signing key,
    // for exactly this request.
    let csr = veksel_pki::ca::make_csr(&veksel_pki::KeyFile::generate().unwrap(), "gw").unwrap();
    let with_csr = |nonce: &str, consent: Option<String>| {
        serde_json::json!({"gateway": muni_gw, "created_at_ms": now, "nonce": nonce,
            "auth_csr_pem": csr, "owner_consent": consent, "signing": []})
        .to_string()
    };
    let consent = |nonce: &str, csr_text: &str, key: &dyn veksel_proto::jws::Signer| {
        let c = veksel_proto::management::AuthKeyConsent {
            gateway: muni_gw.parse().unwrap(),
            nonce: nonce.into(),
            auth_csr_sha256: veksel_pki::sha256_hex(csr_text.as_bytes()),
        };
        veksel_proto::jws::sign_compact(
            key,
            veksel_proto::management::CONSENT_CTY,
            true,
            &serde_json::to_vec(&c).unwrap(),
        )
        .unwrap()
    };
    let owner = keys
        .signer(&ORGS[MUNICIPALITY].member().parse().unwrap())
        .unwrap();
    let (status, body) = post(sign(renewal::RENEWAL_CTY, &with_csr("n-8", None))).await;
    assert!(
        status == 401 && body.contains("consent of the owner"),
        "{status} {body}"
    );
    let other_csr = consent("n-9", "another CSR", owner.as_ref());
    let (status, body) = post(sign(
        renewal::RENEWAL_CTY,
        &with_csr("n-9", Some(other_csr)),
    ))
    .await;
    assert!(
        status == 401 && body.contains("another request"),
        "{status} {body}"
    );
    let by_auth_key = consent("n-10", &csr, &signer);
    let (status, body) = post(sign(
        renewal::RENEWAL_CTY,
        &with_csr("n-10", Some(by_auth_key)),
    ))
    .await;
    assert!(
        status == 401 && body.contains("signing certificate of"),
        "{status} {body}"
    );
    let good = consent("n-11", &csr, owner.as_ref());
    let (status, body) = post(sign(renewal::RENEWAL_CTY, &with_csr("n-11", Some(good)))).await;
    assert_eq!(status, 200, "{body}");
    net.stop().await;
}
both_backends!(
    renewal_endpoint_refuses_replays_and_foreign_signatures,
    refusals
);

async fn expiry_reporting(b: Backend) {
    let Some(mut net) = Net::start(b).await else {
        return;
    };
    // Warn a year ahead: every certificate (valid one year) is "about to expire".
    let dir = net.sandbox().info.gateways[TAX].data_dir.clone();
    edit_gateway_config(&dir, |config| {
        config["cert_warn_before_secs"] = (400 * 86_400).into();
    });
    let sb = net.sandbox.as_mut().unwrap();
    sb.stop_gateway(TAX).await;
    sb.start_gateway(TAX).await.unwrap();
    let (url, token) = net.admin(TAX);
    let r = net.http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("the authentication certificate expires in 36")
            && text.contains("signing certificate of"),
        "{text}"
    );
    let metrics = net.metrics(TAX).await;
    assert!(
        metrics.contains(
            "veksel_gateway_certificate_expiry_seconds{role=\"authentication\",member=\"\"} 3"
        ),
        "{metrics}"
    );
    let certs: serde_json::Value = net
        .http
        .get(format!("{url}/api/v1/certificates"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(certs[0]["role"], "authentication");
    assert!(certs[0]["expires_in_secs"].as_i64().unwrap() > 360 * 86_400);
    net.stop().await;
}
both_backends!(
    certificate_expiry_shows_in_readyz_metrics_and_api,
    expiry_reporting
);
