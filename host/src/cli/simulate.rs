//! `evhost simulate`: the traffic of an email platform, published to a running daemon
//! so that its console, metrics and webhooks have something to show.
//!
//! The mix of types is exact, not sampled: a smooth weighted round-robin picks each
//! next type, so after any number of events every type's count is within one of its
//! share ([`MIX`]). What varies with `--seed` is the content: users, domains, spam
//! scores, failures. The same seed gives the same events (the daemon assigns the ids).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rand::RngExt;
use rand_pcg::Pcg64;
use rand_pcg::rand_core::SeedableRng;
use reqwest::Method;
use serde_json::{Value, json};

use super::ClientArgs;
use evhost_catalog::types as t;

/// Each type's share of the traffic, in tenths of a percent (they add up to 1000);
/// `evhost simulate --help` lists them.
pub const MIX: [(&str, u32); 10] = [
    (t::USER_LOGIN, 300),
    (t::USER_LOGOUT, 200),
    (t::MESSAGE_RECEIVED, 250),
    (t::MESSAGE_SENT, 120),
    (t::MESSAGE_BOUNCED, 30),
    (t::MAILBOX_CREATED, 30),
    (t::MAILBOX_RENAMED, 20),
    (t::USER_QUOTA_WARNING, 20),
    (t::VIRUS_DETECTED, 15),
    (t::QUEUE_STUCK, 15),
];

#[derive(Args)]
pub struct SimulateArgs {
    /// Events per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Mail domains of the simulated platform.
    #[arg(long, default_value_t = 5)]
    domains: usize,
    /// Users, spread over the domains.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// How long to publish (30s, 5m); until interrupted when not given.
    #[arg(long, value_parser = crate::config::duration::parse)]
    duration: Option<Duration>,
    /// The seed of a repeatable run (default: a random one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the events as JSON lines instead of publishing them (with --duration,
    /// rate × duration of them, at once).
    #[arg(long)]
    dry_run: bool,
    /// The closing summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// The smooth weighted round-robin over [`MIX`].
struct Mix {
    current: [i64; MIX.len()],
}

impl Mix {
    fn next(&mut self) -> &'static str {
        let total: i64 = MIX.iter().map(|(_, w)| i64::from(*w)).sum();
        for (c, (_, w)) in self.current.iter_mut().zip(MIX) {
            *c += i64::from(w);
        }
        let (best, _) = self
            .current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .expect("the mix is not empty");
        self.current[best] -= total;
        MIX[best].0
    }
}

/// Makes the events: a platform of `domains` domains and `users` users.
struct Platform {
    rng: Pcg64,
    mix: Mix,
    users: Vec<(String, String)>,
    sequence: u64,
}

const AGENTS: [&str; 4] = [
    "Thunderbird/128.0",
    "iOS Mail/18.1",
    "K-9 Mail/6.8",
    "Outlook/16.0",
];
const PROTOCOLS: [&str; 3] = ["imap", "pop3", "smtp"];
const SUBJECTS: [&str; 6] = [
    "Quarterly report",
    "Lunch on Friday?",
    "Your invoice",
    "Re: contract draft",
    "You have WON a prize",
    "Meeting notes",
];

