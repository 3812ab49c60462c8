//! The test harness: emulators, a fresh database, the service on a real port, log capture.

use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex};

use emulators::{Stack, StackOptions, UserTokenSpec};
use obo_vault::app::App;
use obo_vault::config::{Env, LogFormat, Settings};
use obo_vault::store::TokenStore;

/// Every log line any test produced, for leak scans.
pub(crate) static LOGS: LazyLock<Arc<Mutex<Vec<u8>>>> =
    LazyLock::new(|| Arc::new(Mutex::new(Vec::new())));

#[derive(Clone)]
struct CapturedLogs;

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_none() {
            // Trace for our code so leak scans see everything we could ever print.
            std::env::set_var(
                "RUST_LOG",
                "obo_vault=trace,azure_core=debug,reqwest=debug,sqlx=info,info",
            );
        }
        obo_vault::telemetry::init(LogFormat::Json, || CapturedLogs);
    });
}

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Postgres,
    Sqlite,
}

/// A database made for one test; a Postgres one is dropped when the test ends.
pub(crate) struct TestDatabase {
    pub(crate) url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime: use a thread with its own. FORCE closes the
        // service's pooled connections, which would otherwise keep the database alive.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(admin) = sqlx::PgPool::connect(&server).await {
                    let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(&statement).execute(&admin).await;
                    admin.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

impl TestDatabase {
    /// `None` when Postgres does not answer outside CI (the test is skipped).
    pub(crate) async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("obo.db").display());
                Some(Self {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                })
            }
            Backend::Postgres => {
                let server = std::env::var("TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let admin = match sqlx::PgPool::connect(&server).await {
                    Ok(pool) => pool,
                    Err(error) if std::env::var_os("CI").is_none() => {
                        eprintln!("skipping: Postgres at {server} does not answer ({error})");
                        return None;
                    }
                    Err(error) => panic!("Postgres is required in CI: {error}"),
                };
                let name = format!("obo_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                let base = server.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
                Some(Self {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    postgres: Some((server, name)),
                })
            }
        }
    }
}

/// A running service with its emulators.
pub(crate) struct TestApp {
    pub(crate) stack: Arc<Stack>,
    pub(crate) address: String,
    pub(crate) client: reqwest::Client,
    pub(crate) app: Arc<App>,
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) database: TestDatabase,
    pub(crate) backend: Backend,
}

/// Starts emulators and the service; `None` when the backend is not available here.
pub(crate) async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, &[]).await
}

/// Like [`spawn_app_with`], with settings built at run time.
pub(crate) async fn spawn_app_with_owned(
    backend: Backend,
    overrides: Vec<(String, String)>,
) -> Option<TestApp> {
    let pairs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    spawn_app_with(backend, &pairs).await
}

/// Like [`spawn_app`], with extra or overriding settings.
pub(crate) async fn spawn_app_with(
    backend: Backend,
    overrides: &[(&str, &str)],
) -> Option<TestApp> {
    spawn_app_on(backend, StackOptions::default(), overrides).await
}

/// Like [`spawn_app_with`], with emulators started with `options` (e.g. another credential).
pub(crate) async fn spawn_app_on(
    backend: Backend,
    options: StackOptions,
    overrides: &[(&str, &str)],
) -> Option<TestApp> {
    let owned: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    spawn_app_on_stack(backend, options, |_| owned).await
}

/// Like [`spawn_app_on`], with settings that depend on the started emulators (their ports).
pub(crate) async fn spawn_app_on_stack(
    backend: Backend,
    options: StackOptions,
    settings: impl FnOnce(&Stack) -> Vec<(String, String)>,
) -> Option<TestApp> {
    init_logs();
    let database = TestDatabase::create(backend).await?;
    let stack = Arc::new(Stack::start(options).await.expect("emulators start"));
    let owned = settings(&stack);
    let overrides: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let app = build_app(&stack, &database.url, &overrides).await;
    let store = app.store.clone();
    let address = serve(app.clone()).await;
    Some(TestApp {
        stack,
        address,
        client: reqwest::Client::new(),
        app,
        store,
        database,
        backend,
    })
}

/// Serves `app` on a free port of 127.0.0.1 until the test ends; its address.
pub(crate) async fn serve(app: Arc<App>) -> String {
    let application = obo_vault::startup::Application::bind(0, app).await.unwrap();
    let address = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until(std::future::pending()));
    address
}

/// `body` posted to `{address}/api/do-work` with `token` as the bearer: the do-work request
/// of every test, sent where and when the test needs it.
pub(crate) fn do_work_request(
    client: &reqwest::Client,
    address: &str,
    token: &str,
    body: &serde_json::Value,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{address}/api/do-work"))
        .bearer_auth(token)
        .json(body)
}

