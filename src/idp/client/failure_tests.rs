//! How the client fails: Entra's refusals classified, a hanging or unreachable endpoint, and
//! what the log lines of a failure carry (diagnostics, never a secret).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use url::Url;

use super::tests::{
    client, endpoint, id_token, secret, success, tenant, Answer, ASSERTION, CLIENT_ID,
    CLIENT_SECRET, GRAPH, TENANT,
};
use crate::domain::RefreshToken;
use crate::idp::IdpError;

/// What a classified error must look like.
type Expectation = fn(&IdpError) -> bool;

/// A refusal naming Entra's `error` and one AADSTS number.
fn refusal(status: u16, error: &str, code: i64) -> Answer {
    Answer::json(status, json!({"error": error, "error_codes": [code]}))
}

/// An answer that is not JSON.
fn plain(status: u16, headers: Vec<(&'static str, &'static str)>, body: &str) -> Answer {
    Answer {
        status,
        headers,
        body: body.into(),
        delay: Duration::ZERO,
    }
}

/// Each answer, given to an OBO grant, fails it with the expected error and `code()`, and
/// neither the error nor its code shows a secret of the request or the answer.
async fn assert_classified(cases: Vec<(Answer, Expectation, &str)>) {
    for (answer, expected, code) in cases {
        let entra = endpoint(answer).await;
        let error = client(&entra.base, secret(), Duration::from_secs(5))
            .on_behalf_of(&tenant(), ASSERTION, &[GRAPH.to_owned()])
            .await
            .unwrap_err();
        assert!(expected(&error), "{error:?}");
        assert_eq!(error.code(), code);
        let shown = format!("{error} {error:?} {}", error.code());
        for secret in [
            "DESCRIPTION-TEXT",
            CLIENT_SECRET,
            "INBOUND-ASSERTION",
            "ACCESS-TOKEN-VALUE",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}

#[tokio::test]
async fn a_dead_grant_and_a_claims_challenge_ask_for_reauthentication() {
    use IdpError as E;
    let description = "AADSTS70008: DESCRIPTION-TEXT quoting CLIENT-SECRET-VALUE";
    let described = Answer::json(
        400,
        json!({"error": "invalid_grant", "error_codes": [70008], "error_description": description, "trace_id": "b72a68c3-0926-4b8e-bc35-3150069c2800"}),
    );
    let challenge = Answer::json(
        400,
        json!({"error": "interaction_required", "error_codes": [50079], "suberror": "basic_action", "claims": "{\"access_token\":{\"polids\":{\"essential\":true}}}"}),
    );
    assert_classified(vec![
        (
            described,
            |e| {
                matches!(
                    e,
                    E::Reauth {
                        code: Some(70008),
                        claims: None,
                        ..
                    }
                )
            },
            "invalid_grant:70008",
        ),
        (
            challenge,
            |e| matches!(e, E::Reauth { claims: Some(c), .. } if c.contains("polids")),
            "interaction_required:50079",
        ),
    ])
    .await;
}

#[tokio::test]
async fn entra_error_codes_name_throttling_a_bad_assertion_and_a_bad_client() {
    use IdpError as E;
    assert_classified(vec![
        (
            refusal(400, "invalid_grant", 50196),
            |e| matches!(e, E::Throttled { .. }),
            "throttled",
        ),
        (
            refusal(400, "invalid_grant", 500133),
            |e| {
                matches!(
                    e,
                    E::BadAssertion {
                        code: Some(500133),
                        ..
                    }
                )
            },
            "invalid_grant:500133",
        ),
        (
            refusal(401, "invalid_client", 7000215),
            |e| {
                matches!(
                    e,
                    E::Misconfigured {
                        code: Some(7000215),
                        ..
                    }
                )
            },
            "invalid_client:7000215",
        ),
    ])
    .await;
}

#[tokio::test]
async fn answers_without_an_entra_error_are_classified_by_status() {
    use IdpError as E;
    assert_classified(vec![
        (
            plain(429, vec![("retry-after", "7")], "Too many requests"),
            |e| matches!(e, E::Throttled { retry_after: Some(d) } if *d == Duration::from_secs(7)),
            "throttled",
        ),
        (
            plain(503, vec![], ""),
            |e| matches!(e, E::Unavailable { retry_after: None }),
            "unavailable",
        ),
    ])
    .await;
}

#[tokio::test]
async fn a_success_that_is_not_one_is_a_protocol_error() {
    use IdpError as E;
    let no_access_token = Answer::json(200, json!({"token_type": "Bearer", "expires_in": 3600}));
    assert_classified(vec![
        (no_access_token, |e| matches!(e, E::Protocol(_)), "protocol"),
        (
            success(Some("RT"), Some(id_token("another-client"))),
            |e| matches!(e, E::Protocol(_)),
            "protocol",
        ),
    ])
    .await;
}

/// The error of a refresh grant against `base` with a client `timeout`.
async fn refresh_error(base: &Url, timeout: Duration) -> IdpError {
    client(base, secret(), timeout)
        .redeem_refresh_token(
            &tenant(),
            &RefreshToken::new("RT".into()),
            &[GRAPH.to_owned()],
        )
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_hanging_entra_is_a_timeout() {
    let hanging = Answer {
        delay: Duration::from_secs(30),
        ..success(None, None)
    };
    let entra = endpoint(hanging).await;
    let error = refresh_error(&entra.base, Duration::from_millis(200)).await;
    assert!(matches!(error, IdpError::Timeout), "{error:?}");
}

#[tokio::test]
async fn an_unreachable_entra_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let error = refresh_error(&base, Duration::from_secs(5)).await;
    assert!(
        matches!(error, IdpError::Unavailable { retry_after: None }),
        "{error:?}"
    );
}

/// Collects everything logged on this thread (tokio tests run on one thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn log_lines_carry_diagnostics_but_no_secrets() {
    // A process-wide subscriber: a thread-scoped one loses lines whenever a parallel test
    // on another thread caches a callsite's interest first. Other tests' lines land in the
    // same buffer, which only makes the "no secret" checks stricter.
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    let captured = CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other test installs a global subscriber");
        captured
    });
    let refused = Answer::json(
        400,
        json!({"error": "invalid_grant", "error_codes": [70008], "error_description": "DESCRIPTION-TEXT",
               "trace_id": "b72a68c3-0926-4b8e-bc35-3150069c2800", "correlation_id": "73d656cf-54b1-4eb2-b429-26d8165a52d7"}),
    );
    for answer in [
        refused,
        success(Some("REFRESH-TOKEN-VALUE"), Some(id_token(CLIENT_ID))),
    ] {
        let entra = endpoint(answer).await;
        let client = client(&entra.base, secret(), Duration::from_secs(5));
        let _ = client
            .on_behalf_of(&tenant(), ASSERTION, &[GRAPH.to_owned()])
            .await;
        let _ = client
            .redeem_refresh_token(
                &tenant(),
                &RefreshToken::new("OLD-REFRESH-TOKEN".into()),
                &[GRAPH.to_owned()],
            )
            .await;
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("70008") && logs.contains("b72a68c3-0926-4b8e-bc35-3150069c2800"),
        "{logs}"
    );
    assert!(logs.contains(TENANT), "{logs}");
    for secret in [
        "DESCRIPTION-TEXT",
        CLIENT_SECRET,
        "INBOUND-ASSERTION",
        "ACCESS-TOKEN-VALUE",
        "REFRESH-TOKEN-VALUE",
        "OLD-REFRESH-TOKEN",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked: {logs}");
    }
}
