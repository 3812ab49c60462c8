//! The emulators started together (Entra ID, Key Vault, the downstream API, the
//! managed-identity endpoint and the grant-event receiver), with the CA file and the service
//! settings that point obo-vault at them, for the credential the service is to use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    client_certificate::ClientCertificate,
    downstream::{self, DownstreamEmulator},
    entra::{self, EntraConfig, EntraEmulator, FederatedCredential},
    events_receiver::{self, EventReceiver},
    key_vault::{self, KeyVaultEmulator},
    managed_identity::{self, ManagedIdentityEmulator, UserAssignedIdentity},
    server::{bind, RunningServer},
    signing::KeyStore,
    telemetry_receiver::{self, TelemetryReceiver},
    tls::TestCa,
};

mod env;

/// Fixed home tenant of the default options.
pub const DEFAULT_TENANT_ID: &str = "8eaef023-2b34-4da1-9baa-8bc8c9d6a490";
/// Fixed client id of the default options.
pub const DEFAULT_CLIENT_ID: &str = "535fb089-9ff3-47b6-9bfb-4f1264799865";
/// Client secret of the default options: an obvious placeholder, not shaped like a real Entra
/// secret (`xxx8Q~…`), which secret scanners and push protection would flag.
pub const DEFAULT_CLIENT_SECRET: &str = "local-emulator-client-secret-not-for-azure";
/// Client id of the user-assigned managed identity of the default options.
pub const DEFAULT_MANAGED_IDENTITY_CLIENT_ID: &str = "6b0e5e8c-2f3d-4a71-9c58-3e1d7a4b9f20";
/// Object (principal) id of that identity: the subject of the app's federated credential.
pub const DEFAULT_MANAGED_IDENTITY_OBJECT_ID: &str = "c4a9d2f1-7e3b-4f05-8a6c-91b2e0d5f7a3";
/// Audience of managed-identity tokens used as federated credentials (global cloud).
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// How the service proves itself to Entra in [`Stack::service_env`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceCredential {
    /// `OBOVAULT_CLIENT_SECRET`.
    #[default]
    Secret,
    /// `OBOVAULT_CLIENT_CERTIFICATE_PATH`: a certificate registered on the app.
    Certificate,
    /// `OBOVAULT_CLIENT_ASSERTION=managed-identity`: a user-assigned identity of the
    /// managed-identity endpoint, trusted by a federated credential on the app.
    ManagedIdentity,
}
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
    /// Port of the managed-identity endpoint (plain HTTP); `0` = any free port.
    pub managed_identity_port: u16,
    /// The credential [`Stack::service_env`] gives the service.
    pub credential: ServiceCredential,
    /// Port of the grant-event receiver; `0` = any free port.
    pub events_port: u16,
    /// The receiver's `whsec_` secret; `None` = a fresh random one.
    pub events_secret: Option<String>,
    /// Resource URIs of more downstream APIs, each served by its own emulator on a free port
    /// and accepting only tokens for its own audience ([`Stack::extra_downstreams`]).
    pub extra_downstreams: Vec<String>,
    /// Port of the first of them, the next ones on the following ports; `0` = any free ports.
    pub extra_downstreams_port: u16,
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
            .field("managed_identity_port", &self.managed_identity_port)
            .field("credential", &self.credential)
            .field("events_port", &self.events_port)
            .field(
                "events_secret",
                &self.events_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("extra_downstreams", &self.extra_downstreams)
            .field("extra_downstreams_port", &self.extra_downstreams_port)
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
            managed_identity_port: 0,
            credential: ServiceCredential::Secret,
            events_port: 0,
            events_secret: None,
            extra_downstreams: Vec::new(),
            extra_downstreams_port: 0,
        }
    }
}

/// The Entra, Key Vault and downstream emulators, served over HTTPS on 127.0.0.1 with a
/// per-Stack test CA, and the managed-identity endpoint over plain HTTP (as on App Service).
/// The app has the Stack's user-assigned identity as a federated credential, and, with
/// [`ServiceCredential::Certificate`], a registered certificate. The servers run as tasks on the runtime that called [`Stack::start`] and
/// stop when the Stack is dropped (the emulator handles stay usable, but nothing answers).
#[derive(Debug)]
pub struct Stack {
    /// The Entra ID emulator.
    pub entra: EntraEmulator,
    /// The Key Vault emulator.
    pub key_vault: KeyVaultEmulator,
    /// The downstream API emulator.
    pub downstream: DownstreamEmulator,
    /// The APIs of [`StackOptions::extra_downstreams`], in that order.
    pub extra_downstreams: Vec<DownstreamEmulator>,
    /// The managed-identity endpoint (`IDENTITY_ENDPOINT`).
    pub managed_identity: ManagedIdentityEmulator,
    /// The receiver of grant events (`OBOVAULT_EVENTS_URL`, see [`Stack::events_env`]).
    pub events: EventReceiver,
    /// The telemetry receiver (see [`Stack::telemetry_env`]).
    pub telemetry: TelemetryReceiver,
    options: StackOptions,
    ca_pem_path: PathBuf,
    /// The key and certificate file, with [`ServiceCredential::Certificate`].
    certificate_path: Option<PathBuf>,
    _servers: Vec<RunningServer>,
    /// Kept so the temporary CA directory lives as long as the Stack.
    _temp_dir: Option<tempfile::TempDir>,
}

