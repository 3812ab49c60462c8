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

mod credentials;
mod envelopes;
mod request;
mod requests;
mod tokens;
mod world;

use serde_json::{json, Value};

use crate::helpers::TestApp;
use request::{check, send, Expect, Table};
use tokens::Forge;
use world::{world, Db};

/// What every section of the table builds its requests from: the connected user and valid
/// tokens of both callers.
struct Context {
    tenant: String,
    oid: String,
    user_token: String,
    workload_token: String,
}

impl Context {
    /// A do-work body for the connected user, with `request` unless it is null.
    fn work_body(&self, request: Value) -> String {
        let mut body = json!({"tenantId": self.tenant, "userId": self.oid});
        if !request.is_null() {
            body["request"] = request;
        }
        body.to_string()
    }
}

/// Every case of the suite.
fn table(app: &TestApp, oid: &str) -> Table {
    let mut t = Table { cases: Vec::new() };
    let forge = Forge {
        app,
        oid: oid.to_owned(),
    };
    let cx = Context {
        tenant: app.tenant(),
        oid: oid.to_owned(),
        user_token: app.user_token(oid),
        workload_token: app.workload_token(),
    };
    credentials::add(&mut t, &cx, &forge);
    requests::add(&mut t, &cx);
    envelopes::add(&mut t, &cx);
    t
}

async fn hostile_input_is_refused_and_changes_nothing(app: TestApp) {
    let oid = app.connected_user().await;
    let db = Db::open(&app).await;
    let table = table(&app, &oid);
    let total = table.cases.len();
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    // A connection per request: hyper answers some malformed requests and closes, and a
    // pooled connection reused by the next request would race that close and fail on the
    // client's side (`IncompleteMessage`) before the service saw anything.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for case in &table.cases {
        let before = world(&app, &db).await;
        let verdict = match (send(&app, &client, &case.send).await, case.expect) {
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
    // The connected user is intact and still works after all of it (on a new connection, as
    // the app's own client may hold one the last case left closing).
    let body = app.do_work_json(&oid, Value::Null);
    let status =
        crate::helpers::do_work_request(&client, &app.address, &app.workload_token(), &body)
            .send()
            .await
            .unwrap()
            .status();
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
