//! The platform plan's counters (`esp_messages_received_total`, …), driven by the
//! events they count: [`EventMetrics`] is a bus subscriber that reads the few fields
//! the counters need, with the `domain` label bounded by [`DomainGuard`].

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use super::{Domain, DomainPermanent, DomainSpam, Escaped, Metrics, ProtocolSuccess};
use crate::bus::{HandlerError, Handling, Subscriber};
use crate::event::Event;

/// Bounds the number of distinct `domain` label values.
pub(super) struct DomainGuard {
    seen: RwLock<HashSet<String>>,
    max: usize,
}

impl DomainGuard {
    pub(super) fn new(max: usize) -> DomainGuard {
        DomainGuard {
            seen: RwLock::new(HashSet::new()),
            max,
        }
    }

    /// The label for `domain`: itself in lower case if it has the shape of a DNS
    /// name, `unknown` if empty, `invalid` if not a DNS name, `other` past the limit.
    pub(super) fn label(&self, domain: &str) -> Escaped {
        Escaped(self.label_text(domain))
    }

    fn label_text(&self, domain: &str) -> String {
        let domain = domain.trim().to_ascii_lowercase();
        if domain.is_empty() {
            return "unknown".into();
        }
        if !super::label::dns_name(&domain) {
            return "invalid".into();
        }
        if self.seen.read().expect("not poisoned").contains(&domain) {
            return domain;
        }
        let mut seen = self.seen.write().expect("not poisoned");
        if seen.contains(&domain) || seen.len() < self.max {
            seen.insert(domain.clone());
            domain
        } else {
            "other".into()
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Drives the platform plan's counters from the events they count.
pub struct EventMetrics {
    metrics: Arc<Metrics>,
}

impl EventMetrics {
    pub const ID: &'static str = "metrics";
    /// The event types this subscriber reads.
    pub const PATTERNS: &'static [&'static str] = &[
        "message.received",
        "message.sent",
        "message.bounced",
        "user.login",
    ];

    pub fn new(metrics: Arc<Metrics>) -> EventMetrics {
        EventMetrics { metrics }
    }

    fn count(&self, event: &Event) -> Result<(), HandlerError> {
        // Only the fields the counters need; the bus has validated the rest.
        #[derive(Deserialize)]
        struct Received<'a> {
            #[serde(borrow)]
            domain: std::borrow::Cow<'a, str>,
            is_spam: bool,
        }
        #[derive(Deserialize)]
        struct FromAddress<'a> {
            #[serde(borrow)]
            from: std::borrow::Cow<'a, str>,
        }
        #[derive(Deserialize)]
        struct Bounced<'a> {
            #[serde(borrow)]
            from: std::borrow::Cow<'a, str>,
            permanent: bool,
        }
        #[derive(Deserialize)]
        struct Login<'a> {
            #[serde(borrow)]
            protocol: std::borrow::Cow<'a, str>,
            success: bool,
        }
        let m = &self.metrics;
        let data = event.data.get();
        let domain_of = |address: &str| evhost_catalog::domain_of(address).unwrap_or_default();
        match &*event.kind {
            "message.received" => {
                let d: Received = serde_json::from_str(data)?;
                m.messages_received
                    .get_or_create(&DomainSpam {
                        domain: m.domains.label(&d.domain),
                        spam: yes_no(d.is_spam),
                    })
                    .inc();
            }
            "message.sent" => {
                let d: FromAddress = serde_json::from_str(data)?;
                m.messages_sent
                    .get_or_create(&Domain {
                        domain: m.domains.label(&domain_of(&d.from)),
                    })
                    .inc();
            }
            "message.bounced" => {
                let d: Bounced = serde_json::from_str(data)?;
                m.messages_bounced
                    .get_or_create(&DomainPermanent {
                        domain: m.domains.label(&domain_of(&d.from)),
                        permanent: yes_no(d.permanent),
                    })
                    .inc();
            }
            "user.login" => {
                let d: Login = serde_json::from_str(data)?;
                // Protocols are a short fixed list in practice; bound them anyway.
                let protocol = match &*d.protocol {
                    p @ ("imap" | "smtp" | "api" | "pop3" | "jmap" | "web") => p.to_string(),
                    _ => "other".to_string(),
                };
                m.user_logins
                    .get_or_create(&ProtocolSuccess {
                        protocol,
                        success: yes_no(d.success),
                    })
                    .inc();
            }
            _ => {}
        }
        Ok(())
    }
}

impl Subscriber for EventMetrics {
    fn id(&self) -> &str {
        Self::ID
    }

    fn handle<'a>(&'a self, event: &'a Arc<Event>) -> Handling<'a> {
        self.count(event).into()
    }

    /// The platform's counters count what was accepted (a message a plugin drops
    /// was still received), as the audit log records it.
    fn records_accepted(&self) -> bool {
        true
    }
}