/// Builds another service instance over the same emulators and database (a second Functions
/// instance).
pub(crate) async fn build_app(
    stack: &Stack,
    database_url: &str,
    overrides: &[(&str, &str)],
) -> Arc<App> {
    let mut pairs: Vec<(String, String)> = stack.service_env();
    pairs.push(("DATABASE_URL".into(), database_url.into()));
    pairs.push(("FUNCTIONS_CUSTOMHANDLER_PORT".into(), "0".into()));
    let defaults = [
        ("OBOVAULT_DOWNSTREAM_ALLOWED_PATHS", "/me,/echo,/status"),
        ("OBOVAULT_DOWNSTREAM_TIMEOUT", "3s"),
        ("OBOVAULT_ENTRA_TIMEOUT", "5s"),
    ];
    for (name, value) in defaults.iter().chain(overrides) {
        pairs.retain(|(n, _)| n != name);
        pairs.push(((*name).into(), (*value).into()));
    }
    let settings = Settings::from_env(&Env::from_pairs(pairs)).expect("valid test settings");
    App::build(settings).await.expect("app builds")
}

/// A fresh user of the stack's tenant.
pub(crate) fn new_user() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl TestApp {
    pub(crate) fn tenant(&self) -> String {
        self.stack.options().tenant_id.clone()
    }

    /// A valid setup token for `oid` in the home tenant.
    pub(crate) fn user_token(&self, oid: &str) -> String {
        self.stack
            .entra
            .mint_user_token(&UserTokenSpec::new(self.tenant(), oid))
    }

    /// A valid workload token (app-only, with the role).
    pub(crate) fn workload_token(&self) -> String {
        self.stack
            .entra
            .mint_app_token(&emulators::AppTokenSpec::new(
                self.tenant(),
                "7e57c0de-0000-4000-8000-00000000a11e",
                vec!["OboVault.Act".into()],
            ))
    }

    pub(crate) async fn post_setup(&self, token: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/api/setup", self.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn get_setup(&self, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/api/setup", self.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn delete_setup(&self, token: &str) -> reqwest::Response {
        self.client
            .delete(format!("{}/api/setup", self.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Connects a new user and returns its oid.
    pub(crate) async fn connected_user(&self) -> String {
        let oid = new_user();
        let response = self.post_setup(&self.user_token(&oid)).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        oid
    }

    pub(crate) async fn do_work(&self, oid: &str, request: serde_json::Value) -> reqwest::Response {
        self.do_work_as(&self.workload_token(), oid, request).await
    }

    pub(crate) async fn do_work_as(
        &self,
        token: &str,
        oid: &str,
        request: serde_json::Value,
    ) -> reqwest::Response {
        self.do_work_body(token, &self.do_work_json(oid, request))
            .await
    }

    /// The do-work body naming `oid` of this app's tenant, with `request` unless it is null.
    pub(crate) fn do_work_json(&self, oid: &str, request: serde_json::Value) -> serde_json::Value {
        let mut body = serde_json::json!({ "tenantId": self.tenant(), "userId": oid });
        if !request.is_null() {
            body["request"] = request;
        }
        body
    }

    /// do-work on this instance with a body of the test's own making.
    pub(crate) async fn do_work_body(
        &self,
        token: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        do_work_request(&self.client, &self.address, token, body)
            .send()
            .await
            .unwrap()
    }

    /// Another instance over the same emulators and database, with `overrides`, served; its
    /// address.
    pub(crate) async fn second_instance(&self, overrides: &[(&str, &str)]) -> String {
        serve(build_app(&self.stack, &self.database.url, overrides).await).await
    }

    /// The row of `oid` holds the refresh token Entra issued last: none lost, none stale.
    pub(crate) async fn assert_holds_the_latest_refresh_token(&self, oid: &str) {
        assert_eq!(
            Some(self.stored_refresh_token(oid).await),
            self.stack.entra.latest_refresh_token(&self.tenant(), oid),
            "the row of {oid} does not hold Entra's latest refresh token"
        );
    }

    /// Invokes the timer as the Functions host does and returns the raw answer.
    pub(crate) async fn post_timer(&self) -> reqwest::Response {
        post_timer(&self.client, &self.address).await
    }

    /// Invokes the timer as the Functions host does; the run must have started (200).
    pub(crate) async fn run_timer(&self) -> serde_json::Value {
        let response = self.post_timer().await;
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        response.json().await.unwrap()
    }

    /// The row of `oid`, straight from the store.
    pub(crate) async fn row(&self, oid: &str) -> Option<obo_vault::store::TokenRecord> {
        self.store.find(&self.key(oid)).await.unwrap()
    }

    pub(crate) fn key(&self, oid: &str) -> obo_vault::domain::UserKey {
        obo_vault::domain::UserKey {
            tenant_id: obo_vault::domain::TenantId::parse(&self.tenant()).unwrap(),
            user_id: obo_vault::domain::UserId::parse(oid).unwrap(),
        }
    }

    /// Runs raw statements on the test database (to make it misbehave).
    pub(crate) async fn execute_sql(&self, statements: &[&str]) {
        match self.backend {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.database.url).await.unwrap();
                for statement in statements {
                    sqlx::query(statement).execute(&pool).await.unwrap();
                }
                pool.close().await;
            }
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.database.url).await.unwrap();
                for statement in statements {
                    sqlx::query(statement).execute(&pool).await.unwrap();
                }
                pool.close().await;
            }
        }
    }

    /// Opens the stored refresh token of `oid` with the key version recorded on its row.
    pub(crate) async fn stored_refresh_token(&self, oid: &str) -> String {
        let row = self.row(oid).await.expect("row exists");
        let key = self
            .app
            .keys
            .version(&row.key_name, &row.key_version)
            .await
            .unwrap();
        let label = obo_vault::crypto::KeyLabel {
            name: &row.key_name,
            version: &row.key_version,
        };
        obo_vault::crypto::open(&row.sealed_refresh_token, &row.key, label, &key.key)
            .unwrap()
            .expose()
            .to_owned()
    }
}

