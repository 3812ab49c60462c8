//! Crypto-shredding a tenant's key: delete the Key Vault secret, then purge it, so every copy
//! of the tenant's sealed rows (backups included) can never be opened again.
//!
//! Key Vault soft-deletes: a deleted secret stays recoverable until it is purged or its
//! retention ends (`scheduledPurgeDate`). Where the vault has purge protection, purge answers
//! `403` and only Key Vault itself purges the secret, on that date. A delete completes
//! asynchronously in Key Vault: purge waits until `GET /deletedsecrets/{name}` answers, and
//! retries a `409` (the SDKs' delete pollers do the same).

use std::time::Duration;

use azure_core::error::ErrorKind;
use chrono::{DateTime, Utc};

use super::{classify, KeyVaultKeys};
use crate::keys::KeyError;

/// How long purge waits for Key Vault to finish a delete.
const DELETE_WAIT: Duration = Duration::from_secs(60);

/// What happened to the key.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Shredded {
    /// Deleted and purged: gone for good.
    Purged,
    /// Deleted; purge protection forbids the purge, Key Vault purges it at this time.
    PurgeProtected {
        /// `scheduledPurgeDate` of the deleted secret.
        scheduled_purge_date: Option<DateTime<Utc>>,
    },
    /// There was no such secret, live or deleted.
    NotFound,
}

impl KeyVaultKeys {
    /// Deletes the secret `name` (every version) and purges it.
    #[tracing::instrument(skip_all, fields(key.name = %name))]
    pub async fn delete_and_purge(&self, name: &str) -> Result<Shredded, KeyError> {
        let deleted = match self.client.delete_secret(name, None).await {
            Ok(response) => Some(response),
            Err(error) if status(&error) == Some(404) => None,
            Err(error) => return Err(classify(name, &error)),
        };
        if deleted.is_none() && self.deleted_purge_date(name).await?.is_none() {
            // Neither live nor soft-deleted (an earlier purge finished the job, or a typo).
            return Ok(Shredded::NotFound);
        }
        tracing::warn!(key.name = %name, "key deleted in Key Vault; purging it");
        let deadline = tokio::time::Instant::now() + DELETE_WAIT;
        let mut pause = Duration::from_millis(250);
        loop {
            match self.client.purge_deleted_secret(name, None).await {
                Ok(_) => {
                    tracing::warn!(key.name = %name, "key purged from Key Vault");
                    return Ok(Shredded::Purged);
                }
                Err(error) if status(&error) == Some(403) => {
                    let scheduled_purge_date = self.deleted_purge_date(name).await?.flatten();
                    return Ok(Shredded::PurgeProtected {
                        scheduled_purge_date,
                    });
                }
                // The delete is still running (409), or not visible yet (404).
                Err(error)
                    if matches!(status(&error), Some(409 | 404))
                        && tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(classify(name, &error)),
            }
        }
    }

    /// `Some(scheduledPurgeDate)` when `name` is soft-deleted; `None` when it is not.
    async fn deleted_purge_date(
        &self,
        name: &str,
    ) -> Result<Option<Option<DateTime<Utc>>>, KeyError> {
        match self.client.get_deleted_secret(name, None).await {
            Ok(response) => {
                let deleted = response.into_model().map_err(|_| {
                    KeyError::Misconfigured(format!("{name}: unreadable deleted secret"))
                })?;
                Ok(Some(deleted.scheduled_purge_date.and_then(|date| {
                    DateTime::<Utc>::from_timestamp(date.unix_timestamp(), 0)
                })))
            }
            Err(error) if status(&error) == Some(404) => Ok(None),
            Err(error) => Err(classify(name, &error)),
        }
    }
}

fn status(error: &azure_core::Error) -> Option<u16> {
    match error.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(u16::from(*status)),
        _ => None,
    }
}
