//! The database a black-box test runs the daemon on.

use std::path::PathBuf;

/// A database for black-box tests: SQLite in the daemon's folder, or a fresh schema on
/// the PostgreSQL server named by `EVHOST_TEST_POSTGRES_URL` (dropped afterwards).
pub enum Backend {
    Sqlite,
    Postgres { url: String, schema: String },
}

impl Backend {
    /// SQLite always; PostgreSQL too when `EVHOST_TEST_POSTGRES_URL` is set (a test
    /// that then cannot reach it fails, it does not skip).
    pub fn all() -> Vec<Backend> {
        let mut all = vec![Backend::Sqlite];
        match std::env::var("EVHOST_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => all.push(Backend::Postgres {
                url,
                schema: format!("evhost_e2e_{}", uuid::Uuid::new_v4().simple()),
            }),
            _ => eprintln!(
                "SKIPPING the PostgreSQL run of this test: EVHOST_TEST_POSTGRES_URL is not set"
            ),
        }
        all
    }

    /// PostgreSQL alone, for a test that is about it: `None` (having said SKIPPING)
    /// when `EVHOST_TEST_POSTGRES_URL` is not set.
    pub fn postgres() -> Option<Backend> {
        Backend::all()
            .into_iter()
            .find(|b| matches!(b, Backend::Postgres { .. }))
    }

    /// The webhook secret key file of the daemons on this backend's database.
    pub fn secret_key_file(&self) -> PathBuf {
        match self {
            Backend::Sqlite => PathBuf::new(),
            Backend::Postgres { schema, .. } => {
                std::env::temp_dir().join(format!("{schema}-webhook-secrets.key"))
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let key_file = self.secret_key_file();
        if let Backend::Postgres { url, schema } = self {
            for suffix in ["", ".next", ".previous"] {
                let mut path = key_file.clone().into_os_string();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
            let (url, schema) = (url.clone(), schema.clone());
            // Drop runs inside the test's runtime; use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                        let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}
