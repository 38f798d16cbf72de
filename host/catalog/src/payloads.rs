//! Payload structs, one per event type (`Certificate` serves both certificate events,
//! as in the platform plan).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Declares payload structs with the derives every catalog type shares.
macro_rules! payloads {
    ($( $(#[$meta:meta])* pub struct $name:ident { $($body:tt)* } )*) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
            pub struct $name { $($body)* }
        )*
    };
}

payloads! {
    /// `message.received` (the plan's `MessageReceivedEvent`).
    pub struct MessageReceived {
        pub message_id: String,
        pub from: String,
        pub to: Vec<String>,
        pub subject: String,
        pub size: i64,
        pub domain: String,
        pub user: String,
        pub mailbox: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub spam_score: Option<f64>,
        pub is_spam: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub filter_results: Option<serde_json::Map<String, serde_json::Value>>,
    }

    /// `message.sent` (the plan's `MessageSentEvent`).
    pub struct MessageSent {
        pub message_id: String,
        pub from: String,
        pub to: Vec<String>,
        pub subject: String,
        pub size: i64,
        pub queue_id: String,
        pub destination: String,
    }

    /// `message.bounced` (the plan's `MessageBouncedEvent`).
    pub struct MessageBounced {
        pub message_id: String,
        pub from: String,
        pub to: String,
        pub queue_id: String,
        pub error: String,
        pub attempts: i32,
        pub permanent: bool,
    }

    /// `message.deleted`.
    pub struct MessageDeleted {
        pub message_id: String,
        pub domain: String,
        pub user: String,
        pub mailbox: String,
        /// `user`, `expunge`, `retention` or `admin`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
    }

    /// `message.moved`.
    pub struct MessageMoved {
        pub message_id: String,
        pub domain: String,
        pub user: String,
        pub from_mailbox: String,
        pub to_mailbox: String,
    }

    /// `message.flags_changed`.
    pub struct MessageFlagsChanged {
        pub message_id: String,
        pub domain: String,
        pub user: String,
        pub mailbox: String,
        pub flags: Vec<String>,
        pub added: Vec<String>,
        pub removed: Vec<String>,
    }

    /// `user.login` (the plan's `UserLoginEvent`).
    pub struct UserLogin {
        pub user_id: Uuid,
        pub email: String,
        pub ip: String,
        pub user_agent: String,
        /// `imap`, `smtp` or `api`.
        pub protocol: String,
        pub success: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
    }

    /// `user.logout`.
    pub struct UserLogout {
        pub user_id: Uuid,
        pub email: String,
        pub ip: String,
        pub protocol: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub session_seconds: Option<i64>,
    }

    /// `user.created`.
    pub struct UserCreated {
        pub user_id: Uuid,
        pub email: String,
        pub domain: String,
        /// Storage quota in bytes; absent means unlimited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub quota: Option<i64>,
    }

    /// `user.updated`.
    pub struct UserUpdated {
        pub user_id: Uuid,
        pub email: String,
        pub domain: String,
        /// Names of the fields that changed (values are not repeated here).
        pub changes: Vec<String>,
    }

    /// `user.deleted`.
    pub struct UserDeleted {
        pub user_id: Uuid,
        pub email: String,
        pub domain: String,
    }

    /// `user.quota_warning`.
    pub struct UserQuotaWarning {
        pub user_id: Uuid,
        pub email: String,
        pub domain: String,
        /// Bytes in use.
        pub used: i64,
        /// Quota in bytes.
        pub quota: i64,
        /// `used / quota` as a percentage.
        pub percent: f64,
    }

    /// `mailbox.created`.
    pub struct MailboxCreated {
        pub domain: String,
        pub user: String,
        pub mailbox: String,
    }

    /// `mailbox.deleted`.
    pub struct MailboxDeleted {
        pub domain: String,
        pub user: String,
        pub mailbox: String,
    }

    /// `mailbox.renamed`.
    pub struct MailboxRenamed {
        pub domain: String,
        pub user: String,
        pub old_name: String,
        pub new_name: String,
    }

    /// `domain.created`.
    pub struct DomainCreated {
        pub domain_id: Uuid,
        pub domain: String,
    }

    /// `domain.updated`.
    pub struct DomainUpdated {
        pub domain_id: Uuid,
        pub domain: String,
        /// Names of the settings that changed.
        pub changes: Vec<String>,
    }

    /// `domain.deleted`.
    pub struct DomainDeleted {
        pub domain_id: Uuid,
        pub domain: String,
    }

    /// `filter.matched` (the plan's `FilterMatchedEvent`).
    pub struct FilterMatched {
        pub filter: String,
        pub message_id: String,
        pub action: String,
        pub score: f64,
        pub tags: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
    }

    /// `spam.detected`.
    pub struct SpamDetected {
        pub message_id: String,
        pub from: String,
        pub to: Vec<String>,
        pub domain: String,
        pub score: f64,
        pub threshold: f64,
        /// What was done: `quarantine`, `tag`, `reject` or `deliver`.
        pub action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub rules: Option<Vec<String>>,
    }

    /// `virus.detected`.
    pub struct VirusDetected {
        pub message_id: String,
        pub from: String,
        pub to: Vec<String>,
        pub domain: String,
        /// The signature name the scanner reported.
        pub virus: String,
        pub scanner: String,
        /// What was done: `quarantine`, `reject` or `strip`.
        pub action: String,
    }

    /// `certificate.renewed` and `certificate.expiring` (the plan's `CertificateEvent`).
    pub struct Certificate {
        pub domain: String,
        pub expires_at: DateTime<Utc>,
        pub issuer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub renewed_at: Option<DateTime<Utc>>,
    }

    /// `queue.stuck`.
    pub struct QueueStuck {
        pub queue_id: String,
        pub message_id: String,
        pub destination: String,
        pub attempts: i32,
        /// When the entry last made progress.
        pub stuck_since: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub last_error: Option<String>,
    }

    /// `delivery.failed`.
    pub struct DeliveryFailed {
        pub message_id: String,
        pub queue_id: String,
        pub from: String,
        pub to: String,
        pub destination: String,
        pub error: String,
        pub attempts: i32,
        /// Whether the outbound queue will try again.
        pub will_retry: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub smtp_code: Option<u16>,
    }

    /// `server.started`.
    pub struct ServerStarted {
        /// The component: `evhost`, `smtp`, `imap`, …
        pub server: String,
        pub version: String,
        pub hostname: String,
        pub pid: u32,
    }

    /// `server.stopped`.
    pub struct ServerStopped {
        pub server: String,
        pub version: String,
        pub hostname: String,
        pub pid: u32,
        pub uptime_seconds: u64,
        /// Why it stopped: `signal`, `shutdown`, `error`, …
        pub reason: String,
    }

    /// `webhook.created`, `webhook.updated`, `webhook.deleted`, `webhook.enabled`,
    /// `webhook.disabled` and `webhook.secret_rotated`: a webhook endpoint changed.
    /// Never carries the secret.
    pub struct WebhookChanged {
        pub webhook_id: String,
        pub name: String,
        pub url: String,
        pub events: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub domain: Option<String>,
        pub enabled: bool,
        /// Why it changed, when evhost did it itself: `gone` (the receiver answered
        /// 410), `failing` (a run of failed deliveries).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
    }
}
