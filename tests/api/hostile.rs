//! Hostile input: one table-driven suite over every endpoint and both invocation modes.
//!
//! Every case is a request an attacker or a broken client could send: bad credentials, every
//! kind of forged or unfit JWT, bad bodies, do-work paths that try to leave the downstream API,
//! and malformed host envelopes. Each one must be answered quickly (5 s per request) with a 4xx
//! `application/problem+json` carrying the expected `error` code, and must change nothing: the
//! database rows, Entra's grant counters, Key Vault's writes and the downstream API's request
//! counter are compared before and after every case.
//!
//! Most cases run twice: forwarded (`/api/...`, as the host sends with
//! `enableForwardingHttpRequest`) and as a JSON invocation (`POST /setup|/do-work` with
//! `Data.req`), whose answer is read from `Outputs.res`. Two limits belong to the HTTP server
//! (hyper), not to us, and answer a bare `431` without our body: a header section over about
//! 400 KiB and more than 100 headers. The timer cannot refuse anything (the host contract is
//! `200` with `Logs`), so odd timer envelopes must get that contract and cause no work.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use emulators::{AppTokenSpec, SignWith, TokenVersion, UserTokenSpec};
use serde_json::{json, Value};

use crate::helpers::{new_user, Backend, TestApp};

const CASE_TIMEOUT: Duration = Duration::from_secs(5);
const WORKLOAD_APP: &str = "7e57c0de-0000-4000-8000-00000000a11e";
const OTHER_TENANT: &str = "0ther000-0000-4000-8000-000000000000";
const OTHER_TENANT_GUID: &str = "0f0f0f0f-0000-4000-8000-000000000000";

/// One logical HTTP request to the API, sent forwarded or inside a JSON invocation.
#[derive(Clone)]
struct Req {
    method: &'static str,
    path: &'static str,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    fn new(method: &'static str, path: &'static str) -> Self {
        Self {
            method,
            path,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    fn bearer(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    fn json(self, body: impl AsRef<[u8]>) -> Self {
        self.header("Content-Type", "application/json").body(body)
    }

    fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// The `Data.req` of a JSON invocation of this request, as the host builds it.
    fn envelope(&self) -> Value {
        let mut headers = serde_json::Map::new();
        for (name, value) in &self.headers {
            let entry = headers.entry(name.clone()).or_insert_with(|| json!([]));
            entry
                .as_array_mut()
                .unwrap()
                .push(Value::String(String::from_utf8_lossy(value).into_owned()));
        }
        let mut req = json!({
            "Url": format!("https://obo.example{}", self.path),
            "Method": self.method,
            "Query": {},
            "Headers": headers,
            "Params": {},
            "Identities": [],
        });
        if !self.body.is_empty() {
            req["Body"] = Value::String(String::from_utf8_lossy(&self.body).into_owned());
        }
        json!({ "Data": { "req": req }, "Metadata": { "sys": { "MethodName": self.function() } } })
    }

    fn function(&self) -> &'static str {
        self.path.trim_start_matches("/api/")
    }
}

/// How a case reaches the service.
enum Send {
    /// A forwarded request (`/api/...`).
    Forwarded(Req),
    /// The same request as a JSON invocation; the answer is `Outputs.res` when the envelope is
    /// accepted.
    Invocation(Req),
    /// Exactly these bytes, to any path (malformed envelopes, the timer, routing).
    Raw {
        method: &'static str,
        path: &'static str,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
}

/// What a case must get.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A problem answer with this status and `error` code.
    Problem(u16, &'static str),
    /// hyper's own refusal before the request reaches the app: just the status (or a reset
    /// connection when hyper closes while the request is still being sent).
    Bare(u16),
    /// The timer's host contract, with a run that found nothing to do.
    TimerContract,
}

struct Case {
    name: String,
    send: Send,
    expect: Expect,
}

/// What the service answered, unwrapped from `Outputs.res` for accepted invocations.
struct Outcome {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// Builds the table.
struct Table {
    cases: Vec<Case>,
}

impl Table {
    /// The request forwarded and as a JSON invocation, both expecting `expect`.
    fn both(&mut self, name: impl Into<String>, req: Req, expect: Expect) {
        self.modes(name, req, expect, expect);
    }

