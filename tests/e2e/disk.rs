//! A full disk, black-box: the daemon's `data_dir` on a small tmpfs of its own
//! (mounted by the test; skipped, saying so, where mounting is not allowed). Once
//! the disk fills, publishers get 503 `disk_full` with `Retry-After` and `/readyz`
//! says `disk_full`; once space is freed, it resumes by itself, and every event
//! answered 202 is in the log exactly once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use evhost_e2e::{Daemon, Options, json};

/// A tmpfs mounted for one test, unmounted (lazily, so open files cannot keep it)
/// when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs { path, _dir: dir }),
            _ => {
                eprintln!(
                    "SKIPPING the full-disk test: cannot mount a tmpfs here (it needs root or CAP_SYS_ADMIN)"
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes zeros into `path` until the file system refuses more.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_resumes_once_space_is_freed() {
    let Some(disk) = Tmpfs::mount("32m") else {
        return;
    };
    let d =
        Daemon::start_with(Options::default().env("EVHOST_DATA_DIR", disk.path.display())).await;
    let filler = disk.path.join("filler");
    fill(&filler);

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let payload = "x".repeat(20_000);
    let mut acknowledged = Vec::new();
    // Publishers whose rows wait for space: answered once they are in.
    let mut waiting = Vec::new();
    let mut refused = None;
    for n in 0..2000 {
        let id = format!("d{n}");
        let body = json!({"type": "disk.test", "id": id, "data": {"pad": payload}});
        let mut publish = tokio::spawn(client.post(d.url("/v1/events")).json(&body).send());
        let response = tokio::select! {
            r = &mut publish => r.unwrap().unwrap(),
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                waiting.push((id, publish));
                continue;
            }
        };
        match response.status().as_u16() {
            202 => acknowledged.push(id),
            503 => {
                let retry_after = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .to_string();
                let (_, body) = evhost_e2e::status_json(response).await;
                if body["error"]["code"] == "disk_full" {
                    refused = Some(retry_after);
                    break;
                }
            }
            other => panic!("answered {other}"),
        }
    }
    assert_eq!(
        refused.as_deref(),
        Some("10"),
        "never refused for a full disk"
    );
    let (status, ready) = d.get_json("/readyz").await;
    assert_eq!(
        (status, ready["status"].clone()),
        (503, json!("disk_full")),
        "{ready}"
    );
    assert!(d.log().contains("the disk is full"), "{}", d.log());

    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    loop {
        let (status, ready) = d.get_json("/readyz").await;
        if status == 200 {
            break;
        }
        assert!(freed.elapsed() < Duration::from_secs(15), "still {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, publish) in waiting {
        let status = publish.await.unwrap().unwrap().status();
        assert_eq!(
            status, 202,
            "{id}: a publisher waiting for space is answered once its row is in"
        );
        acknowledged.push(id);
    }
    let (status, body) = d
        .post_json(
            "/v1/events",
            &json!({"type": "disk.test", "id": "after", "data": {}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    acknowledged.push("after".into());
    eprintln!(
        "{} events acknowledged before the disk filled; writes resumed {:?} after space was freed",
        acknowledged.len() - 1,
        freed.elapsed()
    );
    let counts = d.log_counts("types=disk.test").await;
    for id in &acknowledged {
        assert_eq!(counts.get(id), Some(&1), "{id}");
    }
    let (status, report) = d.get_json("/v1/audit/verify").await;
    assert_eq!(
        (status, report["ok"].clone()),
        (200, json!(true)),
        "{report}"
    );
    drop(d);
}
