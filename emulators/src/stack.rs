//! The three emulators started together, with the CA file and the service settings that point
//! obo-vault at them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{
    downstream::{self, DownstreamEmulator},
    entra::{self, EntraConfig, EntraEmulator},
    key_vault::{self, KeyVaultEmulator},
    server::{bind, RunningServer},
    signing::KeyStore,
    tls::TestCa,
};

/// Fixed home tenant of the default options.
pub const DEFAULT_TENANT_ID: &str = "8eaef023-2b34-4da1-9baa-8bc8c9d6a490";
/// Fixed client id of the default options.
pub const DEFAULT_CLIENT_ID: &str = "535fb089-9ff3-47b6-9bfb-4f1264799865";
/// Fixed, random-looking client secret of the default options (shaped like an Entra secret).
pub const DEFAULT_CLIENT_SECRET: &str = "Kq38Q~emuL4tVx7wNqR2pLm9sYb4HcJd6Ff1Ga0E";
/// Downstream resource of the default options.
pub const DEFAULT_DOWNSTREAM_RESOURCE: &str = "https://downstream.obo-vault.test";

/// How to start a [`Stack`].
#[derive(Clone, PartialEq, Eq)]
pub struct StackOptions {
    /// The app's home tenant (`OBOVAULT_TENANT_ID`); the Entra emulator serves any tenant.
    pub tenant_id: String,
    /// The app's client id (`OBOVAULT_CLIENT_ID`).
    pub client_id: String,
    /// The app's client secret (`OBOVAULT_CLIENT_SECRET`).
    pub client_secret: String,
    /// The downstream API's resource URI: the audience its tokens must carry.
    pub downstream_resource: String,
    /// Where `ca.pem` is written (created if missing); `None` = a temp dir owned by the Stack.
    pub ca_dir: Option<PathBuf>,
    /// Port of the Entra emulator on 127.0.0.1; `0` = any free port.
    pub entra_port: u16,
    /// Port of the Key Vault emulator; `0` = any free port.
    pub key_vault_port: u16,
    /// Port of the downstream API emulator; `0` = any free port.
    pub downstream_port: u16,
}

impl std::fmt::Debug for StackOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client secret stays out of debug output (and so out of test logs).
        f.debug_struct("StackOptions")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("downstream_resource", &self.downstream_resource)
            .field("ca_dir", &self.ca_dir)
            .field("entra_port", &self.entra_port)
            .field("key_vault_port", &self.key_vault_port)
            .field("downstream_port", &self.downstream_port)
            .finish()
    }
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            client_secret: DEFAULT_CLIENT_SECRET.to_owned(),
            downstream_resource: DEFAULT_DOWNSTREAM_RESOURCE.to_owned(),
            ca_dir: None,
            entra_port: 0,
            key_vault_port: 0,
            downstream_port: 0,
        }
    }
}

/// The Entra, Key Vault and downstream emulators, served over HTTPS on 127.0.0.1 with a
/// per-Stack test CA. The servers run as tasks on the runtime that called [`Stack::start`] and
/// stop when the Stack is dropped (the emulator handles stay usable, but nothing answers).
#[derive(Debug)]
pub struct Stack {
    /// The Entra ID emulator.
    pub entra: EntraEmulator,
    /// The Key Vault emulator.
    pub key_vault: KeyVaultEmulator,
    /// The downstream API emulator.
    pub downstream: DownstreamEmulator,
    options: StackOptions,
    ca_pem_path: PathBuf,
    _servers: Vec<RunningServer>,
    /// Kept so the temporary CA directory lives as long as the Stack.
    _temp_dir: Option<tempfile::TempDir>,
}

impl Stack {
    /// Generates the CA and signing keys, writes `ca.pem`, and starts the three servers.
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        // Key generation is CPU work; run it off the async threads.
        let (keys, ca) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
            Ok((KeyStore::generate()?, TestCa::generate()?))
        })
        .await
        .context("generating keys")??;
        let keys = std::sync::Arc::new(keys);

        let (temp_dir, ca_dir) = match &options.ca_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                (None, dir.clone())
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("obo-emulators-")
                    .tempdir()
                    .context("creating a temp dir for ca.pem")?;
                let path = temp.path().to_path_buf();
                (Some(temp), path)
            }
        };
        let ca_pem_path = ca_dir.join("ca.pem");
        std::fs::write(&ca_pem_path, ca.ca_pem())
            .with_context(|| format!("writing {}", ca_pem_path.display()))?;
        let tls = ca.server_config()?;

        let entra_listener = bind(options.entra_port)?;
        let key_vault_listener = bind(options.key_vault_port)?;
        let downstream_listener = bind(options.downstream_port)?;
        let origin = |listener: &std::net::TcpListener| -> anyhow::Result<String> {
            Ok(format!(
                "https://127.0.0.1:{}",
                listener.local_addr()?.port()
            ))
        };

        let entra = EntraEmulator::new(EntraConfig {
            tenant_id: &options.tenant_id,
            client_id: &options.client_id,
            client_secret: &options.client_secret,
            downstream_resource: &options.downstream_resource,
            host: origin(&entra_listener)?,
            keys: std::sync::Arc::clone(&keys),
        });
        let key_vault = KeyVaultEmulator::new(
            format!("{}/", origin(&key_vault_listener)?),
            &options.tenant_id,
        );
        let downstream = DownstreamEmulator::new(
            &origin(&downstream_listener)?,
            &options.downstream_resource,
            keys,
        );

        let servers = vec![
            RunningServer::spawn(entra_listener, tls.clone(), entra::router(&entra))?,
            RunningServer::spawn(
                key_vault_listener,
                tls.clone(),
                key_vault::router(&key_vault),
            )?,
            RunningServer::spawn(downstream_listener, tls, downstream::router(&downstream))?,
        ];
        Ok(Stack {
            entra,
            key_vault,
            downstream,
            options,
            ca_pem_path,
            _servers: servers,
            _temp_dir: temp_dir,
        })
    }

    /// The PEM file of the test CA that signed all three server certificates.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// The options the Stack was started with.
    pub fn options(&self) -> &StackOptions {
        &self.options
    }

    /// The obo-vault settings that point the service at this Stack.
    pub fn service_env(&self) -> Vec<(String, String)> {
        let o = &self.options;
        [
            ("OBOVAULT_TENANT_ID", o.tenant_id.clone()),
            ("OBOVAULT_CLIENT_ID", o.client_id.clone()),
            ("OBOVAULT_CLIENT_SECRET", o.client_secret.clone()),
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
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// Every secret any emulator issued or holds: the client secret, every access, id and app
    /// token and refresh token, and every Key Vault secret value. For leak scans.
    pub fn issued_secrets(&self) -> Vec<String> {
        let mut secrets = self.entra.issued_secrets();
        secrets.extend(self.key_vault.secret_values());
        secrets
    }
}
