//! PostgreSQL restarted under load, black-box: a private server the test makes
//! itself (`initdb` on a port of its own, so that no other test is disturbed) is
//! stopped hard (`-m immediate`, as a crash) and started again while publishers
//! send. Writes resume within 5 s of the server answering again; afterwards every
//! event answered 202 is in the log exactly once and delivered, and the chains
//! verify.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use evhost_e2e::receiver::Receiver;
use evhost_e2e::{Daemon, Options, free_port, json};

/// A PostgreSQL server of the test's own, stopped when dropped.
struct PrivatePg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePg {
    fn start() -> Option<PrivatePg> {
        let Some(bin) = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(|v| v.ok())
                    .map(|v| v.path().join("bin"))
                    .find(|b| b.join("initdb").exists())
            })
        else {
            eprintln!("SKIPPING the PostgreSQL restart test: no initdb under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let pg = PrivatePg {
            bin,
            data,
            port: free_port(),
            _dir: dir,
        };
        if nix_is_root() {
            // PostgreSQL refuses to run as root: the server runs as `postgres`.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(pg._dir.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            assert!(
                Command::new("chown")
                    .args(["-R", "postgres"])
                    .arg(&pg.data)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let initdb = pg.run(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "-D",
                &pg.data.display().to_string(),
            ],
        );
        assert!(initdb, "initdb failed");
        pg.ctl(&["start"]);
        Some(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> bool {
        let program = self.bin.join(tool);
        let mut command = if nix_is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    fn ctl(&self, action: &[&str]) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=on",
            self.port
        );
        let data = self.data.display().to_string();
        let mut args = vec!["-D", data.as_str(), "-w", "-o", options.as_str()];
        args.extend_from_slice(action);
        assert!(self.run("pg_ctl", &args), "pg_ctl {action:?} failed");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_under_load_loses_nothing_and_heals_within_5_s() {
    let Some(pg) = PrivatePg::start() else {
        return;
    };
    let rx = Receiver::start().await;
    let d = Daemon::start_with(
        Options::default()
            .webhooks_local()
            .env("EVHOST_DATABASE__URL", pg.url()),
    )
    .await;
    d.add_webhook(&json!({"name": "r", "url": rx.url("/"), "events": ["restart.*"]}))
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let publishers: Vec<_> = (0..8)
        .map(|task| {
            let (client, url, stop) = (client.clone(), d.url("/v1/events"), stop.clone());
            tokio::spawn(async move {
                let mut ok = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("r-{task}-{n}");
                    let body = json!({"type": "restart.test", "id": id, "data": {"n": n}});
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 202 => ok.push(id),
                        Ok(r) if r.status() == 503 => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Ok(r) => panic!("answered {}", r.status()),
                        Err(_) => {}
                    }
                }
                ok
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pg_ctl = tokio::task::spawn_blocking(move || {
        pg.ctl(&["-m", "immediate", "restart"]);
        pg
    });
    let pg = pg_ctl.await.unwrap();
    let up = Instant::now();
    // Healed: ready, and a new event is acknowledged.
    loop {
        let (status, _) = d.get_json("/readyz").await;
        if status == 200 {
            let body = json!({"type": "restart.probe", "data": {}});
            if let Ok(r) = client.post(d.url("/v1/events")).json(&body).send().await
                && r.status() == 202
            {
                break;
            }
        }
        assert!(
            up.elapsed() < Duration::from_secs(5),
            "not healed 5 s after PostgreSQL came back; log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let healed = up.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = HashSet::new();
    for p in publishers {
        acknowledged.extend(p.await.unwrap());
    }
    rx.wait_arrivals(&acknowledged, Duration::from_secs(60), || {
        format!("log:\n{}", d.log())
    })
    .await;
    let counts = d.log_counts("types=restart.test").await;
    for id in &acknowledged {
        assert_eq!(counts.get(id), Some(&1), "{id}");
    }
    let (status, report) = d.get_json("/v1/audit/verify").await;
    assert_eq!(
        (status, report["ok"].clone()),
        (200, json!(true)),
        "{report}"
    );
    eprintln!(
        "PostgreSQL restarted under load: healed {healed:?} after it answered again; {} events acknowledged, each in the log once and delivered",
        acknowledged.len()
    );
    drop(d);
    drop(pg);
}
