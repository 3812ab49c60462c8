//! The exporters' HTTP client: the service's own outbound client (rustls, the system roots plus
//! `OBOVAULT_EXTRA_CA_CERTS`, timeouts) behind `opentelemetry_http::HttpClient`, which the
//! opentelemetry crates implement only for their own reqwest version.
//!
//! The SDK exports from its own threads and drives the export future there; reqwest needs a
//! tokio reactor, so each upload is spawned onto the service's runtime and awaited.

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::HttpError;

/// Largest collector answer read (an OTLP partial-success message, an ingestion error list).
const MAX_ANSWER: usize = 1024 * 1024;

/// An outbound client usable by the exporters.
#[derive(Debug, Clone)]
pub(super) struct ExportClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl ExportClient {
    pub(super) fn new(http: reqwest::Client, runtime: tokio::runtime::Handle) -> Self {
        Self { http, runtime }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the collector's answer is over {MAX_ANSWER} bytes")]
struct AnswerTooLarge;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        let upload = self.runtime.spawn(async move {
            let mut response = http.execute(request).await?;
            let mut answer = Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = std::mem::take(response.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Err(Box::new(AnswerTooLarge) as HttpError);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(answer.body(Bytes::from(body))?)
        });
        upload.await?
    }
}
