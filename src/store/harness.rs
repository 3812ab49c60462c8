//! Test databases: a temporary SQLite file, and a throw-away Postgres database per test on the
//! server at `TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! Without a server the Postgres half is skipped, unless `CI` is set: then it fails.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use secrecy::SecretString;
use sqlx::{Connection, Executor, PgConnection};

use super::{connect, DueClaim, Lease, SealedGrant, TokenRecord, TokenStore};
use crate::domain::{TenantId, UserId, UserKey};

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
    F: Fn(Backend) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = SecretString::from(format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    ));
    let store = connect(&url).await.expect("open sqlite");
    check(Backend {
        name: "sqlite",
        url,
        store,
    })
    .await;

    with_postgres(|url| async move {
        let store = connect(&url).await.expect("open postgres");
        check(Backend {
            name: "postgres",
            url,
            store,
        })
        .await;
    })
    .await;
}

/// Runs `check` with the URL of a fresh Postgres database, dropped afterwards even when
/// `check` panics. Does nothing when no server answers and `CI` is unset.
pub(super) async fn with_postgres<F, Fut>(check: F)
where
    F: FnOnce(SecretString) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(database) = PgDatabase::create().await else {
        return;
    };
    // Spawned so a failed assertion still lets us drop the database before re-raising it.
    let outcome = tokio::spawn(check(database.url.clone())).await;
    database.drop().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// A database created for one test and dropped after it.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: SecretString,
}

impl PgDatabase {
    /// `None` when no server answers and `CI` is unset.
    async fn create() -> Option<Self> {
        let admin_url =
            std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        let mut admin = match admin_connection(&admin_url).await {
            Ok(admin) => admin,
            Err(reason) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI needs Postgres: {reason}"
                );
                eprintln!("skipping the Postgres half of this test: {reason}");
                return None;
            }
        };
        let name = format!("obo_test_{}", uuid::Uuid::new_v4().simple());
        create_database(&mut admin, &name).await;
        let mut url = url::Url::parse(&admin_url).expect("TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        Some(Self {
            admin_url,
            name,
            url: SecretString::from(url.to_string()),
        })
    }

    /// Drops the database, closing the test's connections first.
    async fn drop(self) {
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

// Fixtures shared by the contract tests.

pub(super) const KEY: &str = "obo-vault-tenant";

pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time")
}

pub(super) fn hours(n: i64) -> Span {
    Span::hours(n)
}

pub(super) fn user(n: u32) -> UserKey {
    UserKey {
        tenant_id: TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
        user_id: UserId::parse(&format!("00000000-0000-0000-0000-{n:012}")).expect("guid"),
    }
}

pub(super) fn grant(sealed: &str, version: &str) -> SealedGrant {
    SealedGrant {
        sealed_refresh_token: sealed.as_bytes().to_vec(),
        key_name: KEY.into(),
        key_version: version.into(),
    }
}

pub(super) fn lease(owner: &str, until: DateTime<Utc>) -> Lease {
    Lease {
        owner: owner.into(),
        until,
    }
}

pub(super) fn claim(version: &str, now: DateTime<Utc>, owner: &str, limit: i64) -> DueClaim {
    DueClaim {
        key_name: KEY.into(),
        latest_version: version.into(),
        refreshed_before: now - hours(24),
        now,
        lease: lease(owner, now + Span::minutes(5)),
        limit,
    }
}

/// Connects user `n` with a token sealed under `version`, refreshed at `refreshed_at`.
pub(super) async fn seed(
    store: &dyn TokenStore,
    n: u32,
    version: &str,
    refreshed_at: DateTime<Utc>,
) {
    store
        .connect(&user(n), &grant("rt", version), "User.Read", refreshed_at)
        .await
        .expect("connect");
}

pub(super) async fn get(store: &dyn TokenStore, n: u32) -> TokenRecord {
    store
        .find(&user(n))
        .await
        .expect("find")
        .expect("row exists")
}

pub(super) fn user_numbers(rows: &[TokenRecord]) -> Vec<String> {
    rows.iter()
        .map(|row| {
            row.key.user_id.as_str()[24..]
                .trim_start_matches('0')
                .to_owned()
        })
        .collect()
}
