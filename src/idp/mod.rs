//! Microsoft Entra ID: validating inbound tokens and talking to the token endpoint.
//!
//! - [`TokenValidator`] checks an inbound access token (signature against the JWKS of the
//!   tenant's OIDC discovery, or of the `common` discovery with `OBOVAULT_ALLOWED_TENANTS=*`,
//!   kept as last good, refreshed daily and refetched on an unknown `kid`; issuer v1 or v2;
//!   audience; lifetime with 5 minutes of skew; allowed tenant) and returns its claims.
//! - [`EntraClient`] runs the On-Behalf-Of exchange and the refresh-token grant against
//!   `{authority}/{tid}/oauth2/v2.0/token` and classifies Entra's errors into [`IdpError`].

mod client;
pub mod cloud;
mod credential;
mod errors;
mod validator;

pub use client::{EntraClient, TokenSet};
pub use credential::AppCredential;
pub use errors::IdpError;
pub use validator::{TokenError, TokenValidator, ValidatedToken};
