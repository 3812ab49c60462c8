//! Passwordless Postgres (`OBOVAULT_DATABASE_AUTH=entra`): Azure Database for PostgreSQL
//! accepts a Microsoft Entra access token for `https://ossrdbms-aad.database.windows.net` as
//! the password of the role that represents the app's managed identity. New connections of
//! the pool sign in with the current token; a background task fetches the next one ahead of
//! expiry and swaps it into the pool's connect options (sqlx's `Pool::set_connect_options`),
//! so the pool is never dropped and no request waits for a token. Connections already open
//! stay open: Postgres checks the password only when a connection starts.
//!
//! The token is a credential: it lives in a `SecretString` and the pool's options, and is
//! never logged, formatted or put in an error.

use std::time::Duration;

use azure_core::credentials::TokenCredential as _;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::PgPool;
use time::OffsetDateTime;

pub use crate::config::DatabaseAuth;

/// The scope of Azure Database for PostgreSQL tokens (the same in every Azure cloud's
/// documentation of the flexible server).
pub const POSTGRES_SCOPE: &str = "https://ossrdbms-aad.database.windows.net/.default";
/// Bound on one token request: the SDK's own retries could otherwise hold start-up (or a
/// renewal) for a minute.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Never renew more often than this, whatever the endpoint answers.
const MIN_RENEWAL_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between retries of a failing renewal.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseAuthError {
    /// The managed identity refused, or its endpoint could not be reached.
    #[error(
        "OBOVAULT_DATABASE_AUTH=entra: the managed identity ({identity}) gave no token for \
         Azure Database for PostgreSQL: {reason}"
    )]
    NoToken {
        /// Which identity, through which endpoint.
        identity: String,
        /// The SDK's or endpoint's reason (never a token).
        reason: String,
    },
}

/// A token for Postgres and its expiry.
pub struct DatabaseToken {
    password: SecretString,
    expires_on: OffsetDateTime,
}

impl std::fmt::Debug for DatabaseToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseToken")
            .field("expires_on", &self.expires_on)
            .finish_non_exhaustive()
    }
}

/// The managed identity that signs in to Postgres.
#[derive(Clone, Debug)]
pub struct EntraIdentity {
    client_id: Option<String>,
}

impl EntraIdentity {
    /// The identity `auth` names; `None` for password authentication.
    pub fn of(auth: &DatabaseAuth) -> Option<Self> {
        match auth {
            DatabaseAuth::Password => None,
            DatabaseAuth::Entra { client_id } => Some(Self {
                client_id: client_id.clone(),
            }),
        }
    }

    /// A token from the managed identity's endpoint. A new SDK credential each time: the
    /// SDK caches a token until 5 minutes before it expires, and a renewal ahead of that
    /// must really ask the endpoint.
    pub async fn token(&self) -> Result<DatabaseToken, DatabaseAuthError> {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: self.client_id.clone().map(UserAssignedId::ClientId),
            ..Default::default()
        };
        let credential = ManagedIdentityCredential::new(Some(options))
            .map_err(|error| self.no_token(error.to_string()))?;
        let answer =
            tokio::time::timeout(TOKEN_TIMEOUT, credential.get_token(&[POSTGRES_SCOPE], None))
                .await
                .map_err(|_| self.no_token(format!("no answer within {TOKEN_TIMEOUT:?}")))?
                .map_err(|error| self.no_token(error.to_string()))?;
        Ok(DatabaseToken {
            password: SecretString::from(answer.token.secret().to_owned()),
            expires_on: answer.expires_on,
        })
    }

    fn no_token(&self, reason: String) -> DatabaseAuthError {
        let who = match &self.client_id {
            Some(id) => format!("user-assigned, AZURE_CLIENT_ID={id}"),
            None => "system-assigned, AZURE_CLIENT_ID unset".to_owned(),
        };
        let endpoint = if std::env::var_os("IDENTITY_ENDPOINT").is_some() {
            "through IDENTITY_ENDPOINT"
        } else {
            "IDENTITY_ENDPOINT unset, so through the instance metadata service"
        };
        DatabaseAuthError::NoToken {
            identity: format!("{who}, {endpoint}"),
            reason,
        }
    }
}

/// Checks at start that the identity gives a token, so a misconfigured identity stops the
/// process with a clear message instead of a service that answers 503 forever.
pub async fn check(auth: &DatabaseAuth) -> Result<(), DatabaseAuthError> {
    match EntraIdentity::of(auth) {
        Some(identity) => identity.token().await.map(|_| ()),
        None => Ok(()),
    }
}

