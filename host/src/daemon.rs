//! `evhost serve`: wires the parts together, runs until told to stop, then drains.
//!
//! Data flows one way: ingest → the event log (committed before any answer) → the
//! dispatcher (plugins, subscribers) → the webhook outbox and the other consumers.
//!
//! Shutdown order: refuse new events (503), end live tails, let in-flight HTTP
//! requests finish, publish `server.stopped`, dispatch what was committed, store
//! where dispatch stands, exit. All of it within `server.shutdown_timeout`; what is
//! not done by then stays in the log and is dispatched at the next start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use evhost_catalog::{ServerStarted, ServerStopped, types};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::auth::{Auth, check_listen};
use crate::api::stream::Tail;
use crate::api::{self, AppState, Limits};
use crate::audit::{Audit, AuditOptions};
use crate::bus::{Bus, BusOptions};
use crate::cluster::{Cluster, Node, TakeoverOptions};
use crate::config::Config;
use crate::event::{Catalog, Event, TypePattern};
use crate::eventlog::Log;
use crate::ingest::Ingest;
use crate::metrics::{EventMetrics, Metrics};
use crate::plugins::loader::Plugins;
use crate::store::Store;
use crate::webhooks::{WebhookOptions, Webhooks};

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration does not allow a safe start (exit code 2).
    #[error("{0}")]
    Refused(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed")]
    Server(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("audit log")]
    Audit(#[from] crate::audit::AuditError),
    #[error("webhooks")]
    Webhooks(#[from] crate::webhooks::WebhookError),
    #[error("plugins")]
    Plugins(#[from] crate::plugins::loader::PluginError),
    /// A long-lived task failed (see [`crate::supervise`]): the daemon stopped so
    /// that it is started again.
    #[error("the {task} failed ({reason}); evhost stopped so that it is started again")]
    TaskFailed { task: String, reason: String },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("server.tls")]
    Tls(#[from] crate::server::tls::TlsError),
    #[error("cannot read or write {path}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A running daemon's parts, for callers that embed it (tests, the benchmark).
pub struct Running {
    pub addr: SocketAddr,
    pub bus: Bus,
    pub metrics: Arc<Metrics>,
}

/// The software version, as reported in events and the User-Agent.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the daemon until `stop` completes, then shuts down cleanly. `on_ready` is
/// called once the listener is bound and `server.started` is published.
pub async fn serve(
    config: Config,
    stop: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Running),
) -> Result<(), ServeError> {
    let started = Instant::now();
    let auth = Auth::new(&config.auth.tokens);
    check_listen(&auth, &config.server.listen).map_err(ServeError::Refused)?;

    let metrics = Metrics::new(config.metrics.max_domains);
    let catalog: Arc<Catalog> = Arc::new(Catalog::new(
        config.events.allow_custom_types,
        config.events.allow_unknown_fields,
    ));
    // The certificate is read before anything else starts: a bad pair stops the
    // start. Its watcher ends with the daemon.
    let tls_watch = CancellationToken::new();
    let _tls_watch_guard = tls_watch.clone().drop_guard();
    let tls = config
        .server
        .tls
        .clone()
        .map(|pair| crate::server::tls::acceptor(pair, tls_watch.clone()))
        .transpose()?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.server.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Server)?;

    let bus = Bus::start(
        BusOptions {
            workers: config.events.workers,
            queue_size: config.events.max_lag,
            handler_timeout: config.events.handler_timeout,
        },
        metrics.clone(),
    );
    let tail = Tail::new();
    subscribe_builtins(&bus, &metrics, &tail);

    // One daemon per data folder: its chain ids, leases and checkpoint key are this
    // node's identity. Held until the daemon returns.
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    let node = crate::audit::chain_id(&config.data_dir)?;
    let store = Store::connect_as(&config, &crate::cluster::application_name(&node)).await?;
    store.migrate().await?;
    // Named like the audit chain, in its own file, so a restarted daemon knows (and
    // gives back) the leases it held.
    let owner_path = config.data_dir.join("webhook-owner-id");
    let owner = local_id(&owner_path).map_err(|source| ServeError::DataDir {
        path: owner_path,
        source,
    })?;
    let cluster = Cluster::join(
        &store,
        Node {
            node: node.clone(),
            owner: owner.clone(),
            hostname: hostname(),
            version: VERSION.into(),
        },
        config.cluster.clone(),
    )
    .await?;
    let audit = Audit::start(
        store.clone(),
        AuditOptions::from_config(&config),
        metrics.clone(),
        node,
        Some(Arc::new(bus.clone())),
    )
    .await?;
    let log = Log::new(audit.clone(), metrics.clone());
    if bus.set_log(Arc::new(log.clone())).is_err() {
        unreachable!("the bus gets its log once, here");
    }
    let ingest = Arc::new(Ingest::new(catalog.clone(), log.clone()));
    let webhooks = if config.webhooks.enabled {
        let webhooks = Webhooks::start(
            store.clone(),
            WebhookOptions::from_config(&config, owner),
            metrics.clone(),
            log.clone(),
            catalog.clone(),
        )
        .await?;
        bus.subscribe(vec![TypePattern::All], webhooks.subscriber())
            .expect("built-in subscriber ids are unique");
        if bus.set_delivery(webhooks.delivery_sink()).is_err() {
            unreachable!("the bus gets its delivery sink once, here");
        }
        Some(webhooks)
    } else {
        None
    };
    // Plugins last: the first events they see may come as soon as the bus has its
    // pipeline.
    let plugins = if config.plugins.enabled {
        let plugins = Plugins::start(
            config.plugins.clone(),
            config.plugins_dir(),
            plugin_cache(&config)?,
            metrics.clone(),
            catalog.clone(),
            Some(audit.clone()),
        )
        .await?;
        if bus.set_pipeline(plugins.pipeline()).is_err() {
            unreachable!("the bus gets its pipeline once, here");
        }
        tracing::info!(dir = %config.plugins_dir().display(), loaded = plugins.list().iter().filter(|p| p.state != "failed").count(), "watching the plugin folder");
        Some(plugins)
    } else {
        None
    };
    // Every consumer is in place: what the last run committed and did not dispatch
    // goes now, beside new events.
    audit.replay(Arc::new(bus.clone()));
    let shutdown = CancellationToken::new();
    crate::metrics::history::sample(&metrics, &shutdown);
    cluster.run(
        &metrics.tasks,
        Arc::new(bus.clone()),
        TakeoverOptions {
            max_lag: log.tracker().limits(),
            stop: shutdown.clone(),
        },
    );
    tracing::info!(
        backend = store.backend(),
        audit = config.audit.enabled,
        webhooks = webhooks.is_some(),
        "database ready"
    );
    let state = Arc::new(AppState {
        ingest: ingest.clone(),
        auth,
        metrics: metrics.clone(),
        tail,
        limits: Limits {
            max_body_bytes: config.server.max_body_bytes,
            max_batch_events: config.server.max_batch_events,
            body_timeout: config.server.body_timeout,
        },
        shutdown: shutdown.clone(),
        audit: config.audit.enabled.then(|| audit.clone()),
        store: Some(store.clone()),
        webhooks: webhooks.clone(),
        plugins: plugins.clone(),
        cluster: Some(cluster.clone()),
        metrics_token: config.metrics.token.clone(),
        tails: Arc::new(tokio::sync::Semaphore::new(config.server.max_tails)),
        verifies: Arc::new(tokio::sync::Semaphore::new(config.server.max_verifies)),
    });

    let hostname = hostname();
    publish_own(
        &log,
        types::SERVER_STARTED,
        &ServerStarted {
            server: "evhost".into(),
            version: VERSION.into(),
            hostname: hostname.clone(),
            pid: std::process::id(),
        },
    )
    .await;
    let open_api = state.auth.is_open();
    if open_api {
        tracing::warn!(
            "no API token configured: the API is open to anyone on this machine, so evhost listens on loopback only; set EVHOST_API_TOKEN to require a token"
        );
    }
    tracing::info!(%addr, version = VERSION, workers = config.events.workers, queue_size = config.events.queue_size, "evhost is listening");
    on_ready(&Running {
        addr,
        bus: bus.clone(),
        metrics: metrics.clone(),
    });

    // On the stop signal: refuse new events and end tails first, so the HTTP server's
    // graceful shutdown only waits for requests already in flight.
    // A failed task stops the daemon too, without waiting for the full grace: a
    // part is missing, and what it had not done stays in the log for the next start.
    let tasks = metrics.tasks.clone();
    let begin_shutdown = {
        let ingest = ingest.clone();
        let shutdown = shutdown.clone();
        let tasks = tasks.clone();
        async move {
            tokio::select! {
                () = stop => {
                    tracing::info!("stopping: refusing new events, finishing accepted ones");
                    ingest.stop();
                }
                () = tasks.failed() => {
                    // Refusing, and not ready, for a moment before the listener
                    // closes, so probes and load balancers see why.
                    tracing::error!("stopping after a failed task: refusing new events");
                    ingest.stop();
                    tokio::time::sleep(FAILED_HOLD).await;
                }
            }
            shutdown.cancel();
        }
    };
    let server = crate::server::serve(
        listener,
        crate::ui::with_console(api::router(state), &config.ui, open_api),
        config.server.clone(),
        tls,
        metrics.server.clone(),
        begin_shutdown,
    );
    let mut server = tokio::spawn(server);
    shutdown.cancelled().await;
    let grace = match tasks.failure() {
        Some(_) => config.server.shutdown_timeout.min(FAILED_GRACE),
        None => config.server.shutdown_timeout,
    };
    let deadline = tokio::time::Instant::now() + grace;
    match tokio::time::timeout_at(deadline, &mut server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "HTTP requests still open after the shutdown timeout; closing them"
            );
            server.abort();
        }
    }

    let drain = async {
        publish_own(
            &log,
            types::SERVER_STOPPED,
            &ServerStopped {
                server: "evhost".into(),
                version: VERSION.into(),
                hostname,
                pid: std::process::id(),
                uptime_seconds: started.elapsed().as_secs(),
                reason: "signal".into(),
            },
        )
        .await;
        bus.shutdown().await;
        if let Some(plugins) = &plugins {
            plugins.stop();
        }
        if let Some(webhooks) = &webhooks {
            webhooks.shutdown().await;
        }
        audit.shutdown().await;
        cluster.leave().await;
        store.close().await;
    };
    let drained = tokio::time::timeout_at(deadline, drain).await.is_ok();
    if let Some(failure) = tasks.failure() {
        return Err(ServeError::TaskFailed {
            task: failure.task,
            reason: failure.reason,
        });
    }
    if !drained {
        let (events, _) = log.tracker().lag();
        tracing::warn!(
            ?grace,
            events,
            "stopped at the shutdown timeout (server.shutdown_timeout); events committed but not processed stay in the log and are processed at the next start"
        );
        return Ok(());
    }
    tracing::info!("evhost stopped; every accepted event was dispatched");
    Ok(())
}