    fn modes(&mut self, name: impl Into<String>, req: Req, forwarded: Expect, invocation: Expect) {
        let name = name.into();
        self.cases.push(Case {
            name: format!("forwarded {} {}: {name}", req.method, req.path),
            send: Send::Forwarded(req.clone()),
            expect: forwarded,
        });
        self.cases.push(Case {
            name: format!("invocation {} {}: {name}", req.method, req.path),
            send: Send::Invocation(req),
            expect: invocation,
        });
    }

    fn forwarded(&mut self, name: impl Into<String>, req: Req, expect: Expect) {
        let name = name.into();
        self.cases.push(Case {
            name: format!("forwarded {} {}: {name}", req.method, req.path),
            send: Send::Forwarded(req),
            expect,
        });
    }

    fn raw(
        &mut self,
        name: impl Into<String>,
        method: &'static str,
        path: &'static str,
        headers: &[(&str, &str)],
        body: impl AsRef<[u8]>,
        expect: Expect,
    ) {
        let name = name.into();
        self.cases.push(Case {
            name: format!("raw {method} {path}: {name}"),
            send: Send::Raw {
                method,
                path,
                headers: headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                    .collect(),
                body: body.as_ref().to_vec(),
            },
            expect,
        });
    }
}

const fn problem(status: u16, code: &'static str) -> Expect {
    Expect::Problem(status, code)
}

const INVALID_TOKEN: Expect = problem(401, "invalid_token");
const INVALID_REQUEST: Expect = problem(400, "invalid_request");
const PATH_NOT_ALLOWED: Expect = problem(400, "path_not_allowed");
const TOO_LARGE: Expect = problem(413, "payload_too_large");
const UNSUPPORTED: Expect = problem(415, "unsupported_media_type");

/// Which caller an endpoint wants: a user (setup) or a workload (do-work).
#[derive(Clone, Copy, PartialEq)]
enum Caller {
    User,
    Workload,
}

/// Mints tokens with exactly one defect.
struct Forge<'a> {
    app: &'a TestApp,
    oid: String,
}

impl Forge<'_> {
    /// A valid token of the caller kind, as (header, claims).
    fn valid_parts(&self, caller: Caller) -> (Value, Value) {
        let token = match caller {
            Caller::User => self.app.user_token(&self.oid),
            Caller::Workload => self.app.workload_token(),
        };
        let mut parts = token.split('.');
        let header = decode(parts.next().unwrap());
        let claims = decode(parts.next().unwrap());
        (header, claims)
    }

    /// The valid token re-signed after `edit` changed its claims.
    fn claims(&self, caller: Caller, edit: impl FnOnce(&mut Value)) -> String {
        let (_, mut claims) = self.valid_parts(caller);
        edit(&mut claims);
        self.app
            .stack
            .entra
            .sign_raw(json!({}), claims, SignWith::Current)
    }

    /// The valid claims signed with `with` under `header`.
    fn signed(&self, caller: Caller, header: Value, with: SignWith) -> String {
        let (_, claims) = self.valid_parts(caller);
        self.app.stack.entra.sign_raw(header, claims, with)
    }

    /// A valid token with its header replaced (the signature no longer matters).
    fn with_header(&self, caller: Caller, header: Value) -> String {
        let token = self.signed(caller, json!({}), SignWith::Current);
        let rest = token.split_once('.').unwrap().1;
        format!("{}.{rest}", encode(&header))
    }

