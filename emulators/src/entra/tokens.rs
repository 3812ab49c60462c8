//! What goes into the tokens the Entra emulator mints: user and app access tokens for tests,
//! and the access/id tokens its token endpoint issues.
//!
//! Claim sets follow the v1/v2 tables of Entra's access-token and id-token references. `sub` is
//! pairwise (derived from `oid` and the audience) so that code keying users on `sub` instead of
//! (`tid`, `oid`) shows up in tests.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use rand::RngCore as _;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

/// Lifetime of every token the emulator issues, in seconds (Entra's `expires_in` is one less).
pub(crate) const TOKEN_LIFETIME_SECS: i64 = 3600;

/// Client application (`azp` / `appid`) that user tokens minted for tests were requested by:
/// a made-up single-page app in front of obo-vault.
pub const TEST_CLIENT_APP_ID: &str = "2f5a1f4e-9c3b-4b8e-a6d4-1e7c0b9d3a21";

/// Access-token format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenVersion {
    /// v1.0: `iss` `https://sts.windows.net/{tid}/`, `ver` "1.0", `appid`, `x5t` header.
    V1,
    /// v2.0: `iss` `{authority}/{tid}/v2.0`, `ver` "2.0", `azp`.
    #[default]
    V2,
}

/// What [`crate::EntraEmulator::mint_user_token`] puts in a delegated (user) access token.
#[derive(Debug, Clone, PartialEq)]
pub struct UserTokenSpec {
    /// Tenant id (`tid`); also part of `iss`.
    pub tid: String,
    /// The user's object id (`oid`).
    pub oid: String,
    /// Delegated scopes (`scp`), space separated. Default `access_as_user`.
    pub scp: String,
    /// Audience; `None` means the emulated app's client id.
    pub aud: Option<String>,
    /// Token format. Default v2.
    pub version: TokenVersion,
    /// Seconds from now to `exp`. Default 3600; negative makes an already expired token.
    pub lifetime_secs: i64,
    /// Seconds from now to `nbf` (positive = not yet valid). Default 0.
    pub not_before_offset_secs: i64,
    /// Claims added last, overriding the generated ones (e.g. `"iss"`, `"idtyp"`).
    pub extra_claims: Map<String, Value>,
}

impl UserTokenSpec {
    /// A valid v2 token for `access_as_user` of the emulated app, for one hour.
    pub fn new(tid: impl Into<String>, oid: impl Into<String>) -> Self {
        Self {
            tid: tid.into(),
            oid: oid.into(),
            scp: "access_as_user".to_owned(),
            aud: None,
            version: TokenVersion::V2,
            lifetime_secs: TOKEN_LIFETIME_SECS,
            not_before_offset_secs: 0,
            extra_claims: Map::new(),
        }
    }
}

/// What [`crate::EntraEmulator::mint_app_token`] puts in an app-only access token (the
/// client-credentials token of a workload).
#[derive(Debug, Clone, PartialEq)]
pub struct AppTokenSpec {
    /// Tenant id (`tid`).
    pub tid: String,
    /// The calling application's client id (`azp` / `appid`).
    pub app_id: String,
    /// App roles granted to the caller (`roles`; omitted when empty).
    pub roles: Vec<String>,
    /// Audience; `None` means the emulated app's client id.
    pub aud: Option<String>,
    /// Token format. Default v2.
    pub version: TokenVersion,
    /// Seconds from now to `exp`. Default 3600; negative makes an already expired token.
    pub lifetime_secs: i64,
    /// Claims added last, overriding the generated ones.
    pub extra_claims: Map<String, Value>,
}

impl AppTokenSpec {
    /// A valid v2 app-only token for the emulated app, for one hour.
    pub fn new(tid: impl Into<String>, app_id: impl Into<String>, roles: Vec<String>) -> Self {
        Self {
            tid: tid.into(),
            app_id: app_id.into(),
            roles,
            aud: None,
            version: TokenVersion::V2,
            lifetime_secs: TOKEN_LIFETIME_SECS,
            extra_claims: Map::new(),
        }
    }
}

/// The fixed facts every claim set needs.
pub(crate) struct Issuer<'a> {
    /// `https://127.0.0.1:{port}`.
    pub(crate) host: &'a str,
    /// The emulated app's client id.
    pub(crate) client_id: &'a str,
    /// Unix seconds.
    pub(crate) now: i64,
}

