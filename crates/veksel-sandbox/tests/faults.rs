//! Dependencies failing: the provider's system down or slow, the authority down, a
//! peer gateway restarting, the message log's database failing. Each gives a precise
//! fault, nothing is released that was not logged, and service resumes afterwards.

mod common;

use common::*;
use serde_json::json;
use veksel_sandbox::ORGS;
use veksel_store::sqlx;

fn muni() -> String {
    ORGS[MUNICIPALITY].subsystem_id()
}

/// Adds services to the population register and lets the municipality call them.
async fn add_services(net: &Net, services: &[(&str, serde_json::Value)]) {
    let (url, token) = net.admin(POPULATION);
    let client = ORGS[POPULATION].subsystem_id().replace('/', ":");
    let mut rules = vec![
        json!({"subject": {"type": "client", "id": muni()}, "service_code": "persons", "endpoint": {"method": "GET", "path": "/*"}}),
        json!({"subject": {"type": "global_group", "id": "DEV/sandbox-members"}, "service_code": "echo", "endpoint": {"method": "*", "path": "/**"}}),
    ];
    for (code, config) in services {
        let r = net
            .http
            .put(format!("{url}/api/v1/clients/{client}/services/{code}"))
            .bearer_auth(&token)
            .json(config)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
        rules.push(json!({"subject": {"type": "client", "id": muni()}, "service_code": code, "endpoint": {"method": "*", "path": "/**"}}));
    }
    let r = net
        .http
        .put(format!("{url}/api/v1/clients/{client}/access"))
        .bearer_auth(&token)
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

async fn backend_failures(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    // A closed port: nobody listens on 127.0.0.1:9.
    let diag = net.sandbox().info.ports.diagnostics_backend;
    add_services(
        &net,
        &[
            (
                "down",
                json!({"base_url": "http://127.0.0.1:9", "timeout_ms": 5000}),
            ),
            (
                "slow",
                json!({"base_url": format!("http://127.0.0.1:{diag}"), "timeout_ms": 300}),
            ),
            (
                "off",
                json!({"base_url": format!("http://127.0.0.1:{diag}"), "enabled": false}),
            ),
        ],
    )
    .await;
    let pop = ORGS[POPULATION].subsystem_id();
    let body = expect_fault(
        net.r1(MUNICIPALITY, &muni(), &format!("{pop}/down/x"))
            .await,
        500,
        "Server.ServerProxy.ServiceFailed",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("cannot reach"),
        "{body}"
    );
    let body = expect_fault(
        net.r1(MUNICIPALITY, &muni(), &format!("{pop}/slow/sleep/3000"))
            .await,
        500,
        "Server.ServerProxy.ServiceFailed",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("within 300 ms"),
        "{body}"
    );
    expect_fault(
        net.r1(MUNICIPALITY, &muni(), &format!("{pop}/off/x")).await,
        500,
        "Server.ServerProxy.ServiceDisabled",
    )
    .await;
    // The same slow backend answers when it is quick enough.
    assert_eq!(
        net.r1(MUNICIPALITY, &muni(), &format!("{pop}/slow/sleep/10"))
            .await
            .status(),
        200
    );
    net.stop().await;
}
both_backends!(
    provider_system_down_or_slow_gives_service_failed,
    backend_failures
);

async fn authority_down(b: Backend) {
    let Some(mut net) = Net::start(b).await else {
        return;
    };
    let companies = format!("{}/companies/12345678", ORGS[TAX].subsystem_id());
    net.sandbox.as_mut().unwrap().stop_authority().await;
    // The gateways keep exchanging while their configuration is valid…
    for _ in 0..3 {
        assert_eq!(
            net.r1(MUNICIPALITY, &muni(), &companies).await.status(),
            200
        );
    }
    // …a refresh fails and says so…
    let gw = net.sandbox().gateway(MUNICIPALITY).unwrap().clone();
    assert!(gw.conf.refresh().await.is_err());
    assert!(gw.conf.last_error().is_some());
    // …and once it expires they refuse, naming the cause.
    net.clock.advance(601_000);
    let body = expect_fault(
        net.r1(MUNICIPALITY, &muni(), &companies).await,
        500,
        "Server.ClientProxy.OutdatedGlobalConf",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not been reachable"),
        "{body}"
    );
    net.stop().await;
}
both_backends!(
    authority_down_exchanges_continue_until_the_configuration_expires,
    authority_down
);

async fn peer_restart(b: Backend) {
    let Some(mut net) = Net::start(b).await else {
        return;
    };
    let companies = format!("{}/companies/12345678", ORGS[TAX].subsystem_id());
    assert_eq!(
        net.r1(MUNICIPALITY, &muni(), &companies).await.status(),
        200
    );
    net.sandbox.as_mut().unwrap().stop_gateway(TAX).await;
    expect_fault(
        net.r1(MUNICIPALITY, &muni(), &companies).await,
        500,
        "Server.ClientProxy.NetworkError",
    )
    .await;
    net.sandbox
        .as_mut()
        .unwrap()
        .start_gateway(TAX)
        .await
        .unwrap();
    // The pooled connection to the old process is gone; the next request makes a new one.
    assert_eq!(
        net.r1(MUNICIPALITY, &muni(), &companies).await.status(),
        200
    );
    net.stop().await;
}
both_backends!(
    peer_gateway_restart_fails_cleanly_then_recovers,
    peer_restart
);

async fn database_failure(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let companies = format!("{}/companies/12345678", ORGS[TAX].subsystem_id());
    let persons = format!("{}/persons/0101701234", ORGS[POPULATION].subsystem_id());
    // The consumer's message log cannot be written: no data is released.
    let muni_db = net.sandbox().gateway(MUNICIPALITY).unwrap().db.clone();
    sqlx::query("ALTER TABLE message_log RENAME TO message_log_away")
        .execute(muni_db.pool())
        .await
        .unwrap();
    let resp = net.r1(MUNICIPALITY, &muni(), &companies).await;
    let body = expect_fault(resp, 500, "Server.ClientProxy.DatabaseError").await;
    assert!(body.get("name").is_none(), "no provider data in the fault");
    sqlx::query("ALTER TABLE message_log_away RENAME TO message_log")
        .execute(muni_db.pool())
        .await
        .unwrap();
    assert_eq!(
        net.r1(MUNICIPALITY, &muni(), &companies).await.status(),
        200
    );

    // The provider's message log cannot be written: it withholds the response.
    let pop_db = net.sandbox().gateway(POPULATION).unwrap().db.clone();
    sqlx::query("ALTER TABLE message_log RENAME TO message_log_away")
        .execute(pop_db.pool())
        .await
        .unwrap();
    expect_fault(
        net.r1(MUNICIPALITY, &muni(), &persons).await,
        500,
        "Server.ServerProxy.DatabaseError",
    )
    .await;
    sqlx::query("ALTER TABLE message_log_away RENAME TO message_log")
        .execute(pop_db.pool())
        .await
        .unwrap();
    assert_eq!(net.r1(MUNICIPALITY, &muni(), &persons).await.status(), 200);

    // Whatever was refused left no half-written log behind.
    for org in [MUNICIPALITY, POPULATION] {
        let dir = &net.sandbox().info.gateways[org].data_dir;
        let report = veksel_gateway::verify_log(dir).await.unwrap().unwrap();
        assert!(report.records >= 1);
    }
    net.stop().await;
}
both_backends!(message_log_database_failure_fails_closed, database_failure);

/// The message log's database fails while a streamed answer is under way: on the
/// consumer's side, then on the provider's. Either way the information system never
/// gets the whole body, the side that failed keeps no record and records the fault in
/// its monitoring, and the next exchange is served and logged.
async fn database_failure_mid_stream(b: Backend) {
    use futures_util::StreamExt;
    let Some(net) = Net::start(b).await else {
        return;
    };
    // The service pauses after the first block: the database fails in that pause,
    // before either gateway has seen the end of the body.
    const BIG: u64 = 4 * 1024 * 1024;
    let url = format!(
        "{}/r1/{}/echo/bytes/{BIG}?pause_ms=1000",
        net.client_url(MUNICIPALITY),
        ORGS[POPULATION].subsystem_id()
    );
    for (failing, fault) in [
        (MUNICIPALITY, "Server.ClientProxy.DatabaseError"),
        (POPULATION, "Server.ServerProxy.DatabaseError"),
    ] {
        let db = net.sandbox().gateway(failing).unwrap().db.clone();
        let resp = net
            .http
            .get(&url)
            .header("X-Road-Client", muni())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let request_id = resp.headers()["x-road-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let mut stream = resp.bytes_stream();
        let mut received = stream.next().await.unwrap().unwrap().len() as u64;
        sqlx::query("ALTER TABLE message_log RENAME TO message_log_away")
            .execute(db.pool())
            .await
            .unwrap();
        let mut failed = false;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => received += c.len() as u64,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "{fault}: the stream must end in an error");
        assert!(
            received < BIG,
            "{fault}: {received} of {BIG} bytes released"
        );
        sqlx::query("ALTER TABLE message_log_away RENAME TO message_log")
            .execute(db.pool())
            .await
            .unwrap();
        // The side that failed keeps no record; a provider whose log worked keeps its
        // own (it signed and committed the answer before the consumer's log failed).
        for org in [MUNICIPALITY, POPULATION] {
            let records = message_log(&net, org, &format!("request_id={request_id}")).await;
            let expected = usize::from(failing == MUNICIPALITY && org == POPULATION);
            assert_eq!(
                records.len(),
                expected,
                "{fault}: gateway {org} logged {records:?}"
            );
        }
        // The failing side's monitoring names the fault (written behind the exchange).
        let (admin, token) = net.admin(failing);
        let mut seen = serde_json::Value::Null;
        for _ in 0..50 {
            let records: Vec<serde_json::Value> = get_json(
                &net,
                &format!("{admin}/api/v1/op-monitoring?request_id={request_id}"),
                &token,
            )
            .await;
            if let Some(r) = records.into_iter().next() {
                seen = r;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(seen["fault_code"], fault, "{seen}");
        assert_eq!(seen["succeeded"], false);
    }
    // Service resumes, and both logs verify.
    let persons = format!("{}/persons/0101701234", ORGS[POPULATION].subsystem_id());
    assert_eq!(net.r1(MUNICIPALITY, &muni(), &persons).await.status(), 200);
    for org in [MUNICIPALITY, POPULATION] {
        let dir = &net.sandbox().info.gateways[org].data_dir;
        veksel_gateway::verify_log(dir).await.unwrap().unwrap();
    }
    net.stop().await;
}
both_backends!(
    message_log_database_failure_mid_stream_withholds_the_end,
    database_failure_mid_stream
);
