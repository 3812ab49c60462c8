//! The managed-identity endpoint's token cache: the same token while more than half of its
//! lifetime is left, a new one after, and the hook that sees each new token before it is
//! answered (what lets a test make it a database role's password).

use std::sync::Arc;
use std::time::Duration;

use emulators::{NewIdentityToken, DEFAULT_MANAGED_IDENTITY_CLIENT_ID};
use parking_lot::Mutex;

use crate::client_credentials::identity_token;
use crate::common::*;

const POSTGRES: &str = "https://ossrdbms-aad.database.windows.net";

async fn postgres_token(stack: &emulators::Stack) -> (String, i64) {
    let (status, body) = identity_token(stack, POSTGRES, DEFAULT_MANAGED_IDENTITY_CLIENT_ID).await;
    assert_eq!(status, 200, "{body}");
    let expires_on = body["expires_on"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("expires_on: unix seconds as a string");
    (
        body["access_token"].as_str().expect("token").to_owned(),
        expires_on,
    )
}

#[tokio::test]
async fn tokens_are_cached_for_half_their_lifetime_and_each_new_one_is_seen_first() {
    let stack = stack().await;
    let seen: Arc<Mutex<Vec<NewIdentityToken>>> = Arc::default();
    let record = Arc::clone(&seen);
    stack.managed_identity.on_new_token(Arc::new(move |token| {
        let record = Arc::clone(&record);
        Box::pin(async move { record.lock().push(token) })
    }));
    stack
        .managed_identity
        .set_token_lifetime(Duration::from_secs(2));

    let (first, expires_on) = postgres_token(&stack).await;
    let now = chrono::Utc::now().timestamp();
    assert!((now + 1..=now + 2).contains(&expires_on), "{expires_on}");
    // The token's own `exp` says the same as `expires_on`.
    assert_eq!(claims(&first)["exp"].as_i64(), Some(expires_on));
    assert_eq!(claims(&first)["aud"], POSTGRES);
    let (again, _) = postgres_token(&stack).await;
    assert_eq!(again, first, "the endpoint caches");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (second, _) = postgres_token(&stack).await;
    assert_ne!(second, first, "half the lifetime passed: a new token");

    let seen: Vec<(String, String)> = seen
        .lock()
        .iter()
        .map(|t| (t.resource.clone(), t.access_token.clone()))
        .collect();
    assert_eq!(
        seen,
        [(POSTGRES.to_owned(), first), (POSTGRES.to_owned(), second)]
    );
    let fresh: Vec<bool> = stack
        .managed_identity
        .issued()
        .iter()
        .map(|t| t.fresh)
        .collect();
    assert_eq!(fresh, [true, false, true]);
}
