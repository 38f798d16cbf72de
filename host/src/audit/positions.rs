//! Where the dispatcher stands in each of this daemon's chains, stored so that a
//! restart dispatches what was committed and not yet dispatched: the SQL, the task
//! that stores the positions as they move, and the replay at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::db::{Inserter, WriteError, chain_page};
use super::{DISPATCH, POSITION_EVERY, Record};
use crate::eventlog::{Dispatch, Tracker};
use crate::store::{Durability, Store, dispatch};

/// Where `consumer` stands in each of `chains` (`None` where it has no row yet).
pub async fn positions(
    store: &Store,
    consumer: &str,
    chains: &[String],
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let rows: Vec<(String, i64)> = dispatch!(store, |pool| {
        sqlx::query_as("SELECT chain, position FROM log_positions WHERE consumer = $1")
            .bind(consumer)
            .fetch_all(pool)
            .await?
    });
    Ok(chains
        .iter()
        .map(|chain| rows.iter().find(|(c, _)| c == chain).map(|(_, p)| *p))
        .collect())
}

/// Stores where `consumer` stands in each chain. A position never moves back.
/// Through the log's writer connection on SQLite (a write every 200 ms to the log's
/// file takes its turn with the appends); committed without waiting for the disk,
/// since a position lost to a power cut only makes the next start dispatch again.
pub async fn save_positions(
    inserter: &Inserter,
    consumer: &str,
    positions: &[(String, i64)],
    now_us: i64,
) -> Result<(), WriteError> {
    const UPSERT: &str = "INSERT INTO log_positions (consumer, chain, position, updated_us) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (consumer, chain) DO UPDATE \
         SET position = excluded.position, updated_us = excluded.updated_us \
         WHERE log_positions.position < excluded.position";
    if positions.is_empty() {
        return Ok(());
    }
    match inserter {
        Inserter::Sqlite(writer) => {
            let (consumer, positions) = (consumer.to_string(), positions.to_vec());
            writer
                .write(Durability::Crash, move |conn| {
                    let tx =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    {
                        let mut upsert = tx.prepare_cached(UPSERT)?;
                        for (chain, position) in &positions {
                            upsert.execute(rusqlite::params![consumer, chain, position, now_us])?;
                        }
                    }
                    tx.commit()
                })
                .await
        }
        Inserter::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            for (chain, position) in positions {
                sqlx::query(UPSERT)
                    .bind(consumer)
                    .bind(chain)
                    .bind(position)
                    .bind(now_us)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }
    }
}

/// Up to `limit` event rows (not actions or decisions) of `chain` after
/// `after_chain_seq`, in chain order, and the last `chain_seq` looked at.
pub async fn event_rows(
    store: &Store,
    chain: &str,
    after_chain_seq: i64,
    limit: i64,
) -> Result<(Vec<Record>, Option<i64>), sqlx::Error> {
    let page = chain_page(store, chain, after_chain_seq, limit).await?;
    let last = page.last().map(|r| r.chain_seq);
    Ok((
        page.into_iter()
            .filter(|r| r.entry.source.is_some())
            .collect(),
        last,
    ))
}

/// Stores the dispatcher's positions every [`POSITION_EVERY`] while they move, and
/// once more when stopped. While they stand still it looks less and less often (up to
/// every [`POSITION_IDLE_MAX`]), so an idle daemon is not woken five times a second; a
/// position stored late only means a little more is dispatched again after a crash.
pub(super) async fn keep(inserter: Inserter, tracker: Arc<Tracker>, stop: CancellationToken) {
    let mut saved: HashMap<String, i64> = HashMap::new();
    let mut pause = POSITION_EVERY;
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(pause) => false,
            () = stop.cancelled() => true,
        };
        let moved: Vec<(String, i64)> = tracker
            .positions()
            .into_iter()
            .filter(|(chain, position)| saved.get(chain) != Some(position))
            .collect();
        pause = if moved.is_empty() {
            (pause * 2).min(POSITION_IDLE_MAX)
        } else {
            POSITION_EVERY
        };
        if !moved.is_empty() {
            let now_us = chrono::Utc::now().timestamp_micros();
            match save_positions(&inserter, DISPATCH, &moved, now_us).await {
                Ok(()) => saved.extend(moved),
                Err(error) => {
                    tracing::warn!(%error, "cannot store where dispatch stands; will try again")
                }
            }
        }
        if stopping {
            let (events, _) = tracker.lag();
            for (chain, head, position) in tracker.heads() {
                if position < head {
                    tracing::info!(%chain, position, head, "events committed but not yet dispatched stay in the log; the next start dispatches them");
                }
            }
            if events > 0 {
                tracing::info!(events, "events not yet dispatched at the stop");
            }
            return;
        }
    }
}

