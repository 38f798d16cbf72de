//! The evhost event catalog.
//!
//! One typed payload per event type of the platform. The six payloads that the
//! original platform plan defined (`MessageReceived`, `MessageSent`, `MessageBounced`,
//! `UserLogin`, `FilterMatched`, `Certificate`) keep exactly its JSON field names; the
//! others are designed in the same style. The daemon validates incoming events against
//! these types and publishes their JSON Schemas; the plugin SDK gives plugin authors
//! the same types, so there is one definition, not two.
//!
//! Optional fields are the ones the plan marked `omitempty`; every other field is
//! required, and a known type rejects fields it does not define (unless the daemon is
//! told to relax that).

mod payloads;
mod resource;

pub use payloads::*;
pub use resource::{Resource, mail_domain_of, resource_of};

/// Every event type the platform defines, as `(name, description)` pairs, in the
/// plan's order. [`visit`] gives the payload type of each.
pub mod types {
    pub const MESSAGE_RECEIVED: &str = "message.received";
    pub const MESSAGE_SENT: &str = "message.sent";
    pub const MESSAGE_BOUNCED: &str = "message.bounced";
    pub const MESSAGE_DELETED: &str = "message.deleted";
    pub const MESSAGE_MOVED: &str = "message.moved";
    pub const MESSAGE_FLAGS_CHANGED: &str = "message.flags_changed";
    pub const USER_LOGIN: &str = "user.login";
    pub const USER_LOGOUT: &str = "user.logout";
    pub const USER_CREATED: &str = "user.created";
    pub const USER_UPDATED: &str = "user.updated";
    pub const USER_DELETED: &str = "user.deleted";
    pub const USER_QUOTA_WARNING: &str = "user.quota_warning";
    pub const MAILBOX_CREATED: &str = "mailbox.created";
    pub const MAILBOX_DELETED: &str = "mailbox.deleted";
    pub const MAILBOX_RENAMED: &str = "mailbox.renamed";
    pub const DOMAIN_CREATED: &str = "domain.created";
    pub const DOMAIN_UPDATED: &str = "domain.updated";
    pub const DOMAIN_DELETED: &str = "domain.deleted";
    pub const FILTER_MATCHED: &str = "filter.matched";
    pub const SPAM_DETECTED: &str = "spam.detected";
    pub const VIRUS_DETECTED: &str = "virus.detected";
    pub const CERTIFICATE_RENEWED: &str = "certificate.renewed";
    pub const CERTIFICATE_EXPIRING: &str = "certificate.expiring";
    pub const QUEUE_STUCK: &str = "queue.stuck";
    pub const DELIVERY_FAILED: &str = "delivery.failed";
    pub const SERVER_STARTED: &str = "server.started";
    pub const SERVER_STOPPED: &str = "server.stopped";
    pub const WEBHOOK_CREATED: &str = "webhook.created";
    pub const WEBHOOK_UPDATED: &str = "webhook.updated";
    pub const WEBHOOK_DELETED: &str = "webhook.deleted";
    pub const WEBHOOK_ENABLED: &str = "webhook.enabled";
    pub const WEBHOOK_DISABLED: &str = "webhook.disabled";
    pub const WEBHOOK_SECRET_ROTATED: &str = "webhook.secret_rotated";
}

/// What every catalog payload is: plain serde data (and, with the `schema` feature,
/// a JSON Schema).
#[cfg(feature = "schema")]
pub trait Payload:
    serde::Serialize + serde::de::DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static
{
}
#[cfg(feature = "schema")]
impl<T> Payload for T where
    T: serde::Serialize
        + serde::de::DeserializeOwned
        + schemars::JsonSchema
        + Send
        + Sync
        + 'static
{
}

/// What every catalog payload is: plain serde data.
#[cfg(not(feature = "schema"))]
pub trait Payload: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {}
#[cfg(not(feature = "schema"))]
impl<T> Payload for T where T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static
{}

/// Receives each catalog entry with its payload type, so a caller can build
/// per-type tables (validators, schemas) without a second list of types.
pub trait Visitor {
    fn visit<P: Payload>(&mut self, name: &'static str, description: &'static str);
}

