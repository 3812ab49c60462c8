//! Client spans and latency for outbound calls. [`crate::outbound`] calls [`start`] before a
//! request and [`ClientCall::finish`] after its answer; both are no-ops outside a traced
//! invocation (no telemetry configured, or work detached from its request).
//!
//! Recorded: `http.request.method`, `url.full` without query or fragment, `server.address`,
//! `server.port`, `http.response.status_code` or `error.type`, and `obovault.dependency`.
//! Never a header or a body: tokens travel only there. Database statements ([`start_query`],
//! from the store's one place that runs them) record `db.system.name`, `db.operation.name`
//! and `db.query.text`: the statement is a constant with bound parameters, so its text holds
//! no value; the parameters (sealed tokens, ids) are never recorded.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry::trace::{SpanKind, SpanRef, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue, StringValue};
use url::Position;

use super::names;
use super::server::Scope;

/// Which service an outbound call goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dependency {
    /// Entra's token endpoint (OBO and refresh grants).
    EntraToken,
    /// Entra's OpenID metadata and signing keys.
    EntraMetadata,
    /// Key Vault secrets.
    KeyVault,
    /// A downstream API called on a user's behalf.
    Downstream,
    /// The token store (Postgres or SQLite).
    Database,
}

impl Dependency {
    /// The `obovault.dependency` value and the span name's suffix.
    pub fn name(self) -> &'static str {
        match self {
            Self::EntraToken => "entra.token",
            Self::EntraMetadata => "entra.metadata",
            Self::KeyVault => "key_vault",
            Self::Downstream => "downstream",
            Self::Database => "database",
        }
    }
}

/// An outbound call in flight.
pub struct ClientCall {
    /// The call's span in its context, when the invocation is sampled.
    span: Option<Context>,
    scope: Arc<Scope>,
    started: Instant,
    series: Series,
}

/// The latency series an outbound call records in, less the outcome, which only the answer
/// tells: with it, the call's key among the bound series of
/// [`super::instruments::Instruments`].
enum Series {
    Http(HttpCall),
    Query(QueryCall),
}

/// An HTTP call's dependency, method and server address.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct HttpCall {
    dependency: Dependency,
    method: &'static str,
    address: Arc<str>,
}

/// A statement's database system and operation.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct QueryCall {
    system: &'static str,
    operation: Cow<'static, str>,
}

