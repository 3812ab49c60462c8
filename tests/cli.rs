//! The operator commands, run as the real binary against the emulators: a key rotation,
//! `refresh --reseal-only` over 10,000 rows with no Entra call, and `status` reporting it.

use std::process::Command;

use chrono::Utc;
use emulators::{Stack, StackOptions};
use obo_vault::crypto::{self, KeyLabel};
use obo_vault::domain::{RefreshToken, TenantId, UserId, UserKey};
use obo_vault::store::SealedGrant;
use serde_json::Value;

const ROWS: usize = 10_000;

struct Cli {
    env: Vec<(String, String)>,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Value {
        let output = Command::new(env!("CARGO_BIN_EXE_obo-vault"))
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "warn")
            .output()
            .expect("the binary runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{args:?}: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{args:?} printed {stdout}"))
    }
}

async fn database_url(backend: &str, dir: &std::path::Path) -> Option<String> {
    if backend == "sqlite" {
        return Some(format!(
            "sqlite://{}?mode=rwc",
            dir.join("cli.db").display()
        ));
    }
    let server = std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = match sqlx::PgPool::connect(&server).await {
        Ok(pool) => pool,
        Err(error) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: Postgres does not answer ({error})");
            return None;
        }
        Err(error) => panic!("Postgres is required in CI: {error}"),
    };
    let name = format!("obo_cli_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    Some(format!("{}/{name}", server.rsplit_once('/').unwrap().0))
}

async fn rotation_and_reseal_only_over_ten_thousand_rows(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = database_url(backend, dir.path()).await else {
        return;
    };
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let tenant = stack.options().tenant_id.clone();
    let mut env = stack.service_env();
    env.push(("DATABASE_URL".into(), url.clone()));
    let url_for_drop = url.clone();
    let cli = Cli { env };

    let key_name = format!("obo-vault-{tenant}");
    let first = stack.key_vault.create_key(&key_name);
    let raw = stack.key_vault.secret_value(&key_name, &first).unwrap();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, raw).unwrap();
    let key = crypto::DataKey::from_bytes(&bytes).unwrap();
    let store = obo_vault::store::connect(&secrecy::SecretString::from(url))
        .await
        .unwrap();
    let oids: Vec<String> = (0..ROWS)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let tokens = stack.entra.issue_refresh_tokens(&tenant, &oids);
    let fresh = Utc::now();
    for (oid, token) in oids.iter().zip(&tokens) {
        let owner = UserKey {
            tenant_id: TenantId::parse(&tenant).unwrap(),
            user_id: UserId::parse(oid).unwrap(),
        };
        let label = KeyLabel {
            name: &key_name,
            version: &first,
        };
        let sealed = crypto::seal(&RefreshToken::new(token.clone()), &owner, label, &key).unwrap();
        let grant = SealedGrant {
            sealed_refresh_token: sealed,
            key_name: key_name.clone(),
            key_version: first.clone(),
        };
        store
            .connect(&owner, &grant, "User.Read", fresh)
            .await
            .unwrap();
    }

    let rotated = cli.run(&["keys", "rotate", "--tenant", &tenant, "--json"]);
    let new_version = rotated["rotated"][0]["keyVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_version, first);
    let before = cli.run(&["status", "--json"]);
    let pending = before["keys"].as_array().unwrap();
    assert!(
        pending.iter().any(|k| k["keyVersion"] == first.as_str()
            && k["rows"] == ROWS
            && k["latest"] == false),
        "{before}"
    );

    stack.entra.reset_stats();
    stack.key_vault.reset_stats();
    let summary = cli.run(&["refresh", "--reseal-only", "--json"]);
    assert_eq!(summary["resealed"], ROWS, "{summary}");
    assert_eq!(summary["refreshed"], 0);
    assert_eq!(summary["failed"], 0);
    let entra = stack.entra.stats();
    assert_eq!(
        entra.refresh_grants + entra.failed_grants + entra.obo_grants,
        0,
        "no Entra call"
    );
    let vault = stack.key_vault.stats();
    assert!(vault.get_latest + vault.get_version <= 3, "{vault:?}");
    eprintln!(
        "{backend}: re-sealed {ROWS} rows in {} ms",
        summary["duration_ms"]
    );

    let after = cli.run(&["status", "--json"]);
    let keys = after["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{after}");
    assert_eq!(keys[0]["keyVersion"], new_version.as_str());
    assert_eq!(keys[0]["rows"], ROWS);
    assert_eq!(keys[0]["latest"], true);
    // Every row still opens, under the new version.
    let row = store
        .find(&UserKey {
            tenant_id: TenantId::parse(&tenant).unwrap(),
            user_id: UserId::parse(&oids[0]).unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.key_version, new_version);
    if backend == "postgres" {
        drop(store);
        drop_database(&url_for_drop).await;
    }
}

async fn drop_database(url: &str) {
    let (server, name) = url.rsplit_once('/').unwrap();
    let admin = sqlx::PgPool::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rotation_and_reseal_only() {
    rotation_and_reseal_only_over_ten_thousand_rows("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rotation_and_reseal_only() {
    rotation_and_reseal_only_over_ten_thousand_rows("postgres").await;
}
