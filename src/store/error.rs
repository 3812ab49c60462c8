//! Why a store operation failed, and which failures are worth a retry.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, restarting, or out of connections; retry later.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or a broken schema.
    #[error("database operation failed")]
    Other(#[source] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => Self::Unavailable(error),
            sqlx::Error::Database(db) if is_transient_database_error(db.as_ref()) => {
                Self::Unavailable(error)
            }
            // A connection cut while TLS is being negotiated: sqlx reads the server's one-byte
            // answer to its SSLRequest from a socket that closed and reports a protocol error
            // ("unexpected response from SSLRequest: 0x00"), not an I/O one.
            sqlx::Error::Protocol(message) if message.contains("SSLRequest") => {
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

fn is_transient_database_error(error: &dyn sqlx::error::DatabaseError) -> bool {
    let code = error.code();
    let code = code.as_deref().unwrap_or_default();
    // Postgres: 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now,
    // 08xxx connection exceptions, 40001/40P01 serialization/deadlock.
    // SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED (and their extended codes).
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
mod tests {
    use super::StoreError;

    #[test]
    fn a_connection_cut_during_tls_negotiation_is_unavailable() {
        let cut = sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into());
        assert!(matches!(StoreError::from(cut), StoreError::Unavailable(_)));
        let other = sqlx::Error::Protocol("unknown message type: 'x'".into());
        assert!(matches!(StoreError::from(other), StoreError::Other(_)));
    }
}
