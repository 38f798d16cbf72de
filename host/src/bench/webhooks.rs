//! Webhook delivery figures: deliveries/s to a fast local receiver (1 and 50
//! endpoints, every request signed), and publish → receive latency at a fixed rate;
//! against a bare loopback POST loop to the same receiver (the baseline). The
//! daemon runs in this process with its defaults (every event committed to the log
//! before its answer) except: 127.0.0.0/8 allowed, and the backend under test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use super::{CpuMeter, InProcess, PAYLOAD, row, thousands};

/// The receiver: answers 200 at once and counts; when `timing`, also notes when each
/// body's `id` arrived.
pub(super) struct Receiver {
    pub(super) addr: SocketAddr,
    pub(super) count: Arc<AtomicU64>,
    pub(super) arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(super) async fn start(timing: bool) -> anyhow::Result<Receiver> {
        let count = Arc::new(AtomicU64::new(0));
        let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let (c, a) = (count.clone(), arrivals.clone());
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (c, a) = (c.clone(), a.clone());
            async move {
                let at = Instant::now();
                c.fetch_add(1, Ordering::Relaxed);
                #[derive(serde::Deserialize)]
                struct Id<'a> {
                    #[serde(borrow)]
                    id: &'a str,
                }
                if timing && let Ok(Id { id }) = serde_json::from_slice::<Id>(&body) {
                    a.lock().expect("not poisoned").insert(id.to_string(), at);
                }
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver {
            addr,
            count,
            arrivals,
            task,
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A bare loop of `concurrency` clients POSTing the payload for `seconds`.
async fn baseline(addr: SocketAddr, concurrency: usize, seconds: u64) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, done) = (client.clone(), done.clone());
        let url = format!("http://{addr}/");
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(PAYLOAD)
                    .send()
                    .await?;
                r.bytes().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// A daemon for the webhook figures.
async fn start_daemon(postgres: Option<&str>) -> anyhow::Result<InProcess> {
    InProcess::start(
        &[
            ("EVHOST_SERVER__MAX_BATCH_EVENTS", "1000".into()),
            ("EVHOST_WEBHOOKS__ALLOWED_NETWORKS", "[127.0.0.0/8]".into()),
            ("EVHOST_WEBHOOKS__MAX_BACKLOG", "200000".into()),
        ],
        postgres,
    )
    .await
}

pub(super) async fn add_endpoints(
    client: &reqwest::Client,
    daemon: SocketAddr,
    receiver: SocketAddr,
    n: usize,
) -> anyhow::Result<()> {
    for i in 0..n {
        let r = client
            .post(format!("http://{daemon}/v1/webhooks"))
            .json(&json!({"name": format!("bench-{i}"), "url": format!("http://{receiver}/hook/{i}"), "events": ["message.*"]}))
            .send()
            .await?;
        if r.status() != 201 {
            bail!("adding an endpoint failed: {}", r.text().await?);
        }
    }
    Ok(())
}

/// Publishes a batch, waiting out 503s.
pub(super) async fn publish_batch(
    client: &reqwest::Client,
    daemon: SocketAddr,
    body: String,
) -> anyhow::Result<()> {
    loop {
        let r = client
            .post(format!("http://{daemon}/v1/events/batch"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        match r.status().as_u16() {
            202 => return Ok(()),
            503 => tokio::time::sleep(Duration::from_millis(5)).await,
            s => bail!("publishing failed: {s} {}", r.text().await?),
        }
    }
}

pub(super) fn batch_body(ids: impl Iterator<Item = String>) -> String {
    let events: Vec<String> = ids
        .map(|id| format!(r#"{{"id":"{id}","type":"message.received","data":{PAYLOAD}}}"#))
        .collect();
    format!("[{}]", events.join(","))
}

/// Deliveries/s: publish `events` (in batches of 500) to `endpoints` endpoints and
/// time until the receiver has every delivery.
async fn throughput(
    postgres: Option<&str>,
    endpoints: usize,
    events: usize,
) -> anyhow::Result<(f64, String)> {
    let receiver = Receiver::start(false).await?;
    let daemon = start_daemon(postgres).await?;
    let client = reqwest::Client::new();
    add_endpoints(&client, daemon.addr, receiver.addr, endpoints).await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let want = (events * endpoints) as u64;
    let start = Instant::now();
    let cpu = CpuMeter::start();
    for chunk in 0..events.div_ceil(500) {
        let ids = (chunk * 500..((chunk + 1) * 500).min(events)).map(|n| format!("tp-{run}-{n}"));
        publish_batch(&client, daemon.addr, batch_body(ids)).await?;
    }
    let limit = Duration::from_secs(300);
    while receiver.count.load(Ordering::Relaxed) < want {
        if start.elapsed() > limit {
            bail!(
                "only {} of {want} deliveries arrived within {limit:?}",
                receiver.count.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = want as f64 / start.elapsed().as_secs_f64();
    let cpu = cpu.report();
    daemon.stop().await?;
    Ok((rate, cpu))
}

/// Publish → receive latency (p50, p99) at `rate` events/s for `seconds`, one
/// endpoint; events go out in batches of 5 every millisecond.
async fn latency(
    postgres: Option<&str>,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    let receiver = Receiver::start(true).await?;
    let daemon = start_daemon(postgres).await?;
    let client = reqwest::Client::new();
    add_endpoints(&client, daemon.addr, receiver.addr, 1).await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let per_tick = 5u64;
    let ticks = rate * seconds / per_tick;
    let interval = Duration::from_secs_f64(per_tick as f64 / rate as f64);
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut inflight = tokio::task::JoinSet::new();
    for t in 0..ticks {
        ticker.tick().await;
        let ids: Vec<String> = (0..per_tick)
            .map(|i| format!("lat-{run}-{t}-{i}"))
            .collect();
        let at = Instant::now();
        {
            let mut sent = sent.lock().expect("not poisoned");
            for id in &ids {
                sent.insert(id.clone(), at);
            }
        }
        let (client, addr) = (client.clone(), daemon.addr);
        inflight
            .spawn(async move { publish_batch(&client, addr, batch_body(ids.into_iter())).await });
        while let Some(done) = inflight.try_join_next() {
            done??;
        }
    }
    while let Some(done) = inflight.join_next().await {
        done??;
    }
    let achieved = (ticks * per_tick) as f64 / start.elapsed().as_secs_f64();
    let want = ticks * per_tick;
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.count.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let arrivals = receiver.arrivals.lock().expect("not poisoned").clone();
    let sent = sent.lock().expect("not poisoned").clone();
    let mut waits: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            arrivals
                .get(id)
                .map(|got| got.duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    if waits.len() as u64 != want {
        let metrics = client
            .get(format!("http://{}/metrics", daemon.addr))
            .send()
            .await?
            .text()
            .await?;
        let attempts: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("evhost_webhook_") && !l.contains("_bucket"))
            .collect();
        bail!(
            "only {} of {want} paced events arrived; {}",
            waits.len(),
            attempts.join("; ")
        );
    }
    waits.sort_by(f64::total_cmp);
    let pct = |p: f64| waits[((waits.len() as f64 * p) as usize).min(waits.len() - 1)];
    let (p50, p99) = (pct(0.50), pct(0.99));
    daemon.stop().await?;
    Ok((p50, p99, achieved))
}

/// Prints the webhook rows of the report.
pub async fn report(postgres_url: Option<&str>, seconds: u64) -> anyhow::Result<()> {
    let receiver = Receiver::start(false).await?;
    let cpu = CpuMeter::start();
    let bare = baseline(receiver.addr, 64, seconds).await?;
    let cpu = cpu.report();
    drop(receiver);
    row(
        "bare loopback POST loop to the same receiver, 64 connections (baseline)",
        format!("{} requests/s ({cpu})", thousands(bare)),
        "1.00".into(),
    );
    let mut backends = vec![("SQLite", None)];
    if let Some(url) = postgres_url {
        backends.push(("PostgreSQL", Some(url)));
    }
    for (name, pg) in backends {
        for (endpoints, events) in [(1usize, 40_000usize), (50, 1_000)] {
            let (rate, cpu) = throughput(pg, endpoints, events).await?;
            row(
                &format!(
                    "webhook deliveries, signed, {endpoints} endpoint(s), {} deliveries ({name})",
                    endpoints * events,
                ),
                format!("{} deliveries/s ({cpu})", thousands(rate)),
                format!("{:.2}", rate / bare),
            );
        }
        let (p50, p99, achieved) = latency(pg, 5_000, seconds.max(3)).await?;
        row(
            &format!(
                "publish → receive at {} events/s paced, 1 endpoint ({name})",
                thousands(achieved),
            ),
            format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
            "".into(),
        );
    }
    Ok(())
}
