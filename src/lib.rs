//! obo-vault keeps users' Entra ID refresh tokens in custody so that trusted workloads can call
//! an API on behalf of users who are offline, without the token ever leaving the service.
//!
//! Data flow: [`http`] (the Functions custom-handler protocol) → [`usecase`] (setup, do-work,
//! refresh-tokens) → [`ports`] (the traits the flows see) → [`idp`] (Entra), [`keys`] (Key
//! Vault), [`crypto`] (AES-256-GCM sealing), [`store`] (Postgres or SQLite), [`downstream`]
//! (the API called on the user's behalf); [`access_tokens`] caches delegated tokens below the
//! flows. [`app`] builds everything once from [`config`]; [`startup`] serves it; [`cli`] adds
//! the operator commands.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::allow_attributes)]
// Functions stay under 60 lines (clippy.toml); test scenarios may read longer.
#![cfg_attr(not(test), deny(clippy::too_many_lines))]

pub mod access_tokens;
pub mod app;
pub mod audit;
pub mod claims;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod database_auth;
pub mod domain;
pub mod downstream;
pub mod downstreams;
pub mod events;
pub mod http;
pub mod idp;
pub mod keys;
pub mod outbound;
pub mod ports;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tenancy;
pub mod usecase;
