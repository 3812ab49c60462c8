//! Postgres restarting under traffic: a steady stream of setup and do-work calls while the
//! local cluster restarts, then stops for ~5 s and starts again. Every answer is 200/201 or a
//! 503 with `Retry-After` (never a 500), and the same service instance recovers by itself.
//!
//! One test in its own binary, so nothing else of this workspace's tests talks to Postgres
//! while it restarts. It drives the local cluster with `pg_ctlcluster` (run as root); outside
//! CI it is skipped when that is missing. A guard starts the cluster again in any case.

#[allow(dead_code, unreachable_pub)]
#[path = "api/helpers.rs"]
mod helpers;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use helpers::{new_user, spawn_app, Backend, TestApp};

/// The local cluster, as `pg_ctlcluster` names it.
struct Cluster {
    version: String,
}

impl Cluster {
    /// `None` (with a message) when there is no `pg_ctlcluster` or no cluster here.
    fn find() -> Option<Self> {
        let usable = Command::new("pg_ctlcluster").arg("--help").output().is_ok();
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned());
        match version {
            Some(version) if usable => Some(Self { version }),
            _ => None,
        }
    }

    fn ctl(&self, action: &str) -> bool {
        let output = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, "main", action])
            .output()
            .expect("pg_ctlcluster runs");
        if !output.status.success() {
            eprintln!(
                "pg_ctlcluster {action}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output.status.success()
    }

    async fn run(self: &Arc<Self>, action: &'static str) {
        let cluster = Arc::clone(self);
        let started = Instant::now();
        let done = tokio::task::spawn_blocking(move || cluster.ctl(action))
            .await
            .unwrap();
        assert!(done, "pg_ctlcluster {action} failed");
        eprintln!("pg_ctlcluster {action}: {:?}", started.elapsed());
    }
}

/// Starts the cluster when dropped, so a failing test never leaves Postgres down.
struct RunningAgain(Arc<Cluster>);

impl Drop for RunningAgain {
    fn drop(&mut self) {
        let running = Command::new("pg_ctlcluster")
            .args([&self.0.version, "main", "status"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !running {
            self.0.ctl("start");
        }
    }
}

/// What one call answered.
#[derive(Debug)]
struct Answer {
    at: Instant,
    kind: &'static str,
    status: u16,
    retry_after: Option<String>,
}

/// Counts by (phase index, phase name), then by (call kind, status).
type PhaseCounts = BTreeMap<(usize, &'static str), BTreeMap<(&'static str, u16), usize>>;

#[derive(Default)]
struct Tally {
    answers: Vec<Answer>,
}

impl Tally {
    /// Answers by the phase they completed in (phases start at the given instants), kind and
    /// status.
    fn by_phase(&self, phases: &[(&'static str, Instant)]) -> PhaseCounts {
        let mut counts = PhaseCounts::new();
        for answer in &self.answers {
            let phase = phases
                .iter()
                .rposition(|(_, from)| answer.at >= *from)
                .unwrap_or(0);
            *counts
                .entry((phase, phases[phase].0))
                .or_default()
                .entry((answer.kind, answer.status))
                .or_default() += 1;
        }
        counts
    }
}

async fn answer(kind: &'static str, response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if status == 500 {
        eprintln!(
            "500 from {kind}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Answer {
        at: Instant::now(),
        kind,
        status,
        retry_after,
    }
}

/// One client: alternates do-work for known users with setups of new and returning users.
async fn traffic(
    app: Arc<TestApp>,
    users: Arc<Vec<String>>,
    done: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    seed: usize,
) {
    let mut i = seed;
    while !done.load(Ordering::Relaxed) {
        i += 1;
        let oid = &users[i % users.len()];
        let result = match i % 4 {
            // A new user (OBO, key, insert).
            0 => answer("setup", app.post_setup(&app.user_token(&new_user())).await).await,
            // A returning user (replaces the grant, drops the cached access token, so the
            // next do-work for them refreshes under the lease).
            1 => answer("setup", app.post_setup(&app.user_token(oid)).await).await,
            _ => answer("do-work", app.do_work(oid, Value::Null).await).await,
        };
        tally.lock().unwrap().answers.push(result);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn checkpoint() {
    let server = std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let started = Instant::now();
    let pool = sqlx::PgPool::connect(&server).await.unwrap();
    sqlx::query("CHECKPOINT").execute(&pool).await.unwrap();
    pool.close().await;
    eprintln!("CHECKPOINT: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_rides_out_a_postgres_restart_and_stop() {
    let Some(cluster) = Cluster::find() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "pg_ctlcluster and a local cluster are required in CI"
        );
        eprintln!("skipping: no pg_ctlcluster / local Postgres cluster here");
        return;
    };
    let cluster = Arc::new(cluster);
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let _guard = RunningAgain(Arc::clone(&cluster));
    let app = Arc::new(app);
    let mut users = Vec::new();
    for _ in 0..8 {
        users.push(app.connected_user().await);
    }
    let users = Arc::new(users);
    let tally = Arc::new(Mutex::new(Tally::default()));

    // A shutdown checkpoint flushes what other tests left dirty (fsync of every file of
    // every test database); flushing it now keeps the restart itself quick.
    checkpoint().await;

    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|seed| {
            tokio::spawn(traffic(
                Arc::clone(&app),
                Arc::clone(&users),
                Arc::clone(&done),
                Arc::clone(&tally),
                seed,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restart_at = Instant::now();
    cluster.run("restart").await;
    let restarted_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stop_at = Instant::now();
    cluster.run("stop").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start_at = Instant::now();
    cluster.run("start").await;
    let running_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    done.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let tally = Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap();
    eprintln!(
        "{} calls in {:?}, by the phase they completed in: {:?}",
        tally.answers.len(),
        started.elapsed(),
        tally.by_phase(&[
            ("steady", started),
            ("restarting", restart_at),
            ("running again", restarted_at),
            ("stopping/stopped", stop_at),
            ("starting", start_at),
            ("running again", running_at),
        ])
    );
    if std::env::var_os("TEST_LOG").is_some() {
        for answer in &tally.answers {
            eprintln!(
                "{:?} {} {}",
                answer.at - started,
                answer.kind,
                answer.status
            );
        }
    }
    for answer in &tally.answers {
        match answer.status {
            200 | 201 => {}
            503 => assert!(
                answer
                    .retry_after
                    .as_deref()
                    .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)),
                "{answer:?}"
            ),
            _ => panic!("unexpected answer {answer:?}"),
        }
    }
    assert!(
        tally.answers.iter().any(|a| a.status == 503),
        "the outage was never seen"
    );

    // The same instance recovers by itself: every user works, new users can connect.
    let deadline = Instant::now() + Duration::from_secs(15);
    for oid in users.iter() {
        loop {
            let status = app.do_work(oid, Value::Null).await.status();
            if status == 200 {
                break;
            }
            assert_eq!(status, 503);
            assert!(Instant::now() < deadline, "do-work for {oid} still failing");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(
        app.post_setup(&app.user_token(&new_user())).await.status(),
        201
    );
    for oid in users.iter() {
        let row = app.row(oid).await.unwrap();
        assert_eq!(row.status.as_str(), "active");
        app.stored_refresh_token(oid).await;
    }
}
