//! The message log is a Merkle log: `verify` recomputes it and names the first record
//! that was modified, removed, inserted or moved — on SQLite and PostgreSQL.

mod common;

use common::*;
use veksel_gateway::merklelog;
use veksel_sandbox::ORGS;
use veksel_store::sqlx::{self, Row};
use veksel_verify::log::{LeafRecord, LogVerifyError};

/// These logs have no archive files.
const NO_ARCHIVES: &str = "/nonexistent/veksel-archives";

async fn run(db: &veksel_store::Db, sql: &str) {
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(sqlx::AssertSqlSafe(stmt.to_owned()))
            .execute(db.pool())
            .await
            .unwrap();
    }
}

async fn restore(db: &veksel_store::Db) {
    run(
        db,
        "DELETE FROM message_log; INSERT INTO message_log SELECT * FROM ml_backup",
    )
    .await;
    assert!(
        merklelog::verify(db, NO_ARCHIVES.as_ref(), "x", None)
            .await
            .is_ok(),
        "restored log verifies again"
    );
}

async fn tamper_detection(b: Backend) {
    let Some(mut net) = Net::start(b).await else {
        return;
    };
    let client = ORGS[MUNICIPALITY].subsystem_id();
    let n = 12;
    for i in 0..n {
        let path = if i % 2 == 0 {
            format!("{}/companies/1234567{i}", ORGS[TAX].subsystem_id())
        } else {
            format!("{}/persons/010170123{i}", ORGS[POPULATION].subsystem_id())
        };
        assert_eq!(net.r1(MUNICIPALITY, &client, &path).await.status(), 200);
    }
    let dir = net.sandbox().info.gateways[MUNICIPALITY].data_dir.clone();
    let sandbox = net.sandbox.take().unwrap();
    sandbox.stop().await;
    let config = veksel_gateway::read_config(&dir).unwrap();
    let db = veksel_gateway::open_db(&dir, &config).await.unwrap();

    let report = merklelog::verify(&db, NO_ARCHIVES.as_ref(), "x", None)
        .await
        .unwrap();
    assert_eq!(report.records, n);
    assert!(report.roots_checked >= 1);
    assert_eq!(report.uncovered, 0);
    let roots: Vec<(i64,)> = sqlx::query_as("SELECT size FROM log_roots")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(!roots.is_empty());
    run(&db, "CREATE TABLE ml_backup AS SELECT * FROM message_log").await;

    // A modified field.
    run(&db, "UPDATE message_log SET status = 201 WHERE seq = 3").await;
    assert!(matches!(
        merklelog::verify(&db, NO_ARCHIVES.as_ref(), "x", None).await,
        Err(LogVerifyError::Record { seq: 3, .. })
    ));
    restore(&db).await;

    // A modified field with its leaf hash recomputed to match: the tree roots catch it.
    let row = sqlx::query("SELECT request_id FROM message_log WHERE seq = 4")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let request_id: String = row.try_get(0).unwrap();
    let records = message_log_rows(&db, 4).await;
    let mut leaf = records;
    leaf.xroad_id = "rewritten-history".into();
    sqlx::query("UPDATE message_log SET xroad_id = $1, leaf_hash = $2 WHERE seq = 4")
        .bind(&leaf.xroad_id)
        .bind(leaf.hash().to_vec())
        .execute(db.pool())
        .await
        .unwrap();
    let err = merklelog::verify(&db, NO_ARCHIVES.as_ref(), "x", None)
        .await
        .unwrap_err();
    assert!(matches!(err, LogVerifyError::Root { .. }), "{err}");
    assert_eq!(leaf.request_id, request_id);
    restore(&db).await;

    // A changed signed descriptor with a matching leaf hash: the signature fails.
    let mut leaf = message_log_rows(&db, 6).await;
    leaf.request_descriptor = leaf.request_descriptor.replacen("\"GET\"", "\"DELETE\"", 1);
    leaf.method = "DELETE".into();
    // Descriptors are stored packed: the attacker rewrites them there.
    sqlx::query(
        "UPDATE message_log SET descriptors_z = $1, method = $2, leaf_hash = $3 WHERE seq = 6",
    )
    .bind(merklelog::pack_descriptors(
        leaf.request_descriptor.as_bytes(),
        leaf.response_descriptor.as_bytes(),
    ))
    .bind(&leaf.method)
    .bind(leaf.hash().to_vec())
    .execute(db.pool())
    .await
    .unwrap();
    let err = merklelog::verify(&db, NO_ARCHIVES.as_ref(), "x", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LogVerifyError::Record { seq: 6, reason, .. } if reason.contains("signature")),
        "{err}"
    );
    restore(&db).await;

    // A removed record.
    run(&db, "DELETE FROM message_log WHERE seq = 5").await;
    assert!(matches!(
        merklelog::verify(&db, NO_ARCHIVES.as_ref(), "x", None).await,
        Err(LogVerifyError::Position { seq: 5, .. })
    ));
    restore(&db).await;

    // Two records swapped.
    run(&db, "UPDATE message_log SET seq = -1 WHERE seq = 2; UPDATE message_log SET seq = 2 WHERE seq = 7; UPDATE message_log SET seq = 7 WHERE seq = -1").await;
    assert!(matches!(
        merklelog::verify(&db, NO_ARCHIVES.as_ref(), "x", None).await,
        Err(LogVerifyError::Record { seq: 2, .. })
    ));
    restore(&db).await;

    // A record inserted (a copy of record 0 placed at 3, the rest moved up).
    run(
        &db,
        "UPDATE message_log SET seq = seq + 1000000 WHERE seq >= 3; UPDATE message_log SET seq = seq - 999999 WHERE seq >= 1000000",
    )
    .await;
    sqlx::query(
        "INSERT INTO message_log (request_id, side, xroad_id, client, service, method, target, status, consumer_gateway,
            provider_gateway, request_descriptor, request_signature, response_descriptor, response_signature,
            request_body, response_body, body_note, request_size, response_size, created_at, logged_at, seq, leaf_hash)
         SELECT request_id || '-copy', side, xroad_id, client, service, method, target, status, consumer_gateway,
            provider_gateway, request_descriptor, request_signature, response_descriptor, response_signature,
            request_body, response_body, body_note, request_size, response_size, created_at, logged_at, 3, leaf_hash
         FROM ml_backup WHERE seq = 0",
    )
    .execute(db.pool())
    .await
    .unwrap();
    assert!(matches!(
        merklelog::verify(&db, NO_ARCHIVES.as_ref(), "x", None).await,
        Err(LogVerifyError::Record { seq: 3, .. })
    ));
    restore(&db).await;

    // The newest record cut off.
    run(
        &db,
        &format!("DELETE FROM message_log WHERE seq = {}", n - 1),
    )
    .await;
    let err = merklelog::verify(&db, NO_ARCHIVES.as_ref(), "x", None)
        .await
        .unwrap_err();
    assert!(matches!(err, LogVerifyError::Position { .. }), "{err}");
    restore(&db).await;

    run(&db, "DROP TABLE ml_backup").await;
    db.close().await;
    net.stop().await;
}
both_backends!(
    message_log_verification_names_the_first_tampered_record,
    tamper_detection
);

async fn message_log_rows(db: &veksel_store::Db, seq: i64) -> LeafRecord {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM message_log WHERE seq = $1",
        merklelog::LEAF_COLUMNS
    )))
    .bind(seq)
    .fetch_one(db.pool())
    .await
    .unwrap();
    merklelog::leaf_from_row(&row).unwrap().0
}
