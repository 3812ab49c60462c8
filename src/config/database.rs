//! `OBOVAULT_DATABASE_AUTH` (SPEC §4): `password` (the default: whatever `DATABASE_URL`
//! carries) or `entra`, managed-identity tokens as the password of Azure Database for
//! PostgreSQL (`crate::database_auth`). Under `entra` the URL names the role (the
//! identity's database user) and carries no password, and the database must be Postgres.

use super::env::{problem, Env, SettingsError};

const VAR: &str = "OBOVAULT_DATABASE_AUTH";

/// How the service signs in to Postgres.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DatabaseAuth {
    /// The password in `DATABASE_URL` (or none, for local trust authentication).
    #[default]
    Password,
    /// Managed-identity tokens as the password.
    Entra {
        /// The user-assigned identity's client id (`AZURE_CLIENT_ID`); `None`: the
        /// system-assigned identity.
        client_id: Option<String>,
    },
}

/// Reads `OBOVAULT_DATABASE_AUTH` for the checked `DATABASE_URL` `url`.
pub(super) fn database_auth(env: &Env, url: &str) -> Result<DatabaseAuth, SettingsError> {
    match env.or(VAR, "password") {
        "password" => Ok(DatabaseAuth::Password),
        "entra" => {
            if url.starts_with("sqlite:") {
                return Err(problem(
                    VAR,
                    "entra signs in to Azure Database for PostgreSQL: DATABASE_URL must be a \
                     Postgres URL (postgres://<identity's role>@<server>/<database>)",
                ));
            }
            if url::Url::parse(url).is_ok_and(|url| url.password().is_some()) {
                return Err(problem(
                    "DATABASE_URL",
                    "must carry no password with OBOVAULT_DATABASE_AUTH=entra (the managed \
                     identity's token is the password); name only the role",
                ));
            }
            Ok(DatabaseAuth::Entra {
                client_id: env.optional("AZURE_CLIENT_ID").map(str::to_owned),
            })
        }
        _ => Err(problem(VAR, "must be password or entra")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)], url: &str) -> Result<DatabaseAuth, SettingsError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        database_auth(&Env::from_pairs(pairs), url)
    }

    #[test]
    fn password_is_the_default_and_entra_takes_the_user_assigned_identity() {
        let postgres = "postgres://obo-vault-id@db.example/obo";
        assert_eq!(read(&[], postgres).unwrap(), DatabaseAuth::Password);
        assert_eq!(
            read(&[(VAR, "entra")], postgres).unwrap(),
            DatabaseAuth::Entra { client_id: None }
        );
        let id = "6b0e5e8c-2f3d-4a71-9c58-3e1d7a4b9f20";
        assert_eq!(
            read(&[(VAR, "entra"), ("AZURE_CLIENT_ID", id)], postgres).unwrap(),
            DatabaseAuth::Entra {
                client_id: Some(id.to_owned())
            }
        );
    }

    #[test]
    fn entra_refuses_sqlite_a_password_and_unknown_values() {
        let refused = |pairs: &[(&str, &str)], url: &str| match read(pairs, url) {
            Ok(auth) => panic!("{pairs:?} {url} must be refused, got {auth:?}"),
            Err(error) => error.to_string(),
        };
        let message = refused(&[(VAR, "entra")], "sqlite://obo.db?mode=rwc");
        assert!(
            message.contains(VAR) && message.contains("Postgres"),
            "{message}"
        );
        let message = refused(&[(VAR, "entra")], "postgres://obo:hunter2@db.example/obo");
        assert!(message.contains("DATABASE_URL"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let message = refused(&[(VAR, "Entra ID")], "postgres://obo@db.example/obo");
        assert!(message.contains(VAR), "{message}");
    }
}
