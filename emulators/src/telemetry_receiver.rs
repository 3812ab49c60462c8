//! A stand-in for the places the service exports telemetry to: an OpenTelemetry collector's
//! OTLP/HTTP endpoints (`POST /v1/traces`, `POST /v1/metrics`, protobuf) and Application
//! Insights' ingestion endpoint (`POST /v2/track`, `POST /v2.1/track`), over HTTPS with the
//! test CA like the other stand-ins. It keeps what it got, decoded into [`ReceivedSpan`]s and
//! [`ReceivedPoint`]s, plus every payload as it arrived (decompressed) for leak scans, and can
//! refuse (`503`) or stall (never answer) to play a collector that is down.

mod otlp;
mod track;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;

/// One span, from either protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, empty for a root span.
    pub parent_span_id: String,
    /// The span's name (Application Insights: the request or dependency name).
    pub name: String,
    /// `server` or `client` (Application Insights: request or dependency), else `internal`.
    pub kind: String,
    /// Attributes rendered as strings (Application Insights: the item's properties).
    pub attributes: BTreeMap<String, String>,
}

/// One metric data point, from either protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedPoint {
    /// The metric's name.
    pub metric: String,
    /// The point's attributes rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// A sum's or gauge's value; a histogram's count.
    pub value: f64,
    /// A histogram's sum (`None` for sums and gauges).
    pub sum: Option<f64>,
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverMode {
    /// Accepts and keeps everything.
    Accepting,
    /// Answers `503 Service Unavailable` and keeps nothing.
    Refusing,
    /// Never answers (the connection stays open until the client gives up).
    Stalled,
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    points: Vec<ReceivedPoint>,
    payloads: Vec<Vec<u8>>,
}

struct ReceiverState {
    received: Mutex<Received>,
    mode: AtomicU8,
    requests: AtomicU64,
}

/// Handle to a running receiver. Clones share it.
#[derive(Clone)]
pub struct TelemetryReceiver {
    state: Arc<ReceiverState>,
    origin: String,
}

impl std::fmt::Debug for TelemetryReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryReceiver")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl TelemetryReceiver {
    pub(crate) fn new(origin: &str) -> Self {
        Self {
            state: Arc::new(ReceiverState {
                received: Mutex::new(Received::default()),
                mode: AtomicU8::new(ReceiverMode::Accepting as u8),
                requests: AtomicU64::new(0),
            }),
            origin: origin.to_owned(),
        }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter appends `/v1/traces`, `/v1/metrics`).
    pub fn otlp_endpoint(&self) -> String {
        self.origin.clone()
    }

    /// An `APPLICATIONINSIGHTS_CONNECTION_STRING` pointing its `IngestionEndpoint` here.
    pub fn connection_string(&self, instrumentation_key: &str) -> String {
        format!(
            "InstrumentationKey={instrumentation_key};IngestionEndpoint={}/;LiveEndpoint={}/",
            self.origin, self.origin
        )
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.received.lock().spans.clone()
    }

    /// Every metric point received so far, in arrival order (periodic exports repeat them).
    pub fn points(&self) -> Vec<ReceivedPoint> {
        self.state.received.lock().points.clone()
    }

    /// Every accepted payload, decompressed, for leak scans.
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        self.state.received.lock().payloads.clone()
    }

    /// Requests that reached the receiver, whatever it answered.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Changes how the receiver answers from now on.
    pub fn set_mode(&self, mode: ReceiverMode) {
        self.state.mode.store(mode as u8, Ordering::Relaxed);
    }

    fn mode(&self) -> ReceiverMode {
        match self.state.mode.load(Ordering::Relaxed) {
            1 => ReceiverMode::Refusing,
            2 => ReceiverMode::Stalled,
            _ => ReceiverMode::Accepting,
        }
    }

    fn keep(&self, payload: Vec<u8>, spans: Vec<ReceivedSpan>, points: Vec<ReceivedPoint>) {
        let mut received = self.state.received.lock();
        received.payloads.push(payload);
        received.spans.extend(spans);
        received.points.extend(points);
    }

    /// Counts a request, applies the mode, checks the content type and decodes the body:
    /// `Err(answer)` when the request is not to be accepted.
    async fn admit(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
        content_type: &str,
    ) -> Result<Vec<u8>, Box<Response>> {
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        match self.mode() {
            ReceiverMode::Accepting => {}
            ReceiverMode::Refusing => {
                return Err(Box::new(StatusCode::SERVICE_UNAVAILABLE.into_response()))
            }
            ReceiverMode::Stalled => std::future::pending().await,
        }
        let sent = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !sent.starts_with(content_type) {
            let answer = (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("only {content_type}"),
            );
            return Err(Box::new(answer.into_response()));
        }
        track::decoded(headers, body)
            .map_err(|_| Box::new((StatusCode::BAD_REQUEST, "bad gzip body").into_response()))
    }
}

/// The receiver's routes.
pub(crate) fn router(receiver: &TelemetryReceiver) -> Router {
    Router::new()
        .route("/v1/traces", post(otlp::traces))
        .route("/v1/metrics", post(otlp::metrics))
        .route("/v2/track", post(track::track))
        .route("/v2.1/track", post(track::track))
        .with_state(receiver.clone())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