/// Calls `visitor` once per event type, in catalog order.
pub fn visit<V: Visitor>(visitor: &mut V) {
    use types::*;
    visitor.visit::<MessageReceived>(
        MESSAGE_RECEIVED,
        "A message was accepted for a local mailbox.",
    );
    visitor.visit::<MessageSent>(
        MESSAGE_SENT,
        "A message was handed to a remote destination.",
    );
    visitor.visit::<MessageBounced>(
        MESSAGE_BOUNCED,
        "A message could not be delivered and was bounced.",
    );
    visitor.visit::<MessageDeleted>(MESSAGE_DELETED, "A message was deleted from a mailbox.");
    visitor.visit::<MessageMoved>(MESSAGE_MOVED, "A message was moved between mailboxes.");
    visitor.visit::<MessageFlagsChanged>(MESSAGE_FLAGS_CHANGED, "A message's IMAP flags changed.");
    visitor.visit::<UserLogin>(USER_LOGIN, "A user tried to log in (successfully or not).");
    visitor.visit::<UserLogout>(USER_LOGOUT, "A user session ended.");
    visitor.visit::<UserCreated>(USER_CREATED, "A user account was created.");
    visitor.visit::<UserUpdated>(USER_UPDATED, "A user account was changed.");
    visitor.visit::<UserDeleted>(USER_DELETED, "A user account was deleted.");
    visitor.visit::<UserQuotaWarning>(
        USER_QUOTA_WARNING,
        "A user's storage passed a quota threshold.",
    );
    visitor.visit::<MailboxCreated>(MAILBOX_CREATED, "A mailbox (folder) was created.");
    visitor.visit::<MailboxDeleted>(MAILBOX_DELETED, "A mailbox (folder) was deleted.");
    visitor.visit::<MailboxRenamed>(MAILBOX_RENAMED, "A mailbox (folder) was renamed.");
    visitor.visit::<DomainCreated>(DOMAIN_CREATED, "A mail domain was added.");
    visitor.visit::<DomainUpdated>(DOMAIN_UPDATED, "A mail domain's settings changed.");
    visitor.visit::<DomainDeleted>(DOMAIN_DELETED, "A mail domain was removed.");
    visitor.visit::<FilterMatched>(FILTER_MATCHED, "A filter rule matched a message.");
    visitor.visit::<SpamDetected>(SPAM_DETECTED, "A message was classified as spam.");
    visitor.visit::<VirusDetected>(
        VIRUS_DETECTED,
        "A virus scanner found malware in a message.",
    );
    visitor.visit::<Certificate>(CERTIFICATE_RENEWED, "A TLS certificate was renewed.");
    visitor.visit::<Certificate>(
        CERTIFICATE_EXPIRING,
        "A TLS certificate is close to expiry.",
    );
    visitor.visit::<QueueStuck>(
        QUEUE_STUCK,
        "An outbound queue entry has made no progress for too long.",
    );
    visitor.visit::<DeliveryFailed>(
        DELIVERY_FAILED,
        "A delivery attempt to a remote server failed.",
    );
    visitor.visit::<ServerStarted>(
        SERVER_STARTED,
        "A platform server (evhost itself included) started.",
    );
    visitor.visit::<ServerStopped>(
        SERVER_STOPPED,
        "A platform server (evhost itself included) stopped.",
    );
    visitor.visit::<WebhookChanged>(WEBHOOK_CREATED, "A webhook endpoint was added.");
    visitor.visit::<WebhookChanged>(WEBHOOK_UPDATED, "A webhook endpoint was changed.");
    visitor.visit::<WebhookChanged>(WEBHOOK_DELETED, "A webhook endpoint was removed.");
    visitor.visit::<WebhookChanged>(WEBHOOK_ENABLED, "A webhook endpoint was enabled.");
    visitor.visit::<WebhookChanged>(
        WEBHOOK_DISABLED,
        "A webhook endpoint was disabled, by an operator or by evhost (410 Gone, or a run of failed deliveries).",
    );
    visitor.visit::<WebhookChanged>(
        WEBHOOK_SECRET_ROTATED,
        "A webhook endpoint's signing secret was replaced.",
    );
}

/// The number of event types in the catalog.
pub const COUNT: usize = 33;

/// The mail domain of an address: the part after the last `@`, lowercased.
pub fn domain_of(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('>');
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names(Vec<&'static str>);
    impl Visitor for Names {
        fn visit<P: Payload>(&mut self, name: &'static str, _: &'static str) {
            self.0.push(name);
        }
    }

    #[test]
    fn catalog_has_every_seed_type_once() {
        let mut names = Names(Vec::new());
        visit(&mut names);
        assert_eq!(names.0.len(), COUNT);
        let mut sorted = names.0.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), COUNT, "duplicate type names");
        assert!(names.0.contains(&"message.flags_changed"));
        assert!(names.0.contains(&"server.stopped"));
    }

    #[test]
    fn domain_of_takes_the_part_after_the_last_at() {
        assert_eq!(
            domain_of("Alice@Example.COM").as_deref(),
            Some("example.com")
        );
        assert_eq!(domain_of("\"a@b\"@c.org").as_deref(), Some("c.org"));
        assert_eq!(domain_of("nobody"), None);
        assert_eq!(domain_of("x@"), None);
    }
}