/// The longest pause between two looks at positions that stand still.
const POSITION_IDLE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Rows read back per page when replaying.
const REPLAY_PAGE: i64 = 1000;

pub(super) async fn replay(
    store: Store,
    tracker: Arc<Tracker>,
    chains: Vec<String>,
    dispatch: Arc<dyn Dispatch>,
    stop: CancellationToken,
) {
    let heads = tracker.heads();
    for (index, chain) in chains.iter().enumerate() {
        let (_, head, from) = heads[index].clone();
        if from >= head {
            tracker.replay_done(index);
            continue;
        }
        let started = Instant::now();
        let mut after = from;
        let mut replayed = 0u64;
        let mut backoff = Duration::from_millis(100);
        while after < head && !stop.is_cancelled() {
            let (rows, last) = match event_rows(&store, chain, after, REPLAY_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, %chain, "cannot read the log back for dispatch; will try again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let Some(last) = last else { break };
            let mut committed = Vec::with_capacity(rows.len());
            for row in rows.into_iter().filter(|r| r.chain_seq <= head) {
                let seq = row.chain_seq;
                let Some(event) = crate::eventlog::event_of(&row) else {
                    tracing::error!(%chain, seq, event_id = %row.entry.event_id, "a log row cannot be read back as an event; it is not dispatched");
                    continue;
                };
                let event = Arc::new(event);
                let bytes = crate::eventlog::event_bytes(&event);
                let mut admission = tracker.admit_wait(1, bytes).await;
                let ticket = tracker.ticket(index, seq, &mut admission, bytes, true);
                committed.push(crate::bus::Committed {
                    event,
                    ticket,
                    done: None,
                });
            }
            replayed += committed.len() as u64;
            dispatch.dispatch(committed);
            after = last;
            tracker.replayed_to(index, after.min(head));
        }
        if stop.is_cancelled() {
            return;
        }
        tracker.replay_done(index);
        tracing::info!(%chain, events = replayed, from, to = head, took = ?started.elapsed(), "dispatched what was committed before the last stop");
    }
}

/// Dispatches what another node committed to its chains and did not dispatch (a
/// node that vanished, being taken over): from where dispatch stood in each chain
/// to its head, through `dispatch`, storing the positions as they move. Returns
/// once every such event is handled (or `stop` fires), with the number of log rows
/// that were past where dispatch stood.
pub async fn dispatch_orphans(
    store: &Store,
    node: &str,
    dispatch: Arc<dyn Dispatch>,
    max_lag: (u64, u64),
    stop: CancellationToken,
) -> Result<u64, sqlx::Error> {
    let Store::Postgres(pool) = store else {
        return Ok(0);
    };
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT chain, position FROM log_positions WHERE consumer = $1 \
         AND (chain = $2 OR chain LIKE $2 || '.%') ORDER BY chain",
    )
    .bind(DISPATCH)
    .bind(node)
    .fetch_all(pool)
    .await?;
    let mut chains = Vec::new();
    for (chain, position) in stored {
        let (head, _) = super::db::chain_head(store, &chain).await?;
        if position < head {
            chains.push((chain, position, head));
        }
    }
    if chains.is_empty() {
        return Ok(0);
    }
    let rows: i64 = chains.iter().map(|(_, p, h)| h - p).sum();
    let names: Vec<String> = chains.iter().map(|(c, _, _)| c.clone()).collect();
    let tracker = Tracker::new(chains, max_lag.0, max_lag.1);
    let keeper_stop = CancellationToken::new();
    let keeper = tokio::spawn(keep(
        Inserter::Postgres(pool.clone()),
        tracker.clone(),
        keeper_stop.clone(),
    ));
    replay(
        store.clone(),
        tracker.clone(),
        names,
        dispatch,
        stop.clone(),
    )
    .await;
    while tracker.lag().0 > 0 && !stop.is_cancelled() {
        tokio::time::sleep(POSITION_EVERY).await;
    }
    keeper_stop.cancel();
    let _ = keeper.await;
    Ok(rows.max(0) as u64)
}
