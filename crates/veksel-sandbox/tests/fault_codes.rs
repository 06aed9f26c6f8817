//! Fault codes of the exchange path that no other test reaches, each produced from
//! the side that raises it: the provider's gateway refusing malformed messages from a
//! peer (a raw peer with real keys, so only the one thing each case breaks is wrong),
//! and either gateway without the signing key it needs. docs/reliability.md lists
//! every code with the test that produces it.

mod common;

use common::*;
use veksel_proto::descriptor::BodyDigest;
use veksel_sandbox::ORGS;

/// The provider's fault for a raw request, and that nothing of it was logged.
async fn refused(net: &Net, peer: &mut RawPeer, r: RawRequest, expected: &str) {
    let request_id = r.descriptor.request_id.clone();
    let (status, headers, body) = peer.send(r).await;
    assert_eq!(
        (
            status,
            headers.get("x-road-error").and_then(|v| v.to_str().ok())
        ),
        (500, Some(expected)),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["type"], expected, "{body}");
    let logged = message_log(net, POPULATION, &format!("request_id={request_id}")).await;
    assert!(logged.is_empty(), "{expected}: logged {logged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_refuses_each_malformed_peer_message_with_its_code() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let mut peer = RawPeer::connect(&net, MUNICIPALITY, POPULATION, None)
        .await
        .unwrap();
    // The raw peer's correct message is served, so each refusal is the case's own.
    let (status, _, body) = peer.send(peer.request(&net, "/fine")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // A service of a subsystem this gateway does not host.
    let mut r = peer.request(&net, "/x");
    let companies: veksel_id::ServiceId = format!("{}/companies", ORGS[TAX].subsystem_id())
        .parse()
        .unwrap();
    r.descriptor.target = format!("/r1/{companies}/12345678");
    r.descriptor.service = companies;
    refused(&net, &mut peer, r, "Server.ServerProxy.UnknownMember").await;

    // A body that is not the one the digest trailer names.
    let mut r = peer.request(&net, "/x");
    r.extra_trailers.push((
        "veksel-body-digest".into(),
        BodyDigest::of(&r.body).sha256.clone(),
    ));
    r.sent_body = Some(b"raw bodY".to_vec());
    refused(&net, &mut peer, r, "Server.ServerProxy.InvalidBodyDigest").await;

    // Not an r1 target.
    let mut r = peer.request(&net, "/x");
    r.descriptor.target = r.descriptor.target.replacen("/r1/", "/r2/", 1);
    refused(
        &net,
        &mut peer,
        r,
        "Server.ServerProxy.InvalidProtocolVersion",
    )
    .await;

    // More headers than a message may have.
    let mut r = peer.request(&net, "/x");
    r.extra_headers = (0..101).map(|i| (format!("x-h{i}"), "v".into())).collect();
    refused(&net, &mut peer, r, "Server.ServerProxy.TooLarge").await;

    // No client named.
    let mut r = peer.request(&net, "/x");
    r.omit_headers.push("x-road-client");
    refused(&net, &mut peer, r, "Server.ServerProxy.MissingHeaderField").await;

    // A member, not a subsystem, as the client.
    let mut r = peer.request(&net, "/x");
    r.descriptor.client = ORGS[MUNICIPALITY].member().parse().unwrap();
    refused(
        &net,
        &mut peer,
        r,
        "Server.ServerProxy.InvalidClientIdentifier",
    )
    .await;

    // An X-Road field longer than r1 allows.
    let mut r = peer.request(&net, "/x");
    r.descriptor.xroad_id = "x".repeat(veksel_proto::headers::MAX_XROAD_FIELD_LEN + 1);
    refused(&net, &mut peer, r, "Server.ServerProxy.BadRequest").await;

    // A body that breaks off: no answer can reach the peer (its stream is reset), so
    // the fault is the provider's monitoring record.
    let mut r = peer.request(&net, "/x");
    r.body_error = true;
    let request_id = r.descriptor.request_id.clone();
    let sent = peer.try_send(r).await;
    assert!(
        !matches!(sent, Ok((200, _, _))),
        "a broken body was served: {sent:?}"
    );
    let record = provider_records(&net, &request_id, 1).await.remove(0);
    assert_eq!(record["succeeded"], false, "{record}");
    assert_eq!(
        record["fault_code"], "Server.ServerProxy.NetworkError",
        "{record}"
    );
    assert!(
        message_log(&net, POPULATION, &format!("request_id={request_id}"))
            .await
            .is_empty()
    );

    // Still serving.
    let (status, _, _) = peer.send(peer.request(&net, "/after")).await;
    assert_eq!(status, 200);
    net.stop().await;
}

/// Takes every member signing key away from a running gateway, or gives them back.
fn signing_keys(gw: &veksel_gateway::Gateway, present: bool) {
    let current = gw.keys.get();
    let mut keys = veksel_gateway::KeyStore::load(&gw.dir).unwrap();
    keys.previous_auth = current.previous_auth.clone();
    if !present {
        keys.signers.clear();
    }
    gw.keys.set(keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_its_signing_key_refuses_on_its_side() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let persons = format!("{}/persons/0101701234", ORGS[POPULATION].subsystem_id());
    let muni = ORGS[MUNICIPALITY].subsystem_id();
    assert_eq!(net.r1(MUNICIPALITY, &muni, &persons).await.status(), 200);
    for (org, expected) in [
        (MUNICIPALITY, "Server.ClientProxy.InternalError"),
        (POPULATION, "Server.ServerProxy.InternalError"),
    ] {
        let gw = net.sandbox().gateway(org).unwrap().clone();
        let logged_before = message_log(&net, MUNICIPALITY, "limit=1000").await.len();
        signing_keys(&gw, false);
        let body = expect_fault(net.r1(MUNICIPALITY, &muni, &persons).await, 500, expected).await;
        assert!(
            body["message"].as_str().unwrap().contains("no signing key"),
            "{body}"
        );
        let logged = message_log(&net, MUNICIPALITY, "limit=1000").await.len();
        assert_eq!(logged, logged_before, "{expected}: nothing logged");
        signing_keys(&gw, true);
        assert_eq!(net.r1(MUNICIPALITY, &muni, &persons).await.status(), 200);
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_side_refuses_malformed_routing_headers() {
    let net = Net::start(Backend::Sqlite).await.unwrap();
    let url = format!(
        "{}/r1/{}/persons/0101701234",
        net.client_url(MUNICIPALITY),
        ORGS[POPULATION].subsystem_id()
    );
    let send = |client: String, security_server: Option<&'static str>| {
        let mut r = net.http.get(&url).header("X-Road-Client", client);
        if let Some(s) = security_server {
            r = r.header("X-Road-Security-Server", s);
        }
        r.send()
    };
    let muni = ORGS[MUNICIPALITY].subsystem_id();
    // A gateway id needs four parts.
    expect_fault(
        send(muni.clone(), Some("DEV/GOV")).await.unwrap(),
        400,
        "Client.InvalidSecurityServer",
    )
    .await;
    // A member calls through one of its subsystems, never as itself.
    expect_fault(
        send(ORGS[MUNICIPALITY].member(), None).await.unwrap(),
        400,
        "Client.InvalidClientIdentifier",
    )
    .await;
    assert_eq!(send(muni, None).await.unwrap().status(), 200);
    net.stop().await;
}
