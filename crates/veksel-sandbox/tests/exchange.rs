//! End-to-end tests of the exchange spine over real TLS on 127.0.0.1, on SQLite and on
//! PostgreSQL: authority, three gateways, synthetic registers.

mod common;

use base64::Engine;
use common::*;
use serde_json::Value;
use veksel_sandbox::ORGS;

fn muni() -> String {
    ORGS[MUNICIPALITY].subsystem_id()
}

fn service(org: usize, code: &str) -> String {
    format!("{}/{code}", ORGS[org].subsystem_id())
}

async fn allowed_call(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let svc = service(POPULATION, "persons");
    let resp = net
        .http
        .get(format!(
            "{}/r1/{svc}/0101701234",
            net.client_url(MUNICIPALITY)
        ))
        .header("X-Road-Client", muni())
        .header("X-Road-Id", "case-4711-query-1")
        .header("X-Road-UserId", "GL0101701234")
        .header("X-Road-Issue", "case 4711")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", fault(&resp));
    let h = resp.headers().clone();
    assert!(h.get("x-road-error").is_none());
    assert_eq!(h["x-road-client"], muni().as_str());
    assert_eq!(h["x-road-service"], svc.as_str());
    assert_eq!(h["x-road-id"], "case-4711-query-1");
    let request_id = h["x-road-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&request_id).is_ok());
    let hash = h["x-road-request-hash"].to_str().unwrap().to_owned();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&hash)
            .unwrap()
            .len(),
        64
    );
    let person: Value = resp.json().await.unwrap();
    assert_eq!(person["id"], "0101701234");
    assert_eq!(person["synthetic"], true);

    // Both gateways logged the exchange with both signed descriptors, bound together.
    for (org, side) in [(MUNICIPALITY, "consumer"), (POPULATION, "provider")] {
        let records = message_log(&net, org, &format!("request_id={request_id}")).await;
        assert_eq!(records.len(), 1, "{side}: {records:?}");
        let r = &records[0];
        assert_eq!(r["side"], side);
        assert_eq!(r["status"], 200);
        assert_eq!(r["xroad_id"], "case-4711-query-1");
        let req_desc = r["request_descriptor"].as_str().unwrap();
        assert_eq!(
            veksel_proto::descriptor::request_hash(req_desc.as_bytes()),
            hash
        );
        let d: Value = serde_json::from_str(req_desc).unwrap();
        assert_eq!(d["user_id"], "GL0101701234");
        assert_eq!(d["issue"], "case 4711");
        let resp_desc: Value =
            serde_json::from_str(r["response_descriptor"].as_str().unwrap()).unwrap();
        assert_eq!(resp_desc["request_hash"], hash.as_str());
        assert!(!r["request_signature"].as_str().unwrap().is_empty());
    }
    // The population register logs bodies (full mode); the municipality only metadata.
    assert_eq!(
        message_log(&net, POPULATION, &format!("request_id={request_id}")).await[0]["has_bodies"],
        true
    );
    assert_eq!(
        message_log(&net, MUNICIPALITY, &format!("request_id={request_id}")).await[0]["has_bodies"],
        false
    );

    // Operational monitoring has the exchange on both sides.
    // It is written asynchronously (queued to the log writer): poll for it.
    let (url, token) = net.admin(MUNICIPALITY);
    let started = std::time::Instant::now();
    let ops = loop {
        let ops: Vec<Value> = net
            .http
            .get(format!(
                "{url}/api/v1/op-monitoring?request_id={request_id}"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !ops.is_empty() || started.elapsed() > std::time::Duration::from_secs(10) {
            break ops;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["succeeded"], true);
    assert_eq!(ops[0]["status_code"], 200);
    let metrics = net.metrics(MUNICIPALITY).await;
    assert!(
        metrics.contains("veksel_gateway_exchanges_total{side=\"consumer\",outcome=\"ok\"}"),
        "{metrics}"
    );
    net.stop().await;
}
both_backends!(
    allowed_call_returns_provider_data_with_xroad_headers_and_is_logged,
    allowed_call
);

async fn refusals(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let m = muni();
    // Access rights: the municipality may not read incomes, nor search persons.
    expect_fault(
        net.r1(
            MUNICIPALITY,
            &m,
            &format!("{}/0101701234", service(TAX, "incomes")),
        )
        .await,
        500,
        "Server.ServerProxy.AccessDenied",
    )
    .await;
    expect_fault(
        net.r1(
            MUNICIPALITY,
            &m,
            &format!("{}?name=olsen", service(POPULATION, "persons")),
        )
        .await,
        500,
        "Server.ServerProxy.AccessDenied",
    )
    .await;
    let del = net
        .http
        .delete(format!(
            "{}/r1/{}/0101701234",
            net.client_url(MUNICIPALITY),
            service(POPULATION, "persons")
        ))
        .header("X-Road-Client", &m)
        .send()
        .await
        .unwrap();
    expect_fault(del, 500, "Server.ServerProxy.AccessDenied").await;
    // The same service is allowed to the tax agency, and to auditors for incomes.
    let ok = net
        .r1(
            TAX,
            &ORGS[TAX].subsystem_id(),
            &format!("{}?name=olsen", service(POPULATION, "persons")),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let ok = net
        .r1(
            POPULATION,
            &ORGS[POPULATION].subsystem_id(),
            &format!("{}/0101701234", service(TAX, "incomes")),
        )
        .await;
    assert_eq!(ok.status(), 200, "local group auditors may read incomes");

    // Unknown service and provider.
    expect_fault(
        net.r1(MUNICIPALITY, &m, &service(POPULATION, "nosuch"))
            .await,
        500,
        "Server.ServerProxy.UnknownService",
    )
    .await;
    expect_fault(
        net.r1(MUNICIPALITY, &m, "DEV/GOV/10000001/nosub/persons")
            .await,
        500,
        "Server.ClientProxy.UnknownMember",
    )
    .await;
    // Unknown client (not hosted on this gateway), missing and malformed clients.
    expect_fault(
        net.r1(
            MUNICIPALITY,
            &ORGS[TAX].subsystem_id(),
            &service(TAX, "companies"),
        )
        .await,
        500,
        "Server.ClientProxy.UnknownMember",
    )
    .await;
    expect_fault(
        net.r1(
            MUNICIPALITY,
            "DEV/MUN/99999999/nobody",
            &service(TAX, "companies"),
        )
        .await,
        500,
        "Server.ClientProxy.UnknownMember",
    )
    .await;
    let missing = net
        .http
        .get(format!(
            "{}/r1/{}/1",
            net.client_url(MUNICIPALITY),
            service(TAX, "companies")
        ))
        .send()
        .await
        .unwrap();
    expect_fault(missing, 400, "Client.MissingHeaderField").await;
    expect_fault(
        net.r1(MUNICIPALITY, "DEV/MUN", &service(TAX, "companies"))
            .await,
        400,
        "Client.InvalidClientIdentifier",
    )
    .await;
    expect_fault(
        net.r1(
            MUNICIPALITY,
            "DEV/MUN/30000003/case_work",
            &service(TAX, "companies"),
        )
        .await,
        400,
        "Client.InvalidClientIdentifier",
    )
    .await;
    // Malformed identifiers and paths, sent raw so no client library normalises them.
    let base = net.client_url(MUNICIPALITY);
    let hdr = [("X-Road-Client", m.as_str())];
    for (target, code) in [
        (
            "/r1/DEV/GOV/10000001/popu_lation/persons/1",
            "Client.BadRequest",
        ),
        ("/r1/DEV/GOV/10000001/population", "Client.BadRequest"),
        (
            "/r1/DEV/GOV/10000001/population/echo/a/../../../tax/incomes",
            "Client.BadRequest",
        ),
        (
            "/r1/DEV/GOV/10000001/population/echo/%2e%2e/admin",
            "Client.BadRequest",
        ),
        (
            "/r1/DEV/GOV/10000001/population/echo/a%2Fb",
            "Client.BadRequest",
        ),
        (
            "/r1/DEV/GOV/10000001/pop%2Fulation/echo",
            "Client.BadRequest",
        ),
        (
            "/r2/DEV/GOV/10000001/population/echo",
            "Client.InvalidProtocolVersion",
        ),
    ] {
        assert_eq!(
            raw_http(&base, target, &hdr).await,
            (400, Some(code.to_owned())),
            "{target}"
        );
    }
    // A named gateway that does not host the service.
    let wrong_gw = net
        .http
        .get(format!("{base}/r1/{}/1", service(TAX, "companies")))
        .header("X-Road-Client", &m)
        .header("X-Road-Security-Server", ORGS[POPULATION].gateway_id())
        .send()
        .await
        .unwrap();
    expect_fault(wrong_gw, 500, "Server.ClientProxy.InvalidSecurityServer").await;
    // Errors follow Accept: XML when asked.
    let xml = net
        .http
        .get(format!("{base}/r1/{}/1", service(TAX, "incomes")))
        .header("X-Road-Client", &m)
        .header("Accept", "application/xml")
        .send()
        .await
        .unwrap();
    assert_eq!(
        xml.headers()["content-type"],
        "application/xml; charset=utf-8"
    );
    let text = xml.text().await.unwrap();
    assert!(
        text.contains("<type>Server.ServerProxy.AccessDenied</type>"),
        "{text}"
    );

    // Refusals are monitored as failures.
    let (url, token) = net.admin(MUNICIPALITY);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ops: Vec<Value> = net
        .http
        .get(format!("{url}/api/v1/op-monitoring?limit=1000"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ops.iter().any(
            |o| o["fault_code"] == "Server.ServerProxy.AccessDenied" && o["succeeded"] == false
        )
    );
    net.stop().await;
}
both_backends!(refusals_have_precise_errors, refusals);

async fn passthrough(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let m = muni();
    let base = net.client_url(MUNICIPALITY);
    let echo = service(POPULATION, "echo");
    let resp = net
        .http
        .post(format!("{base}/r1/{echo}/some/path;x=1?a=1&a=2&b=%20x&c"))
        .header("X-Road-Client", &m)
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Accept", "application/json")
        .header("Authorization", "Bearer end-user-jwt")
        .header("X-Custom", "one")
        .header("Cache-Control", "no-cache")
        .header("Connection", "X-Hop")
        .header("X-Hop", "must-not-pass")
        .header("User-Agent", "my-information-system/1.0")
        .body("{\"q\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/some/path;x=1");
    assert_eq!(seen["query"], "a=1&a=2&b=%20x&c");
    assert_eq!(seen["body"], "{\"q\":1}");
    let headers: Vec<(String, String)> = serde_json::from_value(seen["headers"].clone()).unwrap();
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("content-type"), vec!["application/json; charset=utf-8"]);
    assert_eq!(get("accept"), vec!["application/json"]);
    assert_eq!(get("authorization"), vec!["Bearer end-user-jwt"]);
    assert_eq!(get("x-custom"), vec!["one"]);
    assert_eq!(get("cache-control"), vec!["no-cache"]);
    assert_eq!(get("x-road-client"), vec![m.clone()]);
    assert!(
        get("x-hop").is_empty(),
        "a header named in Connection is hop-by-hop"
    );
    assert!(
        get("user-agent").is_empty(),
        "User-Agent reveals the origin and is filtered"
    );
    assert!(get("veksel-signature").is_empty() && get("veksel-created-at").is_empty());
    let host = get("host");
    assert_eq!(host.len(), 1);
    assert!(
        !host[0].contains(base.trim_start_matches("http://")),
        "the client's Host does not pass"
    );

    // Provider statuses pass through unchanged, without X-Road-Error.
    for code in [404u16, 418, 500, 503] {
        let r = net
            .r1(MUNICIPALITY, &m, &format!("{echo}/status/{code}"))
            .await;
        assert_eq!(r.status().as_u16(), code);
        assert!(
            fault(&r).is_none(),
            "a provider error is not an X-Road error"
        );
        assert!(r.headers().contains_key("x-road-request-id"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], code);
    }
    // Redirects are returned, not followed.
    let r = net.r1(MUNICIPALITY, &m, &format!("{echo}/redirect")).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/echo");
    // Answers without a body (204, 304, any answer to HEAD) are signed and logged
    // like others; the signed head and commit trailers travel without one.
    let logged_before = message_log(&net, MUNICIPALITY, "limit=1000").await.len();
    for code in [204u16, 304] {
        let r = net
            .r1(MUNICIPALITY, &m, &format!("{echo}/status/{code}"))
            .await;
        assert_eq!(r.status().as_u16(), code);
        assert!(fault(&r).is_none(), "{code}: {:?}", r.headers());
        assert!(r.bytes().await.unwrap().is_empty(), "{code}");
    }
    let r = net
        .http
        .head(format!("{base}/r1/{echo}/bytes/1000"))
        .header("X-Road-Client", &m)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(fault(&r).is_none(), "HEAD: {:?}", r.headers());
    assert!(r.bytes().await.unwrap().is_empty());
    let logged = message_log(&net, MUNICIPALITY, "limit=1000").await.len();
    assert_eq!(
        logged,
        logged_before + 3,
        "each bodiless answer logged once"
    );
    net.stop().await;
}
both_backends!(
    status_redirects_query_and_headers_pass_as_r1_says,
    passthrough
);

async fn metaservices(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let m = muni();
    let base = net.client_url(MUNICIPALITY);
    let clients: Value = net
        .http
        .get(format!("{base}/listClients"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = clients["member"].as_array().unwrap();
    assert_eq!(entries.len(), 6, "3 members and 3 subsystems: {clients}");
    assert!(
        entries
            .iter()
            .any(|e| e["id"]["object_type"] == "SUBSYSTEM"
                && e["id"]["subsystem_code"] == "casework")
    );
    let xml = net
        .http
        .get(format!("{base}/listClients"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(xml.contains("<id:subsystemCode>population</id:subsystemCode>"));

    let list: Value = net
        .r1(MUNICIPALITY, &m, &service(POPULATION, "listMethods"))
        .await
        .json()
        .await
        .unwrap();
    let codes: Vec<&str> = list["service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service_code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, vec!["echo", "persons"]);
    let allowed: Value = net
        .r1(MUNICIPALITY, &m, &service(TAX, "allowedMethods"))
        .await
        .json()
        .await
        .unwrap();
    let codes: Vec<&str> = allowed["service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service_code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        vec!["companies"],
        "the municipality may not use incomes"
    );
    let allowed: Value = net
        .r1(
            POPULATION,
            &ORGS[POPULATION].subsystem_id(),
            &service(TAX, "allowedMethods"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        allowed["service"].as_array().unwrap().len(),
        2,
        "auditors may use incomes too"
    );

    let doc = net
        .r1(
            MUNICIPALITY,
            &m,
            &format!("{}?serviceCode=persons", service(POPULATION, "getOpenAPI")),
        )
        .await;
    assert_eq!(doc.status(), 200);
    let doc: Value = doc.json().await.unwrap();
    assert!(doc["paths"]["/{id}"]["get"].is_object());
    expect_fault(
        net.r1(MUNICIPALITY, &m, &service(POPULATION, "getOpenAPI"))
            .await,
        500,
        "Server.ServerProxy.InvalidRequest",
    )
    .await;
    expect_fault(
        net.r1(
            MUNICIPALITY,
            &m,
            &format!("{}?serviceCode=echo", service(POPULATION, "getOpenAPI")),
        )
        .await,
        500,
        "Server.ServerProxy.UnknownService",
    )
    .await;
    net.stop().await;
}
both_backends!(metaservices_answer_as_xroad_does, metaservices);

async fn peer_protocol(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let mut peer = RawPeer::connect(&net, MUNICIPALITY, POPULATION, None)
        .await
        .unwrap();

    // A correct message from the raw peer is served: the refusals below are not a
    // side effect of a broken test client.
    let good = peer.request(&net, "/hello");
    let replay_of = RawRequest {
        descriptor: good.descriptor.clone(),
        body: good.body.clone(),
        sent_body: None,
        signature: None,
        unsigned: false,
        auth_staple: good.auth_staple.clone(),
        signing_staple: good.signing_staple.clone(),
        extra_headers: Vec::new(),
        extra_trailers: Vec::new(),
        omit_headers: Vec::new(),
        body_error: false,
    };
    assert!(
        good.auth_staple.is_some() && good.signing_staple.is_some(),
        "the municipality gateway holds OCSP responses for both its certificates"
    );
    let (status, headers, body) = peer.send(good).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(headers.contains_key("x-road-request-hash"));
    assert!(
        headers.contains_key("veksel-ocsp-auth") && headers.contains_key("veksel-ocsp-signing"),
        "the provider staples OCSP responses for both its certificates: {headers:?}"
    );

    let fault_of = |h: &http::HeaderMap| {
        h.get("x-road-error")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    // Replay of the same request.
    let (status, h, _) = peer.send(replay_of).await;
    assert_eq!(
        (status, fault_of(&h).as_deref()),
        (500, Some("Server.ServerProxy.ReplayedMessage"))
    );
    assert!(
        h.contains_key("veksel-ocsp-auth"),
        "fault responses carry the provider's OCSP response too"
    );
    // Stale and future requests.
    for shift in [-3_600_000i64, 3_600_000] {
        let mut r = peer.request(&net, "/x");
        r.descriptor.created_at_ms += shift;
        let (status, h, _) = peer.send(r).await;
        assert_eq!(
            (status, fault_of(&h).as_deref()),
            (500, Some("Server.ServerProxy.ReplayedMessage")),
            "shift {shift}"
        );
    }
    // A signature over another message.
    let mut other = peer.request(&net, "/x");
    other.descriptor.xroad_id = "something-else".into();
    other.descriptor.body = veksel_proto::descriptor::BodyDigest::of(&other.body);
    let other_sig = veksel_proto::jws::sign_detached(
        peer.signer.as_ref(),
        veksel_proto::descriptor::REQUEST_CTY,
        true,
        &veksel_proto::descriptor::canonical_bytes(&other.descriptor),
    )
    .unwrap();
    let mut r = peer.request(&net, "/x");
    r.signature = Some(other_sig);
    let (status, h, _) = peer.send(r).await;
    assert_eq!(
        (status, fault_of(&h).as_deref()),
        (500, Some("Server.ServerProxy.InvalidSignatureValue"))
    );
    // A body changed after signing.
    let mut r = peer.request(&net, "/x");
    r.sent_body = Some(b"raw bodY".to_vec());
    let (status, h, _) = peer.send(r).await;
    assert_eq!(
        (status, fault_of(&h).as_deref()),
        (500, Some("Server.ServerProxy.InvalidSignatureValue"))
    );
    // A flipped byte in the signature.
    let mut r = peer.request(&net, "/x");
    let sig = veksel_proto::jws::sign_detached(
        peer.signer.as_ref(),
        "veksel-request+json",
        true,
        b"irrelevant",
    )
    .unwrap();
    let mut chars: Vec<char> = sig.chars().collect();
    let last = chars.len() - 3;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    r.signature = Some(chars.into_iter().collect());
    let (status, h, _) = peer.send(r).await;
    assert_eq!(
        (status, fault_of(&h).as_deref()),
        (500, Some("Server.ServerProxy.InvalidSignatureValue"))
    );
    // No signature at all.
    let mut r = peer.request(&net, "/x");
    r.unsigned = true;
    let (status, h, _) = peer.send(r).await;
    assert_eq!(
        (status, fault_of(&h).as_deref()),
        (500, Some("Server.ServerProxy.MissingSignature"))
    );
    // A client the peer gateway does not host.
    let mut r = peer.request(&net, "/x");
    r.descriptor.client = ORGS[TAX].subsystem_id().parse().unwrap();
    let (status, h, _) = peer.send(r).await;
    assert_eq!(
        (status, fault_of(&h).as_deref()),
        (500, Some("Server.ServerProxy.SslAuthenticationFailed"))
    );

    // OCSP: the TLS certificate needs a fresh response from its CA, for that certificate.
    let label = |s: &str| Some(format!("{} {s}", peer.auth_cert_sha256));
    let signing_staple = peer.staples.1.clone().unwrap();
    let garbage = "bm90IGFuIE9DU1AgcmVzcG9uc2U=";
    for (what, staple, expect) in [
        ("missing", None, "no OCSP response"),
        (
            "unlabelled",
            Some(signing_staple.clone()),
            "no OCSP response",
        ),
        (
            "another certificate's",
            label(&signing_staple),
            "does not speak of this certificate",
        ),
        ("garbage", label(garbage), "OCSP"),
    ] {
        let mut r = peer.request(&net, "/x");
        r.auth_staple = staple;
        let (status, h, body) = peer.send(r).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(
            (status, fault_of(&h).as_deref()),
            (500, Some("Server.ServerProxy.SslAuthenticationFailed")),
            "{what} authentication staple: {body}"
        );
        assert!(body.contains(expect), "{what}: {body}");
    }
    // …and so does the signing certificate.
    let auth_staple = peer.staples.0.clone().unwrap();
    let unlabelled_auth = auth_staple.split_once(' ').unwrap().1.to_owned();
    for (what, staple) in [
        ("missing", None),
        ("another certificate's", Some(unlabelled_auth)),
        ("garbage", Some(garbage.to_owned())),
    ] {
        let mut r = peer.request(&net, "/x");
        r.signing_staple = staple;
        let (status, h, body) = peer.send(r).await;
        assert_eq!(
            (status, fault_of(&h).as_deref()),
            (500, Some("Server.ServerProxy.IncorrectCertificate")),
            "{what} signing staple: {}",
            String::from_utf8_lossy(&body)
        );
    }

    // Signed with another member's key: the certificate does not name the client's member.
    let tax_keys =
        veksel_gateway::KeyStore::load(&net.sandbox().info.gateways[TAX].data_dir).unwrap();
    let tax_signer = tax_keys
        .signer(&ORGS[TAX].member().parse().unwrap())
        .unwrap();
    let mut r = peer.request(&net, "/x");
    r.descriptor.body = veksel_proto::descriptor::BodyDigest::of(&r.body);
    r.signature = Some(
        veksel_proto::jws::sign_detached(
            tax_signer.as_ref(),
            veksel_proto::descriptor::REQUEST_CTY,
            true,
            &veksel_proto::descriptor::canonical_bytes(&r.descriptor),
        )
        .unwrap(),
    );
    let (status, h, _) = peer.send(r).await;
    assert_eq!(
        (status, fault_of(&h).as_deref()),
        (500, Some("Server.ServerProxy.IncorrectCertificate"))
    );

    // An unregistered gateway with a certificate from the network's own CA.
    let authority_dir = net.dir.path().join("authority");
    let ca = veksel_pki::CertificateAuthority::from_parts(
        &std::fs::read_to_string(authority_dir.join("ca.pem")).unwrap(),
        veksel_pki::KeyFile::load(&authority_dir.join("ca.key")).unwrap(),
    )
    .unwrap();
    let rogue_key = veksel_pki::KeyFile::generate().unwrap();
    let rogue_cert = ca
        .issue_from_csr(
            &veksel_pki::ca::make_csr(&rogue_key, "rogue").unwrap(),
            &veksel_pki::Profile::GatewayAuth {
                gateway: "DEV/MUN/30000003/rogue".parse().unwrap(),
                hosts: vec!["127.0.0.1".into()],
            },
            time::OffsetDateTime::now_utc(),
            time::Duration::days(1),
        )
        .unwrap();
    let mut rogue = RawPeer::connect(
        &net,
        MUNICIPALITY,
        POPULATION,
        Some((vec![rogue_cert], rogue_key)),
    )
    .await
    .unwrap();
    let r = rogue.request(&net, "/x");
    let (status, h, body) = rogue.send(r).await;
    assert_eq!(
        (status, fault_of(&h).as_deref()),
        (500, Some("Server.ServerProxy.SslAuthenticationFailed"))
    );
    assert!(
        String::from_utf8_lossy(&body).contains("not registered"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // A certificate from outside the network does not get past the TLS handshake.
    let (cert, key) = outsider_auth_cert(&ORGS[MUNICIPALITY].gateway_id());
    let refused =
        match RawPeer::connect(&net, MUNICIPALITY, POPULATION, Some((vec![cert], key))).await {
            Err(e) => Some(e),
            Ok(mut p) => {
                let r = p.request(&net, "/x");
                p.try_send(r).await.err()
            }
        };
    assert!(
        refused.is_some(),
        "a certificate from an unknown CA must be refused"
    );
    net.stop().await;
}
both_backends!(
    peer_protocol_refuses_tampering_replay_and_impostors,
    peer_protocol
);

async fn expired_conf(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let m = muni();
    let companies = format!("{}/12345678", service(TAX, "companies"));
    assert_eq!(net.r1(MUNICIPALITY, &m, &companies).await.status(), 200);
    // Move every node's clock past the configuration's expiry: the gateway's cached
    // copy expires, and the authority's published copy (signed before the jump) is
    // just as stale, so no refresh can rescue it.
    let (url, _) = net.admin(MUNICIPALITY);
    // A connection between gateways opened while the configuration was valid: the
    // provider refuses new handshakes once it expires, and on this one each request.
    let mut peer = RawPeer::connect(&net, MUNICIPALITY, POPULATION, None)
        .await
        .unwrap();
    // The server checks a TLS 1.3 client's certificate after the client has finished
    // its side of the handshake: one answered request makes sure it was accepted
    // before the clock jumps.
    let (status, _, _) = peer.send(peer.request(&net, "/x")).await;
    assert_eq!(status, 200);
    net.clock.advance(11 * 60 * 1000);
    let (status, headers, _) = peer.send(peer.request(&net, "/x")).await;
    assert_eq!(
        (
            status,
            headers.get("x-road-error").and_then(|v| v.to_str().ok())
        ),
        (500, Some("Server.ServerProxy.OutdatedGlobalConf"))
    );
    let body = expect_fault(
        net.r1(MUNICIPALITY, &m, &companies).await,
        500,
        "Server.ClientProxy.OutdatedGlobalConf",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let ready = net.http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("global configuration"));
    net.stop().await;
}
both_backends!(expired_global_configuration_is_refused, expired_conf);

async fn authority_api(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let info = &net.sandbox().info;
    let anchor: veksel_proto::conf::Anchor =
        serde_json::from_str(&std::fs::read_to_string(&info.anchor_file).unwrap()).unwrap();
    let roots = veksel_pki::certs_from_pem(&anchor.authority_tls_ca_pem).unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(veksel_pki::tls::https_client_config(&roots).unwrap())
        .build()
        .unwrap();
    let url = &info.authority_url;
    assert_eq!(
        http.get(format!("{url}/api/v1/members"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(format!("{url}/api/v1/members"))
            .bearer_auth("vka_wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let admin = &info.authority_admin_token;
    let created: Value = http
        .post(format!("{url}/api/v1/tokens"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"role": "observer", "description": "test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let observer = created["token"].as_str().unwrap();
    let members: Vec<Value> = http
        .get(format!("{url}/api/v1/members"))
        .bearer_auth(observer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(members.len(), 3);
    let denied = http
        .post(format!("{url}/api/v1/members"))
        .bearer_auth(observer)
        .json(&serde_json::json!({"id": "DEV/COM/555", "name": "X"}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let bad = http
        .post(format!("{url}/api/v1/members"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"id": "DEV/COM/5_5", "name": "X"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let dup = http
        .post(format!("{url}/api/v1/members"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"id": ORGS[0].member(), "name": "X"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    let unknown_field = http
        .post(format!("{url}/api/v1/members"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"id": "DEV/COM/556", "name": "X", "sneaky": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_field.status(), 422);

    // The configuration: signed with the anchor's key, with ETag and 304.
    let resp = http.get(&anchor.conf_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let jws = resp.text().await.unwrap();
    let key = veksel_pki::CertInfo::parse(
        &veksel_pki::certs_from_pem(&anchor.conf_signing_cert_pem).unwrap()[0],
    )
    .unwrap()
    .public_key;
    let conf = veksel_proto::conf::GlobalConf::verify(&jws, &key, "DEV").unwrap();
    assert_eq!(conf.gateways.len(), 3);
    assert!(conf.gateways.iter().all(|g| g.auth_cert_sha256.len() == 1));
    assert_eq!(
        conf.expires_at_ms - conf.generated_at_ms,
        600_000,
        "default validity is 10 minutes"
    );
    // The publisher re-signs now and then (every change, and well before expiry):
    // a new ETag in between is a new configuration, so ask again with that one.
    let mut etag = etag;
    let mut attempts = 0;
    let again = loop {
        let again = http
            .get(&anchor.conf_url)
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        attempts += 1;
        if again.status() == 304 || attempts == 5 {
            break again;
        }
        assert_eq!(again.status(), 200);
        let newer = again.headers()["etag"].to_str().unwrap().to_owned();
        assert_ne!(
            newer, etag,
            "the same configuration answered 200 to If-None-Match"
        );
        etag = newer;
    };
    assert_eq!(again.status(), 304);

    let doc: Value = http
        .get(format!("{url}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/api/v1/members"]["post"].is_object());
    let events: Vec<Value> = http
        .get(format!("{url}/api/v1/audit-events?limit=1000"))
        .bearer_auth(observer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(events.iter().any(|e| e["action"] == "gateway.add"));
    assert!(events.iter().any(|e| e["action"] == "certificate.issue"));
    net.stop().await;
}
both_backends!(
    authority_api_requires_roles_and_serves_signed_configuration,
    authority_api
);

async fn restart(b: Backend) {
    let Some(mut net) = Net::start(b).await else {
        return;
    };
    let m = muni();
    let companies = format!("{}/12345678", service(TAX, "companies"));
    let first = net.r1(MUNICIPALITY, &m, &companies).await;
    let request_id = first.headers()["x-road-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(first.status(), 200);
    let sandbox = net.sandbox.take().unwrap();
    let mut options = veksel_sandbox::SandboxOptions::new(net.dir.path().to_owned());
    options.databases = match b {
        Backend::Sqlite => veksel_sandbox::Databases::Sqlite,
        // The gateways' and authority's data directories remember their database URLs.
        Backend::Postgres => veksel_sandbox::Databases::Sqlite,
    };
    sandbox.stop().await;
    net.sandbox = Some(veksel_sandbox::Sandbox::start(options).await.unwrap());
    assert_eq!(net.r1(MUNICIPALITY, &m, &companies).await.status(), 200);
    assert_eq!(
        message_log(&net, MUNICIPALITY, &format!("request_id={request_id}"))
            .await
            .len(),
        1,
        "the log survived the restart"
    );
    net.stop().await;
}
both_backends!(sandbox_restarts_on_its_own_state, restart);

fn https_client(ca_pem: &str, identity: Option<(&[u8], &veksel_pki::KeyFile)>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in veksel_pki::certs_from_pem(ca_pem).unwrap() {
        roots
            .add(rustls::pki_types::CertificateDer::from(c))
            .unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(veksel_pki::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let tls = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from(cert.to_vec())],
                key.rustls_key(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap()
}

async fn information_systems(b: Backend) {
    let Some(mut net) = Net::start(b).await else {
        return;
    };
    // Give the municipality's gateway an HTTPS client side and restart the network.
    let gw_dir = net.sandbox().info.gateways[MUNICIPALITY].data_dir.clone();
    let sandbox = net.sandbox.take().unwrap();
    sandbox.stop().await;
    edit_gateway_config(&gw_dir, |config| {
        config["client_tls_listen"] = Value::String("127.0.0.1:0".into());
    });
    net.sandbox = Some(
        veksel_sandbox::Sandbox::start(veksel_sandbox::SandboxOptions::new(
            net.dir.path().to_owned(),
        ))
        .await
        .unwrap(),
    );
    let tls_addr = net.sandbox().gateways[MUNICIPALITY]
        .as_ref()
        .unwrap()
        .client_tls_addr
        .unwrap();

    // The casework system authenticates with its own certificate, registered by hash;
    // plain HTTP is no longer allowed for it.
    let is_key = veksel_pki::KeyFile::generate().unwrap();
    let is_cert = veksel_pki::ca::self_signed_signing_cert(
        &is_key,
        "casework system",
        time::OffsetDateTime::now_utc(),
        time::Duration::days(30),
    )
    .unwrap();
    let (url, token) = net.admin(MUNICIPALITY);
    let put = net
        .http
        .put(format!("{url}/api/v1/clients/{}", muni().replace('/', ":")))
        .bearer_auth(&token)
        .json(&serde_json::json!({"log_mode": "metadata", "allow_loopback_http": false, "is_cert_sha256": [veksel_pki::sha256_hex(&is_cert)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);

    let path = format!("r1/{}/12345678", service(TAX, "companies"));
    let plain = net
        .r1(
            MUNICIPALITY,
            &muni(),
            &format!("{}/12345678", service(TAX, "companies")),
        )
        .await;
    expect_fault(plain, 500, "Server.ClientProxy.SslAuthenticationFailed").await;

    let ca = std::fs::read_to_string(net.dir.path().join("authority/ca.pem")).unwrap();
    let with_cert = https_client(&ca, Some((&is_cert, &is_key)));
    let ok = with_cert
        .get(format!("https://{tls_addr}/{path}"))
        .header("X-Road-Client", muni())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["id"], "12345678");

    let anonymous = https_client(&ca, None)
        .get(format!("https://{tls_addr}/{path}"))
        .header("X-Road-Client", muni())
        .send()
        .await
        .unwrap();
    expect_fault(anonymous, 500, "Server.ClientProxy.SslAuthenticationFailed").await;
    let other_key = veksel_pki::KeyFile::generate().unwrap();
    let other_cert = veksel_pki::ca::self_signed_signing_cert(
        &other_key,
        "impostor",
        time::OffsetDateTime::now_utc(),
        time::Duration::days(30),
    )
    .unwrap();
    let impostor = https_client(&ca, Some((&other_cert, &other_key)))
        .get(format!("https://{tls_addr}/{path}"))
        .header("X-Road-Client", muni())
        .send()
        .await
        .unwrap();
    let body = expect_fault(impostor, 500, "Server.ClientProxy.SslAuthenticationFailed").await;
    assert!(
        body["message"].as_str().unwrap().contains("not registered"),
        "{body}"
    );
    net.stop().await;
}
both_backends!(
    information_systems_authenticate_by_loopback_or_client_certificate,
    information_systems
);
