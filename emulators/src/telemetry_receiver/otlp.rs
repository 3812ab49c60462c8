//! OTLP/HTTP with binary protobuf, as the specification defines it
//! (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>): `POST /v1/traces` and
//! `POST /v1/metrics` with `Content-Type: application/x-protobuf` (optionally
//! `Content-Encoding: gzip`); success is `200` with the encoded `Export*ServiceResponse` in
//! the same content type; an undecodable body is `400`; another content type is `415`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, NumberDataPoint};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;

use super::{hex, ReceivedPoint, ReceivedSpan, TelemetryReceiver};

const PROTOBUF: &str = "application/x-protobuf";

/// An export's body admitted (its content type and encoding checked) and decoded as `R`;
/// the raw payload is kept with it. The answer to send instead when either fails: the
/// receiver's own (`415`, a refusal), or `400` "not an `name`" for a body that is not an `R`.
async fn decode<R: prost::Message + Default>(
    receiver: &TelemetryReceiver,
    headers: &HeaderMap,
    body: &Bytes,
    name: &str,
) -> Result<(Vec<u8>, R), Box<Response>> {
    let payload = receiver.admit(headers, body, PROTOBUF).await?;
    match R::decode(payload.as_slice()) {
        Ok(request) => Ok((payload, request)),
        Err(_) => {
            let answer = (StatusCode::BAD_REQUEST, format!("not an {name}"));
            Err(Box::new(answer.into_response()))
        }
    }
}

pub(super) async fn traces(
    State(receiver): State<TelemetryReceiver>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (payload, request): (_, ExportTraceServiceRequest) =
        match decode(&receiver, &headers, &body, "ExportTraceServiceRequest").await {
            Ok(decoded) => decoded,
            Err(answer) => return *answer,
        };
    let spans = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|span| ReceivedSpan {
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent_span_id: hex(&span.parent_span_id),
            name: span.name.clone(),
            kind: match SpanKind::try_from(span.kind) {
                Ok(SpanKind::Server) => "server",
                Ok(SpanKind::Client) => "client",
                _ => "internal",
            }
            .to_owned(),
            attributes: attributes(&span.attributes),
        })
        .collect();
    receiver.keep(payload, spans, Vec::new());
    protobuf(ExportTraceServiceResponse::default().encode_to_vec())
}

pub(super) async fn metrics(
    State(receiver): State<TelemetryReceiver>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (payload, request): (_, ExportMetricsServiceRequest) =
        match decode(&receiver, &headers, &body, "ExportMetricsServiceRequest").await {
            Ok(decoded) => decoded,
            Err(answer) => return *answer,
        };
    let mut points = Vec::new();
    for metric in request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
    {
        let number = |point: &NumberDataPoint| ReceivedPoint {
            metric: metric.name.clone(),
            attributes: attributes(&point.attributes),
            value: match point.value {
                Some(number_data_point::Value::AsDouble(v)) => v,
                Some(number_data_point::Value::AsInt(v)) => v as f64,
                None => 0.0,
            },
            sum: None,
        };
        match &metric.data {
            Some(metric::Data::Sum(sum)) => points.extend(sum.data_points.iter().map(number)),
            Some(metric::Data::Gauge(gauge)) => points.extend(gauge.data_points.iter().map(number)),
            Some(metric::Data::Histogram(histogram)) => {
                points.extend(histogram.data_points.iter().map(|point| ReceivedPoint {
                    metric: metric.name.clone(),
                    attributes: attributes(&point.attributes),
                    value: point.count as f64,
                    sum: point.sum,
                }));
            }
            _ => {}
        }
    }
    receiver.keep(payload, Vec::new(), points);
    protobuf(ExportMetricsServiceResponse::default().encode_to_vec())
}

fn protobuf(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, PROTOBUF)], body).into_response()
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}
