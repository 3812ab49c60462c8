//! What a hostile request must not change: the rows, and the emulators' counters.

use crate::helpers::{Backend, TestApp};

/// Everything a hostile request must not change.
#[derive(Debug, PartialEq)]
pub(super) struct World {
    pub(super) rows: String,
    pub(super) obo_grants: u64,
    pub(super) refresh_grants: u64,
    pub(super) failed_grants: u64,
    pub(super) client_credentials_grants: u64,
    pub(super) key_vault_sets: u64,
    pub(super) downstream_requests: u64,
}

pub(super) enum Db {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl Db {
    pub(super) async fn open(app: &TestApp) -> Self {
        match app.backend {
            Backend::Postgres => {
                Self::Postgres(sqlx::PgPool::connect(&app.database.url).await.unwrap())
            }
            Backend::Sqlite => {
                Self::Sqlite(sqlx::SqlitePool::connect(&app.database.url).await.unwrap())
            }
        }
    }

    /// Every column of every row of both tables, as text.
    pub(super) async fn dump(&self) -> String {
        let mut out = String::new();
        for table in ["user_tokens", "user_token_accesses"] {
            let text: String = match self {
                Self::Postgres(pool) => sqlx::query_scalar(&format!(
                    "SELECT COALESCE(string_agg(t::text, '|' ORDER BY t::text), '') FROM {table} t"
                ))
                .fetch_one(pool)
                .await
                .unwrap(),
                Self::Sqlite(pool) => {
                    let columns: Vec<String> = sqlx::query_scalar(&format!(
                        "SELECT name FROM pragma_table_info('{table}')"
                    ))
                    .fetch_all(pool)
                    .await
                    .unwrap();
                    let row = columns
                        .iter()
                        .map(|c| format!("quote({c})"))
                        .collect::<Vec<_>>()
                        .join(" || ',' || ");
                    sqlx::query_scalar(&format!(
                        "SELECT COALESCE(group_concat(r, '|'), '') FROM (SELECT {row} AS r FROM {table} ORDER BY r)"
                    ))
                    .fetch_one(pool)
                    .await
                    .unwrap()
                }
            };
            out.push_str(table);
            out.push(':');
            out.push_str(&text);
            out.push('\n');
        }
        out
    }
}

pub(super) async fn world(app: &TestApp, db: &Db) -> World {
    let entra = app.stack.entra.stats();
    World {
        rows: db.dump().await,
        obo_grants: entra.obo_grants,
        refresh_grants: entra.refresh_grants,
        failed_grants: entra.failed_grants,
        client_credentials_grants: entra.client_credentials_grants,
        key_vault_sets: app.stack.key_vault.stats().set,
        downstream_requests: app.stack.downstream.stats().requests,
    }
}
