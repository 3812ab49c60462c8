//! Grant events end to end (SPEC §6): the service with `OBOVAULT_EVENTS_URL` pointing at the
//! stack's receiver, which checks every Standard Webhooks signature. Each change of a grant
//! produces exactly its documented event, delivered within seconds while the service runs.

use std::time::{Duration, Instant};

use chrono::Utc;
use emulators::{ReceivedEvent, Stack, StackOptions};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_on_stack, summary_count, Backend, TestApp};

/// Delivery while the service runs, as the issue asks.
pub(crate) const WITHIN: Duration = Duration::from_secs(5);

/// Starts the emulators and the service with grant events sent to the stack's receiver.
pub(crate) async fn spawn_with_events(backend: Backend) -> Option<TestApp> {
    let app = spawn_app_on_stack(backend, StackOptions::default(), Stack::events_env).await?;
    assert!(app.app.events.is_some(), "events are configured");
    Some(app)
}

crate::on_both_backends!(
    spawn = crate::events::spawn_with_events;
    setup_reconnect_and_delete_each_send_one_event,
    a_grant_found_dead_by_do_work_sends_reauth_required,
    a_grant_found_dead_by_the_timer_sends_reauth_required,
);

/// Waits until the receiver accepted `count` events, at most `within`.
pub(crate) async fn accepted(app: &TestApp, count: usize, within: Duration) -> Vec<ReceivedEvent> {
    let deadline = Instant::now() + within;
    loop {
        let accepted = app.stack.events.accepted();
        if accepted.len() >= count {
            return accepted;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} events accepted within {within:?}: {:?}",
            accepted.len(),
            app.stack.events.received()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the outbox is empty (a delivered event is deleted just after the receiver's
/// answer).
pub(crate) async fn until_outbox_empty(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = app.store.events().report().await.unwrap();
        if report.pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "still pending: {report:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every request the receiver got was signed correctly and carried a fresh timestamp.
pub(crate) fn assert_all_signed(app: &TestApp) {
    let now = Utc::now().timestamp();
    for event in app.stack.events.received() {
        assert!(event.verified, "bad signature: {event:?}");
        assert!(
            (now - event.timestamp).abs() < 300,
            "stale timestamp: {event:?}"
        );
        assert!(event.id.starts_with("msg_"), "{event:?}");
    }
}

/// The body has exactly the documented fields; `data` exactly `extra` besides the ids.
pub(crate) fn assert_event(
    event: &ReceivedEvent,
    kind: &str,
    tenant: &str,
    oid: &str,
    extra: Value,
) {
    let body = &event.body;
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["data", "timestamp", "type"], "{body}");
    assert_eq!(body["type"], kind, "{body}");
    chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).unwrap();
    let mut data = json!({ "tenantId": tenant, "userId": oid });
    data.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    assert_eq!(body["data"], data, "{body}");
}

async fn setup_reconnect_and_delete_each_send_one_event(app: TestApp) {
    let oid = app.connected_user().await;
    let events = accepted(&app, 1, WITHIN).await;
    assert_event(
        &events[0],
        "grant.connected",
        &app.tenant(),
        &oid,
        json!({"reconnected": false}),
    );

    let token = app.user_token(&oid);
    assert_eq!(app.post_setup(&token).await.status(), 200);
    let events = accepted(&app, 2, WITHIN).await;
    assert_event(
        &events[1],
        "grant.connected",
        &app.tenant(),
        &oid,
        json!({"reconnected": true}),
    );

    assert_eq!(app.delete_setup(&token).await.status(), 204);
    let events = accepted(&app, 3, WITHIN).await;
    assert_event(
        &events[2],
        "grant.disconnected",
        &app.tenant(),
        &oid,
        json!({"by": "user"}),
    );

    // A DELETE of nothing changes nothing and tells nothing.
    assert_eq!(app.delete_setup(&token).await.status(), 204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = app.stack.events.received();
    assert_eq!(received.len(), 3, "{received:?}");
    let mut ids: Vec<&str> = received.iter().map(|e| e.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one id per event");
    assert_all_signed(&app);
    until_outbox_empty(&app).await;
}

async fn a_grant_found_dead_by_do_work_sends_reauth_required(app: TestApp) {
    let oid = app.connected_user().await;
    accepted(&app, 1, WITHIN).await;
    app.stack.entra.revoke_user(&app.tenant(), &oid);
    let response = app.do_work(&oid, Value::Null).await;
    assert_eq!(response.status(), 409);
    let events = accepted(&app, 2, WITHIN).await;
    assert_event(
        &events[1],
        "grant.reauth_required",
        &app.tenant(),
        &oid,
        json!({"reason": "AADSTS50173"}),
    );
    // The row stays dead: a second call reads the status and writes no second event.
    assert_eq!(app.do_work(&oid, Value::Null).await.status(), 409);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.stack.events.received().len(), 2);
    assert_all_signed(&app);
}

async fn a_grant_found_dead_by_the_timer_sends_reauth_required(app: TestApp) {
    let old = Utc::now() - chrono::Duration::hours(48);
    let users = app.seed_users(3, old).await;
    // Seeding connects them: three grant.connected first.
    accepted(&app, 3, WITHIN).await;
    app.stack.entra.revoke_user(&app.tenant(), &users[0]);
    let answer = app.run_timer().await;
    let logs: Vec<&str> = answer["Logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let summary = logs
        .iter()
        .find(|l| l.starts_with("refresh-tokens:"))
        .unwrap();
    assert_eq!(summary_count(summary, "reauth_required"), 1, "{logs:?}");
    // Either the background task or the timer's own pass sent it before the timer answered.
    assert!(
        logs.iter().any(|l| l.starts_with("grant-events: ")),
        "{logs:?}"
    );
    let events = accepted(&app, 4, WITHIN).await;
    assert_event(
        &events[3],
        "grant.reauth_required",
        &app.tenant(),
        &users[0],
        json!({"reason": "AADSTS50173"}),
    );
    // Refreshes are not state changes: no other event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.stack.events.received().len(), 4);
    assert_all_signed(&app);
}
