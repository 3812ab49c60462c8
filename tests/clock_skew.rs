//! Instances whose clocks drift still never redeem one refresh token twice: leases are stamped
//! and compared with the database's clock. Two `obo-vault` processes share the emulators and a
//! Postgres database; one runs under libfaketime two minutes behind the other. (SQLite does not
//! apply: it is the embedded single-instance default and its clock is its process's.)
//!
//! libfaketime is the Debian package `libfaketime`; without it the test is skipped, unless `CI`
//! is set (`.ci/run` installs it): then it fails, as the Postgres tests do.

#[allow(dead_code, unreachable_pub)]
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "api/service_process.rs"]
mod service_process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use serde_json::json;

use helpers::{spawn_app_with, Backend, TestApp};
use service_process::ServiceProcess;

/// A 5 s Entra timeout allows a 15 s lease: shorter than the two-minute offset, so a lease
/// stamped with the slow instance's own clock would look expired to the other one at once.
const SETTINGS: &[(&str, &str)] = &[("OBOVAULT_ENTRA_TIMEOUT", "5s")];
const OFFSET: &str = "-2m";
const USERS: usize = 10;

/// Where Debian puts the preload library, per architecture.
fn libfaketime() -> Option<PathBuf> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// `obo-vault serve` with the test's settings, optionally under a faked clock.
async fn start_service(app: &TestApp, faketime: Option<&Path>) -> ServiceProcess {
    let mut service = ServiceProcess::spawn(app, SETTINGS.iter().copied(), |command| {
        if let Some(library) = faketime {
            command
                .env("LD_PRELOAD", library)
                .env("FAKETIME", OFFSET)
                // Only the wall clock drifts; timers and timeouts run at the normal pace.
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
    });
    service.wait_ready(app, Duration::from_secs(30)).await;
    service
}

/// The preloaded library really moves the clock of a child process: `date` under it.
fn offset_seconds(library: &Path) -> i64 {
    let output = Command::new("date")
        .arg("+%s")
        .env("LD_PRELOAD", library)
        .env("FAKETIME", OFFSET)
        .output()
        .expect("date runs");
    let faked: i64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("date prints seconds");
    faked - Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_two_minutes_apart_never_redeem_a_token_twice() {
    let Some(library) = libfaketime() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs libfaketime (apt-get install libfaketime)"
        );
        eprintln!("skipping: libfaketime is not installed (apt-get install libfaketime)");
        return;
    };
    let offset = offset_seconds(&library);
    assert!(
        (-125..=-115).contains(&offset),
        "the faked clock is {offset} s off"
    );
    let Some(app) = spawn_app_with(Backend::Postgres, SETTINGS).await else {
        return;
    };
    let users = app.seed_users(USERS, Utc::now()).await;
    let on_time = start_service(&app, None).await;
    let behind = start_service(&app, Some(&library)).await;
    app.stack.entra.set_strict_single_use(true);
    app.stack.entra.set_latency(Duration::from_secs(1));
    app.stack.entra.reset_stats();

    let token = app.workload_token();
    let call = |address: &str, oid: &str| {
        app.client
            .post(format!("{address}/api/do-work"))
            .bearer_auth(&token)
            .json(&json!({"tenantId": app.tenant(), "userId": oid}))
            .timeout(Duration::from_secs(60))
            .send()
    };
    let calls = users
        .iter()
        .flat_map(|oid| [call(&behind.address, oid), call(&on_time.address, oid)]);
    let answers = join_all(calls).await;
    let mut statuses = Vec::new();
    for answer in answers {
        let answer = answer.expect("an answer");
        statuses.push(answer.status().as_u16());
    }
    app.stack.entra.set_latency(Duration::ZERO);
    let stats = app.stack.entra.stats();
    assert!(
        statuses.iter().all(|&s| s == 200),
        "{statuses:?}\n{stats:?}"
    );
    // Strict single-use mode answers a second redemption of one token with invalid_grant.
    assert_eq!(stats.failed_grants, 0, "{stats:?}");
    assert_eq!(stats.refresh_grants, 2 * USERS as u64, "{stats:?}");
    for oid in &users {
        let row = app.row(oid).await.unwrap();
        assert_eq!(row.status.as_str(), "active");
        assert_eq!(
            Some(app.stored_refresh_token(oid).await),
            app.stack.entra.latest_refresh_token(&app.tenant(), oid),
            "the stored token is the one Entra issued last"
        );
    }
}
