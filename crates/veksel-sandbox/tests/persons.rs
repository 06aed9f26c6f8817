//! Verified end users: an information system passes the ID token its person's login
//! gave it; both gateways verify it, the signed descriptor and both message logs name
//! the person, and a service can require a person at a level. Every refusal is played
//! by the party that would try it: a forged or expired token, a token of another
//! system, a level too low, an unverified `X-Road-UserId`, and a consumer gateway that
//! names a person without a token or changes the level.

mod common;

use common::people::{self, Provider};
use common::*;
use serde_json::{Value, json};
use veksel_proto::person::VerifiedPerson;
use veksel_sandbox::ORGS;

const PERSON: &str = "0101701234";

/// The echo service of the population register, which answers with what its system
/// received.
fn echo_path() -> String {
    format!("{}/echo/persons/{PERSON}", ORGS[POPULATION].subsystem_id())
}

/// Calls the echo service from the municipality's system with these headers.
async fn call(net: &Net, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = net
        .http
        .get(format!(
            "{}/r1/{}",
            net.client_url(MUNICIPALITY),
            echo_path()
        ))
        .header("X-Road-Client", ORGS[MUNICIPALITY].subsystem_id());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// Sets the level of person the population register's echo service requires.
async fn require_person(net: &Net, level: Option<&str>) -> u16 {
    let (admin, token) = net.admin(POPULATION);
    let client_url = format!(
        "{admin}/api/v1/clients/{}",
        ORGS[POPULATION].subsystem_id().replace('/', ":")
    );
    let client: Value = get_json(net, &client_url, &token).await;
    let mut service = client["services"]["echo"].clone();
    service["person_level"] = level.map_or(Value::Null, |l| json!(l));
    net.http
        .put(format!("{client_url}/services/echo"))
        .bearer_auth(&token)
        .json(&service)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The request descriptor both gateways logged for a request, read by their
/// security officers.
async fn logged_descriptors(net: &Net, request_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for org in [MUNICIPALITY, POPULATION] {
        let records = message_log(net, org, &format!("request_id={request_id}")).await;
        assert_eq!(records.len(), 1, "{records:?}");
        out.push(serde_json::from_str(records[0]["request_descriptor"].as_str().unwrap()).unwrap());
    }
    out
}

/// The raw peer's request for the person, naming `person` in its descriptor and
/// sending `token`.
fn naming(
    peer: &RawPeer,
    net: &Net,
    person: Option<&VerifiedPerson>,
    token: Option<&str>,
) -> RawRequest {
    let mut r = peer.request(net, &format!("/persons/{PERSON}"));
    r.descriptor.person = person.cloned();
    if let Some(t) = token {
        r.extra_headers
            .push(("veksel-id-token".into(), t.to_owned()));
    }
    r
}

/// The status and X-Road fault of a raw peer's request.
async fn peer_fault(peer: &mut RawPeer, r: RawRequest) -> (u16, Option<String>) {
    let (status, headers, _) = peer.send(r).await;
    let fault = headers
        .get("x-road-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, fault)
}

async fn verified_persons(backend: Backend) {
    let Some(net) = Net::start(backend).await else {
        eprintln!("skipped: VEKSEL_TEST_DATABASE_URL is not set");
        return;
    };
    let idp = Provider::of(&net);
    idp.register_system(&net, MUNICIPALITY).await;

    // Without a requirement, X-Road-UserId alone is carried and logged as what it
    // is: the information system's claim; no person is named.
    let resp = call(&net, &[("X-Road-UserId", "EE38001085718")]).await;
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-road-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    for d in logged_descriptors(&net, &request_id).await {
        assert_eq!(d["user_id"], "EE38001085718");
        assert!(d.get("person").is_none(), "{d}");
    }

    // The register requires a person verified at substantial or above.
    assert_eq!(require_person(&net, Some("low")).await, 422);
    assert_eq!(require_person(&net, Some("substantial")).await, 204);
    let resp = call(&net, &[("X-Road-UserId", "EE38001085718")]).await;
    let f = expect_fault(resp, 500, "Server.ServerProxy.VerifiedPersonRequired").await;
    assert!(
        f["message"].as_str().unwrap().contains("X-Road-UserId"),
        "{f}"
    );
    let resp = call(&net, &[]).await;
    expect_fault(resp, 500, "Server.ServerProxy.VerifiedPersonRequired").await;

    // With the person's ID token: through, and the register's system learns who.
    let token = idp
        .id_token(&net, MUNICIPALITY, PERSON, "substantial")
        .await;
    let resp = call(&net, &[("veksel-id-token", &token)]).await;
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-road-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let echoed: Value = resp.json().await.unwrap();
    let seen = |name: &str| {
        echoed["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_owned())
    };
    assert_eq!(
        seen("veksel-person-id").as_deref(),
        Some(PERSON),
        "{echoed}"
    );
    assert_eq!(seen("veksel-person-level").as_deref(), Some("substantial"));
    assert_eq!(seen("veksel-id-token"), Some(token.clone()));
    // The signed descriptor in both logs names the person, with the provider's
    // token as its evidence; both logs find the exchange by the person.
    for d in logged_descriptors(&net, &request_id).await {
        let person: VerifiedPerson = serde_json::from_value(d["person"].clone()).unwrap();
        assert_eq!(person.id, PERSON);
        assert_eq!(person.level, veksel_proto::person::Level::Substantial);
        assert_eq!(person.issuer, idp.url);
        assert_eq!(person.id_token, token);
    }
    for org in [MUNICIPALITY, POPULATION] {
        let found = message_log(&net, org, &format!("person={PERSON}")).await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0]["request_id"], request_id.as_str());
        assert_eq!(found[0]["person"], PERSON);
        assert!(message_log(&net, org, "person=0202802345").await.is_empty());
    }
    // An observer may not look a person up.
    let dir = net.sandbox().info.gateways[POPULATION].data_dir.clone();
    let observer = veksel_gateway::create_admin_token(&dir, "observer", "persons test", &net.clock)
        .await
        .unwrap();
    let (admin, _) = net.admin(POPULATION);
    let resp = net
        .http
        .get(format!("{admin}/api/v1/message-log?person={PERSON}"))
        .bearer_auth(&observer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let metadata: Vec<Value> =
        get_json(&net, &format!("{admin}/api/v1/message-log"), &observer).await;
    assert!(metadata.iter().all(|r| r.get("person").is_none()));

    // A level too low for what the service requires, then a login at that level.
    assert_eq!(require_person(&net, Some("high")).await, 204);
    let resp = call(&net, &[("veksel-id-token", &token)]).await;
    let f = expect_fault(resp, 500, "Server.ServerProxy.VerifiedPersonRequired").await;
    assert!(
        f["message"].as_str().unwrap().contains("substantial"),
        "{f}"
    );
    let high = idp.id_token(&net, MUNICIPALITY, PERSON, "high").await;
    let resp = call(&net, &[("veksel-id-token", &high)]).await;
    assert_eq!(resp.status(), 200);

    // Tokens the consumer's gateway refuses before anything leaves it.
    let refused = |token: String, why: &'static str| {
        let net = &net;
        async move {
            let resp = call(net, &[("veksel-id-token", &token)]).await;
            let f = expect_fault(resp, 400, "Client.InvalidPersonToken").await;
            assert!(f["message"].as_str().unwrap().contains(why), "{why}: {f}");
        }
    };
    // Forged: the same claims signed by another key under the provider's key id,
    // and under a key id nobody published.
    let (header, claims) = {
        let mut parts = high.split('.');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    };
    let forger = veksel_proto::jws::SoftwareSigner::from_pkcs8(
        &veksel_proto::jws::generate_p256_pkcs8().unwrap(),
        vec![],
    )
    .unwrap();
    let forged = {
        use veksel_proto::jws::Signer;
        let sig = forger
            .sign(format!("{header}.{claims}").as_bytes())
            .unwrap();
        use base64::Engine;
        format!(
            "{header}.{claims}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
        )
    };
    refused(forged, "signature does not verify").await;
    let claims_json: Value = {
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&claims)
                .unwrap(),
        )
        .unwrap()
    };
    let unknown_kid = veksel_proto::jws::sign_jwt(
        &forger,
        "not-published",
        "JWT",
        claims_json.to_string().as_bytes(),
    )
    .unwrap();
    refused(unknown_kid, "no published key").await;
    // A token the provider issued to another relying party.
    assert_eq!(
        idp.register(json!({"client_id": "case-portal", "name": "Case portal",
                "redirect_uris": [people::REDIRECT], "auth_method": "none"}))
            .await,
        201
    );
    let (verifier, challenge) = people::pkce();
    let code = idp.code_for("case-portal", &challenge, PERSON).await;
    let (status, body) = idp
        .redeem(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", people::REDIRECT),
            ("client_id", "case-portal"),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let portal_token = body["id_token"].as_str().unwrap().to_owned();
    refused(portal_token.clone(), "issued to \"case-portal\"").await;
    // An access token in an ID token's place.
    refused(body["access_token"].as_str().unwrap().to_owned(), "type").await;
    // Two tokens: which one would count?
    let resp = net
        .http
        .get(format!(
            "{}/r1/{}",
            net.client_url(MUNICIPALITY),
            echo_path()
        ))
        .header("X-Road-Client", ORGS[MUNICIPALITY].subsystem_id())
        .header("veksel-id-token", &high)
        .header("veksel-id-token", &token)
        .send()
        .await
        .unwrap();
    expect_fault(resp, 400, "Client.InvalidPersonToken").await;

    // A consumer gateway that lies: a person in its signed descriptor without the
    // token, a level higher than the token's, or a token of another system. The
    // provider's gateway rebuilds the person from the token it verifies itself.
    let mut peer = RawPeer::connect(&net, MUNICIPALITY, POPULATION, None)
        .await
        .unwrap();
    let person = VerifiedPerson {
        id: PERSON.into(),
        level: veksel_proto::person::Level::High,
        issuer: idp.url.clone(),
        id_token: high.clone(),
    };
    let high_claim_on_substantial = VerifiedPerson {
        id_token: token.clone(),
        ..person.clone()
    };
    // The honest form of the raw peer's request is served.
    let r = naming(&peer, &net, Some(&person), Some(&high));
    let (status, _, body) = peer.send(r).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let r = naming(&peer, &net, Some(&person), None);
    assert_eq!(
        peer_fault(&mut peer, r).await,
        (
            500,
            Some("Server.ServerProxy.VerifiedPersonRequired".to_owned())
        )
    );
    let r = naming(&peer, &net, Some(&high_claim_on_substantial), Some(&token));
    assert_eq!(
        peer_fault(&mut peer, r).await,
        (
            500,
            Some("Server.ServerProxy.VerifiedPersonRequired".to_owned())
        ),
        "the token says substantial, the service requires high"
    );
    assert_eq!(require_person(&net, Some("substantial")).await, 204);
    let r = naming(&peer, &net, Some(&high_claim_on_substantial), Some(&token));
    assert_eq!(
        peer_fault(&mut peer, r).await,
        (
            500,
            Some("Server.ServerProxy.InvalidSignatureValue".to_owned())
        ),
        "a level the token does not give breaks the signature"
    );
    let r = naming(&peer, &net, None, Some(&portal_token));
    assert_eq!(
        peer_fault(&mut peer, r).await,
        (
            500,
            Some("Server.ServerProxy.InvalidPersonToken".to_owned())
        )
    );

    // Expired: the token outlives its five minutes.
    net.clock.advance(320_000);
    refused(token, "expired").await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_persons_on_sqlite() {
    verified_persons(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_persons_on_postgres() {
    verified_persons(Backend::Postgres).await;
}
