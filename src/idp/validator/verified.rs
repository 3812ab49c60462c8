//! Tokens verified a moment ago, so a workload presenting the same token on every call (as
//! MSAL clients do until it nears expiry) pays the RS256 check and the claims parsing once,
//! not on every call.
//!
//! What a hit may reuse, and for how long:
//! - Only a token that passed every check of [`TokenValidator::validate`](super::TokenValidator::validate)
//!   (signature, issuer, audience, lifetime, tenant) is kept; refusals are never kept, so a
//!   forged or altered token is verified (and refused) every time.
//! - The key is the token's SHA-256: a hit needs the very same bytes, and no token is kept in
//!   clear.
//! - A hit is served until [`REUSE`] after the check or the token's `exp`, whichever comes
//!   first (the check itself accepts five minutes of skew past `exp`; the cache does not).
//!   A signing key Entra withdraws is therefore trusted at most [`REUSE`] longer than the key
//!   set itself keeps it (see docs/SECURITY.md).
//! - At most [`CAPACITY`] tokens; when full, expired ones go, and if none has, all of them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::ValidatedToken;

/// How long a verified token's claims are reused at most.
pub(super) const REUSE: Duration = Duration::from_secs(120);
/// How many verified tokens are kept at most (each a few hundred bytes).
const CAPACITY: usize = 4096;

/// The verified tokens, by SHA-256.
#[derive(Default)]
pub(super) struct Verified {
    tokens: Mutex<HashMap<[u8; 32], Entry>>,
}

struct Entry {
    claims: ValidatedToken,
    until: Instant,
}

impl Verified {
    /// The claims of `token` if it was verified less than [`REUSE`] ago and has not expired.
    pub(super) fn get(&self, token: &str) -> Option<ValidatedToken> {
        let digest = digest(token);
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = tokens.get(&digest)?;
        (Instant::now() < entry.until).then(|| entry.claims.clone())
    }

    /// Keeps the claims of `token`, which just passed every check.
    pub(super) fn keep(&self, token: &str, claims: &ValidatedToken) {
        let left = (claims.expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        let reuse = left.min(REUSE);
        if reuse.is_zero() {
            return;
        }
        let now = Instant::now();
        let entry = Entry {
            claims: claims.clone(),
            until: now + reuse,
        };
        let digest = digest(token);
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if tokens.len() >= CAPACITY && !tokens.contains_key(&digest) {
            tokens.retain(|_, entry| now < entry.until);
            if tokens.len() >= CAPACITY {
                tokens.clear();
            }
        }
        tokens.insert(digest, entry);
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;

    fn claims(expires_in: chrono::Duration) -> ValidatedToken {
        ValidatedToken {
            tenant_id: TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap(),
            object_id: None,
            app_id: Some("app".into()),
            scopes: Vec::new(),
            roles: vec!["OboVault.Act".into()],
            app_only: true,
            expires_at: chrono::Utc::now() + expires_in,
        }
    }

    #[test]
    fn only_the_same_bytes_hit() {
        let verified = Verified::default();
        verified.keep("a.b.c", &claims(chrono::Duration::hours(1)));
        assert_eq!(
            verified.get("a.b.c").map(|c| c.roles),
            Some(vec!["OboVault.Act".to_owned()])
        );
        assert!(verified.get("a.b.d").is_none());
        assert!(verified.get("a.b.c ").is_none());
    }

    #[test]
    fn expired_or_nearly_expired_tokens_are_not_reused() {
        let verified = Verified::default();
        // Within the validator's five minutes of skew, but past `exp`: checked every time.
        verified.keep("old", &claims(chrono::Duration::seconds(-10)));
        assert!(verified.get("old").is_none());
        // Reused until `exp`, not for the whole REUSE.
        verified.keep("short", &claims(chrono::Duration::milliseconds(300)));
        assert!(verified.get("short").is_some());
        std::thread::sleep(Duration::from_millis(400));
        assert!(verified.get("short").is_none());
    }

    #[test]
    fn capacity_is_bounded() {
        let verified = Verified::default();
        let token = claims(chrono::Duration::hours(1));
        for n in 0..=CAPACITY {
            verified.keep(&n.to_string(), &token);
        }
        let kept = verified.tokens.lock().unwrap().len();
        assert!(kept <= CAPACITY, "{kept}");
        assert!(verified.get(&CAPACITY.to_string()).is_some());
    }
}
