//! Binding the listener first (so tests can use port 0 and the host's readiness probe gets an
//! answer as soon as possible), then serving until SIGTERM or Ctrl-C, letting in-flight
//! requests finish: a do-work that already redeemed a token must get to save it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::app::App;

/// A bound, not yet serving, service.
pub struct Application {
    listener: TcpListener,
    app: Arc<App>,
}

impl Application {
    /// Binds `127.0.0.1:port` (the host always connects to 127.0.0.1).
    pub async fn bind(port: u16, app: Arc<App>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .with_context(|| {
                format!("FUNCTIONS_CUSTOMHANDLER_PORT: cannot listen on 127.0.0.1:{port}")
            })?;
        Ok(Self { listener, app })
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
        axum::serve(self.listener, crate::http::router(self.app))
            .with_graceful_shutdown(shutdown)
            .await
            .context("the HTTP server failed")
    }
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
