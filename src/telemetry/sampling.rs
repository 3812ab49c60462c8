//! Which invocations are traced: Application Insights' two samplers, chosen the way
//! Microsoft's Azure Monitor OpenTelemetry exporters choose them, and otherwise whatever
//! `OTEL_TRACES_SAMPLER` names for the OpenTelemetry SDK.
//!
//! - `OTEL_TRACES_SAMPLER=microsoft.rate_limited`, `OTEL_TRACES_SAMPLER_ARG` traces per second
//!   (default 5): at most about that many traces a second, whatever the load.
//! - `OTEL_TRACES_SAMPLER=microsoft.fixed_percentage`, `OTEL_TRACES_SAMPLER_ARG` a ratio from 0
//!   to 1 (default 1): that share of traces, chosen by a hash of the trace id, so every service
//!   that uses the same algorithm keeps or drops the same traces.
//! - Neither named, and Application Insights configured: `microsoft.rate_limited` at 5 per
//!   second, the default of Microsoft's exporters since .NET `Azure.Monitor.OpenTelemetry.Exporter`
//!   1.6.0-beta.2 / 1.7.0 (azure-sdk-for-net PR 54942), the Python distro 1.8.6
//!   (azure-sdk-for-python PR 44925) and `@azure/monitor-opentelemetry` (azure-sdk-for-js PR
//!   37187). The Functions host reads the same two names (azure-functions-host PR 11568).
//! - Otherwise (OTLP only, or any other sampler name): the SDK's own reading of
//!   `OTEL_TRACES_SAMPLER`, `parentbased_always_on` when unset, as the OpenTelemetry
//!   specification says.
//!
//! Both of Microsoft's samplers follow an in-process parent and decide afresh for a remote one
//! (the host's `traceparent`), whatever its sampled flag says: the Functions host sends
//! `-00` flags when it does not record the invocation itself (azure-sdk-for-net issue 61703), and
//! honouring them would trace nothing. Algorithms: azure-sdk-for-python
//! `azure-monitor-opentelemetry-exporter` `export/trace/_rate_limited_sampling.py`,
//! `_sampling.py` and `_utils.py` (`_get_DJB2_sample_score`, `_round_down_to_nearest`,
//! `parent_context_sampling`), themselves from ApplicationInsights-Java's
//! `RateLimitedSamplingPercentage`.

mod rate;

use opentelemetry::trace::{Link, SpanKind, TraceContextExt as _, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, SamplingDecision, SamplingResult, ShouldSample,
};

use crate::config::{Env, SettingsError};

use rate::RateWindow;

const SAMPLER: &str = "OTEL_TRACES_SAMPLER";
const SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
/// The default of Microsoft's exporters for `microsoft.rate_limited`.
const DEFAULT_TRACES_PER_SECOND: f64 = 5.0;
/// The attribute a sampled span carries when it stands for more than itself, in percent (the
/// name the JavaScript exporter's sampling span processor stamps, azure-sdk-for-js PR 39260).
pub(super) const SAMPLE_RATE_ATTRIBUTE: &str = "microsoft.sample_rate";

/// One of Microsoft's samplers, as configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// `microsoft.rate_limited`: at most about this many traces a second.
    RateLimited {
        /// `OTEL_TRACES_SAMPLER_ARG`, 5 by default.
        traces_per_second: f64,
    },
    /// `microsoft.fixed_percentage`: this share of traces, by trace id.
    FixedPercentage {
        /// `OTEL_TRACES_SAMPLER_ARG`, from 0 to 1, 1 by default.
        ratio: f64,
    },
}

impl Sampling {
    /// Reads `OTEL_TRACES_SAMPLER` and its argument; `None` leaves the choice to the SDK.
    /// `app_insights` says whether Application Insights is configured (its exporters' default).
    pub(super) fn from_env(env: &Env, app_insights: bool) -> Result<Option<Self>, SettingsError> {
        let argument = |default: f64, range: std::ops::RangeInclusive<f64>, problem| match env
            .optional(SAMPLER_ARG)
        {
            None => Ok(default),
            Some(value) => value
                .parse::<f64>()
                .ok()
                .filter(|v| range.contains(v))
                .ok_or_else(|| SettingsError::new(SAMPLER_ARG, problem)),
        };
        match env.optional(SAMPLER) {
            Some("microsoft.rate_limited") => Ok(Some(Self::RateLimited {
                traces_per_second: argument(
                    DEFAULT_TRACES_PER_SECOND,
                    0.0..=f64::MAX,
                    "must be a number of traces per second, 0 or more",
                )?,
            })),
            Some("microsoft.fixed_percentage") => Ok(Some(Self::FixedPercentage {
                ratio: argument(1.0, 0.0..=1.0, "must be a ratio from 0 to 1")?,
            })),
            None if app_insights => Ok(Some(Self::RateLimited {
                traces_per_second: DEFAULT_TRACES_PER_SECOND,
            })),
            _ => Ok(None),
        }
    }

