//! Test databases: a temporary SQLite file, and a throw-away Postgres database per test on the
//! server at `TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! Without a server the Postgres half is skipped, unless `CI` is set: then it fails.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, Executor, PgConnection};

use super::{connect, TokenStore};

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// One backend under test.
pub(super) struct Backend {
    /// `sqlite` or `postgres`, for assertion messages.
    pub(super) name: &'static str,
    pub(super) url: SecretString,
    pub(super) store: Arc<dyn TokenStore>,
}

impl Backend {
    /// A second store (its own pool) on the same database, like a second instance.
    pub(super) async fn another(&self) -> Arc<dyn TokenStore> {
        connect(&self.url).await.expect("open a second store")
    }
}

/// Runs `check` on a fresh SQLite file, then on a fresh Postgres database.
pub(super) async fn on_both<F, Fut>(check: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = SecretString::from(format!("sqlite://{}", dir.path().join("store.db").display()));
    let store = connect(&url).await.expect("open sqlite");
    check(Backend { name: "sqlite", url, store }).await;

    let Some(database) = PgDatabase::create().await else {
        return;
    };
    let url = database.url.clone();
    let store = match connect(&url).await {
        Ok(store) => store,
        Err(error) => {
            database.drop().await;
            panic!("open postgres: {error:?}");
        }
    };
    // Spawned so a failed assertion still lets us drop the database before re-raising it.
    let outcome = tokio::spawn(check(Backend { name: "postgres", url, store })).await;
    database.drop().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// A database created for one test and dropped after it.
pub(super) struct PgDatabase {
    admin_url: String,
    name: String,
    pub(super) url: SecretString,
}

impl PgDatabase {
    /// `None` when no server answers and `CI` is unset.
    pub(super) async fn create() -> Option<Self> {
        let admin_url =
            std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        let mut admin = match admin_connection(&admin_url).await {
            Ok(admin) => admin,
            Err(reason) => {
                assert!(std::env::var_os("CI").is_none(), "CI needs Postgres: {reason}");
                eprintln!("skipping the Postgres half of this test: {reason}");
                return None;
            }
        };
        let name = format!("obo_test_{}", uuid::Uuid::new_v4().simple());
        create_database(&mut admin, &name).await;
        let mut url = url::Url::parse(&admin_url).expect("TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        Some(Self { admin_url, name, url: SecretString::from(url.to_string()) })
    }

    /// Drops the database, closing the test's connections first.
    pub(super) async fn drop(self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        match admin_connection(&self.admin_url).await {
            Ok(mut admin) => {
                if let Err(error) = admin.execute(statement.as_str()).await {
                    eprintln!("could not drop {}: {error}", self.name);
                }
            }
            Err(reason) => eprintln!("could not drop {}: {reason}", self.name),
        }
    }

    /// The database URL, for tests that open their own pool.
    pub(super) fn url(&self) -> &str {
        self.url.expose_secret()
    }
}

async fn admin_connection(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// CREATE DATABASE copies template1 and fails while another session is connected to it, which
/// parallel tests on a shared server can cause for a moment: retry a few times.
async fn create_database(admin: &mut PgConnection, name: &str) {
    let statement = format!("CREATE DATABASE {name}");
    for attempt in 1..=10 {
        match admin.execute(statement.as_str()).await {
            Ok(_) => return,
            Err(error) if attempt < 10 => {
                eprintln!("CREATE DATABASE failed ({error}), retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("cannot create the test database: {error}"),
        }
    }
}
