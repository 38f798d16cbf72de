//! What the log's tests share: logs on a test database, events, and appending them
//! as concurrent publishers would.

use std::sync::Arc;

use evhost::audit::{Audit, AuditOptions};
use evhost::event::{Actor, Event};
use evhost::eventlog::event_bytes;
use evhost::metrics::Metrics;
use serde_json::value::RawValue;

use super::support::TestDb;

impl TestDb {
    pub async fn audit(&self, chain: &str) -> Arc<Audit> {
        self.audit_with_writers(chain, 1).await
    }

    pub async fn audit_with_writers(&self, chain: &str, writers: usize) -> Arc<Audit> {
        let options = AuditOptions {
            writers: Some(writers),
            ..self.audit_options()
        };
        Audit::start(
            self.store.clone(),
            options,
            Metrics::new(10),
            chain.into(),
            None,
        )
        .await
        .unwrap()
    }
}

pub fn event(id: &str, kind: &str, token: Option<&str>) -> Arc<Event> {
    Arc::new(Event {
        id: id.into(),
        kind: kind.into(),
        time: chrono::Utc::now(),
        source: "/test".into(),
        actor: Actor {
            token: token.map(Into::into),
            ip: Some("192.0.2.9".parse().unwrap()),
            on_behalf_of: None,
        },
        data: Arc::from(RawValue::from_string(format!(r#"{{"message_id":"{id}"}}"#)).unwrap()),
        hops: 0,
    })
}

/// Appends each event on its own, all at once (as concurrent publishers would), and
/// waits until every one is committed; returns how many were new.
pub async fn record(audit: &Arc<Audit>, events: &[Arc<Event>]) -> usize {
    let appends = events.iter().map(|e| {
        let admission = audit.tracker().admit_over(1, event_bytes(e));
        audit.publish(vec![e.clone()], admission, false)
    });
    futures_util::future::join_all(appends)
        .await
        .into_iter()
        .map(|answer| answer.unwrap())
        .filter(|answer| !answer[0].duplicate)
        .count()
}
