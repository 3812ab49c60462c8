use std::str::FromStr as _;

use super::*;

#[test]
fn renewal_comes_at_half_the_remaining_lifetime_and_never_in_a_tight_loop() {
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::hours(24);
    assert_eq!(renewal_wait(now + day, now), Duration::from_secs(12 * 3600));
    assert_eq!(
        renewal_wait(now + time::Duration::seconds(6), now),
        Duration::from_secs(3)
    );
    // Expired or about to: at most once a second.
    assert_eq!(renewal_wait(now - day, now), MIN_RENEWAL_WAIT);
    assert_eq!(
        renewal_wait(now + time::Duration::milliseconds(500), now),
        MIN_RENEWAL_WAIT
    );
}

#[test]
fn failed_renewals_back_off_up_to_a_minute() {
    let waits: Vec<u64> = (1..=9).map(|n| retry_wait(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(retry_wait(u32::MAX), MAX_RETRY_WAIT);
}

#[test]
fn an_sslmode_in_the_url_is_kept_and_its_absence_noticed() {
    for url in [
        "postgres://app@db.example/obo?sslmode=require",
        "postgres://app@db.example/obo?application_name=x&ssl-mode=disable",
    ] {
        assert!(names_ssl_mode(url), "{url}");
    }
    if std::env::var_os("PGSSLMODE").is_none() {
        assert!(!names_ssl_mode("postgres://app@db.example/obo"));
        assert!(!names_ssl_mode(
            "postgres://app@db.example/obo?sslrootcert=/ca.pem"
        ));
    }
}

#[test]
fn entra_verifies_the_server_unless_the_url_chooses_a_mode() {
    let mode = |url: &str| {
        let options = PgConnectOptions::from_str(url).unwrap();
        format!("{:?}", with_tls(options, url).get_ssl_mode())
    };
    if std::env::var_os("PGSSLMODE").is_none() {
        assert_eq!(mode("postgres://app@db.example/obo"), "VerifyFull");
    }
    assert_eq!(
        mode("postgres://app@db.example/obo?sslmode=require"),
        "Require"
    );
    assert_eq!(
        mode("postgres://app@127.0.0.1/obo?sslmode=disable"),
        "Disable"
    );
}

#[tokio::test]
async fn password_authentication_leaves_the_options_alone() {
    let url = SecretString::from("postgres://app:pw@db.example/obo".to_owned());
    let options = PgConnectOptions::from_str(url.expose_secret()).unwrap();
    let (signed_in, renewal) = sign_in(options, &url, &DatabaseAuth::Password)
        .await
        .unwrap();
    assert!(renewal.is_none());
    assert!(matches!(signed_in.get_ssl_mode(), PgSslMode::Prefer));
    assert!(check(&DatabaseAuth::Password).await.is_ok());
}

#[test]
fn a_token_never_shows_in_debug_output() {
    let token = DatabaseToken {
        password: SecretString::from("eyJ0eXAiOiJKV1Qi.secret.part".to_owned()),
        expires_on: OffsetDateTime::UNIX_EPOCH,
    };
    let shown = format!("{token:?}");
    assert!(!shown.contains("eyJ0eXAi"), "{shown}");
    assert!(shown.contains("expires_on"), "{shown}");
}

#[test]
fn no_token_messages_name_the_setting_and_the_identity() {
    let identity = EntraIdentity {
        client_id: Some("6b0e5e8c-2f3d-4a71-9c58-3e1d7a4b9f20".to_owned()),
    };
    let message = identity.no_token("refused".to_owned()).to_string();
    assert!(
        message.starts_with("OBOVAULT_DATABASE_AUTH=entra:"),
        "{message}"
    );
    assert!(
        message.contains("AZURE_CLIENT_ID=6b0e5e8c-2f3d-4a71-9c58-3e1d7a4b9f20"),
        "{message}"
    );
    assert!(message.ends_with(": refused"), "{message}");
}
