//! The message log is time-stamped in batches by the authority's RFC 3161 service:
//! stamps verify with openssl and with `veksel log verify`, a changed stamp or root is
//! caught, and when no TSA answers the gateway fails closed or keeps serving, as
//! configured, saying so in `/readyz`.

mod common;

use common::*;
use std::process::Command;
use veksel_gateway::merklelog;
use veksel_gateway::stamper;
use veksel_sandbox::ORGS;
use veksel_store::sqlx;
use veksel_verify::log::LogVerifyError;

fn muni() -> String {
    ORGS[MUNICIPALITY].subsystem_id()
}

fn companies() -> String {
    format!("{}/companies/12345678", ORGS[TAX].subsystem_id())
}

async fn stamps_verify(b: Backend) {
    // These tests stamp by hand and count what is stamped: the periodic stamper must
    // not run in between.
    let Some(net) = Net::start_with(b, |o| o.stamp_interval_secs = 3600).await else {
        return;
    };
    for _ in 0..5 {
        assert_eq!(
            net.r1(MUNICIPALITY, &muni(), &companies()).await.status(),
            200
        );
    }
    let gw = net.sandbox().gateway(MUNICIPALITY).unwrap().clone();
    stamper::stamp_and_record(&gw).await;
    let status = gw.stamper.status();
    assert_eq!(status.stamped_size, 5, "{status:?}");
    assert!(status.failing_since_ms.is_none());
    // Nothing new: no second stamp.
    stamper::stamp_and_record(&gw).await;
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM log_stamps")
        .fetch_one(gw.db.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(
        net.r1(MUNICIPALITY, &muni(), &companies()).await.status(),
        200
    );
    stamper::stamp_and_record(&gw).await;
    assert_eq!(gw.stamper.status().stamped_size, 6);

    let dir = net.sandbox().info.gateways[MUNICIPALITY].data_dir.clone();
    let report = veksel_gateway::verify_log(&dir).await.unwrap().unwrap();
    assert_eq!((report.records, report.stamps_checked), (6, 2));

    // openssl checks a stamp over the checkpoint text, with the network's CA.
    let (size, root, token): (i64, Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT size, root, token FROM log_stamps ORDER BY size LIMIT 1")
            .fetch_one(gw.db.pool())
            .await
            .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let checkpoint = veksel_merkle::checkpoint::Checkpoint {
        origin: stamper::origin(gw.id()),
        size: size as u64,
        root: root.clone().try_into().unwrap(),
        extensions: vec![],
    };
    std::fs::write(scratch.path().join("checkpoint"), checkpoint.body()).unwrap();
    std::fs::write(scratch.path().join("token.der"), &token).unwrap();
    let ca = net.dir.path().join("authority/ca.pem");
    let out = Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(scratch.path().join("token.der"))
        .arg("-data")
        .arg(scratch.path().join("checkpoint"))
        .arg("-CAfile")
        .arg(&ca)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("Verification: OK"),
        "{text}"
    );

    // A stamp whose root was replaced, or whose token was altered, is caught.
    let config = veksel_gateway::read_config(&dir).unwrap();
    let db = veksel_gateway::open_db(&dir, &config).await.unwrap();
    let origin = stamper::origin(&config.id);
    let gw_archive_dir = config.archive_dir(&dir);
    let roots = gw.conf.latest().unwrap().roots.clone();
    sqlx::query("UPDATE log_stamps SET root = $1 WHERE size = $2")
        .bind(vec![0u8; 32])
        .bind(size)
        .execute(db.pool())
        .await
        .unwrap();
    assert!(matches!(
        merklelog::verify(&db, &gw_archive_dir, &origin, Some(&roots)).await,
        Err(LogVerifyError::Root { .. })
    ));
    sqlx::query("UPDATE log_stamps SET root = $1 WHERE size = $2")
        .bind(root)
        .bind(size)
        .execute(db.pool())
        .await
        .unwrap();
    let mut bad = token.clone();
    let at = bad.len() - 20;
    bad[at] ^= 1;
    sqlx::query("UPDATE log_stamps SET token = $1 WHERE size = $2")
        .bind(bad)
        .bind(size)
        .execute(db.pool())
        .await
        .unwrap();
    let err = merklelog::verify(&db, &gw_archive_dir, &origin, Some(&roots))
        .await
        .unwrap_err();
    assert!(matches!(err, LogVerifyError::Stamp { .. }), "{err}");
    sqlx::query("UPDATE log_stamps SET token = $1 WHERE size = $2")
        .bind(token)
        .bind(size)
        .execute(db.pool())
        .await
        .unwrap();
    assert!(
        merklelog::verify(&db, &gw_archive_dir, &origin, Some(&roots))
            .await
            .is_ok()
    );
    db.close().await;
    net.stop().await;
}
both_backends!(
    message_log_stamps_verify_with_openssl_and_veksel,
    stamps_verify
);

fn set_stamp_policy(dir: &std::path::Path, mode: &str) {
    edit_gateway_config(dir, |config| {
        config["stamp_failure_mode"] = serde_json::Value::String(mode.into());
        config["stamp_failure_limit_secs"] = serde_json::json!(0);
    });
}

async fn tsa_down(b: Backend) {
    let Some(mut net) = Net::start(b).await else {
        return;
    };
    // The municipality fails closed, the population register keeps serving; both allow
    // no grace period so the test does not wait.
    let sandbox = net.sandbox.take().unwrap();
    sandbox.stop().await;
    set_stamp_policy(&net.dir.path().join("municipality"), "fail-closed");
    set_stamp_policy(&net.dir.path().join("population"), "keep-serving");
    // The tax agency fails closed too, but its stamping fails only later in the test.
    set_stamp_policy(&net.dir.path().join("tax"), "fail-closed");
    net.sandbox = Some(
        veksel_sandbox::Sandbox::start(veksel_sandbox::SandboxOptions::new(
            net.dir.path().to_owned(),
        ))
        .await
        .unwrap(),
    );

    let persons = format!("{}/persons/0101701234", ORGS[POPULATION].subsystem_id());
    assert_eq!(
        net.r1(MUNICIPALITY, &muni(), &companies()).await.status(),
        200
    );
    assert_eq!(
        net.r1(TAX, &ORGS[TAX].subsystem_id(), &persons)
            .await
            .status(),
        200
    );
    net.sandbox.as_mut().unwrap().stop_authority().await;
    for org in [MUNICIPALITY, POPULATION] {
        let gw = net.sandbox().gateway(org).unwrap().clone();
        stamper::stamp_and_record(&gw).await;
        assert!(gw.stamper.status().failing_since_ms.is_some());
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    let body = expect_fault(
        net.r1(MUNICIPALITY, &muni(), &companies()).await,
        500,
        "Server.ClientProxy.TimestampingFailed",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("time-stamping"),
        "{body}"
    );
    let (url, _) = net.admin(MUNICIPALITY);
    let ready = net.http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        ready
            .text()
            .await
            .unwrap()
            .contains("time-stamping has failed")
    );

    assert_eq!(
        net.r1(TAX, &ORGS[TAX].subsystem_id(), &persons)
            .await
            .status(),
        200,
        "keep-serving"
    );
    let (url, _) = net.admin(POPULATION);
    let ready = net.http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().await.unwrap().contains("warnings"));

    // A provider that fails closed refuses on its side: the keep-serving population
    // register sends, the tax agency's gateway refuses.
    let tax = net.sandbox().gateway(TAX).unwrap().clone();
    stamper::stamp_and_record(&tax).await;
    assert!(tax.stamper.status().failing_since_ms.is_some());
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    expect_fault(
        net.r1(POPULATION, &ORGS[POPULATION].subsystem_id(), &companies())
            .await,
        500,
        "Server.ServerProxy.TimestampingFailed",
    )
    .await;
    net.stop().await;
}
both_backends!(
    when_no_tsa_answers_the_gateway_fails_closed_or_keeps_serving_as_configured,
    tsa_down
);
