//! The kept connection against a real Postgres: reused while fresh, given back when stale or
//! when the pool has nothing else, and never a dead one handed out after its idle time.

use std::str::FromStr as _;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool, Postgres};

use super::{HotConnection, Kept};
use crate::store::pooled::{connection, ping_when_idle, TRUSTED_IDLE};

fn pool(url: &str, max_connections: u32) -> PgPool {
    let options = PgConnectOptions::from_str(url).unwrap();
    ping_when_idle(PgPoolOptions::new().max_connections(max_connections))
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(options)
}

async fn backend(conn: &mut Kept<Postgres>) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut ***conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_read_that_succeeded_leaves_its_connection_for_the_next() {
    crate::store::harness::with_postgres(|url| async move {
        let pool = pool(url.expose_secret(), 4);
        let hot = HotConnection::default();
        let mut conn = hot.take(&pool).await.unwrap();
        let first = backend(&mut conn).await;
        hot.keep(conn, &pool);
        // Kept, not back in the pool: the pool has opened one connection and holds none idle.
        assert_eq!((pool.size(), pool.num_idle()), (1, 0));
        let mut conn = hot.take(&pool).await.unwrap();
        assert_eq!(backend(&mut conn).await, first);
    })
    .await;
}

#[tokio::test]
async fn a_connection_idle_past_the_trusted_time_goes_back_and_a_live_one_is_used() {
    crate::store::harness::with_postgres(|url| async move {
        let pool = pool(url.expose_secret(), 4);
        let hot = HotConnection::default();
        let mut conn = hot.take(&pool).await.unwrap();
        let first = backend(&mut conn).await;
        hot.keep(conn, &pool);
        // The server ends it while it waits (a restart or a failover would).
        tokio::time::sleep(TRUSTED_IDLE + Duration::from_millis(200)).await;
        let options = PgConnectOptions::from_str(url.expose_secret()).unwrap();
        let mut admin = PgConnection::connect_with(&options).await.unwrap();
        let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
            .bind(first)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(ended);
        let mut conn = hot.take(&pool).await.unwrap();
        assert_ne!(backend(&mut conn).await, first);
    })
    .await;
}

#[tokio::test]
async fn with_nothing_else_in_the_pool_nothing_is_kept() {
    crate::store::harness::with_postgres(|url| async move {
        let pool = pool(url.expose_secret(), 1);
        let hot = HotConnection::default();
        let mut conn = hot.take(&pool).await.unwrap();
        let first = backend(&mut conn).await;
        hot.keep(conn, &pool);
        // Another caller of the pool (a transaction, a write) gets the only connection at once
        // instead of waiting for the acquire timeout.
        let mut other = connection(&pool).await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *other)
            .await
            .unwrap();
        assert_eq!(pid, first);
    })
    .await;
}
