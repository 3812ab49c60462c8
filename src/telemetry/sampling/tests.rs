use opentelemetry::trace::{SpanContext, SpanId, TraceFlags};

use super::*;

fn from_env(pairs: &[(&str, &str)], app_insights: bool) -> Result<Option<Sampling>, SettingsError> {
    Sampling::from_env(&Env::from_pairs(pairs.iter().copied()), app_insights)
}

fn trace(hex: &str) -> TraceId {
    TraceId::from_hex(hex).unwrap()
}

/// A context whose span is `trace`'s, remote (the host's) or in this process.
fn parent(hex: &str, sampled: bool, remote: bool) -> Context {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let span = SpanContext::new(
        trace(hex),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        flags,
        remote,
        TraceState::default(),
    );
    // Despite its name, this keeps the span context's own `is_remote`.
    Context::new().with_remote_span_context(span)
}

fn decide(sampler: &MicrosoftSampler, parent: Option<&Context>, hex: &str) -> SamplingResult {
    sampler.should_sample(parent, trace(hex), "do-work", &SpanKind::Server, &[], &[])
}

#[test]
fn scores_are_application_insights_djb2() {
    // Expected values from azure-sdk-for-python's `_get_DJB2_sample_score`.
    for (hex, expected) in [
        ("0af7651916cd43dd8448eb211c80319c", 0.527_889_280_360_140_5),
        ("4bf92f3577b34da6a3ce929d0e0e4736", 0.334_613_538_503_001_24),
        ("00000000000000000000000000000001", 0.023_393_514_577_016_94),
        ("ffffffffffffffffffffffffffffffff", 0.999_613_551_422_773_6),
    ] {
        assert!((score(trace(hex)) - expected).abs() < 1e-12, "{hex}");
    }
}

#[test]
fn application_insights_defaults_to_five_traces_a_second() {
    assert_eq!(
        from_env(&[], true).unwrap(),
        Some(Sampling::RateLimited {
            traces_per_second: 5.0
        })
    );
    // OTLP alone: the SDK reads OTEL_TRACES_SAMPLER (parentbased_always_on when unset).
    assert_eq!(from_env(&[], false).unwrap(), None);
    assert_eq!(
        from_env(&[("OTEL_TRACES_SAMPLER", "always_on")], true).unwrap(),
        None
    );
}

#[test]
fn microsoft_samplers_take_their_argument() {
    let named = |name, arg| {
        from_env(
            &[
                ("OTEL_TRACES_SAMPLER", name),
                ("OTEL_TRACES_SAMPLER_ARG", arg),
            ],
            false,
        )
    };
    assert_eq!(
        named("microsoft.rate_limited", "0.5").unwrap(),
        Some(Sampling::RateLimited {
            traces_per_second: 0.5
        })
    );
    assert_eq!(
        named("microsoft.fixed_percentage", "0.25").unwrap(),
        Some(Sampling::FixedPercentage { ratio: 0.25 })
    );
    assert_eq!(
        from_env(
            &[("OTEL_TRACES_SAMPLER", "microsoft.fixed_percentage")],
            false
        )
        .unwrap(),
        Some(Sampling::FixedPercentage { ratio: 1.0 })
    );
    for (name, arg) in [
        ("microsoft.rate_limited", "-1"),
        ("microsoft.rate_limited", "fast"),
        ("microsoft.rate_limited", "NaN"),
        ("microsoft.fixed_percentage", "1.5"),
        ("microsoft.fixed_percentage", "10%"),
    ] {
        let error = named(name, arg).unwrap_err();
        assert_eq!(error.variable, "OTEL_TRACES_SAMPLER_ARG", "{name} {arg}");
    }
}

#[test]
fn fixed_percentage_keeps_the_traces_whose_score_is_under_the_ratio() {
    let sampler = Sampling::FixedPercentage { ratio: 0.5 }.sampler();
    let kept = decide(&sampler, None, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(kept.decision, SamplingDecision::RecordAndSample);
    assert_eq!(
        kept.attributes,
        vec![KeyValue::new(SAMPLE_RATE_ATTRIBUTE, 50.0)]
    );
    let dropped = decide(&sampler, None, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(dropped.decision, SamplingDecision::Drop);
    assert!(dropped.attributes.is_empty());
    let all = Sampling::FixedPercentage { ratio: 1.0 }.sampler();
    let kept = decide(&all, None, "ffffffffffffffffffffffffffffffff");
    assert_eq!(kept.decision, SamplingDecision::RecordAndSample);
    assert!(kept.attributes.is_empty(), "100 % needs no rate");
}

#[test]
fn a_remote_parent_is_decided_afresh_and_an_in_process_one_is_followed() {
    let sampler = Sampling::FixedPercentage { ratio: 0.5 }.sampler();
    let low = "4bf92f3577b34da6a3ce929d0e0e4736";
    let high = "0af7651916cd43dd8448eb211c80319c";
    // The host's `-00` parent: kept by score all the same.
    let host = parent(low, false, true);
    assert_eq!(
        decide(&sampler, Some(&host), low).decision,
        SamplingDecision::RecordAndSample
    );
    // The host's `-01` parent: dropped by score all the same.
    let host = parent(high, true, true);
    assert_eq!(
        decide(&sampler, Some(&host), high).decision,
        SamplingDecision::Drop
    );
    // A span of this process: its decision, whatever the score.
    let local = parent(high, true, false);
    assert_eq!(
        decide(&sampler, Some(&local), high).decision,
        SamplingDecision::RecordAndSample
    );
    let local = parent(low, false, false);
    assert_eq!(
        decide(&sampler, Some(&local), low).decision,
        SamplingDecision::Drop
    );
}

#[test]
fn an_invocation_is_decided_before_its_span_and_the_span_takes_that_decision() {
    let sampler = Sampling::FixedPercentage { ratio: 0.5 }.sampler();
    let low = "4bf92f3577b34da6a3ce929d0e0e4736";
    let high = "0af7651916cd43dd8448eb211c80319c";
    // Decided by the host's trace id, whatever its flag.
    assert!(sampler.presample(parent(high, true, true)).is_none());
    let kept = sampler
        .presample(parent(low, false, true))
        .expect("scored under the ratio");
    // The span started under it is kept with the decision's rate, without scoring again
    // (here against a trace id that would be dropped).
    let span = decide(&sampler, Some(&kept), high);
    assert_eq!(span.decision, SamplingDecision::RecordAndSample);
    assert_eq!(
        span.attributes,
        vec![KeyValue::new(SAMPLE_RATE_ATTRIBUTE, 50.0)]
    );
    // No parent: a trace of its own, kept or not by the same rule.
    let everything = Sampling::FixedPercentage { ratio: 1.0 }.sampler();
    assert!(everything.presample(Context::new()).is_some());
    let nothing = Sampling::FixedPercentage { ratio: 0.0 }.sampler();
    assert!(nothing.presample(Context::new()).is_none());
}
