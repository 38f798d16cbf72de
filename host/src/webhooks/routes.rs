//! The endpoints in memory: a lane per endpoint, started, updated and stopped as the
//! endpoints in the database change, and the enabled ones' lanes as the routes the
//! bus subscriber matches events against.

use std::sync::Arc;

use super::lane::Lane;
use super::{Shared, db};

/// What the dispatcher matches events against: the enabled endpoints' lanes.
pub(super) type Routes = Vec<Arc<Lane>>;

impl Shared {
    /// Reloads the endpoints from the database: starts lanes for new ones, updates
    /// changed ones, stops removed ones, and swaps in the new routes.
    pub(super) async fn reload(self: &Arc<Self>) -> Result<(), sqlx::Error> {
        let _one_at_a_time = self.reload.lock().await;
        let endpoints = db::list_endpoints(&self.store, &self.sealer).await?;
        let mut routes = Vec::new();
        let mut gone = Vec::new();
        let disabled = endpoints.iter().filter(|e| !e.enabled).count();
        {
            let mut lanes = self.lanes.lock().expect("not poisoned");
            let mut keep = std::collections::HashSet::new();
            for e in endpoints {
                keep.insert(e.id.clone());
                let enabled = e.enabled;
                let lane = match lanes.get(&e.id) {
                    Some(lane) => {
                        // Every change stamps `updated_at`; the failure count, which
                        // the recorder keeps, does not matter to sending.
                        if lane.route().endpoint.updated_at != e.updated_at {
                            lane.update(e);
                        }
                        lane.clone()
                    }
                    None => {
                        let lane = Lane::start(self, e);
                        lanes.insert(lane.id().to_string(), lane.clone());
                        lane
                    }
                };
                if enabled {
                    routes.push(lane);
                }
            }
            lanes.retain(|id, lane| {
                let stays = keep.contains(id);
                if !stays {
                    gone.push(lane.clone());
                }
                stays
            });
        }
        self.routes.store(Arc::new(routes));
        self.metrics
            .webhooks
            .endpoints_disabled
            .set(disabled as i64);
        for lane in gone {
            lane.stop().await;
        }
        Ok(())
    }

    /// Tells an endpoint's lane that deliveries are due at `at_us`.
    pub(super) fn wake(&self, endpoint_id: &str, at_us: i64) {
        if let Some(lane) = self.lanes.lock().expect("not poisoned").get(endpoint_id) {
            lane.due_at(at_us);
        }
    }
}
