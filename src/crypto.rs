//! Sealing refresh tokens with AES-256-GCM under a Key Vault key.
//!
//! Wire format v1 (all lengths fixed):
//!
//! ```text
//! [0x01 format][16-byte salt][12-byte nonce][ciphertext || 16-byte tag]
//! ```
//!
//! Each value gets its own AES key, derived with HKDF-SHA256 from the Key Vault key and the
//! random salt, so the GCM nonce limit (2^32 messages per key) never binds no matter how many
//! rows one key version seals. The authenticated data is the header plus the row identity
//! (tenant, user, key name, key version), each length-prefixed: a value copied into another
//! row, or under another key label, does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::domain::{RefreshToken, UserKey};

const FORMAT_V1: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + SALT_LEN + NONCE_LEN;
const HKDF_INFO: &[u8] = b"obo-vault/refresh-token/v1";

/// A 256-bit key from Key Vault. No `Debug`, no `Clone`; zeroized on drop.
pub struct DataKey([u8; 32]);

impl DataKey {
    /// Builds a key from exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self(array))
    }

    /// 32 fresh random bytes, for a new key version.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The raw bytes, to store in Key Vault.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The label a sealed value is bound to besides its row.
#[derive(Clone, Copy, Debug)]
pub struct KeyLabel<'a> {
    /// Key Vault secret name.
    pub name: &'a str,
    /// Key Vault secret version.
    pub version: &'a str,
}

/// Why a value could not be sealed or opened. Deliberately says nothing about the content.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The Key Vault secret is not 32 bytes of base64.
    #[error("the encryption key is malformed")]
    BadKey,
    /// The value is not in a known format, was altered, or belongs to another row or key.
    #[error("the sealed value does not open")]
    DoesNotOpen,
}

/// Seals `token` for the row `owner` under `key`; every call gives a different output.
pub fn seal(
    token: &RefreshToken,
    owner: &UserKey,
    label: KeyLabel<'_>,
    key: &DataKey,
) -> Result<Vec<u8>, CryptoError> {
    let mut header = [0u8; HEADER_LEN];
    header[0] = FORMAT_V1;
    rand::rngs::OsRng.fill_bytes(&mut header[1..]);
    let (salt, nonce) = header[1..].split_at(SALT_LEN);
    let cipher = record_cipher(key, salt)?;
    let aad = associated_data(&header, owner, label);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: token.expose().as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::DoesNotOpen)?;
    let mut sealed = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    sealed.extend_from_slice(&header);
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// Opens a value sealed by [`seal`] for the same row and key label.
pub fn open(
    sealed: &[u8],
    owner: &UserKey,
    label: KeyLabel<'_>,
    key: &DataKey,
) -> Result<RefreshToken, CryptoError> {
    if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != FORMAT_V1 {
        return Err(CryptoError::DoesNotOpen);
    }
    let (header, ciphertext) = sealed.split_at(HEADER_LEN);
    let (salt, nonce) = header[1..].split_at(SALT_LEN);
    let cipher = record_cipher(key, salt)?;
    let aad = associated_data(header, owner, label);
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::DoesNotOpen)?,
    );
    let text = std::str::from_utf8(&plain).map_err(|_| CryptoError::DoesNotOpen)?;
    Ok(RefreshToken::new(text.to_owned()))
}

/// The format version of a sealed value, if it has a known one (for operators and fuzzing).
pub fn format_version(sealed: &[u8]) -> Option<u8> {
    (sealed.len() >= HEADER_LEN + TAG_LEN && sealed[0] == FORMAT_V1).then_some(FORMAT_V1)
}

fn record_cipher(key: &DataKey, salt: &[u8]) -> Result<Aes256Gcm, CryptoError> {
    let mut record_key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), key.expose())
        .expand(HKDF_INFO, record_key.as_mut())
        .map_err(|_| CryptoError::BadKey)?;
    Aes256Gcm::new_from_slice(record_key.as_ref()).map_err(|_| CryptoError::BadKey)
}

fn associated_data(header: &[u8], owner: &UserKey, label: KeyLabel<'_>) -> Vec<u8> {
    let parts = [
        owner.tenant_id.as_str(),
        owner.user_id.as_str(),
        label.name,
        label.version,
    ];
    let mut aad = Vec::with_capacity(header.len() + 128);
    aad.extend_from_slice(header);
    for part in parts {
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TenantId, UserId};

    fn owner(user: &str) -> UserKey {
        UserKey {
            tenant_id: TenantId::parse("11111111-1111-1111-1111-111111111111").unwrap(),
            user_id: UserId::parse(user).unwrap(),
        }
    }

    const ALICE: &str = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa";
    const BOB: &str = "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb";
    const LABEL: KeyLabel<'static> = KeyLabel {
        name: "obo-vault-t",
        version: "v1",
    };

    fn sealed_for_alice(key: &DataKey) -> Vec<u8> {
        seal(
            &RefreshToken::new("rt-secret".into()),
            &owner(ALICE),
            LABEL,
            key,
        )
        .unwrap()
    }

    #[test]
    fn a_sealed_token_opens_for_its_row() {
        let key = DataKey::generate();
        let sealed = sealed_for_alice(&key);
        let opened = open(&sealed, &owner(ALICE), LABEL, &key).unwrap();
        assert_eq!(opened.expose(), "rt-secret");
        assert_eq!(format_version(&sealed), Some(1));
    }

    #[test]
    fn sealing_twice_gives_different_bytes() {
        let key = DataKey::generate();
        assert_ne!(sealed_for_alice(&key), sealed_for_alice(&key));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let key = DataKey::generate();
        let sealed = sealed_for_alice(&key);
        for index in 0..sealed.len() * 8 {
            let mut altered = sealed.clone();
            altered[index / 8] ^= 1 << (index % 8);
            assert_eq!(
                open(&altered, &owner(ALICE), LABEL, &key).err(),
                Some(CryptoError::DoesNotOpen),
                "bit {index}"
            );
        }
    }

    #[test]
    fn truncated_values_are_rejected() {
        let key = DataKey::generate();
        let sealed = sealed_for_alice(&key);
        for len in 0..sealed.len() {
            assert!(
                open(&sealed[..len], &owner(ALICE), LABEL, &key).is_err(),
                "len {len}"
            );
        }
    }

    #[test]
    fn a_wrong_key_row_or_label_is_rejected() {
        let key = DataKey::generate();
        let sealed = sealed_for_alice(&key);
        assert!(open(&sealed, &owner(ALICE), LABEL, &DataKey::generate()).is_err());
        assert!(open(&sealed, &owner(BOB), LABEL, &key).is_err());
        let other_version = KeyLabel {
            name: LABEL.name,
            version: "v2",
        };
        assert!(open(&sealed, &owner(ALICE), other_version, &key).is_err());
        let other_name = KeyLabel {
            name: "obo-vault-u",
            version: LABEL.version,
        };
        assert!(open(&sealed, &owner(ALICE), other_name, &key).is_err());
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(DataKey::from_bytes(&[0u8; 31]).is_err());
        assert!(DataKey::from_bytes(&[0u8; 33]).is_err());
        assert!(DataKey::from_bytes(&[0u8; 32]).is_ok());
    }
}
