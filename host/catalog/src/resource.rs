//! What an event is about: the resource type and id recorded in the audit log.

use serde::Deserialize;
use std::borrow::Cow;

/// The resource an event concerns, such as `("message", "<id@host>")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: &'static str,
    pub id: String,
}

/// The fields any catalog payload uses to name its resource; the rest is skipped.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Names<'a> {
    #[serde(borrow)]
    message_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    domain_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    domain: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    mailbox: Option<Cow<'a, str>>,
    #[serde(borrow)]
    new_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    queue_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    server: Option<Cow<'a, str>>,
    #[serde(borrow)]
    hostname: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    webhook_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    email: Option<Cow<'a, str>>,
    #[serde(borrow)]
    from: Option<Cow<'a, str>>,
}

/// The resource of an event of type `kind` with payload `data` (JSON text). Catalog
/// types name theirs by rule; other types are taken to concern `resource` `data.id`
/// when they have one.
pub fn resource_of(kind: &str, data: &str) -> Option<Resource> {
    let names: Names = serde_json::from_str(data).unwrap_or_default();
    let family = kind.split('.').next().unwrap_or("");
    let pick = |kind: &'static str, id: &Option<Cow<str>>| {
        id.as_ref().map(|id| Resource {
            kind,
            id: id.to_string(),
        })
    };
    match (family, kind) {
        // Filters, spam and virus scanners act on a message.
        ("message" | "filter" | "spam" | "virus", _) => pick("message", &names.message_id),
        ("user", _) => pick("user", &names.user_id),
        ("mailbox", _) => {
            let mailbox = names.new_name.as_ref().or(names.mailbox.as_ref())?;
            let user = names.user.as_deref().unwrap_or("");
            Some(Resource {
                kind: "mailbox",
                id: format!("{user}/{mailbox}"),
            })
        }
        ("domain", _) => pick("domain", &names.domain).or_else(|| pick("domain", &names.domain_id)),
        ("certificate", _) => pick("certificate", &names.domain),
        ("queue" | "delivery", _) => pick("queue", &names.queue_id),
        ("webhook", _) => pick("webhook", &names.webhook_id),
        ("server", _) => {
            let server = names.server.as_deref()?;
            let host = names.hostname.as_deref().unwrap_or("");
            Some(Resource {
                kind: "server",
                id: format!("{server}@{host}"),
            })
        }
        (_, _) => pick("resource", &names.id),
    }
}

/// The mail domain an event belongs to (lowercased): its `domain` field, else the
/// domain of its `email`, else of its sender (`from`). Webhook endpoints scoped to a
/// domain receive only the events this names.
pub fn mail_domain_of(data: &str) -> Option<String> {
    let names: Names = serde_json::from_str(data).ok()?;
    if let Some(domain) = names.domain.as_deref().filter(|d| !d.trim().is_empty()) {
        return Some(domain.trim().to_ascii_lowercase());
    }
    names
        .email
        .as_deref()
        .or(names.from.as_deref())
        .and_then(crate::domain_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(kind: &str, data: &str) -> Option<(String, String)> {
        resource_of(kind, data).map(|r| (r.kind.to_string(), r.id))
    }

    #[test]
    fn every_family_names_its_resource() {
        let s = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(
            r("message.received", r#"{"message_id":"m1","domain":"x"}"#),
            s("message", "m1")
        );
        assert_eq!(
            r("spam.detected", r#"{"message_id":"m2"}"#),
            s("message", "m2")
        );
        assert_eq!(
            r("user.login", r#"{"user_id":"u1","email":"a@b"}"#),
            s("user", "u1")
        );
        assert_eq!(
            r("mailbox.created", r#"{"user":"a@b","mailbox":"INBOX"}"#),
            s("mailbox", "a@b/INBOX")
        );
        assert_eq!(
            r(
                "mailbox.renamed",
                r#"{"user":"a@b","old_name":"A","new_name":"B"}"#
            ),
            s("mailbox", "a@b/B")
        );
        assert_eq!(
            r("domain.created", r#"{"domain_id":"d1","domain":"x.org"}"#),
            s("domain", "x.org")
        );
        assert_eq!(
            r("certificate.expiring", r#"{"domain":"x.org"}"#),
            s("certificate", "x.org")
        );
        assert_eq!(r("queue.stuck", r#"{"queue_id":"q1"}"#), s("queue", "q1"));
        assert_eq!(
            r("delivery.failed", r#"{"queue_id":"q2"}"#),
            s("queue", "q2")
        );
        assert_eq!(
            r("server.started", r#"{"server":"evhost","hostname":"h1"}"#),
            s("server", "evhost@h1")
        );
        assert_eq!(
            r("billing.paid", r#"{"id":"inv-9"}"#),
            s("resource", "inv-9")
        );
        assert_eq!(r("billing.paid", r#"{"amount":1}"#), None);
        assert_eq!(r("billing.paid", "[1,2]"), None);
        assert_eq!(
            r("webhook.created", r#"{"webhook_id":"wh1","name":"n"}"#),
            s("webhook", "wh1")
        );
    }

    #[test]
    fn mail_domain_comes_from_domain_email_or_sender() {
        assert_eq!(
            mail_domain_of(r#"{"domain":"Example.ORG","email":"a@b.c"}"#).as_deref(),
            Some("example.org")
        );
        assert_eq!(
            mail_domain_of(r#"{"email":"a@Mail.Example"}"#).as_deref(),
            Some("mail.example")
        );
        assert_eq!(
            mail_domain_of(r#"{"from":"<x@y.z>","to":["q@r.s"]}"#).as_deref(),
            Some("y.z")
        );
        assert_eq!(mail_domain_of(r#"{"queue_id":"q"}"#), None);
        assert_eq!(mail_domain_of("[]"), None);
    }
}
