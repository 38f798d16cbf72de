//! spam-router: a `message.received` whose `spam_score` is over the configured
//! threshold becomes a `spam.detected` event and leaves normal delivery.
//!
//! Config (sidecar `[config]`): `threshold` (default 5.0), `action` recorded in the
//! `spam.detected` payload (default `quarantine`).

use evhost_plugin::prelude::*;

pub struct SpamRouter {
    threshold: f64,
    action: String,
}

impl Plugin for SpamRouter {
    fn init(config: &Config) -> Result<(Info, Self), String> {
        let threshold: f64 = config.parse_or("threshold", 5.0)?;
        if !threshold.is_finite() {
            return Err(format!(
                "threshold must be a finite number, not {threshold}"
            ));
        }
        let action = config.get("action").unwrap_or("quarantine").to_string();
        let info = Info::new("spam-router", env!("CARGO_PKG_VERSION"))
            .subscribe([evhost_plugin::types::MESSAGE_RECEIVED]);
        Ok((info, SpamRouter { threshold, action }))
    }

    fn handle(&self, event: &Event) -> Result<Vec<Action>, String> {
        let message: MessageReceived = event.payload()?;
        let Some(score) = message.spam_score.filter(|s| *s > self.threshold) else {
            return Ok(pass());
        };
        evhost_plugin::counter_add("spam_routed", 1);
        let detected = SpamDetected {
            message_id: message.message_id,
            from: message.from,
            to: message.to,
            domain: message.domain,
            score,
            threshold: self.threshold,
            action: self.action.clone(),
            rules: None,
        };
        Ok(vec![
            Action::emit(evhost_plugin::types::SPAM_DETECTED, &detected),
            Action::drop(format!("spam score {score} over {}", self.threshold)),
        ])
    }
}

evhost_plugin::export_plugin!(SpamRouter);

#[cfg(test)]
mod tests {
    use super::*;

    fn received(score: Option<f64>) -> Event {
        Event::new(
            evhost_plugin::types::MESSAGE_RECEIVED,
            &MessageReceived {
                message_id: "m1".into(),
                from: "bad@spam.example".into(),
                to: vec!["alice@example.com".into()],
                subject: "win".into(),
                size: 10,
                domain: "example.com".into(),
                user: "alice".into(),
                mailbox: "INBOX".into(),
                spam_score: score,
                is_spam: false,
                filter_results: None,
            },
        )
    }

    fn plugin(threshold: &str) -> SpamRouter {
        SpamRouter::init(&Config::from_pairs([("threshold", threshold)]))
            .unwrap()
            .1
    }

    #[test]
    fn spam_over_the_threshold_is_emitted_and_dropped() {
        let actions = plugin("5").handle(&received(Some(9.5))).unwrap();
        assert_eq!(actions.len(), 2);
        let Action::Emit { kind, data } = &actions[0] else {
            panic!("first action should emit: {actions:?}")
        };
        assert_eq!(kind, "spam.detected");
        let detected: SpamDetected = evhost_plugin::serde_json::from_str(data).unwrap();
        assert_eq!((detected.score, detected.threshold), (9.5, 5.0));
        assert_eq!(detected.action, "quarantine");
        assert!(matches!(&actions[1], Action::Drop { reason } if reason.contains("9.5")));
        assert_eq!(evhost_plugin::testing::counter("spam_routed"), 1);
    }

    #[test]
    fn clean_or_unscored_mail_passes() {
        let p = plugin("5");
        assert!(p.handle(&received(Some(5.0))).unwrap().is_empty());
        assert!(p.handle(&received(None)).unwrap().is_empty());
    }

    #[test]
    fn a_bad_threshold_fails_init() {
        let err = SpamRouter::init(&Config::from_pairs([("threshold", "high")]))
            .err()
            .unwrap();
        assert!(err.contains("threshold"), "{err}");
    }
}
