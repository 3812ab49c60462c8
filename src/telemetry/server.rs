//! Server spans: one per invocation of setup, do-work and refresh-tokens, continuing the W3C
//! trace context of the request. The Functions host calls the handler with .NET's HttpClient,
//! which sends the invocation's `traceparent`/`tracestate` headers on forwarded requests and on
//! JSON invocations alike (the JSON payload's `Metadata` carries only `sys` and
//! `RetryContext`, see /docs/DESIGN.md). Application Insights shows these spans as requests
//! and the client spans under them as their dependencies.
//!
//! Each invocation's [`Scope`] rides in a tokio task-local around the handler's future, so
//! outbound calls anywhere below (in the same task, or in a task spawned through
//! [`super::carry`]) find it: the telemetry, the tally of token requests and, when the
//! invocation is sampled, its span's context, the parent of their client spans. The
//! OpenTelemetry context is never attached to the thread: an invocation that is not sampled
//! (under Application Insights' default, all but about five a second) carries no span at all,
//! and a task-local costs a swap at each poll where an attached context cost a clone, a push
//! and a pop (docs/PERFORMANCE.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use futures::future::Either;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

use super::Telemetry;

/// What outbound calls of one invocation need: the telemetry, the tally of token requests
/// (a do-work that needed none was served from cached access tokens) and the server span's
/// context when the invocation is sampled.
pub(crate) struct Scope {
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) token_requests: AtomicU32,
    /// The server span in its context, when it will be exported: the parent of the
    /// invocation's client spans. `None` for an invocation the sampler declined.
    pub(crate) span: Option<opentelemetry::Context>,
}

tokio::task_local! {
    /// The scope of the invocation the current task works for; `None` where a task was
    /// carried from outside any invocation.
    static INVOCATION: Option<Arc<Scope>>;
}

/// The scope of the invocation the current task works for, if any.
pub(super) fn current() -> Option<Arc<Scope>> {
    INVOCATION.try_with(Option::clone).ok().flatten()
}

/// `task` under the current invocation's scope, for a task spawned on the invocation's
/// behalf: the scope is task-local, so a spawned task would start outside the invocation and
/// its statements and outbound calls would go unreported.
pub(crate) fn carry<F: Future>(task: F) -> TaskLocalFuture<Option<Arc<Scope>>, F> {
    INVOCATION.scope(current(), task)
}

/// The function an invocation path belongs to, and the path as a static string (it is the
/// route: the routes have no parameters): forwarded (`/api/…`) or JSON (`/…`).
fn function_of(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/api/setup" => Some(("setup", "/api/setup")),
        "/setup" => Some(("setup", "/setup")),
        "/api/do-work" => Some(("do-work", "/api/do-work")),
        "/do-work" => Some(("do-work", "/do-work")),
        "/refresh-tokens" => Some(("refresh-tokens", "/refresh-tokens")),
        _ => None,
    }
}

/// `router` with server spans when there is `telemetry`, unchanged otherwise.
pub fn traced(router: axum::Router, telemetry: Option<Arc<Telemetry>>) -> axum::Router {
    match telemetry {
        Some(telemetry) => router.layer(ServerSpansLayer(telemetry)),
        None => router,
    }
}

/// Wraps each route in [`ServerSpans`].
#[derive(Clone)]
struct ServerSpansLayer(Arc<Telemetry>);

impl<S> Layer<S> for ServerSpansLayer {
    type Service = ServerSpans<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerSpans {
            inner,
            telemetry: self.0.clone(),
        }
    }
}

/// A route with a server span and a latency point for each invocation. A plain tower service
/// rather than `axum::middleware::from_fn`, whose boxed future, boxed `Next` and response
/// mapping came to about 1.4 µs of a warm do-work call's CPU time, a tenth of what telemetry
/// added to it with Application Insights at its default (docs/PERFORMANCE.md).
#[derive(Clone)]
struct ServerSpans<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

