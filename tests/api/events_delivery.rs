//! Delivery of grant events when the receiver misbehaves: retries keep the `webhook-id`, the
//! timer's pass retries what is in back-off, two instances never send one event at the same
//! time, and events undeliverable for 3 days are dropped with an alert line.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use crate::events::{accepted, assert_all_signed, until_outbox_empty};
use crate::helpers::{build_app, Backend, TestApp, LOGS};
use obo_vault::events::outbox::EventClaim;

crate::on_both_backends!(
    spawn = crate::events::spawn_with_events;
    a_receiver_failing_three_times_gets_the_event_with_one_id,
    a_receiver_down_during_a_timer_run_gets_the_event_from_that_run,
    two_instances_never_send_one_event_at_the_same_time,
    events_undelivered_for_three_days_are_dropped_with_an_alert,
);

/// The timer's `grant-events:` line.
async fn timer_events_line(app: &TestApp) -> String {
    let answer = app.run_timer().await;
    answer["Logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|l| l.starts_with("grant-events: "))
        .expect("the timer reports its delivery pass")
        .to_owned()
}

fn count(line: &str, name: &str) -> u64 {
    crate::helpers::summary_count(line, name)
}

/// Waits until no event is leased and at least one attempt failed.
async fn until_attempt_failed(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = app.store.events().report().await.unwrap();
        if report.failing >= 1 {
            return;
        }
        assert!(Instant::now() < deadline, "no attempt failed: {report:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Moves every pending event's next attempt an hour away (a long back-off), and waits until
/// no attempt still in flight has put a short one back.
async fn push_back_off(app: &TestApp) {
    let (push, soon) = match app.backend {
        Backend::Postgres => (
            "UPDATE grant_events SET next_attempt_at = now() + interval '1 hour'",
            "SELECT count(*) FROM grant_events \
             WHERE next_attempt_at < now() + interval '30 minutes' OR lease_owner IS NOT NULL",
        ),
        Backend::Sqlite => (
            "UPDATE grant_events SET next_attempt_at = '2999-01-01T00:00:00.000Z'",
            "SELECT count(*) FROM grant_events \
             WHERE next_attempt_at < '2998-01-01' OR lease_owner IS NOT NULL",
        ),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        app.execute_sql(&[push]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if count_rows(app, soon).await == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "events keep coming due");
    }
}

async fn count_rows(app: &TestApp, query: &str) -> i64 {
    match app.backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.database.url).await.unwrap();
            let n = sqlx::query_scalar(query).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.database.url).await.unwrap();
            let n = sqlx::query_scalar(query).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }
}

async fn a_receiver_failing_three_times_gets_the_event_with_one_id(app: TestApp) {
    app.stack.events.fail_next(3);
    let oid = app.connected_user().await;
    // Back-off 1 s, 2 s, 4 s (+ jitter) before the fourth attempt.
    let events = accepted(&app, 1, Duration::from_secs(40)).await;
    let received = app.stack.events.received();
    assert_eq!(received.len(), 4, "{received:?}");
    assert!(
        received.iter().all(|e| e.id == events[0].id),
        "{received:?}"
    );
    assert_eq!(
        received.iter().map(|e| e.answered).collect::<Vec<_>>(),
        [503, 503, 503, 204]
    );
    assert_eq!(events[0].body["data"]["userId"], oid.as_str());
    assert_all_signed(&app);
    until_outbox_empty(&app).await;
}

