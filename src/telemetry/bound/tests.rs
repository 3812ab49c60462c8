use std::collections::BTreeMap;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

use super::*;

/// Count and sum of every histogram point exported, by the value of its `key` attribute.
fn exported(exporter: &InMemoryMetricExporter) -> BTreeMap<i64, (u64, f64)> {
    let mut points = BTreeMap::new();
    let exports = exporter.get_finished_metrics().expect("exported");
    let metrics = exports
        .iter()
        .flat_map(|export| export.scope_metrics())
        .flat_map(|scope| scope.metrics());
    for metric in metrics {
        let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data() else {
            panic!("{} is not an f64 histogram", metric.name());
        };
        for point in histogram.data_points() {
            let attributes: Vec<_> = point.attributes().collect();
            assert_eq!(attributes.len(), 1, "only the series' own attributes");
            let opentelemetry::Value::I64(key) = attributes[0].value else {
                panic!("the key attribute is an integer");
            };
            points.insert(key, (point.count(), point.sum()));
        }
    }
    points
}

#[test]
fn each_key_records_in_its_own_series_past_the_bound_table_too() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let series = BoundHistograms::new(provider.meter("test").f64_histogram("latency").build());
    let keys = i64::try_from(MAX_BOUND).expect("small") + 10;
    let mut built = 0;
    for _ in 0..3 {
        for key in 0..keys {
            series.record(key as f64, key, |key| {
                built += 1;
                vec![KeyValue::new("key", *key)]
            });
        }
    }

    provider.force_flush().expect("flushed");
    let points = exported(&exporter);
    assert_eq!(points.len(), usize::try_from(keys).expect("small"));
    for (key, (count, sum)) in points {
        assert_eq!((count, sum), (3, 3.0 * key as f64), "series {key}");
    }
    let bound = series.bound.read().expect("not poisoned").len();
    assert_eq!(
        bound, MAX_BOUND,
        "the first keys are bound, the rest are not"
    );
    // Bound keys build their attributes once; the others at every point.
    assert_eq!(built, MAX_BOUND + 3 * 10);
}
