//! Webhooks: endpoints managed over the API, a durable outbox, signed deliveries
//! with retries.
//!
//! The shape, from an accepted event to a receiver:
//!
//! 1. [`outbox`]: the bus subscriber matches the event against the enabled
//!    endpoints held in memory (no database read on the bus) and hands it to the
//!    outbox writer, which serializes the body once and writes a message row and one
//!    delivery row per endpoint in one transaction. Only after the commit is anything
//!    sent.
//! 2. [`lane`]: each endpoint has its own lane: a task with its own concurrency
//!    limit, so a slow or dead endpoint only ever holds up itself. Fresh deliveries
//!    reach the lane straight from the writer (inserted already leased to this
//!    daemon); retries, deliveries left by a stopped daemon and the overflow of a busy
//!    lane are claimed from the table (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
//!    several daemons share the work).
//! 3. [`recorder`]: every attempt's result is written in batches: the attempt row, the
//!    delivery's new state and next attempt time, and the endpoint's failure run,
//!    which may disable it.
//!
//! A lease (the row's `owner` and a `next_attempt_us` in the future) marks a
//! delivery being sent. If the daemon dies, the lease runs out and any daemon sends
//! it again with the same `webhook-id`; a restarted daemon gives back its own leases
//! at once.

pub mod db;
pub mod egress;
pub mod endpoint;
mod lane;
pub mod metrics;
mod options;
mod outbox;
mod recorder;
mod routes;
pub mod seal;
pub mod sign;
mod sqlite;
mod upkeep;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use db::{AttemptRow, DeliveryRow};
pub use egress::Egress;
pub use endpoint::{Endpoint, EndpointPatch, FieldError, Format, NewEndpoint};
pub use options::{WebhookOptions, parse_retry_after};

use crate::bus::Subscriber;
use crate::event::{Actor, Catalog, Event};
use crate::eventlog::Log;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::supervise::Ends;
use lane::Lane;
use routes::Routes;

