//! A crash loses no grant event: the real `obo-vault` binary, with the receiver down, is
//! SIGKILLed right after setup answered; after a restart (receiver back) the event arrives,
//! with the one `webhook-id` of the failed attempts. The outbox row was committed with the
//! grant, before the answer.

#[allow(dead_code, unreachable_pub)]
#[path = "api/helpers.rs"]
mod helpers;

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use helpers::{new_user, spawn_app, Backend, TestApp};

/// `obo-vault serve` as a child process, with events sent to the stack's receiver.
struct Service {
    child: tokio::process::Child,
    address: String,
}

impl Service {
    async fn start(app: &TestApp) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_obo-vault"));
        command
            .arg("serve")
            .env_clear()
            .envs(app.stack.service_env())
            .envs(app.stack.events_env())
            .env("DATABASE_URL", &app.database.url)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("OBOVAULT_LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let service = Self {
            child: command.spawn().expect("obo-vault starts"),
            address: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = app
                .client
                .get(format!("{}/", service.address))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return service;
            }
            assert!(Instant::now() < deadline, "obo-vault did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no drain.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

async fn sigkill_right_after_setup_loses_no_event(backend: Backend) {
    let Some(mut app) = spawn_app(backend).await else {
        return;
    };
    app.stack.events.set_down(true);
    let service = Service::start(&app).await;
    app.address = service.address.clone();
    let oid = new_user();
    let response = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(response.status(), 201);
    service.kill().await;
    let pending = app.store.events().report().await.unwrap();
    assert_eq!(
        pending.pending, 1,
        "the event is in the outbox: {pending:?}"
    );

    app.stack.events.set_down(false);
    let service = Service::start(&app).await;
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
    service.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_right_after_setup_loses_no_event() {
    sigkill_right_after_setup_loses_no_event(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_right_after_setup_loses_no_event() {
    sigkill_right_after_setup_loses_no_event(Backend::Postgres).await;
}
