//! What the core did so far, counted.

/// Counts of what the core did, for status and the simulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Inbound requests answered.
    pub served: u64,
    /// Inbound PUT_VALUEs kept.
    pub puts_kept: u64,
    /// Inbound PUT_VALUEs refused.
    pub puts_refused: u64,
    /// Requests sent.
    pub sent: u64,
    /// Records handed to closer newcomers.
    pub handed_off: u64,
    /// Values cached after a fetch under demand.
    pub cached: u64,
    /// Holders sent the best version of a name after they served an older one.
    pub corrected: u64,
    /// Re-stores started by replication or republish.
    pub restores: u64,
    /// False records received.
    pub lies: u64,
    /// Stores' targets that acknowledged a PUT and then did not serve the record.
    pub unkept: u64,
    /// Peers that left the routing table after failing requests, or found unreachable.
    pub evicted: u64,
    /// Peers blocked for misbehaving.
    pub blocked: u64,
    /// Broadcasts delivered here (first copies).
    pub broadcasts_delivered: u64,
    /// Broadcast messages refused (forged, stale, over a rate, no room).
    pub broadcasts_refused: u64,
    /// Peers that announced the mirror protocol but are not among the operator's mirrors.
    pub mirrors_ignored: u64,
    /// Mirror pushes refused: from a peer this mirror's operator did not name a feeder, or to a
    /// node that is no mirror.
    pub mirror_pushes_refused: u64,
    /// Inbound requests refused for their peer being over its rate.
    pub throttled: u64,
}