/// An HTTP call's series: the call, and the answer's status code or the fixed kind of failure
/// when there was no answer.
pub(super) type HttpSeries = (HttpCall, Result<u16, &'static str>);

/// A statement's series: the statement, and the fixed kind of failure if any.
pub(super) type QuerySeries = (QueryCall, Option<&'static str>);

/// Starts a client span for `method url` as a child of the current invocation's span, or
/// returns `None` when there is none. The latency point is recorded for every call; the span
/// only when the invocation is sampled.
pub fn start(dependency: Dependency, method: &str, url: &url::Url) -> Option<ClientCall> {
    let scope = super::server::current()?;
    if dependency == Dependency::EntraToken {
        scope.token_requests.fetch_add(1, Ordering::Relaxed);
    }
    let method = method_value(method);
    // The address is shared by the span and the latency series: counted, not copied.
    let address: Arc<str> = Arc::from(url.host_str().unwrap_or_default());
    let span = scope.span.is_some().then(|| {
        let mut attributes = Vec::with_capacity(5);
        attributes.extend([
            KeyValue::new("obovault.dependency", dependency.name()),
            KeyValue::new("http.request.method", method),
            KeyValue::new("server.address", address.clone()),
            KeyValue::new("url.full", without_query(url)),
        ]);
        if let Some(port) = url.port_or_known_default() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        (names::http(method, dependency), attributes)
    });
    let series = Series::Http(HttpCall {
        dependency,
        method,
        address,
    });
    Some(ClientCall::begin(scope, span, series))
}

/// Starts a client span for one database `statement` on `system`, as a child of the current
/// invocation's span, or returns `None` when there is none. As for [`start`], the span only
/// when the invocation is sampled.
pub fn start_query(system: &'static str, statement: &'static str) -> Option<ClientCall> {
    let scope = super::server::current()?;
    let operation = names::operation(statement);
    let span = scope.span.is_some().then(|| {
        let mut attributes = Vec::with_capacity(4);
        attributes.extend([
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.operation.name", StringValue::from(operation.clone())),
            KeyValue::new("obovault.dependency", Dependency::Database.name()),
            KeyValue::new("db.query.text", statement.trim()),
        ]);
        (names::query(&operation, system), attributes)
    });
    let series = Series::Query(QueryCall { system, operation });
    Some(ClientCall::begin(scope, span, series))
}

/// `http.request.method`: one of the methods the semantic conventions name, or `_OTHER` as
/// they require for any other, so a caller's method never becomes a value (or a series) of
/// its own.
pub(super) fn method_value(method: &str) -> &'static str {
    names::STANDARD_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("_OTHER")
}

impl ClientCall {
    /// A call of the invocation `scope`, with a span `(name, attributes)` when the invocation
    /// is sampled. A client span of one that is not would never be exported (every sampler
    /// here follows an in-process parent), so it is not built: its name, URL and attributes
    /// cost a tenth of a warm call's instructions.
    fn begin(
        scope: Arc<Scope>,
        span: Option<(Cow<'static, str>, Vec<KeyValue>)>,
        series: Series,
    ) -> Self {
        let span = span
            .zip(scope.span.as_ref())
            .map(|((name, attributes), parent)| {
                let tracer = &scope.telemetry.tracer;
                let span = tracer
                    .span_builder(name)
                    .with_kind(SpanKind::Client)
                    .with_attributes(attributes)
                    .start_with_context(tracer, parent);
                parent.with_span(span)
            });
        Self {
            span,
            scope,
            started: Instant::now(),
            series,
        }
    }

    /// Ends a statement's span, with `error` (a fixed kind such as `database` or `io`) when
    /// it failed.
    pub fn finish_query(self, error: Option<&'static str>) {
        // A statement has no status code; `Ok(0)` only says it did not fail.
        self.end(error.map_or(Ok(0), Err));
    }

    /// Ends the span with the answer's status, or with `error` (a fixed, secret-free kind
    /// such as `timeout` or `connect`) when there was no answer.
    pub fn finish(self, outcome: Result<u16, &'static str>) {
        self.end(outcome);
    }

    fn end(self, outcome: Result<u16, &'static str>) {
        let elapsed = self.started.elapsed().as_secs_f64();
        if let Some(span) = self.span.as_ref().map(TraceContextExt::span) {
            mark_span(&span, &self.series, outcome);
            span.end();
        }
        let instruments = &self.scope.telemetry.instruments;
        match self.series {
            Series::Http(call) => {
                instruments
                    .client_duration
                    .record(elapsed, (call, outcome), http_attributes);
            }
            Series::Query(call) => {
                instruments
                    .db_duration
                    .record(elapsed, (call, outcome.err()), query_attributes);
            }
        }
    }
}

/// The answer's attributes and status on a call's span.
fn mark_span(span: &SpanRef<'_>, series: &Series, outcome: Result<u16, &'static str>) {
    match (series, outcome) {
        (Series::Http(_), Ok(status)) => {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 400 {
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(""));
            }
        }
        (Series::Query(_), Ok(_)) => {}
        (_, Err(kind)) => {
            span.set_attribute(KeyValue::new("error.type", kind));
            span.set_status(Status::error(""));
        }
    }
}

/// A bound HTTP series' attributes.
fn http_attributes((call, outcome): &HttpSeries) -> Vec<KeyValue> {
    let outcome = match *outcome {
        Ok(status) => KeyValue::new("http.response.status_code", i64::from(status)),
        Err(kind) => KeyValue::new("error.type", kind),
    };
    vec![
        KeyValue::new("obovault.dependency", call.dependency.name()),
        KeyValue::new("http.request.method", call.method),
        KeyValue::new("server.address", call.address.clone()),
        outcome,
    ]
}

/// A bound statement series' attributes.
fn query_attributes((call, error): &QuerySeries) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("db.system.name", call.system),
        KeyValue::new(
            "db.operation.name",
            StringValue::from(call.operation.clone()),
        ),
    ];
    if let Some(kind) = *error {
        attributes.push(KeyValue::new("error.type", kind));
    }
    attributes
}

/// `scheme://host[:port]/path`: no user info, query or fragment (signatures, codes). Sliced
/// from the parsed URL, which keeps the positions of its parts, instead of re-serialized.
fn without_query(url: &url::Url) -> String {
    let host_to_path = &url[Position::BeforeHost..Position::AfterPath];
    let mut full = String::with_capacity(url.scheme().len() + 3 + host_to_path.len());
    full.push_str(url.scheme());
    full.push_str("://");
    full.push_str(host_to_path);
    full
}

#[cfg(test)]
mod tests;
