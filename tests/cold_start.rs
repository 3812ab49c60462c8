//! The database late or gone, seen through the real `obo-vault` binary (SPEC §2, §3 timer):
//! the service listens at once and answers `GET /` with 503 until the database is reachable
//! and migrated, answers the functions with 503 + `Retry-After` meanwhile, starts serving by
//! itself when the database comes up, never exits for it; a timer run that cannot reach the
//! database answers 500 and the next one after the database returns answers 200.
//!
//! The database is a real Postgres behind a TCP relay of the test's own, which can refuse
//! connections ("down") or cut every open one ("gone") without touching the shared server.

#[allow(dead_code, unreachable_pub)]
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "api/service_process.rs"]
mod service_process;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use helpers::{new_user, post_timer, spawn_app, summary_count, Backend};
use service_process::ServiceProcess;

/// A TCP relay to Postgres that the test switches on and off.
struct DatabaseRelay {
    address: SocketAddr,
    state: Arc<Mutex<RelayState>>,
}

#[derive(Default)]
struct RelayState {
    forwarding: bool,
    open: Vec<AbortHandle>,
}

impl DatabaseRelay {
    /// A relay to `upstream`, refusing connections until [`Self::up`].
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(RelayState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !shared.lock().unwrap().forwarding {
                    // Closed at once: the client sees the database drop the connection.
                    continue;
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                shared.lock().unwrap().open.push(relay.abort_handle());
            }
        });
        Self { address, state }
    }

    fn up(&self) {
        self.state.lock().unwrap().forwarding = true;
    }

    /// Refuses new connections and cuts every open one.
    fn down(&self) {
        let mut state = self.state.lock().unwrap();
        state.forwarding = false;
        for relay in state.open.drain(..) {
            relay.abort();
        }
    }
}

/// The test database's URL with its host and port replaced by the relay's.
fn through(relay: &DatabaseRelay, url: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_ip_host(relay.address.ip()).unwrap();
    parsed.set_port(Some(relay.address.port())).unwrap();
    parsed.to_string()
}

async fn poll_until<F, Fut>(what: &str, within: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !probe().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_once_the_database_comes_up_and_fails_timer_runs_while_it_is_gone() {
    let Some(mut app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let upstream = url::Url::parse(&app.database.url)
        .unwrap()
        .socket_addrs(|| Some(5432))
        .unwrap()[0];
    let relay = DatabaseRelay::start(upstream).await;
    let url = through(&relay, &app.database.url);
    let mut service = ServiceProcess::spawn(&app, [("DATABASE_URL", url.as_str())], |_| {});
    app.address = service.address.clone();
    let client = app.client.clone();

    // Listening at once, not ready: GET / within 10 s, 503 with Retry-After.
    let started = Instant::now();
    let mut probe = None;
    while probe.is_none() {
        service.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "GET / unanswered"
        );
        probe = client
            .get(format!("{}/", app.address))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let probe = probe.unwrap();
    assert_eq!(probe.status(), 503);
    assert!(probe.headers().contains_key("retry-after"));

    let oid = new_user();
    let token = app.user_token(&oid);
    let early = app.post_setup(&token).await;
    assert_eq!(early.status(), 503);
    assert!(early.headers().contains_key("retry-after"));
    let problem: serde_json::Value = early.json().await.unwrap();
    assert_eq!(problem["error"], "unavailable");
    let timer = post_timer(&client, &app.address).await;
    assert_eq!(timer.status(), 500, "a run that cannot start is a failure");
    // A JSON invocation of an HTTP function gets the same 503 inside `Outputs.res`.
    let invocation = serde_json::json!({
        "Data": { "req": { "Url": format!("{}/api/setup", app.address), "Method": "POST",
            "Query": {}, "Headers": { "Authorization": [format!("Bearer {token}")] },
            "Params": {}, "Identities": [] } },
        "Metadata": {}
    });
    let wrapped: serde_json::Value = client
        .post(format!("{}/setup", app.address))
        .json(&invocation)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wrapped["Outputs"]["res"]["statusCode"], 503, "{wrapped}");

    // Several seconds of a dead database: still running, still answering.
    tokio::time::sleep(Duration::from_secs(3)).await;
    service.assert_running();
    assert_eq!(app.post_setup(&token).await.status(), 503);

    // The database comes up: setup is served within 30 s, without a restart.
    relay.up();
    let up = Instant::now();
    poll_until("setup served", Duration::from_secs(30), || async {
        app.post_setup(&token).await.status() == 201
    })
    .await;
    eprintln!("served {:?} after the database came up", up.elapsed());
    let ready = client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let first = post_timer(&client, &app.address).await;
    assert_eq!(first.status(), 200);

    // The database goes away under a running service: the timer run fails visibly.
    relay.down();
    let gone = post_timer(&client, &app.address).await;
    assert!(gone.status().is_server_error(), "{}", gone.status());
    assert_eq!(gone.status(), 500);
    let problem: serde_json::Value = gone.json().await.unwrap();
    assert_eq!(problem["error"], "run_not_started");
    assert_eq!(app.get_setup(&token).await.status(), 503);

    // Back: the next run answers 200 with its summary, and the user's grant is there.
    relay.up();
    let answer = post_timer(&client, &app.address).await;
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    let line = answer["Logs"][0].as_str().unwrap().to_owned();
    assert!(line.starts_with("refresh-tokens: examined="), "{line}");
    assert_eq!(summary_count(&line, "failed"), 0, "{line}");
    assert_eq!(app.get_setup(&token).await.status(), 200);
    service.assert_running();
}
