//! Retention: old, time-stamped message-log records move into hash-linked archive
//! files and leave the database; `log verify` checks archives and database as one
//! log, evidence can still be exported for archived exchanges, a copied archive
//! directory verifies on its own with the anchor, and every kind of tampering with the
//! files is named.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::Path;
use veksel_gateway::{archive, stamper};
use veksel_sandbox::ORGS;
use veksel_store::sqlx;
use veksel_verify::evidence;
use veksel_verify::log::LogVerifyError;

async fn exchanges(net: &Net, n: usize) -> Vec<String> {
    let muni = ORGS[MUNICIPALITY].subsystem_id();
    let mut ids = Vec::new();
    for i in 0..n {
        let r = net
            .r1(
                MUNICIPALITY,
                &muni,
                &format!(
                    "{}/persons/010170123{}",
                    ORGS[POPULATION].subsystem_id(),
                    i % 10
                ),
            )
            .await;
        assert_eq!(r.status(), 200);
        ids.push(
            r.headers()["x-road-request-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids
}

async fn count(net: &Net, table: &str) -> i64 {
    let db = &net.sandbox().gateway(MUNICIPALITY).unwrap().db;
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(db.pool())
        .await
        .unwrap();
    n
}

/// One round as the running gateway does it, with records counted old after 1 s.
async fn archive_round(net: &Net) -> Vec<archive::Archived> {
    let gw = net.sandbox().gateway(MUNICIPALITY).unwrap();
    let mut config = gw.config.clone();
    config.archive_after_secs = 1;
    config.archive_max_records = 1000;
    let jws = gw.conf.latest().unwrap().jws.clone();
    archive::round(
        &gw.db,
        &gw.archive_dir,
        &config,
        &jws,
        net.clock.now_ms() + 2000,
    )
    .await
    .unwrap()
}

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text
}

fn gzip(path: &Path, text: &str) {
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

async fn archiving(b: Backend) {
    // These tests stamp by hand and count what is stamped: the periodic stamper must
    // not run in between.
    let Some(net) = Net::start_with(b, |o| o.stamp_interval_secs = 3600).await else {
        return;
    };
    let gw = net.sandbox().gateway(MUNICIPALITY).unwrap().clone();
    let dir = net.sandbox().info.gateways[MUNICIPALITY].data_dir.clone();
    let anchor = veksel_gateway::read_anchor(&dir).unwrap();

    let first_ids = exchanges(&net, 5).await;
    // Young records stay, whatever their stamps.
    stamper::stamp_and_record(&gw).await;
    assert_eq!(gw.stamper.status().stamped_size, 5);
    let gw_config = gw.config.clone();
    let jws = gw.conf.latest().unwrap().jws.clone();
    assert!(
        archive::round(
            &gw.db,
            &gw.archive_dir,
            &gw_config,
            &jws,
            net.clock.now_ms()
        )
        .await
        .unwrap()
        .is_empty(),
        "records younger than archive_after_secs stay in the database"
    );
    // Old records move, up to the last time stamp: an archive ends where a stamp
    // covers the log.
    exchanges(&net, 3).await;
    let written = archive_round(&net).await;
    assert_eq!(written.len(), 1);
    assert_eq!((written[0].first_seq, written[0].next_seq), (0, 5));
    assert_eq!(count(&net, "message_log").await, 3);
    assert_eq!(count(&net, "log_leaves").await, 5);
    assert!(
        archive_round(&net).await.is_empty(),
        "nothing more is stamped"
    );
    stamper::stamp_and_record(&gw).await;
    let last_ids = exchanges(&net, 2).await;
    let written = archive_round(&net).await;
    assert_eq!(written.len(), 1);
    assert_eq!((written[0].first_seq, written[0].next_seq), (5, 8));
    assert_eq!(count(&net, "message_log").await, 2);

    // The whole log — two files, then the database — verifies as one.
    let report = veksel_gateway::verify_log(&dir).await.unwrap().unwrap();
    assert_eq!((report.records, report.archived), (10, 8));
    assert_eq!(report.stamps_checked, 2);

    // Evidence for an archived exchange and for one still in the database.
    for (id, position) in [(&first_ids[0], 0), (&last_ids[1], 9)] {
        stamper::stamp_and_record(&gw).await;
        let bundle = veksel_gateway::export_evidence(&dir, id, "consumer")
            .await
            .unwrap();
        let proven = evidence::verify(&bundle, &anchor).unwrap();
        assert_eq!(proven.position, position);
        assert_eq!(&proven.request_id, id);
    }

    // A copy of the archive directory verifies with nothing but the anchor.
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("copy");
    copy_dir(&gw.archive_dir, &copy);
    let r = veksel_verify::archive::verify_dir(&copy, &anchor).unwrap();
    assert_eq!(
        (r.files.len(), r.records, r.first_seq, r.next_seq),
        (2, 8, 0, 8)
    );
    assert_eq!(r.stamps_checked, 2);

    let file1 = gw.archive_dir.join("000000000000-000000000005.jsonl.gz");
    let file2 = gw.archive_dir.join("000000000005-000000000008.jsonl.gz");
    let original1 = std::fs::read(&file1).unwrap();
    let verify_db = || async { veksel_gateway::verify_log(&dir).await.unwrap() };

    // A changed record: named exactly against the database. Standalone, a change to
    // what was signed names the record; any other change shows as a root that no
    // longer matches the time stamp.
    let text = gunzip(&file1);
    let change = |from: &str, to: &str| -> String {
        let changed = text
            .lines()
            .map(|l| {
                if l.contains("\"seq\":2,") {
                    l.replacen(from, to, 1)
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        assert_ne!(changed, text, "{from}");
        changed
    };
    let copy1 = copy.join("000000000000-000000000005.jsonl.gz");
    for (from, to, standalone_is_root) in [
        ("\"status\":200", "\"status\":204", false),
        ("\"logged_at\":1", "\"logged_at\":2", true),
    ] {
        let changed = change(from, to);
        gzip(&file1, &changed);
        match verify_db().await {
            Err(LogVerifyError::Record { seq: 2, .. }) => {}
            other => panic!("expected record 2 to be named: {other:?}"),
        }
        gzip(&copy1, &changed);
        match (
            veksel_verify::archive::verify_dir(&copy, &anchor),
            standalone_is_root,
        ) {
            (Err(LogVerifyError::Record { seq: 2, .. }), false) => {}
            (Err(LogVerifyError::Root { size: 5 }), true) => {}
            other => panic!("{from}: {other:?}"),
        }
    }

    // The same content compressed differently is a different file: the recorded hash
    // catches it.
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&file1).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
    assert_ne!(std::fs::read(&file1).unwrap(), original1);
    match verify_db().await {
        Err(LogVerifyError::Archive { reason, .. }) if reason.contains("SHA-256") => {}
        other => panic!("expected a file hash mismatch: {other:?}"),
    }
    std::fs::write(&file1, &original1).unwrap();
    assert!(verify_db().await.is_ok());

    // Bytes appended, a cut-off file, a missing file.
    let mut appended = original1.clone();
    appended.extend_from_slice(b"tail");
    std::fs::write(&file1, &appended).unwrap();
    assert!(matches!(
        verify_db().await,
        Err(LogVerifyError::Archive { .. })
    ));
    std::fs::write(&file1, &original1[..original1.len() / 2]).unwrap();
    assert!(matches!(
        verify_db().await,
        Err(LogVerifyError::Archive { .. })
    ));
    std::fs::remove_file(&file1).unwrap();
    match verify_db().await {
        Err(LogVerifyError::Archive { file, reason }) => {
            assert!(file.starts_with("000000000000-"), "{file}");
            assert!(reason.contains("cannot be read"), "{reason}");
        }
        other => panic!("expected the missing file to be named: {other:?}"),
    }
    std::fs::write(&file1, &original1).unwrap();

    // Standalone, files out of their chain: the second one replaced by another log's
    // file at the same positions is caught by the chain of file hashes.
    copy_dir(&gw.archive_dir, &copy);
    assert!(veksel_verify::archive::verify_dir(&copy, &anchor).is_ok());
    let original2 = std::fs::read(&file2).unwrap();
    let header_changed =
        gunzip(&file2).replacen("\"previous_sha256\":\"", "\"previous_sha256\":\"00", 1);
    gzip(
        &copy.join("000000000005-000000000008.jsonl.gz"),
        &header_changed,
    );
    match veksel_verify::archive::verify_dir(&copy, &anchor) {
        Err(LogVerifyError::Archive { file, reason }) => {
            assert!(file.starts_with("000000000005-"), "{file}");
            assert!(reason.contains("file before it"), "{reason}");
        }
        other => panic!("expected a broken chain: {other:?}"),
    }
    std::fs::write(copy.join("000000000005-000000000008.jsonl.gz"), &original2).unwrap();
    assert!(veksel_verify::archive::verify_dir(&copy, &anchor).is_ok());

    // A database that no longer agrees with its files.
    let db = &gw.db;
    sqlx::query("UPDATE log_archives SET sha256 = 'aa' WHERE first_seq = 5")
        .execute(db.pool())
        .await
        .unwrap();
    assert!(matches!(
        verify_db().await,
        Err(LogVerifyError::Archive { .. })
    ));
    sqlx::query("UPDATE log_archives SET sha256 = $1 WHERE first_seq = 5")
        .bind(&written[0].sha256)
        .execute(db.pool())
        .await
        .unwrap();

    // Exchanges go on after archiving, and everything still verifies.
    exchanges(&net, 2).await;
    let report = verify_db().await.unwrap();
    assert_eq!((report.records, report.archived), (12, 8));
    net.stop().await;
}
both_backends!(
    old_records_move_to_hash_linked_archives_and_verify,
    archiving
);
