//! The sealed-value parser: `crypto::open` on arbitrary bytes (as a tampered database could
//! hold) with a fixed key, owner and label. Nothing but the values `seal` made may open, and
//! nothing may panic. Each input is also sealed as a token and must round-trip, and must not
//! open for another row or key version.

#![no_main]

use libfuzzer_sys::fuzz_target;
use obo_vault::crypto::{self, DataKey, KeyLabel};
use obo_vault::domain::{RefreshToken, TenantId, UserId, UserKey};

const TENANT: &str = "8eaef023-2b34-4da1-9baa-8bc8c9d6a490";
const USER: &str = "93e4cb95-d4a8-42d9-b432-3d096851a561";
const OTHER_USER: &str = "93e4cb95-d4a8-42d9-b432-3d096851a562";

fn owner(user: &str) -> UserKey {
    UserKey {
        tenant_id: TenantId::parse(TENANT).unwrap(),
        user_id: UserId::parse(user).unwrap(),
    }
}

const LABEL: KeyLabel<'static> = KeyLabel {
    name: "obo-vault-8eaef023-2b34-4da1-9baa-8bc8c9d6a490",
    version: "9b908fc1671b4fe2b353c63a92d1d6d3",
};

fuzz_target!(|data: &[u8]| {
    let key = DataKey::from_bytes(&[7u8; 32]).unwrap();
    let me = owner(USER);
    // Arbitrary bytes never open (forging a GCM tag is out of a fuzzer's reach).
    assert!(crypto::open(data, &me, LABEL, &key).is_err());
    let _ = crypto::format_version(data);
    // Round trip of arbitrary token text.
    if let Ok(text) = std::str::from_utf8(data) {
        let token = RefreshToken::new(text.to_owned());
        let sealed = crypto::seal(&token, &me, LABEL, &key).unwrap();
        assert_eq!(crypto::format_version(&sealed), Some(1));
        let opened = crypto::open(&sealed, &me, LABEL, &key).unwrap();
        assert_eq!(opened.expose(), text);
        assert!(crypto::open(&sealed, &owner(OTHER_USER), LABEL, &key).is_err());
        let other_version = KeyLabel {
            version: "00000000000000000000000000000000",
            ..LABEL
        };
        assert!(crypto::open(&sealed, &me, other_version, &key).is_err());
        // One flipped bit anywhere (chosen by the input) breaks it.
        if !data.is_empty() {
            let mut tampered = sealed.clone();
            let at = usize::from(data[0]) * 7 % tampered.len();
            tampered[at] ^= 1 << (data[data.len() - 1] % 8);
            assert!(crypto::open(&tampered, &me, LABEL, &key).is_err());
        }
    }
});
