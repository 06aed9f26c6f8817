//! The network ledger end to end: governance events and gateways' anchors land in
//! the ledger as they happen; checkpoints are published only with the policy's
//! cosignatures; a client audits the whole log from tiles and finds a modified tile;
//! independent libraries (signed_note, tlog_tiles, ed25519-dalek) verify the
//! checkpoint, the cosignatures and the proofs; and when the authority rewrites
//! history, the gateways refuse to cosign, raise the alarm, and nothing is published.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use std::collections::BTreeSet;
use std::time::Duration;
use veksel_merkle::checkpoint::Checkpoint;
use veksel_merkle::tiles::{TileBuilder, TileId, TileKind, TiledTree, tiles_for_size};
use veksel_merkle::witness::WitnessPolicy;
use veksel_merkle::{Frontier, Hash, inclusion_proof, leaf_hash};
use veksel_proto::ledger::{LedgerEntry, peek};
use veksel_sandbox::ORGS;
use veksel_store::sqlx::{self, Row};

async fn get(http: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let r = http.get(url).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// Every tile and bundle of a tree of `size`, fetched over HTTP.
async fn fetch_tiles(
    http: &reqwest::Client,
    base: &str,
    size: u64,
) -> (TiledTree, Vec<(TileId, Vec<u8>)>) {
    let mut tree = TiledTree::new(size);
    let mut files = Vec::new();
    for id in tiles_for_size(size, true) {
        let (status, data) = get(http, &format!("{base}/{}", id.path())).await;
        assert_eq!(status, 200, "{}", id.path());
        tree.insert(id, &data).unwrap();
        files.push((id, data));
    }
    (tree, files)
}

fn entries(tree: &TiledTree) -> Vec<LedgerEntry> {
    (0..tree.size())
        .map(|i| peek(tree.entry(i).unwrap()).unwrap())
        .collect()
}

/// The published checkpoint, verified under the ledger's own policy.
async fn published(
    http: &reqwest::Client,
    base: &str,
    policy: &WitnessPolicy,
) -> Option<(String, Checkpoint, BTreeSet<String>)> {
    let (status, note) = get(http, &format!("{base}/checkpoint")).await;
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200);
    let note = String::from_utf8(note).unwrap();
    let (cp, cosigners) = policy.verify(&note).unwrap();
    Some((note, cp, cosigners))
}

/// The same checks with libraries written by others: signed_note for the note and
/// the log's Ed25519 signature, ed25519-dalek for cosignatures (cosignature/v1 plugged
/// into signed_note's verifier interface), tlog_tiles for inclusion and consistency.
fn third_party_checks(note: &str, policy_text: &str, tree: &TiledTree, old: Option<(u64, Hash)>) {
    use signed_note::{Note, StandardVerifier, Verifier, VerifierList};

    struct Cosignature {
        name: String,
        id: u32,
        key: ed25519_dalek::VerifyingKey,
    }
    impl Verifier for Cosignature {
        fn name(&self) -> &str {
            &self.name
        }
        fn key_id(&self) -> u32 {
            self.id
        }
        fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
            let (Some(time), Some(sig)) = (sig.get(..8), sig.get(8..)) else {
                return false;
            };
            let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
                return false;
            };
            let mut m = format!(
                "cosignature/v1\ntime {}\n",
                u64::from_be_bytes(time.try_into().unwrap())
            )
            .into_bytes();
            m.extend_from_slice(msg);
            self.key.verify_strict(&m, &sig).is_ok()
        }
    }

    let mut verifiers: Vec<Box<dyn Verifier>> = Vec::new();
    let mut witnesses = 0;
    for line in policy_text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["log", vkey] => verifiers.push(Box::new(StandardVerifier::new(vkey).unwrap())),
            ["witness", name, vkey] => {
                let raw = STANDARD
                    .decode(vkey.splitn(3, '+').nth(2).unwrap())
                    .unwrap();
                assert_eq!(raw[0], 0x04);
                let key =
                    ed25519_dalek::VerifyingKey::from_bytes(raw[1..].try_into().unwrap()).unwrap();
                verifiers.push(Box::new(Cosignature {
                    name: (*name).to_owned(),
                    id: signed_note::key_id(name, &raw),
                    key,
                }));
                witnesses += 1;
            }
            _ => {}
        }
    }
    assert!(witnesses >= 3);
    let parsed = Note::from_bytes(note.as_bytes()).unwrap();
    let (verified, unverified) = parsed.verify(&VerifierList::new(verifiers)).unwrap();
    assert!(unverified.is_empty());
    assert!(
        verified.len() >= 3,
        "log signature and a majority of 3 witnesses"
    );
    let cp = tlog_tiles::Checkpoint::from_bytes(parsed.text()).unwrap();
    assert_eq!(cp.size(), tree.size());
    let root = *cp.hash();
    for index in [0, tree.size() / 2, tree.size() - 1] {
        let proof: Vec<tlog_tiles::Hash> = inclusion_proof(tree, index, tree.size())
            .unwrap()
            .into_iter()
            .map(tlog_tiles::Hash)
            .collect();
        let leaf = tlog_tiles::record_hash(tree.entry(index).unwrap());
        tlog_tiles::check_record(&proof, tree.size(), root, index, leaf).unwrap();
    }
    if let Some((old_size, old_root)) = old {
        let proof: Vec<tlog_tiles::Hash> =
            veksel_merkle::consistency_proof(tree, old_size, tree.size())
                .unwrap()
                .into_iter()
                .map(tlog_tiles::Hash)
                .collect();
        tlog_tiles::check_tree(
            &proof,
            tree.size(),
            root,
            old_size,
            tlog_tiles::Hash(old_root),
        )
        .unwrap();
    }
}

