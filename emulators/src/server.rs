//! Running one emulator's axum router as an HTTPS (or, for the managed-identity endpoint,
//! plain HTTP) server on 127.0.0.1.
//!
//! Besides plain serving, this adds the one thing axum cannot express: answering a request with
//! *nothing* (the `Unreachable` fault). A handler returns [`drop_connection()`]; the wrapper
//! service below turns that response into a service error, and hyper then abandons the
//! connection (HTTP/1.1) or resets the stream (HTTP/2) without sending a response.

use std::{
    fmt,
    net::{SocketAddr, TcpListener},
    sync::Arc,
};

use anyhow::Context as _;
use axum::{body::Body, http::Request, response::Response, Router};
use axum_server::{tls_rustls::RustlsConfig, Handle};
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

/// Response extension telling the wrapper service to drop the connection instead of answering.
#[derive(Debug, Clone, Copy)]
struct DropConnection;

/// A response that is never sent: the connection is dropped instead.
pub(crate) fn drop_connection() -> Response {
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(DropConnection);
    response
}

/// The service error that makes hyper abandon the connection.
#[derive(Debug)]
struct ConnectionDropped;

impl fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("emulator fault: connection dropped without an answer")
    }
}

impl std::error::Error for ConnectionDropped {}

/// Binds a listener on `127.0.0.1:{port}` (`0` = any free port), so the URL is known before the
/// router (which needs it for issuers and ids) is built.
pub(crate) fn bind(port: u16) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    // Tokio adopts the socket as is; it must already be non-blocking.
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// An HTTPS server task; dropping it stops the server.
#[derive(Debug)]
pub(crate) struct RunningServer {
    handle: Handle,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Serves `router` over TLS on `listener`, in a task on the current tokio runtime.
    pub(crate) fn spawn(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        router: Router,
    ) -> anyhow::Result<Self> {
        let addr: SocketAddr = listener.local_addr()?;
        let handle = Handle::new();
        let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
            let router = router.clone();
            async move {
                let response = match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                if response.extensions().get::<DropConnection>().is_some() {
                    return Err::<Response, ConnectionDropped>(ConnectionDropped);
                }
                Ok(response)
            }
        });
        let server = axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(tls))
            .handle(handle.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = server.serve(tower::make::Shared::new(service)).await {
                tracing::warn!(%addr, %error, "emulator server stopped");
            }
        });
        Ok(Self { handle, task })
    }
}

impl RunningServer {
    /// Serves `router` over plain HTTP on `listener` (the managed-identity endpoint, which is
    /// `http://` on App Service too), in a task on the current tokio runtime.
    pub(crate) fn spawn_plain(listener: TcpListener, router: Router) -> anyhow::Result<Self> {
        let addr: SocketAddr = listener.local_addr()?;
        let handle = Handle::new();
        let server = axum_server::from_tcp(listener).handle(handle.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = server.serve(router.into_make_service()).await {
                tracing::warn!(%addr, %error, "emulator server stopped");
            }
        });
        Ok(Self { handle, task })
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        self.task.abort();
    }
}
