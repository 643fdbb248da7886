//! Record keys.
//!
//! A key of 32 bytes is a *content key*: the SHA-256 of its value, shown as 64 lowercase hex
//! characters (`printf %s VALUE | sha256sum` gives the same). Any other key (1 to
//! [`MAX_KEY_SIZE`] bytes, e.g. `/v/name` as other libp2p tools use) is a *free key*. A CID
//! typed as a key names the multihash it carries ([`crate::cid`]).

use std::fmt;
use std::str::FromStr;

use dht_behaviours::config::MAX_KEY_SIZE;
use dht_behaviours::validation::{CONTENT_KEY_LEN, content_key, validate_key};
use dht_behaviours::validators::Namespace;
use libp2p::kad::RecordKey;

/// Prefix that marks a free key written in hex (for keys that are not printable text).
pub const HEX_KEY_PREFIX: &str = "hex:";

/// A record key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Vec<u8>);

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 64 hexadecimal characters.
    #[error("bad hex key {0:?}: expected 64 hexadecimal characters")]
    BadHex(String),
    /// Empty key.
    #[error("the key is empty")]
    Empty,
    /// Longer than [`MAX_KEY_SIZE`].
    #[error("the key is {0} bytes; at most {MAX_KEY_SIZE} are allowed")]
    TooLong(usize),
}

impl Key {
    /// The content key of `value`: its SHA-256.
    pub fn for_value(value: &[u8]) -> Self {
        Self(content_key(value).to_vec())
    }

    /// A key made of exactly these bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let bytes = bytes.into();
        match validate_key(&bytes) {
            Ok(()) => Ok(Self(bytes)),
            Err(_) if bytes.is_empty() => Err(KeyError::Empty),
            Err(_) => Err(KeyError::TooLong(bytes.len())),
        }
    }

    /// A key of bytes known to be a valid key (a namespace prefix and a peer id's multihash).
    pub(crate) fn from_raw(bytes: Vec<u8>) -> Self {
        debug_assert!(validate_key(&bytes).is_ok());
        Self(bytes)
    }

    /// A content key from exactly 64 hexadecimal characters (either case).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        if s.len() != 2 * CONTENT_KEY_LEN {
            return Err(KeyError::BadHex(s.to_owned()));
        }
        hex::decode(s)
            .map(Self)
            .map_err(|_| KeyError::BadHex(s.to_owned()))
    }

    /// The rule for keys typed by users: 64 hex characters name a content key (its 32 bytes);
    /// a CID (`Qm...`, `bafy...`, `bafk...`) names its multihash, as the IPFS DHT files content;
    /// `/ipns/PEER` and `/pk/PEER` name the namespace and the peer id's multihash bytes;
    /// `hex:` followed by hex names a free key by its bytes; any other text is a key made of
    /// exactly those bytes.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if s.len() == 2 * CONTENT_KEY_LEN && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Self::from_hex(s);
        }
        if let Some(multihash) = crate::cid::multihash_of(s) {
            return Self::from_bytes(multihash);
        }
        // `/ipns/NAME` and `/pk/NAME` with NAME a peer id: the namespace and its multihash
        // bytes, as the IPFS DHT keys them.
        for ns in Namespace::ALL {
            let prefix = std::str::from_utf8(ns.prefix()).unwrap_or_default();
            if let Some(name) = s.strip_prefix(prefix)
                && let Some(peer) = crate::cid::peer_id_of(name)
            {
                let mut bytes = ns.prefix().to_vec();
                bytes.extend_from_slice(&peer.to_bytes());
                return Self::from_bytes(bytes);
            }
        }
        if let Some(h) = s.strip_prefix(HEX_KEY_PREFIX) {
            let bytes = hex::decode(h).map_err(|_| KeyError::BadHex(s.to_owned()))?;
            return Self::from_bytes(bytes);
        }
        Self::from_bytes(s.as_bytes())
    }

    /// The key's bytes, as they travel on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether this is a content key, whose value must hash to it.
    pub fn is_content(&self) -> bool {
        self.0.len() == CONTENT_KEY_LEN
    }

    pub(crate) fn from_record_key(key: &RecordKey) -> Self {
        Self(key.to_vec())
    }
}

