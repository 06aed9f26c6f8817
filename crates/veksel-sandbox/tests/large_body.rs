//! A 1 GiB body crosses two gateways in each direction intact, and the gateways'
//! memory stays bounded while it does.

mod common;

use common::*;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use veksel_sandbox::ORGS;
use veksel_sandbox::backends::{PATTERN_BLOCK_LEN, pattern_block, pattern_stream};

const GIB: u64 = 1 << 30;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn expected_sha256(n: u64) -> String {
    let block = pattern_block();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut left = n;
    while left > 0 {
        let len = (PATTERN_BLOCK_LEN as u64).min(left);
        ctx.update(&block[..len as usize]);
        left -= len;
    }
    hex::encode(ctx.finish().as_ref())
}

async fn one_gib(b: Backend) {
    let Some(net) = Net::start(b).await else {
        return;
    };
    let expected = expected_sha256(GIB);
    let client = ORGS[MUNICIPALITY].subsystem_id();
    let echo = format!("{}/echo", ORGS[POPULATION].subsystem_id());
    let base = net.client_url(MUNICIPALITY);

    // Sample this process's RSS (all three gateways run in it) during the transfers.
    let baseline = rss_kib();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };

    // Upload: the provider digests what it received.
    let resp = net
        .http
        .post(format!("{base}/r1/{echo}/digest"))
        .header("X-Road-Client", &client)
        .header("Content-Type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(pattern_stream(GIB)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(got["length"], GIB);
    assert_eq!(got["sha256"], expected.as_str());

    // Download: the provider streams the pattern back.
    let resp = net
        .http
        .get(format!("{base}/r1/{echo}/bytes/{GIB}"))
        .header("X-Road-Client", &client)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], GIB.to_string().as_str());
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut length = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        length += chunk.len() as u64;
        ctx.update(&chunk);
    }
    assert_eq!(length, GIB);
    assert_eq!(hex::encode(ctx.finish().as_ref()), expected);

    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let grew_mib = peak.load(Ordering::Relaxed).saturating_sub(baseline) / 1024;
    eprintln!("process RSS grew by {grew_mib} MiB while moving 1 GiB each way");
    assert!(
        grew_mib < 256,
        "memory grew by {grew_mib} MiB while moving 1 GiB each way"
    );

    // Both directions were signed and logged on both gateways.
    let logged = message_log(&net, POPULATION, "limit=2").await;
    assert_eq!(logged[0]["response_size"], GIB);
    assert_eq!(logged[1]["request_size"], GIB);
    assert_eq!(
        logged[0]["has_bodies"], false,
        "bodies over the logging limit are not stored"
    );
    assert!(
        logged[0]["body_note"]
            .as_str()
            .unwrap()
            .contains("not stored")
    );
    net.stop().await;
}
both_backends!(
    a_gib_streams_through_both_gateways_with_bounded_memory,
    one_gib
);

/// POSTs `len` bytes to the echo service's digest as `client`; the request id.
async fn upload(
    http: &reqwest::Client,
    url: &str,
    client: &str,
    body: reqwest::Body,
    len: usize,
) -> String {
    let r = http
        .post(url)
        .header("X-Road-Client", client)
        .header("Content-Length", len)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-road-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let got: serde_json::Value = r.json().await.unwrap();
    assert_eq!(got["length"], len);
    id
}

