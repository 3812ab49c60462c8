//! Malformed host envelopes (JSON invocations of setup and do-work, wrong methods, unknown
//! functions) and the timer, which answers anything with its host contract and does no work.

use serde_json::{json, Value};

use super::request::*;
use super::Context;

/// Adds the envelope and timer cases.
pub(super) fn add(t: &mut Table, cx: &Context) {
    let Context {
        user_token,
        workload_token,
        ..
    } = cx;
    let work_body = |request: Value| cx.work_body(request);
    // ---- malformed host envelopes ----
    // A valid invocation of `function` with `extra` fields replaced (null: removed).
    let valid_req = |function: &str, extra: Value| {
        let (token, body) = match function {
            "setup" => (user_token.clone(), "{}".to_owned()),
            _ => (workload_token.clone(), work_body(Value::Null)),
        };
        let mut req = json!({
            "Url": format!("https://obo.example/api/{function}"),
            "Method": "POST",
            "Headers": {
                "Authorization": [format!("Bearer {token}")],
                "Content-Type": ["application/json"]
            },
            "Body": body
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                req.as_object_mut().unwrap().remove(k);
            } else {
                req[k] = v.clone();
            }
        }
        json!({"Data": {"req": req}}).to_string()
    };
    let big_header = json!({"X-Big": ["a".repeat(1024 * 1024)]});
    for path in ["/do-work", "/setup"] {
        let function = &path[1..];
        let envelopes: Vec<(&str, String, Expect)> = vec![
            ("empty", String::new(), INVALID_REQUEST),
            ("not JSON", "hello".into(), INVALID_REQUEST),
            ("an array", "[]".into(), INVALID_REQUEST),
            ("missing Data", "{}".into(), INVALID_REQUEST),
            (
                "only Metadata",
                r#"{"Metadata":{"sys":{}}}"#.into(),
                INVALID_REQUEST,
            ),
            ("Data null", r#"{"Data":null}"#.into(), INVALID_REQUEST),
            ("Data a number", r#"{"Data":1}"#.into(), INVALID_REQUEST),
            (
                "Data an array",
                r#"{"Data":[{"req":{}}]}"#.into(),
                INVALID_REQUEST,
            ),
            (
                "Data without req",
                r#"{"Data":{"timer":{}}}"#.into(),
                INVALID_REQUEST,
            ),
            (
                "Data.req a string",
                r#"{"Data":{"req":"GET /api/setup"}}"#.into(),
                INVALID_REQUEST,
            ),
            (
                "Data.req an array",
                r#"{"Data":{"req":[]}}"#.into(),
                INVALID_REQUEST,
            ),
            (
                "Data.req null",
                r#"{"Data":{"req":null}}"#.into(),
                INVALID_REQUEST,
            ),
            (
                "Data.req empty",
                r#"{"Data":{"req":{}}}"#.into(),
                INVALID_REQUEST,
            ),
            (
                "Method missing",
                valid_req(function, json!({"Method": null})),
                INVALID_REQUEST,
            ),
            (
                "Method a number",
                valid_req(function, json!({"Method": 5})),
                INVALID_REQUEST,
            ),
            (
                "Method an array",
                valid_req(function, json!({"Method": ["POST"]})),
                INVALID_REQUEST,
            ),
            (
                "Method empty",
                valid_req(function, json!({"Method": ""})),
                INVALID_REQUEST,
            ),
            (
                "Method with a space",
                valid_req(function, json!({"Method": "PO ST"})),
                INVALID_REQUEST,
            ),
            (
                "Method with CRLF",
                valid_req(function, json!({"Method": "POST\r\n"})),
                INVALID_REQUEST,
            ),
            (
                "Method PUT",
                valid_req(function, json!({"Method": "PUT"})),
                problem(405, "method_not_allowed"),
            ),
            (
                "Headers an array",
                valid_req(
                    function,
                    json!({"Headers": [["Authorization", "Bearer x"]]}),
                ),
                INVALID_REQUEST,
            ),
            (
                "Headers a string",
                valid_req(function, json!({"Headers": "Authorization: Bearer x"})),
                INVALID_REQUEST,
            ),
            (
                "Headers value numbers",
                valid_req(function, json!({"Headers": {"Authorization": [1]}})),
                INVALID_REQUEST,
            ),
            (
                "Headers value null",
                valid_req(function, json!({"Headers": {"Authorization": [null]}})),
                INVALID_REQUEST,
            ),
            (
                "Headers value an object",
                valid_req(function, json!({"Headers": {"Authorization": {"a": "b"}}})),
                INVALID_REQUEST,
            ),
            (
                "Headers value nested arrays",
                valid_req(
                    function,
                    json!({"Headers": {"Authorization": [["Bearer x"]]}}),
                ),
                INVALID_REQUEST,
            ),
            (
                "Headers name with a space",
                valid_req(function, json!({"Headers": {"bad name": ["x"]}})),
                INVALID_REQUEST,
            ),
            (
                "Headers name with NUL",
                valid_req(function, json!({"Headers": {"x\u{0}": ["x"]}})),
                INVALID_REQUEST,
            ),
            (
                "Headers name empty",
                valid_req(function, json!({"Headers": {"": ["x"]}})),
                INVALID_REQUEST,
            ),
            (
                "Headers name with CRLF",
                valid_req(function, json!({"Headers": {"X\r\nAuthorization": ["x"]}})),
                INVALID_REQUEST,
            ),
            (
                "Headers value with CRLF",
                valid_req(
                    function,
                    json!({"Headers": {"X-A": ["a\r\nAuthorization: Bearer x"]}}),
                ),
                INVALID_REQUEST,
            ),
            (
                "Authorization not ASCII",
                valid_req(
                    function,
                    json!({"Headers": {"Authorization": ["Bearer é"]}}),
                ),
                INVALID_TOKEN,
            ),
            (
                "Body a number",
                valid_req(function, json!({"Body": 5})),
                INVALID_REQUEST,
            ),
            (
                "Body an array",
                valid_req(function, json!({"Body": [work_body(Value::Null)]})),
                INVALID_REQUEST,
            ),
            (
                "Body true",
                valid_req(function, json!({"Body": true})),
                INVALID_REQUEST,
            ),
            (
                "Url not a URL",
                valid_req(function, json!({"Url": "not a url"})),
                INVALID_REQUEST,
            ),
            (
                "Url a number",
                valid_req(function, json!({"Url": 5})),
                INVALID_REQUEST,
            ),
            (
                "Body over 256 KiB",
                valid_req(
                    function,
                    json!({"Body": format!("{{\"x\":\"{}\"}}", "a".repeat(300 * 1024))}),
                ),
                TOO_LARGE,
            ),
            (
                "1 MiB envelope",
                valid_req(function, json!({"Headers": big_header})),
                TOO_LARGE,
            ),
            (
                "10,000 [ in Data.req",
                format!("{{\"Data\":{{\"req\":{}", nested(10_000)),
                INVALID_REQUEST,
            ),
            (
                "10,000 [ in Metadata",
                format!("{{\"Data\":{{}},\"Metadata\":{}", nested(10_000)),
                INVALID_REQUEST,
            ),
        ];
        for (name, body, expect) in envelopes {
            t.raw(
                format!("envelope: {name}"),
                "POST",
                path,
                &[("Content-Type", "application/json")],
                &body,
                expect,
            );
        }
    }
    t.raw(
        "envelope: not UTF-8",
        "POST",
        "/setup",
        &[("Content-Type", "application/json")],
        b"{\"Data\":{\"req\":{\"Method\":\"\xff\"}}}",
        INVALID_REQUEST,
    );
    for (method, path) in [
        ("GET", "/setup"),
        ("PUT", "/do-work"),
        ("GET", "/refresh-tokens"),
        ("DELETE", "/refresh-tokens"),
    ] {
        t.raw(
            "wrong method for an invocation",
            method,
            path,
            &[],
            "",
            problem(405, "method_not_allowed"),
        );
    }
    t.raw(
        "unknown function",
        "POST",
        "/refresh",
        &[],
        "{}",
        problem(404, "not_found"),
    );

    // ---- the timer: anything but the host's envelope still gets the contract, no work ----
    let timer_bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not JSON", b"hello".to_vec()),
        ("not UTF-8", b"{\"Data\":\xff}".to_vec()),
        ("an array", b"[]".to_vec()),
        ("Data a number", br#"{"Data":1}"#.to_vec()),
        (
            "IsPastDue a string",
            br#"{"Data":{"timer":{"IsPastDue":"yes"}}}"#.to_vec(),
        ),
        ("10,000 [", nested(10_000).into_bytes()),
    ];
    for (name, body) in timer_bodies {
        t.raw(
            format!("timer: {name}"),
            "POST",
            "/refresh-tokens",
            &[("Content-Type", "application/json")],
            body,
            Expect::TimerContract,
        );
    }
    t.raw(
        "timer: text/plain",
        "POST",
        "/refresh-tokens",
        &[("Content-Type", "text/plain")],
        "{}",
        Expect::TimerContract,
    );
    t.raw(
        "timer: 1 MiB envelope",
        "POST",
        "/refresh-tokens",
        &[("Content-Type", "application/json")],
        format!("{{\"Data\":{{\"x\":\"{}\"}}}}", "a".repeat(1024 * 1024)),
        TOO_LARGE,
    );
}
