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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    attributes: Vec<KeyValue>,
}

/// Starts a client span for `method url` as a child of the current invocation's span, or
/// returns `None` when there is none. The latency point is recorded for every call; the span
/// only when the invocation is sampled.
pub fn start(dependency: Dependency, method: &str, url: &url::Url) -> Option<ClientCall> {
    let (parent, scope) = traced()?;
    if dependency == Dependency::EntraToken {
        scope.token_requests.fetch_add(1, Ordering::Relaxed);
    }
    // The address is shared by the span and the latency point: counted, not copied.
    let address: Arc<str> = Arc::from(url.host_str().unwrap_or_default());
    let mut attributes = Vec::with_capacity(4);
    attributes.extend([
        KeyValue::new("obovault.dependency", dependency.name()),
        KeyValue::new("http.request.method", method_value(method)),
        KeyValue::new("server.address", address),
    ]);
    let span = sampled(&parent).then(|| {
        let mut span_attributes = Vec::with_capacity(5);
        span_attributes.extend(attributes.iter().cloned());
        span_attributes.push(KeyValue::new("url.full", without_query(url)));
        if let Some(port) = url.port_or_known_default() {
            span_attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        (names::http(method, dependency), span_attributes)
    });
    Some(ClientCall::begin(parent, scope, span, attributes))
}

/// Starts a client span for one database `statement` on `system`, as a child of the current
/// invocation's span, or returns `None` when there is none. As for [`start`], the span only
/// when the invocation is sampled.
pub fn start_query(system: &'static str, statement: &'static str) -> Option<ClientCall> {
    let (parent, scope) = traced()?;
    let operation = names::operation(statement);
    let mut attributes = Vec::with_capacity(3);
    attributes.extend([
        KeyValue::new("db.system.name", system),
        KeyValue::new("db.operation.name", StringValue::from(operation.clone())),
    ]);
    let span = sampled(&parent).then(|| {
        let mut span_attributes = Vec::with_capacity(4);
        span_attributes.extend(attributes.iter().cloned());
        span_attributes.push(KeyValue::new(
            "obovault.dependency",
            Dependency::Database.name(),
        ));
        span_attributes.push(KeyValue::new("db.query.text", statement.trim()));
        (names::query(&operation, system), span_attributes)
    });
    Some(ClientCall::begin(parent, scope, span, attributes))
}

/// Whether the invocation's span was sampled. A client span of an invocation that is not
/// would never be exported (every sampler here follows an in-process parent), so it is not
/// built: its name, URL and attributes cost a tenth of a warm call's instructions.
fn sampled(parent: &Context) -> bool {
    parent.span().span_context().is_sampled()
}

/// `http.request.method`: the standard methods as static strings (no allocation per call).
pub(super) fn method_value(method: &str) -> StringValue {
    match names::STANDARD_METHODS.iter().find(|m| **m == method) {
        Some(standard) => StringValue::from(*standard),
        None => StringValue::from(method.to_owned()),
    }
}

/// The current invocation's context and scope, when the task runs inside a traced one.
fn traced() -> Option<(Context, Arc<Scope>)> {
    Context::map_current(|cx| {
        cx.get::<Arc<Scope>>()
            .map(|scope| (cx.clone(), scope.clone()))
    })
}

impl ClientCall {
    fn begin(
        parent: Context,
        scope: Arc<Scope>,
        span: Option<(Cow<'static, str>, Vec<KeyValue>)>,
        attributes: Vec<KeyValue>,
    ) -> Self {
        let span = span.map(|(name, span_attributes)| {
            let tracer = &scope.telemetry.tracer;
            let span = tracer
                .span_builder(name)
                .with_kind(SpanKind::Client)
                .with_attributes(span_attributes)
                .start_with_context(tracer, &parent);
            parent.with_span(span)
        });
        Self {
            span,
            scope,
            started: Instant::now(),
            attributes,
        }
    }

    /// Marks the span failed with `kind` (fixed and secret-free), on the span and on the
    /// latency point.
    fn failed(&mut self, kind: &'static str) {
        let error = KeyValue::new("error.type", kind);
        if let Some(span) = self.span() {
            span.set_attribute(error.clone());
            span.set_status(Status::error(""));
        }
        self.attributes.push(error);
    }

    /// Ends a statement's span, with `error` (a fixed kind such as `database` or `io`) when
    /// it failed.
    pub fn finish_query(mut self, error: Option<&'static str>) {
        let elapsed = self.started.elapsed().as_secs_f64();
        if let Some(kind) = error {
            self.failed(kind);
        }
        self.end_span();
        let instruments = &self.scope.telemetry.instruments;
        instruments.db_duration.record(elapsed, &self.attributes);
    }

    /// Ends the span with the answer's status, or with `error` (a fixed, secret-free kind
    /// such as `timeout` or `connect`) when there was no answer.
    pub fn finish(mut self, outcome: Result<u16, &'static str>) {
        let elapsed = self.started.elapsed().as_secs_f64();
        match outcome {
            Ok(status) => {
                let code = KeyValue::new("http.response.status_code", i64::from(status));
                if let Some(span) = self.span() {
                    span.set_attribute(code.clone());
                    if status >= 400 {
                        span.set_attribute(KeyValue::new("error.type", status.to_string()));
                        span.set_status(Status::error(""));
                    }
                }
                self.attributes.push(code);
            }
            Err(kind) => self.failed(kind),
        }
        self.end_span();
        let instruments = &self.scope.telemetry.instruments;
        instruments
            .client_duration
            .record(elapsed, &self.attributes);
    }

    /// The call's span, when the invocation is sampled.
    fn span(&self) -> Option<SpanRef<'_>> {
        self.span.as_ref().map(TraceContextExt::span)
    }

    fn end_span(&self) {
        if let Some(span) = self.span() {
            span.end();
        }
    }
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
