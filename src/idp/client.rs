//! The Entra token endpoint: the On-Behalf-Of exchange (setup) and the refresh-token grant
//! (do-work, the timer), both against the tenant-specific authority
//! `{authority}/{tid}/oauth2/v2.0/token` (OBO is refused over `/common`).
//!
//! There are no retries here: callers know whether a user is waiting and how much time is
//! left, so they decide. Nothing secret (tokens, assertions, the client secret, Entra's
//! `error_description`) reaches a log line or an error.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use url::Url;

use super::errors::{self, ErrorBody, Grant};
use super::{AppCredential, IdpError};
use crate::domain::{AccessToken, RefreshToken, TenantId, UserId};

/// Scopes added to the OBO exchange: a refresh token, and an id_token with `oid`/`tid` in it
/// (setup identifies the user from it).
const OBO_EXTRA_SCOPES: &[&str] = &["offline_access", "openid", "profile"];
/// Scopes added to a refresh-token grant: the rotated refresh token only. Nothing reads an
/// id_token after setup, so none is asked for: Entra signs one token instead of two and no
/// profile claims pass through the service.
const REFRESH_EXTRA_SCOPES: &[&str] = &["offline_access"];
/// `grant_type` of the On-Behalf-Of exchange.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Bound on a token response (tokens with many claims are a few KiB each).
const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;

/// Client for the Entra token endpoint, authenticated as this app.
pub struct EntraClient {
    http: reqwest::Client,
    /// Authority host without a trailing slash.
    authority: String,
    client_id: String,
    credential: AppCredential,
    /// `OBOVAULT_CLIENT_CAPABILITIES`, declared in the `claims` of every grant.
    client_capabilities: Vec<String>,
}

/// A successful token response. `Debug` never shows a token.
pub struct TokenSet {
    /// The access token for the downstream API.
    pub access_token: AccessToken,
    /// `expires_in` of the access token.
    pub expires_in: Duration,
    /// The new refresh token; `None` when Entra sent none (keep the old one).
    pub refresh_token: Option<RefreshToken>,
    /// (`tid`, `oid`) from the id_token, when one came back.
    pub identity: Option<(TenantId, UserId)>,
    /// The granted scopes, space separated, as Entra reported them.
    pub scope: String,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token newtypes print as `AccessToken(..)`/`RefreshToken(..)`.
        f.debug_struct("TokenSet")
            .field("access_token", &self.access_token)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token)
            .field("identity", &self.identity)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The fields of a token response we use. No `Debug`: it holds tokens.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    id_token: Option<String>,
    #[serde(default)]
    scope: String,
}

/// The id_token claims that identify the user.
#[derive(Deserialize)]
struct IdTokenClaims {
    aud: serde_json::Value,
    tid: Option<String>,
    oid: Option<String>,
}

impl EntraClient {
    /// A client for `authority_host` authenticating as `client_id` with `credential`.
    pub fn new(
        http: reqwest::Client,
        authority_host: Url,
        client_id: String,
        credential: AppCredential,
    ) -> Self {
        Self {
            http,
            authority: authority_host.as_str().trim_end_matches('/').to_owned(),
            client_id,
            credential,
            client_capabilities: Vec::new(),
        }
    }

    /// Declares client capabilities (`cp1`) on every grant, as MSAL's
    /// `WithClientCapabilities` does: CAE-aware APIs then issue long-lived tokens and answer a
    /// revoked one with a claims challenge instead of accepting it until it expires.
    pub fn with_client_capabilities(mut self, capabilities: &[String]) -> Self {
        self.client_capabilities = capabilities.to_vec();
        self
    }

    /// OBO: always asks for the downstream scopes plus `offline_access openid profile`,
    /// tenant-specific authority.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant))]
    pub async fn on_behalf_of(
        &self,
        tenant: &TenantId,
        assertion: &str,
        scopes: &[String],
    ) -> Result<TokenSet, IdpError> {
        let grant_fields = vec![
            ("grant_type", JWT_BEARER_GRANT.to_owned()),
            ("requested_token_use", "on_behalf_of".to_owned()),
            ("assertion", assertion.to_owned()),
        ];
        self.request(tenant, Grant::OnBehalfOf, grant_fields, scopes, None)
            .await
    }

    /// Refresh-token grant: the downstream scopes plus `offline_access` (no id_token).
    pub async fn redeem_refresh_token(
        &self,
        tenant: &TenantId,
        refresh_token: &RefreshToken,
        scopes: &[String],
    ) -> Result<TokenSet, IdpError> {
        self.redeem_refresh_token_with_claims(tenant, refresh_token, scopes, None)
            .await
    }

