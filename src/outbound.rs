//! The one way this service builds outbound HTTPS clients: rustls with the system roots plus
//! `OBOVAULT_EXTRA_CA_CERTS`, redirects off (a token request must never follow a redirect),
//! timeouts always set, HTTP/1.1; the one way their answers are read: bounded. Every outbound
//! request is also sent through here ([`SendTraced`], [`TracedTransport`]), which is where
//! telemetry sees it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::telemetry::client as calls;
pub use crate::telemetry::Dependency;

/// Builds a client trusting the system roots and the CAs in `extra_ca_certs`.
pub fn client(extra_ca_certs: Option<&Path>, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    builder(extra_ca_certs, timeout)?
        .https_only(true)
        .build()
        .context("Failed to build the HTTPS client")
}

/// The telemetry exporters' client: the same, except that it may also speak plain HTTP (the
/// settings allow `http://` only to a collector on localhost).
pub(crate) fn collector_client(
    extra_ca_certs: Option<&Path>,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    builder(extra_ca_certs, timeout)?
        .build()
        .context("Failed to build the telemetry HTTP client")
}

fn builder(
    extra_ca_certs: Option<&Path>,
    timeout: Duration,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("obo-vault/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        // A pool of HTTP/1.1 connections rather than one multiplexed HTTP/2 connection: the
        // timer's concurrent token requests then spread over connections and threads instead
        // of queueing in one connection task (refresh-tokens at concurrency 64 went from
        // ~1,000 to ~1,200 users/s in docs/PERFORMANCE.md).
        .http1_only();
    if let Some(path) = extra_ca_certs {
        let pem = std::fs::read(path)
            .with_context(|| format!("OBOVAULT_EXTRA_CA_CERTS: cannot read {}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .context("OBOVAULT_EXTRA_CA_CERTS: not a PEM certificate bundle")?;
        builder = builder.tls_certs_merge(certificates);
    }
    Ok(builder)
}

/// `send()` with a client span and a latency measurement when the call is part of a traced
/// invocation.
pub trait SendTraced {
    /// Sends the request to `dependency`.
    fn send_traced(
        self,
        dependency: Dependency,
    ) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send;
}

impl SendTraced for reqwest::RequestBuilder {
    async fn send_traced(self, dependency: Dependency) -> reqwest::Result<reqwest::Response> {
        let (client, request) = self.build_split();
        let request = request?;
        let call = calls::start(dependency, request.method().as_str(), request.url());
        let result = client.execute(request).await;
        if let Some(call) = call {
            call.finish(match &result {
                Ok(response) => Ok(response.status().as_u16()),
                Err(error) => Err(error_kind(error)),
            });
        }
        result
    }
}

/// A fixed description of a failed call, for `error.type` (reqwest's own text names the URL).
fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

/// The Azure SDK's transport over our client, with the same telemetry as [`SendTraced`].
#[derive(Debug)]
pub struct TracedTransport {
    http: reqwest::Client,
    dependency: Dependency,
}

impl TracedTransport {
    /// Calls to `dependency` through `http`.
    pub fn new(http: reqwest::Client, dependency: Dependency) -> Arc<Self> {
        Arc::new(Self { http, dependency })
    }
}

#[async_trait::async_trait]
impl azure_core::http::HttpClient for TracedTransport {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        let call = calls::start(self.dependency, request.method().as_str(), request.url());
        let result = self.http.execute_request(request).await;
        if let Some(call) = call {
            call.finish(match &result {
                Ok(response) => Ok(u16::from(response.status())),
                Err(_) => Err("transport"),
            });
        }
        result
    }
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed or timed out while reading.
    #[error("reading the body failed: {0}")]
    Transport(reqwest::Error),
    /// The body is larger than the limit.
    #[error("the body is too large")]
    TooLarge,
}

/// Reads a response body of at most `limit` bytes, so a broken or hostile endpoint cannot make
/// us buffer without bound.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
