//! Taking over a node that vanished: what it committed and did not dispatch is
//! dispatched here, and the deliveries it had leased are due at once (this node's
//! lanes claim them on their next poll).

use std::sync::Arc;
use std::time::Duration;

use super::{Node, db, lock_key};
use crate::eventlog::Dispatch;
use crate::store::Store;

/// What a takeover needs from the rest of the daemon.
#[derive(Clone)]
pub struct Options {
    /// How far behind the adopted chains' dispatch may fall: the daemon's own lag.
    pub max_lag: (u64, u64),
    pub stop: tokio_util::sync::CancellationToken,
}

/// Looks at every other node that did not stop cleanly: one whose lock is free has
/// died and is taken over now; one whose heartbeat is older than `timeout` but
/// whose lock is held is cut off (the lock's connection terminated), to be taken
/// over at the next look.
pub async fn watch(
    pool: &sqlx::PgPool,
    me: &Node,
    timeout: Duration,
    dispatch: &Arc<dyn Dispatch>,
    options: &Options,
) -> Result<(), sqlx::Error> {
    let store = Store::Postgres(pool.clone());
    let now_us = chrono::Utc::now().timestamp_micros();
    for node in db::list(&store).await? {
        if node.node == me.node || node.stopped_us.is_some() {
            continue;
        }
        let key = lock_key(&node.node);
        let mut conn = pool.acquire().await?;
        let (free,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        if !free {
            let silent = Duration::from_micros((now_us - node.heartbeat_us).max(0) as u64);
            if silent > timeout {
                tracing::warn!(node = %node.node, ?silent, "a node has not stamped its heartbeat in too long; cutting it off to take it over");
                // An advisory lock on a bigint key shows in pg_locks as its two
                // 32-bit halves, unsigned (classid, objid). Every connection of the
                // node is cut, not only its lock's: a hung node may
                // hold row locks in an open transaction that the takeover's writes
                // would wait for. Its connections are named after it.
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $2 AND pid <> pg_backend_pid() \
                     UNION ALL SELECT pg_terminate_backend(pid) FROM pg_locks \
                     WHERE locktype = 'advisory' AND granted AND classid = (($1::bigint >> 32) & 4294967295)::oid \
                     AND objid = ($1::bigint & 4294967295)::oid AND objsubid = 1",
                )
                .bind(key)
                .bind(super::application_name(&node.node))
                .execute(&mut *conn)
                .await?;
            }
            continue;
        }
        let result = take_over(&store, me, &node, dispatch, options).await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await?;
        result?;
    }
    Ok(())
}

async fn take_over(
    store: &Store,
    me: &Node,
    dead: &db::NodeRow,
    dispatch: &Arc<dyn Dispatch>,
    options: &Options,
) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    let now_us = chrono::Utc::now().timestamp_micros();
    let leases = crate::webhooks::db::release_leases(store, &dead.owner, now_us).await?;
    let rows = crate::audit::dispatch_orphans(
        store,
        &dead.node,
        dispatch.clone(),
        options.max_lag,
        options.stop.clone(),
    )
    .await?;
    if options.stop.is_cancelled() {
        return Ok(());
    }
    let Store::Postgres(pool) = store else {
        return Ok(());
    };
    db::taken_over(pool, &dead.node, &me.node).await?;
    tracing::warn!(
        node = %dead.node,
        leased_deliveries = leases,
        log_rows = rows,
        took = ?started.elapsed(),
        "took over a node that vanished: its leased deliveries are due now and what it had not dispatched is dispatched"
    );
    Ok(())
}
