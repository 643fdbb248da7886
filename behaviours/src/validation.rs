//! What makes a record acceptable: key and value sizes, and content keys that match their value.
//!
//! A key of exactly 32 bytes is a *content key*: it must be the SHA-256 of the value. A key under
//! a validated namespace (`/pk/`, `/ipns/`) must pass that namespace's validator
//! ([`crate::validators`]). Any other key (1 to [`MAX_KEY_SIZE`] bytes) is a free key and carries
//! no check.

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::config::{MAX_KEY_SIZE, MAX_VALUE_SIZE};
use crate::validators::{self, Namespace, ValidatorError};

/// Length of a content key: a SHA-256 digest.
pub const CONTENT_KEY_LEN: usize = 32;

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The key is empty.
    #[error("the key is empty")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_SIZE`].
    #[error("the key is {0} bytes; at most {MAX_KEY_SIZE} are allowed")]
    KeyTooLong(usize),
    /// The value is larger than [`MAX_VALUE_SIZE`].
    #[error("the value is {0} bytes; at most {MAX_VALUE_SIZE} are allowed")]
    ValueTooLarge(usize),
    /// A 32-byte key that is not the SHA-256 of the value.
    #[error("the value does not hash to its 32-byte content key")]
    ContentMismatch,
    /// An answer carried a record under another key than the one asked for.
    #[error("the record is under another key than the one asked for")]
    KeyMismatch,
    /// A record under a validated namespace that fails its validator.
    #[error("invalid namespaced record: {0}")]
    Namespaced(#[from] ValidatorError),
}

/// SHA-256 of `value`: the content key under which `store(value)` files it.
pub fn content_key(value: &[u8]) -> [u8; CONTENT_KEY_LEN] {
    Sha256::digest(value).into()
}

/// Whether `key` names content (and so must match the value's hash).
pub fn is_content_key(key: &[u8]) -> bool {
    key.len() == CONTENT_KEY_LEN
}

/// Checks a key on its own.
pub fn validate_key(key: &[u8]) -> Result<(), RecordError> {
    if key.is_empty() {
        return Err(RecordError::EmptyKey);
    }
    if key.len() > MAX_KEY_SIZE {
        return Err(RecordError::KeyTooLong(key.len()));
    }
    Ok(())
}

/// Checks a record before it is stored or served: sizes, and the hash of a content key.
pub fn validate_record(key: &[u8], value: &[u8]) -> Result<(), RecordError> {
    validate_key(key)?;
    if value.len() > MAX_VALUE_SIZE {
        return Err(RecordError::ValueTooLarge(value.len()));
    }
    if is_content_key(key) && content_key(value) != key {
        return Err(RecordError::ContentMismatch);
    }
    Ok(())
}

/// [`validate_record`], and for a key under a validated namespace (`/pk/`, `/ipns/`) its
/// validator at the wall-clock time `now` (an IPNS record past its end of life fails).
pub fn validate_at(key: &[u8], value: &[u8], now: SystemTime) -> Result<(), RecordError> {
    validate_record(key, value)?;
    if Namespace::of(key).is_some() {
        validators::validate(key, value, now)?;
    }
    Ok(())
}

/// Whether `key` is under a validated namespace: its records are signed or self-certifying, so
/// the better of two valid ones wins whoever sends it ([`validators::select`]).
pub fn is_namespaced(key: &[u8]) -> bool {
    Namespace::of(key).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_key_is_sha256() {
        assert_eq!(
            hex::encode(content_key(b"hello")),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn content_key_must_match() {
        let key = content_key(b"v");
        assert!(validate_record(&key, b"v").is_ok());
        assert_eq!(
            validate_record(&key, b"w"),
            Err(RecordError::ContentMismatch)
        );
    }

    #[test]
    fn free_keys_are_not_hashed() {
        assert!(validate_record(b"/v/name", b"anything").is_ok());
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(validate_record(b"", b"v"), Err(RecordError::EmptyKey));
        let long = vec![b'k'; MAX_KEY_SIZE + 1];
        assert_eq!(
            validate_record(&long, b"v"),
            Err(RecordError::KeyTooLong(MAX_KEY_SIZE + 1))
        );
        let big = vec![0u8; MAX_VALUE_SIZE + 1];
        assert_eq!(
            validate_record(b"k", &big),
            Err(RecordError::ValueTooLarge(MAX_VALUE_SIZE + 1))
        );
        assert!(validate_record(b"k", &vec![0u8; MAX_VALUE_SIZE]).is_ok());
    }
}
