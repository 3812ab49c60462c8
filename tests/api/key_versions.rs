//! Key versions as Key Vault really has them: a disabled newest version (a rotation rolled
//! back), a disabled old version under stored rows, and instances whose cached "latest" is
//! out of date after a rotation. Each case runs on SQLite and Postgres.

use std::sync::Arc;
use std::time::Duration;

use obo_vault::app::App;
use serde_json::{json, Value};

use crate::helpers::{build_app, do_work_request, new_user, summary_count, TestApp, LOGS};

/// Another service instance (its own caches) over the same emulators and database.
struct Instance {
    address: String,
    app: Arc<App>,
    client: reqwest::Client,
}

impl Instance {
    async fn start(test: &TestApp) -> Self {
        let app = build_app(&test.stack, &test.database.url, &[]).await;
        let address = crate::helpers::serve(app.clone()).await;
        Self {
            address,
            app,
            client: reqwest::Client::new(),
        }
    }

    async fn setup(&self, test: &TestApp, oid: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/api/setup", self.address))
            .bearer_auth(test.user_token(oid))
            .send()
            .await
            .unwrap()
    }

    async fn do_work(&self, test: &TestApp, oid: &str) -> reqwest::Response {
        let body = json!({ "tenantId": test.tenant(), "userId": oid });
        do_work_request(&self.client, &self.address, &test.workload_token(), &body)
            .send()
            .await
            .unwrap()
    }

    async fn timer_summary(&self) -> String {
        let envelope = json!({
            "Data": { "timer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false } },
            "Metadata": { "sys": { "MethodName": "refresh-tokens", "UtcNow": "2026-12-02T10:00:00.1234567Z", "RandGuid": "x" } }
        });
        let response = self
            .client
            .post(format!("{}/refresh-tokens", self.address))
            .json(&envelope)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        answer["Logs"]
            .as_array()
            .expect("Logs")
            .iter()
            .filter_map(Value::as_str)
            .find(|line| line.starts_with("refresh-tokens: examined="))
            .expect("summary line")
            .to_owned()
    }
}

/// Log lines (from every test of this binary) that mention `needle` and `message`.
fn log_lines_with(needle: &str, message: &str) -> usize {
    let logs = LOGS.lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| line.contains(needle) && line.contains(message))
        .count()
}

const REFUSAL_ALERT: &str = "Key Vault refuses a key version";

/// `obo-vault status --json`, run as the real binary with the service's settings.
async fn status(test: &TestApp) -> Value {
    let mut env = test.stack.service_env();
    env.push(("DATABASE_URL".into(), test.database.url.clone()));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_obo-vault"))
            .args(["status", "--json"])
            .env_clear()
            .envs(env)
            .env("RUST_LOG", "error")
            .output()
            .expect("the binary runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("status printed {stdout}"))
}

async fn a_disabled_version_is_never_sealed_under_and_its_rows_wait_for_the_operator(
    test: TestApp,
) {
    let name = test.key_name();
    let kv = &test.stack.key_vault;
    // Three users sealed under v1, then two rotations; the operator rolls the second back
    // (disables v3, the newest) and disables v1, which the three rows still need.
    let users: Vec<String> = futures::future::join_all((0..3).map(|_| test.connected_user())).await;
    let v1 = test.row(&users[0]).await.unwrap().key_version;
    // Key Vault's creation times have whole seconds: each rotation is a later second, as it
    // is outside tests.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v2 = kv.create_key(&name);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v3 = kv.create_key(&name);
    assert!(kv.disable_version(&name, &v3));
    assert!(kv.disable_version(&name, &v1));
    assert_eq!(kv.latest_version(&name), Some(v3.clone()));

    // A fresh process seals a new user under the newest *enabled* version.
    let fresh = Instance::start(&test).await;
    kv.reset_stats();
    let newcomer = new_user();
    let response = fresh.setup(&test, &newcomer).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["keyVersion"], v2.as_str());
    assert_eq!(test.row(&newcomer).await.unwrap().key_version, v2);
    let stats = kv.stats();
    assert_eq!(stats.get_latest, 1, "one 403 for latest: {stats:?}");
    assert!(stats.list_versions >= 1, "{stats:?}");

    // Rows under the disabled v1: do-work answers 503 with Retry-After, never 409; the rows
    // stay active, without a back-off.
    for oid in &users {
        let response = fresh.do_work(&test, oid).await;
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["error"], "unavailable");
        assert!(problem["detail"]
            .as_str()
            .unwrap()
            .contains("disabled or missing in Key Vault"));
    }
    // The refusal is remembered: three do-work calls read v1 once.
    assert_eq!(kv.stats().get_version, 2, "v2 once, v1 once");
    assert_eq!(test.stack.entra.stats().refresh_grants, 0);

    // The timer counts them failed, with one alert line for the version, and leaves them as
    // they were (active, no back-off, no lease).
    kv.reset_stats();
    let alerts_before = log_lines_with(&v1, REFUSAL_ALERT);
    let line = fresh.timer_summary().await;
    assert_eq!(summary_count(&line, "failed"), 3, "{line}");
    assert_eq!(summary_count(&line, "resealed"), 0, "{line}");
    assert_eq!(log_lines_with(&v1, REFUSAL_ALERT) - alerts_before, 1);
    let stats = kv.stats();
    assert_eq!(stats.get_latest, 1, "{stats:?}");
    assert!(
        stats.get_version <= 2,
        "v1 once, v2 at most once: {stats:?}"
    );
    for oid in &users {
        let row = test.row(oid).await.unwrap();
        assert_eq!(row.status.as_str(), "active");
        assert_eq!(row.key_version, v1);
        assert_eq!(row.failure_count, 0);
        assert!(row.next_attempt_at.is_none());
        assert!(row.lease_owner.is_none(), "the run released its lease");
    }

    // `obo-vault status` shows the rows under the unavailable version.
    let report = status(&test).await;
    let keys = report["keys"].as_array().unwrap();
    let entry = |version: &str| {
        keys.iter()
            .find(|k| k["keyVersion"] == version)
            .unwrap_or_else(|| panic!("{version} in {report}"))
            .clone()
    };
    assert_eq!(entry(&v1)["rows"], 3);
    assert_eq!(entry(&v1)["available"], false);
    assert!(entry(&v1)["unavailableReason"]
        .as_str()
        .unwrap()
        .contains("disabled"));
    assert_eq!(entry(&v2)["available"], true);
    assert_eq!(entry(&v2)["latest"], true);

    // The operator re-enables v1: the first run re-seals every row under v2 (v3 stays off).
    assert!(kv.enable_version(&name, &v1));
    let line = fresh.timer_summary().await;
    assert_eq!(summary_count(&line, "resealed"), 3, "{line}");
    assert_eq!(summary_count(&line, "failed"), 0, "{line}");
    for oid in &users {
        assert_eq!(test.row(oid).await.unwrap().key_version, v2);
        test.stored_refresh_token(oid).await;
        let response = fresh.do_work(&test, oid).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
}

