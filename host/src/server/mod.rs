//! The HTTP listener: accepts connections, bounds how many are open and how long a
//! client may take, and hands each request to the API's router.
//!
//! hyper serves each connection (HTTP/1.1, keep-alive). What evhost adds:
//! - `server.idle_timeout` and `server.header_timeout`, kept by the socket wrapper
//!   ([`io`]): a silent connection, or one that sends a head too slowly, is cut;
//! - `server.body_timeout`, kept by the API while it reads a body
//!   (`crate::api::guard`);
//! - `server.max_connections` ([`conn`]): at the limit, the longest-idle connection
//!   makes way for the new one, so idle connections cannot lock publishers out;
//! - `server.trusted_proxies` ([`proxy`]): behind them, the client's address comes
//!   from `X-Forwarded-For`; the API (and so the audit log) sees that address.

pub mod conn;
mod io;
mod proxy;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as MetricsRegistry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use conn::{Cut, Registry};
use io::Watched;

/// `server.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most events in one batch request.
    pub max_batch_events: usize,
    /// Live tails (`GET /v1/events/stream`) open at once; past it, 429.
    pub max_tails: usize,
    /// Audit verifications (`GET /v1/audit/verify`) running at once; past it, 429.
    pub max_verifies: usize,
    /// Connections open at once. At the limit the longest-idle one is closed to
    /// let a new one in; when none is idle, new ones wait.
    pub max_connections: usize,
    /// Longest a request's head may take, from its first byte.
    #[serde(with = "crate::config::duration")]
    pub header_timeout: Duration,
    /// Longest a request's body may take to arrive, from the end of its head;
    /// past it, 408 and the connection is closed.
    #[serde(with = "crate::config::duration")]
    pub body_timeout: Duration,
    /// Longest a connection may stay silent with no request in flight.
    #[serde(with = "crate::config::duration")]
    pub idle_timeout: Duration,
    /// Serve HTTPS with this certificate and key (PEM files, reloaded when they
    /// change); plain HTTP when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<tls::TlsConfig>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (addresses or
    /// networks); from anyone else the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a stop may take: in-flight requests finish and committed events are
    /// dispatched within it; what is left stays in the log for the next start.
    #[serde(with = "crate::config::duration")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            max_batch_events: 1000,
            max_tails: 64,
            max_verifies: 2,
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
            tls: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// What the listener counts.
#[derive(Clone)]
pub struct ServerMetrics {
    open: Gauge,
    timeouts: Family<KindLabel, Counter>,
    evicted: Counter,
    received: Counter,
    rate_limited: Family<TokenLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabel {
    token: crate::metrics::Escaped,
}

impl ServerMetrics {
    pub(crate) fn register(registry: &mut MetricsRegistry) -> ServerMetrics {
        let m = ServerMetrics {
            open: Gauge::default(),
            timeouts: Family::default(),
            evicted: Counter::default(),
            received: Counter::default(),
            rate_limited: Family::default(),
        };
        registry.register(
            "evhost_http_connections",
            "HTTP connections open",
            m.open.clone(),
        );
        registry.register(
            "evhost_http_timeouts",
            "HTTP connections cut by a timeout, by kind (header, body, idle)",
            m.timeouts.clone(),
        );
        registry.register(
            "evhost_http_connections_evicted",
            "Idle HTTP connections closed to make room at server.max_connections",
            m.evicted.clone(),
        );
        registry.register(
            "evhost_http_received_bytes",
            "Bytes read from HTTP connections (heads and bodies)",
            m.received.clone(),
        );
        registry.register(
            "evhost_rate_limited",
            "Requests refused 429 because their token is over its rate_per_second, by token name",
            m.rate_limited.clone(),
        );
        m
    }

    /// A request refused for its token's rate.
    pub fn rate_limited(&self, token: &str) {
        self.rate_limited
            .get_or_create(&TokenLabel {
                token: crate::metrics::Escaped::from(token.to_string()),
            })
            .inc();
    }

    /// A body that did not arrive within `server.body_timeout`.
    pub fn body_timeout(&self) {
        self.timeouts
            .get_or_create(&KindLabel { kind: "body" })
            .inc();
    }

    fn cut(&self, cut: Cut) {
        let kind = match cut {
            Cut::Idle => "idle",
            Cut::Header => "header",
        };
        self.timeouts.get_or_create(&KindLabel { kind }).inc();
    }
}

/// What every connection's task shares.
struct Shared {
    http: hyper::server::conn::http1::Builder,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: ServerConfig,
    metrics: ServerMetrics,
}

/// Serves `router` on `listener` until `stop` resolves; then stops accepting, lets
/// each connection finish its request in flight, and returns once all are closed.
/// With `server.tls`, connections are TLS (the pair was loaded by [`tls::acceptor`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: ServerMetrics,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let stopping = CancellationToken::new();
    let registry = Registry::new(config.max_connections, stopping.clone());
    let mut connections = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    let shared = Arc::new(Shared {
        http,
        router,
        tls,
        config,
        metrics,
    });
    tokio::pin!(stop);
    loop {
        let (socket, peer) = tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was
                    // taken: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let place = tokio::select! {
            () = &mut stop => break,
            place = registry.enter() => place,
        };
        let _ = socket.set_nodelay(true);
        let shared = shared.clone();
        shared.metrics.open.inc();
        connections.spawn(async move {
            match &shared.tls {
                None => connection(socket, peer, &place, &shared).await,
                Some(acceptor) => {
                    // The handshake is part of the head: it must end within
                    // server.header_timeout.
                    let handshake =
                        tokio::time::timeout(shared.config.header_timeout, acceptor.accept(socket));
                    match handshake.await {
                        Ok(Ok(stream)) => connection(stream, peer, &place, &shared).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => shared.metrics.cut(Cut::Header),
                    }
                }
            }
            if place.state.was_evicted() {
                shared.metrics.evicted.inc();
            }
            shared.metrics.open.dec();
        });
    }
    drop(listener);
    stopping.cancel();
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it closes, is cut by a deadline, or is asked to
/// close (evicted, or the server is stopping).
async fn connection<S>(socket: S, peer: SocketAddr, place: &conn::Place, shared: &Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = place.state.clone();
    let io = TokioIo::new(Watched::new(
        socket,
        state.clone(),
        shared.config.idle_timeout,
        shared.config.header_timeout,
        shared.metrics.received.clone(),
    ));
    let service = {
        let shared = shared.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let client =
                proxy::client_address(peer, request.headers(), &shared.config.trusted_proxies);
            request.extensions_mut().insert(ConnectInfo(client));
            // Busy from here until the response body is written: the guard rides
            // inside the body and is dropped with it.
            let busy = state.begin();
            let response = shared
                .router
                .clone()
                .oneshot(request.map(axum::body::Body::new));
            async move {
                let response = response
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                Ok::<_, Infallible>(response.map(move |body| {
                    body.map_frame(move |frame| {
                        let _ = &busy;
                        frame
                    })
                }))
            }
        })
    };
    let connection = shared.http.serve_connection(io, service);
    tokio::pin!(connection);
    let close = place.state.close.clone();
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = close.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Some(cut) = place.state.cut() {
        shared.metrics.cut(cut);
    } else if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
