//! `/pk/<multihash>`: a peer's public key, published so that others can check what it signed.
//!
//! The value is a protobuf-encoded libp2p `PublicKey`; it is valid if it decodes (as a supported
//! key type, at most [`MAX_PUBLIC_KEY_SIZE`] bytes) and its peer id's multihash is exactly the
//! bytes after the prefix, as go-libp2p-record's public-key validator requires.

use libp2p::PeerId;
use libp2p::identity::PublicKey;

use super::{MAX_PUBLIC_KEY_SIZE, ValidatorError, decode_public_key, parse_name};

/// Raw key prefix of the namespace.
pub const PREFIX: &[u8] = b"/pk/";

/// The DHT key under which `peer`'s public key is published: `/pk/` and its binary multihash.
pub fn routing_key(peer: &PeerId) -> Vec<u8> {
    let mut key = PREFIX.to_vec();
    key.extend_from_slice(&peer.to_bytes());
    key
}

/// Checks a `/pk/` value against `name`, the key's bytes after [`PREFIX`]; returns the key.
pub fn validate(name: &[u8], value: &[u8]) -> Result<PublicKey, ValidatorError> {
    if value.len() > MAX_PUBLIC_KEY_SIZE {
        return Err(ValidatorError::TooLarge {
            size: value.len(),
            max: MAX_PUBLIC_KEY_SIZE,
        });
    }
    let peer = parse_name(name)?;
    let key = decode_public_key(value)?;
    if key.to_peer_id() != peer {
        return Err(ValidatorError::PublicKeyMismatch);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::super::testutil::rsa_keypair;
    use super::*;

    fn name_of(key: &Keypair) -> Vec<u8> {
        key.public().to_peer_id().to_bytes()
    }

    #[test]
    fn an_ed25519_key_under_its_own_name_is_valid() {
        let key = Keypair::generate_ed25519();
        let value = key.public().encode_protobuf();
        assert_eq!(validate(&name_of(&key), &value), Ok(key.public()));
        // Ed25519 names inline the key: identity multihash.
        assert_eq!(name_of(&key)[0], 0x00);
        assert!(routing_key(&key.public().to_peer_id()).starts_with(b"/pk/\x00"));
    }

    #[test]
    fn an_rsa_key_under_its_own_hashed_name_is_valid() {
        let key = rsa_keypair(0);
        let value = key.public().encode_protobuf();
        // RSA names are the SHA-256 of the key: code 0x12, 32 bytes.
        assert_eq!(&name_of(&key)[..2], &[0x12, 0x20]);
        assert_eq!(validate(&name_of(&key), &value), Ok(key.public()));
    }

    #[test]
    fn a_key_under_another_name_is_refused() {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let value = a.public().encode_protobuf();
        assert_eq!(
            validate(&name_of(&b), &value),
            Err(ValidatorError::PublicKeyMismatch)
        );
        let (ra, rb) = (rsa_keypair(0), rsa_keypair(1));
        assert_eq!(
            validate(&name_of(&rb), &ra.public().encode_protobuf()),
            Err(ValidatorError::PublicKeyMismatch)
        );
        // An RSA key under an Ed25519 name and back.
        assert_eq!(
            validate(&name_of(&a), &ra.public().encode_protobuf()),
            Err(ValidatorError::PublicKeyMismatch)
        );
        assert_eq!(
            validate(&name_of(&ra), &value),
            Err(ValidatorError::PublicKeyMismatch)
        );
    }

    #[test]
    fn garbage_values_and_names_are_refused() {
        let key = Keypair::generate_ed25519();
        for garbage in [&b""[..], b"garbage", b"\x08\x01\x12\x20short"] {
            assert_eq!(
                validate(&name_of(&key), garbage),
                Err(ValidatorError::InvalidPublicKey),
                "{garbage:?}"
            );
        }
        let value = key.public().encode_protobuf();
        assert_eq!(validate(b"", &value), Err(ValidatorError::InvalidName));
        assert_eq!(
            validate(b"\x00\x24", &value),
            Err(ValidatorError::InvalidName)
        );
        let mut trailing = name_of(&key);
        trailing.push(1);
        assert_eq!(
            validate(&trailing, &value),
            Err(ValidatorError::InvalidName)
        );
    }

    #[test]
    fn unsupported_key_types_and_oversized_values_are_refused() {
        let key = Keypair::generate_ed25519();
        let unknown = [0x08, 0x07, 0x12, 0x01, 0x02];
        assert_eq!(
            validate(&name_of(&key), &unknown),
            Err(ValidatorError::UnsupportedKeyType(7))
        );
        // Secp256k1 and ECDSA keys are kept under their own names, as Ed25519 and RSA ones.
        for other in [Keypair::generate_secp256k1(), Keypair::generate_ecdsa()] {
            let value = other.public().encode_protobuf();
            assert!(validate(&name_of(&other), &value).is_ok());
            assert_eq!(
                validate(&name_of(&key), &value),
                Err(ValidatorError::PublicKeyMismatch)
            );
        }
        let big = vec![0u8; MAX_PUBLIC_KEY_SIZE + 1];
        assert_eq!(
            validate(&name_of(&key), &big),
            Err(ValidatorError::TooLarge {
                size: MAX_PUBLIC_KEY_SIZE + 1,
                max: MAX_PUBLIC_KEY_SIZE
            })
        );
    }
}
