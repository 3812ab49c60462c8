//! Which invocations Application Insights gets: its exporters' default of about five traces a
//! second under load, a fixed percentage chosen by the trace id's score whatever the host's
//! sampled flag, and metrics that count every invocation either way.

use std::time::Duration;

use emulators::TelemetryReceiver;
use serde_json::json;

use crate::helpers::TestApp;
use crate::telemetry::{app_insights, eventually, invocation, post_traced};

/// Application Insights' sampling score of a trace id, written from azure-sdk-for-python's
/// `_get_DJB2_sample_score` independently of the service's own, as the oracle.
fn score(trace: &str) -> f64 {
    let mut hash: i32 = 5381;
    for c in trace.bytes() {
        hash = hash.wrapping_mul(33).wrapping_add(i32::from(c));
    }
    f64::from(hash.checked_abs().unwrap_or(i32::MAX)) / f64::from(i32::MAX)
}

/// A random trace id whose score is in `range`.
fn trace_scoring(range: std::ops::Range<f64>) -> String {
    loop {
        let trace = uuid::Uuid::new_v4().simple().to_string();
        if range.contains(&score(&trace)) {
            return trace;
        }
    }
}

/// Posts a do-work for `oid` under the host's `trace`, with the host's sampled `flags`.
async fn do_work_in(app: &TestApp, oid: &str, trace: &str, flags: &str) {
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-{flags}");
    let work = json!({ "tenantId": app.tenant(), "userId": oid });
    let response = post_traced(
        app,
        "/api/do-work",
        &traceparent,
        &app.workload_token(),
        work,
    )
    .await;
    assert_eq!(response.status(), 200);
}

/// What `metric` counted over every export, for the points whose attributes include
/// `labels`: Application Insights' metrics are deltas, each export holding what came since
/// the last.
fn counted(receiver: &TelemetryReceiver, metric: &str, labels: &[(&str, &str)]) -> f64 {
    receiver
        .points()
        .iter()
        .filter(|p| {
            p.metric == metric
                && labels
                    .iter()
                    .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|p| p.value)
        .sum()
}

/// Waits until the metrics count `calls` successful do-work answers, then past one more span
/// export, so that every span those calls left has arrived.
async fn all_exported(app: &TestApp, calls: usize) {
    let receiver = &app.stack.telemetry;
    eventually(receiver, "a count of every do-work", |r| {
        let counted = counted(r, "obovault.access_token_cache.lookups", &[]);
        (counted >= calls as f64).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_percentage_keeps_the_traces_scored_under_it_whatever_the_host_flag() {
    let app = app_insights(&[
        ("OTEL_TRACES_SAMPLER", "microsoft.fixed_percentage"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ])
    .await;
    let oid = app.connected_user().await;
    let kept = trace_scoring(0.0..0.45);
    let dropped = trace_scoring(0.55..1.0);
    // The host did not record the first and did the second: neither flag decides.
    do_work_in(&app, &oid, &kept, "00").await;
    do_work_in(&app, &oid, &dropped, "01").await;
    all_exported(&app, 2).await;

    let spans = app.stack.telemetry.spans();
    let (request, dependencies) = invocation(&spans, &kept).expect("the kept trace");
    assert!(!dependencies.is_empty());
    for item in dependencies.iter().chain([&request]) {
        // Each item stands for two: Application Insights scales its counts by it.
        assert_eq!(item.attributes["sampleRate"], "50", "{item:?}");
    }
    assert!(
        spans.iter().all(|s| s.trace_id != dropped),
        "nothing of the dropped trace: {spans:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_application_insights_gets_a_few_traces_and_every_count() {
    // No sampler named: Microsoft's exporters' default, about five traces a second.
    let app = app_insights(&[]).await;
    let oid = app.connected_user().await;
    // Back to back, far over five a second. Scored high, these are kept only while the
    // sampler still keeps nearly everything (its window starts out quiet).
    let busy: Vec<String> = (0..30).map(|_| trace_scoring(0.99..1.0)).collect();
    for trace in &busy {
        do_work_in(&app, &oid, trace, "01").await;
    }
    // Scored almost zero: kept at any percentage the load leaves.
    let lucky = trace_scoring(0.0..0.0005);
    do_work_in(&app, &oid, &lucky, "01").await;
    all_exported(&app, busy.len() + 1).await;

    let spans = app.stack.telemetry.spans();
    let kept = busy
        .iter()
        .filter(|trace| invocation(&spans, trace).is_some())
        .count();
    assert!(kept < busy.len() / 2, "{kept} of {} kept", busy.len());
    // An invocation left out of the traces still times its outbound calls: one downstream
    // call per do-work, sampled or not.
    let downstream_calls = counted(
        &app.stack.telemetry,
        "http.client.request.duration",
        &[("obovault.dependency", "downstream")],
    );
    assert_eq!(downstream_calls, (busy.len() + 1) as f64);
    let (request, _) = invocation(&spans, &lucky).expect("the low-scored trace");
    let rate: f64 = request.attributes["microsoft.sample_rate"]
        .parse()
        .expect("a percentage");
    assert!(rate > 0.0 && rate < 100.0, "{rate}");
    // A kept item stands for 100 / rate: a whole number of invocations.
    let stands_for = 100.0 / rate;
    assert!((stands_for - stands_for.round()).abs() < 1e-6, "{rate}");
}