impl Platform {
    fn new(seed: u64, domains: usize, users: usize) -> Platform {
        let domains: Vec<String> = (1..=domains).map(|n| format!("mail{n}.example")).collect();
        let users = (0..users)
            .map(|n| {
                let domain = &domains[n % domains.len()];
                let id = uuid::Uuid::from_u64_pair(seed, n as u64).to_string();
                (id, format!("user{n}@{domain}"))
            })
            .collect();
        Platform {
            rng: Pcg64::seed_from_u64(seed),
            mix: Mix {
                current: [0; MIX.len()],
            },
            users,
            sequence: 0,
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn next(&mut self) -> Value {
        let kind = self.mix.next();
        self.sequence += 1;
        let n = self.sequence;
        let (user_id, email) = self.users[self.rng.random_range(0..self.users.len())].clone();
        let domain = email
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let ip = format!("198.51.100.{}", self.rng.random_range(1..255));
        let message_id = format!(
            "<sim.{n}.{}@mx.{domain}>",
            self.rng.random_range(0..u32::MAX)
        );
        let outside = format!("contact{}@partner.example", self.rng.random_range(0..20));
        let data = match kind {
            t::USER_LOGIN => {
                let success = self.rng.random_bool(0.9);
                let mut d = json!({"user_id": user_id, "email": email, "ip": ip,
                    "user_agent": *self.pick(&AGENTS), "protocol": *self.pick(&PROTOCOLS), "success": success});
                if !success {
                    d["error"] = json!("invalid credentials");
                }
                d
            }
            t::USER_LOGOUT => json!({"user_id": user_id, "email": email, "ip": ip,
                "protocol": *self.pick(&PROTOCOLS), "session_seconds": self.rng.random_range(5..7200)}),
            t::MESSAGE_RECEIVED => {
                // Most mail is clean; about one in twelve scores as spam.
                let spam = self.rng.random_bool(0.08);
                let score = if spam {
                    self.rng.random_range(5.5..15.0)
                } else {
                    self.rng.random_range(0.0..3.0)
                };
                let score = (score * 10.0f64).round() / 10.0;
                json!({"message_id": message_id, "from": outside, "to": [email],
                    "subject": *self.pick(&SUBJECTS), "size": self.rng.random_range(800..2_000_000),
                    "domain": domain, "user": email, "mailbox": "INBOX", "spam_score": score, "is_spam": spam})
            }
            t::MESSAGE_SENT => json!({"message_id": message_id, "from": email, "to": [outside],
                "subject": *self.pick(&SUBJECTS), "size": self.rng.random_range(500..500_000),
                "queue_id": format!("Q{n:08X}"), "destination": "mx.partner.example"}),
            t::MESSAGE_BOUNCED => json!({"message_id": message_id, "from": email, "to": outside,
                "queue_id": format!("Q{n:08X}"), "error": "550 5.1.1 user unknown",
                "attempts": self.rng.random_range(1..6), "permanent": self.rng.random_bool(0.7)}),
            t::MAILBOX_CREATED => json!({"domain": domain, "user": email,
                "mailbox": format!("Projects/{}", self.rng.random_range(1..100))}),
            t::MAILBOX_RENAMED => json!({"domain": domain, "user": email,
                "old_name": format!("Projects/{}", self.rng.random_range(1..100)),
                "new_name": format!("Archive/{}", self.rng.random_range(1..100))}),
            t::USER_QUOTA_WARNING => {
                let quota: i64 = 5 << 30;
                let percent = self.rng.random_range(80.0..99.9f64);
                let percent = (percent * 10.0).round() / 10.0;
                json!({"user_id": user_id, "email": email, "domain": domain,
                    "used": (quota as f64 * percent / 100.0) as i64, "quota": quota, "percent": percent})
            }
            t::VIRUS_DETECTED => json!({"message_id": message_id, "from": outside, "to": [email],
                "domain": domain, "virus": "Eicar-Test-Signature", "scanner": "clamav", "action": "quarantine"}),
            _ => json!({"queue_id": format!("Q{n:08X}"), "message_id": message_id,
                "destination": "mx.slow.example", "attempts": self.rng.random_range(3..20),
                "stuck_since": (chrono::Utc::now() - chrono::Duration::minutes(self.rng.random_range(30..600)))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "last_error": "421 4.4.2 connection timed out"}),
        };
        json!({"type": kind, "source": "/simulate", "data": data})
    }
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= 100_000.0) {
        bail!("--rate is more than 0 and at most 100000 events per second");
    }
    if args.domains == 0 || args.users == 0 {
        bail!("--domains and --users are at least 1");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut platform = Platform::new(seed, args.domains, args.users);
    if args.dry_run {
        let count = args
            .duration
            .map_or(args.rate, |d| args.rate * d.as_secs_f64()) as u64;
        let mut out = String::new();
        for _ in 0..count.max(1) {
            out += &platform.next().to_string();
            out.push('\n');
        }
        print!("{out}");
        return Ok(());
    }
    eprintln!(
        "simulating {} domains, {} users at {} events/s (seed {seed}){}; Ctrl-C stops",
        args.domains,
        args.users,
        args.rate,
        args.duration
            .map_or(String::new(), |d| format!(" for {d:?}"))
    );
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0u64;
    let mut by_type: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut last_progress = Instant::now();
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let elapsed = started.elapsed();
        let horizon = args.duration.map_or(elapsed, |d| elapsed.min(d));
        let due = (args.rate * horizon.as_secs_f64()) as u64;
        while sent < due {
            let n = (due - sent).min(1000);
            let batch: Vec<Value> = (0..n).map(|_| platform.next()).collect();
            for event in &batch {
                let kind = event["type"].as_str().expect("made with a type");
                let kind = MIX
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .expect("from the mix")
                    .0;
                *by_type.entry(kind).or_default() += 1;
            }
            args.client
                .call(Method::POST, "/v1/events/batch", Some(&Value::Array(batch)))
                .await
                .context("publishing a batch")?;
            sent += n;
        }
        if !args.json && last_progress.elapsed() >= Duration::from_secs(1) {
            eprintln!("  {sent} events accepted in {:.0} s", elapsed.as_secs_f64());
            last_progress = Instant::now();
        }
        if args.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
    }
    let summary = json!({
        "seed": seed,
        "seconds": started.elapsed().as_secs_f64(),
        "accepted": sent,
        "by_type": by_type,
        "mix": MIX.iter().map(|(k, w)| (k.to_string(), f64::from(*w) / 1000.0)).collect::<BTreeMap<_, _>>(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{sent} events accepted (seed {seed}):");
        for (kind, count) in &by_type {
            println!("  {kind:<20} {count:>8}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up_and_every_prefix_keeps_each_share_within_one_event() {
        assert_eq!(MIX.iter().map(|(_, w)| w).sum::<u32>(), 1000);
        let mut mix = Mix {
            current: [0; MIX.len()],
        };
        let mut counts = [0u64; MIX.len()];
        for n in 1..=3000u64 {
            let kind = mix.next();
            counts[MIX.iter().position(|(k, _)| *k == kind).unwrap()] += 1;
            for (i, (_, w)) in MIX.iter().enumerate() {
                let expected = n as f64 * f64::from(*w) / 1000.0;
                assert!(
                    (counts[i] as f64 - expected).abs() <= 1.0,
                    "{n}: {counts:?}"
                );
            }
        }
    }

    #[test]
    fn every_simulated_payload_fits_its_type_and_a_seed_repeats() {
        let catalog = crate::event::Catalog::new(false, false);
        let mut a = Platform::new(7, 3, 20);
        let mut b = Platform::new(7, 3, 20);
        for _ in 0..2000 {
            let event = a.next();
            let kind = event["type"].as_str().unwrap();
            let data = serde_json::value::to_raw_value(&event["data"]).unwrap();
            catalog
                .validate(kind, &data)
                .unwrap_or_else(|e| panic!("{kind}: {e}: {event}"));
            let other = b.next();
            // queue.stuck's stuck_since is relative to now; the rest repeats exactly.
            if kind != t::QUEUE_STUCK {
                assert_eq!(event, other);
            }
        }
    }
}
