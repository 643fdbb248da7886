//! Errors of the library API.

use std::time::Duration;

use dht_behaviours::config::MAX_VALUE_SIZE;
use dht_behaviours::validation::RecordError;
use libp2p::{Multiaddr, PeerId};

use crate::key::{Key, KeyError};

/// Everything a [`crate::Dht`] operation can end with besides success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No node holds a valid value for the key.
    #[error("not found: {0}")]
    NotFound(Key),
    /// The operation ran past its deadline.
    #[error("{operation} timed out after {}", seconds(*.after))]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The deadline it had.
        after: Duration,
    },
    /// The value is larger than the maximum value size.
    #[error("value of {size} bytes is too large: at most {max} bytes are allowed")]
    ValueTooLarge {
        /// Its size.
        size: usize,
        /// The limit ([`dht_behaviours::config::MAX_VALUE_SIZE`]).
        max: usize,
    },
    /// The payload of a custom command or broadcast is too large.
    #[error("payload of {size} bytes is too large: at most {max} bytes are allowed")]
    PayloadTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The key cannot be used.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
    /// A 32-byte key whose value does not hash to it.
    #[error("the value does not hash to the content key {0}")]
    ContentMismatch(Key),
    /// A record under a validated namespace (`/pk/`, `/ipns/`) that fails its validator.
    #[error("invalid record for {key}: {reason}")]
    InvalidRecord {
        /// The key.
        key: Key,
        /// What its validator found wrong.
        reason: String,
    },
    /// No node knows an address of the peer.
    #[error("peer {0} not found: no node knows an address of it")]
    PeerNotFound(PeerId),
    /// This node provides as many keys as it may.
    #[error("{0}")]
    ProvideRefused(String),
    /// An IPNS record could not be built or read.
    #[error("ipns: {0}")]
    Ipns(String),
    /// This node refused its own record (a key held for another peer, a record outside Amino's
    /// namespaces, an expired record).
    #[error("refused: {0}")]
    Refused(String),
    /// The node knows no peer to ask.
    #[error("no peers: the node is not connected to any other node")]
    NoPeers,
    /// The local store refused the record (full).
    #[error("the local store is full: {0}")]
    StoreFull(String),
    /// This node refused its own broadcast: over its share of the other nodes' seen caches (as
    /// they would refuse it), or its key cannot sign.
    #[error("{0}")]
    BroadcastRefused(String),
    /// A store that no node kept: this node holds no copy (a client) and no peer asked
    /// acknowledged the record (each refused it, its store full or this peer over its share
    /// there, or did not answer).
    #[error("no node kept the value for {0}: no peer acknowledged it (refused or unanswered)")]
    NotKept(Key),
    /// The peer's command handler refused the command.
    #[error("peer {peer} refused the command: {reason}")]
    CommandRefused {
        /// Who refused.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The command could not be delivered or answered.
    #[error("custom command to {peer} failed: {reason}")]
    CommandFailed {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        reason: String,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A peer could not be dialed.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The options are inconsistent.
    #[error(transparent)]
    Config(#[from] dht_behaviours::ConfigError),
    /// The key file could not be read or written.
    #[error("identity key file {path}: {reason}")]
    Identity {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The data directory or its database could not be opened, read or written.
    #[error("data directory {path}: {reason}")]
    Persistence {
        /// The directory or file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The transport could not be built.
    #[error("transport: {0}")]
    Transport(String),
    /// Too many operations are waiting for the network; try again later.
    #[error("the node is busy: {pending} operations are waiting for the network; try again")]
    Busy {
        /// Operations pending.
        pending: usize,
    },
    /// The node has stopped.
    #[error("the node has stopped")]
    Shutdown,
}

impl Error {
    /// The error for a record of `key` that failed validation.
    pub(crate) fn from_record(error: RecordError, key: &Key) -> Self {
        match error {
            RecordError::ContentMismatch | RecordError::KeyMismatch => {
                Error::ContentMismatch(key.clone())
            }
            RecordError::ValueTooLarge(size) => Error::ValueTooLarge {
                size,
                max: MAX_VALUE_SIZE,
            },
            RecordError::EmptyKey => Error::InvalidKey(KeyError::Empty),
            RecordError::KeyTooLong(n) => Error::InvalidKey(KeyError::TooLong(n)),
            RecordError::Namespaced(e) => Error::InvalidRecord {
                key: key.clone(),
                reason: e.to_string(),
            },
        }
    }
}

/// A deadline in words a person reads: whole seconds when it is whole, else one decimal
/// ("10 s", "3.3 s"), milliseconds below a second.
fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Result of a [`crate::Dht`] operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_as_seconds() {
        let e = |ms| Error::Timeout {
            operation: "fetch",
            after: Duration::from_millis(ms),
        };
        assert_eq!(e(10_000).to_string(), "fetch timed out after 10 s");
        assert_eq!(e(3_333).to_string(), "fetch timed out after 3.3 s");
        assert_eq!(e(250).to_string(), "fetch timed out after 250 ms");
    }
}
