//! HTTP ingest on loopback, client and daemon in this process sharing the machine's
//! cores: single-event POSTs/s and batched events/s at full speed, and the time to
//! the durable `202` at a steady rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{BenchArgs, InProcess, PAYLOAD};

/// Requests per second of the paced measurement.
const PACED_RATE: u64 = 5_000;

pub struct Rates {
    pub single: f64,
    pub batched: f64,
    /// The paced measurement's percentiles, as a table cell.
    pub paced: String,
}

/// Starts a daemon (SQLite, or PostgreSQL at `postgres`) and measures its ingest.
pub async fn rates(args: &BenchArgs, postgres: Option<&str>) -> anyhow::Result<Rates> {
    let daemon = InProcess::start(
        &[(
            "EVHOST_SERVER__MAX_BATCH_EVENTS",
            args.batch_size.max(1).to_string(),
        )],
        postgres,
    )
    .await?;
    let addr = daemon.addr;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency.max(8))
        .build_http();
    let url = format!("http://{addr}/v1/events");
    let single_body = Bytes::from(format!(r#"{{"type":"message.received","data":{PAYLOAD}}}"#));
    let single = load(
        &client,
        &url,
        single_body.clone(),
        args.concurrency,
        args.http_seconds,
    )
    .await?;

    let batch: Vec<String> = (0..args.batch_size)
        .map(|_| format!(r#"{{"type":"message.received","data":{PAYLOAD}}}"#))
        .collect();
    let batch_body = Bytes::from(format!("[{}]", batch.join(",")));
    let batches = load(
        &client,
        &format!("http://{addr}/v1/events/batch"),
        batch_body,
        4,
        args.http_seconds,
    )
    .await?;

    let paced = paced(&client, &url, single_body, args.http_seconds).await?;
    daemon.stop().await?;
    Ok(Rates {
        single,
        batched: batches * args.batch_size as f64,
        paced,
    })
}

/// `concurrency` loops POSTing `body` for `seconds`; returns successful requests/s.
/// A 503 (dispatch too far behind) counts as not done and is retried, so the figure
/// is what evhost actually accepted.
pub async fn load(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    body: Bytes,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let ok = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body, ok) = (client.clone(), url.to_string(), body.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let status = post(&client, &url, body.clone()).await?;
                if status.is_success() {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else if status != hyper::StatusCode::SERVICE_UNAVAILABLE {
                    anyhow::bail!("the daemon answered {status}");
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(ok.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    body: Bytes,
) -> anyhow::Result<hyper::StatusCode> {
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let response = client.request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// POSTs `body` at [`PACED_RATE`] a second for `seconds` (each request on its own
/// task, sent on schedule whatever the others do) and reports the time to each
/// answer: p50, p99 and the largest.
async fn paced(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    body: Bytes,
    seconds: u64,
) -> anyhow::Result<String> {
    let total = PACED_RATE * seconds;
    let every = Duration::from_secs(1) / PACED_RATE as u32;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        tokio::time::sleep_until(start + every * n as u32).await;
        let (client, url, body) = (client.clone(), url.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let status = post(&client, &url, body).await?;
            anyhow::ensure!(status.is_success(), "the daemon answered {status}");
            Ok::<Duration, anyhow::Error>(sent.elapsed())
        }));
    }
    let mut took = Vec::with_capacity(tasks.len());
    for task in tasks {
        took.push(task.await??);
    }
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    Ok(format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms ({} requests)",
        at(0.5),
        at(0.99),
        at(1.0),
        took.len()
    ))
}
