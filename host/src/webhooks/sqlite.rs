//! The outbox's frequent writes on SQLite — new deliveries, claims and attempt
//! results — on a connection of the writer's own (rusqlite), each call one
//! transaction of cached single-row statements. Through sqlx each batch was one
//! multi-row statement built, parsed and bound anew and handed to sqlx's worker
//! thread; with the write turn held for 90 % of a delivery burst, that overhead
//! bounded the whole outbox (see BENCHMARKS.md). The SQL is the same as the
//! PostgreSQL side's, row by row; the callers are in [`super::db`].

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::db::{AttemptRecord, Claimed, EndpointTally, NewDelivery, NewMessage, PENDING};

/// Writes messages and deliveries in one transaction.
pub fn enqueue(
    conn: &mut Connection,
    messages: &[NewMessage],
    deliveries: &[NewDelivery],
    now_us: i64,
) -> rusqlite::Result<()> {
    // IMMEDIATE: take the write lock before the first insert rather than upgrading
    // midway (an upgrade that finds the lock taken fails at once, without waiting).
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO webhook_messages (id, event_type, body, cloudevent, created_us) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
        )?;
        for m in messages {
            insert.execute(params![m.id, m.event_type, m.body, m.cloudevent, now_us])?;
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO webhook_deliveries (id, endpoint_id, message_id, event_type, status, \
             attempts, next_attempt_us, owner, created_us, updated_us) \
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?8) ON CONFLICT (id) DO NOTHING",
        )?;
        for d in deliveries {
            insert.execute(params![
                d.id,
                d.endpoint_id,
                d.message_id,
                d.event_type,
                PENDING,
                d.next_attempt_us,
                d.owner,
                now_us
            ])?;
        }
    }
    tx.commit()
}

/// Claims up to `limit` due deliveries of one endpoint for `owner` until `lease_us`,
/// and reads their bodies in the same transaction.
pub fn claim(
    conn: &mut Connection,
    endpoint_id: &str,
    owner: &str,
    now_us: i64,
    lease_us: i64,
    limit: i64,
) -> rusqlite::Result<Vec<Claimed>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let claimed = {
        let mut update = tx.prepare_cached(
            "UPDATE webhook_deliveries SET owner = ?1, next_attempt_us = ?2 WHERE id IN \
             (SELECT id FROM webhook_deliveries WHERE endpoint_id = ?3 AND status = 'pending' \
              AND next_attempt_us <= ?4 ORDER BY next_attempt_us LIMIT ?5) \
             RETURNING id, message_id, event_type, attempts",
        )?;
        let rows = update
            .query_map(
                params![owner, lease_us, endpoint_id, now_us, limit],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut body =
            tx.prepare_cached("SELECT body, cloudevent FROM webhook_messages WHERE id = ?1")?;
        let mut claimed = Vec::with_capacity(rows.len());
        for (id, message_id, event_type, attempts) in rows {
            let (body, cloudevent) = body
                .query_row([&message_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?
                .unwrap_or_default();
            claimed.push(Claimed {
                id,
                event_type,
                attempts,
                body,
                cloudevent,
            });
        }
        claimed
    };
    tx.commit()?;
    Ok(claimed)
}

/// Records a batch of results in one transaction: attempt rows, delivery states,
/// claims given back unsent, and endpoint counters. Returns each tallied endpoint's
/// failure count afterwards.
pub fn record(
    conn: &mut Connection,
    records: &[AttemptRecord],
    tallies: &[EndpointTally],
    now_us: i64,
) -> rusqlite::Result<Vec<(String, i64)>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut counts = Vec::with_capacity(tallies.len());
    {
        let mut attempt = tx.prepare_cached(
            "INSERT OR IGNORE INTO webhook_attempts (delivery_id, attempt, time_us, status_code, \
             latency_us, error, response) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut sent = tx.prepare_cached(
            "UPDATE webhook_deliveries SET status = ?2, attempts = ?3, next_attempt_us = ?4, \
             owner = NULL, last_status = ?5, last_error = ?6, updated_us = ?7 WHERE id = ?1",
        )?;
        let mut unsent = tx.prepare_cached(
            "UPDATE webhook_deliveries SET next_attempt_us = ?2, owner = NULL WHERE id = ?1",
        )?;
        for r in records {
            if r.attempt == 0 {
                unsent.execute(params![r.delivery_id, r.next_attempt_us])?;
                continue;
            }
            attempt.execute(params![
                r.delivery_id,
                r.attempt,
                r.time_us,
                r.status_code,
                r.latency_us,
                r.error,
                r.response
            ])?;
            sent.execute(params![
                r.delivery_id,
                r.status,
                r.attempt,
                r.next_attempt_us,
                r.status_code,
                r.error,
                now_us
            ])?;
        }
        let mut tally = tx.prepare_cached(
            "UPDATE webhook_endpoints SET \
             failure_count = CASE WHEN ?2 THEN ?3 ELSE failure_count + ?3 END, \
             last_triggered_us = COALESCE(?4, last_triggered_us) \
             WHERE id = ?1 RETURNING failure_count",
        )?;
        for t in tallies {
            let count: Option<i64> = tally
                .query_map(
                    params![t.endpoint_id, t.reset, t.failures, t.last_success_us],
                    |row| row.get(0),
                )?
                .next()
                .transpose()?;
            counts.push((t.endpoint_id.clone(), count.unwrap_or(0)));
        }
    }
    tx.commit()?;
    Ok(counts)
}
