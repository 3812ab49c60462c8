//! What the service reports about itself: logs (always, [`init`]) and, when an exporter is
//! configured, OpenTelemetry traces and metrics ([`Telemetry`]).
//!
//! Traces: one server span per invocation of setup, do-work and refresh-tokens
//! ([`server::traced`]), continuing the W3C `traceparent` the Functions host sends, and one
//! client span per outbound call ([`client`], used by [`crate::outbound`]). Metrics: the
//! instruments in [`instruments`]. Names, attributes and what is never recorded are in
//! docs/TELEMETRY.md.
//!
//! When neither `APPLICATIONINSIGHTS_CONNECTION_STRING` nor `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set there is no [`Telemetry`], no layer in the router and no span is ever built: an
//! outbound call only finds no telemetry scope in the current task.

mod bound;
pub mod client;
mod export;
mod http_client;
mod instruments;
mod logging;
mod names;
mod sampling;
pub mod server;
mod settings;
mod timer;

use std::path::Path;
use std::sync::Arc;

pub use client::Dependency;
pub use logging::init;
pub use sampling::Sampling;
pub(crate) use server::carry;
pub use settings::{AppInsightsConnection, TelemetrySettings};

use instruments::Instruments;

/// The exporters, the tracer and the metric instruments of one service instance.
pub struct Telemetry {
    tracer: opentelemetry_sdk::trace::SdkTracer,
    /// The tracer's sampler when it is one of Microsoft's: the server spans ask it before
    /// building a span ([`sampling::MicrosoftSampler::presample`]).
    sampler: Option<sampling::MicrosoftSampler>,
    providers: export::Providers,
    instruments: Instruments,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Starts the exporters `settings` configure, sending through the service's outbound HTTPS
    /// client (so `extra_ca_certs` applies). Export runs on the SDK's background threads and
    /// this runtime's tasks, never on a request's path. Must be called inside a tokio runtime.
    pub fn start(
        settings: &TelemetrySettings,
        extra_ca_certs: Option<&Path>,
    ) -> anyhow::Result<Arc<Self>> {
        let sampler = settings.sampling.map(Sampling::sampler);
        let providers = export::Providers::start(settings, sampler.clone(), extra_ca_certs)?;
        let tracer = providers.tracer();
        let instruments = Instruments::new(&providers.meter());
        Ok(Arc::new(Self {
            tracer,
            sampler,
            providers,
            instruments,
        }))
    }

    /// Exports everything recorded so far (the timer's end, tests). Blocks on the export
    /// threads: call it from a blocking context.
    pub fn flush(&self) {
        self.providers.flush();
    }

    /// Flushes and stops the exporters (process shutdown).
    pub fn shutdown(&self) {
        self.providers.shutdown();
    }
}