impl fmt::Display for Key {
    /// Content keys as 64 lowercase hex characters; printable free keys as their text; other free
    /// keys as `hex:` and their bytes in hex. [`Key::parse`] reads every form back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_content() {
            return f.write_str(&hex::encode(&self.0));
        }
        if let Some((ns, name)) = Namespace::of(&self.0)
            && let Ok(peer) = libp2p::PeerId::from_bytes(name)
        {
            return write!(f, "{}{peer}", String::from_utf8_lossy(ns.prefix()));
        }
        // A sha2-256 multihash reads as the CIDv0 that names it.
        if self.0.len() == 2 + CONTENT_KEY_LEN && self.0.starts_with(&[0x12, 0x20]) {
            return f.write_str(&bs58::encode(&self.0).into_string());
        }
        match std::str::from_utf8(&self.0) {
            Ok(text)
                if !text.chars().any(|c| c.is_control() || c.is_whitespace())
                    && !text.starts_with(HEX_KEY_PREFIX)
                    && Self::parse(text).as_ref() == Ok(self) =>
            {
                f.write_str(text)
            }
            _ => write!(f, "{HEX_KEY_PREFIX}{}", hex::encode(&self.0)),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl FromStr for Key {
    type Err = KeyError;

    /// Same as [`Key::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_keys_are_lowercase_hex() {
        let k = Key::for_value(b"hello");
        assert_eq!(
            k.to_string(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(k.is_content());
        assert_eq!(Key::from_hex(&k.to_string().to_uppercase()), Ok(k.clone()));
        assert_eq!(k.to_string().parse::<Key>(), Ok(k));
    }

    #[test]
    fn names_and_multihashes_read_and_print_in_their_ipfs_forms() {
        let peer: libp2p::PeerId = "12D3KooWCjWYkgdaVcXYuW2849trd4dUNTCyghNv7vmnWFFNKGsd"
            .parse()
            .expect("a peer id");
        let ipns = Key::parse(&format!("/ipns/{peer}")).expect("an ipns key");
        assert_eq!(&ipns.as_bytes()[..6], b"/ipns/");
        assert_eq!(&ipns.as_bytes()[6..], peer.to_bytes().as_slice());
        assert_eq!(ipns.to_string(), format!("/ipns/{peer}"));
        let pk = Key::parse(&format!("/pk/{peer}")).expect("a pk key");
        assert_eq!(&pk.as_bytes()[4..], peer.to_bytes().as_slice());
        assert_eq!(pk.to_string().parse::<Key>(), Ok(pk));
        // Not a peer id after the prefix: plain text, as before.
        let text = Key::parse("/ipns/example.com").expect("text");
        assert_eq!(text.as_bytes(), b"/ipns/example.com");
        // A sha2-256 multihash prints as its CIDv0, which reads back the same.
        let cid = "QmY7Yh4UquoXHLPFo2XbhXkhBvFoPwmQUSa92pxnxjQuPU";
        let mh = Key::parse(cid).expect("a CID");
        assert_eq!(mh.to_string(), cid);
    }

    #[test]
    fn bad_hex_is_an_error() {
        assert!(matches!(Key::from_hex("abc"), Err(KeyError::BadHex(_))));
        assert!(matches!(
            Key::from_hex(&"zz".repeat(32)),
            Err(KeyError::BadHex(_))
        ));
        assert!(matches!(Key::from_hex("é"), Err(KeyError::BadHex(_))));
    }

    #[test]
    fn text_is_a_free_key() {
        let k = Key::parse("/v/name").expect("key");
        assert_eq!(k.as_bytes(), b"/v/name");
        assert!(!k.is_content());
        assert_eq!(k.to_string(), "/v/name");
        // 63 hex characters are text, not a content key.
        assert_eq!(
            Key::parse(&"a".repeat(63)).expect("key").as_bytes().len(),
            63
        );
    }

    #[test]
    fn unprintable_keys_round_trip_through_hex() {
        let k = Key::from_bytes(vec![0u8, 1, 2]).expect("key");
        assert_eq!(k.to_string(), "hex:000102");
        assert_eq!(Key::parse(&k.to_string()), Ok(k));
        let spaced = Key::from_bytes(b"a b".to_vec()).expect("key");
        assert_eq!(Key::parse(&spaced.to_string()), Ok(spaced));
    }

    #[test]
    fn empty_and_long_keys_are_refused() {
        assert_eq!(Key::parse(""), Err(KeyError::Empty));
        assert_eq!(
            Key::from_bytes(vec![1; MAX_KEY_SIZE + 1]),
            Err(KeyError::TooLong(MAX_KEY_SIZE + 1))
        );
    }
}
