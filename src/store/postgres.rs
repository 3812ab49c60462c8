//! The production backend: Postgres through a `PgPool`. Timestamps are `timestamptz`, spans of
//! time are bound as seconds, and a batch of grants is saved in one `UNNEST` statement (a
//! batch of accesses in two: the append and the trim).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};
use sqlx::PgPool;

use super::dialect::Dialect;
use super::exec::StoreBackend;
use super::pooled::{connection, transaction};
use super::{sql, AccessRecord, GrantSave, StoreError};
use crate::config::DatabaseAuth;
use crate::events::outbox;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Server-side bounds on every pooled session, so a stuck statement or a black-holed
/// connection cannot hold a request or a timer run past its budget: the server cancels a
/// statement after 30 s (every statement here is a short indexed one) and ends a session
/// left idle inside a transaction; its TCP keepalive probes (after 60 s idle, every 10 s,
/// 3 unanswered end it) keep idle flows alive through load balancers and notice a vanished
/// client. (sqlx offers no client-side socket options; the pool's idle timeout and
/// acquire-time check cover the client side.)
const SESSION_SETTINGS: [(&str, &str); 5] = [
    ("statement_timeout", "30s"),
    ("idle_in_transaction_session_timeout", "60s"),
    ("tcp_keepalives_idle", "60"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
];

/// A batch of accesses, one array per column (`$1` tenants, `$2` users, then as
/// `sql::INSERT_ACCESS`), kept in their order; users deleted meanwhile get no history.
const INSERT_ACCESSES: &str = "
    INSERT INTO user_token_accesses
        (tenant_id, user_id, at, caller_app_id, method, path, downstream_status, refreshed,
         caller_tenant_id, downstream)
    SELECT a.tenant_id, a.user_id, a.at, a.caller_app_id, a.method, a.path,
           a.downstream_status, a.refreshed, a.caller_tenant_id, a.downstream
    FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
                $7::int4[], $8::bool[], $9::text[], $10::text[])
         WITH ORDINALITY AS a(tenant_id, user_id, at, caller_app_id, method, path,
                              downstream_status, refreshed, caller_tenant_id, downstream, n)
    WHERE EXISTS (SELECT 1 FROM user_tokens t
                  WHERE t.tenant_id = a.tenant_id AND t.user_id = a.user_id)
    ORDER BY a.n";

/// `$1` tenants, `$2` users (repeats allowed), `$3` how many to keep: each user's history
/// beyond its `$3` latest accesses goes.
const TRIM_ACCESSES: &str = "
    DELETE FROM user_token_accesses WHERE id IN (
        SELECT id FROM (
            SELECT a.id, row_number() OVER (
                       PARTITION BY a.tenant_id, a.user_id ORDER BY a.at DESC, a.id DESC
                   ) AS position
            FROM user_token_accesses a
            JOIN (SELECT DISTINCT tenant_id, user_id
                  FROM UNNEST($1::text[], $2::text[]) AS u(tenant_id, user_id)) u
              ON a.tenant_id = u.tenant_id AND a.user_id = u.user_id
        ) ranked
        WHERE position > $3
    )";

/// The Postgres spelling of the store.
pub(crate) struct PostgresDialect;

/// Opens a pool on `url` and brings the schema up to date. Connections are made lazily, but
/// the migration needs one, so an unreachable server fails here.
pub(crate) async fn open(url: &SecretString, auth: &DatabaseAuth) -> Result<PgPool, StoreError> {
    let base = PgConnectOptions::from_str(url.expose_secret())
        .map_err(StoreError::from)?
        .application_name("obo-vault");
    let (base, renewal) = crate::database_auth::sign_in(base, url, auth)
        .await
        .map_err(|error| StoreError::Other(error.into()))?;
    let pool = super::pooled::ping_when_idle(PgPoolOptions::new())
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        // Closed before a load balancer or NAT forgets an idle flow (Azure drops idle flows
        // silently after about 4 minutes), so no request inherits a dead connection.
        .idle_timeout(Duration::from_secs(120))
        .max_lifetime(Duration::from_secs(30 * 60))
        .connect_lazy_with(base.clone().options(SESSION_SETTINGS));
    // Migrations run on a connection of their own, without the statement timeout: a future
    // migration may rightly take longer than any request statement. sqlx holds an advisory
    // lock while migrating, so instances starting together wait for each other.
    let migrating = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(base);
    let migrated = match connection(&migrating).await {
        Ok(mut conn) => MIGRATOR
            .run_direct(&mut *conn)
            .await
            .map_err(super::error::migrate_error),
        Err(error) => Err(error),
    };
    migrating.close().await;
    migrated?;
    if let Some(renewal) = renewal {
        renewal.spawn(&pool);
    }
    Ok(pool)
}

impl Dialect for PostgresDialect {
    type Db = sqlx::Postgres;
    type Stamp = DateTime<Utc>;
    /// Seconds, as `sql::clock_plus!` multiplies them by `interval '1 second'`.
    type Span = f64;

