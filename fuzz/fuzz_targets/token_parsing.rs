//! Inbound token parsing in the validator: the pre-network checks (size, compact structure,
//! header, algorithm, `crit`, `tid`) on arbitrary strings, and the claims reader on arbitrary
//! payload JSON. Nothing may panic; whatever passes the precheck is an RS256 token of a GUID
//! tenant within the size limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use obo_vault::domain::TenantId;
use obo_vault::idp::TokenValidator;

const TENANT: &str = "8eaef023-2b34-4da1-9baa-8bc8c9d6a490";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        let Ok(token) = std::str::from_utf8(rest) else {
            return;
        };
        if let Ok((tenant, _kid)) = TokenValidator::precheck(token) {
            assert!(token.len() <= 16 * 1024);
            assert_eq!(token.split('.').count(), 3);
            assert_eq!(TenantId::parse(tenant.as_str()).ok(), Some(tenant));
        }
    } else {
        let tenant = TenantId::parse(TENANT).unwrap();
        if let Ok(token) = TokenValidator::claims_from_json(tenant.clone(), rest) {
            assert_eq!(token.tenant_id, tenant);
            assert!(token
                .scopes
                .iter()
                .all(|s| !s.is_empty() && !s.contains(' ')));
        }
    }
});