impl<S> Service<Request> for ServerSpans<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Invocation<S::Future>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some((function, route)) = function_of(request.uri().path()) else {
            return Either::Left(self.inner.call(request));
        };
        let telemetry = &self.telemetry;
        let parent = TraceContextPropagator::new()
            .extract(&opentelemetry_http::HeaderExtractor(request.headers()));
        let method = super::client::method_value(request.method().as_str());
        // Under one of Microsoft's samplers the decision comes first, and an invocation it
        // declines builds no span; under the SDK's own, a span it declines is dropped here.
        // Either way nothing below needs a span that will not be exported.
        let parent = match &telemetry.sampler {
            Some(sampler) => sampler.presample(parent),
            None => Some(parent),
        };
        let span = parent.and_then(|parent| {
            let tracer = &telemetry.tracer;
            let mut span = tracer
                .span_builder(function)
                .with_kind(SpanKind::Server)
                .start_with_context(tracer, &parent);
            span.is_recording().then(|| {
                span.set_attributes(server_attributes(function, route, method, &request));
                parent.with_span(span)
            })
        });
        let scope = Arc::new(Scope {
            telemetry: telemetry.clone(),
            token_requests: AtomicU32::new(0),
            span,
        });
        let started = Instant::now();
        // The inner call may start work before its future is first polled: under the scope.
        let response = INVOCATION.sync_scope(Some(scope.clone()), || self.inner.call(request));
        Either::Right(Invocation {
            response: INVOCATION.scope(Some(scope.clone()), response),
            end: Some(InvocationEnd {
                scope,
                function,
                method,
                started,
            }),
        })
    }
}

pin_project! {
    /// An invocation's answer, under its scope; ends the span and records the latency point
    /// when the answer is ready. Dropped unanswered (the client went away), the span ends with
    /// the last holder of its scope and no point is recorded.
    struct Invocation<F> {
        #[pin]
        response: TaskLocalFuture<Option<Arc<Scope>>, F>,
        end: Option<InvocationEnd>,
    }
}

impl<F, E> Future for Invocation<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.response.poll(cx));
        if let (Ok(response), Some(end)) = (&result, this.end.take()) {
            end.record(response);
        }
        Poll::Ready(result)
    }
}

/// What an invocation's end records, kept from its start.
struct InvocationEnd {
    scope: Arc<Scope>,
    function: &'static str,
    method: &'static str,
    started: Instant,
}

impl InvocationEnd {
    fn record(self, response: &Response) {
        let status = response.status().as_u16();
        if let Some(cx) = &self.scope.span {
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_status(Status::error(""));
            }
            span.end();
        }
        let instruments = &self.scope.telemetry.instruments;
        let series = ServerSeries {
            function: self.function,
            method: self.method,
            status,
        };
        instruments.server_duration.record(
            self.started.elapsed().as_secs_f64(),
            series,
            |series| series.attributes(),
        );
        if self.function == "do-work" && response.status().is_success() {
            match self.scope.token_requests.load(Ordering::Relaxed) {
                0 => instruments.cache_hits.add(1),
                _ => instruments.cache_misses.add(1),
            }
        }
    }
}

/// An invocation's latency series: function, method and status code.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct ServerSeries {
    function: &'static str,
    method: &'static str,
    status: u16,
}

impl ServerSeries {
    fn attributes(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new("faas.name", self.function),
            KeyValue::new("http.request.method", self.method),
            KeyValue::new("http.response.status_code", i64::from(self.status)),
        ]
    }
}

/// The server span's attributes: the function, its trigger, the method and route, and the
/// host's invocation id when it sent one.
fn server_attributes(
    function: &'static str,
    route: &'static str,
    method: &'static str,
    request: &Request,
) -> Vec<KeyValue> {
    let trigger = if function == "refresh-tokens" {
        "timer"
    } else {
        "http"
    };
    let mut attributes = Vec::with_capacity(6);
    attributes.extend([
        KeyValue::new("faas.name", function),
        KeyValue::new("faas.trigger", trigger),
        KeyValue::new("http.request.method", method),
        // The routes have no parameters: the path is the route (Application Insights names
        // the request `{method} {route}`).
        KeyValue::new("http.route", route),
        KeyValue::new("url.path", route),
    ]);
    if let Some(id) = invocation_id(request) {
        attributes.push(KeyValue::new("faas.invocation_id", id));
    }
    attributes
}

/// `X-Azure-Functions-InvocationId`, when it looks like one (a GUID).
fn invocation_id(request: &Request) -> Option<String> {
    request
        .headers()
        .get("x-azure-functions-invocationid")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
        .map(str::to_owned)
}
