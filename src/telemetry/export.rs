//! The tracer and meter providers and their exporters: OTLP/HTTP (protobuf) to
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, Application Insights' track endpoint from the connection
//! string, or both. Spans leave through a batch processor (a bounded queue: when the
//! collector is slow or down, spans beyond it are dropped and counted by the SDK, never
//! waited for), metrics through a periodic reader; both run on the SDK's own threads.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use super::http_client::ExportClient;
use super::sampling::{MicrosoftSampler, Sampling};
use super::settings::TelemetrySettings;

/// How long one upload may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished spans waiting for export; beyond this they are dropped.
const SPAN_QUEUE: usize = 2048;
/// Instrumentation scope name.
const SCOPE: &str = "obo-vault";

/// The running providers.
pub(super) struct Providers {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

impl Providers {
    /// `sampler` is the tracer's when one of Microsoft's is configured (shared with the
    /// server spans, which ask it first).
    pub(super) fn start(
        settings: &TelemetrySettings,
        sampler: Option<MicrosoftSampler>,
        extra_ca_certs: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("telemetry export needs the tokio runtime")?;
        let http = crate::outbound::collector_client(extra_ca_certs, EXPORT_TIMEOUT)?;
        let client = ExportClient::new(http, runtime);
        let resource = Resource::builder()
            .with_attributes([
                KeyValue::new("service.name", settings.service_name.clone()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let mut tracer = SdkTracerProvider::builder().with_resource(resource.clone());
        if let Some(sampler) = sampler {
            tracer = tracer.with_sampler(sampler);
        }
        let mut meter = SdkMeterProvider::builder().with_resource(resource);
        if let Some(base) = &settings.otlp_endpoint {
            let (spans, metrics) = otlp_exporters(base, &client)?;
            tracer = tracer.with_span_processor(span_processor(spans, settings.span_delay));
            meter = meter.with_reader(reader(metrics, settings.metric_interval));
        }
        if let Some(connection) = &settings.app_insights {
            let exporter = app_insights_exporter(connection.expose(), settings.sampling, client)?;
            tracer =
                tracer.with_span_processor(span_processor(exporter.clone(), settings.span_delay));
            meter = meter.with_reader(reader(exporter, settings.metric_interval));
        }
        Ok(Self {
            tracer: tracer.build(),
            meter: meter.build(),
        })
    }

    pub(super) fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        self.tracer.tracer(SCOPE)
    }

    pub(super) fn meter(&self) -> opentelemetry::metrics::Meter {
        use opentelemetry::metrics::MeterProvider as _;
        self.meter.meter(SCOPE)
    }

    pub(super) fn flush(&self) {
        // Failures are the collector's: they are counted and logged by the SDK, not ours to raise.
        let _ = self.tracer.force_flush();
        let _ = self.meter.force_flush();
    }

    pub(super) fn shutdown(&self) {
        let _ = self.tracer.shutdown();
        let _ = self.meter.shutdown();
    }
}

/// The OTLP/HTTP span and metric exporters for the collector at `base`.
fn otlp_exporters(
    base: &url::Url,
    client: &ExportClient,
) -> anyhow::Result<(
    opentelemetry_otlp::SpanExporter,
    opentelemetry_otlp::MetricExporter,
)> {
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client.clone())
        .with_endpoint(signal_url(base, "v1/traces"))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the span exporter")?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(client.clone())
        .with_endpoint(signal_url(base, "v1/metrics"))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the metric exporter")?;
    Ok((spans, metrics))
}

/// The Application Insights exporter for `connection` (spans and metrics alike).
fn app_insights_exporter(
    connection: &str,
    sampling: Option<Sampling>,
    client: ExportClient,
) -> anyhow::Result<opentelemetry_application_insights::Exporter<ExportClient>> {
    let exporter = opentelemetry_application_insights::Exporter::new_from_connection_string(
        connection, client,
    )
    .map_err(|_| anyhow::anyhow!("APPLICATIONINSIGHTS_CONNECTION_STRING: not accepted"))?;
    // With a fixed share each item stands for 1/share of its kind, and Application Insights
    // scales its counts by the envelope's `sampleRate`; a rate-limited share changes from trace
    // to trace and rides on the span instead (`microsoft.sample_rate`).
    Ok(match sampling.and_then(Sampling::fixed_ratio) {
        Some(ratio) => exporter.with_sample_rate(ratio),
        None => exporter,
    })
}

/// `base` + `path`, keeping a base path (`https://collector/otlp` → `…/otlp/v1/traces`).
fn signal_url(base: &url::Url, path: &str) -> String {
    format!("{}/{path}", base.as_str().trim_end_matches('/'))
}

fn span_processor<E>(exporter: E, delay: Duration) -> BatchSpanProcessor
where
    E: opentelemetry_sdk::trace::SpanExporter + 'static,
{
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(SPAN_QUEUE)
        .with_scheduled_delay(delay)
        .build();
    BatchSpanProcessor::builder(exporter)
        .with_batch_config(config)
        .build()
}

fn reader<E>(exporter: E, interval: Duration) -> PeriodicReader<E>
where
    E: opentelemetry_sdk::metrics::exporter::PushMetricExporter,
{
    PeriodicReader::builder(exporter)
        .with_interval(interval)
        .build()
}