/// The authority rewrites its history: entries 1 and 2 change places, and tiles and
/// head are recomputed so that everything it serves is self-consistent.
/// The checkpoint of a signed note: everything before the blank line.
fn checkpoint_body(note: &str) -> &str {
    note.split_once("\n\n").map_or(note, |(body, _)| body)
}

/// Rewrites two entries and returns the checkpoints the honest log had signed, by
/// size: anything the witnesses cosign from these may still be published after the
/// rewrite, nothing else may.
async fn rewrite_history(db: &veksel_store::Db) -> std::collections::BTreeMap<u64, String> {
    let pool = db.pool();
    let signed: Vec<(i64, String)> = sqlx::query_as("SELECT size, note FROM ledger_checkpoints")
        .fetch_all(pool)
        .await
        .unwrap();
    let honest = signed
        .into_iter()
        .map(|(size, note)| (size as u64, checkpoint_body(&note).to_owned()))
        .collect();
    let rows = sqlx::query("SELECT idx, data FROM ledger_entries ORDER BY idx")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut data: Vec<Vec<u8>> = rows.iter().map(|r| r.try_get(1).unwrap()).collect();
    data.swap(1, 2);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("DELETE FROM ledger_tiles")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut builder = TileBuilder::new();
    let mut frontier = Frontier::new();
    let mut tiles = std::collections::BTreeMap::new();
    for (i, d) in data.iter().enumerate() {
        sqlx::query("UPDATE ledger_entries SET data = $1 WHERE idx = $2")
            .bind(d)
            .bind(i as i64)
            .execute(&mut *tx)
            .await
            .unwrap();
        for (id, hashes) in builder.push(leaf_hash(d)) {
            let TileKind::Hashes { level } = id.kind else {
                unreachable!()
            };
            tiles.insert((level, id.index), hashes.concat());
        }
        frontier.push(leaf_hash(d));
    }
    for ((level, index), bytes) in tiles {
        sqlx::query("INSERT INTO ledger_tiles (level, idx, data) VALUES ($1, $2, $3)")
            .bind(i64::from(level))
            .bind(index as i64)
            .bind(bytes)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE ledger_head SET peaks = $1 WHERE id = 1")
        .bind(hex::encode(frontier.peaks().concat()))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    honest
}

async fn ledger(b: Backend) {
    let Some(mut net) = Net::start_with(b, |o| {
        o.ledger_interval_ms = 200;
        o.stamp_interval_secs = 1;
    })
    .await
    else {
        return;
    };
    let (http, url, token) = authority_client(&net);
    let base = format!("{url}/ledger/v1");
    let policy_text = String::from_utf8(get(&http, &format!("{base}/policy")).await.1).unwrap();
    let policy = WitnessPolicy::parse(&policy_text).unwrap();
    assert_eq!(policy.witnesses.len(), 3);

    // An exchange, so that both gateways' message logs get records to anchor.
    let muni = ORGS[MUNICIPALITY].subsystem_id();
    let r = net
        .r1(
            MUNICIPALITY,
            &muni,
            &format!("{}/persons/0101701234", ORGS[POPULATION].subsystem_id()),
        )
        .await;
    assert_eq!(
        r.status(),
        200,
        "{:?}: {}",
        fault(&r),
        r.text().await.unwrap()
    );

    // Wait for a published, cosigned checkpoint covering both gateways' anchors.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (note, cp, cosigners, tree) = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no anchors in the ledger within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Some((note, cp, cosigners)) = published(&http, &base, &policy).await else {
            continue;
        };
        let (tree, _) = fetch_tiles(&http, &base, cp.size).await;
        tree.audit(&cp.root).unwrap();
        let anchored: BTreeSet<String> = entries(&tree)
            .iter()
            .filter(|e| matches!(e, LedgerEntry::Anchor { size, .. } if *size > 0))
            .map(|e| e.subject().to_owned())
            .collect();
        // The gateways submit their configuration events in the same rounds as their
        // anchors, but not always in the same batch: wait for both.
        let access_set = entries(&tree).iter().any(|e| {
            matches!(e, LedgerEntry::GatewayEvent { event, gateway, .. }
                if event == "access.set" && *gateway == ORGS[POPULATION].gateway_id())
        });
        if access_set
            && anchored.contains(&ORGS[MUNICIPALITY].gateway_id())
            && anchored.contains(&ORGS[POPULATION].gateway_id())
        {
            break (note, cp, cosigners, tree);
        }
    };
    assert!(cosigners.len() >= 2, "{cosigners:?}");

    // Governance events of the spine and the trust services are there, salted.
    let events: BTreeSet<String> = entries(&tree)
        .iter()
        .filter_map(|e| match e {
            LedgerEntry::Governance { event, .. } => Some(event.clone()),
            _ => None,
        })
        .collect();
    for want in [
        "authority.init",
        "member.add",
        "gateway.add",
        "certificate.issue",
        "configuration.publish",
        "ledger_policy.set",
    ] {
        assert!(events.contains(want), "{want} missing from {events:?}");
    }
    // The gateways' own access configuration (set up by the sandbox) is there too.
    assert!(
        entries(&tree).iter().any(|e| matches!(e,
            LedgerEntry::GatewayEvent { event, gateway, subject, .. }
                if event == "access.set" && *gateway == ORGS[POPULATION].gateway_id()
                    && *subject == ORGS[POPULATION].subsystem_id())),
        "no access.set event of the population register's gateway"
    );

    // A governance entry opens with the salt and details the authority keeps;
    // erasing them leaves an entry that resolves to nothing.
    let record = entries(&tree)
        .iter()
        .find_map(|e| match e {
            LedgerEntry::Governance {
                event,
                record,
                commitment,
                ..
            } if event == "member.add" => Some((*record, commitment.clone())),
            _ => None,
        })
        .unwrap();
    let opening: serde_json::Value = http
        .get(format!("{url}/api/v1/ledger/openings/{}", record.0))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let salt: [u8; 32] = STANDARD
        .decode(opening["salt"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let document = opening["document"].as_str().unwrap();
    assert_eq!(
        veksel_proto::ledger::commitment(&salt, document.as_bytes()),
        record.1
    );
    assert!(document.contains("Population"), "{document}");
    let r = http
        .delete(format!("{url}/api/v1/ledger/openings/{}", record.0))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .get(format!("{url}/api/v1/ledger/openings/{}", record.0))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);

    // Each entry is signed by its submitter: anchors by the gateway's
    // authentication certificate, governance events by the configuration signer.
    for i in 0..tree.size() {
        let raw = std::str::from_utf8(tree.entry(i).unwrap()).unwrap();
        let cert = signing_cert_of(raw);
        let info = veksel_pki::CertInfo::parse(&cert).unwrap();
        let jws = veksel_proto::jws::Unverified::parse(raw, None).unwrap();
        jws.verify(&info.public_key).unwrap();
        let entry = peek(raw.as_bytes()).unwrap();
        if let LedgerEntry::Anchor { gateway, .. } = &entry {
            assert_eq!(
                info.subject_serial_number.as_deref(),
                Some(gateway.as_str())
            );
        }
    }

    // Independent libraries agree.
    let first_size = cp.size;
    third_party_checks(&note, &policy_text, &tree, None);

    // A modified tile is detected by a client.
    let (_, files) = fetch_tiles(&http, &base, cp.size).await;
    for (victim, _) in files
        .iter()
        .filter(|(id, _)| id.kind == (TileKind::Hashes { level: 0 }))
        .take(1)
    {
        let mut tampered = TiledTree::new(cp.size);
        for (id, data) in &files {
            let mut d = data.clone();
            if id == victim {
                d[5] ^= 0x40;
            }
            tampered.insert(*id, &d).unwrap();
        }
        assert!(
            tampered.audit(&cp.root).is_err(),
            "a flipped bit in {} went unnoticed",
            victim.path()
        );
    }
    let (status, _) = get(&http, &format!("{base}/tile/0/x001/000")).await;
    assert_eq!(status, 404, "tiles beyond the log do not exist");
    let (status, _) = get(&http, &format!("{base}/tile/0/..%2f..%2fetc")).await;
    assert_eq!(status, 404);

    // The member-side client: audit, show with proof, monitor a member.
    let anchor: veksel_proto::conf::Anchor =
        serde_json::from_str(&std::fs::read_to_string(&net.sandbox().info.anchor_file).unwrap())
            .unwrap();
    let client =
        veksel_verify::ledger_client::LedgerClient::connect(&anchor, Some(policy_text.clone()))
            .await
            .unwrap();
    let verified = client.checkpoint().await.unwrap();
    let audited = client.audit(&verified.checkpoint).await.unwrap();
    assert_eq!(audited.len() as u64, verified.checkpoint.size);
    let shown = client.entry(&verified.checkpoint, 1).await.unwrap();
    assert_eq!(shown.raw.as_bytes(), tree.entry(1).unwrap());
    let population = ORGS[POPULATION].member();
    let about = client
        .monitor(&verified.checkpoint, 0, &population)
        .await
        .unwrap();
    assert!(about.iter().any(|e| e.entry.kind() == "anchor"));
    assert!(
        about
            .iter()
            .all(|e| e.entry.subject().starts_with(&population))
    );

    // Tiles from files: the authority's static export and a client's mirror audit
    // the same; a modified file in a mirror is found.
    let export = net
        .dir
        .path()
        .join("authority")
        .join(veksel_sandbox::LEDGER_TILES_DIR);
    let deadline_export = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline_export,
            "no static export"
        );
        if let Ok(files) = veksel_verify::ledger_client::LedgerClient::from_directory(
            &export,
            Some(policy_text.clone()),
        )
        .await
            && let Ok(cp) = files.checkpoint().await
        {
            let all = files.audit(&cp.checkpoint).await.unwrap();
            assert_eq!(all.len() as u64, cp.checkpoint.size);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mirror = net.dir.path().join("mirror");
    let mirrored = client.mirror(&mirror).await.unwrap();
    let offline = veksel_verify::ledger_client::LedgerClient::from_directory(&mirror, None)
        .await
        .unwrap();
    let cp_offline = offline.checkpoint().await.unwrap();
    assert_eq!(cp_offline.checkpoint, mirrored.checkpoint);
    offline.audit(&cp_offline.checkpoint).await.unwrap();
    // The first entry bundle (full or partial, whichever this size has).
    let victim = mirror.join(
        TileId {
            kind: TileKind::Entries,
            index: 0,
            width: cp_offline.checkpoint.size.min(256) as u16,
        }
        .path(),
    );
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    assert!(
        offline.audit(&cp_offline.checkpoint).await.is_err(),
        "a changed entry in the mirror went unnoticed"
    );

    // A member commits to a document through its gateway's admin API.
    let salt = veksel_proto::ledger::new_salt();
    let commitment = veksel_proto::ledger::commitment(&salt, b"contract 2026-118, signed");
    let (admin, admin_token) = net.admin(MUNICIPALITY);
    let r = net
        .http
        .post(format!("{admin}/api/v1/ledger/commitments"))
        .bearer_auth(&admin_token)
        .json(&serde_json::json!({"label": "contract 2026-118 signed", "commitment": commitment}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let r = net
        .http
        .post(format!("{admin}/api/v1/ledger/commitments"))
        .bearer_auth(&admin_token)
        .json(&serde_json::json!({"label": "bad\nlabel", "commitment": commitment}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // Entries a gateway may not submit get precise refusals: about another gateway,
    // a governance event, a time far from the authority's.
    let gw = net.sandbox().gateway(MUNICIPALITY).unwrap().clone();
    let keys = gw.keys.get();
    let now = gw.clock.now_ms();
    for (entry, status, says) in [
        (
            serde_json::json!({"kind": "commitment", "at": now, "gateway": ORGS[TAX].gateway_id(), "label": "x", "commitment": commitment}),
            403,
            "only submit entries about itself",
        ),
        (
            serde_json::json!({"kind": "governance", "at": now, "event": "member.add", "subject": "x", "record": 1, "commitment": commitment}),
            403,
            "recorded by the authority itself",
        ),
        (
            serde_json::json!({"kind": "commitment", "at": now - 3_600_000, "gateway": ORGS[MUNICIPALITY].gateway_id(), "label": "x", "commitment": commitment}),
            400,
            "more than 10 minutes",
        ),
    ] {
        let (got, answer) = veksel_gateway::management::post_signed(
            &gw,
            &keys,
            "/ledger/v1/entries",
            veksel_proto::ledger::ENTRY_CTY,
            &entry,
        )
        .await
        .unwrap();
        assert_eq!(got.as_u16(), status, "{answer}");
        assert!(answer.to_string().contains(says), "{answer}");
    }

    // The log grows; the next published checkpoint is consistent with the first.
    let r = http
        .put(format!("{url}/api/v1/member-classes/TEST"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"description": "ledger test"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let deadline_grown = tokio::time::Instant::now() + Duration::from_secs(60);
    let (note2, cp2, tree2) = loop {
        assert!(
            tokio::time::Instant::now() < deadline_grown,
            "no cosigned checkpoint with the commitment"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some((n, c, _)) = published(&http, &base, &policy).await
            && c.size > first_size
        {
            let (tree2, _) = fetch_tiles(&http, &base, c.size).await;
            tree2.audit(&c.root).unwrap();
            let committed = entries(&tree2).iter().any(|e| {
                matches!(e, LedgerEntry::Commitment { commitment: c, gateway, .. }
                    if *c == commitment && *gateway == ORGS[MUNICIPALITY].gateway_id())
            });
            if committed {
                break (n, c, tree2);
            }
        }
    };
    let old = client.verify_note(&note).unwrap();
    let new = client.verify_note(&note2).unwrap();
    client
        .consistency(&old.checkpoint, &new.checkpoint)
        .await
        .unwrap();
    assert!(
        client
            .consistency(&new.checkpoint, &old.checkpoint)
            .await
            .is_err()
    );
    third_party_checks(&note2, &policy_text, &tree2, Some((first_size, cp.root)));

    // A gateway is a c2sp tlog-witness too: its add-checkpoint endpoint answers a
    // stale old size with its own size (409), cosigns a correct request, and refuses
    // garbage and checkpoints not signed by the ledger.
    let (tax_admin, _) = net.admin(TAX);
    let endpoint = format!("{tax_admin}/witness/v1/add-checkpoint");
    let r = net
        .http
        .post(&endpoint)
        .body(format!("old 0\n\n{note2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["content-type"], "text/x.tlog.size");
    let mut witness_size: u64 = r.text().await.unwrap().trim().parse().unwrap();
    assert!(witness_size >= first_size);
    // The gateway also witnesses on its own (it pulls every ledger interval), so it
    // may move past the size it just named before our request arrives: it answers
    // 409 with its new size, and we ask again from there.
    let mut attempts = 0;
    let (request, r) = loop {
        let request = String::from_utf8(
            get(
                &http,
                &format!("{base}/witness/add-checkpoint?old={witness_size}"),
            )
            .await
            .1,
        )
        .unwrap();
        let r = net
            .http
            .post(&endpoint)
            .body(request.clone())
            .send()
            .await
            .unwrap();
        attempts += 1;
        if r.status() != 409 || attempts == 20 {
            break (request, r);
        }
        let newer: u64 = r.text().await.unwrap().trim().parse().unwrap();
        assert!(
            newer >= witness_size,
            "the witness went back: {newer} < {witness_size}"
        );
        witness_size = newer;
    };
    assert_eq!(r.status(), 200);
    let line = r.text().await.unwrap();
    let parsed = veksel_merkle::witness::AddCheckpoint::parse(&request).unwrap();
    let text = &parsed.checkpoint[..=parsed.checkpoint.find("\n\n").unwrap()];
    let tax_witness = &policy.witnesses[&ORGS[TAX].gateway_id()];
    assert!(
        tax_witness.verify_line(text, &line).unwrap().is_some(),
        "{line}"
    );
    let r = net
        .http
        .post(&endpoint)
        .body("old x\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let stranger = veksel_merkle::checkpoint::NoteSigner::from_pkcs8(
        policy.log.name(),
        &veksel_merkle::checkpoint::NoteSigner::generate_pkcs8().unwrap(),
    )
    .unwrap();
    let forged = veksel_merkle::checkpoint::sign_note(text, &[&stranger]).unwrap();
    let r = net
        .http
        .post(&endpoint)
        .body(format!(
            "old {}\n\n{forged}",
            parsed.checkpoint.lines().nth(1).unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());

    // The authority forks: it rewrites two entries and goes on signing.
    let sandbox = net.sandbox.as_mut().unwrap();
    sandbox.stop_authority().await;
    let db = match b {
        Backend::Sqlite => {
            net.sqlite_db("authority", veksel_authority::files::DB)
                .await
        }
        Backend::Postgres => veksel_store::Db::connect(&net.dbs[0].url, &Default::default())
            .await
            .unwrap(),
    };
    let honest = rewrite_history(&db).await;
    let honest_signed = *honest.keys().next_back().unwrap();
    db.close().await;
    let sandbox = net.sandbox.as_mut().unwrap();
    sandbox.start_authority().await.unwrap();
    let r = http
        .put(format!("{url}/api/v1/member-classes/FORK"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"description": "after the rewrite"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    // Every witness refuses and raises the alarm; nothing new is published.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for org in 0..3 {
        let (admin, _) = net.admin(org);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway {org} raised no alarm"
            );
            let r = net
                .http
                .get(format!("{admin}/readyz"))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            if text.contains("LEDGER ALARM") {
                assert_eq!(status, 503, "{text}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let gw = net.sandbox().gateway(org).unwrap();
        let alarms = veksel_gateway::ledger::alarms(gw).await.unwrap();
        let a = &alarms[0];
        assert!(a.why.contains("consistency"), "{}", a.why);
        // The pair is evidence anyone can check: both verify under the ledger's key.
        assert!(
            policy.verify(&a.previous).is_ok()
                || veksel_merkle::checkpoint::open_note(
                    &a.previous,
                    std::slice::from_ref(&policy.log)
                )
                .is_ok()
        );
        veksel_merkle::checkpoint::open_note(&a.conflicting, std::slice::from_ref(&policy.log))
            .unwrap();
        let metrics = net.metrics(org).await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("veksel_gateway_ledger_alarms_total") && !l.ends_with(" 0")),
            "{metrics}"
        );
    }
    // Honest checkpoints signed before the rewrite may still complete their
    // cosignatures and be published; none of the forked ones may.
    let (note_now, cp_now, _) = published(&http, &base, &policy).await.unwrap();
    assert!(cp_now.size >= cp2.size, "the published log went back");
    assert_eq!(
        honest.get(&cp_now.size).map(String::as_str),
        Some(checkpoint_body(&note_now)),
        "a checkpoint the honest log never signed was published"
    );
    let status: serde_json::Value = http
        .get(format!("{url}/api/v1/ledger"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["newest_checkpoint"].as_u64().unwrap() > honest_signed,
        "{status}"
    );
    assert!(
        status["newest_cosigners"].as_array().unwrap().is_empty(),
        "{status}"
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_sqlite() {
    ledger(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_postgres() {
    ledger(Backend::Postgres).await;
}