/// How long a daemon stopping after a failed task drains at most.
const FAILED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a daemon with a failed task answers (`/readyz` 503 naming it,
/// publishers 503) before its listener closes.
const FAILED_HOLD: std::time::Duration = std::time::Duration::from_secs(1);

/// The subscribers every daemon has.
fn subscribe_builtins(bus: &Bus, metrics: &Arc<Metrics>, tail: &Tail) {
    let metric_patterns = EventMetrics::PATTERNS
        .iter()
        .map(|p| TypePattern::parse(p).expect("valid built-in pattern"))
        .collect();
    bus.subscribe(
        metric_patterns,
        Arc::new(EventMetrics::new(metrics.clone())),
    )
    .expect("built-in subscriber ids are unique");
    bus.subscribe(vec![TypePattern::All], Arc::new(tail.clone()))
        .expect("built-in subscriber ids are unique");
}

/// Publishes one of the daemon's own events through the log; a failure is logged,
/// not fatal.
async fn publish_own<T: serde::Serialize>(log: &Log, kind: &str, data: &T) {
    let event = match Event::from_daemon(kind, data) {
        Ok(event) => event,
        Err(error) => {
            tracing::error!(event_type = kind, %error, "could not encode the daemon's own event");
            return;
        }
    };
    if let Err(error) = log.publish_own(event).await {
        tracing::error!(event_type = kind, %error, "could not publish the daemon's own event");
    }
}

/// Takes an exclusive lock on `<data_dir>/evhost.lock` (and writes this process's
/// id into it), or refuses when another process holds it, naming that process.
/// The lock goes with the process, however it ends.
fn lock_data_dir(
    data_dir: &std::path::Path,
) -> Result<nix::fcntl::Flock<std::fs::File>, ServeError> {
    use std::io::{Read, Seek, Write};
    let path = data_dir.join("evhost.lock");
    let io = |source| ServeError::DataDir {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let mut lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(ServeError::Refused(format!(
                "{} is in use by another evhost (pid {}); each daemon needs a data_dir of its own (data_dir, EVHOST_DATA_DIR)",
                data_dir.display(),
                holder.trim()
            )));
        }
        Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
    };
    lock.set_len(0).map_err(io)?;
    lock.rewind().map_err(io)?;
    write!(lock, "{}", std::process::id()).map_err(io)?;
    Ok(lock)
}

/// A name for this daemon that survives restarts: read from `path`, or made
/// (`<hostname>-<random>`) and written there on first use. The audit chain and the
/// webhook leases are named this way, each in its own file.
pub fn local_id(path: &std::path::Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            let id = format!("{}-{}", hostname(), &suffix[..8]);
            std::fs::write(path, &id)?;
            Ok(id)
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The compiled-plugin cache, signed with the key in `<data_dir>/plugin-cache.key`.
fn plugin_cache(config: &Config) -> Result<crate::plugins::cache::Cache, ServeError> {
    let key = config.data_dir.join("plugin-cache.key");
    crate::plugins::cache::Cache::open(config.plugin_cache_dir(), &key)
        .map_err(|source| ServeError::DataDir { path: key, source })
}
