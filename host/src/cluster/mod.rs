//! The daemons sharing one database. Several daemons on one PostgreSQL (behind any
//! load balancer) are the way to run more than one; each is a node, named by its
//! chain id, with a row in `nodes`.
//!
//! - **One identity per node.** A node holds a PostgreSQL advisory lock on its
//!   name for as long as it runs, on a connection of its own, so no two processes
//!   can write one node's chains or hold its leases (on SQLite the `data_dir` lock
//!   does this). If that connection is lost, the node takes its lock again at
//!   once; if another node holds it by then (a takeover), this one stops (exit
//!   70) rather than write on beside it.
//! - **Heartbeats.** Each node stamps its row every `cluster.heartbeat_interval`;
//!   `GET /v1/nodes` shows them.
//! - **Takeover.** Every node checks the others each `cluster.heartbeat_interval`.
//!   A node whose lock is free and that did not stop cleanly has died (its
//!   connections closed with it); one whose heartbeat is older than
//!   `cluster.node_timeout` but whose lock is still held is cut off (its lock's
//!   connection terminated), then taken. Taking over a node (see [`adopt`])
//!   dispatches what it committed and did not dispatch, and makes the deliveries
//!   it had leased due at once.
//!
//! Per node: the live tail, the plugins folder, `/metrics` counters. Fleet-wide:
//! the log, deliveries, endpoints, dead letters.

mod adopt;
pub mod db;
pub mod leader;

pub use adopt::Options as TakeoverOptions;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::eventlog::Dispatch;
use crate::store::Store;
use crate::supervise::{Ends, Supervisor};

/// `cluster.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// How often a node stamps its heartbeat and looks at the others.
    #[serde(with = "crate::config::duration")]
    pub heartbeat_interval: Duration,
    /// A node whose heartbeat is this old is taken over (PostgreSQL).
    #[serde(with = "crate::config::duration")]
    pub node_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            heartbeat_interval: Duration::from_secs(1),
            node_timeout: Duration::from_secs(10),
        }
    }
}

/// This node, as the others see it.
#[derive(Debug, Clone)]
pub struct Node {
    pub node: String,
    /// The name on its webhook leases.
    pub owner: String,
    pub hostname: String,
    pub version: String,
}

/// This node's place in the cluster, while it runs.
pub struct Cluster {
    store: Store,
    node: Node,
    pub config: ClusterConfig,
    stop: CancellationToken,
    /// The connection holding this node's advisory lock (PostgreSQL).
    lock: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot register this node in the database")]
    Db(#[from] sqlx::Error),
    #[error(
        "node {0} is already running against this database (another process holds its lock); each daemon needs a data_dir of its own"
    )]
    Taken(String),
}

/// What a node's PostgreSQL connections are named (`application_name`, which
/// `pg_stat_activity` shows): how an operator, and a takeover, tell them apart.
pub fn application_name(node: &str) -> String {
    format!("evhost {node}")
}

/// The advisory lock key of a node.
fn lock_key(node: &str) -> i64 {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(format!("evhost-node:{node}").as_bytes());
    i64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

impl Cluster {
    /// Takes this node's lock (PostgreSQL; waiting while another node is taking it
    /// over) and records it in `nodes`.
    pub async fn join(
        store: &Store,
        node: Node,
        config: ClusterConfig,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let lock = match store {
            Store::Sqlite(_) => None,
            Store::Postgres(pool) => {
                Some(hold_lock(pool, &node.node, Duration::from_secs(30)).await?)
            }
        };
        db::register(store, &node, std::process::id()).await?;
        Ok(Arc::new(Cluster {
            store: store.clone(),
            node,
            config,
            stop: CancellationToken::new(),
            lock: tokio::sync::Mutex::new(lock),
        }))
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Starts the heartbeat, the watch on the lock, and (PostgreSQL) the watch on
    /// the other nodes, whose orphans go to `dispatch`.
    pub fn run(
        self: &Arc<Self>,
        tasks: &Supervisor,
        dispatch: Arc<dyn Dispatch>,
        adopt: adopt::Options,
    ) {
        let me = self.clone();
        let every = self.config.heartbeat_interval;
        let timeout = self.config.node_timeout;
        tasks.spawn(
            "cluster heartbeat",
            Ends::OnStop(self.stop.clone()),
            async move { me.heartbeat(every, timeout, dispatch, adopt).await },
        );
    }

    async fn heartbeat(
        self: Arc<Self>,
        every: Duration,
        timeout: Duration,
        dispatch: Arc<dyn Dispatch>,
        adopt: adopt::Options,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stop.cancelled() => return,
            }
            if let Err(error) = db::beat(&self.store, &self.node.node).await {
                tracing::warn!(%error, "cannot stamp this node's heartbeat; will try again");
            }
            if !self.keep_lock().await {
                // Returning while not stopping fails the task: the daemon exits 70.
                tracing::error!(node = %self.node.node, "lost this node's lock to another node (a takeover): this one stops");
                return;
            }
            if let Store::Postgres(pool) = &self.store
                && let Err(error) = adopt::watch(pool, &self.node, timeout, &dispatch, &adopt).await
            {
                tracing::warn!(%error, "cannot look at the other nodes; will try again");
            }
        }
    }

    /// Whether this node still holds its lock (always, on SQLite): when the lock's
    /// connection has ended (a restart of the server, a connection cut), it is
    /// taken again, unless another node holds it now. While the database cannot be
    /// reached at all, nobody else can take it either: it counts as held.
    async fn keep_lock(&self) -> bool {
        let Store::Postgres(pool) = &self.store else {
            return true;
        };
        let mut lock = self.lock.lock().await;
        if let Some(conn) = lock.as_mut()
            && conn.ping().await.is_ok()
        {
            return true;
        }
        *lock = None;
        match hold_lock(pool, &self.node.node, Duration::ZERO).await {
            Ok(conn) => {
                *lock = Some(conn);
                tracing::info!(node = %self.node.node, "took this node's lock again after its connection ended");
                if let Err(error) = db::register(&self.store, &self.node, std::process::id()).await
                {
                    tracing::warn!(%error, "cannot record this node again");
                }
                true
            }
            Err(ClusterError::Taken(_)) => false,
            Err(ClusterError::Db(error)) => {
                tracing::warn!(%error, "cannot take this node's lock again yet; will try again");
                true
            }
        }
    }

    /// Marks this node stopped (its leases were given back, its log dispatched or
    /// left for its next start) and lets its lock go.
    pub async fn leave(&self) {
        self.stop.cancel();
        if let Err(error) = db::stopped(&self.store, &self.node.node).await {
            tracing::warn!(%error, "cannot mark this node stopped");
        }
        if let Some(conn) = self.lock.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}

/// Takes `node`'s advisory lock on a connection of its own, waiting (and saying so)
/// while another process holds it: a node being taken over, or the same node
/// started twice.
async fn hold_lock(
    pool: &sqlx::PgPool,
    node: &str,
    wait: Duration,
) -> Result<sqlx::PgConnection, ClusterError> {
    let options = pool.connect_options().as_ref().clone();
    let mut conn = sqlx::PgConnection::connect_with(&options).await?;
    let key = lock_key(node);
    let started = std::time::Instant::now();
    loop {
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if got {
            return Ok(conn);
        }
        // A takeover ends within seconds; a second process of the same node never.
        if started.elapsed() >= wait {
            return Err(ClusterError::Taken(node.to_string()));
        }
        tracing::warn!(
            node,
            "this node's lock is held by another process (a takeover in progress?); waiting"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
