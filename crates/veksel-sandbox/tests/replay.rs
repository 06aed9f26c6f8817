//! The replay guard without a commit of its own (msglog::replay): a request id is
//! checked in memory and made durable with the exchange's record. A replay is refused
//! after a restart (ids come back from the database), and, with two nodes of one
//! gateway sharing a PostgreSQL database, a replay sent to the other node is refused
//! at the latest when its record would commit: with `replay_claim: memory` the
//! provider's system may see it twice but its answer is withheld and nothing is logged
//! twice; with `replay_claim: database` it is refused before the system is called.

mod common;

use common::*;
use veksel_gateway::Listeners;

const REPLAYED: &str = "Server.ServerProxy.ReplayedMessage";

/// The fault of a refused request: a fault response's, or that of an answer signed
/// in its head whose body the provider withheld (its `veksel-error` trailer).
fn error_of(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get("x-road-error")
        .or_else(|| headers.get("veksel-error"))
        .and_then(|v| v.to_str().ok())
}

async fn after_restart(b: Backend) {
    let Some(mut net) = Net::start(b).await else {
        return;
    };
    let mut peer = RawPeer::connect(&net, MUNICIPALITY, POPULATION, None)
        .await
        .unwrap();
    let request = peer.request(&net, "/once");
    let (status, headers, _) = peer.send(request.clone()).await;
    assert_eq!(status, 200, "{headers:?}");
    let (_, headers, _) = peer.send(request.clone()).await;
    assert_eq!(error_of(&headers), Some(REPLAYED), "a replay at once");
    let sb = net.sandbox.as_mut().unwrap();
    sb.stop_gateway(POPULATION).await;
    sb.start_gateway(POPULATION).await.unwrap();
    let mut peer = RawPeer::connect(&net, MUNICIPALITY, POPULATION, None)
        .await
        .unwrap();
    let (_, headers, body) = peer.send(request).await;
    assert_eq!(
        error_of(&headers),
        Some(REPLAYED),
        "a replay after a restart: {}",
        String::from_utf8_lossy(&body)
    );
    // A new request is served.
    let (status, _, _) = peer.send(peer.request(&net, "/again")).await;
    assert_eq!(status, 200);
    net.stop().await;
}
both_backends!(a_replay_is_refused_after_a_restart, after_restart);

/// Starts a second node of the population gateway on other ports, sharing the first
/// node's PostgreSQL database; returns it and its peer address.
async fn second_node(net: &Net, mode: &str) -> (veksel_gateway::RunningGateway, String) {
    let dir = net.sandbox().info.gateways[POPULATION].data_dir.clone();
    // Both nodes read this configuration; the first one has read it already.
    edit_gateway_config(&dir, |c| c["replay_claim"] = mode.into());
    let listen = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let node = veksel_gateway::start(
        &dir,
        net.clock.clone(),
        Listeners {
            client: Some(listen().await),
            peer: Some(listen().await),
            admin: Some(listen().await),
            client_tls: None,
        },
    )
    .await
    .unwrap();
    let address = node.peer_addr.to_string();
    (node, address)
}

async fn two_nodes(mode: &str) {
    let Some(net) = Net::start(Backend::Postgres).await else {
        return;
    };
    let (node, address) = second_node(&net, mode).await;
    let mut first = RawPeer::connect(&net, MUNICIPALITY, POPULATION, None)
        .await
        .unwrap();
    let mut second = RawPeer::connect_to(&net, MUNICIPALITY, &address, None)
        .await
        .unwrap();
    let request = first.request(&net, "/shared");
    let request_id = request.descriptor.request_id.clone();
    let (status, headers, _) = first.send(request.clone()).await;
    assert_eq!(status, 200, "{headers:?}");
    let (status, headers, body) = second.send(request).await;
    assert_eq!(
        error_of(&headers),
        Some(REPLAYED),
        "{mode}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    // Withheld: not one byte of the system's answer to the replay leaves the gateway.
    assert!(body.is_empty() || status != 200, "{mode}: {body:?}");
    let logged = message_log(&net, POPULATION, &format!("request_id={request_id}")).await;
    assert_eq!(logged.len(), 1, "{mode}: logged once: {logged:?}");
    let records = provider_records(&net, &request_id, 2).await;
    let refused = records
        .iter()
        .find(|r| r["succeeded"] == false)
        .unwrap_or_else(|| panic!("{mode}: {records:?}"));
    assert_eq!(refused["fault_code"], REPLAYED, "{refused}");
    let called_system = !refused["request_out_ts"].is_null();
    match mode {
        // Found at commit: the system was called, its answer withheld.
        "memory" => assert!(called_system, "{refused}"),
        // Found before the system was called.
        _ => assert!(!called_system, "{refused}"),
    }
    node.stop().await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_a_database_refuse_a_replay_at_commit() {
    two_nodes("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_in_the_database_refuse_a_replay_before_the_call() {
    two_nodes("database").await;
}
