//! Traces and metrics: each invocation continues the host's `traceparent` with one server
//! span and a client span per outbound call, the metrics arrive with plausible values, nothing
//! secret is exported, and a collector that is down never holds up an answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use emulators::{ReceivedPoint, ReceivedSpan, ReceiverMode, StackOptions, TelemetryReceiver};
use serde_json::json;

use crate::helpers::{spawn_app_on_stack, Backend, TestApp};

/// A fresh W3C trace context as the host would send it: (traceparent, trace id, span id).
pub(crate) fn host_context() -> (String, String, String) {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (format!("00-{trace}-{span}-01"), trace, span)
}

pub(crate) async fn traced_app(
    settings: impl FnOnce(&emulators::Stack) -> Vec<(String, String)>,
) -> TestApp {
    spawn_app_on_stack(Backend::Sqlite, StackOptions::default(), settings)
        .await
        .expect("SQLite is always available")
}

/// An app exporting to the stand-in Application Insights, spans and metrics every 200 ms,
/// with `sampler`'s settings added.
pub(crate) async fn app_insights(sampler: &[(&str, &str)]) -> TestApp {
    traced_app(|stack| {
        let mut settings = vec![
            (
                "APPLICATIONINSIGHTS_CONNECTION_STRING".to_owned(),
                stack
                    .telemetry
                    .connection_string("0e5c0de0-0000-4000-8000-00000000a1a1"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
            ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "200".to_owned()),
        ];
        settings.extend(
            sampler
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        settings
    })
    .await
}

/// Polls the receiver until `done` holds (exports run every 200 ms in these tests).
pub(crate) async fn eventually<T>(
    receiver: &TelemetryReceiver,
    what: &str,
    done: impl Fn(&TelemetryReceiver) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = done(receiver) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "the receiver never got {what}: {:#?}",
            receiver.spans()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one server span of `trace`, and its client spans.
pub(crate) fn invocation(
    spans: &[ReceivedSpan],
    trace: &str,
) -> Option<(ReceivedSpan, Vec<ReceivedSpan>)> {
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == trace && s.kind == "server")
        .collect();
    let [server] = servers.as_slice() else {
        return None;
    };
    let clients = spans
        .iter()
        .filter(|s| s.trace_id == trace && s.kind == "client")
        .cloned()
        .collect();
    Some(((*server).clone(), clients))
}

/// The OpenTelemetry `db.system.name` of the app's backend.
fn db_system(app: &TestApp) -> &'static str {
    match app.backend {
        Backend::Postgres => "postgresql",
        Backend::Sqlite => "sqlite",
    }
}

/// The HTTP dependencies among `clients` (database statements are checked on their own).
fn dependencies(clients: &[ReceivedSpan]) -> Vec<&str> {
    let mut names: Vec<&str> = clients
        .iter()
        .map(|c| c.attributes["obovault.dependency"].as_str())
        .filter(|dependency| *dependency != "database")
        .collect();
    names.sort_unstable();
    names
}

/// The latest value of `metric` for points whose attributes include `labels`, summed over
/// the other attributes (cumulative points: the last export per series holds the total).
pub(crate) fn latest(
    points: &[ReceivedPoint],
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let mut series: BTreeMap<String, f64> = BTreeMap::new();
    for point in points.iter().filter(|p| p.metric == metric) {
        if labels
            .iter()
            .all(|(k, v)| point.attributes.get(*k).map(String::as_str) == Some(*v))
        {
            series.insert(format!("{:?}", point.attributes), point.value);
        }
    }
    (!series.is_empty()).then(|| series.values().sum())
}

pub(crate) async fn post_traced(
    app: &TestApp,
    path: &str,
    traceparent: &str,
    token: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.address))
        .header("traceparent", traceparent)
        .header(
            "x-azure-functions-invocationid",
            uuid::Uuid::new_v4().to_string(),
        )
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invocation_continues_the_host_trace_with_its_outbound_calls() {
    let app = traced_app(|stack| stack.telemetry_env()).await;
    let receiver = app.stack.telemetry.clone();
    let oid = crate::helpers::new_user();
    let user_token = app.user_token(&oid);
    let workload = app.workload_token();
    let work = json!({ "tenantId": app.tenant(), "userId": oid });

    let (setup, setup_trace, setup_parent) = host_context();
    assert_eq!(
        post_traced(&app, "/api/setup", &setup, &user_token, json!({}))
            .await
            .status(),
        201
    );
    let (cold, cold_trace, cold_parent) = host_context();
    assert_eq!(
        post_traced(&app, "/api/do-work", &cold, &workload, work.clone())
            .await
            .status(),
        200
    );
    let (warm, warm_trace, warm_parent) = host_context();
    assert_eq!(
        post_traced(&app, "/api/do-work", &warm, &workload, work.clone())
            .await
            .status(),
        200
    );
    app.seed_users(3, Utc::now() - chrono::Duration::hours(48))
        .await;
    let (timer, timer_trace, timer_parent) = host_context();
    let answer = post_traced(
        &app,
        "/refresh-tokens",
        &timer,
        "unused",
        json!({"Data": {}, "Metadata": {}}),
    )
    .await;
    assert_eq!(answer.status(), 200);

    let expected = [
        (&setup_trace, &setup_parent, "setup"),
        (&cold_trace, &cold_parent, "do-work"),
        (&warm_trace, &warm_parent, "do-work"),
        (&timer_trace, &timer_parent, "refresh-tokens"),
    ];
    let spans = eventually(&receiver, "a server span per invocation", |r| {
        let spans = r.spans();
        expected
            .iter()
            .all(|(trace, _, _)| invocation(&spans, trace).is_some())
            .then_some(spans)
    })
    .await;
    let mut clients_of = BTreeMap::new();
    for (trace, parent, name) in expected {
        let (server, clients) = invocation(&spans, trace).unwrap();
        assert_eq!(server.name, name);
        assert_eq!(
            &server.parent_span_id, parent,
            "{name} continues the host's span"
        );
        assert!(server.attributes.contains_key("faas.invocation_id") || name == "refresh-tokens");
        let (statements, calls): (Vec<_>, Vec<_>) = clients
            .iter()
            .partition(|c| c.attributes["obovault.dependency"] == "database");
        // Every invocation reads or writes the store under its own span: the row read of a
        // warm do-work included.
        assert!(!statements.is_empty(), "{name}: no database span");
        for statement in &statements {
            assert_eq!(statement.parent_span_id, server.span_id, "{statement:?}");
            assert_eq!(statement.attributes["db.system.name"], db_system(&app));
            let operation = &statement.attributes["db.operation.name"];
            assert!(
                ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"].contains(&operation.as_str()),
                "{statement:?}"
            );
            // The statement's constant text: values are bound, never spelled in it.
            let text = &statement.attributes["db.query.text"];
            assert!(
                !text.is_empty() && !text.contains(app.tenant().as_str()),
                "{text}"
            );
        }
        for client in calls {
            assert_eq!(client.parent_span_id, server.span_id, "{client:?}");
            let url = &client.attributes["url.full"];
            assert!(
                url.starts_with("https://127.0.0.1:") && !url.contains('?'),
                "{url}"
            );
            assert!(
                client.attributes.contains_key("http.response.status_code"),
                "{client:?}"
            );
            assert!(client.attributes.contains_key("server.address"));
        }
        clients_of.insert(trace.clone(), clients);
    }
    assert!(dependencies(&clients_of[&setup_trace]).contains(&"entra.token"));
    assert_eq!(
        dependencies(&clients_of[&cold_trace]),
        ["downstream", "entra.token"]
    );
    assert_eq!(
        dependencies(&clients_of[&warm_trace]),
        ["downstream"],
        "warm do-work asks no one for a token"
    );
    // The rotated token's save runs beside the cold call's answer, in a task of its own, and
    // still reports under the call's trace.
    eventually(&receiver, "the cold call's save under its trace", |r| {
        let (server, clients) = invocation(&r.spans(), &cold_trace)?;
        clients
            .iter()
            .any(|c| {
                c.parent_span_id == server.span_id
                    && c.attributes
                        .get("db.query.text")
                        .is_some_and(|text| text.contains("SET\n        sealed_refresh_token"))
            })
            .then_some(())
    })
    .await;
    let timer_calls = dependencies(&clients_of[&timer_trace]);
    assert_eq!(
        timer_calls.iter().filter(|d| **d == "entra.token").count(),
        3,
        "{timer_calls:?}"
    );

    let points = eventually(&receiver, "every metric", |r| {
        let points = r.points();
        let have = |metric, labels: &[(&str, &str)]| latest(&points, metric, labels).is_some();
        (have("obovault.store.rows", &[("obovault.row.status", "active")])
            && have(
                "obovault.access_token_cache.lookups",
                &[("obovault.cache.result", "hit")],
            )
            && have(
                "http.server.request.duration",
                &[("faas.name", "refresh-tokens")],
            ))
        .then_some(points)
    })
    .await;
    let value = |metric, labels: &[(&str, &str)]| latest(&points, metric, labels).unwrap_or(0.0);
    assert_eq!(
        value(
            "http.server.request.duration",
            &[
                ("faas.name", "do-work"),
                ("http.response.status_code", "200")
            ]
        ),
        2.0
    );
    assert_eq!(
        value(
            "http.server.request.duration",
            &[("faas.name", "setup"), ("http.response.status_code", "201")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "obovault.access_token_cache.lookups",
            &[("obovault.cache.result", "miss")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "obovault.access_token_cache.lookups",
            &[("obovault.cache.result", "hit")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "obovault.refresh.rows",
            &[("obovault.outcome", "refreshed")]
        ),
        3.0
    );
    assert_eq!(
        value("obovault.refresh.rows", &[("obovault.outcome", "failed")]),
        0.0
    );
    assert_eq!(
        value("obovault.store.rows", &[("obovault.row.status", "active")]),
        4.0
    );
    assert_eq!(
        value(
            "obovault.store.rows_by_key_version",
            &[("obovault.key.name", &app.key_name())]
        ),
        4.0
    );
    let entra_calls = value(
        "http.client.request.duration",
        &[("obovault.dependency", "entra.token")],
    );
    assert!(
        entra_calls >= 5.0,
        "setup, cold do-work and three refreshes: {entra_calls}"
    );
    assert!(
        value(
            "http.client.request.duration",
            &[("obovault.dependency", "downstream")]
        ) >= 2.0
    );
    assert!(
        value(
            "db.client.operation.duration",
            &[("db.system.name", db_system(&app))]
        ) >= 4.0,
        "a statement at least per invocation"
    );

    // Nothing secret in anything exported.
    let mut secrets = app.stack.issued_secrets();
    secrets.extend([user_token, workload]);
    for payload in receiver.payloads() {
        for secret in &secrets {
            assert!(
                !payload
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "an issued secret was exported"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_never_holds_up_an_answer() {
    let app = traced_app(|stack| stack.telemetry_env()).await;
    let receiver = app.stack.telemetry.clone();
    receiver.set_mode(ReceiverMode::Stalled);
    let oid = app.connected_user().await;
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            app.do_work(&oid, serde_json::Value::Null).await.status(),
            200
        );
    }
    app.seed_users(2, Utc::now() - chrono::Duration::hours(48))
        .await;
    assert_eq!(app.post_timer().await.status(), 200);
    // Exports were attempted and hang (each for up to the 10 s export timeout) meanwhile.
    eventually(&receiver, "a hanging export", |r| {
        (r.requests() > 0).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answers waited for the collector: {:?}",
        started.elapsed()
    );

    // A collector that refuses: answers as before, nothing kept.
    receiver.set_mode(ReceiverMode::Refusing);
    assert_eq!(
        app.do_work(&oid, serde_json::Value::Null).await.status(),
        200
    );
    assert!(receiver.spans().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_at_the_endpoint_changes_nothing() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("https://127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);
    let app = traced_app(move |_| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "50".into()),
        ]
    })
    .await;
    let oid = app.connected_user().await;
    for _ in 0..5 {
        assert_eq!(
            app.do_work(&oid, serde_json::Value::Null).await.status(),
            200
        );
    }
    assert_eq!(app.post_timer().await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_insights_gets_requests_dependencies_and_metrics_of_one_operation() {
    // Every trace (the default keeps about five a second, from the sampler's start: right
    // after start-up a first request may be dropped; tests/api/sampling.rs).
    let app = app_insights(&[
        ("OTEL_TRACES_SAMPLER", "microsoft.fixed_percentage"),
        ("OTEL_TRACES_SAMPLER_ARG", "1"),
    ])
    .await;
    let receiver = app.stack.telemetry.clone();
    let oid = app.connected_user().await;
    let workload = app.workload_token();
    let (traceparent, trace, parent) = host_context();
    let work = json!({ "tenantId": app.tenant(), "userId": oid });
    assert_eq!(
        post_traced(&app, "/api/do-work", &traceparent, &workload, work)
            .await
            .status(),
        200
    );

    let (request, dependencies) = eventually(&receiver, "the do-work request", |r| {
        invocation(&r.spans(), &trace)
    })
    .await;
    assert_eq!(
        request.name, "POST /api/do-work",
        "{{method}} {{http.route}}"
    );
    assert_eq!(
        request.parent_span_id, parent,
        "ai.operation.parentId is the host's span"
    );
    assert_eq!(request.attributes["responseCode"], "200");
    let targets: Vec<_> = dependencies
        .iter()
        .map(|d| d.attributes["obovault.dependency"].as_str())
        .collect();
    assert!(targets.contains(&"downstream"), "{dependencies:?}");
    for dependency in &dependencies {
        assert_eq!(dependency.parent_span_id, request.span_id);
        assert!(
            !dependency.attributes["data"].contains('?'),
            "{dependency:?}"
        );
    }
    eventually(&receiver, "metrics", |r| {
        let points = r.points();
        points
            .iter()
            .any(|p| {
                p.metric == "http.server.request.duration"
                    && p.attributes.get("faas.name").map(String::as_str) == Some("do-work")
            })
            .then_some(())
    })
    .await;
    for payload in receiver.payloads() {
        for secret in app.stack.issued_secrets().iter().chain([&workload]) {
            assert!(!payload
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()));
        }
    }
}