/// `options` signing in as `auth` says: under Entra, with a fresh token as the password, and
/// with `sslmode=verify-full` unless `DATABASE_URL` (or `PGSSLMODE`) names a mode: the
/// token is a credential for the whole database and must reach only the real server.
/// Returns what keeps the token fresh once the pool exists.
pub async fn sign_in(
    options: PgConnectOptions,
    url: &SecretString,
    auth: &DatabaseAuth,
) -> Result<(PgConnectOptions, Option<Renewal>), DatabaseAuthError> {
    let Some(identity) = EntraIdentity::of(auth) else {
        return Ok((options, None));
    };
    let token = identity.token().await?;
    let options = options.password(token.password.expose_secret());
    let options = with_tls(options, url.expose_secret());
    let renewal = Renewal {
        identity,
        expires_on: token.expires_on,
    };
    Ok((options, Some(renewal)))
}

/// `verify-full` unless the URL (or `PGSSLMODE`) chose a mode; a chosen mode that allows
/// plain text is kept, with a warning.
fn with_tls(options: PgConnectOptions, url: &str) -> PgConnectOptions {
    let options = if names_ssl_mode(url) {
        options
    } else {
        options.ssl_mode(PgSslMode::VerifyFull)
    };
    if matches!(
        options.get_ssl_mode(),
        PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer
    ) {
        tracing::warn!(
            "OBOVAULT_DATABASE_AUTH=entra with an sslmode that allows plain text: the database \
             token may travel unencrypted (Azure Database for PostgreSQL requires TLS)"
        );
    }
    options
}

/// Whether the URL's query (or the environment) chooses an sslmode.
fn names_ssl_mode(url: &str) -> bool {
    let named_in_url = url::Url::parse(url).is_ok_and(|url| {
        url.query_pairs()
            .any(|(key, _)| key == "sslmode" || key == "ssl-mode")
    });
    named_in_url || std::env::var_os("PGSSLMODE").is_some()
}

/// Keeps a pool's password fresh (see [`sign_in`]).
#[derive(Debug)]
pub struct Renewal {
    identity: EntraIdentity,
    expires_on: OffsetDateTime,
}

impl Renewal {
    /// Renews the token of `pool`'s new connections until the pool is closed.
    pub fn spawn(self, pool: &PgPool) {
        tokio::spawn(self.run(pool.clone()));
    }

    async fn run(mut self, pool: PgPool) {
        let closed = pool.close_event();
        tokio::pin!(closed);
        let mut failures: u32 = 0;
        loop {
            let wait = match failures {
                0 => renewal_wait(self.expires_on, OffsetDateTime::now_utc()),
                n => retry_wait(n),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut closed => return,
            }
            match self.identity.token().await {
                Ok(token) => {
                    let options = (*pool.connect_options())
                        .clone()
                        .password(token.password.expose_secret());
                    pool.set_connect_options(options);
                    if token.expires_on != self.expires_on {
                        tracing::info!(
                            expires_on = %token.expires_on,
                            "database token renewed; new connections use it"
                        );
                    }
                    self.expires_on = token.expires_on;
                    failures = 0;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        error = %error,
                        current_expires_on = %self.expires_on,
                        retry_in_ms = u64::try_from(retry_wait(failures).as_millis()).unwrap_or(u64::MAX),
                        "cannot renew the database token; open connections keep working and new \
                         ones use the current token until it expires"
                    );
                }
            }
        }
    }
}

/// Half of the token's remaining lifetime: a 24-hour token is renewed after 12 hours, which
/// leaves hours to retry if the identity endpoint is down, and an endpoint that answers its
/// cached token again just moves the next attempt closer to the expiry.
fn renewal_wait(expires_on: OffsetDateTime, now: OffsetDateTime) -> Duration {
    let left = Duration::try_from(expires_on - now).unwrap_or_default();
    (left / 2).max(MIN_RENEWAL_WAIT)
}

/// Exponential back-off after the `failures`-th failed renewal: 1 s, 2 s, 4 s … 60 s.
fn retry_wait(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    (MIN_RENEWAL_WAIT * 2u32.pow(exponent)).min(MAX_RETRY_WAIT)
}

#[cfg(test)]
mod tests;
