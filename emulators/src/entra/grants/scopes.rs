//! The `scope` parameter of a token request as Entra reads it: the permissions of exactly one
//! resource, plus OpenID Connect scopes that are about the sign-in
//! (<https://learn.microsoft.com/entra/identity-platform/scopes-oidc>); `.default` stands
//! for the app's static permissions and cannot be combined with named ones.

use super::super::errors::{echo, EntraError};

/// Scopes that are about the sign-in, not a resource.
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "offline_access", "email"];
/// The delegated permission `.default` stands for on every resource.
const DEFAULT_DELEGATED_SCOPE: &str = "User.Read";

/// Requested scopes: those of exactly one resource plus optional OpenID Connect scopes.
#[derive(Debug)]
pub(super) struct Scopes {
    pub(super) resource: String,
    /// Permission names on the resource (`.default` included as is).
    pub(super) permissions: Vec<String>,
    /// Requested OIDC scopes, in request order.
    pub(super) oidc: Vec<String>,
}

impl Scopes {
    pub(super) fn parse(raw: &str) -> Result<Self, EntraError> {
        let invalid = |message: String| EntraError::bad_request("invalid_scope", 70011, message);
        let mut resource: Option<&str> = None;
        let mut permissions = Vec::new();
        let mut oidc = Vec::new();
        for item in raw.split_whitespace() {
            if OIDC_SCOPES.contains(&item) {
                if !oidc.iter().any(|s| s == item) {
                    oidc.push(item.to_owned());
                }
                continue;
            }
            let Some((item_resource, permission)) = item.rsplit_once('/') else {
                return Err(invalid(format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope \
                     '{}' does not name a resource.",
                    echo(item)
                )));
            };
            if item_resource.is_empty() || permission.is_empty() {
                return Err(invalid(format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope \
                     '{}' is not valid.",
                    echo(item)
                )));
            }
            match resource {
                Some(known) if known != item_resource => {
                    return Err(invalid(
                        "The provided value for the input parameter 'scope' is not valid. Scopes \
                         of more than one resource were requested."
                            .to_owned(),
                    ))
                }
                _ => resource = Some(item_resource),
            }
            if !permissions.iter().any(|p| p == permission) {
                permissions.push(permission.to_owned());
            }
        }
        let Some(resource) = resource else {
            return Err(invalid(
                "The provided value for the input parameter 'scope' is not valid. A scope of a \
                 resource is required."
                    .to_owned(),
            ));
        };
        if permissions.len() > 1 && permissions.iter().any(|p| p == ".default") {
            return Err(invalid(
                "The provided value for the input parameter 'scope' is not valid. The '.default' \
                 scope can't be combined with resource-specific scopes."
                    .to_owned(),
            ));
        }
        Ok(Self {
            resource: resource.to_owned(),
            permissions,
            oidc,
        })
    }

    pub(super) fn wants(&self, oidc_scope: &str) -> bool {
        self.oidc.iter().any(|s| s == oidc_scope)
    }

    /// The `scp` of the issued access token: `.default` stands for `User.Read`.
    pub(super) fn granted_permissions(&self) -> String {
        if self.permissions.iter().any(|p| p == ".default") {
            DEFAULT_DELEGATED_SCOPE.to_owned()
        } else {
            self.permissions.join(" ")
        }
    }

    /// The `scope` field of the answer: granted permissions with the resource prefix, then the
    /// requested OIDC scopes.
    pub(super) fn granted(&self) -> String {
        let permissions = self.granted_permissions();
        let mut scopes: Vec<String> = permissions
            .split(' ')
            .map(|p| format!("{}/{p}", self.resource))
            .collect();
        scopes.extend(self.oidc.iter().cloned());
        scopes.join(" ")
    }
}

/// The scopes of a grant as stored with its refresh token.
pub(super) fn scope_string(scopes: &Scopes) -> String {
    let mut items: Vec<String> = scopes
        .permissions
        .iter()
        .map(|p| format!("{}/{p}", scopes.resource))
        .collect();
    items.extend(scopes.oidc.iter().cloned());
    items.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_need_exactly_one_resource() {
        let ok =
            Scopes::parse("https://r.test/.default offline_access openid profile").expect("valid");
        assert_eq!(ok.resource, "https://r.test");
        assert_eq!(
            ok.granted(),
            "https://r.test/User.Read offline_access openid profile"
        );
        let explicit = Scopes::parse("api://x/Files.Read api://x/Mail.Send").expect("valid");
        assert_eq!(explicit.granted_permissions(), "Files.Read Mail.Send");

        for bad in [
            "",
            "openid profile",
            "User.Read",
            "https://a.test/.default https://b.test/.default",
            "https://a.test/.default https://a.test/Mail.Read",
            "/x",
            "https://a.test/",
        ] {
            let error = Scopes::parse(bad).expect_err(bad);
            assert_eq!(
                (error.error(), error.code()),
                ("invalid_scope", 70011),
                "{bad}"
            );
        }
    }
}
