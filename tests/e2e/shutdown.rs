use evhost_e2e::*;

/// SIGTERM in the middle of a 10,000-event burst: the daemon stops taking events
/// (503 `stopping` or a closed connection), finishes what it accepted, and exits 0.
#[tokio::test]
async fn sigterm_during_a_burst_exits_cleanly() {
    let mut d =
        Daemon::start_with(Options::default().env("EVHOST_EVENTS__QUEUE_SIZE", 20000)).await;
    let batch: Vec<_> = (0..100)
        .map(|_| json!({"type": "message.received", "data": received("example.com", false)}))
        .collect();
    let burst = d.burst(&json!(batch), 4, 25);
    // Signal once the burst is under way (not on a fixed delay, which a slow machine would miss).
    d.wait_for_metric("evhost_events_accepted_total{family=\"message\"}")
        .await;
    let status = d.terminate().await;
    let accepted = burst.await.unwrap().len();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        d.log()
    );
    let log = d.log();
    assert!(log.contains("stopping: refusing new events"), "{log}");
    assert!(log.contains("every accepted event was dispatched"), "{log}");
    assert!(accepted > 0, "nothing was accepted before the signal");
}
