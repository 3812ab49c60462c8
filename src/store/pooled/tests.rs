//! Real failures to connect, each judged by its kind: a server that cuts the connection
//! while TLS is negotiated, a port where nothing listens, a sign-in the server refuses; and an
//! idle connection the server dropped, replaced before use, and so is one released just before
//! another was seen lost.

use std::str::FromStr as _;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::io::AsyncReadExt as _;

use super::{connection, ping_when_idle, TRUSTED_IDLE};
use crate::store::StoreError;

fn pool(options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(options)
}

fn local(port: u16) -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("obo")
}

#[tokio::test]
async fn a_cut_while_tls_is_negotiated_is_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Reads each SSLRequest (8 bytes) and closes without an answer, as a server (or a load
    // balancer in front of it) that goes away mid-handshake.
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            let _ = socket.read_exact(&mut request).await;
        }
    });
    let error = connection(&pool(local(port).ssl_mode(PgSslMode::Require)))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Unavailable(sqlx::Error::Protocol(_))),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_port_where_nothing_listens_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    // sqlx retries a refused connection until the acquire timeout.
    let error = connection(&pool(local(port))).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_refused_sign_in_is_unavailable() {
    crate::store::harness::with_postgres(|url| async move {
        let options = PgConnectOptions::from_str(url.expose_secret())
            .unwrap()
            .username("no-such-role");
        let error = connection(&pool(options)).await.unwrap_err();
        // 28000 invalid_authorization_specification: role "no-such-role" does not exist.
        let code = match &error {
            StoreError::Unavailable(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
            _ => None,
        };
        assert_eq!(code.as_deref(), Some("28000"), "{error:?}");
    })
    .await;
}

#[tokio::test]
async fn a_connection_the_server_dropped_while_idle_is_replaced_before_use() {
    crate::store::harness::with_postgres(|url| async move {
        let options = PgConnectOptions::from_str(url.expose_secret()).unwrap();
        let pool = ping_when_idle(PgPoolOptions::new().max_connections(1))
            .connect_lazy_with(options.clone());
        let backend_of = |pool: PgPool| async move {
            let mut conn = connection(&pool).await.unwrap();
            pid(&mut conn).await.unwrap()
        };
        let first = backend_of(pool.clone()).await;
        // The release ping has put it back; it now sits idle past the trusted time, and the
        // server ends it (as a restart or a failover would).
        tokio::time::sleep(TRUSTED_IDLE + Duration::from_millis(300)).await;
        terminate(&options, first).await;
        // The pool's only connection is dead: taking one pings it, drops it and opens another,
        // so the statement runs instead of failing on the dead socket.
        let second = backend_of(pool.clone()).await;
        assert_ne!(first, second);
    })
    .await;
}

#[tokio::test]
async fn a_lost_connection_makes_the_others_released_before_it_pinged_before_use() {
    crate::store::harness::with_postgres(|url| async move {
        let options = PgConnectOptions::from_str(url.expose_secret()).unwrap();
        let pool = ping_when_idle(PgPoolOptions::new().max_connections(2))
            .connect_lazy_with(options.clone());
        // Two connections open, used and released together.
        let (mut one, mut two) = (
            connection(&pool).await.unwrap(),
            connection(&pool).await.unwrap(),
        );
        let pids = [pid(&mut one).await.unwrap(), pid(&mut two).await.unwrap()];
        drop((one, two));
        while pool.num_idle() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let released = std::time::Instant::now();
        // The server ends both at once, as a restart or a cut flow would.
        for pid in pids {
            terminate(&options, pid).await;
        }
        // Both were released a moment ago, so the first is handed out unpinged and fails…
        let mut first = connection(&pool).await.unwrap();
        let error = pid(&mut first).await.map_err(StoreError::from).unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        drop(first);
        // …and tells that the other may be lost too: it is pinged, found dead and replaced,
        // where it would have been handed out unpinged as just as recently released.
        let mut second = connection(&pool).await.unwrap();
        let fresh = pid(&mut second).await.unwrap();
        assert!(
            released.elapsed() < TRUSTED_IDLE,
            "the test took too long to show anything"
        );
        assert!(!pids.contains(&fresh), "{fresh} is one of {pids:?}");
    })
    .await;
}

/// The server process behind `conn`.
pub(super) async fn pid(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
}

/// Ends the server process `pid` from a connection of its own, as a restart or a failover
/// would end it, and waits until it is gone.
pub(super) async fn terminate(options: &PgConnectOptions, pid: i32) {
    let mut admin = PgConnection::connect_with(options).await.unwrap();
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(ended);
}
