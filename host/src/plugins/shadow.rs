//! Shadow plugins: a new version run beside the serving one on the same live events,
//! off the event path. After the serving version is called, the event it saw and
//! what it decided are queued for the shadow; the shadow's thread calls the new
//! version, compares, and keeps the figures. Nothing the shadow returns is applied.
//! When the shadow falls behind its queue fills, and further events are skipped for
//! it (counted), so it never holds an event up.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::Slot;
use super::offline::action_json;
use super::pipeline::{Rules, decide};
use super::replay::{Outcome, same};
use super::runtime::{Compiled, Instance, Limits, PluginContext};
use crate::config::PluginsConfig;
use crate::event::{Catalog, Event};

/// Events one shadow may have waiting.
const QUEUE: usize = 4096;

/// Differing events kept for the report, newest first.
const KEEP_DIFFERENCES: usize = 20;

/// One event for the shadow: as the serving version saw it, and what it decided.
struct Job {
    event: Arc<Event>,
    serving: Outcome,
    serving_took: Duration,
}

/// An event on which the shadow and the serving version differed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShadowDifference {
    pub at: DateTime<Utc>,
    pub event_id: String,
    pub event_type: String,
    /// What the serving version did: `{"actions": [...]}` or `{"failed": {kind, error}}`.
    pub serving: serde_json::Value,
    /// What the shadow did, in the same form.
    pub shadow: serde_json::Value,
}

/// How a shadow compares with the version it runs beside (`GET /v1/plugins/{name}/shadow`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShadowReport {
    /// The shadow's name (its file's stem).
    pub name: String,
    /// The plugin it runs beside.
    pub shadow_of: String,
    pub shadow_version: String,
    /// The version serving now, if `shadow_of` is loaded.
    pub serving_version: Option<String>,
    /// Since when (the shadow's load).
    pub since: DateTime<Utc>,
    /// Events both ran on.
    pub events: u64,
    /// Events on which both returned the same actions (or failed the same way).
    pub same: u64,
    pub different: u64,
    /// The shadow's failed calls by kind.
    pub errors: BTreeMap<String, u64>,
    /// Events the shadow missed because it was behind.
    pub skipped: u64,
    /// Mean time of one call, microseconds, of each.
    pub serving_mean_us: u64,
    pub shadow_mean_us: u64,
    /// The latest events on which they differed, newest first.
    pub latest_differences: Vec<ShadowDifference>,
}

#[derive(Default)]
struct Figures {
    events: u64,
    same: u64,
    different: u64,
    errors: BTreeMap<String, u64>,
    serving_us: u64,
    shadow_us: u64,
    latest: VecDeque<ShadowDifference>,
}

/// A loaded shadow version's queue and figures; its thread ends when this is dropped.
pub struct ShadowQueue {
    tx: SyncSender<Job>,
    figures: Arc<Mutex<Figures>>,
    skipped: AtomicU64,
}

/// What the shadow's thread needs besides the queue.
pub struct ShadowParts {
    pub name: String,
    pub compiled: Compiled,
    pub context: Arc<PluginContext>,
    pub limits: Limits,
    pub config: Vec<(String, String)>,
    pub slot: Arc<Slot>,
    pub catalog: Arc<Catalog>,
    pub options: PluginsConfig,
}

impl ShadowQueue {
    pub fn start(parts: ShadowParts) -> std::io::Result<ShadowQueue> {
        let (tx, rx) = sync_channel(QUEUE);
        let figures = Arc::new(Mutex::new(Figures::default()));
        let thread_figures = figures.clone();
        std::thread::Builder::new()
            .name(format!("evhost-shadow-{}", parts.name))
            .spawn(move || run(rx, parts, thread_figures))?;
        Ok(ShadowQueue {
            tx,
            figures,
            skipped: AtomicU64::new(0),
        })
    }

    /// Queues what the serving version did with `event`, or skips it (counted) when
    /// the shadow is behind.
    pub fn offer(&self, event: &Arc<Event>, serving: Outcome, serving_took: Duration) {
        let job = Job {
            event: event.clone(),
            serving,
            serving_took,
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(job) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The figures so far, under the given names.
    pub fn report(
        &self,
        name: &str,
        shadow_of: &str,
        shadow_version: &str,
        serving_version: Option<String>,
        since: DateTime<Utc>,
    ) -> ShadowReport {
        let f = self.figures.lock().expect("not poisoned");
        ShadowReport {
            name: name.to_string(),
            shadow_of: shadow_of.to_string(),
            shadow_version: shadow_version.to_string(),
            serving_version,
            since,
            events: f.events,
            same: f.same,
            different: f.different,
            errors: f.errors.clone(),
            skipped: self.skipped.load(Ordering::Relaxed),
            serving_mean_us: f.serving_us.checked_div(f.events).unwrap_or(0),
            shadow_mean_us: f.shadow_us.checked_div(f.events).unwrap_or(0),
            latest_differences: f.latest.iter().cloned().collect(),
        }
    }
}

/// An outcome as the report shows it.
pub fn outcome_json(outcome: &Outcome) -> serde_json::Value {
    serde_json::to_value(outcome).unwrap_or(serde_json::Value::Null)
}

fn run(rx: Receiver<Job>, parts: ShadowParts, figures: Arc<Mutex<Figures>>) {
    let mut instance: Option<Instance> = None;
    while let Ok(job) = rx.recv() {
        let live = match instance.as_mut() {
            Some(i) => i,
            None => match Instance::start(
                &parts.compiled,
                parts.context.clone(),
                parts.limits,
                &parts.config,
            ) {
                Ok((i, _)) => instance.insert(i),
                Err(error) => {
                    parts.slot.record_error(&error);
                    record(&figures, &job, failed(&error), Duration::ZERO);
                    continue;
                }
            },
        };
        let started = Instant::now();
        let result = parts.slot.call(|| live.handle(&job.event));
        let took = started.elapsed();
        let outcome = match result {
            Ok(actions) => {
                let shown: Vec<serde_json::Value> = actions.iter().map(action_json).collect();
                let rules = Rules {
                    catalog: &parts.catalog,
                    options: &parts.options,
                    plugin: &parts.name,
                    series: None,
                    metrics: None,
                };
                match decide(&rules, &job.event, actions) {
                    Ok(_) => Outcome::Actions(shown),
                    Err(error) => {
                        parts.slot.record_error(&error);
                        failed(&error)
                    }
                }
            }
            Err(error) => {
                parts.slot.record_error(&error);
                if error.poisons() {
                    instance = None;
                }
                failed(&error)
            }
        };
        record(&figures, &job, outcome, took);
    }
}

fn failed(error: &super::CallError) -> Outcome {
    Outcome::Failed {
        kind: error.kind().to_string(),
        error: error.to_string(),
    }
}

fn record(figures: &Mutex<Figures>, job: &Job, shadow: Outcome, took: Duration) {
    let mut f = figures.lock().expect("not poisoned");
    f.events += 1;
    f.serving_us += job.serving_took.as_micros() as u64;
    f.shadow_us += took.as_micros() as u64;
    if let Outcome::Failed { kind, .. } = &shadow {
        *f.errors.entry(kind.clone()).or_default() += 1;
    }
    if same(&job.serving, &shadow) {
        f.same += 1;
        return;
    }
    f.different += 1;
    f.latest.push_front(ShadowDifference {
        at: Utc::now(),
        event_id: job.event.id.to_string(),
        event_type: job.event.kind.to_string(),
        serving: outcome_json(&job.serving),
        shadow: outcome_json(&shadow),
    });
    f.latest.truncate(KEEP_DIFFERENCES);
}
