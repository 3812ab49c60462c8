//! End-to-end tests of the emulators over HTTPS, with a client that trusts only the Stack's CA.

mod cae;
mod client_credentials;
mod common;
mod downstream;
mod entra;
mod entra_client_auth;
mod entra_obo;
mod entra_refresh;
mod key_vault;
mod key_vault_delete;
mod key_vault_sdk;
mod key_vault_versions;
mod managed_identity;
mod metadata;
mod stack;
