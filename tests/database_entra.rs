//! `OBOVAULT_DATABASE_AUTH=entra` through the real binary: the service signs in to Postgres
//! with tokens from the stand-in managed-identity endpoint (`IDENTITY_ENDPOINT`), keeps
//! serving do-work while the token and the role's password change under it, opens new
//! connections with the newest token, and never writes a token to its log. A misconfigured
//! identity stops start-up with a message naming the setting.
//!
//! Postgres stands in for Azure Database for PostgreSQL: a private cluster (tests/
//! database_entra/cluster.rs) with password authentication, whose role's password the test
//! sets to each new token the identity endpoint mints, before the endpoint answers it.

#[allow(dead_code, unreachable_pub)]
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "api/service_process.rs"]
mod service_process;

#[path = "database_entra/cluster.rs"]
mod cluster;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emulators::{NewIdentityToken, DEFAULT_MANAGED_IDENTITY_CLIENT_ID};
use serde_json::{json, Value};

use cluster::PrivateCluster;
use helpers::{do_work_request, spawn_app, Backend, TestApp};
use service_process::ServiceProcess;

const POSTGRES_RESOURCE: &str = "https://ossrdbms-aad.database.windows.net";
/// The database role that stands for the managed identity (Azure names it after the
/// identity, e.g. with `pgaadauth_create_principal`).
const ROLE: &str = "obo-vault-identity";
const DATABASE: &str = "obo";

/// The settings that make the service sign in with the stack's managed identity.
fn entra_settings(app: &TestApp, url: &str) -> Vec<(String, String)> {
    let identity = &app.stack.managed_identity;
    [
        ("DATABASE_URL", url.to_owned()),
        ("OBOVAULT_DATABASE_AUTH", "entra".to_owned()),
        (
            "AZURE_CLIENT_ID",
            DEFAULT_MANAGED_IDENTITY_CLIENT_ID.to_owned(),
        ),
        ("IDENTITY_ENDPOINT", identity.endpoint()),
        ("IDENTITY_HEADER", identity.identity_header()),
        (
            "RUST_LOG",
            "obo_vault=trace,azure_identity=debug,azure_core=debug,sqlx=debug,info".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// Creates the role and its database; from now on every new Postgres token the identity
/// endpoint mints becomes the role's password before the endpoint answers it. Returns the
/// tokens so far, newest last.
async fn role_follows_the_identity(
    app: &TestApp,
    cluster: &PrivateCluster,
) -> Arc<Mutex<Vec<String>>> {
    let admin = sqlx::PgPool::connect(&cluster.admin_url("postgres"))
        .await
        .expect("the private cluster answers");
    for statement in [
        format!("CREATE ROLE \"{ROLE}\" LOGIN"),
        format!("CREATE DATABASE {DATABASE} OWNER \"{ROLE}\""),
    ] {
        sqlx::query(&statement).execute(&admin).await.unwrap();
    }
    let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&tokens);
    app.stack
        .managed_identity
        .on_new_token(Arc::new(move |token: NewIdentityToken| {
            let (admin, seen) = (admin.clone(), Arc::clone(&seen));
            Box::pin(async move {
                if token.resource != POSTGRES_RESOURCE {
                    return;
                }
                // A JWT is base64url and dots: nothing to escape in the literal.
                let statement = format!("ALTER ROLE \"{ROLE}\" PASSWORD '{}'", token.access_token);
                sqlx::query(&statement).execute(&admin).await.unwrap();
                seen.lock().unwrap().push(token.access_token);
            })
        }));
    tokens
}

/// `calls` do-work calls for `oid` from `concurrency` tasks; every answer's status.
async fn do_work_burst(app: &TestApp, oid: &str, until: Instant, concurrency: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, address, token) = (
            app.client.clone(),
            app.address.clone(),
            app.workload_token(),
        );
        let body = json!({ "tenantId": app.tenant(), "userId": oid });
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while Instant::now() < until {
                let answer = do_work_request(&client, &address, &token, &body)
                    .send()
                    .await
                    .unwrap();
                statuses.push(answer.status().as_u16());
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.unwrap());
    }
    statuses
}

/// A service signed in to a private cluster through the stack's managed identity (fields in
/// the order they are dropped: the service before the cluster it uses).
struct EntraService {
    service: ServiceProcess,
    app: TestApp,
    /// The Postgres tokens minted so far, newest last.
    tokens: Arc<Mutex<Vec<String>>>,
    cluster: PrivateCluster,
}

