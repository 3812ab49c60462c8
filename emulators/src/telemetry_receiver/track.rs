//! Application Insights' ingestion ("Breeze") track endpoint: `POST /v2/track` (what the
//! `opentelemetry-application-insights` exporter calls) and `POST /v2.1/track` (the Azure
//! Monitor exporters), a gzip'd (`Content-Encoding: gzip`) JSON array of envelopes or
//! newline-delimited envelopes. An envelope is `{"name","time","iKey","tags","data":
//! {"baseType","baseData"}}`; `tags["ai.operation.id"]` is the trace id and
//! `tags["ai.operation.parentId"]` the parent span id (see the exporter's `models/` and
//! Microsoft's data model, <https://learn.microsoft.com/azure/azure-monitor/app/data-model-complete>).
//! The answer is `200 {"itemsReceived":n,"itemsAccepted":n,"errors":[]}` (the `TrackResponse`
//! the Azure Monitor exporters parse: azure-sdk-for-python
//! `azure-monitor-opentelemetry-exporter/_generated/models/_models_py3.py`), `400` with
//! the same shape when nothing parses.

use std::collections::BTreeMap;
use std::io::Read as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{ReceivedPoint, ReceivedSpan, TelemetryReceiver};

pub(super) async fn track(
    State(receiver): State<TelemetryReceiver>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let payload = match receiver.admit(&headers, &body, "application/json").await {
        Ok(payload) => payload,
        Err(answer) => return *answer,
    };
    let items = envelopes(&payload);
    if items.is_empty() {
        return answer(StatusCode::BAD_REQUEST, 0, 0);
    }
    let mut spans = Vec::new();
    let mut points = Vec::new();
    for item in &items {
        let data = &item["data"]["baseData"];
        match item["data"]["baseType"].as_str() {
            Some("RequestData") => spans.push(span(item, "server")),
            Some("RemoteDependencyData") => spans.push(span(item, "client")),
            Some("MetricData") => points.extend(
                data["metrics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|metric| point(metric, &data["properties"])),
            ),
            _ => {}
        }
    }
    let count = items.len();
    receiver.keep(payload, spans, points);
    answer(StatusCode::OK, count, count)
}

/// A `DataPoint` of a `MetricData` item as a received point. In Application Insights' schema
/// (`DataPoint` in the Bond schema of ApplicationInsights-Home; opentelemetry-application-insights
/// `models/data_point.rs`) `value` is a measurement, or for `"kind": "Aggregation"` the sum of the
/// measurements, whose number is `count`: a histogram's point, held here as its count and sum
/// like an OTLP one.
fn point(metric: &Value, properties: &Value) -> ReceivedPoint {
    let value = metric["value"].as_f64().unwrap_or_default();
    let aggregated = metric["kind"] == "Aggregation";
    let (value, sum) = match metric["count"].as_f64() {
        Some(count) if aggregated => (count, Some(value)),
        _ => (value, None),
    };
    ReceivedPoint {
        metric: metric["name"].as_str().unwrap_or_default().to_owned(),
        attributes: strings(properties),
        value,
        sum,
    }
}

/// The body, gunzipped when `Content-Encoding: gzip` says so.
pub(super) fn decoded(headers: &HeaderMap, body: &Bytes) -> std::io::Result<Vec<u8>> {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if !gzip {
        return Ok(body.to_vec());
    }
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body.as_ref()).read_to_end(&mut plain)?;
    Ok(plain)
}

/// A JSON array of envelopes, or one envelope per line.
fn envelopes(payload: &[u8]) -> Vec<Value> {
    if let Ok(Value::Array(items)) = serde_json::from_slice(payload) {
        return items;
    }
    String::from_utf8_lossy(payload)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn span(item: &Value, kind: &str) -> ReceivedSpan {
    let data = &item["data"]["baseData"];
    let tag = |name: &str| item["tags"][name].as_str().unwrap_or_default().to_owned();
    let mut attributes = strings(&data["properties"]);
    for field in [
        "responseCode",
        "resultCode",
        "url",
        "data",
        "target",
        "type",
    ] {
        if let Some(value) = data[field].as_str() {
            attributes.insert(field.to_owned(), value.to_owned());
        }
    }
    // The envelope's `sampleRate`, kept as sent: "Sampling rate used in application. This
    // telemetry item represents 100 / sampleRate actual telemetry items" (`TelemetryItem` in
    // the ingestion API's generated models, azure-sdk-for-js
    // `monitor-opentelemetry-exporter/src/generated/models/index.ts`).
    if let Some(rate) = item["sampleRate"].as_f64() {
        attributes.insert("sampleRate".to_owned(), rate.to_string());
    }
    ReceivedSpan {
        trace_id: tag("ai.operation.id"),
        span_id: data["id"].as_str().unwrap_or_default().to_owned(),
        parent_span_id: tag("ai.operation.parentId"),
        name: data["name"].as_str().unwrap_or_default().to_owned(),
        kind: kind.to_owned(),
        attributes,
    }
}

fn strings(properties: &Value) -> BTreeMap<String, String> {
    properties
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect()
}

fn answer(status: StatusCode, received: usize, accepted: usize) -> Response {
    let body = json!({ "itemsReceived": received, "itemsAccepted": accepted, "errors": [] });
    (status, Json(body)).into_response()
}