    /// The sampler for the tracer provider.
    pub(super) fn sampler(self) -> MicrosoftSampler {
        let rule = match self {
            Self::RateLimited { traces_per_second } => {
                Rule::RateLimited(RateWindow::new(traces_per_second))
            }
            Self::FixedPercentage { ratio } => Rule::FixedPercentage(ratio),
        };
        MicrosoftSampler { rule }
    }

    /// The share of traces Application Insights should count each sampled one for, when it is
    /// the same for every trace (the exporter sends it as each item's `sampleRate`).
    pub(super) fn fixed_ratio(self) -> Option<f64> {
        match self {
            Self::FixedPercentage { ratio } => Some(ratio),
            Self::RateLimited { .. } => None,
        }
    }
}

/// `microsoft.rate_limited` or `microsoft.fixed_percentage` as an SDK sampler.
#[derive(Debug, Clone)]
pub(super) struct MicrosoftSampler {
    rule: Rule,
}

#[derive(Debug, Clone)]
enum Rule {
    RateLimited(RateWindow),
    FixedPercentage(f64),
}

impl ShouldSample for MicrosoftSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let trace_state = parent_context
            .map(|cx| cx.span().span_context().trace_state().clone())
            .unwrap_or_default();
        if let Some(sampled) = in_process_parent(parent_context) {
            return result(sampled, None, trace_state);
        }
        // Decided already ([`MicrosoftSampler::presample`]): counted once in the window.
        if let Some(decided) = parent_context.and_then(|cx| cx.get::<Decided>()) {
            return result(true, decided.rate, trace_state);
        }
        let (sampled, rate) = self.decide(trace_id);
        result(sampled, rate, trace_state)
    }
}

/// A trace [`MicrosoftSampler::presample`] kept, in the context its first span starts under:
/// the percentage it stands for when under 100.
#[derive(Debug, Clone, Copy)]
struct Decided {
    rate: Option<f64>,
}

impl MicrosoftSampler {
    /// Whether a trace that starts here (or continues a remote parent) is kept, and the
    /// percentage it then stands for when under 100.
    fn decide(&self, trace_id: TraceId) -> (bool, Option<f64>) {
        let percentage = match &self.rule {
            Rule::RateLimited(window) => window.percentage(),
            Rule::FixedPercentage(ratio) => ratio * 100.0,
        };
        let sampled = percentage >= 100.0 || score(trace_id) * 100.0 < percentage;
        (sampled, (percentage < 100.0).then_some(percentage))
    }

    /// Decides an invocation under `parent`, the host's remote context or none, before any
    /// span is built: `None` when the trace is not kept, otherwise `parent` carrying the
    /// decision, for the invocation's span to start under. An invocation declined here (under
    /// load, all but about five a second at the default) costs the SDK nothing: building a
    /// span only to drop it cost about 2.5 % of a warm call's CPU time (docs/PERFORMANCE.md).
    /// Without a parent the decision scores a trace id of its own, and the SDK gives the span
    /// another: both random, the share kept is the same.
    pub(super) fn presample(&self, parent: Context) -> Option<Context> {
        let trace_id = match parent.span().span_context() {
            remote if remote.is_valid() => remote.trace_id(),
            _ => RandomIdGenerator::default().new_trace_id(),
        };
        let (sampled, rate) = self.decide(trace_id);
        sampled.then(|| parent.with_value(Decided { rate }))
    }
}

/// Whether an in-process parent was sampled; `None` for a remote parent or none.
fn in_process_parent(parent_context: Option<&Context>) -> Option<bool> {
    let cx = parent_context?;
    let span = cx.span();
    let parent = span.span_context();
    (parent.is_valid() && !parent.is_remote()).then(|| parent.is_sampled())
}

fn result(sampled: bool, rate: Option<f64>, trace_state: TraceState) -> SamplingResult {
    let attributes = match rate {
        Some(rate) if sampled => vec![KeyValue::new(SAMPLE_RATE_ATTRIBUTE, rate)],
        _ => Vec::new(),
    };
    SamplingResult {
        decision: if sampled {
            SamplingDecision::RecordAndSample
        } else {
            SamplingDecision::Drop
        },
        attributes,
        trace_state,
    }
}

/// The Application Insights sampling score of a trace, from 0 to 1: DJB2 over the trace id's
/// 32 lower-case hex digits in 32-bit signed arithmetic, its absolute value over `i32::MAX`.
fn score(trace_id: TraceId) -> f64 {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hash: i32 = 5381;
    for byte in trace_id.to_bytes() {
        for digit in [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0x0f)]] {
            hash = (hash << 5)
                .wrapping_add(hash)
                .wrapping_add(i32::from(digit));
        }
    }
    let hash = hash.checked_abs().unwrap_or(i32::MAX);
    f64::from(hash) / f64::from(i32::MAX)
}

#[cfg(test)]
mod tests;