async fn a_stale_cached_latest_never_moves_a_row_back(test: TestApp) {
    let name = test.key_name();
    let kv = &test.stack.key_vault;
    // Instance A connects the users: its cached latest is v1, and no access token is cached
    // (setup drops it), so A's next do-work redeems and saves.
    let users: Vec<String> = futures::future::join_all((0..4).map(|_| test.connected_user())).await;
    let v1 = test.row(&users[0]).await.unwrap().key_version;
    // Key Vault's creation times have whole seconds: let the rotation be a later second, as
    // it is outside tests.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Instance B rotates and re-seals every row under v2.
    let b = Instance::start(&test).await;
    let v2 = b.app.keys.rotate(&name).await.unwrap().version;
    kv.reset_stats();
    let line = b.timer_summary().await;
    assert_eq!(summary_count(&line, "resealed"), 4, "{line}");
    let reseal_run = kv.stats();
    assert_eq!(
        (reseal_run.get_latest, reseal_run.get_version),
        (1, 1),
        "one latest (v2), one version (v1): {reseal_run:?}"
    );

    // A still believes v1 is the latest; a user connecting again there stays on v2...
    let response = test.post_setup(&test.user_token(&users[3])).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["keyVersion"],
        v2.as_str(),
        "setup moved a row back to {v1}"
    );

    // ... and its do-work keeps every row on v2.
    kv.reset_stats();
    for oid in &users {
        let response = test.do_work(oid, Value::Null).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let row = test.row(oid).await.unwrap();
        assert_eq!(row.key_version, v2, "do-work moved a row back to {v1}");
        assert!(row.revision > 1);
        test.stored_refresh_token(oid).await;
    }
    assert_eq!(test.stack.entra.stats().refresh_grants, 4);
    let do_work_gets = kv.stats();
    // v2 was read by the setup; latest once (A's stale entry was dropped when found older).
    assert!(
        do_work_gets.get_latest + do_work_gets.get_version <= 2,
        "{do_work_gets:?}"
    );

    // Timer runs cost what they did: one latest, and nothing else is due.
    for instance_run in 0..2 {
        kv.reset_stats();
        let line = if instance_run == 0 {
            test.timer_summary().await
        } else {
            b.timer_summary().await
        };
        assert_eq!(summary_count(&line, "examined"), 0, "{line}");
        let stats = kv.stats();
        assert!(stats.get_latest + stats.get_version <= 2, "{stats:?}");
    }
    let report = test.store.status_report().await.unwrap();
    assert!(
        report
            .by_key_version
            .iter()
            .all(|k| k.key_version == v2 || k.rows == 0),
        "{report:?}"
    );
}

/// Every version disabled (the operator took the tenant's key out of use): setup answers 503,
/// stores nothing, and `OBOVAULT_KEY_AUTO_CREATE` does not put a new key in its place.
async fn with_every_version_disabled_setup_answers_503_and_creates_no_key(test: TestApp) {
    let name = test.key_name();
    let kv = &test.stack.key_vault;
    let first = test.connected_user().await;
    let v1 = test.row(&first).await.unwrap().key_version;
    assert!(kv.disable_version(&name, &v1));
    kv.reset_stats();

    let fresh = Instance::start(&test).await;
    let oid = new_user();
    let response = fresh.setup(&test, &oid).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["error"], "unavailable");
    assert!(test.row(&oid).await.is_none());
    assert_eq!(kv.stats().set, 0, "no key was created");
    assert_eq!(kv.latest_version(&name), Some(v1));
}

crate::on_both_backends!(
    with_every_version_disabled_setup_answers_503_and_creates_no_key,
    a_disabled_version_is_never_sealed_under_and_its_rows_wait_for_the_operator,
    a_stale_cached_latest_never_moves_a_row_back,
);
