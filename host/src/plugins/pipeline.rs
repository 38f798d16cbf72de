//! What a bus worker runs for each event: the inline plugins in priority order, then
//! a hand-off to the tap plugins. Each worker keeps its own instances (one per plugin
//! version), so the event path takes no lock; an instance is rebuilt after a trap.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::offline::action_json;
use super::replay::Outcome as Compared;
use super::runtime::{Action, CallError, Instance, NewEvent};
use super::{Loaded, OnError, PluginSet, Registry};
use crate::bus::{Dropped, Outcome, Pipeline, PipelineWorker, Pipelined};
use crate::config::PluginsConfig;
use crate::event::{Catalog, Event};
use crate::metrics::{Metrics, PluginSeries};

/// The inline-plugin stage of the bus.
pub struct PluginPipeline {
    pub(super) registry: Arc<Registry>,
}

impl Pipeline for PluginPipeline {
    fn worker(&self) -> Box<dyn PipelineWorker> {
        Box::new(Worker {
            registry: self.registry.clone(),
            instances: HashMap::new(),
            seen: std::sync::Weak::new(),
            prepared: std::collections::VecDeque::new(),
        })
    }
}

struct Worker {
    registry: Arc<Registry>,
    /// By plugin generation.
    instances: HashMap<u64, Instance>,
    /// The set the cache was last pruned against (weak: it must not keep unloaded
    /// versions alive, and it keeps the allocation, so an address is never reused
    /// under it).
    seen: std::sync::Weak<PluginSet>,
    /// Results of [`PipelineWorker::prepare`], in batch order, taken by `run`.
    prepared: std::collections::VecDeque<(Arc<Event>, Inline)>,
}

/// What the inline plugins made of one event: the event as it leaves them, the
/// outcome so far (verdict, emits) and the deliveries asked for.
type Inline = (Arc<Event>, Outcome, Vec<Delivery>);

/// A `deliver` action: the endpoint's name, and the plugin's own event (or none for
/// the handled event as it leaves the pipeline).
type Delivery = (String, Option<Event>);

/// What one plugin call decided, once its actions passed validation.
pub(super) struct Decision {
    replace: Option<Arc<Event>>,
    emitted: Vec<Event>,
    delivered: Vec<Delivery>,
    drop: Option<String>,
    /// The actions as returned, as JSON, when a shadow compares with this call.
    shown: Option<Vec<serde_json::Value>>,
}

impl PipelineWorker for Worker {
    /// Runs the inline plugins for a whole batch in one step off the runtime (a
    /// hand-over of the worker thread costs microseconds; per event it would cost
    /// more than most plugin calls).
    fn prepare(&mut self, events: &[Arc<Event>]) {
        self.prepared.clear();
        let set = self.registry.set.load_full();
        if set.inline.is_empty()
            || !events
                .iter()
                .any(|e| set.inline.iter().any(|p| p.wants(&e.kind)))
        {
            return;
        }
        self.prune(&set);
        let prepared = off_the_runtime(|| {
            events
                .iter()
                .map(|event| (event.clone(), self.run_inline(&set, event)))
                .collect::<Vec<_>>()
        });
        self.prepared.extend(prepared);
    }

    fn run(&mut self, event: &Arc<Event>) -> Pipelined {
        let set = self.registry.set.load_full();
        let prepared = match self.prepared.front() {
            Some((e, _)) if Arc::ptr_eq(e, event) => self.prepared.pop_front().map(|(_, r)| r),
            _ => None,
        };
        if prepared.is_none() && set.inline.is_empty() && set.tap.is_empty() {
            return Pipelined::Unchanged;
        }
        let (current, mut outcome, deliveries) = match prepared {
            Some(done) => done,
            None if set.inline.iter().any(|p| p.wants(&event.kind)) => {
                self.prune(&set);
                off_the_runtime(|| self.run_inline(&set, event))
            }
            None => (event.clone(), Outcome::default(), Vec::new()),
        };
        if outcome.verdict.dropped.is_none() {
            for tap in set.tap.iter().filter(|p| p.wants(&current.kind)) {
                if let Some(queue) = &tap.tap {
                    queue.offer(&current, &self.registry.metrics);
                }
            }
            outcome.event = Some(current.clone());
        }
        // The handled event as it leaves the pipeline, or the plugin's own.
        outcome.delivered = deliveries
            .into_iter()
            .map(|(target, new)| (target, new.map_or_else(|| current.clone(), Arc::new)))
            .collect();
        Pipelined::Done(outcome)
    }
}