/// Runs each scenario `$name(app: TestApp)` on both backends, as two tests (`sqlite::$name`
/// and `postgres::$name`). The app comes from `spawn_app`, or with `spawn = f;` from
/// `f(backend).await` (an `Option<TestApp>`); `f` is written as in the calling module.
#[macro_export]
macro_rules! on_both_backends {
    (spawn = $spawn:expr; $($name:ident),* $(,)?) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $crate::backend_tests!(Sqlite, $spawn; $($name),*);
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $crate::backend_tests!(Postgres, $spawn; $($name),*);
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::on_both_backends!(spawn = $crate::helpers::spawn_app; $($name),*);
    };
}

/// The tests of [`on_both_backends!`] on one backend.
#[macro_export]
macro_rules! backend_tests {
    ($backend:ident, $spawn:expr; $($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let spawn = $spawn;
            if let Some(app) = spawn($crate::helpers::Backend::$backend).await {
                super::$name(app).await;
            }
        }
    )*};
}

impl TestApp {
    /// Seeds `count` connected users without an OBO each: Entra pre-issues their refresh
    /// tokens, the service's own sealing stores them as refreshed at `refreshed_at`.
    pub(crate) async fn seed_users(
        &self,
        count: usize,
        refreshed_at: chrono::DateTime<chrono::Utc>,
    ) -> Vec<String> {
        self.seed_users_of(&self.tenant(), count, refreshed_at)
            .await
    }

    /// Like [`Self::seed_users`], for users of tenant `tid`.
    pub(crate) async fn seed_users_of(
        &self,
        tid: &str,
        count: usize,
        refreshed_at: chrono::DateTime<chrono::Utc>,
    ) -> Vec<String> {
        let oids: Vec<String> = (0..count).map(|_| new_user()).collect();
        let tokens = self.stack.entra.issue_refresh_tokens(tid, &oids);
        let tenant = obo_vault::domain::TenantId::parse(tid).unwrap();
        let key = self
            .app
            .keys
            .latest(&self.app.key_settings.key_name(&tenant))
            .await
            .unwrap();
        let label = obo_vault::crypto::KeyLabel {
            name: &key.name,
            version: &key.version,
        };
        for (oid, token) in oids.iter().zip(tokens) {
            let owner = obo_vault::domain::UserKey {
                tenant_id: tenant.clone(),
                user_id: obo_vault::domain::UserId::parse(oid).unwrap(),
            };
            let sealed = obo_vault::crypto::seal(
                &obo_vault::domain::RefreshToken::new(token),
                &owner,
                label,
                &key.key,
            )
            .unwrap();
            let grant = obo_vault::store::SealedGrant {
                sealed_refresh_token: sealed,
                key_name: key.name.clone(),
                key_version: key.version.clone(),
            };
            self.store
                .connect(&owner, &grant, "User.Read", refreshed_at)
                .await
                .unwrap();
        }
        oids
    }

    /// The Key Vault secret name of the home tenant's key.
    pub(crate) fn key_name(&self) -> String {
        format!("obo-vault-{}", self.tenant())
    }
}

impl TestApp {
    /// Fires the timer and returns its summary line, checking the rest of the host contract.
    pub(crate) async fn timer_summary(&self) -> String {
        let answer = self.run_timer().await;
        assert_eq!(answer["Outputs"], serde_json::json!({}));
        assert_eq!(answer["ReturnValue"], serde_json::Value::Null);
        answer["Logs"]
            .as_array()
            .expect("Logs is an array")
            .iter()
            .filter_map(serde_json::Value::as_str)
            .find(|l| l.starts_with("refresh-tokens: examined="))
            .expect("summary line")
            .to_owned()
    }
}

/// Invokes the timer at `address` as the Functions host does.
pub(crate) async fn post_timer(client: &reqwest::Client, address: &str) -> reqwest::Response {
    let envelope = serde_json::json!({
        "Data": { "timer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false } },
        "Metadata": { "sys": { "MethodName": "refresh-tokens", "UtcNow": "2026-12-02T10:00:00.1234567Z", "RandGuid": "x" } }
    });
    client
        .post(format!("{address}/refresh-tokens"))
        .json(&envelope)
        .send()
        .await
        .unwrap()
}

/// Extracts `name=N` from a summary line.
pub(crate) fn summary_count(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in {line}"))
}
