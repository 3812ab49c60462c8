//! The settings that point obo-vault at a [`Stack`]: its credential, the emulators' URLs and
//! the CA, and the optional ones for named downstreams, telemetry and grant events.

use super::{ServiceCredential, Stack, DEFAULT_MANAGED_IDENTITY_CLIENT_ID};

impl Stack {
    /// The settings of the service's credential: the secret, the certificate file, or the
    /// managed identity with the endpoint the SDK finds it through.
    fn credential_env(&self) -> Vec<(&'static str, String)> {
        match self.options.credential {
            ServiceCredential::Secret => {
                vec![("OBOVAULT_CLIENT_SECRET", self.options.client_secret.clone())]
            }
            ServiceCredential::Certificate => vec![(
                "OBOVAULT_CLIENT_CERTIFICATE_PATH",
                self.certificate_path
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            )],
            ServiceCredential::ManagedIdentity => vec![
                ("OBOVAULT_CLIENT_ASSERTION", "managed-identity".to_owned()),
                (
                    "AZURE_CLIENT_ID",
                    DEFAULT_MANAGED_IDENTITY_CLIENT_ID.to_owned(),
                ),
                ("IDENTITY_ENDPOINT", self.managed_identity.endpoint()),
                ("IDENTITY_HEADER", self.managed_identity.identity_header()),
            ],
        }
    }

    /// The obo-vault settings that point the service at this Stack. `IDENTITY_ENDPOINT` and
    /// `IDENTITY_HEADER` are read by `azure_identity` from the process environment, so the
    /// managed-identity credential works only in a process started with them.
    pub fn service_env(&self) -> Vec<(String, String)> {
        let o = &self.options;
        let mut env: Vec<(String, String)> = self
            .credential_env()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        env.extend(
            [
                ("OBOVAULT_TENANT_ID", o.tenant_id.clone()),
                ("OBOVAULT_CLIENT_ID", o.client_id.clone()),
                ("OBOVAULT_AUTHORITY_HOST", self.entra.authority_host()),
                ("OBOVAULT_KEY_VAULT_URL", self.key_vault.vault_url()),
                ("OBOVAULT_KEY_VAULT_EMULATOR", "true".to_owned()),
                ("OBOVAULT_KEY_AUTO_CREATE", "true".to_owned()),
                (
                    "OBOVAULT_EXTRA_CA_CERTS",
                    self.ca_pem_path.display().to_string(),
                ),
                ("OBOVAULT_DOWNSTREAM_BASE_URL", self.downstream.base_url()),
                (
                    "OBOVAULT_DOWNSTREAM_SCOPES",
                    format!("{}/.default", o.downstream_resource),
                ),
                ("OBOVAULT_DOWNSTREAM_ALLOWED_PATHS", "/me,/echo".to_owned()),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value)),
        );
        env
    }

    /// The settings of named downstreams (`OBOVAULT_DOWNSTREAMS`): `names[0]` is the
    /// [`Stack::downstream`], the others the [`Stack::extra_downstreams`] in order, each with
    /// its resource's `.default` scope and `allowed_paths`. Add them to [`Stack::service_env`]
    /// without its unnamed `OBOVAULT_DOWNSTREAM_BASE_URL`, `_SCOPES`, `_ALLOWED_PATHS`.
    pub fn named_downstreams_env(
        &self,
        names: &[&str],
        allowed_paths: &str,
    ) -> Vec<(String, String)> {
        let apis = std::iter::once(&self.downstream).chain(&self.extra_downstreams);
        let mut env = vec![("OBOVAULT_DOWNSTREAMS".to_owned(), names.join(","))];
        for (name, api) in names.iter().zip(apis) {
            let prefix = format!(
                "OBOVAULT_DOWNSTREAM_{}",
                name.to_ascii_uppercase().replace('-', "_")
            );
            env.push((format!("{prefix}_BASE_URL"), api.base_url()));
            env.push((
                format!("{prefix}_SCOPES"),
                format!("{}/.default", api.resource()),
            ));
            env.push((format!("{prefix}_ALLOWED_PATHS"), allowed_paths.to_owned()));
        }
        env
    }

    /// The settings that send the service's traces and metrics to [`Stack::telemetry`] over
    /// OTLP, exported every 200 ms (not part of [`Stack::service_env`]).
    pub fn telemetry_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                self.telemetry.otlp_endpoint(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
            ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "200".to_owned()),
        ]
    }

    /// The settings that send the service's grant events to [`Stack::events`] (not part of
    /// [`Stack::service_env`]: most tests run without events).
    pub fn events_env(&self) -> Vec<(String, String)> {
        vec![
            ("OBOVAULT_EVENTS_URL".to_owned(), self.events.url()),
            ("OBOVAULT_EVENTS_SECRET".to_owned(), self.events.secret()),
        ]
    }
}
