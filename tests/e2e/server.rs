//! The HTTP server's edges, driven over raw TCP: slow heads, slow bodies and silent
//! connections are cut at their timeouts; idle connections past
//! `server.max_connections` make way for a publisher; a body without a token is not
//! read.

use std::time::{Duration, Instant};

use evhost_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn address(d: &Daemon) -> String {
    d.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or 10 s pass); what it sent.
async fn read_to_close(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection is still open after 10 s"),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

fn timeouts_daemon() -> Options {
    Options::default()
        .env("EVHOST_SERVER__HEADER_TIMEOUT", "1s")
        .env("EVHOST_SERVER__BODY_TIMEOUT", "1s")
        .env("EVHOST_SERVER__IDLE_TIMEOUT", "2s")
}

#[tokio::test]
async fn a_head_sent_one_byte_at_a_time_is_cut_at_the_header_timeout() {
    let d = Daemon::start_with(timeouts_daemon()).await;
    let mut stream = TcpStream::connect(address(&d)).await.unwrap();
    let started = Instant::now();
    let head = b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
    let mut cut = false;
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let (answer, _) = read_to_close(&mut stream).await;
    let took = started.elapsed();
    assert!(
        cut || answer.is_empty() || !answer.contains(" 202 "),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut after {took:?}"
    );
    d.wait_for_metric("evhost_http_timeouts_total{kind=\"header\"}")
        .await;
    // The daemon still serves.
    assert_eq!(
        d.post_json(
            "/v1/events",
            &json!({"type": "message.received", "data": received("example.com", false)})
        )
        .await
        .0,
        202
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_idle_timeout_and_a_kept_alive_one_too() {
    let d = Daemon::start_with(timeouts_daemon()).await;
    // Never says a word.
    let mut silent = TcpStream::connect(address(&d)).await.unwrap();
    let (answer, took) = read_to_close(&mut silent).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    // One request, then silence: the idle clock starts when the response is written.
    let mut kept = TcpStream::connect(address(&d)).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (answer, took) = read_to_close(&mut kept).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    d.wait_metric_at_least(
        "evhost_http_timeouts_total{kind=\"idle\"}",
        2.0,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn a_body_slower_than_the_body_timeout_gets_408_and_the_connection_closes() {
    let d = Daemon::start_with(timeouts_daemon()).await;
    let mut stream = TcpStream::connect(address(&d)).await.unwrap();
    let head = "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"{\"type\": \"message.").await.unwrap();
    let started = Instant::now();
    let (answer, _) = read_to_close(&mut stream).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    d.wait_for_metric("evhost_http_timeouts_total{kind=\"body\"}")
        .await;
    // Nothing of it was stored.
    assert!(
        d.audit_rows("types=message.received", 10, None)
            .await
            .is_empty()
    );
}

/// 10,000 connections that never send a request do not lock a publisher out: past
/// `server.max_connections` the longest-idle ones make way.
#[tokio::test]
async fn ten_thousand_idle_connections_do_not_stop_a_publisher() {
    raise_fd_limit(10_000 + 512);
    let d = Daemon::start_with(
        Options::default()
            .env("EVHOST_SERVER__MAX_CONNECTIONS", 1000)
            .env("EVHOST_SERVER__IDLE_TIMEOUT", "120s"),
    )
    .await;
    let address = address(&d);
    let started = Instant::now();
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    let opened = started.elapsed();
    let started = Instant::now();
    let (status, body) = d
        .post_json(
            "/v1/events",
            &json!({"type": "message.received", "data": received("example.com", false)}),
        )
        .await;
    let publish = started.elapsed();
    assert_eq!(status, 202, "{body}");
    assert!(
        publish < Duration::from_secs(5),
        "published after {publish:?}"
    );
    let metrics = d.metrics().await;
    let evicted = metric_value(&metrics, "evhost_http_connections_evicted_total");
    let open = metric_value(&metrics, "evhost_http_connections");
    eprintln!(
        "10,000 opened in {opened:?}; publish took {publish:?}; evicted {evicted}; open {open}"
    );
    assert!(evicted >= 9_000.0, "evicted {evicted}");
    assert!(open <= 1000.0, "open {open}");
    drop(idle);
}

/// A publish without a token that announces and sends a 1 MiB body is answered 401
/// after reading little more than its head.
#[tokio::test]
async fn a_body_without_a_token_is_not_read() {
    let d =
        Daemon::start_with(Options::default().env("EVHOST_API_TOKEN", "a-token-of-24-characters"))
            .await;
    let before = metric_value(&d.metrics().await, "evhost_http_received_bytes_total");
    let mut stream = TcpStream::connect(address(&d)).await.unwrap();
    let head = "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    // The body goes out from another task, as fast as the socket takes it.
    let (mut read, mut write) = stream.into_split();
    let sender = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < 1024 * 1024 {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), read.read(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let _ = tokio::time::timeout(Duration::from_secs(5), sender).await;
    // The scrape's own request adds a little; the body would add 1 MiB.
    let after = metric_value(&d.metrics().await, "evhost_http_received_bytes_total");
    let read_bytes = after - before;
    eprintln!("bytes read for the refused request (and one scrape): {read_bytes}");
    assert!(read_bytes < 128.0 * 1024.0, "read {read_bytes} bytes");
}

fn raise_fd_limit(wanted: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < wanted {
        assert!(
            hard >= wanted,
            "this test needs {wanted} open files; the hard limit is {hard}"
        );
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).unwrap();
    }
}

/// Behind a trusted proxy the audit records the client `X-Forwarded-For` names;
/// from anyone else the header is ignored.
#[tokio::test]
async fn the_audit_records_the_forwarded_client_only_behind_a_trusted_proxy() {
    for (proxies, expected) in [("[127.0.0.0/8]", "203.0.113.9"), ("[]", "127.0.0.1")] {
        let d =
            Daemon::start_with(Options::default().env("EVHOST_SERVER__TRUSTED_PROXIES", proxies))
                .await;
        let response = d
            .client
            .post(d.url("/v1/events"))
            .header("x-forwarded-for", "198.51.100.1, 203.0.113.9")
            .json(&json!({"type": "proxied.event", "data": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let mut rows = Vec::new();
        for _ in 0..100 {
            rows = d.audit_rows("types=proxied.event", 10, None).await;
            if !rows.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(rows[0]["actor_ip"], expected, "trusted_proxies {proxies}");
    }
}

/// With no token (loopback only), what a web page could send is refused: a rebound
/// Host, a foreign Origin, a body without a JSON content type.
#[tokio::test]
async fn the_open_mode_refuses_what_a_web_page_could_send() {
    let d = Daemon::start().await;
    let event =
        json!({"type": "message.received", "data": received("example.com", false)}).to_string();
    let post = |headers: Vec<(&'static str, &'static str)>| {
        let mut request = d.client.post(d.url("/v1/events")).body(event.clone());
        for (k, v) in headers {
            request = request.header(k, v);
        }
        async move { status_json(request.send().await.unwrap()).await }
    };
    let json_type = ("content-type", "application/json");
    let (status, body) = post(vec![json_type, ("host", "rebound.example:8080")]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("host_not_allowed"))
    );
    let (status, body) = post(vec![json_type, ("origin", "https://evil.example")]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("cross_origin"))
    );
    let (status, body) = post(vec![("content-type", "text/plain")]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (status, _) = post(vec![]).await;
    assert_eq!(status, 415);
    // A rebound name cannot read the tail either.
    let response = d
        .client
        .get(d.url("/v1/events/stream"))
        .header("host", "rebound.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // The same event as a tool sends it is taken.
    let (status, body) = post(vec![json_type, ("origin", "http://localhost:3000")]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        d.metric("evhost_events_rejected_total{reason=\"forbidden\"}")
            .await,
        2.0
    );
}

/// `server.max_verifies` bounds the audit verifications running at once.
#[tokio::test]
async fn verifications_past_max_verifies_get_429() {
    let d = Daemon::start_with(Options::default().env("EVHOST_SERVER__MAX_VERIFIES", 1)).await;
    let batch: Vec<Value> = (0..1000)
        .map(|i| json!({"type": "verify.load", "data": {"i": i}}))
        .collect();
    for _ in 0..10 {
        assert_eq!(d.post_json("/v1/events/batch", &json!(batch)).await.0, 202);
    }
    let runs = (0..6).map(|_| d.get_json("/v1/audit/verify"));
    let answers = futures_util::future::join_all(runs).await;
    let ok = answers
        .iter()
        .filter(|(s, b)| *s == 200 && b["ok"] == true)
        .count();
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert!(ok >= 1, "{answers:?}");
    assert!(
        !refused.is_empty(),
        "no run overlapped another: {answers:?}"
    );
    assert!(
        refused
            .iter()
            .all(|(_, b)| b["error"]["code"] == "too_many_verifies")
    );
    // Once they end, a place comes back.
    assert_eq!(d.get_json("/v1/audit/verify").await.0, 200);
}

/// A self-signed certificate for localhost: (cert PEM path, key PEM path, DER).
fn self_signed(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            &format!("/CN=localhost {name}"),
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            // A leaf, not a CA: rustls refuses a CA certificate as a server's.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (Debian's openssl package) makes the test certificates");
    assert!(status.success());
    let der = std::process::Command::new("openssl")
        .args(["x509", "-outform", "der", "-in"])
        .arg(&cert)
        .output()
        .unwrap()
        .stdout;
    (cert, key, der)
}

/// The certificate the daemon presents to a new connection.
async fn presented(d: &Daemon) -> Vec<u8> {
    let response = d.client.get(d.url("/healthz")).send().await.unwrap();
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a TLS connection")
        .to_vec()
}

/// `server.tls` serves HTTPS from PEM files; a certificate swapped on disk is
/// served to new connections without a restart; plain HTTP gets nothing.
#[tokio::test]
async fn tls_from_files_serves_and_a_swapped_certificate_is_picked_up() {
    let certs = tempfile::tempdir().unwrap();
    let (a_cert, a_key, a_der) = self_signed(certs.path(), "a");
    let (b_cert, b_key, b_der) = self_signed(certs.path(), "b");
    let (cert, key) = (certs.path().join("live.crt"), certs.path().join("live.key"));
    std::fs::copy(&a_cert, &cert).unwrap();
    std::fs::copy(&a_key, &key).unwrap();
    let d = Daemon::start_with(
        Options::default()
            .env("EVHOST_SERVER__TLS__CERT", cert.display())
            .env("EVHOST_SERVER__TLS__KEY", key.display())
            .trust(&std::fs::read(&a_cert).unwrap())
            .trust(&std::fs::read(&b_cert).unwrap()),
    )
    .await;
    assert!(d.base.starts_with("https://"));
    assert_eq!(presented(&d).await, a_der);
    let event = json!({"type": "message.received", "data": received("example.com", false)});
    assert_eq!(d.post_json("/v1/events", &event).await.0, 202);
    // Plain HTTP on the same port is not served.
    let plain = reqwest::Client::new()
        .get(d.url("/healthz").replace("https://", "http://"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // Renewal: the key, then the certificate, replaced on disk.
    std::fs::copy(&b_key, &key).unwrap();
    std::fs::copy(&b_cert, &cert).unwrap();
    let started = Instant::now();
    loop {
        let fresh = d.fresh_client();
        let response = fresh.get(d.url("/healthz")).send().await.unwrap();
        let der = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .unwrap()
            .to_vec();
        if der == b_der {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(d.post_json("/v1/events", &event).await.0, 202);
    assert!(d.log().contains("TLS certificate reloaded"));
}
