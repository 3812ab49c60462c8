//! Why a store operation failed, and which failures are worth a retry.
//!
//! A failure is judged by where it happened and by its kind (the sqlx variant, the SQLSTATE),
//! never by the driver's message text. Getting a connection from the pool
//! ([`StoreError::connecting`]) fails only when a new connection could not be opened: the
//! server refused or cut it (TCP, TLS, the startup handshake), refused its sign-in (under
//! `OBOVAULT_DATABASE_AUTH=entra` an expired or rejected token is the password), is starting
//! or out of connections, or the pool waited too long. All of that is the database being
//! unavailable for now. A statement that fails on a connection already open
//! (`From<sqlx::Error>`) is unavailable only for connection loss and the few SQLSTATEs that a
//! retry cures; anything else is a bug or a broken schema.

use super::pooled::losses;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, restarting, refusing sign-in or out of connections;
    /// retry later.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or a broken schema.
    #[error("database operation failed")]
    Other(#[source] anyhow::Error),
}

impl StoreError {
    /// The pool gave no connection: `Unavailable` for every way the server can refuse or cut
    /// a new connection; `Other` for a local misconfiguration (e.g. an unreadable
    /// `sslrootcert`) or a SQLSTATE that no retry cures (e.g. no such database).
    pub(crate) fn connecting(error: sqlx::Error) -> Self {
        record_if_lost(&error);
        let refused = match &error {
            // Refused or reset, a TLS handshake cut or refused, a startup or SASL exchange
            // that ended early (a cut while TLS is negotiated is a `Protocol` error: sqlx
            // reads the answer to its SSLRequest from a socket that closed).
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or_default();
                refuses_sign_in(code) || is_transient(code)
            }
            _ => false,
        };
        if refused {
            Self::Unavailable(error)
        } else {
            Self::Other(anyhow::Error::new(error).context("cannot open a database connection"))
        }
    }
}

impl From<sqlx::Error> for StoreError {
    /// A statement's failure on a connection already open.
    fn from(error: sqlx::Error) -> Self {
        // Every failed statement passes here: the one place that sees a connection lost.
        record_if_lost(&error);
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => Self::Unavailable(error),
            sqlx::Error::Database(db) if is_transient(db.code().as_deref().unwrap_or_default()) => {
                Self::Unavailable(error)
            }
            _ => Self::Other(anyhow::Error::new(error)),
        }
    }
}

/// A failed migration is `Unavailable` only when the database could not be reached.
pub(super) fn migrate_error(error: sqlx::migrate::MigrateError) -> StoreError {
    match error {
        sqlx::migrate::MigrateError::Execute(error) => StoreError::from(error),
        other => StoreError::Other(anyhow::Error::new(other).context("database migration failed")),
    }
}

/// Postgres's answers to a sign-in it refuses, or to a server that cannot take one more
/// connection: class 28 (28000 invalid authorization, 28P01 invalid password: what Azure
/// Database for PostgreSQL answers to an expired or rejected Entra token) and 53300
/// too_many_connections. Only a connection's start can fail so.
fn refuses_sign_in(code: &str) -> bool {
    code.starts_with("28") || code == "53300"
}

/// Records a lost connection ([`losses`]) when `error` says its connection is gone: both
/// conversions into [`StoreError`] call it, so every failure of sqlx is judged once.
fn record_if_lost(error: &sqlx::Error) {
    if lost_connection(error) {
        losses::record();
    }
}

/// Whether `error` says the connection it happened on is gone: its socket or TLS session
/// failed, its messages made no sense, or the server ended it (57P01 admin shutdown, 57P02
/// crash shutdown, class 08 connection exception). The other connections released before it
/// may be gone too ([`losses`]).
fn lost_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            code == "57P01" || code == "57P02" || code.starts_with("08")
        }
        _ => false,
    }
}

/// SQLSTATEs that a retry cures. Postgres: 57P01 admin shutdown, 57P02 crash shutdown, 57P03
/// cannot connect now, 08xxx connection exceptions, 40001/40P01 serialization/deadlock.
/// SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED (and their extended codes).
fn is_transient(code: &str) -> bool {
    code.starts_with("57P")
        || code.starts_with("08")
        || code == "40001"
        || code == "40P01"
        || code == "5"
        || code == "6"
        || code.starts_with("517")
        || code.starts_with("261")
}

#[cfg(test)]
mod tests;
