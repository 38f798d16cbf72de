//! Tap plugins: they watch events go by on a thread of their own and never hold
//! one up. Each loaded tap version has a bounded queue; when it is full the event is
//! skipped for that plugin and counted. What a tap plugin returns is not applied (it
//! observes; logs and counters are its output), but failures count as for any plugin.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use super::runtime::{Compiled, Instance, Limits, PluginContext};
use super::{Manifest, Slot};
use crate::event::Event;
use crate::metrics::{Metrics, PluginLabel};

/// Events one tap plugin may have waiting.
const QUEUE: usize = 4096;

pub struct TapQueue {
    tx: SyncSender<Arc<Event>>,
    name: String,
}

impl TapQueue {
    /// Starts the plugin's thread; it ends when the queue is dropped (the version is
    /// unloaded or replaced) and what was queued has been handled.
    pub fn start(
        name: &str,
        compiled: Compiled,
        context: Arc<PluginContext>,
        limits: Limits,
        manifest: &Manifest,
        slot: Arc<Slot>,
    ) -> std::io::Result<TapQueue> {
        let (tx, rx) = sync_channel(QUEUE);
        let config = manifest.config.clone();
        let thread_name = format!("evhost-tap-{name}");
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || run(rx, compiled, context, limits, config, slot))?;
        Ok(TapQueue {
            tx,
            name: name.to_string(),
        })
    }

    /// Queues an event, or skips it (counted) when the plugin is behind.
    pub fn offer(&self, event: &Arc<Event>, metrics: &Metrics) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(event.clone()) {
            metrics
                .plugins
                .tap_skipped
                .get_or_create(&PluginLabel {
                    plugin: self.name.clone(),
                })
                .inc();
        }
    }
}

fn run(
    rx: Receiver<Arc<Event>>,
    compiled: Compiled,
    context: Arc<PluginContext>,
    limits: Limits,
    config: Vec<(String, String)>,
    slot: Arc<Slot>,
) {
    let mut instance: Option<Instance> = None;
    while let Ok(event) = rx.recv() {
        if !slot.breaker.allow(|| chrono::Utc::now().timestamp_millis()) {
            continue;
        }
        let live = match instance.as_mut() {
            Some(i) => i,
            None => match Instance::start(&compiled, context.clone(), limits, &config) {
                Ok((i, _)) => instance.insert(i),
                Err(error) => {
                    slot.record_error(&error);
                    slot.breaker.failure(chrono::Utc::now().timestamp_millis());
                    continue;
                }
            },
        };
        let result = slot.call(|| live.handle(&event));
        match result {
            Ok(_) => {
                slot.breaker.success();
            }
            Err(error) => {
                tracing::warn!(plugin = %slot.name, event_id = %event.id, kind = error.kind(), %error, "tap plugin call failed");
                slot.record_error(&error);
                slot.breaker.failure(chrono::Utc::now().timestamp_millis());
                if error.poisons() {
                    instance = None;
                }
            }
        }
    }
}
