//! What the handling of one input shares: the time it happens at, the actions it produces for
//! the driver, and the query events still to be turned into actions.

use std::time::Instant;

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
}

impl Cx {
    /// The context of an input handled at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            now,
            out: Vec::new(),
            events: Vec::new(),
        }
    }
}
