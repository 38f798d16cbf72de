//! Events: the envelope built once at ingest, the catalog that validates payloads,
//! type patterns, and the mapping from the accepted wire formats (plain JSON and
//! CloudEvents 1.0).

mod catalog;
mod envelope;
mod pattern;
pub mod wire;

pub use catalog::{Catalog, EventTypeInfo, ValidationError};
pub use envelope::{Actor, Event, EventId, IdError, check_event_id, derived_uuid, new_event_id};
pub use pattern::{PatternError, TypePattern, is_custom_type_name};
