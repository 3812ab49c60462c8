//! Tokens with exactly one defect, for each kind of caller.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use emulators::{AppTokenSpec, SignWith, TokenVersion, UserTokenSpec};
use serde_json::{json, Value};

use super::request::*;
use crate::helpers::{new_user, TestApp};

pub(super) const WORKLOAD_APP: &str = "7e57c0de-0000-4000-8000-00000000a11e";
pub(super) const OTHER_TENANT: &str = "0ther000-0000-4000-8000-000000000000";
pub(super) const OTHER_TENANT_GUID: &str = "0f0f0f0f-0000-4000-8000-000000000000";

/// Which caller an endpoint wants: a user (setup) or a workload (do-work).
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Caller {
    User,
    Workload,
}

/// Mints tokens with exactly one defect.
pub(super) struct Forge<'a> {
    pub(super) app: &'a TestApp,
    pub(super) oid: String,
}

impl Forge<'_> {
    /// A valid token of the caller kind, as (header, claims).
    pub(super) fn valid_parts(&self, caller: Caller) -> (Value, Value) {
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
    pub(super) fn claims(&self, caller: Caller, edit: impl FnOnce(&mut Value)) -> String {
        let (_, mut claims) = self.valid_parts(caller);
        edit(&mut claims);
        self.app
            .stack
            .entra
            .sign_raw(json!({}), claims, SignWith::Current)
    }

    /// The valid claims signed with `with` under `header`.
    pub(super) fn signed(&self, caller: Caller, header: Value, with: SignWith) -> String {
        let (_, claims) = self.valid_parts(caller);
        self.app.stack.entra.sign_raw(header, claims, with)
    }

    /// A valid token with its header replaced (the signature no longer matters).
    pub(super) fn with_header(&self, caller: Caller, header: Value) -> String {
        let token = self.signed(caller, json!({}), SignWith::Current);
        let rest = token.split_once('.').unwrap().1;
        format!("{}.{rest}", encode(&header))
    }

    /// Every defective token for `caller`, with the answer it must get.
    pub(super) fn bad_tokens(&self, caller: Caller) -> Vec<(String, String, Expect)> {
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

pub(super) fn decode(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

pub(super) fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}
