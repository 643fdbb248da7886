//! Peers' standing, as the core keeps it: offences and blocks ([`Reputation`]), silent peers
//! held out ([`Silence`]), peers that refused our lookups backed off from ([`Throttled`]).

pub mod reputation;
pub mod silence;
pub mod throttle;

use std::time::Instant;

use dht_behaviours::kad_wire::WirePeer;
use dht_behaviours::validation::RecordError;
use libp2p::PeerId;

use reputation::{Offence, Reputation};
use silence::Silence;
use throttle::Throttled;

/// The offence a false record amounts to: a forged content key is provable, anything else is a
/// record a conforming peer would not have sent.
pub fn offence_for(error: &RecordError) -> Offence {
    match error {
        RecordError::ContentMismatch => Offence::ForgedContent,
        _ => Offence::InvalidRecord,
    }
}

/// The books of peers' standing.
#[derive(Debug, Default)]
pub(super) struct Standing {
    pub(super) reputation: Reputation,
    pub(super) silence: Silence,
    /// Peers that refused our lookups, backed off from.
    pub(super) throttled: Throttled,
    /// Peers of answers left out for being blocked or silent, so far.
    pub(super) left_out: usize,
}

impl Standing {
    /// Whether `peer` may be asked, told about, or enter the table at `now`.
    pub(super) fn admissible(&self, peer: &PeerId, now: Instant) -> bool {
        !self.reputation.is_blocked(peer) && !self.silence.is_silent(peer, now)
    }

    /// Leaves out of an answer's peers those that may not join a lookup of `local`'s (itself,
    /// the blocked, the silent), counting them.
    pub(super) fn admit_closer(
        &mut self,
        local: &PeerId,
        closer: &mut Vec<WirePeer>,
        now: Instant,
    ) {
        let before = closer.len();
        closer.retain(|p| p.peer != *local && self.admissible(&p.peer, now));
        self.left_out += before - closer.len();
    }
}
