//! Defaults and refusals of the settings, one variable at a time.

use std::time::Duration;

use super::*;
use crate::domain::TenantId;

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("OBOVAULT_TENANT_ID", "11111111-1111-1111-1111-111111111111"),
        ("OBOVAULT_CLIENT_ID", "22222222-2222-2222-2222-222222222222"),
        ("OBOVAULT_CLIENT_SECRET", "s3cret"),
        ("OBOVAULT_KEY_VAULT_URL", "https://vault.example/"),
    ]
}

fn error_with(extra: &[(&'static str, &'static str)]) -> SettingsError {
    let mut pairs = base();
    for (k, v) in extra {
        pairs.retain(|(name, _)| name != k);
        pairs.push((k, v));
    }
    match Settings::from_env(&Env::from_pairs(pairs)) {
        Ok(_) => panic!("settings {extra:?} must be refused"),
        Err(error) => error,
    }
}

#[test]
fn defaults_follow_the_spec() {
    let settings = Settings::from_env(&Env::from_pairs(base())).unwrap();
    assert_eq!(settings.port, 3000);
    assert_eq!(settings.refresh.after, Duration::from_secs(86_400));
    assert_eq!(settings.refresh.concurrency, 16);
    assert_eq!(settings.refresh.time_budget, Duration::from_secs(240));
    assert_eq!(settings.entra.setup_scope, "access_as_user");
    assert_eq!(
        settings.entra.signing_keys_refresh,
        Duration::from_secs(86_400)
    );
    assert_eq!(settings.entra.workload_role, "OboVault.Act");
    assert_eq!(settings.downstreams.first().allowed_paths, vec!["/me"]);
    assert!(settings.entra.client_capabilities.is_empty());
    assert_eq!(
        settings.downstreams.first().base_url.as_str(),
        "https://graph.microsoft.com/v1.0"
    );
    let tenant = TenantId::parse("11111111-1111-1111-1111-111111111111").unwrap();
    assert_eq!(
        settings.keys.key_name(&tenant),
        format!("obo-vault-{tenant}")
    );
    assert!(settings.entra.allowed_tenants.allows(&tenant));
    assert_eq!(settings.entra.workload_tenants.listed(), [tenant]);
    assert!(!settings.keys.auto_create && !settings.keys.emulator);
}

/// A wrong value is reported under its own variable; the secret is never in the message.
fn assert_refused_as(extra: &[(&'static str, &'static str)], variable: &str) {
    let error = error_with(extra);
    assert_eq!(error.variable, variable, "{extra:?}");
    assert!(!error.to_string().contains("s3cret"));
}

#[test]
fn errors_name_the_variable() {
    // One wrong value each: the error names that variable.
    let wrong_values = [
        ("OBOVAULT_TENANT_ID", ""),
        ("OBOVAULT_KEY_VAULT_URL", "http://vault.example/"),
        ("OBOVAULT_REFRESH_AFTER", "soon"),
        ("OBOVAULT_REFRESH_CONCURRENCY", "0"),
        ("OBOVAULT_CLIENT_SECRET", ""),
        ("OBOVAULT_ALLOWED_TENANTS", "contoso"),
        ("OBOVAULT_AUTHORITY_HOST", "http://login"),
        ("OBOVAULT_DOWNSTREAM_ALLOWED_PATHS", "me"),
        ("OBOVAULT_CLIENT_CAPABILITIES", "cp1,\"x\""),
        ("OBOVAULT_KEY_AUTO_CREATE", "maybe"),
        ("DATABASE_URL", "mysql://x"),
        ("OBOVAULT_SIGNING_KEYS_REFRESH", "0s"),
        ("OBOVAULT_WORKLOAD_TENANTS", "*"),
        (
            "OBOVAULT_WORKLOAD_TENANTS",
            "33333333-3333-3333-3333-333333333333",
        ),
    ];
    for (variable, value) in wrong_values {
        assert_refused_as(&[(variable, value)], variable);
    }
}

#[test]
fn client_credential_errors_name_the_choice_at_fault() {
    let assertion = ("OBOVAULT_CLIENT_ASSERTION", "managed-identity");
    let no_secret = ("OBOVAULT_CLIENT_SECRET", "");
    // Two credentials: the secret is the one to remove.
    assert_refused_as(&[assertion], "OBOVAULT_CLIENT_SECRET");
    // The assertion without a (valid) user-assigned identity.
    assert_refused_as(&[no_secret, assertion], "OBOVAULT_CLIENT_ASSERTION");
    assert_refused_as(
        &[no_secret, assertion, ("AZURE_CLIENT_ID", "my-identity")],
        "OBOVAULT_CLIENT_ASSERTION",
    );
}

#[test]
fn workload_tenants_are_allowed_tenants() {
    let (home, other) = (
        "11111111-1111-1111-1111-111111111111",
        "33333333-3333-3333-3333-333333333333",
    );
    let mut pairs = base();
    pairs.push(("OBOVAULT_ALLOWED_TENANTS", "*"));
    pairs.push((
        "OBOVAULT_WORKLOAD_TENANTS",
        "33333333-3333-3333-3333-333333333333, 11111111-1111-1111-1111-111111111111",
    ));
    let settings = Settings::from_env(&Env::from_pairs(pairs)).unwrap();
    let listed: Vec<&str> = settings
        .entra
        .workload_tenants
        .listed()
        .iter()
        .map(TenantId::as_str)
        .collect();
    assert_eq!(listed, [other, home]);
}

#[test]
fn managed_identity_assertions_name_a_user_assigned_identity() {
    let mut pairs = base();
    pairs.retain(|(name, _)| *name != "OBOVAULT_CLIENT_SECRET");
    pairs.push(("OBOVAULT_CLIENT_ASSERTION", "managed-identity"));
    pairs.push(("AZURE_CLIENT_ID", "0d3c5e3a-6f2b-4c8e-9a1d-7b2e4f6a8c0e"));
    let settings = Settings::from_env(&Env::from_pairs(pairs)).unwrap();
    assert!(matches!(
        settings.entra.credential,
        ClientCredential::ManagedIdentity { ref client_id }
            if client_id == "0d3c5e3a-6f2b-4c8e-9a1d-7b2e4f6a8c0e"
    ));
}

#[test]
fn durations_use_the_short_form() {
    assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
    assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("0s"), None);
    assert_eq!(parse_duration("forever"), None);
}

#[test]
fn logs_are_json_under_the_functions_host_whatever_the_plan() {
    let format = |extra: &[(&'static str, &'static str)]| {
        let mut pairs = base();
        pairs.extend_from_slice(extra);
        Settings::from_env(&Env::from_pairs(pairs))
            .unwrap()
            .log_format
    };
    assert_eq!(format(&[]), LogFormat::Text);
    assert_eq!(
        format(&[("FUNCTIONS_WORKER_RUNTIME", "custom")]),
        LogFormat::Json
    );
    // Flex Consumption: no FUNCTIONS_WORKER_RUNTIME, the host's worker id only.
    let worker = (
        "FUNCTIONS_CUSTOMHANDLER_WORKER_ID",
        "3f2a0c1e-0000-4000-8000-000000000001",
    );
    assert_eq!(format(&[worker]), LogFormat::Json);
    assert_eq!(
        format(&[worker, ("OBOVAULT_LOG_FORMAT", "text")]),
        LogFormat::Text
    );
}
