//! Fleet-wide upkeep on one node at a time: retention, and the gauges that read a
//! count of the whole fleet's rows (pending deliveries, the oldest due), which one
//! node exports so that a `sum()` over the nodes stays right.

use crate::store::Store;

/// Held while this node does one piece of fleet-wide work; on PostgreSQL an
/// advisory lock on a pooled connection, which is closed rather than returned to
/// the pool with the lock still held. On SQLite there is one node: always held.
pub struct Turn {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

/// Takes the turn for `work` if no other node has it now.
pub async fn try_turn(store: &Store, work: &str) -> Result<Option<Turn>, sqlx::Error> {
    let Store::Postgres(pool) = store else {
        return Ok(Some(Turn { conn: None }));
    };
    let mut conn = pool.acquire().await?;
    // Whatever happens next, this connection does not go back to the pool: a lock
    // left on it would be held by whoever borrowed it next.
    conn.close_on_drop();
    let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
        .bind(super::lock_key(&format!("upkeep:{work}")))
        .fetch_one(&mut *conn)
        .await?;
    Ok(got.then_some(Turn { conn: Some(conn) }))
}

impl Turn {
    /// Whether this node's turn is still held (its connection still answers).
    pub async fn held(&mut self) -> bool {
        use sqlx::Connection;
        match self.conn.as_mut() {
            None => true,
            Some(conn) => conn.ping().await.is_ok(),
        }
    }
}
