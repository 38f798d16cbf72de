use super::*;

#[test]
fn plugin_counters_are_capped_per_plugin() {
    let m = Metrics::new(10);
    m.plugins.counter_add("p", "a", 2, 2);
    m.plugins.counter_add("p", "a", 3, 2);
    m.plugins.counter_add("p", "b", 1, 2);
    m.plugins.counter_add("p", "c", 1, 2);
    m.plugins.counter_add("q", "c", 7, 2);
    let text = m.encode();
    assert!(
        text.contains("evhost_plugin_counter_total{plugin=\"p\",name=\"a\"} 5"),
        "{text}"
    );
    assert!(text.contains("evhost_plugin_counter_total{plugin=\"p\",name=\"b\"} 1"));
    assert!(
        !text.contains("plugin=\"p\",name=\"c\""),
        "a third name is refused"
    );
    assert!(text.contains("evhost_plugin_counter_total{plugin=\"q\",name=\"c\"} 7"));
}

#[test]
fn domains_past_the_limit_count_as_other() {
    let guard = DomainGuard::new(2);
    assert_eq!(guard.label("a.org").0, "a.org");
    assert_eq!(guard.label("B.org").0, "b.org");
    assert_eq!(guard.label("c.org").0, "other");
    assert_eq!(guard.label("a.org").0, "a.org");
    assert_eq!(guard.label("").0, "unknown");
}

#[test]
fn two_registries_live_side_by_side() {
    let a = Metrics::new(10);
    let b = Metrics::new(10);
    a.accepted("message");
    assert!(
        a.encode()
            .contains("evhost_events_accepted_total{family=\"message\"} 1")
    );
    assert!(
        b.encode()
            .contains("evhost_events_accepted_total{family=\"message\"} 0")
    );
}

#[test]
fn custom_families_share_one_label() {
    let m = Metrics::new(10);
    m.accepted("billing");
    m.accepted("anything");
    assert!(
        m.encode()
            .contains("evhost_events_accepted_total{family=\"custom\"} 2")
    );
}

#[test]
fn hostile_domains_never_break_the_exposition() {
    let guard = DomainGuard::new(100);
    for hostile in [
        "a\"b.com",
        "a\nb.com",
        "a\\b.com",
        "bücher.example",
        "x y.com",
    ] {
        assert_eq!(guard.label(hostile).0, "invalid", "{hostile:?}");
    }
    assert_eq!(guard.label(&"a".repeat(10_000)).0, "invalid");
    // And escaped where written, whatever a label holds.
    let m = Metrics::new(10);
    m.subscriber_error("bad\"name\\with\nnewline", "error");
    let text = m.encode();
    assert!(
        text.contains(r#"subscriber="bad\"name\\with\nnewline""#),
        "{text}"
    );
}

#[test]
fn the_rate_totals_count_every_refusal_and_every_failed_attempt() {
    let m = Metrics::new(10);
    m.accepted("message");
    m.rejected(RejectReason::Invalid, 2);
    m.rejected(RejectReason::DiskFull, 1);
    for outcome in ["success", "success", "http_error", "gone", "timeout"] {
        m.webhooks.count_attempt(outcome);
    }
    let t = m.totals();
    assert_eq!(
        (t.accepted, t.rejected, t.delivered, t.failed),
        (1, 3, 2, 3)
    );
    assert!(
        m.encode()
            .contains("evhost_webhook_attempts_total{outcome=\"gone\"} 1")
    );
}
