//! Namespaced record validators, as pure functions: whether a record under a `/pk/` or `/ipns/` key
//! is acceptable, and which of two acceptable records under one key is the better.
//!
//! Keys in the DHT are raw bytes: a namespace prefix, then the binary multihash of a peer id
//! (`/pk/<multihash>`, `/ipns/<multihash>`). Each namespace has its own module:
//!
//! - [`pk`]: the value is the protobuf `PublicKey` whose peer id is the key's multihash;
//! - [`ipns`]: the value is a signed IPNS record (the IPNS Record specification's verification).
//!
//! [`validate`] and [`select`] dispatch on the key. Nothing here keeps state, reads a clock or
//! touches the network: the caller passes `now`, which makes every check repeatable in tests.
//! Keys outside these namespaces are not this module's business: [`Namespace::of`] tells them
//! apart, and [`validate`] answers [`ValidatorError::UnknownNamespace`] for them.

use std::cmp::Ordering;
use std::time::SystemTime;

use libp2p::PeerId;
use libp2p::identity::PublicKey;

mod cbor;
pub mod ipns;
pub mod pk;
mod proto;
#[cfg(test)]
mod testutil;

/// Largest protobuf `PublicKey` accepted, in a `/pk/` value or an IPNS record's `pubKey`: room for
/// an 8192-bit RSA key (about 1,100 bytes), the largest libp2p verifies signatures with.
pub const MAX_PUBLIC_KEY_SIZE: usize = 2 * 1024;

/// Key type numbers of the libp2p `PublicKey` protobuf.
pub const KEY_TYPE_RSA: u64 = 0;
/// Ed25519, the default key type of IPNS names and peer ids.
pub const KEY_TYPE_ED25519: u64 = 1;
/// Secp256k1 (optional in the IPNS specification).
pub const KEY_TYPE_SECP256K1: u64 = 2;
/// ECDSA P-256 (optional in the IPNS specification).
pub const KEY_TYPE_ECDSA: u64 = 3;

/// The key types this node verifies: every one libp2p identities have (the IPNS specification
/// asks for Ed25519 and RSA; Secp256k1 and ECDSA are optional there, and go-libp2p signs with all
/// four).
pub const SUPPORTED_KEY_TYPES: [u64; 4] = [
    KEY_TYPE_RSA,
    KEY_TYPE_ED25519,
    KEY_TYPE_SECP256K1,
    KEY_TYPE_ECDSA,
];

/// Multihash code of the identity "hash": the digest is the input itself (inlined small keys).
pub const MULTIHASH_IDENTITY: u64 = 0x00;

