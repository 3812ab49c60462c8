//! Span names and `db.operation.name` values as static strings for the calls the service
//! makes, so a traced call does not format (and allocate) the same few names again each time.
//! Anything outside the tables still gets its name, formatted.

use std::borrow::Cow;

use super::client::Dependency;

/// The methods the HTTP semantic conventions know (RFC 9110 and PATCH, RFC 5789); any other
/// is recorded as `_OTHER` ([`super::client::method_value`]).
pub(super) const STANDARD_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
];

/// A client span's name, `{method} {dependency}`; `HTTP {dependency}` for a method recorded as
/// `_OTHER`, as the HTTP semantic conventions name such spans.
pub(super) fn http(method: &str, dependency: Dependency) -> Cow<'static, str> {
    use Dependency::{Database, Downstream, EntraMetadata, EntraToken, KeyVault};
    let name = match (method, dependency) {
        ("POST", EntraToken) => "POST entra.token",
        ("GET", EntraMetadata) => "GET entra.metadata",
        ("GET", KeyVault) => "GET key_vault",
        ("GET", Downstream) => "GET downstream",
        ("POST", Downstream) => "POST downstream",
        ("PUT", Downstream) => "PUT downstream",
        ("PATCH", Downstream) => "PATCH downstream",
        ("DELETE", Downstream) => "DELETE downstream",
        (_, EntraToken | EntraMetadata | KeyVault | Downstream | Database) => {
            let method = if method == "_OTHER" { "HTTP" } else { method };
            return Cow::Owned(format!("{method} {}", dependency.name()));
        }
    };
    Cow::Borrowed(name)
}

/// The statement's first keyword, upper-case: `SELECT`, `INSERT`, `UPDATE`, `DELETE`, `WITH`.
pub(super) fn operation(statement: &str) -> Cow<'static, str> {
    let keyword = statement.split_whitespace().next().unwrap_or_default();
    match ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"]
        .into_iter()
        .find(|known| known.eq_ignore_ascii_case(keyword))
    {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(keyword.to_ascii_uppercase()),
    }
}

/// A statement span's name, `{operation} {system}`.
pub(super) fn query(operation: &str, system: &str) -> Cow<'static, str> {
    let name = match (operation, system) {
        ("SELECT", "sqlite") => "SELECT sqlite",
        ("INSERT", "sqlite") => "INSERT sqlite",
        ("UPDATE", "sqlite") => "UPDATE sqlite",
        ("DELETE", "sqlite") => "DELETE sqlite",
        ("WITH", "sqlite") => "WITH sqlite",
        ("SELECT", "postgresql") => "SELECT postgresql",
        ("INSERT", "postgresql") => "INSERT postgresql",
        ("UPDATE", "postgresql") => "UPDATE postgresql",
        ("DELETE", "postgresql") => "DELETE postgresql",
        ("WITH", "postgresql") => "WITH postgresql",
        _ => return Cow::Owned(format!("{operation} {system}")),
    };
    Cow::Borrowed(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPENDENCIES: [Dependency; 5] = [
        Dependency::EntraToken,
        Dependency::EntraMetadata,
        Dependency::KeyVault,
        Dependency::Downstream,
        Dependency::Database,
    ];

    #[test]
    fn every_static_name_is_the_formatted_one() {
        for method in STANDARD_METHODS.into_iter().chain(["CONNECT", "get"]) {
            for dependency in DEPENDENCIES {
                let expected = format!("{method} {}", dependency.name());
                assert_eq!(http(method, dependency), expected);
            }
        }
        for dependency in DEPENDENCIES {
            let expected = format!("HTTP {}", dependency.name());
            assert_eq!(http("_OTHER", dependency), expected);
        }
        for system in ["sqlite", "postgresql", "mysql"] {
            for statement in [
                "SELECT 1",
                "\n  insert INTO t",
                "Update t",
                "DELETE FROM t",
                "WITH x AS (SELECT 1) SELECT 1",
                "VACUUM",
                "",
            ] {
                let keyword = statement.split_whitespace().next().unwrap_or_default();
                let operation = operation(statement);
                assert_eq!(operation, keyword.to_ascii_uppercase());
                assert_eq!(query(&operation, system), format!("{operation} {system}"));
            }
        }
    }

    #[test]
    fn the_calls_made_have_static_names() {
        assert!(matches!(
            http("POST", Dependency::EntraToken),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            http("GET", Dependency::KeyVault),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            operation("\n    UPDATE user_tokens"),
            Cow::Borrowed("UPDATE")
        ));
        assert!(matches!(query("SELECT", "postgresql"), Cow::Borrowed(_)));
    }
}
