//! `GET /v1/nodes`: the daemons sharing this database, their heartbeats and what
//! each holds (read scope).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::{AppState, rfc3339_us};
use crate::cluster::db;
use crate::config::Scope;

/// One node.
#[derive(Serialize, ToSchema)]
pub struct NodeView {
    node: String,
    /// `running`, `silent` (no heartbeat within `cluster.node_timeout`: about to be
    /// taken over), `stopped`, or `taken_over`.
    state: &'static str,
    hostname: String,
    pid: i64,
    version: String,
    started: String,
    last_heartbeat: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    taken_over_by: Option<String>,
    /// Log rows of its chains not yet dispatched.
    undispatched_rows: i64,
    /// Pending deliveries it holds leased.
    leased_deliveries: i64,
}

#[derive(Serialize, ToSchema)]
pub struct NodeList {
    /// The node answering.
    this_node: String,
    nodes: Vec<NodeView>,
}

/// Lists the nodes.
#[utoipa::path(get, path = "/v1/nodes", tag = "operations",
    responses((status = 200, body = NodeList)),
    security(("bearer" = ["read"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<NodeList>, ApiError> {
    state.auth.authorize(&headers, Scope::Read)?;
    let Some(cluster) = &state.cluster else {
        return Err(ApiError::not_found("this daemon is not part of a cluster"));
    };
    let store = state
        .store
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no database is open"))?;
    let unavailable = |error: sqlx::Error| {
        tracing::error!(%error, "cannot read the nodes");
        ApiError::unavailable(
            "database_unavailable",
            "the database cannot be read; retry shortly",
            5,
        )
    };
    let rows = db::list(store).await.map_err(unavailable)?;
    let lag = db::chain_lag(store).await.map_err(unavailable)?;
    let now = chrono::Utc::now().timestamp_micros();
    let timeout = cluster.config.node_timeout.as_micros() as i64;
    let mut nodes = Vec::with_capacity(rows.len());
    for row in rows {
        let undispatched_rows = lag
            .iter()
            .filter(|(chain, _, _)| {
                chain == &row.node
                    || chain
                        .strip_prefix(row.node.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .map(|(_, head, position)| (head - position).max(0))
            .sum();
        let leased_deliveries = db::leased(store, &row.owner).await.map_err(unavailable)?;
        let state = match (&row.taken_over_by, row.stopped_us) {
            (Some(_), _) => "taken_over",
            (None, Some(_)) => "stopped",
            (None, None) if now - row.heartbeat_us > timeout => "silent",
            (None, None) => "running",
        };
        nodes.push(NodeView {
            node: row.node,
            state,
            hostname: row.hostname,
            pid: row.pid,
            version: row.version,
            started: rfc3339_us(row.started_us),
            last_heartbeat: rfc3339_us(row.heartbeat_us),
            stopped: row.stopped_us.map(rfc3339_us),
            taken_over_by: row.taken_over_by,
            undispatched_rows,
            leased_deliveries,
        });
    }
    Ok(Json(NodeList {
        this_node: cluster.node().node.clone(),
        nodes,
    }))
}