/// Every way a namespaced record can be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorError {
    /// The key starts with no namespace that has a validator here.
    #[error("the key is in no namespace with a validator (/pk/, /ipns/)")]
    UnknownNamespace,
    /// The value (or a public key inside it) is larger than its limit.
    #[error("{size} bytes where at most {max} are allowed")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit it broke.
        max: usize,
    },
    /// What follows the namespace is not the canonical binary multihash of a peer id.
    #[error("the key's name is not the binary multihash of a peer id")]
    InvalidName,
    /// A public key that does not decode as a libp2p protobuf `PublicKey`.
    #[error("the public key does not decode")]
    InvalidPublicKey,
    /// A public key of a type this node does not verify (see [`SUPPORTED_KEY_TYPES`]).
    #[error("public keys of type {0} are not supported")]
    UnsupportedKeyType(u64),
    /// The public key's peer id is not the name in the key.
    #[error("the public key does not hash to the name in the key")]
    PublicKeyMismatch,
    /// An IPNS record with no `pubKey` under a name that does not inline its key.
    #[error("the record carries no public key and the name does not inline one")]
    PublicKeyNotFound,
    /// The IPNS record is not a well-formed `IpnsEntry` protobuf.
    #[error("the record is not a well-formed IpnsEntry: {0}")]
    MalformedRecord(&'static str),
    /// A legacy record with neither `signatureV2` nor `data`: V1 signatures are never trusted.
    #[error("a V1-only record (no signatureV2 and no data)")]
    V1Only,
    /// No `signatureV2` (or an empty one).
    #[error("the record has no signatureV2")]
    MissingSignatureV2,
    /// No `data` (or an empty one).
    #[error("the record has no data")]
    MissingData,
    /// The `data` field is not a DAG-CBOR map.
    #[error("the record's data is not a DAG-CBOR map: {0}")]
    MalformedData(&'static str),
    /// The `data` map lacks one of the fields every record must sign.
    #[error("the record's data has no {0} field")]
    MissingField(&'static str),
    /// A field of the `data` map holds the wrong kind of item.
    #[error("the record's data field {0} has the wrong type")]
    WrongFieldType(&'static str),
    /// `signatureV2` does not verify against `ipns-signature:` and the data.
    #[error("signatureV2 does not verify")]
    BadSignature,
    /// A legacy V1 protobuf field disagrees with its signed copy in `data`.
    #[error("the V1 field {0} disagrees with the signed data")]
    V1Mismatch(&'static str),
    /// A validity type other than EOL (0), the only one there is.
    #[error("unknown validity type {0}")]
    UnknownValidityType(u64),
    /// The validity is not an RFC 3339 timestamp.
    #[error("the validity is not an RFC 3339 timestamp")]
    InvalidValidity,
    /// The record's end of life is not after `now`.
    #[error("the record has expired")]
    Expired,
}

/// A namespace with a validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// `/pk/<multihash>`: public keys.
    Pk,
    /// `/ipns/<multihash>`: IPNS records.
    Ipns,
}

impl Namespace {
    /// Every namespace with a validator.
    pub const ALL: [Namespace; 2] = [Namespace::Pk, Namespace::Ipns];

    /// The raw key prefix of the namespace.
    pub const fn prefix(self) -> &'static [u8] {
        match self {
            Namespace::Pk => pk::PREFIX,
            Namespace::Ipns => ipns::PREFIX,
        }
    }

    /// The namespace of `key` and the name after its prefix, or `None` for a key in none.
    pub fn of(key: &[u8]) -> Option<(Namespace, &[u8])> {
        Self::ALL
            .into_iter()
            .find_map(|ns| key.strip_prefix(ns.prefix()).map(|name| (ns, name)))
    }
}

/// Whether `value` is acceptable under `key` at `now`: the check a node makes before it stores or
/// serves a record in a validated namespace.
pub fn validate(key: &[u8], value: &[u8], now: SystemTime) -> Result<(), ValidatorError> {
    match Namespace::of(key) {
        Some((Namespace::Pk, name)) => pk::validate(name, value).map(drop),
        Some((Namespace::Ipns, name)) => ipns::validate(name, value, now).map(drop),
        None => Err(ValidatorError::UnknownNamespace),
    }
}

/// Which of two records under `key` is the better, both having passed [`validate`]: `Greater` when
/// `a` is, `Less` when `b` is. The order is total and the same on every node (`Equal` only for
/// identical bytes), so replicas converge on one record:
///
/// - `/ipns/`: higher sequence, then later validity, then the greater bytes (as Go's boxo does);
/// - `/pk/`: every valid value is the same key, so the greater bytes;
/// - any other key: the greater bytes.
pub fn select(key: &[u8], a: &[u8], b: &[u8]) -> Ordering {
    match Namespace::of(key) {
        Some((Namespace::Ipns, _)) => ipns::select(a, b),
        Some((Namespace::Pk, _)) | None => a.cmp(b),
    }
}

/// The peer id whose canonical binary multihash is `name`.
pub(crate) fn parse_name(name: &[u8]) -> Result<PeerId, ValidatorError> {
    let peer = PeerId::from_bytes(name).map_err(|_| ValidatorError::InvalidName)?;
    // Refuse other spellings of the same multihash (long varints): one name, one key.
    if peer.to_bytes() != name {
        return Err(ValidatorError::InvalidName);
    }
    Ok(peer)
}

/// Decodes a protobuf `PublicKey` of a supported type.
pub(crate) fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, ValidatorError> {
    if bytes.len() > MAX_PUBLIC_KEY_SIZE {
        return Err(ValidatorError::TooLarge {
            size: bytes.len(),
            max: MAX_PUBLIC_KEY_SIZE,
        });
    }
    let key_type = public_key_type(bytes)?;
    if !SUPPORTED_KEY_TYPES.contains(&key_type) {
        return Err(ValidatorError::UnsupportedKeyType(key_type));
    }
    PublicKey::try_decode_protobuf(bytes).map_err(|_| ValidatorError::InvalidPublicKey)
}

/// The `Type` field (1) of a protobuf `PublicKey`, the last one if repeated as protobuf reads it.
fn public_key_type(bytes: &[u8]) -> Result<u64, ValidatorError> {
    let mut fields = proto::Fields::new(bytes);
    let mut key_type = None;
    while let Some((number, value)) = fields
        .next_field()
        .map_err(|_| ValidatorError::InvalidPublicKey)?
    {
        if number == 1 {
            match value {
                proto::Value::Varint(v) => key_type = Some(v),
                _ => return Err(ValidatorError::InvalidPublicKey),
            }
        }
    }
    key_type.ok_or(ValidatorError::InvalidPublicKey)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::identity::Keypair;

    use super::testutil::{Fields, rsa_keypair, signed_v2};
    use super::*;

    #[test]
    fn namespaces_are_told_apart_by_their_raw_prefix() {
        assert_eq!(
            Namespace::of(b"/pk/abc"),
            Some((Namespace::Pk, &b"abc"[..]))
        );
        assert_eq!(
            Namespace::of(b"/ipns/x"),
            Some((Namespace::Ipns, &b"x"[..]))
        );
        assert_eq!(Namespace::of(b"/ipns/"), Some((Namespace::Ipns, &b""[..])));
        for other in [
            &b"/pk"[..],
            b"/ipns",
            b"pk/x",
            b"/PK/x",
            b"/ipfs/x",
            b"",
            b"/",
        ] {
            assert_eq!(Namespace::of(other), None, "{other:?}");
        }
    }

    #[test]
    fn validate_dispatches_on_the_namespace() {
        let now = SystemTime::now();
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let value = key.public().encode_protobuf();

        assert_eq!(validate(&pk::routing_key(&peer), &value, now), Ok(()));
        // The same value under the other namespace is not an IPNS record.
        assert!(matches!(
            validate(&ipns::routing_key(&peer), &value, now),
            Err(ValidatorError::MalformedRecord(_) | ValidatorError::MissingSignatureV2)
        ));

        let record = signed_v2(&key, &Fields::new(now + Duration::from_secs(60))).encode();
        assert_eq!(validate(&ipns::routing_key(&peer), &record, now), Ok(()));
        assert_eq!(
            validate(&pk::routing_key(&peer), &record, now),
            Err(ValidatorError::InvalidPublicKey)
        );

        let mut other = b"/other/".to_vec();
        other.extend_from_slice(&peer.to_bytes());
        assert_eq!(
            validate(&other, &value, now),
            Err(ValidatorError::UnknownNamespace)
        );
        assert_eq!(
            validate(b"", &value, now),
            Err(ValidatorError::UnknownNamespace)
        );
    }

    #[test]
    fn select_dispatches_and_is_total() {
        let now = SystemTime::now();
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let ipns_key = ipns::routing_key(&peer);
        let mut fields = Fields::new(now + Duration::from_secs(60));
        fields.sequence = 1;
        let older = signed_v2(&key, &fields).encode();
        fields.sequence = 2;
        let newer = signed_v2(&key, &fields).encode();
        assert_eq!(select(&ipns_key, &newer, &older), Ordering::Greater);
        assert_eq!(select(&ipns_key, &older, &newer), Ordering::Less);

        let pk_key = pk::routing_key(&peer);
        assert_eq!(select(&pk_key, b"b", b"a"), Ordering::Greater);
        assert_eq!(select(&pk_key, b"a", b"a"), Ordering::Equal);
        assert_eq!(select(b"free key", b"a", b"b"), Ordering::Less);
    }

    #[test]
    fn public_keys_of_unsupported_or_unknown_types_are_named() {
        // Every libp2p key type decodes; a point that is not on its curve does not.
        for key in [
            Keypair::generate_secp256k1(),
            Keypair::generate_ecdsa(),
            Keypair::generate_ed25519(),
        ] {
            let bytes = key.public().encode_protobuf();
            assert_eq!(decode_public_key(&bytes), Ok(key.public()));
        }
        let mut secp = vec![0x08, 0x02, 0x12, 33, 0x02];
        secp.extend_from_slice(&[0xff; 32]);
        assert_eq!(
            decode_public_key(&secp),
            Err(ValidatorError::InvalidPublicKey)
        );
        let ecdsa = [0x08, 0x03, 0x12, 0x01, 0x00];
        assert_eq!(
            decode_public_key(&ecdsa),
            Err(ValidatorError::InvalidPublicKey)
        );
        assert_eq!(
            decode_public_key(&[0x08, 0x09, 0x12, 0x00]),
            Err(ValidatorError::UnsupportedKeyType(9))
        );
        for garbage in [
            &b""[..],
            b"\x12\x20aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", // no Type
            b"\x08\x01\x12\x05short",                    // Ed25519 of 5 bytes
            b"\x08\x00\x12\x05short",                    // RSA that is no DER
            b"\x0a\x01\x01",                             // Type as bytes
            b"\x08",                                     // truncated
        ] {
            assert_eq!(
                decode_public_key(garbage),
                Err(ValidatorError::InvalidPublicKey),
                "{garbage:?}"
            );
        }
        let rsa = rsa_keypair(0).public().encode_protobuf();
        assert!(decode_public_key(&rsa).is_ok());
        let huge = vec![0u8; MAX_PUBLIC_KEY_SIZE + 1];
        assert_eq!(
            decode_public_key(&huge),
            Err(ValidatorError::TooLarge {
                size: MAX_PUBLIC_KEY_SIZE + 1,
                max: MAX_PUBLIC_KEY_SIZE
            })
        );
    }

    #[test]
    fn names_must_be_canonical_peer_id_multihashes() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(parse_name(&peer.to_bytes()), Ok(peer));
        let rsa_peer = rsa_keypair(0).public().to_peer_id();
        assert_eq!(parse_name(&rsa_peer.to_bytes()), Ok(rsa_peer));

        let mut trailing = peer.to_bytes();
        trailing.push(0);
        let mut truncated = peer.to_bytes();
        truncated.pop();
        // sha2-256 with its length spelled as a two-byte varint (0xa0 0x00 = 32).
        let mut long_length = vec![0x12, 0xa0, 0x00];
        long_length.extend_from_slice(&rsa_peer.to_bytes()[2..]);
        // A multihash of another function (sha2-512) is no peer id.
        let mut sha512 = vec![0x13, 0x40];
        sha512.extend_from_slice(&[1; 64]);
        for bad in [
            Vec::new(),
            b"garbage".to_vec(),
            trailing,
            truncated,
            long_length,
            sha512,
        ] {
            assert_eq!(
                parse_name(&bad),
                Err(ValidatorError::InvalidName),
                "{bad:02x?}"
            );
        }
    }
}
