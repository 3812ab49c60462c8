//! Well-authenticated requests with bad contents: setup and do-work bodies, do-work paths that
//! try to leave the downstream API, request headers that are not allowed, and routing.

use serde_json::{json, Value};

use super::request::*;
use super::tokens::OTHER_TENANT_GUID;
use super::Context;
use crate::helpers::new_user;

/// Adds the body, path, header and routing cases.
pub(super) fn add(t: &mut Table, cx: &Context) {
    let Context {
        tenant,
        oid,
        user_token,
        workload_token,
    } = cx;
    let work_body = |request: Value| cx.work_body(request);
    // ---- setup bodies (valid user token) ----
    let setup = Req::new("POST", "/api/setup").bearer(user_token);
    let setup_bodies: Vec<(&str, Req, Expect)> = vec![
        ("malformed JSON", setup.clone().json("{"), INVALID_REQUEST),
        (
            "a non-empty object",
            setup.clone().json(r#"{"tenantId":"x"}"#),
            INVALID_REQUEST,
        ),
        ("an array", setup.clone().json("[]"), INVALID_REQUEST),
        (
            "an array holding {}",
            setup.clone().json("[{}]"),
            INVALID_REQUEST,
        ),
        ("a string", setup.clone().json(r#""{}""#), INVALID_REQUEST),
        ("null", setup.clone().json("null"), INVALID_REQUEST),
        ("a number", setup.clone().json("0"), INVALID_REQUEST),
        (
            "huge (300 KiB)",
            setup
                .clone()
                .json(format!("{{\"x\":\"{}\"}}", "a".repeat(300 * 1024))),
            TOO_LARGE,
        ),
        (
            "10,000 [",
            setup.clone().json(nested(10_000)),
            INVALID_REQUEST,
        ),
        (
            "10,000 nested objects",
            setup.clone().json("{\"a\":".repeat(10_000)),
            INVALID_REQUEST,
        ),
        (
            "{} as text/plain",
            setup
                .clone()
                .header("Content-Type", "text/plain")
                .body("{}"),
            UNSUPPORTED,
        ),
        (
            "a body without content type",
            setup.clone().body(r#"{"a":1}"#),
            UNSUPPORTED,
        ),
        (
            "form encoded",
            setup
                .clone()
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("a=1"),
            UNSUPPORTED,
        ),
        (
            "non-UTF-8",
            setup.clone().json(b"{\"\xff\xfe\":1}".as_slice()),
            INVALID_REQUEST,
        ),
        (
            "a byte-order mark before {}",
            setup.clone().json("\u{feff}{}"),
            INVALID_REQUEST,
        ),
        (
            "{} and trailing garbage",
            setup.clone().json("{} x"),
            INVALID_REQUEST,
        ),
        ("two objects", setup.json("{}{}"), INVALID_REQUEST),
    ];
    for (name, req, expect) in setup_bodies {
        t.both(format!("body: {name}"), req, expect);
    }

    // ---- do-work bodies (valid workload token) ----
    let work = Req::new("POST", "/api/do-work").bearer(workload_token);
    let other_user = new_user();
    let huge = format!(
        "{{\"tenantId\":\"{tenant}\",\"userId\":\"{oid}\",\"request\":{{\"method\":\"POST\",\"path\":\"/echo\",\"body\":\"{}\"}}}}",
        "a".repeat(300 * 1024)
    );
    let many_query: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let work_bodies: Vec<(&str, Req, Expect)> = vec![
        ("empty", work.clone().json(""), INVALID_REQUEST),
        ("malformed JSON", work.clone().json("{\"tenantId\":"), INVALID_REQUEST),
        ("an array", work.clone().json("[]"), INVALID_REQUEST),
        ("an array holding the body", work.clone().json(format!("[{}]", work_body(Value::Null))), INVALID_REQUEST),
        ("a string", work.clone().json(r#""x""#), INVALID_REQUEST),
        ("null", work.clone().json("null"), INVALID_REQUEST),
        ("tenantId a number", work.clone().json(json!({"tenantId": 5, "userId": oid}).to_string()), INVALID_REQUEST),
        ("tenantId null", work.clone().json(json!({"tenantId": null, "userId": oid}).to_string()), INVALID_REQUEST),
        ("userId an array", work.clone().json(json!({"tenantId": tenant, "userId": [oid]}).to_string()), INVALID_REQUEST),
        ("userId an object", work.clone().json(json!({"tenantId": tenant, "userId": {"id": oid}}).to_string()), INVALID_REQUEST),
        ("userId missing", work.clone().json(json!({"tenantId": tenant}).to_string()), INVALID_REQUEST),
        ("tenantId missing", work.clone().json(json!({"userId": oid}).to_string()), INVALID_REQUEST),
        ("tenantId not a GUID", work.clone().json(json!({"tenantId": "contoso.onmicrosoft.com", "userId": oid}).to_string()), INVALID_REQUEST),
        ("userId braced", work.clone().json(json!({"tenantId": tenant, "userId": format!("{{{oid}}}")}).to_string()), INVALID_REQUEST),
        ("userId as URN", work.clone().json(json!({"tenantId": tenant, "userId": format!("urn:uuid:{oid}")}).to_string()), INVALID_REQUEST),
        ("userId with SQL", work.clone().json(json!({"tenantId": tenant, "userId": "' OR '1'='1"}).to_string()), INVALID_REQUEST),
        ("userId with a NUL", work.clone().json(json!({"tenantId": tenant, "userId": format!("{}\u{0}", &oid[..35])}).to_string()), INVALID_REQUEST),
        ("tenantId of another tenant", work.clone().json(json!({"tenantId": OTHER_TENANT_GUID, "userId": oid}).to_string()), problem(403, "tenant_not_allowed")),
        ("a user who never connected", work.clone().json(json!({"tenantId": tenant, "userId": other_user}).to_string()), problem(404, "not_connected")),
        ("an unknown field", work.clone().json(json!({"tenantId": tenant, "userId": oid, "admin": true}).to_string()), INVALID_REQUEST),
        ("duplicate userId", work.clone().json(format!("{{\"tenantId\":\"{tenant}\",\"userId\":\"{other_user}\",\"userId\":\"{oid}\"}}")), INVALID_REQUEST),
        ("request a string", work.clone().json(work_body(json!("/me"))), INVALID_REQUEST),
        ("request an array", work.clone().json(work_body(json!([{"path": "/me"}]))), INVALID_REQUEST),
        ("request.method a number", work.clone().json(work_body(json!({"method": 5}))), INVALID_REQUEST),
        ("request.path a number", work.clone().json(work_body(json!({"path": 5}))), INVALID_REQUEST),
        ("request.path an array", work.clone().json(work_body(json!({"path": ["/me"]}))), INVALID_REQUEST),
        ("request.query an array", work.clone().json(work_body(json!({"query": ["a"]}))), INVALID_REQUEST),
        ("request.query value a number", work.clone().json(work_body(json!({"query": {"$top": 5}}))), INVALID_REQUEST),
        ("request.headers an array", work.clone().json(work_body(json!({"headers": ["Accept: */*"]}))), INVALID_REQUEST),
        ("request.headers value an array", work.clone().json(work_body(json!({"headers": {"Accept": ["a", "b"]}}))), INVALID_REQUEST),
        ("request unknown field", work.clone().json(work_body(json!({"url": "https://evil.example/"}))), INVALID_REQUEST),
        ("request.method TRACE", work.clone().json(work_body(json!({"method": "TRACE"}))), INVALID_REQUEST),
        ("request.method CONNECT", work.clone().json(work_body(json!({"method": "CONNECT"}))), INVALID_REQUEST),
        ("request.method empty", work.clone().json(work_body(json!({"method": ""}))), INVALID_REQUEST),
        ("request.method with CRLF", work.clone().json(work_body(json!({"method": "GET\r\nX: y"}))), INVALID_REQUEST),
        ("request.body with GET", work.clone().json(work_body(json!({"method": "GET", "path": "/echo", "body": {"a": 1}}))), INVALID_REQUEST),
        ("request.body with DELETE", work.clone().json(work_body(json!({"method": "DELETE", "path": "/echo", "body": "x"}))), INVALID_REQUEST),
        ("51 query entries", work.clone().json(work_body(json!({"query": many_query}))), INVALID_REQUEST),
        ("huge (300 KiB)", work.clone().json(huge), TOO_LARGE),
        ("10,000 [", work.clone().json(nested(10_000)), INVALID_REQUEST),
        ("10,000 [ in request.body", work.clone().json(format!("{{\"tenantId\":\"{tenant}\",\"userId\":\"{oid}\",\"request\":{{\"method\":\"POST\",\"path\":\"/echo\",\"body\":{}", nested(10_000))), INVALID_REQUEST),
        ("text/plain", work.clone().header("Content-Type", "text/plain").body(work_body(Value::Null)), UNSUPPORTED),
        ("no content type", work.clone().body(work_body(Value::Null)), UNSUPPORTED),
        ("multipart", work.clone().header("Content-Type", "multipart/form-data; boundary=x").body(work_body(Value::Null)), UNSUPPORTED),
        ("non-UTF-8", work.clone().json(b"{\"tenantId\":\"\xff\xfe\"}".as_slice()), INVALID_REQUEST),
        ("a byte-order mark", work.clone().json(format!("\u{feff}{}", work_body(Value::Null))), INVALID_REQUEST),
    ];
    for (name, req, expect) in work_bodies {
        t.both(format!("body: {name}"), req, expect);
    }

    // ---- do-work paths and request headers ----
    let long = format!("/me/{}", "a".repeat(5000));
    let paths: Vec<&str> = vec![
        "//evil.example/me",
        "//evil.example",
        "///evil.example/me",
        "/me//evil.example",
        "/me/../admin",
        "/me/..",
        "/..",
        "/me/./x",
        "/me/.",
        "/me/%2e%2e/admin",
        "/me/%2E%2E",
        "/me/.%2e/admin",
        "/me%2fadmin",
        "/me%2F..%2Fadmin",
        "/me/%252e%252e/admin",
        "/me/%00",
        "/me\\..\\admin",
        "\\\\evil.example\\me",
        "/me\\",
        "/me@evil.example",
        "@evil.example/me",
        "/me/x@evil.example",
        "https://evil.example/me",
        "http:/me",
        "//user:pass@evil.example/me",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "/me:443",
        "/me/\u{0}",
        "/me/\n",
        "/me/\r\nHost: evil.example",
        "/me\t",
        "/me x",
        " /me",
        "/mé",
        "/me/\u{202e}",
        "/me/\u{ff0f}..\u{ff0f}admin",
        "/me\u{3002}evil.example",
        "/me/\u{2024}\u{2024}/admin",
        "/me?$select=x",
        "/me#frag",
        "/me/x?",
        "me",
        "",
        "/",
        "/admin",
        "/meadmin",
        "/ME",
        "/echo/../me",
        "/me/../../v1.0/me",
        &long,
    ];
    for path in paths {
        let shown: String = path
            .chars()
            .take(40)
            .flat_map(char::escape_default)
            .collect();
        t.both(
            format!("path {shown}"),
            work.clone().json(work_body(json!({"path": path}))),
            PATH_NOT_ALLOWED,
        );
    }
    let headers: Vec<(&str, Value)> = vec![
        ("Authorization", json!("Bearer x")),
        ("Host", json!("evil.example")),
        ("X-Forwarded-Host", json!("evil.example")),
        ("Cookie", json!("a=b")),
        ("Content-Length", json!("5")),
        ("Transfer-Encoding", json!("chunked")),
        ("Accept", json!("a\r\nX-Injected: 1")),
        ("Accept", json!("a\u{0}b")),
        ("Accept", json!("x".repeat(2000))),
        ("Accept", json!("é")),
        ("bad name", json!("x")),
        ("", json!("x")),
        ("Accept\r\nX-Injected", json!("1")),
    ];
    for (name, value) in headers {
        let shown: String = name.chars().flat_map(char::escape_default).collect();
        t.both(
            format!("request header {shown}"),
            work.clone().json(work_body(
                json!({"path": "/echo", "headers": {name: value}}),
            )),
            INVALID_REQUEST,
        );
    }

    // ---- routing ----
    for (method, path) in [
        ("PUT", "/api/setup"),
        ("PATCH", "/api/setup"),
        ("GET", "/api/do-work"),
        ("DELETE", "/api/do-work"),
    ] {
        t.both(
            "method not allowed",
            Req::new(method, path).bearer(user_token),
            problem(405, "method_not_allowed"),
        );
    }
    for path in [
        "/api/setup/",
        "/api//setup",
        "/API/SETUP",
        "/api/do-work/x",
        "/api/refresh-tokens",
    ] {
        t.forwarded(
            "unknown route",
            Req::new("POST", path).bearer(user_token),
            problem(404, "not_found"),
        );
    }
}
