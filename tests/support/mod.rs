//! Test support: starts the built `evhost` binary as a black box on a free loopback
//! port with its own temporary data folder, and talks to it over HTTP.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

pub use serde_json::{Value, json};

mod backend;
mod launch;
pub mod receiver;

pub use backend::Backend;
pub use launch::{Options, private_hosts_supported};
use launch::{client_for, spawn};

/// The `evhost` binary: `$EVHOST_BIN`, or the one cargo built beside this test.
pub fn evhost_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("EVHOST_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-… → target/<profile>/evhost
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target folder")
        .join("evhost");
    assert!(
        path.exists(),
        "{} does not exist: build it first (`cargo build -p evhost`) or set EVHOST_BIN",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (free when asked; tests start at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running daemon; killed on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    token: Option<String>,
    options: Options,
    port: u16,
}

impl Daemon {
    /// A client like `client`, with no connection open yet.
    pub fn fresh_client(&self) -> reqwest::Client {
        client_for(&self.options)
    }

    pub async fn start() -> Daemon {
        Daemon::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = spawn(&dir, port, &options);
        let base = if options.tls_roots.is_empty() {
            format!("http://127.0.0.1:{port}")
        } else {
            format!("https://localhost:{port}")
        };
        let daemon = Daemon {
            child: Some(child),
            base,
            dir,
            client: client_for(&options),
            token: options.token.clone(),
            options,
            port,
        };
        daemon.wait_ready().await;
        daemon
    }

    /// Starts the daemon again on the same port, data folder and settings (after it
    /// exited).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the daemon before restarting it");
        self.child = Some(spawn(&self.dir, self.port, &self.options));
        self.wait_ready().await;
    }

    /// Kills the daemon with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Daemon {
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let last = match self.client.get(self.url("/healthz")).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => r.status().to_string(),
                Err(e) => format!("{e:?}"),
            };
            assert!(
                Instant::now() < deadline,
                "daemon did not answer /healthz within 15 s ({last}); log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// What the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// A request with the default token (if any).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match &self.token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap();
        status_json(r).await
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        status_json(
            self.request(reqwest::Method::GET, path)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Starts `connections` tasks that each POST `batch` to `/v1/events/batch`
    /// `requests` times (with the default token). Resolves to the ids of every event
    /// accepted; a refusal must be 503 `stopping` (or the connection closed by a
    /// shutdown).
    pub fn burst(
        &self,
        batch: &Value,
        connections: usize,
        requests: usize,
    ) -> tokio::task::JoinHandle<Vec<String>> {
        let body = batch.to_string();
        let senders: Vec<_> = (0..connections)
            .map(|_| {
                let (client, url, body, token) = (
                    self.client.clone(),
                    self.url("/v1/events/batch"),
                    body.clone(),
                    self.token.clone(),
                );
                tokio::spawn(async move {
                    let mut accepted = Vec::new();
                    for _ in 0..requests {
                        let mut request = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone());
                        if let Some(t) = &token {
                            request = request.bearer_auth(t);
                        }
                        match request.send().await {
                            Ok(r) if r.status() == 202 => {
                                let answer: Value = r.json().await.unwrap();
                                accepted.extend(
                                    answer["ids"]
                                        .as_array()
                                        .unwrap()
                                        .iter()
                                        .map(|v| v.as_str().unwrap().to_string()),
                                );
                            }
                            Ok(r) => {
                                assert_eq!(r.status(), 503);
                                let (_, json) = status_json(r).await;
                                assert_eq!(json["error"]["code"], "stopping", "{json}");
                            }
                            Err(_) => {} // the daemon closed the connection while stopping
                        }
                    }
                    accepted
                })
            })
            .collect();
        tokio::spawn(async move {
            let mut all = Vec::new();
            for sender in senders {
                all.extend(sender.await.unwrap());
            }
            all
        })
    }

    /// How many audit rows each event id has, among the rows matching `query`.
    pub async fn log_counts(&self, query: &str) -> std::collections::HashMap<String, usize> {
        let mut counts = std::collections::HashMap::new();
        for row in self.audit_rows(query, 1000, None).await {
            *counts
                .entry(row["event_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        counts
    }

    /// Every audit row matching `query` (a query string), following cursors.
    pub async fn audit_rows(&self, query: &str, limit: u32, token: Option<&str>) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let mut path = format!("/v1/audit?limit={limit}&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let mut request = self.client.get(self.url(&path));
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            let (status, page) = status_json(request.send().await.unwrap()).await;
            assert_eq!(status, 200, "{page}");
            rows.extend(page["rows"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return rows,
            }
        }
        panic!("more than 1000 pages of audit rows");
    }

    /// Adds a webhook endpoint; returns its id and secret.
    pub async fn add_webhook(&self, body: &Value) -> (String, String) {
        let (status, answer) = self.post_json("/v1/webhooks", body).await;
        assert_eq!(status, 201, "{answer}");
        (
            answer["id"].as_str().unwrap().to_string(),
            answer["secret"].as_str().unwrap().to_string(),
        )
    }

    /// Publishes one event; returns its id.
    pub async fn publish(&self, kind: &str, data: &Value) -> String {
        let (status, answer) = self
            .post_json("/v1/events", &json!({"type": kind, "data": data}))
            .await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    }

    /// Publishes one event and waits until the bus has handled it (`?wait=true`), so
    /// a test's events reach the plugins in order (the bus's workers run in
    /// parallel); returns its id.
    pub async fn handled(&self, kind: &str, data: &Value) -> String {
        let (status, answer) = self
            .post_json("/v1/events?wait=true", &json!({"type": kind, "data": data}))
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    }

    /// Waits (up to `limit`) until the endpoint has `n` deliveries in `status`;
    /// returns them.
    pub async fn wait_deliveries(
        &self,
        webhook: &str,
        status: &str,
        n: usize,
        limit: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let (code, page) = self
                .get_json(&format!(
                    "/v1/webhooks/{webhook}/deliveries?status={status}&limit=1000"
                ))
                .await;
            assert_eq!(code, 200, "{page}");
            let rows = page["deliveries"].as_array().unwrap().clone();
            if rows.len() >= n {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "{} {status} deliveries of {webhook} within {limit:?}, expected {n}; log:\n{}",
                rows.len(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one sample line of `/metrics` (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }

    /// Waits (at most 10 s) until `sample` in `/metrics` is above zero.
    pub async fn wait_for_metric(&self, sample: &str) {
        self.wait_metric_at_least(sample, f64::MIN_POSITIVE, Duration::from_secs(10))
            .await;
    }

    /// Waits (at most `limit`) until `sample` in `/metrics` reaches `value`.
    pub async fn wait_metric_at_least(&self, sample: &str, value: f64, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.metric(sample).await;
            if now >= value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sample} is {now}, not {value}, after {limit:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sets (or, with `None`, removes) an environment variable for the next
    /// [`Daemon::restart`].
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.options.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.options.env.push((key.to_string(), value.to_string()));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(30)).await
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {limit:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
}

pub async fn status_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

/// Finds `sample` (a metric name with its labels, as printed) in a scrape.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(sample)?;
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .unwrap_or(0.0)
}

/// A valid `message.received` payload for `domain`.
pub fn received(domain: &str, spam: bool) -> Value {
    json!({
        "message_id": format!("<{}@mx.{domain}>", uuid::Uuid::new_v4()),
        "from": "alice@example.org",
        "to": [format!("bob@{domain}")],
        "subject": "Hello",
        "size": 1234,
        "domain": domain,
        "user": format!("bob@{domain}"),
        "mailbox": "INBOX",
        "spam_score": if spam { 9.5 } else { 0.1 },
        "is_spam": spam
    })
}

/// Runs the `evhost` CLI with arguments and environment; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(evhost_bin());
    command
        .args(args)
        .env_remove("EVHOST_CONFIG")
        .env_remove("EVHOST_API_TOKEN")
        .env_remove("EVHOST_TOKEN")
        .env_remove("EVHOST_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run evhost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A plugin built for wasm32-wasip2 by `tests/run.sh` (profile `plugin`), such as
/// `hostile` or `spam_router`; `$EVHOST_TEST_PLUGINS_DIR` overrides the folder.
pub fn plugin_wasm(name: &str) -> PathBuf {
    let dir = match std::env::var_os("EVHOST_TEST_PLUGINS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            // target/<profile>/deps/<test> → target/wasm32-wasip2/plugin
            let exe = std::env::current_exe().expect("test executable path");
            exe.ancestors()
                .nth(3)
                .expect("the test runs from target/<profile>/deps")
                .join("wasm32-wasip2/plugin")
        }
    };
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (tests/run.sh does: cargo build --profile plugin --target wasm32-wasip2 -p spam-router -p pii-redactor -p vip-router -p hostile)",
        path.display()
    );
    path
}

impl Daemon {
    /// The daemon's plugin folder.
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("data/plugins")
    }

    /// Writes (or, with `None`, removes) the sidecar of plugin `name`.
    pub fn write_sidecar(&self, name: &str, sidecar: Option<&str>) {
        let path = self.plugins_dir().join(format!("{name}.toml"));
        match sidecar {
            Some(text) => std::fs::write(path, text).unwrap(),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Copies `wasm` into the plugin folder as `name.wasm`, as an operator would, and
    /// waits until that very file is serving; returns how long that took.
    pub async fn install_plugin(&self, name: &str, wasm: &std::path::Path) -> Duration {
        let bytes = std::fs::read(wasm).unwrap();
        let hash = sha256_hex(&bytes);
        let started = Instant::now();
        std::fs::copy(wasm, self.plugins_dir().join(format!("{name}.wasm"))).unwrap();
        self.wait_plugin(name, |p| p["file_hash"] == hash && p["state"] == "serving")
            .await;
        started.elapsed()
    }

    /// Waits (up to 20 s) until `GET /v1/plugins/{name}` satisfies `ready`; returns it.
    pub async fn wait_plugin(&self, name: &str, ready: impl Fn(&Value) -> bool) -> Value {
        self.wait_plugin_within(name, Duration::from_secs(20), ready)
            .await
    }

    /// [`Daemon::wait_plugin`] with a limit of its own: a Python or JavaScript
    /// component takes this debug build many seconds to compile on a busy machine.
    pub async fn wait_plugin_within(
        &self,
        name: &str,
        limit: Duration,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (status, plugin) = self.get_json(&format!("/v1/plugins/{name}")).await;
            if status == 200 && ready(&plugin) {
                return plugin;
            }
            assert!(
                Instant::now() < deadline,
                "plugin {name} not as expected within {limit:?}: {status} {plugin}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
