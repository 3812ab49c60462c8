//! Offboarding through the real `obo-vault` binary: `users delete` and `tenants purge` (with
//! and without `--delete-key`) remove exactly the named rows, write and send their
//! `grant.disconnected` events, and report counts; after a purge with `--delete-key` a row
//! restored from a backup does not open. Also: bad event settings stop start-up naming the
//! variable. Emulators and the database are in process (`api/helpers.rs`).

#[allow(dead_code, unreachable_pub)]
#[path = "api/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use chrono::Utc;
use obo_vault::domain::{RefreshToken, TenantId, UserId, UserKey};
use obo_vault::store::{AccessRecord, SealedGrant};
use serde_json::Value;

use helpers::{build_app, spawn_app, Backend, TestApp};

/// A second customer tenant.
const OTHER_TENANT: &str = "3b0c7a52-9d4e-4c1f-8a6b-2e5d7f9a1c30";

/// What a run of the binary printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|_| panic!("not JSON: {}", self.stdout))
    }
}

/// Runs `obo-vault ARGS` with the stack's settings, events sent to the stack's receiver.
async fn obo_vault(app: &TestApp, args: &[&str], extra: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_obo-vault"));
    command
        .args(args)
        .env_clear()
        .envs(app.stack.service_env())
        .envs(app.stack.events_env())
        .env("DATABASE_URL", &app.database.url)
        .env("OBOVAULT_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .envs(extra.iter().copied());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the command finishes")
        .expect("the binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn key(tenant: &str, user: &str) -> UserKey {
    UserKey {
        tenant_id: TenantId::parse(tenant).unwrap(),
        user_id: UserId::parse(user).unwrap(),
    }
}

/// Stores `count` users of `tenant`, sealed under the tenant's key, each with one access.
async fn seed(app: &TestApp, tenant: &str, count: usize) -> Vec<String> {
    let tenant_id = TenantId::parse(tenant).unwrap();
    let versioned = app
        .app
        .keys
        .latest(&app.app.key_settings.key_name(&tenant_id))
        .await
        .unwrap();
    let label = obo_vault::crypto::KeyLabel {
        name: &versioned.name,
        version: &versioned.version,
    };
    let mut users = Vec::new();
    for _ in 0..count {
        let oid = helpers::new_user();
        let owner = key(tenant, &oid);
        let sealed = obo_vault::crypto::seal(
            &RefreshToken::new(format!("rt-{oid}")),
            &owner,
            label,
            &versioned.key,
        )
        .unwrap();
        let grant = SealedGrant {
            sealed_refresh_token: sealed,
            key_name: versioned.name.clone(),
            key_version: versioned.version.clone(),
        };
        app.store
            .connect(&owner, &grant, "User.Read", Utc::now())
            .await
            .unwrap();
        let access = AccessRecord {
            key: owner.clone(),
            at: Utc::now(),
            caller_app_id: "7e57c0de-0000-4000-8000-00000000a11e".into(),
            caller_tenant_id: None,
            downstream: Some("default".into()),
            method: "GET".into(),
            path: "/me".into(),
            downstream_status: Some(200),
            refreshed: false,
        };
        app.store.record_accesses(&[access], 20).await.unwrap();
        users.push(oid);
    }
    users
}

async fn exists(app: &TestApp, tenant: &str, user: &str) -> bool {
    app.store.find(&key(tenant, user)).await.unwrap().is_some()
}

async fn history(app: &TestApp, tenant: &str, user: &str) -> usize {
    app.store
        .recent_accesses(&key(tenant, user), 20)
        .await
        .unwrap()
        .len()
}

/// The `grant.disconnected` events the receiver accepted, by user id.
async fn disconnected(app: &TestApp, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events: Vec<Value> = app
            .stack
            .events
            .accepted()
            .into_iter()
            .filter(|e| e.body["type"] == "grant.disconnected")
            .map(|e| e.body)
            .collect();
        if events.len() >= count {
            assert!(app.stack.events.received().iter().all(|e| e.verified));
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = super::spawn_app(super::Backend::Sqlite).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = super::spawn_app(super::Backend::Postgres).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
    };
}

on_both_backends!(
    users_delete_removes_one_user_and_tells_the_app,
    tenants_purge_removes_one_tenant_and_keeps_its_key_without_delete_key,
    tenants_purge_with_delete_key_shreds_every_copy,
);

async fn users_delete_removes_one_user_and_tells_the_app(app: TestApp) {
    let home = app.tenant();
    let users = seed(&app, &home, 3).await;
    let others = seed(&app, OTHER_TENANT, 1).await;
    let run = obo_vault(
        &app,
        &[
            "users", "delete", "--tenant", &home, "--user", &users[0], "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["deletedRows"], 1, "{report}");
    assert_eq!(report["events"]["written"], 1, "{report}");
    assert!(!exists(&app, &home, &users[0]).await);
    assert_eq!(history(&app, &home, &users[0]).await, 0);
    for oid in &users[1..] {
        assert!(exists(&app, &home, oid).await);
        assert_eq!(history(&app, &home, oid).await, 1);
    }
    assert!(exists(&app, OTHER_TENANT, &others[0]).await);
    let events = disconnected(&app, 1).await;
    assert_eq!(events[0]["data"]["userId"], users[0].as_str());
    assert_eq!(events[0]["data"]["tenantId"], home.as_str());
    assert_eq!(events[0]["data"]["by"], "operator");

    // Again: nothing left, nothing told, still a success.
    let run = obo_vault(
        &app,
        &["users", "delete", "--tenant", &home, "--user", &users[0]],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("nothing to delete"), "{}", run.stdout);
    // A malformed id is refused before anything is read.
    let run = obo_vault(
        &app,
        &["users", "delete", "--tenant", &home, "--user", "bob"],
        &[],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("--user"), "{}", run.stderr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(disconnected(&app, 1).await.len(), 1);
}

async fn tenants_purge_removes_one_tenant_and_keeps_its_key_without_delete_key(app: TestApp) {
    let home = app.tenant();
    let keep = seed(&app, &home, 2).await;
    let gone = seed(&app, OTHER_TENANT, 3).await;
    let other_key = format!("obo-vault-{OTHER_TENANT}");

    let run = obo_vault(&app, &["tenants", "purge", "--tenant", OTHER_TENANT], &[]).await;
    assert_ne!(run.code, 0, "without --yes nothing happens");
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    for oid in &gone {
        assert!(exists(&app, OTHER_TENANT, oid).await);
    }

    let run = obo_vault(
        &app,
        &["tenants", "purge", "--tenant", OTHER_TENANT, "--yes"],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("deleted 3 stored grant(s)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("kept"), "{}", run.stdout);
    for oid in &gone {
        assert!(!exists(&app, OTHER_TENANT, oid).await);
        assert_eq!(history(&app, OTHER_TENANT, oid).await, 0);
    }
    for oid in &keep {
        assert!(exists(&app, &home, oid).await);
        assert_eq!(history(&app, &home, oid).await, 1);
    }
    assert!(stack_has_key(&app, &other_key));
    let mut told: Vec<String> = disconnected(&app, 3)
        .await
        .iter()
        .map(|e| e["data"]["userId"].as_str().unwrap().to_owned())
        .collect();
    told.sort();
    let mut expected = gone.clone();
    expected.sort();
    assert_eq!(told, expected);
}

fn stack_has_key(app: &TestApp, name: &str) -> bool {
    app.stack.key_vault.latest_version(name).is_some()
}

async fn tenants_purge_with_delete_key_shreds_every_copy(app: TestApp) {
    let home = app.tenant();
    let keep = seed(&app, &home, 1).await;
    let gone = seed(&app, OTHER_TENANT, 2).await;
    let other_key = format!("obo-vault-{OTHER_TENANT}");
    // The backup: the rows as a database dump holds them.
    let mut backup = Vec::new();
    for oid in &gone {
        backup.push(
            app.store
                .find(&key(OTHER_TENANT, oid))
                .await
                .unwrap()
                .unwrap(),
        );
    }

    let run = obo_vault(
        &app,
        &[
            "tenants",
            "purge",
            "--tenant",
            OTHER_TENANT,
            "--yes",
            "--delete-key",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["deletedRows"], 2, "{report}");
    assert_eq!(report["key"]["purged"], true, "{report}");
    assert!(
        !app.stack.key_vault.exists(&other_key),
        "deleted and purged"
    );
    assert!(
        stack_has_key(&app, &app.key_name()),
        "the other tenant's key stays"
    );
    assert!(exists(&app, &home, &keep[0]).await);
    disconnected(&app, 2).await;

    // Restore the backup: the rows are back, but nothing opens them any more.
    for row in &backup {
        let grant = SealedGrant {
            sealed_refresh_token: row.sealed_refresh_token.clone(),
            key_name: row.key_name.clone(),
            key_version: row.key_version.clone(),
        };
        app.store
            .connect(&row.key, &grant, &row.scopes, Utc::now())
            .await
            .unwrap();
    }
    // A fresh instance (as after a restart; a running one re-checks cached versions within
    // minutes) serving the tenant cannot get the key version the rows name, so do-work for a
    // restored user fails instead of using the grant.
    let fresh = build_app(
        &app.stack,
        &app.database.url,
        &[("OBOVAULT_ALLOWED_TENANTS", "*")],
    )
    .await;
    let row = &backup[0];
    assert!(fresh
        .keys
        .version(&row.key_name, &row.key_version)
        .await
        .is_err());
    let address = helpers::serve(fresh.clone()).await;
    let calls_before = app.stack.downstream.stats();
    let body = serde_json::json!({ "tenantId": OTHER_TENANT, "userId": gone[0] });
    let response = helpers::do_work_request(&app.client, &address, &app.workload_token(), &body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!(
        status >= 500,
        "a restored row must not open: {status} {}",
        response.text().await.unwrap()
    );
    assert_eq!(
        app.stack.downstream.stats(),
        calls_before,
        "nothing was called for the user"
    );

    // Purge protection: the key is deleted, the purge is Key Vault's, on the date it printed.
    let third = "5d2f9e81-4a6c-4b3e-9f70-8c1d2a3b4e5f";
    seed(&app, third, 1).await;
    app.stack.key_vault.set_purge_protection(true);
    let run = obo_vault(
        &app,
        &[
            "tenants",
            "purge",
            "--tenant",
            third,
            "--yes",
            "--delete-key",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("purge protection"), "{}", run.stdout);
    let year = (Utc::now() + chrono::Duration::days(90))
        .format("%Y-%m-%d")
        .to_string();
    assert!(
        run.stdout.contains(&year),
        "the scheduled purge date: {}",
        run.stdout
    );
    assert!(app
        .stack
        .key_vault
        .is_deleted(&format!("obo-vault-{third}")));
}

/// Bad event settings stop the process before it listens, naming the variable.
#[tokio::test]
async fn bad_event_settings_stop_start_up_naming_the_variable() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let url = app.stack.events.url();
    let cases = [
        (
            vec![("OBOVAULT_EVENTS_SECRET", "")],
            "OBOVAULT_EVENTS_SECRET",
        ),
        (
            vec![("OBOVAULT_EVENTS_URL", "http://127.0.0.1:1/events")],
            "OBOVAULT_EVENTS_URL",
        ),
        (
            vec![("OBOVAULT_EVENTS_SECRET", "whsec_c2hvcnQ=")],
            "OBOVAULT_EVENTS_SECRET",
        ),
        (
            vec![("OBOVAULT_EVENTS_SECRET", "not-a-secret")],
            "OBOVAULT_EVENTS_SECRET",
        ),
    ];
    for (extra, variable) in cases {
        let mut settings = extra.clone();
        settings.push(("FUNCTIONS_CUSTOMHANDLER_PORT", "0"));
        let run = obo_vault(&app, &["serve"], &settings).await;
        assert_ne!(run.code, 0, "{extra:?} started");
        assert!(run.stderr.contains(variable), "{extra:?}: {}", run.stderr);
        assert!(
            !run.stderr.contains("c2hvcnQ"),
            "the secret is never printed"
        );
    }
    assert!(url.starts_with("https://"));
}
