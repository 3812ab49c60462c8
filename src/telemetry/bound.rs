//! Latency histograms bound once per attribute set. An unbound point makes the SDK hash its
//! attribute set (SipHash over every key and value) to find its series, about a quarter of what
//! a warm do-work call's metrics cost; a bound series (`Histogram::bind`, the SDK's
//! `experimental_metrics_bound_instruments`) records straight into it. Each call site names its
//! series by a small key of static strings and codes, hashed with FxHash, and the attributes
//! are built only the first time a key is seen.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

use opentelemetry::metrics::{BoundHistogram, Histogram};
use opentelemetry::KeyValue;
use rustc_hash::FxBuildHasher;

/// Series bound per histogram at most. The keys are bounded already (functions, dependencies,
/// configured hosts, status codes); past this a point records through the SDK's own lookup,
/// whose cardinality limit then applies as it would without binding.
const MAX_BOUND: usize = 128;

/// A histogram and its series bound so far, by key.
pub(super) struct BoundHistograms<K> {
    histogram: Histogram<f64>,
    bound: RwLock<HashMap<K, BoundHistogram<f64>, FxBuildHasher>>,
}

impl<K: Hash + Eq> BoundHistograms<K> {
    pub(super) fn new(histogram: Histogram<f64>) -> Self {
        Self {
            histogram,
            bound: RwLock::new(HashMap::default()),
        }
    }

    /// Records `value` in the series `key` names; `attributes` builds that series' attributes
    /// when it is not bound yet.
    pub(super) fn record(&self, value: f64, key: K, attributes: impl FnOnce(&K) -> Vec<KeyValue>) {
        // A poisoned lock only means another thread panicked while binding: the table itself
        // is whole (an insert either happened or not), so it is used as it is.
        let bound = self
            .bound
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(series) = bound.get(&key) {
            series.record(value);
            return;
        }
        drop(bound);
        let attributes = attributes(&key);
        let mut bound = self
            .bound
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if bound.len() >= MAX_BOUND && !bound.contains_key(&key) {
            drop(bound);
            self.histogram.record(value, &attributes);
            return;
        }
        bound
            .entry(key)
            .or_insert_with(|| self.histogram.bind(&attributes))
            .record(value);
    }
}

#[cfg(test)]
mod tests;
