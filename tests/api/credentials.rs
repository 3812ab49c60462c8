//! The service's own credential against the strict Entra emulator: setup and do-work with a
//! certificate credential (signed client assertions) and with a user-assigned managed identity
//! trusted through a federated credential; an unregistered certificate fails setup with 502
//! and stores nothing.
//!
//! `azure_identity` reads `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` from the process
//! environment, so the managed-identity case runs the real `obo-vault` binary as a child
//! process with the Stack's settings, as App Service would start it.

use emulators::{
    ClientCertificate, ServiceCredential, StackOptions, DEFAULT_MANAGED_IDENTITY_CLIENT_ID,
    TOKEN_EXCHANGE_AUDIENCE,
};
use serde_json::json;

use crate::helpers::{new_user, spawn_app_on, Backend, TestApp};
use crate::service_process::{ServiceProcess, NO_SETTINGS};

fn options(credential: ServiceCredential) -> StackOptions {
    StackOptions {
        credential,
        ..StackOptions::default()
    }
}

/// Connects a user and acts for them once; both must succeed.
async fn setup_and_do_work(app: &TestApp) {
    let oid = new_user();
    let response = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let response = app
        .do_work(&oid, json!({"method": "GET", "path": "/me"}))
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert!(app.row(&oid).await.is_some());
    let stats = app.stack.entra.stats();
    assert_eq!((stats.obo_grants, stats.failed_grants), (1, 0), "{stats:?}");
}

async fn certificate_credential(backend: Backend) {
    let Some(app) = spawn_app_on(backend, options(ServiceCredential::Certificate), &[]).await
    else {
        return;
    };
    let env = app.stack.service_env();
    assert!(env
        .iter()
        .any(|(n, _)| n == "OBOVAULT_CLIENT_CERTIFICATE_PATH"));
    assert!(!env.iter().any(|(n, _)| n == "OBOVAULT_CLIENT_SECRET"));
    setup_and_do_work(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_credential_sqlite() {
    certificate_credential(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_credential_postgres() {
    certificate_credential(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_certificate_fails_setup_and_stores_nothing() {
    let unregistered =
        tokio::task::spawn_blocking(|| ClientCertificate::generate("not-registered"))
            .await
            .unwrap()
            .unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    unregistered.write_to(file.path()).unwrap();
    let path = file.path().display().to_string();
    let overrides = [("OBOVAULT_CLIENT_CERTIFICATE_PATH", path.as_str())];
    let Some(app) = spawn_app_on(
        Backend::Sqlite,
        options(ServiceCredential::Certificate),
        &overrides,
    )
    .await
    else {
        return;
    };
    let oid = new_user();
    let response = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(response.status(), 502, "{}", response.text().await.unwrap());
    assert!(app.row(&oid).await.is_none(), "nothing may be stored");
    let stats = app.stack.entra.stats();
    assert_eq!(stats.obo_grants, 0);
    assert!(stats.failed_grants >= 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_with_a_federated_credential_sqlite() {
    managed_identity_with_a_federated_credential(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_with_a_federated_credential_postgres() {
    managed_identity_with_a_federated_credential(Backend::Postgres).await;
}

async fn managed_identity_with_a_federated_credential(backend: Backend) {
    let Some(mut app) =
        spawn_app_on(backend, options(ServiceCredential::ManagedIdentity), &[]).await
    else {
        return;
    };
    let service = ServiceProcess::start(&app, NO_SETTINGS).await;
    let address = service.address.clone();
    // Every call of the harness now goes to the child process.
    app.address = address;
    setup_and_do_work(&app).await;
    let issued = app.stack.managed_identity.issued();
    assert!(!issued.is_empty());
    assert!(
        issued.iter().all(|t| t.resource == TOKEN_EXCHANGE_AUDIENCE
            && t.client_id == DEFAULT_MANAGED_IDENTITY_CLIENT_ID),
        "{issued:?}"
    );
    assert_eq!(app.stack.managed_identity.refused(), 0);
}
