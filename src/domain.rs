//! Small domain types shared by every layer: user identity, token secrets and row status.
//!
//! Identifiers are parsed once at the edge ("parse, don't validate"); secrets are wrapped in
//! `secrecy` types whose `Debug` never prints the value.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// An Entra tenant id (`tid`), always a lower-case GUID.
#[derive(Clone, Debug, Eq, Hash, PartialEq, Ord, PartialOrd)]
pub struct TenantId(String);

/// An Entra object id (`oid`) of a user, always a lower-case GUID.
#[derive(Clone, Debug, Eq, Hash, PartialEq, Ord, PartialOrd)]
pub struct UserId(String);

/// The reason a value could not be used as a tenant or user id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field} must be a GUID")]
pub struct InvalidId {
    /// Which field was wrong, for the caller's error message.
    pub field: &'static str,
}

fn parse_guid(value: &str, field: &'static str) -> Result<String, InvalidId> {
    // `uuid` accepts braces and URNs too; Entra ids are the plain hyphenated form only.
    if value.len() != 36 {
        return Err(InvalidId { field });
    }
    uuid::Uuid::try_parse(value)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| InvalidId { field })
}

impl TenantId {
    /// Parses a tenant id; only the hyphenated GUID form is accepted.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        parse_guid(value, "tenantId").map(Self)
    }

    /// The id as stored and sent to Entra.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl UserId {
    /// Parses a user object id; only the hyphenated GUID form is accepted.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        parse_guid(value, "userId").map(Self)
    }

    /// The id as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's identity in custody: the primary key of a stored token.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct UserKey {
    /// The user's home tenant for this app.
    pub tenant_id: TenantId,
    /// The user's object id in that tenant.
    pub user_id: UserId,
}

/// A refresh token in plain form. Only `crypto` and `idp` ever look inside.
pub struct RefreshToken(SecretString);

/// An access token a caller brought (setup's OBO assertion, a workload's token). Validated,
/// exchanged, never stored or logged.
pub struct InboundToken(SecretString);

/// A delegated access token for the downstream API. Never stored, only cached in memory.
#[derive(Clone)]
pub struct AccessToken(SecretString);

macro_rules! secret_newtype {
    ($name:ident) => {
        impl $name {
            /// Wraps a secret value.
            pub fn new(value: String) -> Self {
                Self(SecretString::from(value))
            }

            /// The secret value; callers must not log or persist it.
            pub fn expose(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    };
}

secret_newtype!(RefreshToken);
secret_newtype!(AccessToken);
secret_newtype!(InboundToken);

/// Whether a stored grant can still be used.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum TokenStatus {
    /// The grant works; do-work and the timer use it.
    Active,
    /// Entra refused the grant for good; the user must run setup again.
    ReauthRequired,
}

impl TokenStatus {
    /// The value in the `status` column and in API answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::ReauthRequired => "reauth_required",
        }
    }

    /// Reads the `status` column; unknown values are treated as needing re-authentication,
    /// the safe direction.
    pub fn from_column(value: &str) -> Self {
        match value {
            "active" => Self::Active,
            _ => Self::ReauthRequired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_only_hyphenated_guids() {
        assert!(TenantId::parse("72F988BF-86F1-41AF-91AB-2D7CD011DB47").is_ok());
        assert_eq!(
            TenantId::parse("72F988BF-86F1-41AF-91AB-2D7CD011DB47")
                .unwrap()
                .as_str(),
            "72f988bf-86f1-41af-91ab-2d7cd011db47"
        );
        for bad in [
            "",
            "common",
            "{72f988bf-86f1-41af-91ab-2d7cd011db47}",
            "72f988bf86f141af91ab2d7cd011db47",
            "../../etc",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let token = RefreshToken::new("very-secret".into());
        assert_eq!(format!("{token:?}"), "RefreshToken(..)");
        let inbound = InboundToken::new("eyJ.very-secret".into());
        assert_eq!(format!("{inbound:?}"), "InboundToken(..)");
    }
}