    /// Refresh-token grant answering a downstream's claims challenge: `claims` (JSON) goes in
    /// the `claims` parameter, merged with the client capabilities.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, claims_challenge = claims.is_some()))]
    pub async fn redeem_refresh_token_with_claims(
        &self,
        tenant: &TenantId,
        refresh_token: &RefreshToken,
        scopes: &[String],
        claims: Option<&str>,
    ) -> Result<TokenSet, IdpError> {
        let grant_fields = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
        ];
        self.request(tenant, Grant::RefreshToken, grant_fields, scopes, claims)
            .await
    }

    async fn request(
        &self,
        tenant: &TenantId,
        grant: Grant,
        mut fields: Vec<(&'static str, String)>,
        scopes: &[String],
        challenge: Option<&str>,
    ) -> Result<TokenSet, IdpError> {
        let endpoint = format!("{}/{tenant}/oauth2/v2.0/token", self.authority);
        fields.push(("client_id", self.client_id.clone()));
        let extra = match grant {
            Grant::OnBehalfOf => OBO_EXTRA_SCOPES,
            Grant::RefreshToken => REFRESH_EXTRA_SCOPES,
        };
        fields.push(("scope", scope_parameter(scopes, extra)));
        if let Some(claims) = crate::claims::request_parameter(&self.client_capabilities, challenge)
        {
            fields.push(("claims", claims));
        }
        // Makes Entra return `client_info` (uid/utid), as MSAL does.
        fields.push(("client_info", "1".to_owned()));
        fields.extend(
            self.credential
                .form_fields(&self.client_id, &endpoint)
                .await?,
        );
        let response = self
            .http
            .post(&endpoint)
            .header(reqwest::header::ACCEPT, "application/json")
            // Tells Entra we honour Retry-After and understand 429, as MSAL does.
            .header("x-ms-lib-capability", "retry-after, h429")
            .form(&fields)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_after = errors::retry_after(response.headers());
        let body = read_limited(response, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(|error| match error {
                BodyError::Transport(error) => transport_error(error),
                BodyError::TooLarge => IdpError::Protocol("the token response is too large".into()),
            })?;
        // The error fields are read before the status: Entra answers OAuth errors with 400 or
        // 401, and only the body says which.
        let error_body = serde_json::from_slice::<ErrorBody>(&body).ok();
        if !status.is_success() || error_body.as_ref().is_some_and(|b| b.error.is_some()) {
            let error = errors::classify(grant, status, retry_after, error_body.as_ref());
            log_failure(status, error_body.as_ref(), &error);
            return Err(error);
        }
        let set = token_set(&body, &self.client_id)?;
        tracing::debug!(
            expires_in = set.expires_in.as_secs(),
            new_refresh_token = set.refresh_token.is_some(),
            "Entra issued tokens"
        );
        Ok(set)
    }
}

/// The downstream scopes plus `extra`, each once, in order.
fn scope_parameter(scopes: &[String], extra: &[&'static str]) -> String {
    let mut all: Vec<&str> = Vec::new();
    for scope in scopes
        .iter()
        .flat_map(|s| s.split_whitespace())
        .chain(extra.iter().copied())
    {
        if !all.contains(&scope) {
            all.push(scope);
        }
    }
    all.join(" ")
}

fn transport_error(error: reqwest::Error) -> IdpError {
    // reqwest errors name the URL (authority and tenant id) and the failure, never the body.
    tracing::warn!(error = %error, timeout = error.is_timeout(), "Entra token request failed in transport");
    if error.is_timeout() {
        IdpError::Timeout
    } else {
        IdpError::Unavailable { retry_after: None }
    }
}

/// Logs what Entra documents as safe diagnostics: never `error_description`.
fn log_failure(status: reqwest::StatusCode, body: Option<&ErrorBody>, error: &IdpError) {
    // Trace and correlation ids are GUIDs; anything else is not echoed.
    let guid = |value: Option<&String>| value.filter(|v| uuid::Uuid::try_parse(v).is_ok()).cloned();
    tracing::warn!(
        http.status = status.as_u16(),
        outcome = %error.code(),
        entra.error = body.and_then(|b| b.error.as_deref()).map(errors::sanitize).as_deref(),
        entra.suberror = body.and_then(|b| b.suberror.as_deref()).map(errors::sanitize).as_deref(),
        entra.error_codes = ?body.map(|b| b.error_codes.as_slice()).unwrap_or_default(),
        entra.trace_id = guid(body.and_then(|b| b.trace_id.as_ref())).as_deref(),
        entra.correlation_id = guid(body.and_then(|b| b.correlation_id.as_ref())).as_deref(),
        "Entra refused the token request"
    );
}

fn token_set(body: &[u8], client_id: &str) -> Result<TokenSet, IdpError> {
    let response: TokenResponse = serde_json::from_slice(body)
        .map_err(|_| IdpError::Protocol("the token response is not JSON".into()))?;
    let access_token = response
        .access_token
        .filter(|token| !token.is_empty())
        .ok_or_else(|| IdpError::Protocol("the token response has no access_token".into()))?;
    if response
        .token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return Err(IdpError::Protocol(
            "the access token is not a bearer token".into(),
        ));
    }
    let expires_in = match &response.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        // Some Microsoft endpoints send numbers as strings.
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| IdpError::Protocol("the token response has no valid expires_in".into()))?;
    let identity = response
        .id_token
        .as_deref()
        .map(|t| identity(t, client_id))
        .transpose()?;
    Ok(TokenSet {
        access_token: AccessToken::new(access_token),
        expires_in: Duration::from_secs(expires_in),
        refresh_token: response
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(RefreshToken::new),
        identity,
        scope: response.scope,
    })
}

