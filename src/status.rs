//! Snapshots of a node's state, as the handle returns them.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

use crate::key::Key;

/// Bytes of a value shown in a [`LocalRecord`] preview.
pub const PREVIEW_LEN: usize = 48;

/// The outcome of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The key the value is filed under.
    pub key: Key,
    /// Nodes that hold the value: the peers that acknowledged it, plus this node's own copy.
    pub nodes: usize,
    /// Peers that acknowledged storing it.
    pub remote: usize,
}

/// The outcome of a provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provided {
    /// The key announced.
    pub key: Key,
    /// Peers that list this node as a provider of the key when asked (each was sent
    /// ADD_PROVIDER and then GET_PROVIDERS); this node's own store aside.
    pub remote: usize,
}

/// A provider of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Its peer id.
    pub peer: PeerId,
    /// The addresses it was announced with (possibly none).
    pub addrs: Vec<Multiaddr>,
}

/// Where a peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPeer {
    /// The peer.
    pub peer: PeerId,
    /// Its addresses.
    pub addrs: Vec<Multiaddr>,
    /// Whether it answered at one of them (else they are what other peers said of it).
    pub reached: bool,
}

/// The outcome of a closest-peers lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The closest peers found (at most k, this node excluded), closest first.
    pub peers: Vec<PeerId>,
    /// Requests the iterative lookup sent.
    pub requests: u32,
    /// How long it took.
    pub duration: Duration,
}

/// Operation counters since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Stores this node's users asked for.
    pub stores_issued: u64,
    /// Fetches this node's users asked for.
    pub fetches_issued: u64,
    /// Records other nodes stored here.
    pub stores_served: u64,
    /// Record lookups other nodes made here.
    pub fetches_served: u64,
    /// Custom commands sent.
    pub commands_sent: u64,
    /// Custom commands answered.
    pub commands_served: u64,
    /// Broadcasts originated here.
    pub broadcasts_sent: u64,
    /// Broadcasts delivered here.
    pub broadcasts_received: u64,
    /// Fetched values cached on the lookup path.
    pub values_cached: u64,
    /// Records handed to newcomers closer to their keys.
    pub records_handed_off: u64,
    /// Peers removed from the routing table for not answering pings.
    pub peers_evicted: u64,
    /// Peers named in lookup answers and left out: beyond the k closest taken from one answer,
    /// beyond what one answer may carry, or malformed.
    pub answer_peers_ignored: u64,
    /// Peers blocked for misbehaving.
    pub peers_blocked: u64,
    /// Records refused (invalid or over a limit).
    pub records_refused: u64,
    /// Peers' kad requests refused for their peer being over its rate.
    pub requests_throttled: u64,
    /// Broadcast messages refused (forged, stale, over a rate or share, no room).
    pub broadcasts_refused: u64,
    /// Peers that announced the mirror protocol without being one of this node's mirrors.
    pub mirrors_ignored: u64,
    /// Mirror pushes refused: from a peer this mirror's operator did not name a feeder.
    pub mirror_pushes_refused: u64,
    /// Signatures of signed records (`/pk/`, `/ipns/`) checked: a replay of a held record costs none.
    pub signatures_checked: u64,
    /// Records sent to mirror nodes.
    pub records_mirrored: u64,
    /// Record changes written to the data directory's database.
    pub records_written: u64,
    /// Database writes that failed (retried at the next flush).
    pub write_errors: u64,
    /// Operations that ended in an error.
    pub errors: u64,
}

/// A node's state at one moment.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// Its peer id.
    pub peer_id: PeerId,
    /// Its listen addresses, each ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<Multiaddr>,
    /// Peers with at least one open connection.
    pub connected_peers: usize,
    /// Peers in the routing table.
    pub routing_table_size: usize,
    /// Records in the local store.
    pub stored_keys: usize,
    /// Bytes of keys and values in the local store.
    pub stored_bytes: usize,
    /// Operations waiting for the network.
    pub pending_operations: usize,
    /// Time since start.
    pub uptime: Duration,
    /// Operation counters.
    pub counters: Counters,
    /// Bytes received over every connection since start.
    pub bytes_in: u64,
    /// Bytes sent over every connection since start.
    pub bytes_out: u64,
    /// The database holding its records across restarts (`None`: in memory only).
    pub database: Option<std::path::PathBuf>,
    /// Whether it is a mirror node.
    pub mirror: bool,
}

/// One routing-table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingEntry {
    /// Bucket index: log2 of the XOR distance to this node.
    pub bucket: u32,
    /// The peer.
    pub peer: PeerId,
    /// Its known addresses.
    pub addrs: Vec<Multiaddr>,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// The peer.
    pub peer: PeerId,
    /// Remote addresses of its open connections.
    pub addrs: Vec<Multiaddr>,
}

/// One record of the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRecord {
    /// Its key.
    pub key: Key,
    /// Value size in bytes.
    pub size: usize,
    /// The first [`PREVIEW_LEN`] bytes of the value.
    pub preview: Vec<u8>,
    /// Whether this node published it.
    pub published_here: bool,
    /// Time left before it expires (`None`: kept while the node runs).
    pub expires_in: Option<Duration>,
}

/// A peer on the block list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedPeer {
    /// The peer.
    pub peer: PeerId,
    /// Time left for an automatic block; `None` for a block set by the operator.
    pub remaining: Option<Duration>,
}
