//! A receiver of grant events (the app at `OBOVAULT_EVENTS_URL`), over HTTPS like the other
//! stand-ins. It checks every delivery's Standard Webhooks signature with the specification's
//! own library, keeps what it received for tests, prints it in the local stack, and can fail
//! deliveries on purpose (the next N, or all while "down").
//!
//! It answers `204` to a verified delivery, `401` to a bad or missing signature (as the
//! specification's libraries make receivers do), `503` while failing on purpose.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::{engine::general_purpose::STANDARD, Engine as _};
use parking_lot::Mutex;
use rand::RngCore as _;
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp` (Unix seconds).
    pub timestamp: i64,
    /// The parsed body (`Value::Null` if it was not JSON).
    pub body: Value,
    /// Whether the signature verified with the receiver's secret.
    pub verified: bool,
    /// What the receiver answered.
    pub answered: u16,
}

struct ReceiverState {
    secret: String,
    webhook: standardwebhooks::Webhook,
    received: Mutex<Vec<ReceivedEvent>>,
    fail_next: AtomicU32,
    down: AtomicBool,
    print: AtomicBool,
    /// How long each delivery is held before the answer (widens races in tests).
    hold_ms: AtomicU64,
    /// Deliveries in flight per webhook-id, and how often one id was in flight twice.
    in_flight: Mutex<HashMap<String, u32>>,
    overlaps: AtomicU64,
}

/// Handle to a running receiver. Clones share it.
#[derive(Clone)]
pub struct EventReceiver {
    state: Arc<ReceiverState>,
    url: String,
}

impl std::fmt::Debug for EventReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReceiver")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl EventReceiver {
    /// A receiver answering at `origin`, checking signatures with `secret` (`whsec_…`), or
    /// with a fresh one (32 random bytes) when `None`.
    pub(crate) fn new(origin: &str, secret: Option<&str>) -> anyhow::Result<Self> {
        let secret = match secret {
            Some(secret) => secret.to_owned(),
            None => {
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                format!("whsec_{}", STANDARD.encode(key))
            }
        };
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or_else(|| anyhow::anyhow!("the events secret must start with whsec_"))?;
        let webhook = standardwebhooks::Webhook::new(encoded)
            .map_err(|_| anyhow::anyhow!("the events secret is not whsec_ + base64"))?;
        Ok(Self {
            state: Arc::new(ReceiverState {
                secret,
                webhook,
                received: Mutex::new(Vec::new()),
                fail_next: AtomicU32::new(0),
                down: AtomicBool::new(false),
                print: AtomicBool::new(false),
                hold_ms: AtomicU64::new(0),
                in_flight: Mutex::new(HashMap::new()),
                overlaps: AtomicU64::new(0),
            }),
            url: format!("{origin}/events"),
        })
    }

    /// `OBOVAULT_EVENTS_URL`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// `OBOVAULT_EVENTS_SECRET`.
    pub fn secret(&self) -> String {
        self.state.secret.clone()
    }

    /// Everything received so far, failed attempts included, in arrival order.
    pub fn received(&self) -> Vec<ReceivedEvent> {
        self.state.received.lock().clone()
    }

    /// The events that were accepted (answered 2xx), in arrival order.
    pub fn accepted(&self) -> Vec<ReceivedEvent> {
        self.received()
            .into_iter()
            .filter(|event| (200..300).contains(&event.answered))
            .collect()
    }

    /// Answers `503` to the next `times` deliveries.
    pub fn fail_next(&self, times: u32) {
        self.state.fail_next.store(times, Ordering::SeqCst);
    }

    /// While down, every delivery gets `503`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Prints every delivery on stdout (the local stack).
    pub fn set_print(&self, print: bool) {
        self.state.print.store(print, Ordering::SeqCst);
    }

    /// Holds every delivery this long before answering.
    pub fn set_hold(&self, hold: Duration) {
        let millis = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        self.state.hold_ms.store(millis, Ordering::SeqCst);
    }

    /// How often a delivery arrived while another one with the same `webhook-id` was still
    /// being answered.
    pub fn concurrent_duplicates(&self) -> u64 {
        self.state.overlaps.load(Ordering::SeqCst)
    }
}

/// The receiver's router: `POST /events`.
pub(crate) fn router(receiver: &EventReceiver) -> Router {
    Router::new()
        .route("/events", post(receive))
        .with_state(Arc::clone(&receiver.state))
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let timestamp = header("webhook-timestamp").parse().unwrap_or_default();
    let verified = state.webhook.verify(&body, &headers).is_ok();
    {
        let mut in_flight = state.in_flight.lock();
        let count = in_flight.entry(id.clone()).or_default();
        if *count > 0 {
            state.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        *count += 1;
    }
    let hold = state.hold_ms.load(Ordering::SeqCst);
    if hold > 0 {
        tokio::time::sleep(Duration::from_millis(hold)).await;
    }
    let failing = state.down.load(Ordering::SeqCst)
        || state
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let status = if !verified {
        StatusCode::UNAUTHORIZED
    } else if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if state.print.load(Ordering::SeqCst) {
        println!(
            "event {id} ({}) {} → {}: {body}",
            if verified {
                "signature ok"
            } else {
                "BAD SIGNATURE"
            },
            body["type"].as_str().unwrap_or("?"),
            status.as_u16()
        );
    }
    state.received.lock().push(ReceivedEvent {
        id: id.clone(),
        timestamp,
        body,
        verified,
        answered: status.as_u16(),
    });
    if let Some(count) = state.in_flight.lock().get_mut(&id) {
        *count = count.saturating_sub(1);
    }
    status.into_response()
}
