//! In-memory stand-ins for the ports: a clock that moves when told, an Entra that rotates
//! refresh tokens and refuses a used one, a key ring, and a downstream API that records the
//! tokens it was called with.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::DownstreamSettings;
use crate::crypto::DataKey;
use crate::domain::{AccessToken, InboundToken, RefreshToken, TenantId, UserId};
use crate::downstream::{
    Downstream, DownstreamError, DownstreamRequest, DownstreamResponse, UnverifiedRequest, Work,
};
use crate::idp::{IdpError, TokenSet};
use crate::keys::{KeyError, VersionedKey};
use crate::ports::{Clock, KeyRing, TokenEndpoint};

/// A clock that stands still until moved.
pub(crate) struct FakeClock(Mutex<DateTime<Utc>>);

impl FakeClock {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(Utc::now()))
    }

    /// Moves the clock forward by `by`.
    pub(crate) fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += chrono::Duration::from_std(by).unwrap();
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// How long the fake Entra's access tokens live.
pub(crate) const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Entra's token endpoint: every redemption rotates the refresh token, and a refresh token
/// is good once (stricter than Entra, so a reuse shows as a dead grant).
#[derive(Default)]
pub(crate) struct FakeEntra {
    state: Mutex<EntraState>,
    /// How long a redemption takes (widens races).
    pub(crate) latency: Mutex<Duration>,
}

#[derive(Default)]
struct EntraState {
    issued: u64,
    live: HashSet<String>,
    presented: Vec<String>,
    claims: Vec<Option<String>>,
    failures: VecDeque<IdpError>,
}

impl FakeEntra {
    /// Every refresh token presented, in order.
    pub(crate) fn presented(&self) -> Vec<String> {
        self.state.lock().unwrap().presented.clone()
    }

    /// The `claims` of every redemption, in order.
    pub(crate) fn claims(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().claims.clone()
    }

    /// The next redemption fails with `error`.
    pub(crate) fn fail_next(&self, error: IdpError) {
        self.state.lock().unwrap().failures.push_back(error);
    }

    /// Every refresh token issued so far dies (a password reset, a revoked session).
    pub(crate) fn revoke_all(&self) {
        self.state.lock().unwrap().live.clear();
    }

    /// Whether `token` would be accepted.
    pub(crate) fn is_live(&self, token: &str) -> bool {
        self.state.lock().unwrap().live.contains(token)
    }

    fn issue(state: &mut EntraState, scopes: &[String]) -> TokenSet {
        state.issued += 1;
        let refresh = format!("rt-{}", state.issued);
        state.live.insert(refresh.clone());
        TokenSet {
            access_token: AccessToken::new(format!("at-{}", state.issued)),
            expires_in: ACCESS_TOKEN_LIFETIME,
            refresh_token: Some(RefreshToken::new(refresh)),
            identity: None,
            scope: scopes.join(" "),
        }
    }
}

/// The grant error Entra answers for a dead refresh token.
pub(crate) fn invalid_grant() -> IdpError {
    IdpError::Reauth {
        error: "invalid_grant".into(),
        code: Some(70008),
        suberror: None,
        claims: None,
    }
}

#[async_trait]
impl TokenEndpoint for FakeEntra {
    /// The assertion is the user's object id; the id_token names that user.
    async fn on_behalf_of(
        &self,
        tenant: &TenantId,
        assertion: &InboundToken,
        scopes: &[String],
    ) -> Result<TokenSet, IdpError> {
        let mut state = self.state.lock().unwrap();
        if let Some(error) = state.failures.pop_front() {
            return Err(error);
        }
        let mut set = Self::issue(&mut state, scopes);
        let user = UserId::parse(assertion.expose()).unwrap();
        set.identity = Some((tenant.clone(), user));
        Ok(set)
    }

    async fn redeem(
        &self,
        _: &TenantId,
        refresh_token: &RefreshToken,
        scopes: &[String],
        claims: Option<&str>,
    ) -> Result<TokenSet, IdpError> {
        let latency = *self.latency.lock().unwrap();
        tokio::time::sleep(latency).await;
        let mut state = self.state.lock().unwrap();
        state.presented.push(refresh_token.expose().to_owned());
        state.claims.push(claims.map(str::to_owned));
        if let Some(error) = state.failures.pop_front() {
            return Err(error);
        }
        if !state.live.remove(refresh_token.expose()) {
            return Err(invalid_grant());
        }
        Ok(Self::issue(&mut state, scopes))
    }
}

