//! Test databases: a temporary SQLite file, and a throw-away Postgres database per test on the
//! server at `TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! Without a server the Postgres half is skipped, unless `CI` is set: then it fails.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Duration as Span, SubsecRound as _, Utc};
use secrecy::SecretString;
use sqlx::{Connection, Executor, PgConnection};

use super::{connect, DueClaim, Failure, GrantSave, Lease, RowId, SealedGrant, TokenRecord};
use super::{StoreError, TokenStore};
pub(super) use crate::domain::TokenStatus;
use crate::domain::{TenantId, UserId, UserKey};

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The Postgres server the tests use: `TEST_POSTGRES_URL`, else the local default.
pub(crate) fn server_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

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

    /// Runs a raw statement on the database (to corrupt a row).
    pub(super) async fn execute(&self, statement: &str) {
        use secrecy::ExposeSecret as _;
        let url = self.url.expose_secret();
        if self.name == "sqlite" {
            let mut db = sqlx::SqliteConnection::connect(url)
                .await
                .expect("open sqlite");
            db.execute(statement).await.expect("statement");
        } else {
            let mut db = PgConnection::connect(url).await.expect("open postgres");
            db.execute(statement).await.expect("statement");
        }
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
        let admin_url = server_url();
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

/// A fixed instant 1,000 hours before the tests started, in microseconds (what both backends
/// keep). Leases, back-offs and due selection run on the database's clock, which is the real
/// time: rows seeded at `t0()` are due by age, rows seeded near `Utc::now()` are not.
pub(super) fn t0() -> DateTime<Utc> {
    static T0: LazyLock<DateTime<Utc>> =
        LazyLock::new(|| Utc::now().trunc_subsecs(6) - Span::hours(1000));
    *T0
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

pub(super) fn lease(owner: &str, duration: Duration) -> Lease {
    Lease {
        owner: owner.into(),
        duration,
    }
}

/// An hour, as a lease or back-off span.
pub(super) const HOUR: Duration = Duration::from_secs(3600);

/// A claim of rows older than 24 h or not on `version`, leased for 5 minutes.
pub(super) fn claim(version: &str, owner: &str, limit: i64) -> DueClaim {
    DueClaim {
        key_name: KEY.into(),
        latest_version: version.into(),
        refresh_after: Some(Duration::from_secs(24 * 3600)),
        lease: lease(owner, Duration::from_secs(300)),
        limit,
    }
}

/// Records a counted failure of user `n`'s row at `revision` by `owner`, retried after `retry_in`.
pub(super) async fn fail(
    store: &dyn TokenStore,
    n: u32,
    revision: i64,
    owner: &str,
    code: &str,
    retry_in: Duration,
) -> bool {
    let key = user(n);
    store
        .record_failure(&Failure {
            row: RowId::from(&key),
            expected_revision: revision,
            owner,
            error_code: code,
            retry_in,
            counts: true,
        })
        .await
        .expect("record_failure")
}

/// Long enough for the database's clock to move past a stamp made just before (SQLite's
/// clock has millisecond steps).
pub(super) async fn tick() {
    tokio::time::sleep(Duration::from_millis(20)).await;
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

/// One save after a re-seal under a newer key (keeps `refreshed_at` and the failures), as the
/// timer's rotation makes it through [`TokenStore::save_grants`].
pub(super) trait SaveResealed: TokenStore {
    async fn save_resealed(
        &self,
        key: &UserKey,
        expected_revision: i64,
        grant: &SealedGrant,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let resealed = GrantSave {
            refreshed_at: None,
            key,
            expected_revision,
            grant,
        };
        Ok(self.save_grants(&[resealed], owner).await? == [true])
    }
}

impl SaveResealed for dyn TokenStore {}