/// Starts the cluster, the stack and the service under `OBOVAULT_DATABASE_AUTH=entra`, with
/// tokens that live `token_lifetime`; `None` (test skipped) where no cluster can run.
async fn start_entra_service(token_lifetime: Duration) -> Option<EntraService> {
    let cluster = PrivateCluster::start()?;
    let mut app = spawn_app(Backend::Sqlite).await?;
    let tokens = role_follows_the_identity(&app, &cluster).await;
    app.stack
        .managed_identity
        .set_token_lifetime(token_lifetime);
    let url = cluster.url_for(ROLE, DATABASE);
    let service = ServiceProcess::start(&app, entra_settings(&app, &url)).await;
    app.address = service.address.clone();
    Some(EntraService {
        service,
        app,
        tokens,
        cluster,
    })
}

/// Ends every connection the service has open to the cluster; how many there were.
async fn cut_connections(admin: &sqlx::PgPool) -> usize {
    let cut: Vec<(bool,)> =
        sqlx::query_as("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(ROLE)
            .fetch_all(admin)
            .await
            .unwrap();
    cut.len()
}

/// Neither a token, nor its signature, nor the identity header is in `text`.
fn assert_no_token_in(text: &str, tokens: &Mutex<Vec<String>>, app: &TestApp) {
    for token in tokens.lock().unwrap().iter() {
        assert!(
            !text.contains(token.as_str()),
            "a database token is in the log"
        );
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !text.contains(signature),
            "a token's signature is in the log"
        );
    }
    assert!(!text.contains(&app.stack.managed_identity.identity_header()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serves_do_work_while_the_database_token_changes_and_never_logs_it() {
    // Tokens that live 6 s: the endpoint mints a new one every 3 s or so, and the service
    // renews at half the remaining lifetime.
    let Some(mut entra) = start_entra_service(Duration::from_secs(6)).await else {
        return;
    };
    let (app, tokens, cluster) = (&entra.app, &entra.tokens, &entra.cluster);
    let oid = app.connected_user().await;
    let first_token = tokens.lock().unwrap().len();
    assert!(
        first_token >= 1,
        "the service signed in with a minted token"
    );
    let statuses = do_work_burst(app, &oid, Instant::now() + Duration::from_secs(12), 4).await;
    let failed: Vec<&u16> = statuses.iter().filter(|status| **status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}\n{}",
        failed.len(),
        statuses.len(),
        entra.service.output()
    );
    let rotations = tokens.lock().unwrap().len() - first_token;
    assert!(
        rotations >= 2,
        "the token changed {rotations} times while traffic ran"
    );
    eprintln!(
        "{} do-work calls, {rotations} token changes",
        statuses.len()
    );

    // New connections sign in with the newest token: stop the changes (a long-lived token is
    // minted next), cut every connection of the role, and serve again.
    app.stack
        .managed_identity
        .set_token_lifetime(Duration::from_secs(3600));
    let long_lived = Instant::now();
    while !app
        .stack
        .managed_identity
        .issued()
        .iter()
        .any(|t| t.fresh && t.expires_on > chrono::Utc::now().timestamp() + 600)
    {
        assert!(long_lived.elapsed() < Duration::from_secs(15), "no renewal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let admin = sqlx::PgPool::connect(&cluster.admin_url("postgres"))
        .await
        .unwrap();
    assert!(
        cut_connections(&admin).await > 0,
        "the service had connections open"
    );
    let cut_at: (chrono::DateTime<chrono::Utc>,) = sqlx::query_as("SELECT now()")
        .fetch_one(&admin)
        .await
        .unwrap();
    let statuses = do_work_burst(app, &oid, Instant::now() + Duration::from_secs(2), 2).await;
    assert!(
        statuses.iter().all(|status| *status == 200),
        "{statuses:?}\n{}",
        entra.service.output()
    );
    let (reconnected,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_start > $2",
    )
    .bind(ROLE)
    .bind(cut_at.0)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(reconnected >= 1, "new connections were opened");
    // Over TLS with the server's certificate verified: the URL names no sslmode, and the
    // default under entra is verify-full (the test CA is the URL's sslrootcert).
    let (plain,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.usename = $1 AND NOT s.ssl",
    )
    .bind(ROLE)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(plain, 0, "every connection of the service uses TLS");
    entra.service.assert_running();

    // No token in the service's log, though renewals were logged.
    let log = entra.service.output();
    assert!(log.contains("database token renewed"), "{log}");
    assert_no_token_in(&log, tokens, app);
    // Every connection the service opened signed in with the role's password of the moment.
    assert!(
        !cluster
            .server_log()
            .contains("password authentication failed"),
        "{}",
        cluster.server_log()
    );
}

/// Azure Database for PostgreSQL refuses a token that expired or that it does not accept as
/// it refuses a wrong password (SQLSTATE 28P01). A refused sign-in is the database being
/// unavailable for now (503 + Retry-After), not an internal error, and the
/// service serves again once a token is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_database_token_answers_503_with_retry_after_and_is_never_logged() {
    let Some(mut entra) = start_entra_service(Duration::from_secs(3600)).await else {
        return;
    };
    let (app, tokens, cluster) = (&entra.app, &entra.tokens, &entra.cluster);
    let oid = app.connected_user().await;
    assert_eq!(app.do_work(&oid, Value::Null).await.status(), 200);
    let admin = sqlx::PgPool::connect(&cluster.admin_url("postgres"))
        .await
        .unwrap();
    let alter = |change: String| {
        let admin = admin.clone();
        async move {
            let statement = format!("ALTER ROLE \"{ROLE}\" {change}");
            sqlx::query(&statement).execute(&admin).await.unwrap();
        }
    };
    for (refusal, change) in [
        // Postgres's own password expiry stands in for the token's.
        ("an expired token", "VALID UNTIL '2000-01-01'".to_owned()),
        (
            "a rejected token",
            "VALID UNTIL 'infinity' PASSWORD 'not-the-token'".to_owned(),
        ),
    ] {
        alter(change).await;
        cut_connections(&admin).await;
        // A connection back in the pool for less than a second is used without a ping first
        // (src/store/pooled.rs); past that it is pinged, found dead and replaced by a new
        // sign-in, as after any real outage, which lasts longer than that.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let response = app.do_work(&oid, Value::Null).await;
        let status = response.status();
        let retry_after = response.headers().get("retry-after").cloned();
        let body = response.text().await.unwrap();
        assert_eq!(status, 503, "{refusal}: {body}\n{}", entra.service.output());
        assert!(retry_after.is_some(), "{refusal}: no Retry-After");
        assert_no_token_in(&body, tokens, app);
    }
    let failures = cluster
        .server_log()
        .matches("password authentication failed")
        .count();
    assert!(failures >= 2, "{}", cluster.server_log());

    // The role accepts the token again: new connections sign in, do-work serves.
    let token = tokens.lock().unwrap().last().cloned().unwrap();
    alter(format!("PASSWORD '{token}'")).await;
    assert_eq!(app.do_work(&oid, Value::Null).await.status(), 200);
    entra.service.assert_running();
    assert_no_token_in(&entra.service.output(), tokens, app);
}

/// Starts the service with `settings` on top of the entra ones and expects it to exit
/// within 30 s with a message containing each of `expected`.
async fn refuses_to_start(app: &TestApp, settings: &[(&str, &str)], expected: &[&str]) {
    let mut all = entra_settings(app, "postgres://obo-vault-identity@127.0.0.1:9/obo");
    for (name, value) in settings {
        all.retain(|(n, _)| n != name);
        all.push(((*name).to_owned(), (*value).to_owned()));
    }
    let mut service = ServiceProcess::spawn(app, all, |_| {});
    let exited = service.wait_for_exit(Duration::from_secs(30)).await;
    let status = exited.unwrap_or_else(|| panic!("still running:\n{}", service.output()));
    assert!(!status.success());
    let output = service.output();
    for text in expected {
        assert!(output.contains(text), "{text:?} not in:\n{output}");
    }
    assert!(!output.contains(&app.stack.managed_identity.identity_header()));
}

#[tokio::test]
async fn a_misconfigured_identity_stops_start_up_with_a_clear_message() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let unassigned = "00000000-0000-4000-8000-0000000000aa";
    refuses_to_start(
        &app,
        &[("AZURE_CLIENT_ID", unassigned)],
        &[
            "OBOVAULT_DATABASE_AUTH=entra",
            &format!("AZURE_CLIENT_ID={unassigned}"),
            "has not been assigned",
        ],
    )
    .await;
    // The endpoint refuses a wrong identity header (401).
    refuses_to_start(
        &app,
        &[("IDENTITY_HEADER", "not-the-header")],
        &["OBOVAULT_DATABASE_AUTH=entra", "401"],
    )
    .await;
    // A password next to entra, and entra on SQLite, are refused before any token is asked.
    refuses_to_start(
        &app,
        &[("DATABASE_URL", "postgres://obo:pw@127.0.0.1:9/obo")],
        &["DATABASE_URL", "password"],
    )
    .await;
    refuses_to_start(
        &app,
        &[("DATABASE_URL", "sqlite://obo.db?mode=rwc")],
        &["OBOVAULT_DATABASE_AUTH", "Postgres"],
    )
    .await;
    assert!(app.stack.managed_identity.refused() >= 2);
}