impl Worker {
    /// Drops the instances of versions no longer in `set`.
    fn prune(&mut self, set: &Arc<PluginSet>) {
        if !std::ptr::eq(self.seen.as_ptr(), Arc::as_ptr(set)) {
            self.seen = Arc::downgrade(set);
            self.instances
                .retain(|generation, _| set.inline.iter().any(|p| p.generation == *generation));
        }
    }

    /// The inline plugins, in priority order, on one event.
    fn run_inline(&mut self, set: &PluginSet, event: &Arc<Event>) -> Inline {
        let mut current = event.clone();
        let mut outcome = Outcome::default();
        let mut deliveries: Vec<Delivery> = Vec::new();
        for plugin in set.inline.iter() {
            if !plugin.wants(&current.kind) {
                continue;
            }
            let slot = &plugin.slot;
            if !slot.breaker.allow(now_ms) {
                if plugin.manifest.on_error == OnError::Drop {
                    outcome.verdict.dropped = Some(Dropped {
                        plugin: plugin.name.clone(),
                        reason: "circuit breaker open (on_error = drop)".into(),
                    });
                    break;
                }
                continue;
            }
            let shadow = set.shadow_for(&plugin.name).and_then(|s| s.shadow.as_ref());
            let started = shadow.map(|_| std::time::Instant::now());
            let result = self.call(plugin, &current, shadow.is_some());
            if let (Some(shadow), Some(started)) = (shadow, started) {
                let serving = match &result {
                    Ok(decision) => Compared::Actions(decision.shown.clone().unwrap_or_default()),
                    Err(error) => Compared::Failed {
                        kind: error.kind().to_string(),
                        error: error.to_string(),
                    },
                };
                shadow.offer(&current, serving, started.elapsed());
            }
            match result {
                Ok(decision) => {
                    if slot.breaker.success() {
                        tracing::info!(plugin = %plugin.name, "plugin circuit breaker closed");
                        set_breaker_gauge(&self.registry, &plugin.name, false);
                    }
                    outcome.emitted.extend(decision.emitted);
                    deliveries.extend(decision.delivered);
                    if let Some(replacement) = decision.replace {
                        current = replacement;
                        outcome.verdict.replaced_by.push(plugin.name.clone());
                    }
                    if let Some(reason) = decision.drop {
                        outcome.verdict.dropped = Some(Dropped {
                            plugin: plugin.name.clone(),
                            reason,
                        });
                        break;
                    }
                }
                Err(error) => {
                    self.failed(plugin, &current, &error);
                    if plugin.manifest.on_error == OnError::Drop {
                        outcome.verdict.dropped = Some(Dropped {
                            plugin: plugin.name.clone(),
                            reason: format!("plugin failed (on_error = drop): {error}"),
                        });
                        break;
                    }
                }
            }
        }
        (current, outcome, deliveries)
    }
}

/// Runs plugin calls where they may block: a call can take up to its deadline, and
/// WASI's synchronous bindings (a plugin writing to stdout, say) block on a tokio
/// runtime, which is not allowed on a runtime worker thread. On a multi-threaded
/// runtime the worker hands its other tasks to another thread for the duration.
fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn set_breaker_gauge(registry: &Registry, name: &str, open: bool) {
    registry
        .metrics
        .plugins
        .breaker_open
        .get_or_create(&crate::metrics::PluginLabel {
            plugin: name.to_string(),
        })
        .set(open as i64);
}

