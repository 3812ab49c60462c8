//! The kept connection against a real Postgres: reused while fresh, given back when stale or
//! when the pool has nothing else, and never a dead one handed out after its idle time or after
//! another connection was seen lost.

use std::str::FromStr as _;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::HotConnection;
use crate::store::pooled::tests::{pid, terminate};
use crate::store::pooled::{connection, ping_when_idle, TRUSTED_IDLE};
use crate::store::StoreError;

fn pool(url: &str, max_connections: u32) -> PgPool {
    let options = PgConnectOptions::from_str(url).unwrap();
    ping_when_idle(PgPoolOptions::new().max_connections(max_connections))
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(options)
}

/// A read through `hot` that keeps its connection; the server process it ran on.
async fn read(hot: &HotConnection<Postgres>, pool: &PgPool) -> i32 {
    let mut conn = hot.take(pool).await.unwrap();
    let process = pid(&mut conn).await.unwrap();
    hot.keep(conn, pool);
    process
}

#[tokio::test]
async fn a_read_that_succeeded_leaves_its_connection_for_the_next() {
    crate::store::harness::with_postgres(|url| async move {
        let pool = pool(url.expose_secret(), 4);
        let hot = HotConnection::default();
        let first = read(&hot, &pool).await;
        // Kept, not back in the pool: the pool has opened one connection and holds none idle.
        assert_eq!((pool.size(), pool.num_idle()), (1, 0));
        assert_eq!(read(&hot, &pool).await, first);
    })
    .await;
}

#[tokio::test]
async fn a_connection_idle_past_the_trusted_time_goes_back_and_a_live_one_is_used() {
    crate::store::harness::with_postgres(|url| async move {
        let pool = pool(url.expose_secret(), 4);
        let hot = HotConnection::default();
        let first = read(&hot, &pool).await;
        // The server ends it while it waits (a restart or a failover would).
        tokio::time::sleep(TRUSTED_IDLE + Duration::from_millis(200)).await;
        terminate(
            &PgConnectOptions::from_str(url.expose_secret()).unwrap(),
            first,
        )
        .await;
        assert_ne!(read(&hot, &pool).await, first);
    })
    .await;
}

#[tokio::test]
async fn a_kept_connection_is_not_reused_once_another_was_seen_lost() {
    crate::store::harness::with_postgres(|url| async move {
        let options = PgConnectOptions::from_str(url.expose_secret()).unwrap();
        let pool = pool(url.expose_secret(), 4);
        let hot = HotConnection::default();
        let kept = read(&hot, &pool).await;
        // The server ends the kept connection and another one together (a restart would); a
        // statement on the other finds its connection lost.
        let mut other = connection(&pool).await.unwrap();
        let other_pid = pid(&mut other).await.unwrap();
        terminate(&options, kept).await;
        terminate(&options, other_pid).await;
        let error = pid(&mut other).await.map_err(StoreError::from).unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        // The kept one is within its trusted time but released before the loss: it goes back
        // to the pool, which finds it dead, and the read runs on a live connection.
        let fresh = read(&hot, &pool).await;
        assert!(![kept, other_pid].contains(&fresh), "{fresh}");
    })
    .await;
}

#[tokio::test]
async fn with_nothing_else_in_the_pool_nothing_is_kept() {
    crate::store::harness::with_postgres(|url| async move {
        let pool = pool(url.expose_secret(), 1);
        let hot = HotConnection::default();
        let first = read(&hot, &pool).await;
        // Another caller of the pool (a transaction, a write) gets the only connection at once
        // instead of waiting for the acquire timeout.
        let mut other = connection(&pool).await.unwrap();
        assert_eq!(pid(&mut other).await.unwrap(), first);
    })
    .await;
}

#[test]
fn a_kept_connection_outlives_its_runtime_without_a_panic() {
    // A store dropped after the runtime that ran it ended (a test's, or a process's at exit)
    // must not panic: sqlx would hand the kept connection back through a spawned task.
    let url = crate::store::harness::server_url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (pool, hot) = runtime.block_on(async {
        let pool = pool(&url, 4);
        let hot = HotConnection::default();
        match hot.take(&pool).await {
            Ok(mut conn) => {
                pid(&mut conn).await.unwrap();
                hot.keep(conn, &pool);
            }
            // No Postgres here: nothing is kept, and the drop below has nothing to do.
            Err(_) => assert!(std::env::var_os("CI").is_none(), "CI needs Postgres"),
        }
        (pool, hot)
    });
    drop(runtime);
    drop(hot);
    drop(pool);
}
