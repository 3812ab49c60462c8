//! The requests the client sends, and the fake token endpoint the failure tests share.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use secrecy::SecretString;
use serde_json::json;

use super::*;
use crate::config::ClientCredential;
use crate::idp::credential::tests::{authority, certificate_file, test_decoding_key};

pub(super) const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub(super) const CLIENT_ID: &str = "535fb089-9ff3-47b6-9bfb-4f1264799865";
pub(super) const USER: &str = "6902e2b4-8f51-4a9e-a2c5-3c1f9d6a2b10";
pub(super) const CLIENT_SECRET: &str = "CLIENT-SECRET-VALUE";
pub(super) const ASSERTION: &str = "eyJ0eXAi.INBOUND-ASSERTION.sig";
pub(super) const GRAPH: &str = "https://graph.microsoft.com/.default";

/// What the fake token endpoint received.
struct Recorded {
    path: String,
    headers: HeaderMap,
    form: Vec<(String, String)>,
}

/// What the fake token endpoint answers.
#[derive(Clone)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: Vec<(&'static str, &'static str)>,
    pub(super) body: String,
    pub(super) delay: Duration,
}

impl Answer {
    pub(super) fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json")],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
}

pub(super) struct Endpoint {
    pub(super) base: Url,
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
    let mut response = (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

pub(super) async fn endpoint(answer_with: Answer) -> Endpoint {
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
pub(super) fn client(base: &Url, credential: AppCredential, timeout: Duration) -> EntraClient {
    let http = reqwest::Client::builder().timeout(timeout).build().unwrap();
    EntraClient::new(http, base.clone(), CLIENT_ID.into(), credential)
}

pub(super) fn secret() -> AppCredential {
    AppCredential::Secret(SecretString::from(CLIENT_SECRET))
}

pub(super) fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap()
}

/// An id_token as the token endpoint returns it (the signature is not looked at).
pub(super) fn id_token(aud: &str) -> String {
    let part = |value: serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let claims = json!({"aud": aud, "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"), "tid": TENANT, "oid": USER, "sub": "pairwise"});
    format!(
        "{}.{}.signature",
        part(json!({"alg": "RS256", "kid": "k1"})),
        part(claims)
    )
}

pub(super) fn success(refresh_token: Option<&str>, id_token: Option<String>) -> Answer {
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
