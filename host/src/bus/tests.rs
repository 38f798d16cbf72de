use super::*;
use crate::event::{Actor, new_event_id};
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicUsize, Ordering};

fn event(kind: &str) -> Event {
    Event {
        id: new_event_id(),
        kind: kind.into(),
        time: chrono::Utc::now(),
        source: "test".into(),
        actor: Actor::default(),
        data: Arc::from(RawValue::from_string("{}".into()).unwrap()),
        hops: 0,
    }
}

fn bus(workers: usize, queue_size: usize, timeout_ms: u64) -> Bus {
    Bus::start(
        BusOptions {
            workers,
            queue_size,
            handler_timeout: Duration::from_millis(timeout_ms),
        },
        Metrics::new(10),
    )
}

fn all() -> Vec<TypePattern> {
    vec![TypePattern::All]
}

#[derive(Default)]
struct Count {
    id: String,
    seen: AtomicUsize,
}
impl Count {
    fn new(id: &str) -> Arc<Count> {
        Arc::new(Count {
            id: id.into(),
            seen: AtomicUsize::new(0),
        })
    }
    fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}
impl Subscriber for Count {
    fn id(&self) -> &str {
        &self.id
    }
    fn handle<'a>(&'a self, _: &'a Arc<Event>) -> Handling<'a> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        Handling::ok()
    }
}

/// Fails, panics or sleeps, by event type.
struct Misbehave;
impl Subscriber for Misbehave {
    fn id(&self) -> &str {
        "misbehave"
    }
    fn handle<'a>(&'a self, e: &'a Arc<Event>) -> Handling<'a> {
        match &*e.kind {
            "x.fail" => Handling::Done(Err("nope".into())),
            "x.panic" => panic!("boom"),
            "x.later_fail" => Handling::later(async { Err("later nope".into()) }),
            "x.later_panic" => Handling::later(async {
                tokio::task::yield_now().await;
                panic!("later boom")
            }),
            "x.slow" => Handling::later(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }),
            _ => Handling::later(async {
                tokio::task::yield_now().await;
                Ok(())
            }),
        }
    }
}

#[tokio::test]
async fn patterns_route_events() {
    let bus = bus(2, 100, 1000);
    let exact = Count::new("exact");
    let family = Count::new("family");
    let everything = Count::new("all");
    bus.subscribe(
        vec![TypePattern::parse("message.received").unwrap()],
        exact.clone(),
    )
    .unwrap();
    bus.subscribe(
        vec![TypePattern::parse("message.*").unwrap()],
        family.clone(),
    )
    .unwrap();
    bus.subscribe(all(), everything.clone()).unwrap();
    for kind in ["message.received", "message.sent", "user.login"] {
        bus.publish_wait(event(kind)).await.unwrap();
    }
    assert_eq!((exact.seen(), family.seen(), everything.seen()), (1, 2, 3));
}

#[tokio::test]
async fn unsubscribe_by_id() {
    let bus = bus(1, 10, 1000);
    let c = Count::new("c");
    bus.subscribe(all(), c.clone()).unwrap();
    assert!(bus.subscribe(all(), Count::new("c")).is_err());
    bus.publish_wait(event("a.b")).await.unwrap();
    assert!(bus.unsubscribe("c"));
    assert!(!bus.unsubscribe("c"));
    bus.publish_wait(event("a.b")).await.unwrap();
    assert_eq!(c.seen(), 1);
}

#[tokio::test]
async fn full_queue_pushes_back_and_counts() {
    let bus = bus(1, 2, 10_000);
    // Hold the only worker so the queue fills.
    bus.subscribe(all(), Arc::new(Misbehave)).unwrap();
    bus.publish(event("x.slow")).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.publish(event("a.b")).unwrap();
    bus.publish(event("a.b")).unwrap();
    assert_eq!(
        bus.publish(event("a.b")),
        Err(PublishError::QueueFull { capacity: 2 })
    );
    assert!(matches!(
        bus.publish_all(vec![event("a.b"), event("a.b")]),
        Err(PublishError::QueueFull { .. })
    ));
    assert!(matches!(
        bus.publish_all((0..3).map(|_| event("a.b")).collect()),
        Err(PublishError::BatchTooLarge { .. })
    ));
    let text = bus.shared.metrics.encode();
    assert!(
        text.contains("evhost_events_rejected_total{reason=\"queue_full\"} 6"),
        "{text}"
    );
}

#[tokio::test]
async fn failing_subscribers_do_not_stop_the_others() {
    let bus = bus(2, 100, 100);
    let good = Count::new("good");
    bus.subscribe(all(), Arc::new(Misbehave)).unwrap();
    bus.subscribe(all(), good.clone()).unwrap();
    let failures = bus.publish_wait(event("x.fail")).await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].subscriber, "misbehave");
    assert_eq!(failures[0].kind, FailureKind::Error);
    let failures = bus.publish_wait(event("x.panic")).await.unwrap();
    assert_eq!(failures[0].kind, FailureKind::Panic);
    assert!(failures[0].message.contains("boom"));
    let failures = bus.publish_wait(event("x.later_fail")).await.unwrap();
    assert_eq!(failures[0].kind, FailureKind::Error);
    let failures = bus.publish_wait(event("x.later_panic")).await.unwrap();
    assert_eq!(failures[0].kind, FailureKind::Panic);
    assert!(failures[0].message.contains("later boom"));
    let failures = bus.publish_wait(event("x.slow")).await.unwrap();
    assert_eq!(failures[0].kind, FailureKind::Timeout);
    assert!(bus.publish_wait(event("x.ok")).await.unwrap().is_empty());
    assert_eq!(good.seen(), 6);
    let text = bus.shared.metrics.encode();
    for kind in ["error", "panic", "timeout"] {
        assert!(
            text.contains(&format!(
                "evhost_subscriber_errors_total{{subscriber=\"misbehave\",kind=\"{kind}\"}} {}",
                if kind == "timeout" { 1 } else { 2 }
            )),
            "{text}"
        );
    }
}

#[tokio::test]
async fn batches_are_all_or_nothing() {
    let bus = bus(1, 10, 1000);
    let c = Count::new("c");
    bus.subscribe(all(), c.clone()).unwrap();
    bus.publish_all((0..10).map(|_| event("a.b")).collect())
        .unwrap();
    bus.shutdown().await;
    assert_eq!(c.seen(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_every_accepted_event() {
    let bus = bus(4, 20_000, 1000);
    let c = Count::new("c");
    bus.subscribe(all(), c.clone()).unwrap();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let mut accepted = 0;
            for _ in 0..10_000 {
                match bus.publish(event("a.b")) {
                    Ok(()) => accepted += 1,
                    Err(PublishError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
                if accepted % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            accepted
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    bus.shutdown().await;
    let accepted = publisher.await.unwrap();
    assert!(accepted > 0);
    assert_eq!(
        c.seen(),
        accepted,
        "every accepted event handled, none twice"
    );
    assert_eq!(bus.publish(event("a.b")), Err(PublishError::Closed));
}