/// (`tid`, `oid`) of the id_token.
///
/// The signature is not checked: the id_token came straight from the token endpoint over TLS,
/// which OIDC Core 3.1.3.7 (item 6) allows in place of signature validation. The audience is
/// still checked so that a token meant for another client is never taken as ours.
fn identity(id_token: &str, client_id: &str) -> Result<(TenantId, UserId), IdpError> {
    let invalid = |why: &str| IdpError::Protocol(format!("the id_token {why}"));
    let payload = id_token
        .split('.')
        .nth(1)
        .ok_or_else(|| invalid("is not a JWT"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| invalid("is not a JWT"))?;
    let claims: IdTokenClaims =
        serde_json::from_slice(&bytes).map_err(|_| invalid("has unreadable claims"))?;
    let ours = match &claims.aud {
        serde_json::Value::String(aud) => aud == client_id,
        serde_json::Value::Array(auds) => auds.len() == 1 && auds[0].as_str() == Some(client_id),
        _ => false,
    };
    if !ours {
        return Err(invalid("was issued for another client"));
    }
    let tenant = claims
        .tid
        .as_deref()
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or_else(|| invalid("has no valid tid"))?;
    let user = claims
        .oid
        .as_deref()
        .and_then(|o| UserId::parse(o).ok())
        .ok_or_else(|| invalid("has no valid oid"))?;
    Ok((tenant, user))
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    /// The connection failed or timed out while reading.
    #[error("reading the body failed: {0}")]
    Transport(reqwest::Error),
    /// The body is larger than the limit.
    #[error("the body is too large")]
    TooLarge,
}

/// Reads a response body of at most `limit` bytes, so a broken or hostile endpoint cannot make
/// us buffer without bound.
pub(super) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use axum::Router;
    use secrecy::SecretString;
    use serde_json::json;

    use super::*;
    use crate::config::ClientCredential;
    use crate::idp::credential::tests::{authority, certificate_file, test_decoding_key};

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT_ID: &str = "535fb089-9ff3-47b6-9bfb-4f1264799865";
    const USER: &str = "6902e2b4-8f51-4a9e-a2c5-3c1f9d6a2b10";
    const CLIENT_SECRET: &str = "CLIENT-SECRET-VALUE";
    const ASSERTION: &str = "eyJ0eXAi.INBOUND-ASSERTION.sig";
    const GRAPH: &str = "https://graph.microsoft.com/.default";

    /// What the fake token endpoint received.
    struct Recorded {
        path: String,
        headers: HeaderMap,
        form: Vec<(String, String)>,
    }

    /// What the fake token endpoint answers.
    #[derive(Clone)]
    struct Answer {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
        delay: Duration,
    }

    impl Answer {
        fn json(status: u16, body: serde_json::Value) -> Self {
            Self {
                status,
                headers: vec![("content-type", "application/json")],
                body: body.to_string(),
                delay: Duration::ZERO,
            }
        }
    }

    struct Endpoint {
        base: Url,
        requests: Arc<Mutex<Vec<Recorded>>>,
    }

    impl Endpoint {
        fn form(&self) -> BTreeMap<String, String> {
            let requests = self.requests.lock().unwrap();
            assert_eq!(requests.len(), 1);
            let form: BTreeMap<_, _> = requests[0].form.iter().cloned().collect();
            assert_eq!(form.len(), requests[0].form.len(), "no field is sent twice");
            form
        }
    }

    async fn answer(
        State((answer, requests)): State<(Answer, Arc<Mutex<Vec<Recorded>>>)>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let form = url::form_urlencoded::parse(&body).into_owned().collect();
        requests.lock().unwrap().push(Recorded {
            path: uri.path().to_owned(),
            headers,
            form,
        });
        tokio::time::sleep(answer.delay).await;
        let mut response =
            (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
        for (name, value) in answer.headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        response
    }

    async fn endpoint(answer_with: Answer) -> Endpoint {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let app = Router::new()
            .fallback(answer)
            .with_state((answer_with, requests.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Endpoint { base, requests }
    }

    /// A client over plain HTTP (the real client is https-only).
    fn client(base: &Url, credential: AppCredential, timeout: Duration) -> EntraClient {
        let http = reqwest::Client::builder().timeout(timeout).build().unwrap();
        EntraClient::new(http, base.clone(), CLIENT_ID.into(), credential)
    }

    fn secret() -> AppCredential {
        AppCredential::Secret(SecretString::from(CLIENT_SECRET))
    }

    fn tenant() -> TenantId {
        TenantId::parse(TENANT).unwrap()
    }

    /// An id_token as the token endpoint returns it (the signature is not looked at).
    fn id_token(aud: &str) -> String {
        let part = |value: serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
        let claims = json!({"aud": aud, "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"), "tid": TENANT, "oid": USER, "sub": "pairwise"});
        format!(
            "{}.{}.signature",
            part(json!({"alg": "RS256", "kid": "k1"})),
            part(claims)
        )
    }

    fn success(refresh_token: Option<&str>, id_token: Option<String>) -> Answer {
        let mut body = json!({
            "token_type": "Bearer", "scope": "https://graph.microsoft.com/User.Read", "expires_in": 3599,
            "ext_expires_in": 3599, "access_token": "ACCESS-TOKEN-VALUE", "client_info": "eyJ1aWQiOiJ4In0",
        });
        if let Some(refresh_token) = refresh_token {
            body["refresh_token"] = json!(refresh_token);
        }
        if let Some(id_token) = id_token {
            body["id_token"] = json!(id_token);
        }
        Answer::json(200, body)
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn obo_posts_exactly_the_documented_fields() {
        let entra = endpoint(success(
            Some("REFRESH-TOKEN-VALUE"),
            Some(id_token(CLIENT_ID)),
        ))
        .await;
        let scopes = vec![GRAPH.to_owned(), "offline_access".to_owned()];
        let set = client(&entra.base, secret(), Duration::from_secs(5))
            .on_behalf_of(&tenant(), ASSERTION, &scopes)
            .await
            .unwrap();
        let expected = fields(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("assertion", ASSERTION),
            (
                "scope",
                "https://graph.microsoft.com/.default offline_access openid profile",
            ),
            ("requested_token_use", "on_behalf_of"),
            ("client_info", "1"),
        ]);
        assert_eq!(entra.form(), expected);
        let requests = entra.requests.lock().unwrap();
        assert_eq!(requests[0].path, format!("/{TENANT}/oauth2/v2.0/token"));
        assert_eq!(
            requests[0].headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(
            requests[0].headers["x-ms-lib-capability"],
            "retry-after, h429"
        );
        assert_eq!(set.access_token.expose(), "ACCESS-TOKEN-VALUE");
        assert_eq!(
            set.refresh_token.as_ref().map(RefreshToken::expose),
            Some("REFRESH-TOKEN-VALUE")
        );
        assert_eq!(set.expires_in, Duration::from_secs(3599));
        assert_eq!(set.scope, "https://graph.microsoft.com/User.Read");
        let (tid, oid) = set.identity.clone().unwrap();
        assert_eq!((tid.as_str(), oid.as_str()), (TENANT, USER));
        let shown = format!("{set:?}");
        assert!(
            !shown.contains("ACCESS-TOKEN-VALUE") && !shown.contains("REFRESH-TOKEN-VALUE"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn certificate_credentials_send_an_assertion_for_the_token_endpoint() {
        let entra = endpoint(success(Some("RT"), Some(id_token(CLIENT_ID)))).await;
        let (file, _der) = certificate_file();
        let credential = AppCredential::from_settings(
            &ClientCredential::Certificate(file.path().into()),
            &authority(),
        )
        .unwrap();
        client(&entra.base, credential, Duration::from_secs(5))
            .on_behalf_of(&tenant(), ASSERTION, &[GRAPH.to_owned()])
            .await
            .unwrap();
        let form = entra.form();
        assert!(!form.contains_key("client_secret"));
        assert_eq!(
            form["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        let endpoint_url = format!("{}{TENANT}/oauth2/v2.0/token", entra.base);
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[&endpoint_url]);
        validation.set_issuer(&[CLIENT_ID]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &form["client_assertion"],
            &test_decoding_key(),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], CLIENT_ID);
    }

    #[tokio::test]
    async fn refresh_posts_the_refresh_grant_and_allows_no_new_refresh_token() {
        let entra = endpoint(success(None, None)).await;
        let old = RefreshToken::new("OLD-REFRESH-TOKEN".into());
        let set = client(&entra.base, secret(), Duration::from_secs(5))
            .redeem_refresh_token(&tenant(), &old, &[GRAPH.to_owned()])
            .await
            .unwrap();
        let expected = fields(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("refresh_token", "OLD-REFRESH-TOKEN"),
            (
                "scope",
                "https://graph.microsoft.com/.default offline_access",
            ),
            ("client_info", "1"),
        ]);
        assert_eq!(entra.form(), expected);
        assert!(set.refresh_token.is_none() && set.identity.is_none());
    }

    /// What a classified error must look like.
    type Expectation = Box<dyn Fn(&IdpError) -> bool>;

    #[tokio::test]
    async fn entra_errors_are_classified_from_the_body_first() {
        let description = "AADSTS70008: DESCRIPTION-TEXT quoting CLIENT-SECRET-VALUE";
        let error = |status, body: serde_json::Value| Answer::json(status, body);
        let cases: Vec<(Answer, Expectation, &str)> = vec![
            (
                error(
                    400,
                    json!({"error": "invalid_grant", "error_codes": [70008], "error_description": description, "trace_id": "b72a68c3-0926-4b8e-bc35-3150069c2800"}),
                ),
                Box::new(|e| {
                    matches!(
                        e,
                        IdpError::Reauth {
                            code: Some(70008),
                            claims: None,
                            ..
                        }
                    )
                }),
                "invalid_grant:70008",
            ),
            (
                error(
                    400,
                    json!({"error": "invalid_grant", "error_codes": [50196]}),
                ),
                Box::new(|e| matches!(e, IdpError::Throttled { .. })),
                "throttled",
            ),
            (
                error(
                    400,
                    json!({"error": "invalid_grant", "error_codes": [500133]}),
                ),
                Box::new(|e| {
                    matches!(
                        e,
                        IdpError::BadAssertion {
                            code: Some(500133),
                            ..
                        }
                    )
                }),
                "invalid_grant:500133",
            ),
            (
                error(
                    400,
                    json!({"error": "interaction_required", "error_codes": [50079], "suberror": "basic_action", "claims": "{\"access_token\":{\"polids\":{\"essential\":true}}}"}),
                ),
                Box::new(
                    |e| matches!(e, IdpError::Reauth { claims: Some(c), .. } if c.contains("polids")),
                ),
                "interaction_required:50079",
            ),
            (
                error(
                    401,
                    json!({"error": "invalid_client", "error_codes": [7000215]}),
                ),
                Box::new(|e| {
                    matches!(
                        e,
                        IdpError::Misconfigured {
                            code: Some(7000215),
                            ..
                        }
                    )
                }),
                "invalid_client:7000215",
            ),
            (
                Answer {
                    status: 429,
                    headers: vec![("retry-after", "7")],
                    body: "Too many requests".into(),
                    delay: Duration::ZERO,
                },
                Box::new(
                    |e| matches!(e, IdpError::Throttled { retry_after: Some(d) } if *d == Duration::from_secs(7)),
                ),
                "throttled",
            ),
            (
                Answer {
                    status: 503,
                    headers: vec![],
                    body: String::new(),
                    delay: Duration::ZERO,
                },
                Box::new(|e| matches!(e, IdpError::Unavailable { retry_after: None })),
                "unavailable",
            ),
            (
                error(200, json!({"token_type": "Bearer", "expires_in": 3600})),
                Box::new(|e| matches!(e, IdpError::Protocol(_))),
                "protocol",
            ),
            (
                success(Some("RT"), Some(id_token("another-client"))),
                Box::new(|e| matches!(e, IdpError::Protocol(_))),
                "protocol",
            ),
        ];
        for (answer, expected, code) in cases {
            let entra = endpoint(answer).await;
            let error = client(&entra.base, secret(), Duration::from_secs(5))
                .on_behalf_of(&tenant(), ASSERTION, &[GRAPH.to_owned()])
                .await
                .unwrap_err();
            assert!(expected(&error), "{error:?}");
            assert_eq!(error.code(), code);
            let shown = format!("{error} {error:?} {}", error.code());
            for secret in [
                "DESCRIPTION-TEXT",
                CLIENT_SECRET,
                "INBOUND-ASSERTION",
                "ACCESS-TOKEN-VALUE",
            ] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[tokio::test]
    async fn a_hanging_entra_is_a_timeout() {
        let hanging = Answer {
            delay: Duration::from_secs(30),
            ..success(None, None)
        };
        let entra = endpoint(hanging).await;
        let error = client(&entra.base, secret(), Duration::from_millis(200))
            .redeem_refresh_token(
                &tenant(),
                &RefreshToken::new("RT".into()),
                &[GRAPH.to_owned()],
            )
            .await
            .unwrap_err();
        assert!(matches!(error, IdpError::Timeout), "{error:?}");
    }

    #[tokio::test]
    async fn an_unreachable_entra_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let error = client(&base, secret(), Duration::from_secs(5))
            .redeem_refresh_token(
                &tenant(),
                &RefreshToken::new("RT".into()),
                &[GRAPH.to_owned()],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, IdpError::Unavailable { retry_after: None }),
            "{error:?}"
        );
    }

    /// Collects everything logged on this thread (tokio tests run on one thread).
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn log_lines_carry_diagnostics_but_no_secrets() {
        // A process-wide subscriber: a thread-scoped one loses lines whenever a parallel test
        // on another thread caches a callsite's interest first. Other tests' lines land in the
        // same buffer, which only makes the "no secret" checks stricter.
        static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
        let captured = CAPTURED.get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other test installs a global subscriber");
            captured
        });
        let refused = Answer::json(
            400,
            json!({"error": "invalid_grant", "error_codes": [70008], "error_description": "DESCRIPTION-TEXT",
                   "trace_id": "b72a68c3-0926-4b8e-bc35-3150069c2800", "correlation_id": "73d656cf-54b1-4eb2-b429-26d8165a52d7"}),
        );
        for answer in [
            refused,
            success(Some("REFRESH-TOKEN-VALUE"), Some(id_token(CLIENT_ID))),
        ] {
            let entra = endpoint(answer).await;
            let client = client(&entra.base, secret(), Duration::from_secs(5));
            let _ = client
                .on_behalf_of(&tenant(), ASSERTION, &[GRAPH.to_owned()])
                .await;
            let _ = client
                .redeem_refresh_token(
                    &tenant(),
                    &RefreshToken::new("OLD-REFRESH-TOKEN".into()),
                    &[GRAPH.to_owned()],
                )
                .await;
        }
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            logs.contains("70008") && logs.contains("b72a68c3-0926-4b8e-bc35-3150069c2800"),
            "{logs}"
        );
        assert!(logs.contains(TENANT), "{logs}");
        for secret in [
            "DESCRIPTION-TEXT",
            CLIENT_SECRET,
            "INBOUND-ASSERTION",
            "ACCESS-TOKEN-VALUE",
            "REFRESH-TOKEN-VALUE",
            "OLD-REFRESH-TOKEN",
        ] {
            assert!(!logs.contains(secret), "{secret} leaked: {logs}");
        }
    }

    #[test]
    fn scopes_are_deduplicated_and_always_include_the_grant_s_extra_ones() {
        assert_eq!(
            scope_parameter(&[], OBO_EXTRA_SCOPES),
            "offline_access openid profile"
        );
        assert_eq!(
            scope_parameter(&["User.Read".to_owned()], REFRESH_EXTRA_SCOPES),
            "User.Read offline_access"
        );
        let scopes = [
            "User.Read openid".to_owned(),
            "Mail.Read".to_owned(),
            "User.Read".to_owned(),
        ];
        assert_eq!(
            scope_parameter(&scopes, OBO_EXTRA_SCOPES),
            "User.Read openid Mail.Read offline_access profile"
        );
    }
}
