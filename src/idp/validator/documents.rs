//! Entra's OpenID metadata documents as fetched: the discovery document and the JWKS, read
//! with a size bound from the authority host only.

use crate::outbound::SendTraced as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use crate::outbound::read_limited;

/// Bound on a discovery document or JWKS (real ones are a few KiB).
const MAX_METADATA_BYTES: usize = 256 * 1024;

/// What fetches metadata: the HTTP client and the authority every URL must be on.
pub(super) struct Fetcher {
    pub(super) http: reqwest::Client,
    /// Authority host without a trailing slash.
    pub(super) authority: Url,
}

/// Why metadata could not be fetched; only logged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct FetchError(pub(super) String);

/// GETs `url` as JSON of type `T`, at most [`MAX_METADATA_BYTES`].
pub(super) async fn get_json<T: DeserializeOwned>(
    fetcher: &Fetcher,
    url: &str,
) -> Result<T, FetchError> {
    let response = fetcher
        .http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send_traced(crate::outbound::Dependency::EntraMetadata)
        .await
        .map_err(|error| FetchError(format!("GET {url}: {error}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError(format!("GET {url}: HTTP {}", status.as_u16())));
    }
    let body = read_limited(response, MAX_METADATA_BYTES)
        .await
        .map_err(|error| FetchError(format!("GET {url}: {error}")))?;
    serde_json::from_slice(&body)
        .map_err(|_| FetchError(format!("GET {url}: not the expected JSON")))
}

/// The fields of an OpenID configuration document the validator uses.
#[derive(Deserialize)]
pub(super) struct Discovery {
    pub(super) issuer: String,
    pub(super) jwks_uri: String,
}

/// A JWKS document.
#[derive(Deserialize)]
pub(super) struct JwkSet {
    pub(super) keys: Vec<Jwk>,
}

/// One key of a JWKS, as Entra publishes it.
#[derive(Deserialize)]
pub(super) struct Jwk {
    pub(super) kty: String,
    pub(super) kid: Option<String>,
    #[serde(rename = "use")]
    pub(super) usage: Option<String>,
    pub(super) alg: Option<String>,
    pub(super) n: Option<String>,
    pub(super) e: Option<String>,
    /// Entra's per-key issuer (A4 step 3), possibly templated with `{tenantid}`.
    pub(super) issuer: Option<String>,
}
