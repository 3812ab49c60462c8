//! The classification by kind: where a failure happened and its sqlx variant or SQLSTATE.

use std::borrow::Cow;
use std::io;

use sqlx::error::{DatabaseError, ErrorKind};

use super::StoreError;

/// A driver error with a SQLSTATE, as Postgres or SQLite report one.
#[derive(Debug, thiserror::Error)]
#[error("a database error")]
struct Coded(&'static str);

impl DatabaseError for Coded {
    fn message(&self) -> &str {
        "a database error"
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self.0))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

fn coded(code: &'static str) -> sqlx::Error {
    sqlx::Error::Database(Box::new(Coded(code)))
}

fn unavailable(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_))
}

#[test]
fn every_refusal_of_a_new_connection_is_unavailable() {
    let refusals = [
        sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused)),
        sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionReset)),
        sqlx::Error::Io(io::Error::from(io::ErrorKind::UnexpectedEof)),
        sqlx::Error::Tls("handshake cut".into()),
        // Whatever its text: a cut while TLS is negotiated, an early end of the SASL exchange.
        sqlx::Error::Protocol("any text".into()),
        sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed,
        coded("28P01"), // invalid_password: an expired or rejected token
        coded("28000"), // invalid_authorization_specification
        coded("53300"), // too_many_connections
        coded("57P03"), // cannot_connect_now
        coded("08006"), // connection_failure
    ];
    for error in refusals {
        let shown = format!("{error:?}");
        assert!(unavailable(&StoreError::connecting(error)), "{shown}");
    }
}

#[test]
fn a_misconfiguration_met_while_connecting_is_an_internal_error() {
    let misconfigured = [
        sqlx::Error::Configuration("unreadable sslrootcert".into()),
        coded("3D000"), // invalid_catalog_name: no such database
    ];
    for error in misconfigured {
        let shown = format!("{error:?}");
        assert!(!unavailable(&StoreError::connecting(error)), "{shown}");
    }
}

#[test]
fn a_statement_on_an_open_connection_is_unavailable_only_when_a_retry_cures_it() {
    for error in [
        sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionReset)),
        sqlx::Error::PoolTimedOut,
        coded("40001"),
        coded("57P01"),
        coded("5"),
    ] {
        let shown = format!("{error:?}");
        assert!(unavailable(&StoreError::from(error)), "{shown}");
    }
    for error in [
        // On an open connection, a message the protocol does not expect is a bug.
        sqlx::Error::Protocol("unknown message type: 'x'".into()),
        sqlx::Error::RowNotFound,
        coded("23505"), // unique_violation
        coded("42P01"), // undefined_table: a broken schema
        coded("28P01"), // not a statement's answer; never mistaken for one
    ] {
        let shown = format!("{error:?}");
        assert!(!unavailable(&StoreError::from(error)), "{shown}");
    }
}
