//! What the handling of one input shares: the time it happens at, the actions it produces for
//! the driver, the query events still to be turned into actions, and the records it took in.

use std::time::Instant;

use libp2p::PeerId;
use libp2p::kad::RecordKey;

use super::events::Action;
use super::queries::QueryEvent;

/// The context of one input's handling, passed down instead of its three parts.
pub(crate) struct Cx {
    /// The time of the input: the core reads no clock.
    pub now: Instant,
    /// Actions for the driver, in the order they arose.
    pub out: Vec<Action>,
    /// What the queries asked for (requests, ends): turned into actions, and followed up, before
    /// the input's handling ends ([`super::Core::handle`]).
    pub events: Vec<QueryEvent>,
    /// Records this node took in (and from whom: `None` for its own), to hand its mirrors once
    /// the input is handled.
    pub kept: Vec<(RecordKey, Option<PeerId>)>,
}

impl Cx {
    /// The context of an input handled at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            now,
            out: Vec::new(),
            events: Vec::new(),
            kept: Vec::new(),
        }
    }
}
