//! The metric instruments. Names follow the OpenTelemetry semantic conventions where one
//! exists (`http.server.request.duration`, `http.client.request.duration`, in seconds) and
//! are `obovault.*` otherwise. No attribute ever holds a token, key, user or query string.

use opentelemetry::metrics::{BoundCounter, Counter, Gauge, Meter};
use opentelemetry::KeyValue;

use super::bound::BoundHistograms;
use super::client::{HttpSeries, QuerySeries};
use super::server::ServerSeries;

/// Bucket bounds (seconds) the semantic conventions advise for HTTP durations.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Bucket bounds (seconds) the semantic conventions advise for database operations.
const DB_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
];

pub(super) struct Instruments {
    /// Answers of setup, do-work and refresh-tokens: `faas.name`, `http.request.method`,
    /// `http.response.status_code`.
    pub(super) server_duration: BoundHistograms<ServerSeries>,
    /// Outbound calls: `obovault.dependency`, `server.address`, `http.request.method`,
    /// `http.response.status_code` or `error.type`.
    pub(super) client_duration: BoundHistograms<HttpSeries>,
    /// Statements: `db.system.name`, `db.operation.name`, `error.type` when one failed.
    pub(super) db_duration: BoundHistograms<QuerySeries>,
    /// Rows a timer run finished, by `obovault.outcome` (refreshed, resealed,
    /// reauth_required, failed, skipped).
    pub(super) refresh_rows: Counter<u64>,
    /// Successful do-work answers by `obovault.cache.result` (one counter,
    /// `obovault.access_token_cache.lookups`): `hit` when no token had to be asked of Entra…
    pub(super) cache_hits: BoundCounter<u64>,
    /// …`miss` otherwise.
    pub(super) cache_misses: BoundCounter<u64>,
    /// Stored rows by `obovault.row.status`, after each timer run.
    pub(super) rows_by_status: Gauge<u64>,
    /// Stored rows by `obovault.key.name` and `obovault.key.version`, after each timer run.
    pub(super) rows_by_key_version: Gauge<u64>,
}

impl Instruments {
    pub(super) fn new(meter: &Meter) -> Self {
        let cache_lookups = meter
            .u64_counter("obovault.access_token_cache.lookups")
            .with_unit("{lookup}")
            .with_description(
                "Successful do-work calls served from cached access tokens (hit) or not (miss)",
            )
            .build();
        let cache = |result: &'static str| {
            cache_lookups.bind(&[KeyValue::new("obovault.cache.result", result)])
        };
        Self {
            cache_hits: cache("hit"),
            cache_misses: cache("miss"),
            server_duration: BoundHistograms::new(
                meter
                    .f64_histogram("http.server.request.duration")
                    .with_unit("s")
                    .with_description("Duration of setup, do-work and refresh-tokens invocations")
                    .with_boundaries(DURATION_BUCKETS.to_vec())
                    .build(),
            ),
            client_duration: BoundHistograms::new(
                meter
                    .f64_histogram("http.client.request.duration")
                    .with_unit("s")
                    .with_description(
                        "Duration of outbound calls to Entra, Key Vault and downstream APIs",
                    )
                    .with_boundaries(DURATION_BUCKETS.to_vec())
                    .build(),
            ),
            db_duration: BoundHistograms::new(
                meter
                    .f64_histogram("db.client.operation.duration")
                    .with_unit("s")
                    .with_description("Duration of database statements")
                    .with_boundaries(DB_BUCKETS.to_vec())
                    .build(),
            ),
            refresh_rows: meter
                .u64_counter("obovault.refresh.rows")
                .with_unit("{row}")
                .with_description("Rows finished by refresh-tokens runs, by outcome")
                .build(),
            rows_by_status: meter
                .u64_gauge("obovault.store.rows")
                .with_unit("{row}")
                .with_description("Stored rows by status, after the last refresh-tokens run")
                .build(),
            rows_by_key_version: meter
                .u64_gauge("obovault.store.rows_by_key_version")
                .with_unit("{row}")
                .with_description("Stored rows by key version, after the last refresh-tokens run")
                .build(),
        }
    }
}
