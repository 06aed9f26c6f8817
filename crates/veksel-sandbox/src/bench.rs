//! Load for the benchmarks in `benches/`: a fixed number of clients in this process,
//! each sending the next request when the last is answered, bounded by the run time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sends GET `url` as `client` from `clients` concurrent clients for `seconds`;
/// returns the successful exchanges per second and the number of failures.
pub async fn constant_load(
    url: &str,
    client: &str,
    clients: usize,
    seconds: u64,
) -> Result<(Vec<u64>, u64), reqwest::Error> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(10))
        .build()?;
    let buckets: Arc<Vec<AtomicU64>> =
        Arc::new((0..seconds + 1).map(|_| AtomicU64::new(0)).collect());
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, client) = (http.clone(), url.to_owned(), client.to_owned());
        let (buckets, errors, stop) = (buckets.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = match http.get(&url).header("X-Road-Client", &client).send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let second = start.elapsed().as_secs() as usize;
                if ok {
                    if let Some(b) = buckets.get(second) {
                        b.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let per_second = buckets
        .iter()
        .take(seconds as usize)
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    Ok((per_second, errors.load(Ordering::Relaxed)))
}
