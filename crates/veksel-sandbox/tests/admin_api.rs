//! The admin APIs' roles and their order of checks: an observer reads but changes
//! nothing and never reads stored bodies or evidence; a caller without the right token
//! is refused before the request's body is read or parsed; signed management requests
//! that ask for JWS extensions nobody implements are refused.

mod common;

use common::*;
use serde_json::json;
use veksel_sandbox::ORGS;

fn client_path() -> String {
    ORGS[POPULATION].subsystem_id().replace('/', ":")
}

async fn roles(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    // The population register's gateway keeps bodies (full log mode).
    let dir = net.sandbox().info.gateways[POPULATION].data_dir.clone();
    let observer = veksel_gateway::create_admin_token(&dir, "observer", "roles test", &net.clock)
        .await
        .unwrap();
    let officer =
        veksel_gateway::create_admin_token(&dir, "security-officer", "roles test", &net.clock)
            .await
            .unwrap();
    let (admin, _) = net.admin(POPULATION);
    // An exchange, so there is a record with stored bodies to try to read. It carries
    // credentials for the provider's API and names an end user.
    let r = net
        .http
        .post(format!(
            "{}/r1/{}/echo/x",
            net.client_url(MUNICIPALITY),
            ORGS[POPULATION].subsystem_id()
        ))
        .header("X-Road-Client", ORGS[MUNICIPALITY].subsystem_id())
        .header("X-Road-UserId", "GL0101701234")
        .header("Authorization", "Bearer secret-api-token")
        .header("Cookie", "session=secret-session")
        .body("a body worth protecting")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-road-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // The provider's system got its credentials...
    let echoed: serde_json::Value = r.json().await.unwrap();
    let echoed = echoed["headers"].to_string();
    assert!(echoed.contains("Bearer secret-api-token"), "{echoed}");
    assert!(echoed.contains("session=secret-session"), "{echoed}");
    // ...but neither message log keeps them: the descriptors carry their digests.
    for org in [MUNICIPALITY, POPULATION] {
        let record = message_log(&net, org, &format!("request_id={request_id}")).await;
        let descriptor = record[0]["request_descriptor"].as_str().unwrap();
        assert!(!descriptor.contains("secret"), "{org}: {descriptor}");
        assert!(
            descriptor.contains("\"authorization\",\"sha256:"),
            "{descriptor}"
        );
        assert!(descriptor.contains("GL0101701234"), "{descriptor}");
    }
    // An observer reads the record's metadata, not the descriptors naming the user.
    let records: Vec<serde_json::Value> = get_json(
        &net,
        &format!("{admin}/api/v1/message-log?request_id={request_id}"),
        &observer,
    )
    .await;
    assert_eq!(records.len(), 1);
    let text = records[0].to_string();
    assert!(!text.contains("GL0101701234"), "{text}");
    for field in [
        "request_descriptor",
        "request_signature",
        "response_descriptor",
        "response_signature",
    ] {
        assert!(records[0].get(field).is_none(), "{field}: {text}");
    }
    assert_eq!(records[0]["client"], ORGS[MUNICIPALITY].subsystem_id());

    // What an observer may read.
    for path in [
        "/api/v1/status",
        "/api/v1/clients",
        "/api/v1/message-log",
        "/api/v1/op-monitoring",
        "/api/v1/certificates",
        "/api/v1/ledger/alarms",
    ] {
        let r = net
            .http
            .get(format!("{admin}{path}"))
            .bearer_auth(&observer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "observer reads {path}");
    }

    // What an observer may not do, each with a body that would otherwise be valid.
    let c = client_path();
    let sub = ORGS[POPULATION].subsystem_id();
    let attempts: Vec<(reqwest::Method, String, Option<serde_json::Value>)> = vec![
        (
            reqwest::Method::GET,
            format!("/api/v1/message-log/{request_id}/bodies?side=provider&part=request"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/message-log/{request_id}/evidence?side=provider"),
            None,
        ),
        (
            reqwest::Method::PUT,
            format!("/api/v1/clients/{c}"),
            Some(json!({"log_mode": "off"})),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/v1/clients/{c}"),
            None,
        ),
        (
            reqwest::Method::PUT,
            format!("/api/v1/clients/{c}/services/new"),
            Some(json!({"base_url": "http://127.0.0.1:9"})),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/v1/clients/{c}/services/new"),
            None,
        ),
        (
            reqwest::Method::PUT,
            format!("/api/v1/clients/{c}/access"),
            Some(json!([])),
        ),
        (
            reqwest::Method::PUT,
            format!("/api/v1/clients/{c}/local-groups/g"),
            Some(json!({"description": "g", "members": [sub]})),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/v1/clients/{c}/local-groups/g"),
            None,
        ),
        (
            reqwest::Method::POST,
            "/api/v1/certificates/renew".into(),
            None,
        ),
        (
            reqwest::Method::POST,
            "/api/v1/management-requests".into(),
            Some(json!({"type": "client-disable", "subsystem": sub})),
        ),
        (
            reqwest::Method::POST,
            "/api/v1/ledger/commitments".into(),
            Some(json!({"label": "x", "commitment": "AAAA"})),
        ),
    ];
    let before = net
        .http
        .get(format!("{admin}/api/v1/clients/{c}"))
        .bearer_auth(&observer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (method, path, body) in &attempts {
        let mut r = net
            .http
            .request(method.clone(), format!("{admin}{path}"))
            .bearer_auth(&observer);
        if let Some(b) = body {
            r = r.json(b);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 403, "observer: {method} {path}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["code"], "forbidden", "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("security-officer"),
            "{e}"
        );
    }
    let after = net
        .http
        .get(format!("{admin}/api/v1/clients/{c}"))
        .bearer_auth(&observer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(before, after, "nothing changed");

    // A security officer reads the stored body, exactly as sent.
    let r = net
        .http
        .get(format!(
            "{admin}/api/v1/message-log/{request_id}/bodies?side=provider&part=request"
        ))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(r.text().await.unwrap(), "a body worth protecting");

    // The token is checked before the body is read: without one, or with a role too
    // weak, a malformed body gets 401 or 403, never a parser's 400 or 422 that would
    // tell an anonymous caller the field names.
    for (token, status) in [(None, 401), (Some(observer.as_str()), 403)] {
        let mut r = net
            .http
            .put(format!("{admin}/api/v1/clients/{c}"))
            .header("content-type", "application/json")
            .body("{\"log_mode\": ");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), status, "malformed body with {token:?}");
    }
    // The same holds for a body over the API's size limit.
    let big = vec![b' '; 9 * 1024 * 1024];
    let r = net
        .http
        .put(format!("{admin}/api/v1/clients/{c}/access"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await;
    // The server may answer before it has read the body and close the connection
    // while the client still sends: either the 401 or a reset, never a 413.
    if let Ok(r) = r {
        assert_eq!(r.status(), 401);
    }

    // The authority's admin API checks the token first as well.
    let (http, url, token) = authority_client(&net);
    let r = http
        .post(format!("{url}/api/v1/members"))
        .header("content-type", "application/json")
        .body("{\"id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "anonymous, malformed");
    let r = http
        .post(format!("{url}/api/v1/members"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "with the token the body is parsed");
    net.stop().await;
}
both_backends!(observers_read_and_change_nothing_tokens_come_first, roles);

/// A management request signed with the gateway's real authentication key whose
/// protected header asks for the unencoded-payload extension (RFC 7797 `b64` listed
/// in `crit`): RFC 7515 says a verifier that does not understand a critical extension
/// must refuse the JWS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_requests_with_critical_extensions_are_refused() {
    use base64::Engine;
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let dir = &net.sandbox().info.gateways[MUNICIPALITY].data_dir;
    let keys = veksel_gateway::KeyStore::load(dir).unwrap();
    let signer = keys.auth_key.signer(keys.auth_chain.clone()).unwrap();
    let payload = json!({
        "gateway": ORGS[MUNICIPALITY].gateway_id(),
        "change": {"type": "address-change", "gateway": ORGS[MUNICIPALITY].gateway_id(), "address": "127.0.0.1:1"},
        "nonce": uuid::Uuid::new_v4().to_string(),
        "created_at_ms": net.clock.now_ms(),
    })
    .to_string();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let x5c: Vec<String> = keys
        .auth_chain
        .iter()
        .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
        .collect();
    let header = json!({
        "alg": "ES256",
        "cty": veksel_proto::management::MANAGEMENT_CTY,
        "x5c": x5c,
        "crit": ["b64"],
        "b64": true,
    })
    .to_string();
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signature = veksel_proto::jws::Signer::sign(&signer, input.as_bytes()).unwrap();
    let jws = format!("{input}.{}", b64(&signature));
    let gw = net.sandbox().gateway(MUNICIPALITY).unwrap();
    let r = gw
        .conf
        .http()
        .post(format!("{}/manage/v1", gw.conf.anchor().authority_url))
        .header("content-type", "application/jose")
        .body(jws)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(matches!(status, 400 | 401), "{status} {body}");
    assert!(body["message"].as_str().unwrap().contains("crit"), "{body}");
    net.stop().await;
}

/// A flood of anonymous applications to join from one address fills only that
/// address's share of the waiting list: a genuine applicant elsewhere still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_flood_from_one_source_does_not_lock_out_others() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let ca = std::fs::read_to_string(&net.sandbox().info.authority_ca_file).unwrap();
    let roots = veksel_pki::certs_from_pem(&ca).unwrap();
    let client_from = |source: &str| {
        reqwest::Client::builder()
            .use_preconfigured_tls(veksel_pki::tls::https_client_config(&roots).unwrap())
            .local_address(source.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let url = format!("{}/apply/v1", net.sandbox().info.authority_url);
    let application = |n: u32| {
        json!({
            "type": "member-application",
            "member": format!("DEV/MUN/{:08}", 50_000_000 + n),
            "name": format!("Flood {n}"),
            "gateway": format!("DEV/MUN/{:08}/gw", 50_000_000 + n),
            "address": "127.0.0.1:1",
            "contact": "flood@example.invalid",
        })
    };
    let flood = client_from("127.0.0.1");
    let mut accepted = 0;
    let mut refused = 0;
    for n in 0..40 {
        let r = flood.post(&url).json(&application(n)).send().await.unwrap();
        match r.status().as_u16() {
            202 => accepted += 1,
            429 => {
                let e: serde_json::Value = r.json().await.unwrap();
                assert_eq!(e["code"], "too_many_requests", "{e}");
                assert!(e["message"].as_str().unwrap().contains("127.0.0.1"), "{e}");
                refused += 1;
            }
            other => panic!("application {n}: {other}"),
        }
    }
    assert_eq!(
        accepted,
        veksel_authority::management::MAX_PENDING_APPLICATIONS_PER_SOURCE
    );
    assert_eq!(refused, 40 - accepted);
    let genuine = client_from("127.0.0.2")
        .post(&url)
        .json(&application(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(genuine.status(), 202, "{}", genuine.text().await.unwrap());
    net.stop().await;
}