impl Worker {
    /// One call: an instance (made and initialised if this worker has none), the
    /// call under its limits, and the validation of what it returned.
    ///
    /// A panic anywhere in it (the host's code, not the plugin's: a plugin's own
    /// faults are traps) fails this call like any plugin error, handled per the
    /// plugin's `on_error`, and the instance goes; the worker and the other events
    /// carry on.
    /// With `observe`, the decision keeps the actions as returned, for a shadow.
    fn call(
        &mut self,
        plugin: &Arc<Loaded>,
        event: &Arc<Event>,
        observe: bool,
    ) -> Result<Decision, CallError> {
        let call = std::panic::AssertUnwindSafe(|| self.call_unguarded(plugin, event, observe));
        std::panic::catch_unwind(call).unwrap_or_else(|panic| {
            self.instances.remove(&plugin.generation);
            Err(CallError::Panic(crate::supervise::panic_message(&panic)))
        })
    }

    fn call_unguarded(
        &mut self,
        plugin: &Arc<Loaded>,
        event: &Arc<Event>,
        observe: bool,
    ) -> Result<Decision, CallError> {
        if crate::supervise::panic_injected("plugin-call") {
            panic!("panic injected in a plugin call (EVHOST_TEST_PANIC)");
        }
        let slot = &plugin.slot;
        let instance = match self.instances.entry(plugin.generation) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let (instance, _) = Instance::start(
                    &plugin.compiled,
                    plugin.context.clone(),
                    plugin.limits,
                    &plugin.manifest.config,
                )?;
                e.insert(instance)
            }
        };
        let result = slot.call(|| instance.handle(event));
        match result {
            Ok(actions) => {
                let shown = observe.then(|| actions.iter().map(action_json).collect());
                let rules = Rules {
                    catalog: &self.registry.catalog,
                    options: &self.registry.options,
                    plugin: &plugin.name,
                    series: Some(&slot.series),
                    metrics: Some(&self.registry.metrics),
                };
                decide(&rules, event, actions).map(|decision| Decision { shown, ..decision })
            }
            Err(error) => {
                if error.poisons() {
                    self.instances.remove(&plugin.generation);
                }
                Err(error)
            }
        }
    }

    fn failed(&mut self, plugin: &Loaded, event: &Event, error: &CallError) {
        let slot = &plugin.slot;
        slot.record_error(error);
        tracing::warn!(plugin = %plugin.name, event_id = %event.id, event_type = %event.kind, kind = error.kind(), %error, "plugin call failed");
        if slot.breaker.failure(now_ms()) == super::breaker::Tripped::Opened {
            tracing::warn!(
                plugin = %plugin.name,
                failures = slot.breaker.failures_in_a_row(),
                cooldown = ?self.registry.options.breaker_cooldown,
                "plugin circuit breaker open: the plugin is skipped until the cooldown ends"
            );
            set_breaker_gauge(&self.registry, &plugin.name, true);
        }
    }
}

/// What a plugin's actions are checked against, and where they are counted.
pub(super) struct Rules<'a> {
    pub catalog: &'a Catalog,
    pub options: &'a PluginsConfig,
    /// The plugin's name (the source of the events it makes).
    pub plugin: &'a str,
    pub series: Option<&'a PluginSeries>,
    pub metrics: Option<&'a Metrics>,
}