impl Issuer<'_> {
    /// The v2 issuer for a tenant.
    pub(crate) fn v2_issuer(&self, tid: &str) -> String {
        v2_issuer(self.host, tid)
    }

    /// A user access token's claims.
    pub(crate) fn user_claims(&self, spec: &UserTokenSpec) -> Value {
        let aud = spec
            .aud
            .clone()
            .unwrap_or_else(|| self.client_id.to_owned());
        let mut fields = into_fields(json!({
            "aud": aud,
            "iat": self.now,
            "nbf": self.now + spec.not_before_offset_secs,
            "exp": self.now + spec.lifetime_secs,
            "name": display_name(&spec.oid),
            "oid": spec.oid,
            "scp": spec.scp,
            "sub": pairwise_sub(&spec.oid, &aud),
            "tid": spec.tid,
            "uti": unique_token_id(),
        }));
        match spec.version {
            TokenVersion::V2 => {
                fields.insert("iss".into(), self.v2_issuer(&spec.tid).into());
                fields.insert("ver".into(), "2.0".into());
                fields.insert("azp".into(), TEST_CLIENT_APP_ID.into());
                fields.insert("azpacr".into(), "0".into());
            }
            TokenVersion::V1 => {
                fields.insert("iss".into(), v1_issuer(&spec.tid).into());
                fields.insert("ver".into(), "1.0".into());
                fields.insert("appid".into(), TEST_CLIENT_APP_ID.into());
                fields.insert("appidacr".into(), "0".into());
            }
        }
        merge(&mut fields, &spec.extra_claims);
        Value::Object(fields)
    }

    /// An app-only access token's claims.
    pub(crate) fn app_claims(&self, spec: &AppTokenSpec) -> Value {
        let aud = spec
            .aud
            .clone()
            .unwrap_or_else(|| self.client_id.to_owned());
        let principal = service_principal_id(&spec.app_id);
        let mut fields = into_fields(json!({
            "aud": aud,
            "iat": self.now,
            "nbf": self.now,
            "exp": self.now + spec.lifetime_secs,
            "idtyp": "app",
            "oid": principal,
            "sub": principal,
            "tid": spec.tid,
            "uti": unique_token_id(),
        }));
        if !spec.roles.is_empty() {
            fields.insert("roles".into(), json!(spec.roles));
        }
        match spec.version {
            TokenVersion::V2 => {
                fields.insert("iss".into(), self.v2_issuer(&spec.tid).into());
                fields.insert("ver".into(), "2.0".into());
                fields.insert("azp".into(), spec.app_id.clone().into());
                fields.insert("azpacr".into(), "1".into());
            }
            TokenVersion::V1 => {
                fields.insert("iss".into(), v1_issuer(&spec.tid).into());
                fields.insert("ver".into(), "1.0".into());
                fields.insert("appid".into(), spec.app_id.clone().into());
                fields.insert("appidacr".into(), "1".into());
            }
        }
        merge(&mut fields, &spec.extra_claims);
        Value::Object(fields)
    }

    /// The access token the token endpoint issues for a downstream resource (OBO or refresh):
    /// v1 format like Graph's, issued by the v2 issuer, requested by the emulated app.
    pub(crate) fn resource_claims(&self, tid: &str, oid: &str, resource: &str, scp: &str) -> Value {
        json!({
            "aud": resource,
            "iss": self.v2_issuer(tid),
            "iat": self.now,
            "nbf": self.now,
            "exp": self.now + TOKEN_LIFETIME_SECS,
            "appid": self.client_id,
            "appidacr": "1",
            "idtyp": "user",
            "name": display_name(oid),
            "oid": oid,
            "scp": scp,
            "sub": pairwise_sub(oid, resource),
            "tid": tid,
            "uti": unique_token_id(),
            "ver": "1.0",
        })
    }

    /// The id token the token endpoint issues when `openid` was requested.
    pub(crate) fn id_token_claims(&self, tid: &str, oid: &str) -> Value {
        json!({
            "aud": self.client_id,
            "iss": self.v2_issuer(tid),
            "iat": self.now,
            "nbf": self.now,
            "exp": self.now + TOKEN_LIFETIME_SECS,
            "name": display_name(oid),
            "oid": oid,
            "sub": pairwise_sub(oid, self.client_id),
            "tid": tid,
            "uti": unique_token_id(),
            "ver": "2.0",
        })
    }

    /// A managed identity's app-only token for `resource`, as the managed-identity endpoint
    /// hands it out: v2 issuer of the identity's tenant, `sub` = `oid` = the identity's object
    /// (principal) id, `azp` = its client id, `aud` = the requested resource.
    pub(crate) fn managed_identity_claims(
        &self,
        tid: &str,
        client_id: &str,
        object_id: &str,
        resource: &str,
    ) -> Value {
        json!({
            "aud": resource,
            "iss": self.v2_issuer(tid),
            "iat": self.now,
            "nbf": self.now,
            "exp": self.now + TOKEN_LIFETIME_SECS,
            "azp": client_id,
            "azpacr": "2",
            "idtyp": "app",
            "oid": object_id,
            "sub": object_id,
            "tid": tid,
            "uti": unique_token_id(),
            "ver": "2.0",
        })
    }

    /// An app-only token's claims for a client-credentials grant by the emulated app itself.
    pub(crate) fn client_credentials_claims(
        &self,
        tid: &str,
        aud: &str,
        roles: &[String],
    ) -> Value {
        let mut spec = AppTokenSpec::new(tid, self.client_id, roles.to_vec());
        spec.aud = Some(aud.to_owned());
        self.app_claims(&spec)
    }
}

/// `{host}/{tid}/v2.0`.
pub(crate) fn v2_issuer(host: &str, tid: &str) -> String {
    format!("{host}/{tid}/v2.0")
}

/// `https://sts.windows.net/{tid}/`.
pub(crate) fn v1_issuer(tid: &str) -> String {
    format!("https://sts.windows.net/{tid}/")
}

/// The display name the emulators give a user: `User {first 8 chars of oid}`.
pub(crate) fn display_name(oid: &str) -> String {
    format!("User {}", oid.chars().take(8).collect::<String>())
}

/// A pairwise subject: stable per (user, audience), different from `oid`.
fn pairwise_sub(oid: &str, audience: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{oid}|{audience}").as_bytes()))
}

/// The service principal object id of an app: stable per app id, GUID-shaped.
fn service_principal_id(app_id: &str) -> String {
    let digest = Sha256::digest(format!("service-principal|{app_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A random `uti` (Entra's unique token id).
fn unique_token_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The fields of a `json!({...})` literal.
fn into_fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(fields) => fields,
        _ => Map::new(),
    }
}

fn merge(fields: &mut Map<String, Value>, extra: &Map<String, Value>) {
    for (name, value) in extra {
        fields.insert(name.clone(), value.clone());
    }
}
