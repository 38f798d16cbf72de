//! A plugin that misbehaves on purpose, kept with the tests. Its sidecar's
//! `behave` picks what it does with each event:
//!
//! - `pass` (default): nothing; `stamp`: replaces the payload with
//!   `{"stamp": <config stamp>, "was": <payload>}`
//! - `sleep`: waits config `ms` milliseconds (default 50), without using the CPU,
//!   then passes (a slow consumer)
//! - `loop`: never returns; `memory-bomb`: allocates until refused; `trap`: panics;
//!   `error`: returns an error; `huge-output`: a 16 MiB replacement; `many-actions`:
//!   10,000 emits
//! - `emit-loop`: emits an event of its own type (a loop the hop limit must cut)
//! - `bad-replace`: replaces the event with a `message.received` whose payload breaks
//!   the catalog schema
//! - `deliver`: delivers the event to the endpoint named by config `target`
//! - `open-file`, `read-env`, `open-socket` (to config `addr`): try it and replace the
//!   payload with `{"escaped": bool, "detail": …}`
//! - `init-fail`: init returns an error
//! - `by-event`: does what the event's `data.do` names (any of the above but
//!   `init-fail`), so one instance can fail and then serve again
//!
//! The subscriptions come from config `subscribe` (comma-separated, default `*`).

use evhost_plugin::prelude::*;
use evhost_plugin::serde_json::json;

pub struct Hostile {
    behave: String,
    config: Config,
}

impl Plugin for Hostile {
    fn init(config: &Config) -> Result<(Info, Self), String> {
        let behave = config.get("behave").unwrap_or("pass").to_string();
        if behave == "init-fail" {
            return Err("init-fail: refusing to start, as configured".into());
        }
        let mut subscriptions = config.list("subscribe");
        if subscriptions.is_empty() {
            subscriptions.push("*".into());
        }
        let version = config.get("version").unwrap_or(env!("CARGO_PKG_VERSION"));
        let info = Info::new(format!("hostile-{behave}"), version).subscribe(subscriptions);
        Ok((
            info,
            Hostile {
                behave,
                config: config.clone(),
            },
        ))
    }

    fn handle(&self, event: &Event) -> Result<Vec<Action>, String> {
        let behave = if self.behave == "by-event" {
            event.json()?["do"].as_str().unwrap_or("pass").to_string()
        } else {
            self.behave.clone()
        };
        let replace =
            |value: evhost_plugin::serde_json::Value| Action::replace(&event.kind, &value);
        Ok(match behave.as_str() {
            "pass" => pass(),
            "sleep" => {
                let ms = self
                    .config
                    .get("ms")
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or(50);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                pass()
            }
            "stamp" => {
                let stamp = self.config.get("stamp").unwrap_or("");
                vec![replace(json!({"stamp": stamp, "was": event.json()?}))]
            }
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("trap: panicking, as configured"),
            "error" => return Err("error: failing, as configured".into()),
            "huge-output" => vec![replace(json!({"blob": "x".repeat(16 << 20)}))],
            "many-actions" => (0..10_000)
                .map(|i| Action::emit("hostile.spam", &json!({"i": i})))
                .collect(),
            "emit-loop" => vec![Action::emit(&event.kind, &event.json()?)],
            "bad-replace" => vec![Action::replace(
                evhost_plugin::types::MESSAGE_RECEIVED,
                &json!({"not": "the schema"}),
            )],
            "deliver" => vec![Action::deliver(self.config.get("target").unwrap_or("vip"))],
            "open-file" => vec![replace(escape_report(std::fs::read_to_string(
                "/etc/hostname",
            )))],
            "read-env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let args: Vec<String> = std::env::args().collect();
                let escaped = !vars.is_empty() || !args.is_empty();
                vec![replace(
                    json!({"escaped": escaped, "detail": format!("{} vars, {} args", vars.len(), args.len())}),
                )]
            }
            "open-socket" => {
                let addr = self.config.get("addr").unwrap_or("127.0.0.1:80");
                vec![replace(escape_report(
                    std::net::TcpStream::connect(addr).map(|_| "connected"),
                ))]
            }
            other => return Err(format!("unknown behave {other:?}")),
        })
    }
}

fn escape_report<T: std::fmt::Debug>(
    attempt: std::io::Result<T>,
) -> evhost_plugin::serde_json::Value {
    match attempt {
        Ok(v) => json!({"escaped": true, "detail": format!("{v:?}")}),
        Err(e) => json!({"escaped": false, "detail": e.to_string()}),
    }
}

evhost_plugin::export_plugin!(Hostile);
