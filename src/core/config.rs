//! What a core is told of its node ([`CoreConfig`]) and of the wall clock ([`Clock`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use dht_behaviours::store::StoreLimits;
use dht_behaviours::{ProtocolConfig, Timing};
use libp2p::PeerId;

/// Peers per k-bucket at least, whatever the replication factor (libp2p's kad uses 20 too).
pub const BUCKET_SIZE: usize = 20;

/// What a core needs to know of its node.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Replication factor k.
    pub k: usize,
    /// Lookup parallelism alpha.
    pub alpha: usize,
    /// Intervals and deadlines.
    pub timing: Timing,
    /// Whether this node serves (a client keeps no records and answers nothing).
    pub serving: bool,
    /// Bounds of the record store.
    pub store: StoreLimits,
    /// Seed of the core's randomness (refresh keys).
    pub seed: u64,
    /// A mirror node keeps every record its feeders hand it (no per-peer quota for them).
    pub mirror: bool,
    /// The peers a mirror takes mirror pushes from, as its operator named them
    /// (`--mirror-feeder`): anyone else's push is refused unacknowledged.
    pub mirror_feeders: HashSet<PeerId>,
    /// The mirrors this node feeds, as the operator chose them (`--mirror-peer`): a peer that
    /// only says it is a mirror gets nothing.
    pub mirror_peers: HashSet<PeerId>,
    /// Amino mode: only `/pk/` and `/ipns/` records are kept ([`ProtocolConfig::amino`]).
    pub amino: bool,
}

impl CoreConfig {
    /// Peers per k-bucket: [`BUCKET_SIZE`], or k when replication asks for more. A small
    /// replication factor must not shrink the table (lookups need its breadth).
    pub fn bucket_size(&self) -> usize {
        BUCKET_SIZE.max(self.k)
    }

    /// The core of a node built from `protocol` with a store bounded by `store`.
    pub fn new(protocol: &ProtocolConfig, store: StoreLimits, seed: u64) -> Self {
        Self {
            k: protocol.replication_factor.get(),
            alpha: protocol.parallelism.get(),
            timing: protocol.timing.clone(),
            serving: !protocol.client_mode,
            store,
            seed,
            mirror: protocol.mirror,
            mirror_feeders: HashSet::new(),
            mirror_peers: HashSet::new(),
            amino: protocol.amino,
        }
    }
}

/// The moment a core starts on both clocks: the core's only view of the wall clock, which it
/// needs for broadcast message times (it runs on the monotonic clock it is given otherwise; the
/// drift between the two over a node's life is far below [`MAX_CLOCK_SKEW`]).
///
/// [`MAX_CLOCK_SKEW`]: dht_behaviours::config::MAX_CLOCK_SKEW
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The monotonic time the core starts at.
    pub now: Instant,
    /// The wall clock then, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Clock {
    /// The wall clock at `now`.
    pub fn unix_ms_at(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.now);
        self.unix_ms
            .saturating_add(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// A clock started at `now`, `unix` after the epoch.
    pub fn new(now: Instant, unix: Duration) -> Self {
        Self {
            now,
            unix_ms: u64::try_from(unix.as_millis()).unwrap_or(u64::MAX),
        }
    }
}
