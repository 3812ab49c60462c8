//! Entra as the flows' token endpoint and validator: [`EntraClient`] and [`TokenValidator`].

use async_trait::async_trait;

use super::{InboundValidator, TokenEndpoint};
use crate::domain::{InboundToken, RefreshToken, TenantId};
use crate::idp::{EntraClient, IdpError, TokenError, TokenSet, TokenValidator, ValidatedToken};

#[async_trait]
impl TokenEndpoint for EntraClient {
    async fn on_behalf_of(
        &self,
        tenant: &TenantId,
        assertion: &InboundToken,
        scopes: &[String],
    ) -> Result<TokenSet, IdpError> {
        EntraClient::on_behalf_of(self, tenant, assertion.expose(), scopes).await
    }

    async fn redeem(
        &self,
        tenant: &TenantId,
        refresh_token: &RefreshToken,
        scopes: &[String],
        claims: Option<&str>,
    ) -> Result<TokenSet, IdpError> {
        self.redeem_refresh_token_with_claims(tenant, refresh_token, scopes, claims)
            .await
    }
}

#[async_trait]
impl InboundValidator for TokenValidator {
    async fn validate(&self, token: &InboundToken) -> Result<ValidatedToken, TokenError> {
        TokenValidator::validate(self, token.expose()).await
    }
}
