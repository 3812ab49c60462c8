//! The one way this service builds outbound HTTPS clients: rustls with the system roots plus
//! `OBOVAULT_EXTRA_CA_CERTS`, redirects off (a token request must never follow a redirect),
//! timeouts always set, HTTP/1.1; and the one way their answers are read: bounded.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

/// Builds a client trusting the system roots and the CAs in `extra_ca_certs`.
pub fn client(extra_ca_certs: Option<&Path>, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("obo-vault/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .https_only(true)
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
    builder.build().context("Failed to build the HTTPS client")
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
