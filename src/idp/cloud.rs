//! Which Microsoft cloud the configured authority belongs to, and the per-cloud names that
//! follow from it: the v1.0 token issuer host and the audience of a managed-identity token
//! used as a federated credential.
//!
//! Sources:
//! - Token-exchange audiences: "Configure an application to trust a managed identity"
//!   (learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity):
//!   `api://AzureADTokenExchange` (global), `api://AzureADTokenExchangeUSGov` (US Government),
//!   `api://AzureADTokenExchangeChina` (China operated by 21Vianet).
//! - v1.0 issuer hosts: `sts.windows.net` for the global and US Government clouds,
//!   `sts.chinacloudapi.cn` for China (the claims references name only the global host; the
//!   Microsoft Q&A answer "What are the token issuers for the sovereign cloud" and the issuer
//!   validators of Microsoft's Spring and AKS engines list the China one).
//! - Authority hosts: `login.microsoftonline.com` (global), `login.microsoftonline.us` (US
//!   Government), `login.chinacloudapi.cn` and `login.partner.microsoftonline.cn` (China).
//!
//! Any other host (a private emulator, a test) is treated as the global cloud.

use url::Url;

/// A Microsoft cloud, as far as token names differ between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    /// The global service (and anything not recognised as a national cloud).
    Global,
    /// Microsoft Entra ID for US Government.
    UsGovernment,
    /// Microsoft Entra China operated by 21Vianet.
    China,
}

impl Cloud {
    /// The cloud an authority host (`https://login.microsoftonline.us`, …) belongs to.
    pub fn of_authority(authority: &Url) -> Self {
        match authority.host_str().map(str::to_ascii_lowercase).as_deref() {
            Some("login.microsoftonline.us") => Self::UsGovernment,
            Some("login.chinacloudapi.cn" | "login.partner.microsoftonline.cn") => Self::China,
            _ => Self::Global,
        }
    }

    /// Like [`Self::of_authority`] for an authority kept as text; text that is not a URL is
    /// the global cloud.
    pub fn of_authority_str(authority: &str) -> Self {
        Url::parse(authority).map_or(Self::Global, |url| Self::of_authority(&url))
    }

    /// The `aud` a managed-identity token must carry to be accepted as a federated
    /// credential of an app in this cloud.
    pub fn token_exchange_audience(self) -> &'static str {
        match self {
            Self::Global => "api://AzureADTokenExchange",
            Self::UsGovernment => "api://AzureADTokenExchangeUSGov",
            Self::China => "api://AzureADTokenExchangeChina",
        }
    }

    /// The issuer of v1.0 access tokens of `tenant`: `https://{sts host}/{tenant}/`.
    pub fn v1_issuer(self, tenant: &str) -> String {
        let host = match self {
            Self::Global | Self::UsGovernment => "sts.windows.net",
            Self::China => "sts.chinacloudapi.cn",
        };
        format!("https://{host}/{tenant}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(authority: &str) -> Cloud {
        Cloud::of_authority(&Url::parse(authority).unwrap())
    }

    #[test]
    fn names_follow_the_authority() {
        let tid = "8eaef023-2b34-4da1-9baa-8bc8c9d6a490";
        for (authority, audience, issuer) in [
            (
                "https://login.microsoftonline.com",
                "api://AzureADTokenExchange",
                "https://sts.windows.net/",
            ),
            (
                "https://LOGIN.microsoftonline.us",
                "api://AzureADTokenExchangeUSGov",
                "https://sts.windows.net/",
            ),
            (
                "https://login.chinacloudapi.cn",
                "api://AzureADTokenExchangeChina",
                "https://sts.chinacloudapi.cn/",
            ),
            (
                "https://login.partner.microsoftonline.cn",
                "api://AzureADTokenExchangeChina",
                "https://sts.chinacloudapi.cn/",
            ),
            (
                "https://127.0.0.1:8441",
                "api://AzureADTokenExchange",
                "https://sts.windows.net/",
            ),
        ] {
            let cloud = cloud(authority);
            assert_eq!(cloud.token_exchange_audience(), audience, "{authority}");
            assert_eq!(
                cloud.v1_issuer(tid),
                format!("{issuer}{tid}/"),
                "{authority}"
            );
        }
    }
}