/// Checks a call's actions and turns them into a decision. Any refused action
/// refuses the whole result (it counts as one failed call), so a plugin never has
/// half its decision applied.
pub(super) fn decide(
    rules: &Rules,
    event: &Arc<Event>,
    actions: Vec<Action>,
) -> Result<Decision, CallError> {
    let options = rules.options;
    if actions.len() > options.max_actions {
        return Err(CallError::Invalid(format!(
            "{} actions; at most {} (plugins.max_actions)",
            actions.len(),
            options.max_actions
        )));
    }
    let bytes: usize = actions.iter().map(action_bytes).sum();
    if bytes > options.max_output_bytes {
        return Err(CallError::Invalid(format!(
            "{bytes} bytes of output; at most {} (plugins.max_output_bytes)",
            options.max_output_bytes
        )));
    }
    let mut decision = Decision {
        replace: None,
        emitted: Vec::new(),
        delivered: Vec::new(),
        drop: None,
        shown: None,
    };
    let count = |i: usize| {
        if let Some(series) = rules.series {
            series.actions[i].inc();
        }
    };
    for action in actions {
        match action {
            Action::Drop(reason) => {
                count(0);
                decision.drop = Some(truncate(reason, 1024));
            }
            Action::Replace(new) => {
                count(1);
                let data = checked(rules.catalog, &new, "replace")?;
                let base = decision.replace.as_ref().unwrap_or(event);
                decision.replace = Some(Arc::new(Event {
                    kind: new.kind.into(),
                    data,
                    ..Event::clone(base)
                }));
            }
            Action::Emit(new) => {
                count(2);
                let data = checked(rules.catalog, &new, "emit")?;
                if event.hops >= options.max_hops {
                    if let Some(metrics) = rules.metrics {
                        metrics.plugins.emits_refused.inc();
                    }
                    return Err(CallError::Invalid(format!(
                        "emit of {:?} from an event that is already {} emits deep (plugins.max_hops = {}): a loop?",
                        new.kind, event.hops, options.max_hops
                    )));
                }
                let index = decision.emitted.len();
                let id = derived_id(event, rules.plugin, "emit", index);
                decision
                    .emitted
                    .push(derived(id, rules.plugin, event, new.kind, data));
            }
            Action::Deliver(delivery) => {
                count(3);
                if delivery.target.is_empty() || delivery.target.len() > 200 {
                    return Err(CallError::Invalid(
                        "deliver needs the name of a webhook endpoint".into(),
                    ));
                }
                let new = match delivery.event {
                    Some(new) => {
                        let data = checked(rules.catalog, &new, "deliver")?;
                        let index = decision.delivered.len();
                        let id = derived_id(event, rules.plugin, "deliver", index);
                        Some(derived(id, rules.plugin, event, new.kind, data))
                    }
                    None => None,
                };
                decision.delivered.push((delivery.target, new));
            }
        }
    }
    Ok(decision)
}

/// The id of the `index`th event a plugin makes (`what`: emits or deliveries) from
/// `parent`: the same whenever the plugin handles the parent again (after a crash
/// the log dispatches it again), so the log refuses the second copy of an emitted
/// event and a delivered one reaches its endpoint under the same `webhook-id`.
/// A UUID in version 7's layout (the parent's time in its first 48 bits, the rest
/// from SHA-256 of the parent's id, the plugin, `what` and `index`).
pub fn derived_id(parent: &Event, plugin: &str, what: &str, index: usize) -> crate::event::EventId {
    let index = (index as u64).to_be_bytes();
    let parts = [
        parent.id.as_bytes(),
        plugin.as_bytes(),
        what.as_bytes(),
        &index,
    ];
    crate::event::derived_uuid(b"evhost-derived-v1", &parts, parent.time.timestamp_millis()).into()
}

/// A new event made by a plugin: its derived id, its own time, the plugin as
/// source, the handled event's actor, one hop further.
fn derived(
    id: crate::event::EventId,
    plugin: &str,
    parent: &Event,
    kind: String,
    data: Arc<RawValue>,
) -> Event {
    Event {
        id,
        kind: kind.into(),
        time: chrono::Utc::now(),
        source: format!("/plugins/{plugin}").into(),
        actor: parent.actor.clone(),
        data,
        hops: parent.hops.saturating_add(1),
    }
}

/// Parses and validates a plugin's event against the catalog.
fn checked(catalog: &Catalog, new: &NewEvent, action: &str) -> Result<Arc<RawValue>, CallError> {
    let data = RawValue::from_string(new.data.clone()).map_err(|e| {
        CallError::Invalid(format!("{action} of {:?}: data is not JSON: {e}", new.kind))
    })?;
    catalog
        .validate(&new.kind, &data)
        .map_err(|e| CallError::Invalid(format!("{action}: {e}")))?;
    Ok(Arc::from(data))
}

fn action_bytes(action: &Action) -> usize {
    match action {
        Action::Drop(reason) => reason.len(),
        Action::Replace(e) | Action::Emit(e) => e.kind.len() + e.data.len(),
        Action::Deliver(d) => {
            d.target.len() + d.event.as_ref().map_or(0, |e| e.kind.len() + e.data.len())
        }
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
