//! Credentials on every endpoint: missing, malformed or duplicated `Authorization`, hyper's
//! header limits, and every defective token the forge mints.

use serde_json::Value;

use super::request::*;
use super::tokens::{Caller, Forge};
use super::Context;

/// Adds the credential cases of each endpoint.
pub(super) fn add(t: &mut Table, cx: &Context, forge: &Forge) {
    let Context {
        user_token,
        workload_token,
        ..
    } = cx;
    let work_body = |request: Value| cx.work_body(request);
    // The unauthenticated base of each endpoint.
    let endpoints: [(Req, Caller); 4] = [
        (Req::new("POST", "/api/setup"), Caller::User),
        (Req::new("GET", "/api/setup"), Caller::User),
        (Req::new("DELETE", "/api/setup"), Caller::User),
        (
            Req::new("POST", "/api/do-work").json(work_body(Value::Null)),
            Caller::Workload,
        ),
    ];

    // ---- Credentials ----
    for (base, caller) in &endpoints {
        let valid = match caller {
            Caller::User => user_token.as_str(),
            Caller::Workload => workload_token.as_str(),
        };
        t.both("no Authorization", base.clone(), INVALID_TOKEN);
        t.both(
            "Basic credentials",
            base.clone().header("Authorization", "Basic dXNlcjpwYXNz"),
            INVALID_TOKEN,
        );
        t.both(
            "Basic scheme carrying a valid token",
            base.clone()
                .header("Authorization", format!("Basic {valid}")),
            INVALID_TOKEN,
        );
        t.both(
            "Bearer with nothing",
            base.clone().header("Authorization", "Bearer"),
            INVALID_TOKEN,
        );
        t.both(
            "Bearer and spaces",
            base.clone().header("Authorization", "Bearer    "),
            INVALID_TOKEN,
        );
        t.both(
            "token without a scheme",
            base.clone().header("Authorization", valid),
            INVALID_TOKEN,
        );
        t.both(
            "Bearer, a tab and the token",
            base.clone()
                .header("Authorization", format!("Bearer\t{valid}")),
            INVALID_TOKEN,
        );
        t.both(
            "two Authorization headers, valid one first",
            base.clone().bearer(valid).bearer("garbage"),
            INVALID_TOKEN,
        );
        t.both(
            "two Authorization headers, valid one last",
            base.clone().bearer("garbage").bearer(valid),
            INVALID_TOKEN,
        );
        t.both(
            "two Authorization headers, both valid",
            base.clone().bearer(valid).bearer(valid),
            INVALID_TOKEN,
        );
        t.both(
            "huge header value (64 KiB bearer)",
            base.clone().bearer(&"a".repeat(64 * 1024)),
            INVALID_TOKEN,
        );
        // A header value that is not UTF-8 (obs-text) reaches us forwarded; a JSON invocation
        // carries its replacement characters, which are obs-text too.
        t.both(
            "non-UTF-8 bearer",
            base.clone()
                .header("Authorization", b"Bearer \xff\xfe\xfd".as_slice()),
            INVALID_TOKEN,
        );
        // hyper's own limits: the request never reaches the app.
        t.forwarded(
            "header section over hyper's limit (1 MiB bearer)",
            base.clone().bearer(&"a".repeat(1024 * 1024)),
            Expect::Bare(431),
        );
        let mut many = base.clone().bearer(valid);
        for i in 0..120 {
            many = many.header(&format!("x-filler-{i}"), "1");
        }
        t.forwarded("more than 100 headers", many, Expect::Bare(431));
        for (name, token, expect) in forge.bad_tokens(*caller) {
            t.both(
                format!("token: {name}"),
                base.clone().bearer(&token),
                expect,
            );
        }
    }
}
