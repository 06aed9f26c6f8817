//! Onboarding as management requests, end to end: a new member applies, the
//! registration officer approves, the applicant collects its enrolment token, its new
//! gateway enrols (registering its authentication certificate), asks for its
//! subsystem to be registered (signed by the gateway and by the member), the officer
//! approves, a provider grants access, and the new member's first exchange succeeds.
//! Then the policy approves disable/enable at once, and an officer declines a request.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use veksel_gateway::{GatewayConfig, Listeners};
use veksel_sandbox::ORGS;

const MEMBER: &str = "DEV/MUN/30000009";
const GATEWAY: &str = "DEV/MUN/30000009/gw1";
const SUBSYSTEM: &str = "DEV/MUN/30000009/sagsystem";

struct Authority {
    http: reqwest::Client,
    url: String,
    admin: String,
}

impl Authority {
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    async fn apply(&self, body: Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}/apply/v1", self.url)).json(&body))
            .await
    }
    async fn status(&self, id: i64, token: &str) -> (u16, Value) {
        self.send(
            self.http
                .get(format!("{}/apply/v1/{id}", self.url))
                .bearer_auth(token),
        )
        .await
    }
    async fn officer(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }
}

fn application(member: &str, gateway: &str, address: &str) -> Value {
    json!({
        "type": "member-application",
        "member": member,
        "name": "Testby Kommune",
        "gateway": gateway,
        "address": address,
        "contact": "it@testby.example",
    })
}

