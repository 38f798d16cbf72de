//! Shared by the library tests: a database per test on each backend.
// Each test file uses its own part of this module.
#![allow(dead_code)]

use evhost::audit::AuditOptions;
use evhost::config::Config;
use evhost::store::Store;

/// A database for one test, removed afterwards (PostgreSQL: its own schema).
pub struct TestDb {
    pub store: Store,
    pub dir: tempfile::TempDir,
    schema: Option<String>,
    pg_url: Option<String>,
}

impl TestDb {
    pub async fn all() -> Vec<TestDb> {
        // Writer errors are logged, not returned; show them in a failing test's output.
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let mut dbs = vec![TestDb::sqlite().await];
        match std::env::var("EVHOST_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => dbs.push(TestDb::postgres(&url).await),
            _ => eprintln!(
                "SKIPPING the PostgreSQL half of this test: EVHOST_TEST_POSTGRES_URL is not set"
            ),
        }
        dbs
    }

    pub fn config(dir: &std::path::Path, url: Option<&str>, schema: Option<&str>) -> Config {
        let mut env = vec![("EVHOST_DATA_DIR".to_string(), dir.display().to_string())];
        if let Some(url) = url {
            env.push(("EVHOST_DATABASE__URL".into(), url.into()));
        }
        if let Some(schema) = schema {
            env.push(("EVHOST_DATABASE__SCHEMA".into(), schema.into()));
        }
        Config::load_from(None, env).unwrap()
    }

    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&Self::config(dir.path(), None, None))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        TestDb {
            store,
            dir,
            schema: None,
            pg_url: None,
        }
    }

    async fn postgres(url: &str) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let schema = format!("evhost_test_{}", uuid::Uuid::new_v4().simple());
        let store = Store::connect(&Self::config(dir.path(), Some(url), Some(&schema)))
            .await
            .unwrap_or_else(|e| {
                panic!("EVHOST_TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {e}")
            });
        store.migrate().await.unwrap();
        TestDb {
            store,
            dir,
            schema: Some(schema),
            pg_url: Some(url.into()),
        }
    }

    /// The log's settings for tests: small batches, a queue of 1,000 appends, and
    /// one writer, so one chain per `Audit` (a test of several writers sets its own).
    pub fn audit_options(&self) -> AuditOptions {
        AuditOptions {
            batch_size: 100,
            max_backlog: 1000,
            retention_days: 0,
            writers: Some(1),
            ..AuditOptions::from_config(&Self::config(self.dir.path(), None, None))
        }
    }

    pub async fn exec(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match &self.store {
            Store::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
            Store::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
        }
        .unwrap();
    }

    pub async fn cleanup(self) {
        self.store.close().await;
        if let (Some(schema), Some(url)) = (&self.schema, &self.pg_url) {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{schema}\" CASCADE"
            )))
            .execute(&pool)
            .await
            .unwrap();
        }
    }
}

/// A plugin built for wasm32-wasip2 by `tests/run.sh` (profile `plugin`), such as
/// `hostile` or `spam_router`.
pub fn plugin_wasm(name: &str) -> std::path::PathBuf {
    let dir = match std::env::var_os("EVHOST_TEST_PLUGINS_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            // target/<profile>/deps/<test> → target/wasm32-wasip2/plugin
            let exe = std::env::current_exe().expect("test executable path");
            let target = exe
                .ancestors()
                .nth(3)
                .expect("the test runs from target/<profile>/deps");
            target.join("wasm32-wasip2/plugin")
        }
    };
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (tests/run.sh does: cargo build --profile plugin --target wasm32-wasip2 -p spam-router -p pii-redactor -p vip-router -p hostile)",
        path.display()
    );
    path
}
