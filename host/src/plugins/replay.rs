//! `evhost plugin replay`: a plugin file run offline over events read back from the
//! event log, summarised, and compared event by event with another version (the one
//! serving). Nothing is applied: the events are only read.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::loader::PluginError;
use super::offline::{CallReport, Runner};
use crate::event::Event;

/// What one version did over the replayed events.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Events of a type the plugin subscribes to: the calls made.
    pub calls: u64,
    /// Calls that returned no drop or replace (the event went on as it was).
    pub passed: u64,
    pub dropped: u64,
    pub replaced: u64,
    /// Events added (`emit` actions) and direct deliveries (`deliver` actions).
    pub emitted: u64,
    pub delivered: u64,
    /// Failed calls by kind (`timeout`, `trap`, `error`, `invalid_action`, …).
    pub failed: BTreeMap<String, u64>,
    /// Time spent in `handle`, all calls together.
    pub call_us: u64,
}

impl Summary {
    fn add(&mut self, call: &CallReport) {
        self.calls += 1;
        self.call_us += call.duration_us;
        if let Some(kind) = call.error_kind {
            *self.failed.entry(kind.to_string()).or_default() += 1;
            return;
        }
        let has = |name: &str| call.actions.iter().any(|a| a.get(name).is_some());
        let count = |name: &str| {
            call.actions
                .iter()
                .filter(|a| a.get(name).is_some())
                .count()
        };
        if has("drop") {
            self.dropped += 1;
        } else if has("replace") {
            self.replaced += 1;
        } else {
            self.passed += 1;
        }
        self.emitted += count("emit") as u64;
        self.delivered += count("deliver") as u64;
    }
}

/// What one version did to one event: its actions, or how the call failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Not called: the plugin does not subscribe to the event's type.
    NotSubscribed,
    Actions(Vec<serde_json::Value>),
    Failed {
        kind: String,
        error: String,
    },
}

impl Outcome {
    fn of(call: Option<&CallReport>) -> Outcome {
        match call {
            None => Outcome::NotSubscribed,
            Some(c) => match (&c.error_kind, &c.error) {
                (Some(kind), error) => Outcome::Failed {
                    kind: kind.to_string(),
                    error: error.clone().unwrap_or_default(),
                },
                (None, _) => Outcome::Actions(c.actions.clone()),
            },
        }
    }
}

/// An event the two versions treated differently.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub event_id: String,
    pub event_type: String,
    pub candidate: Outcome,
    pub serving: Outcome,
}

/// The whole replay: counts per version and the first differences.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Events read from the log.
    pub events: u64,
    pub candidate: Summary,
    /// Present when compared with a serving version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<Summary>,
    /// Events on which both versions did the same (with a serving version).
    pub same: u64,
    /// Events on which they differed, all of them counted, the first few kept.
    pub different: u64,
    pub differences: Vec<Difference>,
    /// The first event read and the last (ids), for the next `--from`.
    pub first_event: Option<String>,
    pub last_event: Option<String>,
}

/// Runs `candidate` (and `serving`, when given) over events fed one by one.
pub struct Replay {
    candidate: Runner,
    serving: Option<Runner>,
    keep: usize,
    report: Report,
}

impl Replay {
    /// `keep`: how many differences to keep for the report.
    pub fn new(candidate: Runner, serving: Option<Runner>, keep: usize) -> Replay {
        let report = Report {
            events: 0,
            candidate: Summary::default(),
            serving: serving.as_ref().map(|_| Summary::default()),
            same: 0,
            different: 0,
            differences: Vec::new(),
            first_event: None,
            last_event: None,
        };
        Replay {
            candidate,
            serving,
            keep,
            report,
        }
    }

    pub fn candidate(&self) -> &Runner {
        &self.candidate
    }

    pub fn serving(&self) -> Option<&Runner> {
        self.serving.as_ref()
    }

    /// Runs both versions on one event, as the daemon would call each.
    pub fn feed(&mut self, event: &Arc<Event>) -> Result<(), PluginError> {
        let report = &mut self.report;
        report.events += 1;
        if report.first_event.is_none() {
            report.first_event = Some(event.id.to_string());
        }
        report.last_event = Some(event.id.to_string());
        let candidate = call_if_subscribed(&mut self.candidate, event)?;
        if let Some(call) = &candidate {
            report.candidate.add(call);
        }
        let Some(serving) = self.serving.as_mut() else {
            return Ok(());
        };
        let served = call_if_subscribed(serving, event)?;
        if let (Some(summary), Some(call)) = (report.serving.as_mut(), &served) {
            summary.add(call);
        }
        let (ours, theirs) = (
            Outcome::of(candidate.as_ref()),
            Outcome::of(served.as_ref()),
        );
        if same(&ours, &theirs) {
            report.same += 1;
        } else {
            report.different += 1;
            if report.differences.len() < self.keep {
                report.differences.push(Difference {
                    event_id: event.id.to_string(),
                    event_type: event.kind.to_string(),
                    candidate: ours,
                    serving: theirs,
                });
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Report {
        self.report
    }
}

/// Two outcomes agree when the actions are equal, or both failed the same way (the
/// messages may name versions or times).
pub(super) fn same(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Failed { kind: x, .. }, Outcome::Failed { kind: y, .. }) => x == y,
        _ => a == b,
    }
}

fn call_if_subscribed(
    runner: &mut Runner,
    event: &Arc<Event>,
) -> Result<Option<CallReport>, PluginError> {
    if !runner.subscribes_to(&event.kind) {
        return Ok(None);
    }
    runner.call(event).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(actions: Vec<serde_json::Value>, error: Option<&'static str>) -> CallReport {
        CallReport {
            event_id: "e".into(),
            event_type: "t.x".into(),
            duration_us: 3,
            actions,
            error_kind: error,
            error: error.map(|e| format!("{e} at 12:00")),
        }
    }

    #[test]
    fn a_summary_counts_each_call_once_by_its_strongest_action() {
        let mut s = Summary::default();
        s.add(&call(vec![], None));
        s.add(&call(
            vec![json!({"drop": "spam"}), json!({"emit": {}})],
            None,
        ));
        s.add(&call(vec![json!({"replace": {}})], None));
        s.add(&call(
            vec![json!({"deliver": {}}), json!({"deliver": {}})],
            None,
        ));
        s.add(&call(vec![], Some("timeout")));
        s.add(&call(vec![], Some("timeout")));
        assert_eq!(
            (
                s.calls,
                s.passed,
                s.dropped,
                s.replaced,
                s.emitted,
                s.delivered
            ),
            (6, 2, 1, 1, 1, 2)
        );
        assert_eq!(s.failed["timeout"], 2);
        assert_eq!(s.call_us, 18);
    }

    #[test]
    fn failures_of_one_kind_agree_whatever_their_message() {
        let a = Outcome::of(Some(&call(vec![], Some("trap"))));
        let mut other = call(vec![], Some("trap"));
        other.error = Some("trap somewhere else".into());
        assert!(same(&a, &Outcome::of(Some(&other))));
        assert!(!same(
            &a,
            &Outcome::of(Some(&call(vec![], Some("timeout"))))
        ));
        assert!(!same(&a, &Outcome::NotSubscribed));
        let drop = Outcome::of(Some(&call(vec![json!({"drop": "x"})], None)));
        assert!(!same(&drop, &Outcome::of(Some(&call(vec![], None)))));
    }
}
