//! Trust across tenants: workload tenancy (`OBOVAULT_WORKLOAD_TENANTS`) in a deployment that
//! allows two tenants, and multi-tenant token validation with `OBOVAULT_ALLOWED_TENANTS=*`.

use emulators::{AppTokenSpec, UserTokenSpec, DEFAULT_TENANT_ID};
use serde_json::{json, Value};

use crate::helpers::{new_user, TestApp, LOGS};

/// The second allowed tenant (a customer of the home tenant's operator).
const SECOND_TENANT: &str = "5ec0d7e2-2b34-4da1-9baa-8bc8c9d6a491";
const SECOND_WORKLOAD: &str = "5ec0d000-0000-4000-8000-00000000a11e";

fn two_tenants() -> Vec<(String, String)> {
    vec![(
        "OBOVAULT_ALLOWED_TENANTS".into(),
        format!("{DEFAULT_TENANT_ID},{SECOND_TENANT}"),
    )]
}

fn two_tenants_with_both_workloads() -> Vec<(String, String)> {
    let mut settings = two_tenants();
    settings.push((
        "OBOVAULT_WORKLOAD_TENANTS".into(),
        format!("{DEFAULT_TENANT_ID},{SECOND_TENANT}"),
    ));
    settings
}

/// A workload token of `tenant` carrying the role.
fn workload(app: &TestApp, tenant: &str, app_id: &str) -> String {
    app.stack.entra.mint_app_token(&AppTokenSpec::new(
        tenant,
        app_id,
        vec!["OboVault.Act".into()],
    ))
}

/// Connects a new user of `tenant` through setup; returns its oid.
async fn connect(app: &TestApp, tenant: &str) -> String {
    let oid = new_user();
    let token = app
        .stack
        .entra
        .mint_user_token(&UserTokenSpec::new(tenant, &oid));
    let response = app.post_setup(&token).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    oid
}

/// `POST /api/do-work` as `token` for the user (`tenant`, `oid`).
async fn act(app: &TestApp, token: &str, tenant: &str, oid: &str) -> reqwest::Response {
    app.do_work_body(token, &json!({"tenantId": tenant, "userId": oid}))
        .await
}

/// Asserts a 403 `tenant_not_allowed` that redeemed nothing and called nothing downstream.
async fn assert_refused_without_side_effects(app: &TestApp, token: &str, tenant: &str, oid: &str) {
    app.stack.entra.reset_stats();
    app.stack.downstream.reset_stats();
    let before = app
        .store
        .find(&user_key(tenant, oid))
        .await
        .unwrap()
        .expect("row");
    let response = act(app, token, tenant, oid).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "tenant_not_allowed", "{body}");
    assert_eq!(
        app.stack.entra.stats().refresh_grants,
        0,
        "no refresh grant"
    );
    assert_eq!(
        app.stack.downstream.stats().requests,
        0,
        "no downstream call"
    );
    let after = app
        .store
        .find(&user_key(tenant, oid))
        .await
        .unwrap()
        .expect("row");
    assert_eq!(
        (after.revision, after.refreshed_at, after.lease_owner),
        (before.revision, before.refreshed_at, before.lease_owner),
        "the row is untouched"
    );
}

fn user_key(tenant: &str, oid: &str) -> obo_vault::domain::UserKey {
    obo_vault::domain::UserKey {
        tenant_id: obo_vault::domain::TenantId::parse(tenant).unwrap(),
        user_id: obo_vault::domain::UserId::parse(oid).unwrap(),
    }
}

/// Asserts a 200 from the downstream API, acting as `oid` of `tenant`.
async fn assert_acts(app: &TestApp, token: &str, tenant: &str, oid: &str) {
    let response = act(app, token, tenant, oid).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["body"]["tid"].as_str(), body["body"]["oid"].as_str()),
        (Some(tenant), Some(oid))
    );
}

