//! The `nodes` table.

use serde::Serialize;

use super::Node;
use crate::store::{Store, dispatch};

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Records a node starting (again): heartbeat now, not stopped, not taken over.
pub async fn register(store: &Store, node: &Node, pid: u32) -> Result<(), sqlx::Error> {
    let now = now_us();
    dispatch!(store, |pool| {
        sqlx::query(
            "INSERT INTO nodes (node, owner, hostname, pid, version, started_us, heartbeat_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (node) DO UPDATE SET \
             owner = excluded.owner, hostname = excluded.hostname, pid = excluded.pid, \
             version = excluded.version, started_us = excluded.started_us, \
             heartbeat_us = excluded.heartbeat_us, stopped_us = NULL, taken_over_by = NULL",
        )
        .bind(&node.node)
        .bind(&node.owner)
        .bind(&node.hostname)
        .bind(i64::from(pid))
        .bind(&node.version)
        .bind(now)
        .execute(pool)
        .await?;
    });
    Ok(())
}

pub async fn beat(store: &Store, node: &str) -> Result<(), sqlx::Error> {
    dispatch!(store, |pool| {
        sqlx::query("UPDATE nodes SET heartbeat_us = $2 WHERE node = $1")
            .bind(node)
            .bind(now_us())
            .execute(pool)
            .await?;
    });
    Ok(())
}

pub async fn stopped(store: &Store, node: &str) -> Result<(), sqlx::Error> {
    dispatch!(store, |pool| {
        sqlx::query("UPDATE nodes SET stopped_us = $2 WHERE node = $1")
            .bind(node)
            .bind(now_us())
            .execute(pool)
            .await?;
    });
    Ok(())
}

/// Records that `by` took `node` over (unless it has started again meanwhile).
pub async fn taken_over(pool: &sqlx::PgPool, node: &str, by: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE nodes SET stopped_us = $3, taken_over_by = $2 WHERE node = $1 AND stopped_us IS NULL",
    )
    .bind(node)
    .bind(by)
    .bind(now_us())
    .execute(pool)
    .await?;
    Ok(())
}

/// A node as `GET /v1/nodes` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeRow {
    pub node: String,
    /// The name on its webhook leases.
    pub owner: String,
    pub hostname: String,
    pub pid: i64,
    pub version: String,
    pub started_us: i64,
    pub heartbeat_us: i64,
    pub stopped_us: Option<i64>,
    pub taken_over_by: Option<String>,
}

type Row = (
    String,
    String,
    String,
    i64,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
);

/// Every node, in name order.
pub async fn list(store: &Store) -> Result<Vec<NodeRow>, sqlx::Error> {
    let rows: Vec<Row> = dispatch!(store, |pool| {
        sqlx::query_as(
            "SELECT node, owner, hostname, pid, version, started_us, heartbeat_us, stopped_us, \
             taken_over_by FROM nodes ORDER BY node",
        )
        .fetch_all(pool)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(|r| NodeRow {
            node: r.0,
            owner: r.1,
            hostname: r.2,
            pid: r.3,
            version: r.4,
            started_us: r.5,
            heartbeat_us: r.6,
            stopped_us: r.7,
            taken_over_by: r.8,
        })
        .collect())
}

/// Deliveries `owner` holds leased (pending).
pub async fn leased(store: &Store, owner: &str) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = dispatch!(store, |pool| {
        sqlx::query_as(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE owner = $1 AND status = 'pending'",
        )
        .bind(owner)
        .fetch_one(pool)
        .await?
    });
    Ok(n)
}

/// Per chain: its head, and where dispatch stands in it.
pub async fn chain_lag(store: &Store) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    Ok(dispatch!(store, |pool| {
        sqlx::query_as(
            "SELECT p.chain, COALESCE((SELECT MAX(a.chain_seq) FROM audit_log a WHERE a.chain = p.chain), p.position), \
             p.position FROM log_positions p WHERE p.consumer = $1",
        )
        .bind(crate::audit::DISPATCH)
        .fetch_all(pool)
        .await?
    }))
}