impl Stack {
    /// Generates the CA and signing keys (and the client certificate), writes `ca.pem`, and
    /// starts the servers.
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        // Key generation is CPU work; run it off the async threads.
        let with_certificate = options.credential == ServiceCredential::Certificate;
        let (keys, ca, certificate) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let certificate = with_certificate
                .then(|| ClientCertificate::generate("obo-vault-local"))
                .transpose()?;
            Ok((KeyStore::generate()?, TestCa::generate()?, certificate))
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
        let managed_identity_listener = bind(options.managed_identity_port)?;
        let events_listener = bind(options.events_port)?;
        let telemetry_listener = bind(0)?;
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
        let managed_identity = ManagedIdentityEmulator::new(
            &format!(
                "http://127.0.0.1:{}",
                managed_identity_listener.local_addr()?.port()
            ),
            &options.tenant_id,
            entra.clone(),
        );
        managed_identity.assign(UserAssignedIdentity {
            client_id: DEFAULT_MANAGED_IDENTITY_CLIENT_ID.to_owned(),
            object_id: DEFAULT_MANAGED_IDENTITY_OBJECT_ID.to_owned(),
        });
        // As "Configure an application to trust a managed identity" sets it up: issuer = the
        // tenant's v2 authority, subject = the identity's object id.
        entra.add_federated_credential(FederatedCredential {
            name: "obo-vault-managed-identity".to_owned(),
            issuer: entra.issuer(&options.tenant_id),
            subject: DEFAULT_MANAGED_IDENTITY_OBJECT_ID.to_owned(),
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.to_owned()],
        });
        let certificate_path = match &certificate {
            Some(certificate) => {
                entra.register_certificate(&certificate.certificate_pem)?;
                let path = ca_dir.join("client-certificate.pem");
                certificate.write_to(&path)?;
                Some(path)
            }
            None => None,
        };
        let key_vault = KeyVaultEmulator::new(
            format!("{}/", origin(&key_vault_listener)?),
            &options.tenant_id,
        );
        let downstream = DownstreamEmulator::new(
            &origin(&downstream_listener)?,
            &options.downstream_resource,
            std::sync::Arc::clone(&keys),
        );
        let mut extra_downstreams = Vec::new();
        let mut extra_servers = Vec::new();
        for (n, resource) in options.extra_downstreams.iter().enumerate() {
            let port = match options.extra_downstreams_port {
                0 => 0,
                first => first.saturating_add(u16::try_from(n)?),
            };
            let listener = bind(port)?;
            let api = DownstreamEmulator::new(&origin(&listener)?, resource, Arc::clone(&keys));
            extra_servers.push(RunningServer::spawn(
                listener,
                tls.clone(),
                downstream::router(&api),
            )?);
            extra_downstreams.push(api);
        }

        let events =
            EventReceiver::new(&origin(&events_listener)?, options.events_secret.as_deref())?;

        let telemetry = TelemetryReceiver::new(&origin(&telemetry_listener)?);
        let mut servers = vec![
            RunningServer::spawn(
                telemetry_listener,
                tls.clone(),
                telemetry_receiver::router(&telemetry),
            )?,
            RunningServer::spawn(
                events_listener,
                tls.clone(),
                events_receiver::router(&events),
            )?,
            RunningServer::spawn(entra_listener, tls.clone(), entra::router(&entra))?,
            RunningServer::spawn(
                key_vault_listener,
                tls.clone(),
                key_vault::router(&key_vault),
            )?,
            RunningServer::spawn(downstream_listener, tls, downstream::router(&downstream))?,
            RunningServer::spawn_plain(
                managed_identity_listener,
                managed_identity::router(&managed_identity),
            )?,
        ];
        servers.extend(extra_servers);
        Ok(Stack {
            entra,
            key_vault,
            downstream,
            extra_downstreams,
            managed_identity,
            events,
            telemetry,
            options,
            ca_pem_path,
            certificate_path,
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

    /// The key and certificate file of [`ServiceCredential::Certificate`].
    pub fn certificate_path(&self) -> Option<&Path> {
        self.certificate_path.as_deref()
    }

    /// Every secret any emulator issued or holds: the client secret, every access, id, app and
    /// managed-identity token and refresh token, every Key Vault secret value and the
    /// managed-identity endpoint's `IDENTITY_HEADER`. For leak scans.
    pub fn issued_secrets(&self) -> Vec<String> {
        let mut secrets = self.entra.issued_secrets();
        secrets.extend(self.key_vault.secret_values());
        secrets.push(self.managed_identity.identity_header());
        secrets
    }
}