async fn a_receiver_down_during_a_timer_run_gets_the_event_from_that_run(app: TestApp) {
    app.stack.events.set_down(true);
    let old = Utc::now() - chrono::Duration::hours(48);
    let users = app.seed_users(1, old).await;
    app.stack.entra.revoke_user(&app.tenant(), &users[0]);
    let line = timer_events_line(&app).await;
    assert_eq!(count(&line, "delivered"), 0, "{line}");
    until_attempt_failed(&app).await;
    // Pending: the seeded user's grant.connected and the run's grant.reauth_required.
    // However long the back-off, the next timer run tries again (Consumption instances idle
    // in between; the timer always comes back).
    push_back_off(&app).await;
    app.stack.events.set_down(false);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(app.stack.events.accepted().is_empty(), "not due yet");
    let line = timer_events_line(&app).await;
    assert_eq!(count(&line, "delivered"), 2, "{line}");
    let received = app.stack.events.received();
    let delivered = app.stack.events.accepted();
    let dead = delivered
        .iter()
        .find(|e| e.body["type"] == "grant.reauth_required")
        .expect("the run's event arrived");
    assert!(
        received
            .iter()
            .any(|e| e.id == dead.id && e.answered == 503),
        "{received:?}"
    );
    // Every attempt of an event carried its one id.
    for event in &received {
        assert!(delivered.iter().any(|d| d.id == event.id), "{received:?}");
    }
    assert_all_signed(&app);
}

async fn two_instances_never_send_one_event_at_the_same_time(app: TestApp) {
    let overrides = app.stack.events_env();
    let overrides: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let second = build_app(&app.stack, &app.database.url, &overrides).await;
    // Claims race directly: two owners never get one event.
    app.stack.events.set_down(true);
    for _ in 0..12 {
        app.connected_user().await;
    }
    push_back_off(&app).await;
    // Claims in back-off too (as the timer's pass does), so the delivery task (due events
    // only) stays out of this race.
    let claim = |owner: &str| EventClaim {
        owner: owner.to_owned(),
        lease: Duration::from_secs(1),
        limit: 8,
        retry_attempted_before: Some(Utc::now() + chrono::Duration::hours(2)),
    };
    let (store_a, store_b) = (app.store.events(), second.store.events());
    let (claim_a, claim_b) = (claim("a"), claim("b"));
    let (a, b) = tokio::join!(store_a.claim(&claim_a), store_b.claim(&claim_b));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        a.iter().all(|x| b.iter().all(|y| x.id != y.id)),
        "{a:?} / {b:?}"
    );
    assert_eq!(a.len() + b.len(), 12, "{} + {}", a.len(), b.len());
    let due_now = match app.backend {
        Backend::Postgres => "UPDATE grant_events SET next_attempt_at = now()",
        Backend::Sqlite => "UPDATE grant_events SET next_attempt_at = '2000-01-01T00:00:00.000Z'",
    };
    app.execute_sql(&[due_now]).await;
    // Their one-second leases run out; then both instances' delivery tasks and a timer race
    // for all twelve, each delivery held open so an overlap would show.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.stack.events.set_hold(Duration::from_millis(200));
    app.stack.events.set_down(false);
    let _second_task = second.events.as_ref().unwrap().spawn();
    let _ = app.run_timer().await;
    let delivered = accepted(&app, 12, Duration::from_secs(30)).await;
    assert_eq!(app.stack.events.concurrent_duplicates(), 0);
    let mut ids: Vec<&str> = delivered.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), delivered.len(), "an event was delivered twice");
    until_outbox_empty(&app).await;
    assert_all_signed(&app);
}

async fn events_undelivered_for_three_days_are_dropped_with_an_alert(app: TestApp) {
    app.stack.events.set_down(true);
    let oid = app.connected_user().await;
    until_attempt_failed(&app).await;
    let aged = match app.backend {
        Backend::Postgres => "UPDATE grant_events SET created_at = now() - interval '73 hours'",
        Backend::Sqlite => "UPDATE grant_events SET created_at = '2000-01-01T00:00:00.000Z'",
    };
    app.execute_sql(&[aged]).await;
    let line = timer_events_line(&app).await;
    assert_eq!(count(&line, "dropped"), 1, "{line}");
    until_outbox_empty(&app).await;
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(
        logs.lines()
            .any(|l| l.contains("grant event dropped") && l.contains("\"alert\":true")),
        "no alert line"
    );
    // The grant itself is untouched.
    assert!(app.row(&oid).await.is_some());
}
