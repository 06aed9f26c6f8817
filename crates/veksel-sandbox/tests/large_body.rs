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
