//! The JSON-invocation envelope parser: any bytes the host (or anyone reaching the handler's
//! port) could POST to `/setup` or `/do-work`. It must never panic; whatever it accepts is a
//! request for the API router under `/api/` with a body within the limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use obo_vault::http::{replay_envelope, BODY_LIMIT};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, envelope)) = data.split_first() else {
        return;
    };
    let function = if selector & 1 == 0 {
        "setup"
    } else {
        "do-work"
    };
    match replay_envelope(function, envelope) {
        Ok(request) => {
            let path = request.uri().path();
            assert_eq!(
                path,
                format!("/api/{function}"),
                "the function is fixed by the route"
            );
            if let Some(query) = request.uri().query() {
                assert!(!query.contains('#'));
            }
            let size = axum_body_size(request.body());
            assert!(size <= BODY_LIMIT as u64, "body over the limit: {size}");
        }
        Err(error) => {
            let status = error.status().as_u16();
            assert!(
                (400..500).contains(&status),
                "a bad envelope is a 4xx, got {status}"
            );
        }
    }
});

fn axum_body_size(body: &axum::body::Body) -> u64 {
    use axum::body::HttpBody as _;
    body.size_hint().upper().unwrap_or(u64::MAX)
}
