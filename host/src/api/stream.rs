//! Live tail: every dispatched event, fanned out to Server-Sent-Events clients.
//!
//! A tail is for watching, so it never holds up the bus: each client reads from a
//! bounded broadcast buffer, and a client that falls behind is told how many events
//! it missed (an SSE event named `lagged`) instead of slowing everyone down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;

use crate::bus::{Handling, Subscriber};
use crate::event::{Event, TypePattern};

/// Events a slow tail client may fall behind by before it skips ahead.
const BUFFER: usize = 4096;

/// The bus subscriber that feeds every tail client.
#[derive(Clone)]
pub struct Tail {
    sender: broadcast::Sender<Arc<Event>>,
}

impl Tail {
    pub const ID: &'static str = "tail";

    pub fn new() -> Tail {
        Tail {
            sender: broadcast::channel(BUFFER).0,
        }
    }

    /// An SSE stream of the events matching `patterns`, ending when `stop` fires.
    /// A live tail of `patterns` until `stop`; `held` (a place among the tails
    /// allowed at once) is let go when the tail ends.
    pub fn sse<H: Send + Sync + 'static>(
        &self,
        patterns: Vec<TypePattern>,
        stop: CancellationToken,
        held: H,
    ) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<H>> {
        let events = BroadcastStream::new(self.sender.subscribe()).filter_map(move |item| {
            let _held = &held;
            let out = match item {
                Ok(event) if patterns.iter().any(|p| p.matches(&event.kind)) => {
                    let json = serde_json::to_string(&*event).unwrap_or_default();
                    Some(Ok(SseEvent::default()
                        .id(&*event.id)
                        .event(&*event.kind)
                        .data(json)))
                }
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Ok(SseEvent::default()
                    .event("lagged")
                    .data(format!("{{\"missed\":{missed}}}")))),
            };
            std::future::ready(out)
        });
        let stream = events.take_until(stop.cancelled_owned());
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
    }
}

impl Default for Tail {
    fn default() -> Self {
        Tail::new()
    }
}

impl Subscriber for Tail {
    fn id(&self) -> &str {
        Self::ID
    }

    fn handle<'a>(&'a self, event: &'a Arc<Event>) -> Handling<'a> {
        // No receivers is not an error: nobody is watching.
        let _ = self.sender.send(event.clone());
        Handling::ok()
    }
}