/// The `callerTenantId` of the newest `recentAccess` of the user, waiting for the audit writer.
async fn last_caller_tenant(app: &TestApp, tenant: &str, oid: &str) -> Value {
    let token = app
        .stack
        .entra
        .mint_user_token(&UserTokenSpec::new(tenant, oid));
    for _ in 0..100 {
        let body: Value = app.get_setup(&token).await.json().await.unwrap();
        if let Some(access) = body["recentAccess"].as_array().and_then(|a| a.first()) {
            return access["callerTenantId"].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no access recorded");
}

async fn a_second_tenants_workload_is_refused_by_default(app: TestApp) {
    let home_user = app.connected_user().await;
    let second_user = connect(&app, SECOND_TENANT).await;
    let token = workload(&app, SECOND_TENANT, SECOND_WORKLOAD);
    assert_refused_without_side_effects(&app, &token, DEFAULT_TENANT_ID, &home_user).await;
    // Not listed in OBOVAULT_WORKLOAD_TENANTS: not even for its own tenant's users.
    assert_refused_without_side_effects(&app, &token, SECOND_TENANT, &second_user).await;
    // The same user is fine for the home tenant's workload: the refusal was the tenancy.
    app.stack.entra.reset_stats();
    assert_acts(&app, &app.workload_token(), DEFAULT_TENANT_ID, &home_user).await;
    assert_eq!(app.stack.entra.stats().refresh_grants, 1);
}

async fn a_home_workload_acts_for_a_second_tenants_user(app: TestApp) {
    let second_user = connect(&app, SECOND_TENANT).await;
    assert_acts(&app, &app.workload_token(), SECOND_TENANT, &second_user).await;
    assert_eq!(
        last_caller_tenant(&app, SECOND_TENANT, &second_user).await,
        DEFAULT_TENANT_ID
    );
}

async fn a_listed_tenants_workload_acts_for_its_own_users_only(app: TestApp) {
    let home_user = app.connected_user().await;
    let second_user = connect(&app, SECOND_TENANT).await;
    let token = workload(&app, SECOND_TENANT, SECOND_WORKLOAD);
    assert_refused_without_side_effects(&app, &token, DEFAULT_TENANT_ID, &home_user).await;
    let response = act(&app, &token, DEFAULT_TENANT_ID, &home_user).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["detail"],
        "A workload of another tenant may act only for users of its own tenant."
    );
    assert_acts(&app, &token, SECOND_TENANT, &second_user).await;
    assert_eq!(
        last_caller_tenant(&app, SECOND_TENANT, &second_user).await,
        SECOND_TENANT
    );
    // The home tenant's workload still acts for both tenants' users.
    assert_acts(&app, &app.workload_token(), DEFAULT_TENANT_ID, &home_user).await;
    assert_acts(&app, &app.workload_token(), SECOND_TENANT, &second_user).await;
    // The audit line names the workload's tenant.
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(
        logs.lines().any(|line| line.contains("\"audit\":true")
            && line.contains(&second_user)
            && line.contains(&format!("\"caller.tenant_id\":\"{SECOND_TENANT}\""))),
        "an audit line with the caller's tenant"
    );
}

mod default_workload_tenants {
    use super::*;

    crate::on_both_backends!(
        spawn = |backend| {
            crate::helpers::spawn_app_with_owned(backend, crate::tenancy::two_tenants())
        };
        a_second_tenants_workload_is_refused_by_default,
        a_home_workload_acts_for_a_second_tenants_user,
    );
}

mod both_tenants_listed {
    use super::*;

    crate::on_both_backends!(
        spawn = |backend| {
            crate::helpers::spawn_app_with_owned(backend, crate::tenancy::two_tenants_with_both_workloads())
        };
        a_listed_tenants_workload_acts_for_its_own_users_only,
    );
}

fn any_tenant() -> Vec<(String, String)> {
    vec![("OBOVAULT_ALLOWED_TENANTS".into(), "*".into())]
}

/// `*`, with keys refreshed after `age` (so a test can see a refresh happen).
fn any_tenant_refreshing_keys_every(age: &str) -> Vec<(String, String)> {
    let mut settings = any_tenant();
    settings.push(("OBOVAULT_SIGNING_KEYS_REFRESH".into(), age.into()));
    settings
}

fn random_tenant() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The payload of a JWT.
fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The token's claims signed by a key Entra never published, under Entra's current `kid`
/// (`unknown_kid`: under a `kid` Entra never published, by Entra's current key).
fn forge(app: &TestApp, genuine: &str, unknown_kid: bool) -> String {
    let claims = claims_of(genuine);
    if unknown_kid {
        let header = json!({"kid": uuid::Uuid::new_v4().simple().to_string()});
        app.stack
            .entra
            .sign_raw(header, claims, emulators::SignWith::Current)
    } else {
        app.stack
            .entra
            .sign_raw(json!({}), claims, emulators::SignWith::Foreign)
    }
}

async fn forged_tokens_naming_random_tenants_are_refused_without_fetching_for_them(app: TestApp) {
    let entra = &app.stack.entra;
    // A genuine token of a tenant never seen before works, from the common metadata alone.
    let newcomer = random_tenant();
    connect(&app, &newcomer).await;
    assert_eq!(entra.metadata_requests(&newcomer), Default::default());
    assert_eq!(
        entra
            .metadata_requests_by_tenant()
            .keys()
            .collect::<Vec<_>>(),
        ["common"]
    );
    // Let the keys go stale and the refetch gate open (OBOVAULT_SIGNING_KEYS_REFRESH=8s), so
    // that unknown kids could cause refetches.
    tokio::time::sleep(std::time::Duration::from_millis(8_300)).await;
    entra.reset_stats();
    let tenants: Vec<String> = (0..30).map(|_| random_tenant()).collect();
    let answers = futures::future::join_all(tenants.iter().enumerate().map(|(n, tenant)| {
        let app = &app;
        async move {
            // Unknown kids first, so one of them finds the gate open.
            let unknown_kid = n < 15;
            if n % 3 == 0 {
                let genuine = workload(app, tenant, SECOND_WORKLOAD);
                act(app, &forge(app, &genuine, unknown_kid), tenant, &new_user()).await
            } else {
                let spec = UserTokenSpec::new(tenant.as_str(), new_user());
                let genuine = app.stack.entra.mint_user_token(&spec);
                app.post_setup(&forge(app, &genuine, unknown_kid)).await
            }
        }
    }))
    .await;
    for answer in answers {
        assert_eq!(answer.status(), 401);
        let challenge = answer.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token");
    }
    for tenant in &tenants {
        assert_eq!(
            entra.metadata_requests(tenant),
            Default::default(),
            "{tenant}"
        );
    }
    let fetched = entra.metadata_requests_by_tenant();
    assert!(
        fetched.keys().all(|tenant| tenant == "common"),
        "{fetched:?}"
    );
    let common = entra.metadata_requests("common");
    assert!(common.jwks <= 1, "at most one key-set refetch: {common:?}");
    let stats = entra.stats();
    assert_eq!((stats.obo_grants, stats.refresh_grants), (0, 0));
}

async fn a_metadata_outage_keeps_serving_with_the_last_good_keys(app: TestApp) {
    let entra = &app.stack.entra;
    let tenant = random_tenant();
    let oid = connect(&app, &tenant).await;
    let user_token = || entra.mint_user_token(&UserTokenSpec::new(tenant.as_str(), oid.as_str()));
    let old_key_token = user_token();
    entra.inject_metadata_fault(emulators::Fault::always(emulators::FaultKind::Status(503)));
    let before = entra.metadata_requests("common");
    // The keys go stale (OBOVAULT_SIGNING_KEYS_REFRESH=2s); their refresh fails.
    tokio::time::sleep(std::time::Duration::from_millis(2_300)).await;
    let mut attempts = before;
    for _ in 0..100 {
        assert_eq!(app.get_setup(&user_token()).await.status(), 200);
        attempts = entra.metadata_requests("common");
        if attempts.discovery > before.discovery {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(attempts.discovery > before.discovery, "a refresh was tried");
    assert_eq!(app.get_setup(&user_token()).await.status(), 200);
    assert_acts(&app, &app.workload_token(), &tenant, &oid).await;
    // A key that appeared during the outage cannot be checked yet: 503, not 401.
    entra.rotate_signing_key();
    let response = app.get_setup(&user_token()).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(app.get_setup(&old_key_token).await.status(), 200);
    // Entra is back: the new key is fetched and accepted.
    entra.clear_metadata_faults();
    tokio::time::sleep(std::time::Duration::from_millis(2_300)).await;
    assert_eq!(app.get_setup(&user_token()).await.status(), 200);
    assert_eq!(app.get_setup(&old_key_token).await.status(), 200);
}

mod any_tenant_with_quick_refresh {
    use super::*;

    crate::on_both_backends!(
        spawn = |backend| {
            crate::helpers::spawn_app_with_owned(backend, crate::tenancy::any_tenant_refreshing_keys_every("8s"))
        };
        forged_tokens_naming_random_tenants_are_refused_without_fetching_for_them,
    );
}

mod any_tenant_during_an_outage {
    use super::*;

    crate::on_both_backends!(
        spawn = |backend| {
            crate::helpers::spawn_app_with_owned(backend, crate::tenancy::any_tenant_refreshing_keys_every("2s"))
        };
        a_metadata_outage_keeps_serving_with_the_last_good_keys,
    );
}