    /// Every defective token for `caller`, with the answer it must get.
    fn bad_tokens(&self, caller: Caller) -> Vec<(String, String, Expect)> {
        let app = self.app;
        let tenant = app.tenant();
        let now = chrono::Utc::now().timestamp();
        let kid = app.stack.entra.current_kid();
        let mut out: Vec<(String, String, Expect)> = Vec::new();
        let mut add = |name: &str, token: String, expect: Expect| {
            out.push((name.to_owned(), token, expect));
        };
        add(
            "alg none",
            self.signed(caller, json!({"kid": kid}), SignWith::NoneAlg),
            INVALID_TOKEN,
        );
        add(
            "HS256 keyed with the public key",
            self.signed(caller, json!({}), SignWith::Hs256WithPublicKey),
            INVALID_TOKEN,
        );
        add(
            "foreign key under the current kid",
            self.signed(caller, json!({}), SignWith::Foreign),
            INVALID_TOKEN,
        );
        add(
            "missing kid",
            self.with_header(caller, json!({"alg": "RS256", "typ": "JWT"})),
            INVALID_TOKEN,
        );
        add(
            "unknown kid",
            self.signed(caller, json!({"kid": "no-such-key"}), SignWith::Current),
            INVALID_TOKEN,
        );
        add(
            "kid not a string",
            self.with_header(caller, json!({"alg": "RS256", "kid": 5})),
            INVALID_TOKEN,
        );
        add(
            "crit header",
            self.signed(caller, json!({"crit": ["exp"]}), SignWith::Current),
            INVALID_TOKEN,
        );
        add(
            "alg RS512 with the current key id",
            self.with_header(caller, json!({"alg": "RS512", "kid": kid})),
            INVALID_TOKEN,
        );
        add(
            "signature stripped",
            {
                let token = self.signed(caller, json!({}), SignWith::Current);
                format!("{}.", token.rsplit_once('.').unwrap().0)
            },
            INVALID_TOKEN,
        );
        add(
            "payload swapped under a valid signature",
            {
                let token = self.signed(caller, json!({}), SignWith::Current);
                let other = self.claims(caller, |c| c["oid"] = json!(new_user()));
                let parts: Vec<&str> = token.split('.').collect();
                let other_payload = other.split('.').nth(1).unwrap();
                format!("{}.{}.{}", parts[0], other_payload, parts[2])
            },
            INVALID_TOKEN,
        );
        add(
            "wrong aud",
            self.claims(caller, |c| {
                c["aud"] = json!("00000003-0000-0000-c000-000000000000")
            }),
            INVALID_TOKEN,
        );
        add(
            "aud missing",
            self.claims(caller, |c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            INVALID_TOKEN,
        );
        add(
            "aud as an array with a foreign app",
            self.claims(caller, |c| c["aud"] = json!(["api://someone-else"])),
            INVALID_TOKEN,
        );
        add(
            "wrong iss",
            self.claims(caller, |c| {
                c["iss"] = json!("https://login.evil.example/x/v2.0")
            }),
            INVALID_TOKEN,
        );
        add(
            "iss of another tenant",
            self.claims(caller, |c| {
                c["iss"] = json!(format!("https://sts.windows.net/{OTHER_TENANT_GUID}/"))
            }),
            INVALID_TOKEN,
        );
        add(
            "iss missing",
            self.claims(caller, |c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            INVALID_TOKEN,
        );
        add(
            "tid of another tenant",
            self.claims(caller, |c| c["tid"] = json!(OTHER_TENANT_GUID)),
            problem(403, "tenant_not_allowed"),
        );
        add(
            "tid not a GUID",
            self.claims(caller, |c| c["tid"] = json!(OTHER_TENANT)),
            INVALID_TOKEN,
        );
        add(
            "tid common",
            self.claims(caller, |c| c["tid"] = json!("common")),
            INVALID_TOKEN,
        );
        add(
            "tid missing",
            self.claims(caller, |c| {
                c.as_object_mut().unwrap().remove("tid");
            }),
            INVALID_TOKEN,
        );
        add(
            "tid a number",
            self.claims(caller, |c| c["tid"] = json!(5)),
            INVALID_TOKEN,
        );
        add(
            "tid braced GUID",
            self.claims(caller, |c| c["tid"] = json!(format!("{{{tenant}}}"))),
            INVALID_TOKEN,
        );
        add(
            "expired",
            self.claims(caller, |c| {
                c["exp"] = json!(now - 3600);
                c["nbf"] = json!(now - 7200);
                c["iat"] = json!(now - 7200);
            }),
            INVALID_TOKEN,
        );
        add(
            "not yet valid",
            self.claims(caller, |c| c["nbf"] = json!(now + 3600)),
            INVALID_TOKEN,
        );
        add(
            "exp missing",
            self.claims(caller, |c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            INVALID_TOKEN,
        );
        add(
            "exp a string",
            self.claims(caller, |c| c["exp"] = json!("tomorrow")),
            INVALID_TOKEN,
        );
        add(
            "exp beyond i64",
            self.claims(caller, |c| c["exp"] = json!(1e300)),
            INVALID_TOKEN,
        );
        add(
            "oversized (> 16 KiB, validly signed)",
            self.claims(caller, |c| c["pad"] = json!("x".repeat(17 * 1024))),
            INVALID_TOKEN,
        );
        add("garbage base64", "!!!.@@@.###".into(), INVALID_TOKEN);
        add("three dots", "a.b.c.d".into(), INVALID_TOKEN);
        add("only dots", "...".into(), INVALID_TOKEN);
        add("one part", "eyJhbGciOiJSUzI1NiJ9".into(), INVALID_TOKEN);
        add(
            "header not JSON",
            format!(
                "{}.{}.sig",
                URL_SAFE_NO_PAD.encode("hello"),
                encode(&json!({}))
            ),
            INVALID_TOKEN,
        );
        add(
            "padded base64 parts",
            {
                let token = self.signed(caller, json!({}), SignWith::Current);
                token.replace('.', "==.")
            },
            INVALID_TOKEN,
        );
        match caller {
            Caller::User => {
                add(
                    "an app token at setup",
                    app.workload_token(),
                    problem(403, "insufficient_scope"),
                );
                add(
                    "a user token without the scope",
                    {
                        let mut spec = UserTokenSpec::new(&tenant, &self.oid);
                        spec.scp = "User.Read".into();
                        app.stack.entra.mint_user_token(&spec)
                    },
                    problem(403, "insufficient_scope"),
                );
                add(
                    "scope only as a prefix",
                    {
                        let mut spec = UserTokenSpec::new(&tenant, &self.oid);
                        spec.scp = "access_as_user_x".into();
                        app.stack.entra.mint_user_token(&spec)
                    },
                    problem(403, "insufficient_scope"),
                );
                add(
                    "an app token carrying the scope",
                    self.claims(Caller::Workload, |c| {
                        c["scp"] = json!("access_as_user");
                        c["idtyp"] = json!("app");
                    }),
                    problem(403, "insufficient_scope"),
                );
                add(
                    "v1 user token with a v2 audience for another app",
                    {
                        let mut spec = UserTokenSpec::new(&tenant, &self.oid);
                        spec.version = TokenVersion::V1;
                        spec.aud = Some("api://another-app".into());
                        app.stack.entra.mint_user_token(&spec)
                    },
                    INVALID_TOKEN,
                );
                add(
                    "oid not a GUID",
                    self.claims(caller, |c| c["oid"] = json!("admin")),
                    INVALID_TOKEN,
                );
            }
            Caller::Workload => {
                add(
                    "a user token at do-work",
                    app.user_token(&self.oid),
                    problem(403, "insufficient_role"),
                );
                add(
                    "a user token carrying the role",
                    self.claims(Caller::User, |c| c["roles"] = json!(["OboVault.Act"])),
                    problem(403, "insufficient_role"),
                );
                add(
                    "an app token without roles",
                    app.stack.entra.mint_app_token(&AppTokenSpec::new(
                        &tenant,
                        WORKLOAD_APP,
                        vec![],
                    )),
                    problem(403, "insufficient_role"),
                );
                add(
                    "an app token with another role",
                    app.stack.entra.mint_app_token(&AppTokenSpec::new(
                        &tenant,
                        WORKLOAD_APP,
                        vec!["OboVault.Read".into(), "obovault.act".into()],
                    )),
                    problem(403, "insufficient_role"),
                );
                add(
                    "roles as a string",
                    self.claims(caller, |c| c["roles"] = json!("OboVault.Act")),
                    INVALID_TOKEN,
                );
                add(
                    "an expired v1 app token",
                    {
                        let mut spec =
                            AppTokenSpec::new(&tenant, WORKLOAD_APP, vec!["OboVault.Act".into()]);
                        spec.version = TokenVersion::V1;
                        spec.lifetime_secs = -3600;
                        app.stack.entra.mint_app_token(&spec)
                    },
                    INVALID_TOKEN,
                );
            }
        }
        out
    }
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn nested(depth: usize) -> String {
    "[".repeat(depth)
}

/// Every case of the suite.
fn table(app: &TestApp, oid: &str) -> Table {
    let mut t = Table { cases: Vec::new() };
    let forge = Forge {
        app,
        oid: oid.to_owned(),
    };
    let tenant = app.tenant();
    let user_token = app.user_token(oid);
    let workload_token = app.workload_token();
    let work_body = |request: Value| {
        let mut body = json!({"tenantId": tenant, "userId": oid});
        if !request.is_null() {
            body["request"] = request;
        }
        body.to_string()
    };
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

    // ---- setup bodies (valid user token) ----
    let setup = Req::new("POST", "/api/setup").bearer(&user_token);
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
    let work = Req::new("POST", "/api/do-work").bearer(&workload_token);
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
            Req::new(method, path).bearer(&user_token),
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
            Req::new("POST", path).bearer(&user_token),
            problem(404, "not_found"),
        );
    }

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
    t
}

/// Everything a hostile request must not change.
#[derive(Debug, PartialEq)]
struct World {
    rows: String,
    obo_grants: u64,
    refresh_grants: u64,
    failed_grants: u64,
    client_credentials_grants: u64,
    key_vault_sets: u64,
    downstream_requests: u64,
}

enum Db {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl Db {
    async fn open(app: &TestApp) -> Self {
        match app.backend {
            Backend::Postgres => {
                Self::Postgres(sqlx::PgPool::connect(&app.database.url).await.unwrap())
            }
            Backend::Sqlite => {
                Self::Sqlite(sqlx::SqlitePool::connect(&app.database.url).await.unwrap())
            }
        }
    }

    /// Every column of every row of both tables, as text.
    async fn dump(&self) -> String {
        let mut out = String::new();
        for table in ["user_tokens", "user_token_accesses"] {
            let text: String = match self {
                Self::Postgres(pool) => sqlx::query_scalar(&format!(
                    "SELECT COALESCE(string_agg(t::text, '|' ORDER BY t::text), '') FROM {table} t"
                ))
                .fetch_one(pool)
                .await
                .unwrap(),
                Self::Sqlite(pool) => {
                    let columns: Vec<String> = sqlx::query_scalar(&format!(
                        "SELECT name FROM pragma_table_info('{table}')"
                    ))
                    .fetch_all(pool)
                    .await
                    .unwrap();
                    let row = columns
                        .iter()
                        .map(|c| format!("quote({c})"))
                        .collect::<Vec<_>>()
                        .join(" || ',' || ");
                    sqlx::query_scalar(&format!(
                        "SELECT COALESCE(group_concat(r, '|'), '') FROM (SELECT {row} AS r FROM {table} ORDER BY r)"
                    ))
                    .fetch_one(pool)
                    .await
                    .unwrap()
                }
            };
            out.push_str(table);
            out.push(':');
            out.push_str(&text);
            out.push('\n');
        }
        out
    }
}

async fn world(app: &TestApp, db: &Db) -> World {
    let entra = app.stack.entra.stats();
    World {
        rows: db.dump().await,
        obo_grants: entra.obo_grants,
        refresh_grants: entra.refresh_grants,
        failed_grants: entra.failed_grants,
        client_credentials_grants: entra.client_credentials_grants,
        key_vault_sets: app.stack.key_vault.stats().set,
        downstream_requests: app.stack.downstream.stats().requests,
    }
}

async fn send(app: &TestApp, send: &Send) -> Result<Outcome, String> {
    let (method, path, headers, body, invocation) = match send {
        Send::Forwarded(req) => (
            req.method,
            req.path.to_owned(),
            req.headers.clone(),
            req.body.clone(),
            false,
        ),
        Send::Invocation(req) => (
            "POST",
            format!("/{}", req.function()),
            vec![("Content-Type".to_owned(), b"application/json".to_vec())],
            req.envelope().to_string().into_bytes(),
            true,
        ),
        Send::Raw {
            method,
            path,
            headers,
            body,
        } => (
            *method,
            (*path).to_owned(),
            headers.clone(),
            body.clone(),
            matches!(*path, "/setup" | "/do-work"),
        ),
    };
    let mut request = app.client.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{path}", app.address),
    );
    for (name, value) in headers {
        let value = reqwest::header::HeaderValue::from_bytes(&value)
            .map_err(|e| format!("the test built an unsendable header: {e}"))?;
        request = request.header(name, value);
    }
    let exchange = async {
        let response = request.body(body).send().await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response.bytes().await?.to_vec();
        Ok::<_, reqwest::Error>((status, content_type, body))
    };
    let (status, content_type, body) = tokio::time::timeout(CASE_TIMEOUT, exchange)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| format!("transport error: {e}"))?;
    if !invocation || status != 200 {
        return Ok(Outcome {
            status,
            content_type,
            body,
        });
    }
    let answer: Value = serde_json::from_slice(&body).map_err(|_| {
        format!(
            "an invocation answer that is not JSON: {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    let res = &answer["Outputs"]["res"];
    Ok(Outcome {
        status: res["statusCode"]
            .as_u64()
            .ok_or_else(|| format!("no Outputs.res.statusCode in {answer}"))?
            as u16,
        content_type: res["headers"]["content-type"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        body: res["body"].as_str().unwrap_or("").as_bytes().to_vec(),
    })
}

fn check(expect: Expect, outcome: &Outcome) -> Result<(), String> {
    let text = String::from_utf8_lossy(&outcome.body);
    let shown: String = text.chars().take(300).collect();
    let got = format!("{} {} {shown}", outcome.status, outcome.content_type);
    match expect {
        Expect::Bare(status) => (outcome.status == status)
            .then_some(())
            .ok_or_else(|| format!("expected a bare {status}, got {got}")),
        Expect::Problem(status, code) => {
            let body: Value = serde_json::from_slice(&outcome.body).unwrap_or(Value::Null);
            let ok = outcome.status == status
                && outcome.content_type == "application/problem+json"
                && body["error"] == code
                && body["status"] == status
                && body["detail"].as_str().is_some_and(|d| !d.is_empty());
            ok.then_some(())
                .ok_or_else(|| format!("expected {status} {code}, got {got}"))
        }
        Expect::TimerContract => {
            let body: Value = serde_json::from_slice(&outcome.body).unwrap_or(Value::Null);
            let line = body["Logs"][0].as_str().unwrap_or("");
            let ok = outcome.status == 200
                && outcome.content_type.starts_with("application/json")
                && body["Outputs"] == json!({})
                && line.starts_with("refresh-tokens: examined=0 refreshed=0 resealed=0 reauth_required=0 failed=0 skipped=0");
            ok.then_some(())
                .ok_or_else(|| format!("expected the timer contract with no work, got {got}"))
        }
    }
}

async fn hostile_input_is_refused_and_changes_nothing(app: TestApp) {
    let oid = app.connected_user().await;
    let db = Db::open(&app).await;
    let table = table(&app, &oid);
    let total = table.cases.len();
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    for case in &table.cases {
        let before = world(&app, &db).await;
        let verdict = match (send(&app, &case.send).await, case.expect) {
            // hyper answers 431 and closes; with request bytes still unread the close can be a
            // reset that loses the 431 on the way. Either way the app never saw the request.
            (Err(why), Expect::Bare(_)) if why.starts_with("transport error") => Ok(()),
            (outcome, expect) => outcome.and_then(|outcome| check(expect, &outcome)),
        };
        let after = world(&app, &db).await;
        if let Err(why) = verdict {
            failures.push(format!("{}: {why}", case.name));
        }
        if before != after {
            failures.push(format!(
                "{}: it changed something:\n before {before:?}\n after  {after:?}",
                case.name
            ));
        }
    }
    // The connected user is intact and still works after all of it.
    let status = app.do_work(&oid, Value::Null).await.status();
    if status != 200 {
        failures.push(format!(
            "the connected user no longer works afterwards: {status}"
        ));
    }
    eprintln!(
        "hostile input ({:?}): {total} cases, {} failures, {:.1} s",
        app.backend,
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} hostile cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

crate::on_both_backends!(hostile_input_is_refused_and_changes_nothing);
