//! Binding the listener first (so tests can use port 0 and the host's readiness probe gets an
//! answer as soon as possible), then serving until SIGTERM or Ctrl-C, letting in-flight
//! requests finish: a do-work that already redeemed a token must get to save it.
//!
//! `serve` listens before the database is reachable: the host gives up on a handler that does
//! not answer `GET /` within its start-up timeout, and restarts one that exits only a few
//! times. Until the database is open and migrated, the [`Gate`] answers for the service
//! (`http::starting`); the store is opened in the background, retrying for as long as it takes.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::app::{App, Prepared};
use crate::store::{self, TokenStore};

/// A bound, not yet serving, service.
pub struct Application {
    listener: TcpListener,
    gate: Gate,
}

/// The service's router once the app is built; until then requests get the "starting" answers.
#[derive(Clone, Default)]
pub struct Gate(Arc<OnceLock<Router>>);

impl Gate {
    /// Serves `app` from now on.
    pub fn open(&self, app: Arc<App>) {
        // Grant events are delivered within seconds while the app is served.
        let _delivery = app.events.as_ref().map(crate::events::Delivery::spawn);
        let _ = self.0.set(crate::http::router(app));
    }

    /// Whether the app is being served.
    pub fn is_open(&self) -> bool {
        self.0.get().is_some()
    }

    async fn handle(self, request: Request) -> Response {
        match self.0.get() {
            Some(router) => router
                .clone()
                .oneshot(request)
                .await
                .unwrap_or_else(|never| match never {}),
            None => crate::http::starting::answer(request).await,
        }
    }

    fn router(self) -> Router {
        Router::new().fallback(move |request: Request| self.clone().handle(request))
    }
}

impl Application {
    /// Binds `127.0.0.1:port` (the host always connects to 127.0.0.1) and serves `app`.
    pub async fn bind(port: u16, app: Arc<App>) -> anyhow::Result<Self> {
        let application = Self::bind_starting(port).await?;
        application.gate.open(app);
        Ok(application)
    }

    /// Binds `127.0.0.1:port`; requests get the "starting" answers until [`Gate::open`].
    pub async fn bind_starting(port: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .with_context(|| {
                format!("FUNCTIONS_CUSTOMHANDLER_PORT: cannot listen on 127.0.0.1:{port}")
            })?;
        Ok(Self {
            listener,
            gate: Gate::default(),
        })
    }

    /// The gate to open once the app is built.
    pub fn gate(&self) -> Gate {
        self.gate.clone()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(self.listener, self.gate.router())
            .with_graceful_shutdown(shutdown)
            .await
            .context("the HTTP server failed")
    }
}

/// Opens the database and builds the app, retrying an unreachable (or not yet migratable)
/// database for as long as it takes, then opens `gate`.
pub async fn open_when_database_ready(prepared: Prepared, gate: Gate) {
    let url = prepared.database_url().clone();
    let auth = prepared.database_auth().clone();
    let events = prepared.emits_events();
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build();
    let store: Arc<dyn TokenStore> = loop {
        match store::open_as(&url, &auth, events).await {
            Ok(store) => break store,
            Err(error) => {
                let wait = delays.next().unwrap_or(Duration::from_secs(5));
                // StoreError's text and its sqlx source never quote the URL (it may hold a
                // password).
                tracing::warn!(
                    error = %crate::http::problem::format_chain(&error),
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "the database is not ready; answering 503 until it is"
                );
                tokio::time::sleep(wait).await;
            }
        }
    };
    gate.open(prepared.with_store(store));
    tracing::info!("database open and migrated; serving");
}

/// Resolves on SIGTERM (the host stopping us) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down; finishing in-flight requests");
}
