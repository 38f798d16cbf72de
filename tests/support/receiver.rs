//! A real HTTP webhook receiver on 127.0.0.1 for black-box tests: records every
//! request and answers from a script (status, delay, Retry-After).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};
use serde_json::Value;

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub retry_after: Option<String>,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            retry_after: None,
            body: format!("answer {status}"),
            headers: Vec::new(),
        }
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn body(mut self, body: String) -> Reply {
        self.body = body;
        self
    }

    /// Any other header, such as `location`.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn retry_after(mut self, value: &str) -> Reply {
        self.retry_after = Some(value.to_string());
        self
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// The `webhook-id` header (the delivery id).
    pub fn webhook_id(&self) -> String {
        self.header("webhook-id").to_string()
    }

    /// Checks the Standard Webhooks signature with the published `standardwebhooks`
    /// crate (not evhost's code).
    pub fn verify_standard(&self, secret: &str) -> Result<(), String> {
        let verifier = standardwebhooks::Webhook::new(secret).map_err(|e| e.to_string())?;
        verifier
            .verify(&self.body, &self.headers)
            .map_err(|e| e.to_string())
    }

    /// Checks the `v1a` entries of `webhook-signature` against `public_key`
    /// (`whpk_<base64>`), per the Standard Webhooks specification: an Ed25519
    /// signature of `{webhook-id}.{webhook-timestamp}.{body}`. Ok when one verifies.
    pub fn verify_asymmetric(&self, public_key: &str) -> Result<(), String> {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        let key = public_key
            .strip_prefix("whpk_")
            .ok_or("the public key does not start with whpk_")?;
        let key: [u8; 32] = STANDARD
            .decode(key)
            .map_err(|e| e.to_string())?
            .try_into()
            .map_err(|_| "the public key is not 32 bytes")?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|e| e.to_string())?;
        let mut content = format!(
            "{}.{}.",
            self.header("webhook-id"),
            self.header("webhook-timestamp")
        )
        .into_bytes();
        content.extend_from_slice(&self.body);
        let entries: Vec<&str> = self
            .header("webhook-signature")
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1a,"))
            .collect();
        for entry in &entries {
            let Ok(Ok(signature)) = STANDARD.decode(entry).map(<[u8; 64]>::try_from) else {
                continue;
            };
            let signature = ed25519_dalek::Signature::from_bytes(&signature);
            if ed25519_dalek::Verifier::verify(&key, &content, &signature).is_ok() {
                return Ok(());
            }
        }
        Err(format!("none of {} v1a signatures verifies", entries.len()))
    }

    /// Checks `X-ESP-Signature` (or the given header): `sha256=` and the hex
    /// HMAC-SHA256 of the body keyed with the secret string as shown.
    pub fn verify_esp(&self, secret: &str, header: &str) -> Result<(), String> {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&self.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let got = self.header(header);
        if got == want {
            Ok(())
        } else {
            Err(format!("{header} is {got:?}, expected {want:?}"))
        }
    }
}

struct State {
    requests: Mutex<Vec<Request>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let reply = {
        let next = state.script.lock().unwrap().pop_front();
        next.unwrap_or_else(|| state.default.lock().unwrap().clone())
    };
    state
        .requests
        .lock()
        .unwrap()
        .push(Request { at, headers, body });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        reply.body.clone(),
    )
        .into_response();
    if let Some(value) = &reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", value.parse().unwrap());
    }
    for (name, value) in &reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}

impl Receiver {
    /// Starts a receiver that answers 200 unless scripted otherwise.
    pub async fn start() -> Receiver {
        Receiver::start_with(Reply::status(200)).await
    }

    pub async fn start_with(default: Reply) -> Receiver {
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers the next requests with `replies`, in order, then with the default.
    pub fn script(&self, replies: Vec<Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = reply;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Event id (the body's `id`) → the `webhook-id`s it arrived with, in order.
    pub fn arrivals(&self) -> std::collections::HashMap<String, Vec<String>> {
        let mut seen: std::collections::HashMap<String, Vec<String>> = Default::default();
        for r in self.requests() {
            let id = r.json()["id"].as_str().unwrap().to_string();
            seen.entry(id).or_default().push(r.webhook_id());
        }
        seen
    }

    /// Waits until every one of `ids` has arrived; returns the arrivals (as
    /// [`Receiver::arrivals`]). Panics after `limit`, saying how many are missing
    /// and `context` (a daemon's log, say).
    pub async fn wait_arrivals<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String> + Clone,
        limit: Duration,
        context: impl Fn() -> String,
    ) -> std::collections::HashMap<String, Vec<String>> {
        let deadline = Instant::now() + limit;
        loop {
            let arrivals = self.arrivals();
            let total = ids.clone().into_iter().count();
            let missing = ids
                .clone()
                .into_iter()
                .filter(|id| !arrivals.contains_key(*id))
                .count();
            if missing == 0 {
                return arrivals;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} of {total} acknowledged events never arrived within {limit:?}; {}",
                context()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until at least `n` requests arrived; panics after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Request> {
        let deadline = Instant::now() + limit;
        loop {
            let count = self.count();
            if count >= n {
                return self.requests();
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {count} requests within {limit:?}, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
