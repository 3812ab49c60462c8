use super::*;

fn settings(pairs: &[(&str, &str)]) -> Result<Option<TelemetrySettings>, SettingsError> {
    TelemetrySettings::from_env(&Env::from_pairs(pairs.iter().copied()))
}

#[test]
fn nothing_configured_means_no_telemetry() {
    assert!(settings(&[]).unwrap().is_none());
    assert!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap().is_none());
}

#[test]
fn otlp_endpoint_must_be_https_or_local() {
    let ok = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318/otlp")])
        .unwrap()
        .unwrap();
    assert_eq!(
        ok.otlp_endpoint.unwrap().as_str(),
        "https://collector:4318/otlp"
    );
    assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")]).is_ok());
    let error = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).unwrap_err();
    assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_ENDPOINT");
    assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")]).is_err());
}

#[test]
fn connection_string_is_parsed_and_kept_out_of_debug() {
    let value = "InstrumentationKey=00000000-1111-2222-3333-444444444444;\
                 IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;\
                 LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/";
    let parsed = settings(&[("APPLICATIONINSIGHTS_CONNECTION_STRING", value)])
        .unwrap()
        .unwrap();
    let connection = parsed.app_insights.as_ref().unwrap();
    assert_eq!(
        connection.ingestion_endpoint.as_str(),
        "https://westeurope-5.in.applicationinsights.azure.com/"
    );
    assert!(!format!("{parsed:?}").contains("00000000-1111"));
    let default = AppInsightsConnection::parse("instrumentationkey=abc").unwrap();
    assert_eq!(
        default.ingestion_endpoint.host_str(),
        Some("dc.services.visualstudio.com")
    );
}

#[test]
fn bad_connection_strings_are_refused_without_echoing_them() {
    for value in [
        "IngestionEndpoint=https://x/",
        "garbage",
        "InstrumentationKey=k;IngestionEndpoint=http://x/",
    ] {
        let error = settings(&[("APPLICATIONINSIGHTS_CONNECTION_STRING", value)]).unwrap_err();
        assert_eq!(error.variable, "APPLICATIONINSIGHTS_CONNECTION_STRING");
        assert!(!error.problem.contains(value), "{}", error.problem);
    }
}

#[test]
fn intervals_are_milliseconds() {
    let parsed = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "abc"),
    ]);
    assert_eq!(parsed.unwrap_err().variable, "OTEL_METRIC_EXPORT_INTERVAL");
}
