//! Ledger benchmark: appends per second through the authority's sequencer (batched,
//! one transaction per batch, tiles kept up to date), on SQLite and (when
//! `VEKSEL_TEST_DATABASE_URL` is set) PostgreSQL; storage per entry; and the time to
//! make and verify inclusion and consistency proofs from tiles in a log of one
//! million entries.
//!
//! `cargo bench -p veksel-sandbox --bench ledger` (set `LEDGER_BENCH_ENTRIES` to
//! change the number of appends, default 20,000). Results go in `BENCHMARKS.md`.

use std::time::{Duration, Instant};
use veksel_authority::AuthorityConfig;
use veksel_merkle::tiles::{TileBuilder, TileKind, TiledTree, tiles_for_size};
use veksel_merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion,
};
use veksel_proto::Clock;
use veksel_proto::ledger::{ENTRY_CTY, LedgerEntry};
use veksel_store::sqlx;

async fn storage_bytes(s: &veksel_authority::AppState, dir: &std::path::Path) -> u64 {
    let pool = s.registry.db().pool();
    match s.registry.db().backend() {
        veksel_store::Backend::Sqlite => {
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await;
            let db = dir.join(veksel_authority::files::DB);
            let wal = dir.join(format!("{}-wal", veksel_authority::files::DB));
            std::fs::metadata(db).map_or(0, |m| m.len())
                + std::fs::metadata(wal).map_or(0, |m| m.len())
        }
        veksel_store::Backend::Postgres => {
            let n: i64 = sqlx::query_scalar(
                "SELECT (pg_total_relation_size('ledger_entries') + pg_total_relation_size('ledger_tiles')
                 + pg_total_relation_size('ledger_pending') + pg_total_relation_size('ledger_checkpoints'))::BIGINT",
            )
            .fetch_one(pool)
            .await
            .expect("sizes");
            u64::try_from(n).unwrap_or_default()
        }
    }
}