    const SYSTEM: &'static str = "postgresql";
    const SQL: sql::Statements = sql::POSTGRES;
    const OUTBOX: outbox::sql::Statements = outbox::sql::POSTGRES;

    fn stamp(time: DateTime<Utc>) -> Self::Stamp {
        time
    }

    fn unstamp(stamp: Self::Stamp) -> Result<DateTime<Utc>, StoreError> {
        Ok(stamp)
    }

    fn event_stamp(time: DateTime<Utc>) -> Self::Stamp {
        time
    }

    fn event_unstamp(stamp: Self::Stamp) -> Result<DateTime<Utc>, StoreError> {
        Ok(stamp)
    }

    fn span(duration: Duration) -> f64 {
        duration.as_secs_f64()
    }

    fn span_back(duration: Duration) -> f64 {
        -duration.as_secs_f64()
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    /// Every save, one or many, in one statement (`SAVE_MANY_POSTGRES`): one round trip and
    /// one commit.
    async fn save_grants(
        pool: &PgPool,
        saves: &[GrantSave<'_>],
        owner: &str,
    ) -> Result<Vec<bool>, StoreError> {
        let texts = |field: for<'s> fn(&'s GrantSave<'_>) -> &'s str| {
            saves.iter().map(field).collect::<Vec<&str>>()
        };
        let revisions: Vec<i64> = saves.iter().map(|s| s.expected_revision).collect();
        let sealed: Vec<&[u8]> = saves
            .iter()
            .map(|s| s.grant.sealed_refresh_token.as_slice())
            .collect();
        let refreshed_at: Vec<Option<DateTime<Utc>>> =
            saves.iter().map(|s| s.refreshed_at).collect();
        let positions: Vec<i64> = sqlx::query_scalar(sql::SAVE_MANY_POSTGRES)
            .bind(texts(|s| s.key.tenant_id.as_str()))
            .bind(texts(|s| s.key.user_id.as_str()))
            .bind(revisions)
            .bind(sealed)
            .bind(texts(|s| &s.grant.key_name))
            .bind(texts(|s| &s.grant.key_version))
            .bind(refreshed_at)
            .bind(owner)
            .fetch_all(&mut *connection(pool).await?)
            .await?;
        let mut saved = vec![false; saves.len()];
        for position in positions {
            if let Some(slot) = usize::try_from(position - 1)
                .ok()
                .and_then(|i| saved.get_mut(i))
            {
                *slot = true;
            }
        }
        Ok(saved)
    }

    /// Two statements whatever the batch's size (one round trip per access and one per user
    /// made the writer the service's busiest client of the database).
    async fn record_accesses(
        pool: &PgPool,
        records: &[AccessRecord],
        keep: i64,
    ) -> Result<(), StoreError> {
        let texts = |field: for<'s> fn(&'s AccessRecord) -> &'s str| {
            records.iter().map(field).collect::<Vec<&str>>()
        };
        let maybe_texts = |field: for<'s> fn(&'s AccessRecord) -> Option<&'s str>| {
            records.iter().map(field).collect::<Vec<Option<&str>>>()
        };
        let tenants = texts(|r| r.key.tenant_id.as_str());
        let users = texts(|r| r.key.user_id.as_str());
        let mut tx = transaction(pool).await?;
        sqlx::query(INSERT_ACCESSES)
            .bind(&tenants)
            .bind(&users)
            .bind(records.iter().map(|r| r.at).collect::<Vec<_>>())
            .bind(texts(|r| &r.caller_app_id))
            .bind(texts(|r| &r.method))
            .bind(texts(|r| &r.path))
            .bind(
                records
                    .iter()
                    .map(|r| r.downstream_status)
                    .collect::<Vec<_>>(),
            )
            .bind(records.iter().map(|r| r.refreshed).collect::<Vec<_>>())
            .bind(maybe_texts(|r| {
                r.caller_tenant_id.as_ref().map(|t| t.as_str())
            }))
            .bind(maybe_texts(|r| r.downstream.as_deref()))
            .execute(&mut *tx)
            .await?;
        sqlx::query(TRIM_ACCESSES)
            .bind(&tenants)
            .bind(&users)
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl StoreBackend for PostgresDialect {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pooled_sessions_carry_the_timeouts_and_keepalives() {
        super::super::harness::with_postgres(|url| async move {
            let pool = open(&url, &DatabaseAuth::Password).await.expect("open");
            for (name, value) in [
                ("statement_timeout", "30s"),
                ("idle_in_transaction_session_timeout", "1min"),
                ("tcp_keepalives_idle", "60"),
            ] {
                let shown: String = sqlx::query_scalar(&format!("SHOW {name}"))
                    .fetch_one(&pool)
                    .await
                    .expect("show");
                assert_eq!(shown, value, "{name}");
            }
        })
        .await;
    }
}