/// Key Vault: versions per secret name, created on first use; some may be refused.
#[derive(Default)]
pub(crate) struct FakeKeys {
    versions: Mutex<HashMap<String, Vec<VersionedKey>>>,
    refused: Mutex<HashSet<String>>,
}

impl FakeKeys {
    /// Adds a new version of `name`, created a second after the previous one.
    pub(crate) fn rotate(&self, name: &str) -> VersionedKey {
        let mut versions = self.versions.lock().unwrap();
        let list = versions.entry(name.to_owned()).or_default();
        let number = list.len() + 1;
        let key = VersionedKey {
            name: name.to_owned(),
            version: format!("v{number}"),
            created: DateTime::from_timestamp(1_700_000_000 + i64::try_from(number).unwrap(), 0),
            key: Arc::new(DataKey::generate()),
        };
        list.push(key.clone());
        key
    }

    /// Key Vault refuses `version` from now on (disabled).
    pub(crate) fn refuse(&self, version: &str) {
        self.refused.lock().unwrap().insert(version.to_owned());
    }
}

#[async_trait]
impl KeyRing for FakeKeys {
    async fn latest(&self, name: &str) -> Result<VersionedKey, KeyError> {
        let last = self
            .versions
            .lock()
            .unwrap()
            .get(name)
            .and_then(|v| v.last().cloned());
        Ok(last.unwrap_or_else(|| self.rotate(name)))
    }

    async fn fresh_latest(&self, name: &str) -> Result<VersionedKey, KeyError> {
        self.latest(name).await
    }

    async fn forget_latest(&self, _: &str) {}

    async fn version(&self, name: &str, version: &str) -> Result<VersionedKey, KeyError> {
        if self.refused.lock().unwrap().contains(version) {
            return Err(KeyError::Disabled(format!("{name}/{version}")));
        }
        let versions = self.versions.lock().unwrap();
        let found = versions
            .get(name)
            .and_then(|list| list.iter().find(|k| k.version == version));
        found
            .cloned()
            .ok_or_else(|| KeyError::NotFound(format!("{name}/{version}")))
    }
}

/// The downstream API: records the access token of every call and answers `200`, or what
/// the test queued.
pub(crate) struct FakeWork {
    checks: Downstream,
    pub(crate) tokens: Mutex<Vec<String>>,
    answers: Mutex<VecDeque<DownstreamResponse>>,
}

impl FakeWork {
    pub(crate) fn new(settings: &DownstreamSettings) -> Self {
        static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
        let http = HTTP.get_or_init(reqwest::Client::new).clone();
        Self {
            checks: Downstream::new(http, settings.clone()),
            tokens: Mutex::default(),
            answers: Mutex::default(),
        }
    }

    /// The next call answers `401` with a CAE claims challenge for `claims`.
    pub(crate) fn challenge_next(&self, claims: &str) {
        self.answers.lock().unwrap().push_back(DownstreamResponse {
            status: 401,
            headers: Default::default(),
            body: serde_json::Value::Null,
            claims_challenge: Some(claims.to_owned()),
        });
    }
}

#[async_trait]
impl Work for FakeWork {
    fn prepare(
        &self,
        unverified: Option<UnverifiedRequest>,
    ) -> Result<DownstreamRequest, DownstreamError> {
        self.checks.prepare(unverified)
    }

    async fn call(
        &self,
        _: &DownstreamRequest,
        token: &AccessToken,
    ) -> Result<DownstreamResponse, DownstreamError> {
        self.tokens.lock().unwrap().push(token.expose().to_owned());
        let queued = self.answers.lock().unwrap().pop_front();
        Ok(queued.unwrap_or(DownstreamResponse {
            status: 200,
            headers: Default::default(),
            body: serde_json::json!({ "ok": true }),
            claims_challenge: None,
        }))
    }
}