async fn appends(label: &str, database_url: Option<String>, entries: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = AuthorityConfig::new(
        "BENCH",
        addr,
        &format!("https://127.0.0.1:{}", addr.port()),
        vec!["127.0.0.1".into()],
    );
    // The benchmark drives the sequencer itself.
    config.ledger_interval_ms = 3_600_000;
    config.database_url = database_url;
    let clock = Clock::system();
    veksel_authority::init(dir.path(), config, &clock)
        .await
        .expect("init");
    let running = veksel_authority::start(dir.path(), clock.clone(), Some(listener))
        .await
        .expect("start");
    let s = running.state.clone();
    veksel_authority::ledger::sequence(&s)
        .await
        .expect("sequence");
    veksel_authority::ledger::checkpoint(&s)
        .await
        .expect("checkpoint");
    let before = storage_bytes(&s, dir.path()).await;

    // Anchors as gateways submit them, signed (ES256, certificate chain included).
    let mut tx = s.registry.db().pool().begin().await.expect("tx");
    let mut entry_bytes = 0u64;
    for i in 0..entries {
        let entry = LedgerEntry::Anchor {
            at: clock.now_ms(),
            gateway: "BENCH/GOV/1/gw1".into(),
            origin: "BENCH/GOV/1/gw1/message-log".into(),
            size: i + 1,
            root: veksel_proto::ledger::commitment(&[0; 32], &i.to_be_bytes()),
        };
        let jws = veksel_proto::jws::sign_compact(
            &s.conf_signer,
            ENTRY_CTY,
            true,
            &serde_json::to_vec(&entry).expect("json"),
        )
        .expect("sign");
        entry_bytes += jws.len() as u64;
        sqlx::query(
            "INSERT INTO ledger_pending (data, kind, subject, at) VALUES ($1, 'anchor', $2, $3)",
        )
        .bind(jws.into_bytes())
        .bind("BENCH/GOV/1/gw1")
        .bind(clock.now_ms())
        .execute(&mut *tx)
        .await
        .expect("insert");
    }
    tx.commit().await.expect("commit");

    let start = Instant::now();
    let mut batches = 0;
    loop {
        let before_size = veksel_authority::ledger::sequence(&s)
            .await
            .expect("sequence");
        batches += 1;
        veksel_authority::ledger::checkpoint(&s)
            .await
            .expect("checkpoint");
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_pending")
            .fetch_one(s.registry.db().pool())
            .await
            .expect("count");
        if pending == 0 {
            let elapsed = start.elapsed();
            let after = storage_bytes(&s, dir.path()).await;
            println!(
                "{label:<10} {entries} appends in {batches} batches: {:>8.0} appends/s ({:.2} s); log size {before_size}; entry {:.0} B on average; storage {:.0} B per entry (entry, leaf row, tiles, indexes)",
                entries as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64(),
                entry_bytes as f64 / entries as f64,
                after.saturating_sub(before) as f64 / entries as f64,
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "bounded");
    }
    running.stop().await;
}

fn proofs() {
    const SIZE: u64 = 1_000_000;
    let mut builder = TileBuilder::new();
    let mut tiles = std::collections::HashMap::new();
    let mut leaves = Vec::with_capacity(SIZE as usize);
    for i in 0..SIZE {
        let h = leaf_hash(&i.to_be_bytes());
        leaves.push(h);
        for (id, hashes) in builder.push(h) {
            tiles.insert((id.kind, id.index), hashes);
        }
    }
    let mut tree = TiledTree::new(SIZE);
    for id in tiles_for_size(SIZE, false) {
        if let TileKind::Hashes { .. } = id.kind {
            let hashes = &tiles[&(id.kind, id.index)];
            tree.insert(id, &hashes[..usize::from(id.width)].concat())
                .expect("tile");
        }
    }
    let r = root(&tree, SIZE).expect("root");
    assert_eq!(
        r,
        veksel_merkle::Frontier::from_source(&leaves, SIZE)
            .expect("frontier")
            .root()
    );

    let n = 20_000u64;
    let pick = |i: u64| (i.wrapping_mul(2_654_435_761)) % SIZE;
    let t = Instant::now();
    let made: Vec<_> = (0..n)
        .map(|i| inclusion_proof(&tree, pick(i), SIZE).expect("proof"))
        .collect();
    let make = t.elapsed();
    let t = Instant::now();
    for (i, p) in made.iter().enumerate() {
        let idx = pick(i as u64);
        verify_inclusion(&leaves[idx as usize], idx, SIZE, p, &r).expect("verify");
    }
    let verify = t.elapsed();
    println!(
        "inclusion proofs in a log of {SIZE} (from tiles): make {:.1} µs, verify {:.1} µs, {} hashes",
        make.as_secs_f64() * 1e6 / n as f64,
        verify.as_secs_f64() * 1e6 / n as f64,
        made[0].len()
    );
    let n = 5_000u64;
    let t = Instant::now();
    let made: Vec<_> = (0..n)
        .map(|i| {
            let old = 1 + pick(i) % (SIZE - 1);
            (old, consistency_proof(&tree, old, SIZE).expect("proof"))
        })
        .collect();
    let make = t.elapsed();
    let olds: Vec<_> = made
        .iter()
        .map(|(old, _)| root(&tree, *old).expect("old root"))
        .collect();
    let t = Instant::now();
    for ((old, p), old_root) in made.iter().zip(&olds) {
        verify_consistency(*old, SIZE, old_root, &r, p).expect("verify");
    }
    let verify = t.elapsed();
    println!(
        "consistency proofs to a log of {SIZE} (from tiles): make {:.1} µs, verify {:.1} µs",
        make.as_secs_f64() * 1e6 / n as f64,
        verify.as_secs_f64() * 1e6 / n as f64
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let entries: u64 = std::env::var("LEDGER_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    veksel_pki::tls::install_default_provider();
    appends("sqlite", None, entries).await;
    match veksel_store::testing::postgres_server_url() {
        Some(server) => {
            let db = veksel_store::testing::TestDatabase::create(&server, "ledgerbench")
                .await
                .expect("database");
            appends("postgres", Some(db.url.clone()), entries).await;
            db.drop_database().await.expect("drop");
        }
        None => println!("postgres   skipped: VEKSEL_TEST_DATABASE_URL is not set"),
    }
    proofs();
}
