//! IPNS names over the DHT: publishing a record signed by this node's key (or another), with its
//! sequence taken past the best one the network holds, and resolving a name to the best valid
//! record its holders serve (holders of older versions are corrected on the way, see
//! [`crate::core::queries`]). The record format and its checks are in
//! [`dht_behaviours::validators::ipns`].

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use dht_behaviours::validators::ipns;
use libp2p::PeerId;
use libp2p::identity::Keypair;

use crate::error::{Error, Result};
use crate::handle::Dht;
use crate::key::Key;
use crate::status::Stored;

/// How long a published record stays valid unless given otherwise (kubo's default).
pub const DEFAULT_LIFETIME: Duration = ipns::DEFAULT_LIFETIME;
/// How long resolvers may cache a published record unless given otherwise.
pub const DEFAULT_TTL: Duration = ipns::DEFAULT_TTL;

/// An IPNS name: the peer id of the key that signs its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name(pub PeerId);

impl Name {
    /// The DHT key its records live under: `/ipns/` and the name's multihash.
    pub fn key(&self) -> Key {
        Key::from_raw(ipns::routing_key(&self.0))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A name that is no peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not an IPNS name: expected a peer id (12D3KooW..., Qm...) or a libp2p-key CID (k51...), optionally after /ipns/"
)]
pub struct NameError(pub String);

impl FromStr for Name {
    type Err = NameError;

    /// A peer id in base58 (`12D3KooW...`, `Qm...`) or as a CIDv1 (`k51...`, `bafz...`), with or
    /// without a leading `/ipns/`.
    fn from_str(s: &str) -> std::result::Result<Self, NameError> {
        let bare = s.strip_prefix("/ipns/").unwrap_or(s);
        crate::cid::peer_id_of(bare)
            .map(Self)
            .ok_or_else(|| NameError(s.to_owned()))
    }
}

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The key to sign with (its peer id is the name); `None`: this node's own key.
    pub key: Option<Keypair>,
    /// How long the record stays valid.
    pub lifetime: Duration,
    /// How long resolvers may cache it.
    pub ttl: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            key: None,
            lifetime: DEFAULT_LIFETIME,
            ttl: DEFAULT_TTL,
        }
    }
}

/// A published record.
#[derive(Debug, Clone)]
pub struct Published {
    /// The name.
    pub name: Name,
    /// The record's sequence number.
    pub sequence: u64,
    /// When it stops being valid.
    pub eol: SystemTime,
    /// Where it was stored.
    pub stored: Stored,
}

/// A resolved name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The name.
    pub name: Name,
    /// The path it points at (`/ipfs/...`).
    pub value: Vec<u8>,
    /// The record's sequence number.
    pub sequence: u64,
    /// When the record stops being valid.
    pub eol: SystemTime,
    /// How long it may be cached.
    pub ttl: Duration,
}

fn ipns_error(e: impl fmt::Display) -> Error {
    Error::Ipns(e.to_string())
}

impl Dht {
    /// Publishes `value` (a path such as `/ipfs/bafy...`) under the name of `options.key` (this
    /// node's key by default). The sequence is one past the best record the network holds for the
    /// name, so the new record replaces it everywhere; a name the network cannot be asked about
    /// (a lookup that timed out) is not published, since a guessed sequence could lose.
    pub async fn publish_ipns(&self, value: &[u8], options: PublishOptions) -> Result<Published> {
        let key = options.key.unwrap_or_else(|| self.identity().clone());
        let name = Name(key.public().to_peer_id());
        let held = match self.resolve_ipns(&name).await {
            Ok(r) => Some(r.sequence),
            // Nobody holds the name, or nobody can be asked (a lone node, which holds none).
            Err(Error::NotFound(_) | Error::NoPeers) => None,
            Err(e) => return Err(e),
        };
        let sequence = ipns::next_sequence(held).map_err(ipns_error)?;
        let eol = SystemTime::now()
            .checked_add(options.lifetime)
            .ok_or_else(|| ipns_error("the lifetime is too long"))?;
        let record =
            ipns::build_record(&key, value, sequence, eol, options.ttl).map_err(ipns_error)?;
        let stored = self.store_at(&name.key(), record).await?;
        Ok(Published {
            name,
            sequence,
            eol,
            stored,
        })
    }

    /// Resolves `name` to the best valid record its holders serve (this node's copy included).
    pub async fn resolve_ipns(&self, name: &Name) -> Result<Resolved> {
        let key = name.key();
        let bytes = self.fetch(&key).await?;
        let name_bytes = name.0.to_bytes();
        let record = ipns::validate(&name_bytes, &bytes, SystemTime::now()).map_err(|e| {
            Error::InvalidRecord {
                key: key.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(Resolved {
            name: *name,
            value: record.value,
            sequence: record.sequence,
            eol: record.eol,
            ttl: record.ttl,
        })
    }
}
