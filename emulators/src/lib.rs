//! Local stand-ins for the services obo-vault talks to: Microsoft Entra ID (token endpoint
//! with client authentication by secret, certificate or federated credential, OIDC discovery,
//! JWKS), Azure Key Vault secrets (REST), a downstream API, the receiver of grant events and
//! a telemetry receiver (OTLP/HTTP and Application Insights' track endpoint),
//! all over HTTPS with a generated test CA, and the managed-identity endpoint of App Service
//! and Functions (plain HTTP).
//!
//! They follow the real services' wire formats closely enough that the service cannot tell the
//! difference, and they add what tests need: token minting, revocation, fault injection,
//! counters, and a list of every secret handed out for leak scans. Start all three with
//! [`Stack::start`]; the `obo-emulators` binary does the same for the local stack.
//!
//! A latency set on an emulator is its time to answer, as its clients see a real service's:
//! the stand-in's own work (Entra's signing) is done within it, and a pacer thread wakes each
//! answer at its instant rather than on tokio's millisecond ticks.

mod client_certificate;
mod downstream;
mod entra;
mod events_receiver;
mod faults;
pub mod host_timer;
mod key_vault;
mod managed_identity;
mod pacer;
mod server;
mod signing;
mod stack;
mod telemetry_receiver;
mod tls;

pub use client_certificate::ClientCertificate;
pub use downstream::{DownstreamEmulator, DownstreamStats};
pub use entra::{
    AppTokenSpec, EntraEmulator, EntraStats, FederatedCredential, GrantKind, GrantRecord,
    MetadataRequests, TokenVersion, UserTokenSpec, TEST_CLIENT_APP_ID,
};
pub use events_receiver::{EventReceiver, ReceivedEvent};
pub use faults::{Fault, FaultKind};
pub use key_vault::{KeyVaultEmulator, KeyVaultStats};
pub use managed_identity::{
    IssuedIdentityToken, ManagedIdentityEmulator, NewIdentityToken, NewTokenHook,
    UserAssignedIdentity,
};
pub use signing::SignWith;
pub use stack::{
    ServiceCredential, Stack, StackOptions, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET,
    DEFAULT_DOWNSTREAM_RESOURCE, DEFAULT_MANAGED_IDENTITY_CLIENT_ID,
    DEFAULT_MANAGED_IDENTITY_OBJECT_ID, DEFAULT_TENANT_ID, TOKEN_EXCHANGE_AUDIENCE,
};
pub use telemetry_receiver::{ReceivedPoint, ReceivedSpan, ReceiverMode, TelemetryReceiver};
pub use tls::TestCa;
