use super::*;

async fn body_of(error: ApiError) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let response = error.into_response();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn problems_follow_the_contract() {
    let (status, headers, body) = body_of(ApiError::Unavailable {
        what: "Key Vault",
        retry_after: Duration::from_secs(7),
    })
    .await;
    assert_eq!(status, 503);
    assert_eq!(headers[header::RETRY_AFTER], "7");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(body["error"], "unavailable");
    assert_eq!(body["status"], 503);
    for key in ["type", "title", "detail"] {
        assert!(body[key].is_string(), "{key}");
    }
}

#[tokio::test]
async fn internal_errors_are_opaque() {
    let (status, _, body) = body_of(ApiError::Internal(anyhow::anyhow!(
        "secret internals at db:5432"
    )))
    .await;
    assert_eq!(status, 500);
    assert!(!body.to_string().contains("db:5432"));
}

#[tokio::test]
async fn a_missing_token_gets_the_bare_challenge() {
    let (_, headers, body) = body_of(ApiError::InvalidToken {
        detail: "missing bearer token".into(),
        missing: true,
    })
    .await;
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(body["error"], "invalid_token");
    let (_, headers, _) = body_of(ApiError::InvalidToken {
        detail: "the token has expired".into(),
        missing: false,
    })
    .await;
    assert!(headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Bearer error=\"invalid_token\""));
}