/// Waits (at most 20 s) until the gateway's global configuration satisfies `check`.
async fn until_conf(
    gw: &veksel_gateway::Gateway,
    what: &str,
    check: impl Fn(&veksel_proto::conf::ConfIndex) -> bool,
) {
    let started = Instant::now();
    loop {
        let _ = gw.conf.refresh().await;
        if gw.conf.latest().is_some_and(|c| check(&c.index)) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: not in the configuration"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn hosts(index: &veksel_proto::conf::ConfIndex, subsystem: &str) -> bool {
    let sub = subsystem.parse().unwrap();
    index
        .gateways_hosting(&sub)
        .iter()
        .any(|g| g.id.to_string() == GATEWAY)
}

async fn onboarding(b: Backend) {
    let Some(mut net) = Net::start_with(b, |o| o.conf_refresh_secs = 1).await else {
        return;
    };
    let (http, url, admin) = authority_client(&net);
    let authority = Authority { http, url, admin };
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();

    // Bad applications are refused with a reason; nothing is stored.
    let mut bad = application(MEMBER, GATEWAY, "no-port");
    let (status, body) = authority.apply(bad.clone()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("host:port"),
        "{body}"
    );
    bad = application("DEV/XYZ/30000009", "DEV/XYZ/30000009/gw1", "gw:5500");
    let (status, body) = authority.apply(bad).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("member class XYZ"),
        "{body}"
    );
    let (status, body) = authority
        .apply(application(
            &ORGS[POPULATION].member(),
            &ORGS[POPULATION].gateway_id(),
            "gw:5500",
        ))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = authority
        .apply(json!({"type": "gateway-deletion", "gateway": GATEWAY}))
        .await;
    assert_eq!(status, 422);

    // 1. The new member applies.
    let (status, receipt) = authority
        .apply(application(MEMBER, GATEWAY, &peer_addr.to_string()))
        .await;
    assert_eq!(status, 202, "{receipt}");
    let id = receipt["id"].as_i64().unwrap();
    let status_token = receipt["status_token"].as_str().unwrap().to_owned();
    let (status, state) = authority.status(id, &status_token).await;
    assert_eq!(status, 200);
    assert_eq!(state["state"], "submitted");
    assert!(state["enrolment"].is_null());
    let (status, _) = authority.status(id, "vks_wrong").await;
    assert_eq!(status, 401);
    let (status, _) = authority.status(id + 1000, &status_token).await;
    assert_eq!(status, 401, "unknown ids answer as wrong tokens do");

    // Another application is declined with a reason the applicant sees.
    let (_, other) = authority
        .apply(application(
            "DEV/MUN/30000010",
            "DEV/MUN/30000010/gw1",
            "gw.example:5500",
        ))
        .await;
    let other_id = other["id"].as_i64().unwrap();
    let (status, body) = authority
        .officer(
            reqwest::Method::POST,
            &format!("/api/v1/management-requests/{other_id}/decline"),
            Some(json!({"reason": "no agreement signed"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, seen) = authority
        .status(other_id, other["status_token"].as_str().unwrap())
        .await;
    assert_eq!(seen["state"], "declined");
    assert_eq!(seen["reason"], "no agreement signed");
    let (status, _) = authority
        .officer(
            reqwest::Method::POST,
            &format!("/api/v1/management-requests/{other_id}/approve"),
            None,
        )
        .await;
    assert_eq!(status, 409, "a declined request stays declined");

    // 2. The registration officer sees the application and approves it.
    let (status, list) = authority
        .officer(
            reqwest::Method::GET,
            "/api/v1/management-requests?state=submitted",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id && r["change"]["member"] == MEMBER)
    );
    let (status, approved) = authority
        .officer(
            reqwest::Method::POST,
            &format!("/api/v1/management-requests/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["state"], "approved");
    let (status, again) = authority
        .officer(
            reqwest::Method::POST,
            &format!("/api/v1/management-requests/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(status, 409, "approved once: {again}");

    // 3. The applicant collects the one-time enrolment token.
    let (_, state) = authority.status(id, &status_token).await;
    assert_eq!(state["state"], "approved");
    let enrolment_token = state["enrolment"]["token"].as_str().unwrap().to_owned();
    let (_, state) = authority.status(id, &status_token).await;
    assert!(state["enrolment"].is_null(), "shown once");

    // 4. The new gateway is set up and enrols: its authentication certificate is
    // registered (approved by the enrolment token).
    let dir = net.dir.path().join("testby");
    let anchor: veksel_proto::conf::Anchor =
        serde_json::from_str(&std::fs::read_to_string(&net.sandbox().info.anchor_file).unwrap())
            .unwrap();
    let mut config = GatewayConfig::new(
        GATEWAY.parse().unwrap(),
        client.local_addr().unwrap(),
        peer_addr,
        admin_l.local_addr().unwrap(),
    );
    config.sync_commit = false;
    if !net.dbs.is_empty() {
        // On PostgreSQL the new gateway gets a database of its own.
        use veksel_store::testing::{TestDatabase, postgres_server_url};
        let own = TestDatabase::create(&postgres_server_url().unwrap(), "gw3")
            .await
            .unwrap();
        config.database_url = Some(own.url.clone());
        net.dbs.push(own);
    }
    veksel_gateway::init(&dir, &config, &anchor).unwrap();
    let issued = veksel_gateway::enrol(&dir, &enrolment_token, &net.clock)
        .await
        .unwrap();
    assert_eq!(issued.len(), 2, "{issued:?}");
    let err = veksel_gateway::enrol(&dir, &enrolment_token, &net.clock).await;
    assert!(err.is_ok_and(|v| v.is_empty()), "nothing more to enrol");
    let running = veksel_gateway::start(
        &dir,
        net.clock.clone(),
        Listeners {
            client: Some(client),
            client_tls: None,
            peer: Some(peer),
            admin: Some(admin_l),
        },
    )
    .await
    .unwrap();
    let gw = running.gateway.clone();
    let (_, list) = authority
        .officer(
            reqwest::Method::GET,
            "/api/v1/management-requests?state=approved",
            None,
        )
        .await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["change"]["type"] == "auth-cert-registration"
                && r["change"]["gateway"] == GATEWAY
                && r["submitted_by"] == format!("enrolment:{GATEWAY}")),
        "{list}"
    );

    // 5. Its admin asks for the subsystem to be registered; the request is signed by
    // the gateway and by the member's signing key, and waits for the officer.
    let gw_admin = format!("http://{}", running.admin_addr);
    let gw_token = veksel_gateway::create_admin_token(&dir, "admin", "onboarding test", &net.clock)
        .await
        .unwrap();
    let r = net
        .http
        .put(format!(
            "{gw_admin}/api/v1/clients/{}",
            SUBSYSTEM.replace('/', ":")
        ))
        .bearer_auth(&gw_token)
        .json(&json!({"log_mode": "metadata", "allow_loopback_http": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let submit = |change: Value| {
        let (http, url, token) = (net.http.clone(), gw_admin.clone(), gw_token.clone());
        async move {
            let r = http
                .post(format!("{url}/api/v1/management-requests"))
                .bearer_auth(token)
                .json(&change)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, request) = submit(
        json!({"type": "client-registration", "subsystem": SUBSYSTEM, "name": "Sagssystem"}),
    )
    .await;
    assert_eq!(status, 202, "{request}");
    assert_eq!(request["state"], "submitted");
    assert_eq!(request["consented"], true);
    // A gateway cannot ask for changes to another gateway.
    let (status, body) =
        submit(json!({"type": "gateway-deletion", "gateway": ORGS[POPULATION].gateway_id()})).await;
    assert_eq!(status, 422, "{body}");

    // Not yet registered: the new gateway refuses its own client precisely.
    let target = format!("{}/persons/0101701234", ORGS[POPULATION].subsystem_id());
    let call = || {
        let http = net.http.clone();
        let url = format!("http://{}/r1/{target}", running.client_addr);
        async move {
            http.get(url)
                .header("X-Road-Client", SUBSYSTEM)
                .send()
                .await
                .unwrap()
        }
    };
    let r = call().await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        fault(&r).as_deref(),
        Some("Server.ClientProxy.UnknownMember")
    );

    // 6. The officer approves; a provider grants access; the first exchange works.
    let (status, body) = authority
        .officer(
            reqwest::Method::POST,
            &format!("/api/v1/management-requests/{}/approve", request["id"]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    until_conf(&gw, "the new subsystem", |i| hosts(i, SUBSYSTEM)).await;
    let pop = net.sandbox().gateway(POPULATION).unwrap().clone();
    until_conf(&pop, "the new subsystem at the provider", |i| {
        hosts(i, SUBSYSTEM)
    })
    .await;
    let (pop_admin, pop_token) = net.admin(POPULATION);
    let pop_client = format!(
        "{pop_admin}/api/v1/clients/{}",
        ORGS[POPULATION].subsystem_id().replace('/', ":")
    );
    let current: Value = get_json(&net, &pop_client, &pop_token).await;
    let mut rules = current["access"].as_array().unwrap().clone();
    rules.push(json!({"subject": {"type": "client", "id": SUBSYSTEM}, "service_code": "persons", "endpoint": {"method": "GET", "path": "/*"}}));
    let r = net
        .http
        .put(format!("{pop_client}/access"))
        .bearer_auth(&pop_token)
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = call().await;
    assert_eq!(r.status(), 200, "the first exchange: {:?}", fault(&r));

    // 7. With a policy, disable and enable take effect at once.
    let (status, body) = authority
        .officer(
            reqwest::Method::PUT,
            "/api/v1/management-policy",
            Some(json!({"auto_approve": ["member-application"]})),
        )
        .await;
    assert_eq!(status, 422, "applications always need an officer: {body}");
    let (status, _) = authority
        .officer(
            reqwest::Method::PUT,
            "/api/v1/management-policy",
            Some(
                json!({"auto_approve": ["client-disable", "client-enable", "client-registration"]}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    // Without the member's consent (this gateway has no key of the population
    // register's member) the policy does not apply.
    let foreign = format!("{}/hosted-elsewhere", ORGS[POPULATION].member());
    let (_, request) = submit(json!({"type": "client-registration", "subsystem": foreign})).await;
    assert_eq!(request["state"], "submitted", "{request}");
    assert_eq!(request["consented"], false);
    // A consent for another change, or a replayed request, is refused.
    let keys = gw.keys.get();
    let member = MEMBER.parse().unwrap();
    let signer = keys.signer(&member).unwrap();
    let change = |sub: &str| veksel_proto::management::Change::ClientDisable {
        gateway: GATEWAY.parse().unwrap(),
        subsystem: sub.parse().unwrap(),
    };
    let consent = veksel_proto::management::Consent {
        gateway: GATEWAY.parse().unwrap(),
        nonce: "n-1".into(),
        change: change(&format!("{MEMBER}/other")),
    };
    let consent = veksel_proto::jws::sign_compact(
        signer.as_ref(),
        veksel_proto::management::CONSENT_CTY,
        true,
        &serde_json::to_vec(&consent).unwrap(),
    )
    .unwrap();
    let forged = serde_json::to_value(veksel_proto::management::GatewayRequest {
        gateway: GATEWAY.parse().unwrap(),
        created_at_ms: net.clock.now_ms(),
        nonce: "n-1".into(),
        change: change(SUBSYSTEM),
        consent: Some(consent),
    })
    .unwrap();
    let post = || {
        veksel_gateway::management::post_signed(
            &gw,
            &keys,
            "/manage/v1",
            veksel_proto::management::MANAGEMENT_CTY,
            &forged,
        )
    };
    let (status, body) = post().await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("another request"),
        "{body}"
    );
    let (status, body) = post().await.unwrap();
    assert_eq!(status, 409, "the nonce is spent: {body}");
    let (status, request) = submit(json!({"type": "client-disable", "subsystem": SUBSYSTEM})).await;
    assert_eq!(status, 202);
    assert_eq!(request["state"], "approved", "{request}");
    assert_eq!(request["decided_by"], "policy");
    until_conf(&gw, "the disabled subsystem gone", |i| !hosts(i, SUBSYSTEM)).await;
    let r = call().await;
    assert_eq!(
        fault(&r).as_deref(),
        Some("Server.ClientProxy.UnknownMember")
    );
    let (_, request) = submit(json!({"type": "client-enable", "subsystem": SUBSYSTEM})).await;
    assert_eq!(request["state"], "approved", "{request}");
    until_conf(&gw, "the enabled subsystem", |i| hosts(i, SUBSYSTEM)).await;
    until_conf(&pop, "the enabled subsystem at the provider", |i| {
        hosts(i, SUBSYSTEM)
    })
    .await;
    let r = call().await;
    assert_eq!(r.status(), 200, "{:?}", fault(&r));

    // 8. Without a policy for it, an address change waits, and can be declined.
    let (_, request) =
        submit(json!({"type": "address-change", "address": "gw1.testby.example:5500"})).await;
    assert_eq!(request["state"], "submitted", "{request}");
    let (status, body) = authority
        .officer(
            reqwest::Method::POST,
            &format!("/api/v1/management-requests/{}/decline", request["id"]),
            Some(json!({"reason": "the DNS name does not resolve"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        gw.conf
            .latest()
            .unwrap()
            .index
            .gateway(&GATEWAY.parse().unwrap())
            .unwrap()
            .address,
        peer_addr.to_string()
    );

    // The audit trail has every decision.
    let (_, events) = authority
        .officer(reqwest::Method::GET, "/api/v1/audit-events?limit=500", None)
        .await;
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "management_request.submit",
        "management_request.approved",
        "management_request.declined",
        "management_policy.set",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    running.stop().await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn onboarding_from_application_to_first_exchange_sqlite() {
    onboarding(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn onboarding_from_application_to_first_exchange_postgres() {
    onboarding(Backend::Postgres).await;
}