/// `full` log mode under concurrency: the copies of bodies kept for the log share one
/// budget per gateway. Bodies that find it lent out are still exchanged, signed and
/// logged with their digests, only their content is not stored (the record and a
/// metric say why), responses still find the quarter kept for them, and every lease
/// comes back once the records are written.
async fn capture_budget(b: Backend) {
    const CLIENTS: usize = 8;
    // Over the gateway's prefetch (256 KiB), so each copy starts before the barrier.
    const HALF: usize = 300 * 1024;
    let Some(mut net) = Net::start(b).await else {
        return;
    };
    let dir = net.sandbox().info.gateways[POPULATION].data_dir.clone();
    edit_gateway_config(&dir, |config| {
        config["max_logged_body_bytes"] = (1024 * 1024).into();
        config["capture_memory_bytes"] = (2 * 1024 * 1024).into();
    });
    let sb = net.sandbox.as_mut().unwrap();
    sb.stop_gateway(POPULATION).await;
    sb.start_gateway(POPULATION).await.unwrap();
    let provider = net.sandbox().gateway(POPULATION).unwrap().clone();
    assert_eq!(provider.capture_budget.total_bytes(), 2 * 1024 * 1024);
    assert_eq!(provider.capture_budget.largest_request_copy(), 1536 * 1024);

    let client = ORGS[MUNICIPALITY].subsystem_id();
    let url = format!(
        "{}/r1/{}/echo/digest",
        net.client_url(MUNICIPALITY),
        ORGS[POPULATION].subsystem_id()
    );
    // Each upload announces 600 KiB, sends its first half, waits until every upload
    // has, then sends the rest: all are in flight at once. A copy leases its announced
    // length whole, and request copies may hold 1.5 of the 2 MiB: two at a time.
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let uploads = (0..CLIENTS).map(|i| {
        let (http, url, client, barrier) = (
            net.http.clone(),
            url.clone(),
            client.clone(),
            barrier.clone(),
        );
        async move {
            let first = bytes::Bytes::from(vec![i as u8; HALF]);
            let second = bytes::Bytes::from(vec![i as u8 + 100; HALF]);
            let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
                .chain(futures_util::stream::once(async move {
                    barrier.wait().await;
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    Ok(second)
                }));
            upload(
                &http,
                &url,
                &client,
                reqwest::Body::wrap_stream(body),
                2 * HALF,
            )
            .await
        }
    });
    let ids = futures_util::future::join_all(uploads).await;

    let mut stored = 0;
    let mut over_budget = 0;
    for id in &ids {
        let record = &message_log(&net, POPULATION, &format!("request_id={id}")).await[0];
        assert_eq!(record["request_size"], 2 * HALF);
        if record["has_bodies"] == true {
            stored += 1;
        } else {
            let note = record["body_note"].as_str().unwrap();
            assert!(note.contains("capture_memory_bytes"), "{note}");
            over_budget += 1;
        }
    }
    eprintln!("{stored} uploads stored, {over_budget} over the budget");
    assert!(stored >= 1, "the budget holds at least one copy");
    assert!(over_budget >= 1, "eight copies do not fit");
    assert_eq!(
        provider.capture_budget.available_bytes(),
        provider.capture_budget.total_bytes(),
        "every lease came back"
    );
    let metrics = net.metrics(POPULATION).await;
    assert!(
        metrics.lines().any(|l| l
            == format!(
                "veksel_gateway_bodies_not_stored_total{{reason=\"capture_memory\"}} {over_budget}"
            )),
        "{metrics}"
    );

    // With the budget back, the next body is stored again, byte for byte, with the
    // response it got.
    let sent: Vec<u8> = (0..2 * HALF).map(|i| (i % 253) as u8).collect();
    let id = upload(&net.http, &url, &client, sent.clone().into(), 2 * HALF).await;
    let record = &message_log(&net, POPULATION, &format!("request_id={id}")).await[0];
    assert_eq!(record["has_bodies"], true, "{record}");
    let (admin, token) = net.admin(POPULATION);
    let stored = |part: &'static str| {
        let (http, url, token) = (
            net.http.clone(),
            format!("{admin}/api/v1/message-log/{id}/bodies?side=provider&part={part}"),
            token.clone(),
        );
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200, "{part}");
            r.bytes().await.unwrap()
        }
    };
    assert_eq!(stored("request").await.as_ref(), sent.as_slice());
    let response: serde_json::Value = serde_json::from_slice(&stored("response").await).unwrap();
    assert_eq!(response["length"], 2 * HALF);
    assert_eq!(
        response["sha256"],
        hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &sent).as_ref())
    );
    net.stop().await;
}
both_backends!(
    full_mode_body_copies_stay_within_the_capture_budget,
    capture_budget
);
