//! How Entra's error bodies and statuses are classified, and what the codes may contain.

use super::*;

fn body(json: serde_json::Value) -> ErrorBody {
    serde_json::from_value(json).unwrap()
}

fn bad_request(grant: Grant, json: serde_json::Value) -> IdpError {
    classify(grant, StatusCode::BAD_REQUEST, None, Some(&body(json)))
}

#[test]
fn dead_grants_need_the_user_again() {
    let error = bad_request(
        Grant::RefreshToken,
        serde_json::json!({"error": "invalid_grant", "error_codes": [70008], "error_description": "AADSTS70008: secret stuff"}),
    );
    assert!(
        matches!(
            &error,
            IdpError::Reauth {
                code: Some(70008),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.code(), "invalid_grant:70008");
    assert!(!format!("{error} {error:?}").contains("secret stuff"));
}

#[test]
fn loop_detection_is_throttling_not_reauth() {
    let error = bad_request(
        Grant::RefreshToken,
        serde_json::json!({"error": "invalid_grant", "error_codes": [50196]}),
    );
    assert!(matches!(error, IdpError::Throttled { .. }));
    assert_eq!(error.code(), "throttled");
}

#[test]
fn assertion_problems_are_bad_assertions_only_for_obo() {
    let json = serde_json::json!({"error": "invalid_grant", "error_codes": [500133]});
    assert!(matches!(
        bad_request(Grant::OnBehalfOf, json.clone()),
        IdpError::BadAssertion {
            code: Some(500133),
            ..
        }
    ));
    assert!(matches!(
        bad_request(Grant::RefreshToken, json),
        IdpError::Reauth { .. }
    ));
    let id_token = serde_json::json!({"error": "invalid_request", "error_codes": [240002]});
    assert!(matches!(
        bad_request(Grant::OnBehalfOf, id_token),
        IdpError::BadAssertion { .. }
    ));
}

#[test]
fn interaction_required_keeps_the_claims_challenge() {
    let claims = r#"{"access_token":{"polids":{"essential":true,"values":["9ab03e19"]}}}"#;
    let error = bad_request(
        Grant::OnBehalfOf,
        serde_json::json!({"error": "interaction_required", "error_codes": [50079], "suberror": "basic_action", "claims": claims}),
    );
    match error {
        IdpError::Reauth {
            error,
            code,
            suberror,
            claims: Some(got),
        } => {
            assert_eq!(
                (error.as_str(), code, suberror.as_deref()),
                ("interaction_required", Some(50079), Some("basic_action"))
            );
            assert_eq!(got, claims);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn configuration_errors_are_misconfigured() {
    for name in [
        "invalid_client",
        "unauthorized_client",
        "invalid_scope",
        "invalid_resource",
        "unsupported_grant_type",
        "invalid_request",
        "something_new",
    ] {
        let error = classify(
            Grant::RefreshToken,
            StatusCode::UNAUTHORIZED,
            None,
            Some(&body(serde_json::json!({"error": name}))),
        );
        assert!(
            matches!(&error, IdpError::Misconfigured { error, .. } if error == name),
            "{name}"
        );
    }
    let mismatch = bad_request(
        Grant::RefreshToken,
        serde_json::json!({"error": "invalid_grant", "suberror": "client_mismatch"}),
    );
    assert!(matches!(mismatch, IdpError::Misconfigured { .. }));
}

#[test]
fn only_a_refused_service_credential_refuses_the_service() {
    for (name, code) in [
        ("invalid_client", 7_000_222),
        ("unauthorized_client", 700_016),
    ] {
        let error = classify(
            Grant::RefreshToken,
            StatusCode::UNAUTHORIZED,
            None,
            Some(&body(
                serde_json::json!({"error": name, "error_codes": [code]}),
            )),
        );
        assert!(error.refuses_the_service(), "{name}");
    }
    for json in [
        serde_json::json!({"error": "invalid_scope"}),
        serde_json::json!({"error": "invalid_grant", "error_codes": [70008]}),
        serde_json::json!({"error": "invalid_grant", "suberror": "client_mismatch"}),
    ] {
        assert!(
            !bad_request(Grant::RefreshToken, json.clone()).refuses_the_service(),
            "{json}"
        );
    }
    assert!(!IdpError::Throttled { retry_after: None }.refuses_the_service());
}

#[test]
fn status_decides_when_the_body_says_nothing() {
    let seven = Some(Duration::from_secs(7));
    assert!(
        matches!(classify(Grant::OnBehalfOf, StatusCode::TOO_MANY_REQUESTS, seven, None), IdpError::Throttled { retry_after } if retry_after == seven)
    );
    assert!(matches!(
        classify(
            Grant::OnBehalfOf,
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            None
        ),
        IdpError::Unavailable { retry_after: None }
    ));
    assert!(matches!(
        classify(Grant::OnBehalfOf, StatusCode::BAD_REQUEST, None, None),
        IdpError::Protocol(_)
    ));
    let transient = bad_request(
        Grant::RefreshToken,
        serde_json::json!({"error": "temporarily_unavailable"}),
    );
    assert!(matches!(transient, IdpError::Unavailable { .. }));
    // A failing STS never kills a grant, whatever its body says.
    let odd = classify(
        Grant::RefreshToken,
        StatusCode::BAD_GATEWAY,
        None,
        Some(&body(serde_json::json!({"error": "invalid_grant"}))),
    );
    assert!(matches!(odd, IdpError::Unavailable { .. }));
}

#[test]
fn retry_after_is_integer_seconds_and_capped() {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
    headers.insert(reqwest::header::RETRY_AFTER, "999999".parse().unwrap());
    assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
    headers.insert(
        reqwest::header::RETRY_AFTER,
        "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
    );
    assert_eq!(retry_after(&headers), None);
}

#[test]
fn codes_never_carry_free_text() {
    let error = bad_request(
        Grant::RefreshToken,
        serde_json::json!({"error": "invalid_grant eyJhbGciOi.secret token", "error_codes": [70000]}),
    );
    assert_eq!(error.code(), "unknown_error:70000");
    assert_eq!(IdpError::Timeout.code(), "timeout");
    assert_eq!(
        IdpError::Unavailable { retry_after: None }.code(),
        "unavailable"
    );
    assert_eq!(
        IdpError::Protocol("no access_token".into()).code(),
        "protocol"
    );
}
