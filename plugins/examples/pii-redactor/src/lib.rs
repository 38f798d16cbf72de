//! pii-redactor: replaces message events with copies whose recipients' local parts
//! and subjects are masked, so webhook receivers never see them.
//!
//! Config (sidecar `[config]`): `recipients` (default `true`) masks the part before
//! `@` of every recipient, keeping its first character; `subject` (default `true`)
//! replaces the subject with `mask` (default `[redacted]`).

use evhost_plugin::prelude::*;
use evhost_plugin::types::{MESSAGE_BOUNCED, MESSAGE_RECEIVED, MESSAGE_SENT};

pub struct PiiRedactor {
    recipients: bool,
    subject: bool,
    mask: String,
}

impl Plugin for PiiRedactor {
    fn init(config: &Config) -> Result<(Info, Self), String> {
        let plugin = PiiRedactor {
            recipients: config.parse_or("recipients", true)?,
            subject: config.parse_or("subject", true)?,
            mask: config.get("mask").unwrap_or("[redacted]").to_string(),
        };
        let info = Info::new("pii-redactor", env!("CARGO_PKG_VERSION")).subscribe([
            MESSAGE_RECEIVED,
            MESSAGE_SENT,
            MESSAGE_BOUNCED,
        ]);
        Ok((info, plugin))
    }

    fn handle(&self, event: &Event) -> Result<Vec<Action>, String> {
        let action = match event.kind.as_str() {
            MESSAGE_RECEIVED => {
                let mut m: MessageReceived = event.payload()?;
                self.redact(&mut m.to, &mut m.subject);
                Action::replace(&event.kind, &m)
            }
            MESSAGE_SENT => {
                let mut m: MessageSent = event.payload()?;
                self.redact(&mut m.to, &mut m.subject);
                Action::replace(&event.kind, &m)
            }
            MESSAGE_BOUNCED => {
                let mut m: MessageBounced = event.payload()?;
                if self.recipients {
                    m.to = mask_local_part(&m.to);
                }
                Action::replace(&event.kind, &m)
            }
            _ => return Ok(pass()),
        };
        Ok(vec![action])
    }
}

impl PiiRedactor {
    fn redact(&self, to: &mut [String], subject: &mut String) {
        if self.recipients {
            for address in to.iter_mut() {
                *address = mask_local_part(address);
            }
        }
        if self.subject {
            *subject = self.mask.clone();
        }
    }
}

/// `alice@example.com` → `a***@example.com`; an address without `@` is masked whole.
pub fn mask_local_part(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

evhost_plugin::export_plugin!(PiiRedactor);

#[cfg(test)]
mod tests {
    use super::*;

    fn received() -> Event {
        Event::new(
            MESSAGE_RECEIVED,
            &MessageReceived {
                message_id: "m1".into(),
                from: "bob@sender.example".into(),
                to: vec!["alice@example.com".into(), "carol@example.org".into()],
                subject: "Your lab results".into(),
                size: 10,
                domain: "example.com".into(),
                user: "alice".into(),
                mailbox: "INBOX".into(),
                spam_score: None,
                is_spam: false,
                filter_results: None,
            },
        )
    }

    fn replaced(actions: Vec<Action>) -> MessageReceived {
        match actions.as_slice() {
            [Action::Replace { kind, data }] if kind == MESSAGE_RECEIVED => {
                evhost_plugin::serde_json::from_str(data).unwrap()
            }
            other => panic!("expected one replace: {other:?}"),
        }
    }

    #[test]
    fn recipients_and_subject_are_masked() {
        let (_, p) = PiiRedactor::init(&Config::default()).unwrap();
        let m = replaced(p.handle(&received()).unwrap());
        assert_eq!(m.to, ["a***@example.com", "c***@example.org"]);
        assert_eq!(m.subject, "[redacted]");
        assert_eq!(m.from, "bob@sender.example", "the sender is kept");
    }

    #[test]
    fn config_turns_parts_off() {
        let config = Config::from_pairs([("subject", "false"), ("mask", "x")]);
        let (_, p) = PiiRedactor::init(&config).unwrap();
        let m = replaced(p.handle(&received()).unwrap());
        assert_eq!(m.subject, "Your lab results");
        assert_eq!(m.to[0], "a***@example.com");
    }

    #[test]
    fn odd_addresses_are_masked_whole() {
        assert_eq!(mask_local_part("no-at-sign"), "***");
        assert_eq!(mask_local_part("@example.com"), "***@example.com");
    }
}