/// Why a webhook operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook endpoint has the id {0:?}")]
    NoEndpoint(String),
    #[error("no delivery has the id {0:?}")]
    NoDelivery(String),
    #[error("delivery {0} is still pending; it will be attempted on its schedule")]
    StillPending(String),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Url(#[from] egress::UrlError),
    #[error("the webhook database failed")]
    Db(#[from] db::WriteError),
    #[error("evhost is shutting down")]
    Stopping,
    #[error(transparent)]
    Seal(#[from] seal::SealError),
}

impl From<sqlx::Error> for WebhookError {
    fn from(error: sqlx::Error) -> WebhookError {
        WebhookError::Db(error.into())
    }
}

/// Shared by the subscriber, the writer, the lanes and the recorder.
pub(crate) struct Shared {
    store: Store,
    /// Seals endpoint secrets in the database, and opens them.
    sealer: seal::Sealer,
    /// The outbox's frequent writes (new deliveries, claims, results).
    writes: db::Writes,
    options: WebhookOptions,
    metrics: Arc<Metrics>,
    /// Where the webhook system's own events (`webhook.*`) are published.
    log: Log,
    client: reqwest::Client,
    routes: ArcSwap<Routes>,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    recorder: mpsc::Sender<recorder::Recorded>,
    recorder_stop: CancellationToken,
    stop: CancellationToken,
    /// Serializes route reloads, so two cannot interleave.
    reload: tokio::sync::Mutex<()>,
}

/// The running webhook system. Call [`Webhooks::shutdown`] after the bus drained.
pub struct Webhooks {
    shared: Arc<Shared>,
    outbox: mpsc::Sender<outbox::Item>,
    catalog: Arc<Catalog>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    recorder_task: Mutex<Option<JoinHandle<()>>>,
}

impl Webhooks {
    /// Loads the endpoints, gives back this daemon's old leases, and starts the
    /// writer, the lanes, the recorder and the upkeep task.
    pub async fn start(
        store: Store,
        options: WebhookOptions,
        metrics: Arc<Metrics>,
        log: Log,
        catalog: Arc<Catalog>,
    ) -> Result<Arc<Webhooks>, WebhookError> {
        let released =
            db::release_leases(&store, &options.owner, Utc::now().timestamp_micros()).await?;
        if released > 0 {
            tracing::info!(
                deliveries = released,
                "took back deliveries this daemon was sending when it stopped; they are sent again"
            );
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            // No cap on idle connections per host below what is in flight: endpoints
            // on one host share its pool, and a cap of one lane's concurrency made
            // 50 endpoints on one host open and close connections all the time
            // (BENCHMARKS.md). Idle ones are bounded by the lanes' concurrency and
            // closed after reqwest's idle timeout (90 s).
            .user_agent(format!("evhost/{}", crate::daemon::VERSION))
            .dns_resolver(Arc::new(egress::GuardedResolver {
                egress: options.egress.clone(),
            }))
            .build()
            .expect("the webhook HTTP client configuration is valid");
        let (recorder_tx, recorder_rx) = mpsc::channel(options.batch_size.max(64) * 4);
        let (outbox_tx, outbox_rx) = mpsc::channel(options.max_backlog);
        let sealer = seal::Sealer::open(&options.secret_key_file)?;
        let resealed = db::reseal_secrets(&store, &sealer).await?;
        if resealed > 0 {
            tracing::info!(
                endpoints = resealed,
                key = %sealer.key_id(),
                "sealed webhook secrets that were stored in clear or under an older key"
            );
        }
        let writes = db::Writes::open(&store)?;
        let shared = Arc::new(Shared {
            store,
            sealer,
            writes,
            options,
            metrics,
            log,
            client,
            routes: ArcSwap::from_pointee(Vec::new()),
            lanes: Mutex::new(HashMap::new()),
            recorder: recorder_tx,
            recorder_stop: CancellationToken::new(),
            stop: CancellationToken::new(),
            reload: tokio::sync::Mutex::new(()),
        });
        shared.reload().await?;
        let tasks = &shared.metrics.tasks;
        let on_stop = |token: &CancellationToken| Ends::OnStop(token.clone());
        let recorder_task = tasks.spawn(
            "webhook recorder",
            on_stop(&shared.recorder_stop),
            recorder::run(shared.clone(), recorder_rx),
        );
        let mut tasks = vec![
            tasks.spawn(
                "webhook outbox",
                on_stop(&shared.stop),
                outbox::run_writer(shared.clone(), outbox_rx),
            ),
            tasks.spawn(
                "webhook upkeep",
                on_stop(&shared.stop),
                upkeep::upkeep(shared.clone()),
            ),
        ];
        if shared.options.retention_days > 0 {
            tasks.push(shared.metrics.tasks.spawn(
                "webhook retention",
                on_stop(&shared.stop),
                upkeep::retention(shared.clone()),
            ));
        }
        Ok(Arc::new(Webhooks {
            shared,
            outbox: outbox_tx,
            catalog,
            tasks: Mutex::new(tasks),
            recorder_task: Mutex::new(Some(recorder_task)),
        }))
    }

    /// The bus subscriber that turns matching events into deliveries.
    /// Where plugins' `deliver` actions go.
    pub fn delivery_sink(&self) -> Arc<dyn crate::bus::DeliverySink> {
        Arc::new(outbox::Targeted {
            shared: self.shared.clone(),
            tx: self.outbox.clone(),
        })
    }

    /// Writes the deliveries of a delivery dead letter again (see
    /// [`crate::deadletter`]): `Ok(Ok(()))` once stored, `Ok(Err(id))` if refused
    /// again, `Err` with why they cannot be tried.
    pub async fn redeliver(&self, body: &str) -> Result<Result<(), i64>, String> {
        outbox::redeliver(&self.shared, &self.outbox, body).await
    }

    pub fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(outbox::Dispatcher {
            shared: self.shared.clone(),
            tx: self.outbox.clone(),
        })
    }

    fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Creates an endpoint; the answer carries its secret, the only time it is shown.
    pub async fn create(&self, new: NewEndpoint, actor: &Actor) -> Result<Endpoint, WebhookError> {
        let name = endpoint::check_name(&new.name)?;
        let events = endpoint::check_events(&new.events, &self.catalog)?;
        let domain = new
            .domain
            .as_deref()
            .map(endpoint::check_domain)
            .transpose()?;
        let url = self.shared.options.egress.check_url(new.url.trim()).await?;
        let now = Utc::now();
        let enabled = new.enabled.unwrap_or(true);
        let mut endpoint = Endpoint {
            id: format!("wh_{}", uuid::Uuid::now_v7().simple()),
            name,
            url: url.to_string(),
            events,
            domain,
            format: new.format.unwrap_or_default(),
            enabled,
            disabled_reason: (!enabled).then(|| "operator".to_string()),
            failure_count: 0,
            last_triggered_at: None,
            created_at: now,
            updated_at: now,
            rotating: false,
            asymmetric: new.asymmetric.unwrap_or(false),
            public_key: None,
            secret: sign::new_secret(),
            previous_secret: None,
            previous_secret_until_us: None,
        };
        endpoint.derive_public_key();
        db::insert_endpoint(self.store(), &self.shared.sealer, &endpoint).await?;
        self.shared.reload().await?;
        self.shared
            .announce(
                evhost_catalog::types::WEBHOOK_CREATED,
                &endpoint,
                None,
                actor,
            )
            .await;
        Ok(endpoint)
    }

    pub async fn list(&self) -> Result<Vec<Endpoint>, WebhookError> {
        Ok(db::list_endpoints(self.store(), &self.shared.sealer).await?)
    }

    pub async fn get(&self, id: &str) -> Result<Endpoint, WebhookError> {
        db::get_endpoint(self.store(), &self.shared.sealer, id)
            .await?
            .ok_or_else(|| WebhookError::NoEndpoint(id.to_string()))
    }

    /// Changes the given fields. Enabling also clears the failure run.
    pub async fn update(
        &self,
        id: &str,
        patch: EndpointPatch,
        actor: &Actor,
    ) -> Result<Endpoint, WebhookError> {
        let mut e = self.get(id).await?;
        let was_enabled = e.enabled;
        if let Some(name) = &patch.name {
            e.name = endpoint::check_name(name)?;
        }
        if let Some(events) = &patch.events {
            e.events = endpoint::check_events(events, &self.catalog)?;
        }
        if let Some(domain) = &patch.domain {
            e.domain = domain.as_deref().map(endpoint::check_domain).transpose()?;
        }
        if let Some(url) = &patch.url {
            e.url = self
                .shared
                .options
                .egress
                .check_url(url.trim())
                .await?
                .to_string();
        }
        if let Some(format) = patch.format {
            e.format = format;
        }
        if let Some(enabled) = patch.enabled {
            set_enabled(&mut e, enabled, "operator");
        }
        if let Some(asymmetric) = patch.asymmetric {
            e.asymmetric = asymmetric;
            e.derive_public_key();
        }
        self.shared.save(&mut e).await?;
        let kind = match (was_enabled, e.enabled) {
            (false, true) => evhost_catalog::types::WEBHOOK_ENABLED,
            (true, false) => evhost_catalog::types::WEBHOOK_DISABLED,
            _ => evhost_catalog::types::WEBHOOK_UPDATED,
        };
        let reason = (kind == evhost_catalog::types::WEBHOOK_DISABLED).then_some("operator");
        self.shared.announce(kind, &e, reason, actor).await;
        Ok(e)
    }

    pub async fn delete(&self, id: &str, actor: &Actor) -> Result<(), WebhookError> {
        let e = self.get(id).await?;
        if !db::delete_endpoint(self.store(), id).await? {
            return Err(WebhookError::NoEndpoint(id.to_string()));
        }
        self.shared.reload().await?;
        self.shared
            .announce(evhost_catalog::types::WEBHOOK_DELETED, &e, None, actor)
            .await;
        Ok(())
    }

    /// Replaces the secret; the old one keeps signing for `webhooks.secret_overlap`.
    /// The answer carries the new secret.
    pub async fn rotate_secret(&self, id: &str, actor: &Actor) -> Result<Endpoint, WebhookError> {
        let mut e = self.get(id).await?;
        let now = Utc::now();
        let overlap = chrono::Duration::from_std(self.shared.options.secret_overlap)
            .unwrap_or(chrono::Duration::MAX);
        e.previous_secret = Some(std::mem::replace(&mut e.secret, sign::new_secret()));
        e.previous_secret_until_us = Some((now + overlap).timestamp_micros());
        e.rotating = !self.shared.options.secret_overlap.is_zero();
        e.derive_public_key();
        self.shared.save(&mut e).await?;
        self.shared
            .announce(
                evhost_catalog::types::WEBHOOK_SECRET_ROTATED,
                &e,
                None,
                actor,
            )
            .await;
        Ok(e)
    }

    /// Sends a signed `webhook.test` ping now (through the outbox, so it is
    /// recorded like any delivery) and returns the attempt.
    pub async fn test(&self, id: &str) -> Result<(DeliveryRow, Vec<AttemptRow>), WebhookError> {
        let e = self.get(id).await?;
        let delivery_id = lane::send_test(&self.shared, &e).await?;
        self.delivery(&delivery_id).await
    }

    /// An endpoint's deliveries, newest first.
    pub async fn deliveries(
        &self,
        endpoint_id: &str,
        status: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, WebhookError> {
        self.get(endpoint_id).await?;
        Ok(db::list_deliveries(self.store(), endpoint_id, status, before, limit).await?)
    }

    /// A delivery with its attempts.
    pub async fn delivery(&self, id: &str) -> Result<(DeliveryRow, Vec<AttemptRow>), WebhookError> {
        let row = db::get_delivery(self.store(), id)
            .await?
            .ok_or_else(|| WebhookError::NoDelivery(id.to_string()))?;
        let attempts = db::attempts(self.store(), id).await?;
        Ok((row, attempts))
    }

    /// Makes a finished delivery due now, for one more attempt.
    pub async fn retry(&self, id: &str) -> Result<DeliveryRow, WebhookError> {
        let now = Utc::now().timestamp_micros();
        match db::retry(self.store(), id, now).await? {
            Some(endpoint_id) => self.shared.wake(&endpoint_id, now),
            None => {
                return match db::get_delivery(self.store(), id).await? {
                    Some(_) => Err(WebhookError::StillPending(id.to_string())),
                    None => Err(WebhookError::NoDelivery(id.to_string())),
                };
            }
        }
        Ok(self.delivery(id).await?.0)
    }

    /// Makes an endpoint's failed deliveries created since `since` due now.
    pub async fn replay(
        &self,
        endpoint_id: &str,
        since: chrono::DateTime<Utc>,
    ) -> Result<u64, WebhookError> {
        self.get(endpoint_id).await?;
        let now = Utc::now().timestamp_micros();
        let n = db::replay(self.store(), endpoint_id, since.timestamp_micros(), now).await?;
        self.shared.wake(endpoint_id, now);
        Ok(n)
    }

    /// Writes every queued event's deliveries, lets attempts in flight finish (up to
    /// the attempt timeout), records them, and gives back the leases of deliveries
    /// not yet sent. Call after the bus has drained.
    pub async fn shutdown(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("not poisoned"));
        self.shared.stop.cancel();
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "webhook task ended abnormally");
            }
        }
        let lanes: Vec<Arc<Lane>> = self
            .shared
            .lanes
            .lock()
            .expect("not poisoned")
            .drain()
            .map(|(_, lane)| lane)
            .collect();
        for lane in &lanes {
            lane.stop().await;
        }
        drop(lanes);
        // Every sender of results is gone once the lanes are; the recorder drains.
        self.shared.routes.store(Arc::new(Vec::new()));
        let recorder = self.recorder_task.lock().expect("not poisoned").take();
        if let Some(recorder) = recorder {
            recorder::close(&self.shared);
            if let Err(e) = recorder.await {
                tracing::error!(error = %e, "webhook recorder ended abnormally");
            }
        }
        match db::release_leases(
            &self.shared.store,
            &self.shared.options.owner,
            Utc::now().timestamp_micros(),
        )
        .await
        {
            Ok(n) if n > 0 => {
                tracing::info!(deliveries = n, "webhook deliveries left for the next start")
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "could not give back webhook leases; they expire on their own")
            }
        }
        tracing::info!("webhooks stopped");
    }
}

