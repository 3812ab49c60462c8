//! A crash loses no grant event: the real `obo-vault` binary, with the receiver down, is
//! SIGKILLed right after setup answered; after a restart (receiver back) the event arrives,
//! with the one `webhook-id` of the failed attempts. The outbox row was committed with the
//! grant, before the answer.

#[allow(dead_code, unreachable_pub)]
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "api/service_process.rs"]
mod service_process;

use std::time::{Duration, Instant};

use helpers::{new_user, spawn_app, Backend, TestApp};
use service_process::ServiceProcess;

/// `obo-vault serve` as a child process, with events sent to the stack's receiver.
async fn start_service(app: &TestApp) -> ServiceProcess {
    ServiceProcess::start(app, app.stack.events_env()).await
}

async fn sigkill_right_after_setup_loses_no_event(backend: Backend) {
    let Some(mut app) = spawn_app(backend).await else {
        return;
    };
    app.stack.events.set_down(true);
    let mut service = start_service(&app).await;
    app.address = service.address.clone();
    let oid = new_user();
    let response = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(response.status(), 201);
    service.kill();
    let pending = app.store.events().report().await.unwrap();
    assert_eq!(
        pending.pending, 1,
        "the event is in the outbox: {pending:?}"
    );

    app.stack.events.set_down(false);
    let mut service = start_service(&app).await;
    // Due within its back-off, or once a lease the killed process held runs out (30 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        if let Some(event) = app.stack.events.accepted().pop() {
            break event;
        }
        assert!(Instant::now() < deadline, "the event never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivered.body["type"], "grant.connected");
    assert_eq!(delivered.body["data"]["userId"], oid.as_str());
    let received = app.stack.events.received();
    assert!(
        received.iter().all(|e| e.id == delivered.id && e.verified),
        "{received:?}"
    );
    // Deleted just after the receiver's answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.store.events().report().await.unwrap().pending > 0 {
        assert!(
            Instant::now() < deadline,
            "the delivered event stays pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    service.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_right_after_setup_loses_no_event() {
    sigkill_right_after_setup_loses_no_event(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_right_after_setup_loses_no_event() {
    sigkill_right_after_setup_loses_no_event(Backend::Postgres).await;
}
