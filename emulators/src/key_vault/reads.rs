//! Reading secrets: latest, one version, and the paged list of versions.

use std::sync::{atomic::Ordering, Arc};

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde_json::{json, Value};

use super::errors::{bad_name, kv_error, secret_disabled, secret_not_found};
use super::{valid_name, KeyVaultState};

/// Largest page of `GET /secrets/{name}/versions`, and the size when `maxresults` is absent
/// ("If not specified the service will return up to 25 results", parameter `maxresults`,
/// minimum 1, maximum 25, in the REST specification's `secrets.json`, 7.5).
const MAX_PAGE: usize = 25;

/// `GET /secrets/{name}`: the newest version whatever its state. A disabled newest version is
/// *not* skipped: Key Vault answers `403 SecretDisabled` (Azure/azure-sdk-for-js#24756 saw it
/// on `GET secrets/{name}/`; Azure/azure-powershell#14740: "fails if 'current' version is
/// disabled"), so a client that wants the newest enabled version must list the versions.
pub(super) async fn get_latest(
    State(state): State<Arc<KeyVaultState>>,
    Path(name): Path<String>,
) -> Response {
    state.counters.get_latest.fetch_add(1, Ordering::Relaxed);
    if !valid_name(&name) {
        return bad_name();
    }
    let secrets = state.secrets.lock();
    let Some(newest) = secrets.get(&name).and_then(|versions| versions.last()) else {
        return secret_not_found(&name);
    };
    if !newest.enabled {
        return secret_disabled();
    }
    Json(state.bundle(&name, newest, true)).into_response()
}

/// `GET /secrets/{name}/{version}`: 404 for an unknown version, 403 for a disabled one.
pub(super) async fn get_version(
    State(state): State<Arc<KeyVaultState>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    state.counters.get_version.fetch_add(1, Ordering::Relaxed);
    if !valid_name(&name) {
        return bad_name();
    }
    let secrets = state.secrets.lock();
    let Some(secret) = secrets
        .get(&name)
        .and_then(|versions| versions.iter().find(|s| s.version == version))
    else {
        return secret_not_found(&format!("{name}/{version}"));
    };
    if !secret.enabled {
        return secret_disabled();
    }
    Json(state.bundle(&name, secret, true)).into_response()
}

/// `GET /secrets/{name}/versions?maxresults=N[&$skiptoken=…]`: every version's `id`,
/// `attributes` (`enabled`, `created` …), `contentType` and `tags`, never a value; pages of at
/// most 25 joined by an absolute `nextLink` carrying `$skiptoken` and `maxresults`, as in the
/// specification's `GetSecretVersions-example.json`. Versions come in the ascending order of
/// their ids, not of their creation (nagyesta/lowkey-vault#467 and #428 observed this on the
/// real service), so a client must compare `attributes.created` to find the newest.
pub(super) async fn list_versions(
    State(state): State<Arc<KeyVaultState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    state.counters.list_versions.fetch_add(1, Ordering::Relaxed);
    if !valid_name(&name) {
        return bad_name();
    }
    let (page_size, skip, api_version) = match paging(query.as_deref().unwrap_or("")) {
        Ok(paging) => paging,
        Err(message) => return kv_error(StatusCode::BAD_REQUEST, "BadParameter", message, None),
    };
    let secrets = state.secrets.lock();
    let Some(versions) = secrets.get(&name) else {
        return secret_not_found(&name);
    };
    let mut ordered: Vec<_> = versions.iter().collect();
    ordered.sort_by(|a, b| a.version.cmp(&b.version));
    let items: Vec<Value> = ordered
        .iter()
        .skip(skip)
        .take(page_size)
        .map(|s| state.bundle(&name, s, false))
        .collect();
    let next = skip + page_size;
    let next_link = (next < ordered.len()).then(|| {
        let token = URL_SAFE_NO_PAD.encode(format!("{{\"NextMarker\":{next}}}"));
        format!(
            "{}secrets/{name}/versions?api-version={api_version}&$skiptoken={token}&maxresults={page_size}",
            state.vault_url
        )
    });
    Json(json!({ "value": items, "nextLink": next_link })).into_response()
}

/// `(page size, rows to skip, api-version)` from the query string.
fn paging(query: &str) -> Result<(usize, usize, String), &'static str> {
    let (mut page_size, mut skip, mut api_version) = (MAX_PAGE, 0, String::new());
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "maxresults" => {
                page_size = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or("maxresults must be an integer from 1 to 25.")?;
            }
            "$skiptoken" => {
                skip = URL_SAFE_NO_PAD
                    .decode(value.as_bytes())
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                    .and_then(|token| token["NextMarker"].as_u64())
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or("The $skiptoken is not valid.")?;
            }
            "api-version" => {
                api_version = form_urlencoded::byte_serialize(value.as_bytes()).collect();
            }
            _ => {}
        }
    }
    Ok((page_size, skip, api_version))
}