/// Enables or disables, recording why.
fn set_enabled(e: &mut Endpoint, enabled: bool, reason: &str) {
    if enabled && !e.enabled {
        e.failure_count = 0;
    }
    e.enabled = enabled;
    e.disabled_reason = (!enabled).then(|| reason.to_string());
}

impl Shared {
    /// Stores a changed endpoint (stamping `updated_at`) and puts the change into
    /// service here; other daemons pick it up at their next reload.
    async fn save(self: &Arc<Self>, e: &mut Endpoint) -> Result<(), WebhookError> {
        e.updated_at = Utc::now();
        if !db::update_endpoint(&self.store, &self.sealer, e).await? {
            return Err(WebhookError::NoEndpoint(e.id.clone()));
        }
        self.reload().await?;
        Ok(())
    }

    /// Publishes a `webhook.*` event (which the audit log records). Management
    /// changes are rare: wait a little for room rather than lose the event.
    async fn announce(&self, kind: &str, e: &Endpoint, reason: Option<&str>, actor: &Actor) {
        tracing::info!(webhook = %e.id, name = %e.name, url = %e.url, enabled = e.enabled, "{kind}");
        let change = e.change(reason);
        let mut event = match Event::from_daemon(kind, &change) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, "cannot encode a webhook event");
                return;
            }
        };
        event.actor = actor.clone();
        if let Err(error) = self.log.publish_own(event).await {
            tracing::error!(%error, event_type = kind, webhook = %e.id, "could not publish a webhook event");
        }
    }

    /// Disables an endpoint on evhost's own account (`gone`, `failing`).
    async fn disable(self: &Arc<Self>, endpoint_id: &str, reason: &str) {
        let result = async {
            let Some(mut e) = db::get_endpoint(&self.store, &self.sealer, endpoint_id).await?
            else {
                return Ok(None);
            };
            if !e.enabled {
                return Ok(None);
            }
            set_enabled(&mut e, false, reason);
            self.save(&mut e).await?;
            Ok::<_, WebhookError>(Some(e))
        }
        .await;
        match result {
            Ok(Some(e)) => {
                tracing::warn!(webhook = %e.id, url = %e.url, reason, "webhook endpoint disabled");
                self.announce(
                    evhost_catalog::types::WEBHOOK_DISABLED,
                    &e,
                    Some(reason),
                    &Actor::default(),
                )
                .await;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(error = %crate::error_chain(&error), webhook = endpoint_id, "could not disable a webhook endpoint")
            }
        }
    }
}
