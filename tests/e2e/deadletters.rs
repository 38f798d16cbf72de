//! Dead letters, black-box, on both backends: a row the database refuses for good
//! (here a trigger the test installs on the log's table, refusing events marked
//! `poison`) is set aside with the database's error; the rest of its batch and
//! everything after it goes on. Once the cause is fixed, a retry writes it and it
//! is dispatched like any other event.

use std::collections::HashSet;
use std::time::Duration;

use evhost_e2e::receiver::Receiver;
use evhost_e2e::{Backend, Daemon, Options, cli, json};

/// SQL run against the daemon's database: the log's file on SQLite, its schema on
/// PostgreSQL.
async fn exec(d: &Daemon, backend: &Backend, sql: &str) {
    use sqlx::Connection;
    match backend {
        Backend::Sqlite => {
            let file = d.dir.path().join("data/evhost-audit.db");
            let url = format!("sqlite:{}", file.display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        Backend::Postgres { url, schema } => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let sql = format!("SET search_path TO \"{schema}\"; {sql}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

fn refuse_poison(backend: &Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_log \
             WHEN NEW.details LIKE '%\"poison\":true%' \
             BEGIN SELECT RAISE(ABORT, 'poison refused by the test'); END"
        }
        Backend::Postgres { .. } => {
            "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
               IF NEW.details LIKE '%\"poison\":true%' THEN \
                 RAISE EXCEPTION 'poison refused by the test' USING ERRCODE = 'check_violation'; \
               END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_log \
               FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_is_set_aside_and_retried_once_fixed() {
    for backend in Backend::all() {
        let name = backend.name();
        let rx = Receiver::start().await;
        let d = Daemon::start_with(Options::default().webhooks_local().backend(&backend)).await;
        d.add_webhook(&json!({"name": "all", "url": rx.url("/"), "events": ["poison.*"]}))
            .await;
        exec(&d, &backend, refuse_poison(&backend)).await;

        // A batch with one refused event: the others are committed and delivered.
        let batch: Vec<_> = (0..5)
            .map(|n| json!({"type": "poison.test", "id": format!("b{n}"), "data": {"n": n, "poison": n == 2}}))
            .collect();
        let (status, body) = d.post_json("/v1/events/batch", &json!(batch)).await;
        assert_eq!(status, 202, "{name}: {body}");
        assert_eq!(
            body["dead_lettered"].as_array().unwrap().len(),
            1,
            "{name}: {body}"
        );
        assert_eq!(body["dead_lettered"][0]["id"], "b2", "{name}: {body}");
        let first = body["dead_lettered"][0]["dead_letter"].as_i64().unwrap();

        // One refused event alone: 422, naming its dead letter.
        let (status, body) = d
            .post_json(
                "/v1/events",
                &json!({"type": "poison.test", "id": "single", "data": {"poison": true}}),
            )
            .await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(body["error"]["code"], "dead_lettered", "{name}: {body}");

        // Everything after it goes on.
        let (status, _) = d
            .post_json(
                "/v1/events",
                &json!({"type": "poison.test", "id": "after", "data": {"poison": false}}),
            )
            .await;
        assert_eq!(status, 202, "{name}");
        let got = rx.wait_for(5, Duration::from_secs(20)).await;
        let mut ids: Vec<String> = got
            .iter()
            .map(|r| r.json()["id"].as_str().unwrap().into())
            .collect();
        ids.sort();
        assert_eq!(ids, ["after", "b0", "b1", "b3", "b4"], "{name}");
        let (status, _) = d.get_json("/readyz").await;
        assert_eq!(
            status, 200,
            "{name}: one refused row leaves the daemon ready"
        );

        let (status, page) = d.get_json("/v1/dead-letters").await;
        assert_eq!(status, 200, "{name}: {page}");
        let letters = page["dead_letters"].as_array().unwrap();
        assert_eq!(letters.len(), 2, "{name}: {page}");
        let b2 = letters.iter().find(|l| l["key"] == "b2").unwrap();
        assert_eq!(b2["id"], first, "{name}");
        assert_eq!(b2["kind"], "event", "{name}");
        assert_eq!(b2["row"]["event_id"], "b2", "{name}: the whole row is kept");
        assert!(
            b2["error"]
                .as_str()
                .unwrap()
                .contains("poison refused by the test"),
            "{name}: {b2}"
        );
        assert_eq!(
            d.metric("evhost_dead_letters_total{kind=\"event\"}").await,
            2.0,
            "{name}"
        );

        // Retried before the fix: refused again, kept, counted.
        let response = d
            .request(
                reqwest::Method::POST,
                &format!("/v1/dead-letters/{first}/retry"),
            )
            .send()
            .await
            .unwrap();
        let (status, body) = evhost_e2e::status_json(response).await;
        assert_eq!(status, 409, "{name}: {body}");
        assert_eq!(body["dead_letter"]["attempts"], 2, "{name}: {body}");

        // Fixed: the CLI's retry writes it, and it is dispatched like any other.
        let drop = match backend {
            Backend::Sqlite => "DROP TRIGGER refuse_poison",
            Backend::Postgres { .. } => "DROP TRIGGER refuse_poison ON audit_log",
        };
        exec(&d, &backend, drop).await;
        let base = d.url("");
        let (code, out, err) = cli(
            &["dead-letters", "retry", &first.to_string(), "--url", &base],
            &[],
        );
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains("written to the log"), "{name}: {out}");
        let (code, out, err) = cli(&["dead-letters", "--url", &base], &[]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(
            out.contains("single") && !out.contains(" b2 "),
            "{name}: {out}"
        );
        let single = letters.iter().find(|l| l["key"] == "single").unwrap()["id"].clone();
        let (status, body) = d
            .post_json(&format!("/v1/dead-letters/{single}/retry"), &json!(null))
            .await;
        assert_eq!(
            (status, body["outcome"].clone()),
            (200, json!("in_log")),
            "{name}: {body}"
        );
        let got = rx.wait_for(7, Duration::from_secs(20)).await;
        let poisoned: Vec<_> = got
            .iter()
            .filter(|r| r.json()["data"]["poison"] == true)
            .map(|r| r.json()["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(poisoned.len(), 2, "{name}: {poisoned:?}");
        let (_, page) = d.get_json("/v1/dead-letters").await;
        assert_eq!(page["dead_letters"], json!([]), "{name}");
        let (status, report) = d.get_json("/v1/audit/verify").await;
        assert_eq!(
            (status, report["ok"].clone()),
            (200, json!(true)),
            "{name}: {report}"
        );
        let rows = d.audit_rows("types=dead_letter.*", 10, None).await;
        assert_eq!(rows.len(), 3, "{name}: each retry is recorded: {rows:?}");
    }
}

/// The same for the webhook outbox: deliveries the database refuses are set aside
/// (kind `delivery`), the event's other consumers and later events go on, and a
/// retry after the fix stores and sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_the_database_refuses_are_set_aside_and_sent_once_fixed() {
    use sqlx::Connection;
    for backend in Backend::all() {
        let name = backend.name();
        let rx = Receiver::start().await;
        let d = Daemon::start_with(Options::default().webhooks_local().backend(&backend)).await;
        d.add_webhook(&json!({"name": "all", "url": rx.url("/"), "events": ["poison.*"]}))
            .await;
        let (refuse, allow) = match &backend {
            Backend::Sqlite => (
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON webhook_deliveries \
                 WHEN NEW.message_id LIKE 'poison%' \
                 BEGIN SELECT RAISE(ABORT, 'poison delivery refused by the test'); END",
                "DROP TRIGGER refuse_poison",
            ),
            Backend::Postgres { .. } => (
                "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
                   IF NEW.message_id LIKE 'poison%' THEN \
                     RAISE EXCEPTION 'poison delivery refused by the test' USING ERRCODE = 'check_violation'; \
                   END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER refuse_poison BEFORE INSERT ON webhook_deliveries \
                   FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
                "DROP TRIGGER refuse_poison ON webhook_deliveries",
            ),
        };
        let main_db = |sql: &'static str| {
            let (d, backend) = (&d, &backend);
            async move {
                match backend {
                    Backend::Sqlite => {
                        let url =
                            format!("sqlite:{}", d.dir.path().join("data/evhost.db").display());
                        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                            .execute(&mut conn)
                            .await
                            .unwrap();
                    }
                    Backend::Postgres { .. } => exec(d, backend, sql).await,
                }
            }
        };
        main_db(refuse).await;
        for id in ["poison-1", "ok-1"] {
            let (status, body) = d
                .post_json(
                    "/v1/events?wait=true",
                    &json!({"type": "poison.test", "id": id, "data": {}}),
                )
                .await;
            assert_eq!(status, 200, "{name}: {body}");
        }
        let got = rx.wait_for(1, Duration::from_secs(20)).await;
        assert_eq!(got[0].json()["id"], "ok-1", "{name}");
        let (_, page) = d.get_json("/v1/dead-letters?kind=delivery").await;
        let letters = page["dead_letters"].as_array().unwrap();
        assert_eq!(letters.len(), 1, "{name}: {page}");
        assert_eq!(letters[0]["key"], "poison-1", "{name}");
        assert!(
            letters[0]["error"]
                .as_str()
                .unwrap()
                .contains("poison delivery refused"),
            "{name}: {page}"
        );
        assert_eq!(
            d.metric("evhost_dead_letters_total{kind=\"delivery\"}")
                .await,
            1.0,
            "{name}"
        );
        main_db(allow).await;
        let id = letters[0]["id"].clone();
        let (status, body) = d
            .post_json(&format!("/v1/dead-letters/{id}/retry"), &json!(null))
            .await;
        assert_eq!(
            (status, body["outcome"].clone()),
            (200, json!("stored")),
            "{name}: {body}"
        );
        let got = rx.wait_for(2, Duration::from_secs(20)).await;
        let ids: HashSet<String> = got
            .iter()
            .map(|r| r.json()["id"].as_str().unwrap().into())
            .collect();
        assert_eq!(
            ids,
            HashSet::from(["poison-1".to_string(), "ok-1".to_string()]),
            "{name}"
        );
    }
}

/// A receiver's answer the database refuses (here a trigger refusing attempt rows
/// whose stored answer says `poison`): the result is recorded without the answer,
/// the delivery succeeds, and the other endpoint's results are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_database_refuses_is_recorded_without_its_text() {
    use evhost_e2e::receiver::Reply;
    let Some(backend) = Backend::postgres() else {
        return; // Backend::all() said SKIPPING
    };
    let poison = Receiver::start_with(Reply::status(200).body("poison answer".into())).await;
    let rx = Receiver::start_with(Reply::status(200).body("fine answer".into())).await;
    let d = Daemon::start_with(Options::default().webhooks_local().backend(&backend)).await;
    let (poison_id, _) = d
        .add_webhook(&json!({"name": "p", "url": poison.url("/"), "events": ["answer.*"]}))
        .await;
    let (ok_id, _) = d
        .add_webhook(&json!({"name": "ok", "url": rx.url("/"), "events": ["answer.*"]}))
        .await;
    exec(
        &d,
        &backend,
        "CREATE FUNCTION refuse_answer() RETURNS trigger AS $$ BEGIN \
           IF NEW.response LIKE '%poison%' THEN \
             RAISE EXCEPTION 'answer refused by the test' USING ERRCODE = 'check_violation'; \
           END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse_answer BEFORE INSERT ON webhook_attempts \
           FOR EACH ROW EXECUTE FUNCTION refuse_answer()",
    )
    .await;
    for n in 0..3 {
        d.publish("answer.test", &json!({"n": n})).await;
    }
    for (id, name) in [(&poison_id, "p"), (&ok_id, "ok")] {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, page) = d.get_json(&format!("/v1/webhooks/{id}/deliveries")).await;
            let rows = page["deliveries"].as_array().cloned().unwrap_or_default();
            if rows.len() == 3 && rows.iter().all(|r| r["status"] == "succeeded") {
                let (_, one) = d
                    .get_json(&format!(
                        "/v1/deliveries/{}",
                        rows[0]["id"].as_str().unwrap()
                    ))
                    .await;
                let response = &one["attempt_log"][0]["response"];
                match name {
                    "p" => assert!(response.is_null(), "{one}"),
                    _ => assert_eq!(response, "fine answer", "{one}"),
                }
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{name}: {page}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
