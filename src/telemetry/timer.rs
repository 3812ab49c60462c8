//! Metrics recorded after each refresh-tokens run: the run's outcomes, and the rows by status
//! and key version as the store counts them then.

use opentelemetry::KeyValue;

use super::Telemetry;
use crate::store::TokenStore;
use crate::usecase::refresh_all::Summary;

impl Telemetry {
    /// Records a finished run. The store summary is one more query per run, made only when
    /// telemetry is on; if it fails the gauges keep their last values.
    pub async fn timer_run(&self, summary: &Summary, store: &dyn TokenStore) {
        let instruments = &self.instruments;
        for (outcome, rows) in [
            ("refreshed", summary.refreshed),
            ("resealed", summary.resealed),
            ("reauth_required", summary.reauth_required),
            ("failed", summary.failed),
            ("skipped", summary.skipped),
        ] {
            instruments
                .refresh_rows
                .add(rows, &[KeyValue::new("obovault.outcome", outcome)]);
        }
        let report = match store.status_report().await {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(error = %error, "no row counts for telemetry after the timer run");
                return;
            }
        };
        for (status, rows) in &report.by_status {
            instruments.rows_by_status.record(
                u64::try_from(*rows).unwrap_or(0),
                &[KeyValue::new("obovault.row.status", status.clone())],
            );
        }
        for count in &report.by_key_version {
            instruments.rows_by_key_version.record(
                u64::try_from(count.rows).unwrap_or(0),
                &[
                    KeyValue::new("obovault.key.name", count.key_name.clone()),
                    KeyValue::new("obovault.key.version", count.key_version.clone()),
                ],
            );
        }
    }
}
