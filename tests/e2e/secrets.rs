//! Webhook secrets at rest: sealed in the database with a key kept outside it.
//! A test reads the database itself and finds no secret in clear; plain rows left
//! by an older version are sealed at the next start; rotating the key keeps every
//! endpoint signing with its own secret.

use std::time::Duration;

use evhost_e2e::receiver::Receiver;
use evhost_e2e::*;

/// Every column of every row, as text.
fn texts<R: sqlx::Row>(rows: Vec<R>) -> Vec<Vec<Option<String>>>
where
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<Option<String>, _>(i))
                .collect()
        })
        .collect()
}

/// Runs `sql` on the daemon's main database; returns the rows' text columns.
async fn query(d: &Daemon, backend: &Backend, sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::Connection;
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite:{}", d.dir.path().join("data/evhost.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            texts(rows)
        }
        Backend::Postgres { url, schema } => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET search_path TO \"{schema}\""
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            texts(rows)
        }
    }
}

async fn stored_secrets(d: &Daemon, backend: &Backend, id: &str) -> (String, Option<String>) {
    let rows = query(
        d,
        backend,
        &format!("SELECT secret, previous_secret FROM webhook_endpoints WHERE id = '{id}'"),
    )
    .await;
    (rows[0][0].clone().unwrap(), rows[0][1].clone())
}

/// Publishes one event and checks the delivery verifies with `secret`.
async fn delivery_verifies(d: &Daemon, rx: &Receiver, secret: &str) {
    let before = rx.count();
    d.publish("message.received", &received("example.com", false))
        .await;
    let got = rx.wait_for(before + 1, Duration::from_secs(10)).await;
    got[before].verify_standard(secret).unwrap();
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_keep_signing() {
    for backend in Backend::all() {
        let name = backend.name();
        let rx = Receiver::start().await;
        let mut d = Daemon::start_with(Options::default().backend(&backend).webhooks_local()).await;
        let (id, first) = d
            .add_webhook(&json!({"url": rx.url("/hook"), "name": "crm", "events": ["message.*"]}))
            .await;
        let (status, rotated) = d
            .post_json(&format!("/v1/webhooks/{id}/rotate-secret"), &json!({}))
            .await;
        assert_eq!(status, 200, "{name}: {rotated}");
        let second = rotated["secret"].as_str().unwrap().to_string();
        delivery_verifies(&d, &rx, &second).await;

        // The database holds neither secret in clear, nor their base64 bodies.
        let (secret, previous) = stored_secrets(&d, &backend, &id).await;
        assert!(secret.starts_with("evhost:v1:"), "{name}: {secret}");
        assert!(
            previous
                .as_deref()
                .is_some_and(|p| p.starts_with("evhost:v1:"))
        );
        let bodies = [&first, &second].map(|s| s.trim_start_matches("whsec_").to_string());
        if let Backend::Sqlite = backend {
            for entry in std::fs::read_dir(d.dir.path().join("data")).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    let bytes = std::fs::read(&path).unwrap();
                    let text = String::from_utf8_lossy(&bytes);
                    for body in &bodies {
                        assert!(
                            !text.contains(body.as_str()),
                            "{} holds a secret",
                            path.display()
                        );
                    }
                }
            }
        }
        let all = query(
            &d,
            &backend,
            "SELECT secret, previous_secret FROM webhook_endpoints",
        )
        .await;
        for body in &bodies {
            assert!(!format!("{all:?}").contains(body.as_str()), "{name}");
        }
        // The key file, mode 0600: the daemon's own, or the fleet's on PostgreSQL.
        let key = match &backend {
            Backend::Sqlite => d.dir.path().join("data/webhook-secrets.key"),
            Backend::Postgres { .. } => backend.secret_key_file(),
        };
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // A row in clear (as an older version wrote it) is sealed at the next start.
        d.terminate().await;
        let plain = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        query(
            &d,
            &backend,
            &format!(
                "UPDATE webhook_endpoints SET secret = '{plain}', previous_secret = NULL WHERE id = '{id}' RETURNING id"
            ),
        )
        .await;
        d.restart().await;
        let (secret, _) = stored_secrets(&d, &backend, &id).await;
        assert!(
            secret.starts_with("evhost:v1:"),
            "{name}: sealed at start: {secret}"
        );
        delivery_verifies(&d, &rx, plain).await;

        // Rotating the key under the running daemon: every row moves to the new key,
        // the old key is kept, and the daemon signs on with the same secret.
        let env = match &backend {
            Backend::Sqlite => vec![(
                "EVHOST_DATA_DIR",
                d.dir.path().join("data").display().to_string(),
            )],
            Backend::Postgres { url, schema } => vec![
                (
                    "EVHOST_DATA_DIR",
                    d.dir.path().join("data").display().to_string(),
                ),
                ("EVHOST_DATABASE__URL", url.clone()),
                ("EVHOST_DATABASE__SCHEMA", schema.clone()),
                (
                    "EVHOST_WEBHOOKS__SECRET_KEY_FILE",
                    key.display().to_string(),
                ),
            ],
        };
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, out, err) = cli(&["webhooks", "rotate-key"], &env);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains("1 endpoint(s) re-sealed"), "{name}: {out}");
        let (resealed, _) = stored_secrets(&d, &backend, &id).await;
        assert_ne!(resealed[..27], secret[..27], "{name}: a new key id");
        let mut previous = key.clone().into_os_string();
        previous.push(".previous");
        assert!(std::path::Path::new(&previous).exists(), "{name}");
        // The endpoint is read again from the database (an update reloads routes).
        let (status, _) = d
            .request(reqwest::Method::PATCH, &format!("/v1/webhooks/{id}"))
            .json(&json!({"name": "crm-2"}))
            .send()
            .await
            .map(|r| (r.status().as_u16(), ()))
            .unwrap();
        assert_eq!(status, 200, "{name}");
        delivery_verifies(&d, &rx, plain).await;
    }
}
