//! The webhook system's tasks on a schedule: retention of finished deliveries, and
//! upkeep (routes reloaded, the outbox gauges refreshed).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{Shared, db};

/// Removes finished deliveries older than `webhooks.retention_days`, in bounded
/// batches, every `webhooks.purge_interval`.
pub(super) async fn retention(shared: Arc<Shared>) {
    const BATCH: i64 = 5_000;
    let mut tick = tokio::time::interval(shared.options.purge_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.stop.cancelled() => return,
        }
        // One node of a fleet at a time; the turn goes with the pass.
        let _turn = match crate::cluster::leader::try_turn(&shared.store, "webhook-retention").await
        {
            Ok(Some(turn)) => turn,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "webhook retention cannot start; trying again next time");
                continue;
            }
        };
        let age = Duration::from_secs(u64::from(shared.options.retention_days) * 86_400);
        let before_us = Utc::now().timestamp_micros() - age.as_micros() as i64;
        while !shared.stop.is_cancelled() {
            match db::purge(&shared.store, before_us, BATCH).await {
                Ok(n) => {
                    shared.metrics.webhooks.purged.inc_by(n);
                    if n > 0 {
                        tracing::info!(
                            deliveries = n,
                            "webhook retention removed finished deliveries"
                        );
                    }
                    if n < BATCH as u64 {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "webhook retention failed; trying again next time");
                    break;
                }
            }
        }
    }
}

/// Reloads endpoints changed by other daemons and samples the outbox for the
/// metrics, every poll interval. The outbox gauges count the whole fleet's rows,
/// so one node exports them (the one holding the `webhook-gauges` turn); the others
/// export 0, and a `sum()` over the nodes is the fleet's figure.
pub(super) async fn upkeep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.options.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_stats = std::time::Instant::now() - Duration::from_secs(60);
    let mut turn: Option<crate::cluster::leader::Turn> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.stop.cancelled() => return,
        }
        if let Err(error) = shared.reload().await {
            tracing::warn!(%error, "could not reload webhook endpoints");
        }
        if last_stats.elapsed() >= Duration::from_secs(2) {
            last_stats = std::time::Instant::now();
            let m = &shared.metrics.webhooks;
            if let Some(t) = turn.as_mut()
                && !t.held().await
            {
                turn = None;
            }
            if turn.is_none() {
                turn = crate::cluster::leader::try_turn(&shared.store, "webhook-gauges")
                    .await
                    .unwrap_or(None);
            }
            if turn.is_none() {
                m.pending.set(0);
                m.oldest_due_seconds.set(0.0);
                continue;
            }
            match db::outbox_stats(&shared.store).await {
                Ok((pending, oldest)) => {
                    let now = Utc::now().timestamp_micros();
                    m.pending.set(pending);
                    let waited = oldest.map_or(0, |due| (now - due).max(0));
                    m.oldest_due_seconds.set(waited as f64 / 1e6);
                }
                Err(error) => tracing::warn!(%error, "could not sample the webhook outbox"),
            }
        }
    }
}
