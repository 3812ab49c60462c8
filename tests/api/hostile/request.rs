//! The table's vocabulary (a request, how it is sent, what it must get) and the sending and
//! checking of one case.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::TestApp;

pub(super) const CASE_TIMEOUT: Duration = Duration::from_secs(5);

/// One logical HTTP request to the API, sent forwarded or inside a JSON invocation.
#[derive(Clone)]
pub(super) struct Req {
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    pub(super) headers: Vec<(String, Vec<u8>)>,
    pub(super) body: Vec<u8>,
}

impl Req {
    pub(super) fn new(method: &'static str, path: &'static str) -> Self {
        Self {
            method,
            path,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(super) fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    pub(super) fn bearer(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    pub(super) fn json(self, body: impl AsRef<[u8]>) -> Self {
        self.header("Content-Type", "application/json").body(body)
    }

    pub(super) fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// The `Data.req` of a JSON invocation of this request, as the host builds it.
    pub(super) fn envelope(&self) -> Value {
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

    pub(super) fn function(&self) -> &'static str {
        self.path.trim_start_matches("/api/")
    }
}

/// How a case reaches the service.
pub(super) enum Send {
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
pub(super) enum Expect {
    /// A problem answer with this status and `error` code.
    Problem(u16, &'static str),
    /// hyper's own refusal before the request reaches the app: just the status (or a reset
    /// connection when hyper closes while the request is still being sent).
    Bare(u16),
    /// The timer's host contract, with a run that found nothing to do.
    TimerContract,
}

pub(super) struct Case {
    pub(super) name: String,
    pub(super) send: Send,
    pub(super) expect: Expect,
}

/// What the service answered, unwrapped from `Outputs.res` for accepted invocations.
pub(super) struct Outcome {
    pub(super) status: u16,
    pub(super) content_type: String,
    pub(super) body: Vec<u8>,
}

/// Builds the table.
pub(super) struct Table {
    pub(super) cases: Vec<Case>,
}

impl Table {
    /// The request forwarded and as a JSON invocation, both expecting `expect`.
    pub(super) fn both(&mut self, name: impl Into<String>, req: Req, expect: Expect) {
        self.modes(name, req, expect, expect);
    }

    pub(super) fn modes(
        &mut self,
        name: impl Into<String>,
        req: Req,
        forwarded: Expect,
        invocation: Expect,
    ) {
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

    pub(super) fn forwarded(&mut self, name: impl Into<String>, req: Req, expect: Expect) {
        let name = name.into();
        self.cases.push(Case {
            name: format!("forwarded {} {}: {name}", req.method, req.path),
            send: Send::Forwarded(req),
            expect,
        });
    }

    pub(super) fn raw(
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

pub(super) const fn problem(status: u16, code: &'static str) -> Expect {
    Expect::Problem(status, code)
}

pub(super) const INVALID_TOKEN: Expect = problem(401, "invalid_token");
pub(super) const INVALID_REQUEST: Expect = problem(400, "invalid_request");
pub(super) const PATH_NOT_ALLOWED: Expect = problem(400, "path_not_allowed");
pub(super) const TOO_LARGE: Expect = problem(413, "payload_too_large");
pub(super) const UNSUPPORTED: Expect = problem(415, "unsupported_media_type");

pub(super) async fn send(
    app: &TestApp,
    client: &reqwest::Client,
    send: &Send,
) -> Result<Outcome, String> {
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
    let mut request = client.request(
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

pub(super) fn check(expect: Expect, outcome: &Outcome) -> Result<(), String> {
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

/// `depth` opening brackets: JSON nested deeper than any parser should follow.
pub(super) fn nested(depth: usize) -> String {
    "[".repeat(depth)
}
