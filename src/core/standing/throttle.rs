//! Peers that refuse our lookups under their rate limits. A refusal says the peer is alive and
//! busy, not gone: it stays in the routing table and is backed off from for a while, doubling
//! with each refusal in a row: new lookups leave it out of their first candidates, and a
//! search for a value or providers asks it again after the shortest back-off (until its
//! deadline), its place in the lookup kept meanwhile while the next peer is asked (so a busy network slows a reader down
//! instead of answering "not found"); a lookup for peers goes on without it. A timeout or a
//! broken stream still counts toward eviction ([`super::super::routing::MAX_FAILURES`]).
//!
//! The other half of "throttled is not failed": a node whose table has emptied while it still
//! has connections asks its driver for the kad servers it is connected to
//! ([`super::super::Action::Relearn`]) and dials its bootstrap and remembered peers at once, instead of
//! staying cut off until a back-off round.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a peer is left out of new lookups after its first refusal in a row.
pub const THROTTLE_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest back-off; each refusal in a row doubles it up to this.
pub const THROTTLE_BACKOFF_MAX: Duration = Duration::from_secs(16);
/// Peers backed off from at once (the rest are forgotten, soonest due first): as many as a
/// routing table holds in its busiest buckets is plenty.
pub const MAX_THROTTLED_PEERS: usize = 1024;

/// The peers backed off from, each until when and for how long last time.
#[derive(Debug, Default)]
pub struct Throttled {
    peers: HashMap<PeerId, (Instant, Duration)>,
}

impl Throttled {
    /// `peer` refused a request at `now`: back off from it, twice as long as last time if its
    /// previous back-off had not yet been forgotten.
    pub fn refused(&mut self, peer: PeerId, now: Instant) -> Instant {
        let backoff = match self.peers.get(&peer) {
            Some((_, last)) => (*last * 2).min(THROTTLE_BACKOFF_MAX),
            None => THROTTLE_BACKOFF_MIN,
        };
        if self.peers.len() >= MAX_THROTTLED_PEERS && !self.peers.contains_key(&peer) {
            let soonest = self.peers.iter().min_by_key(|(_, (until, _))| *until);
            if let Some(p) = soonest.map(|(p, _)| *p) {
                self.peers.remove(&p);
            }
        }
        self.peers.insert(peer, (now + backoff, backoff));
        now + backoff
    }

    /// `peer` answered: it is not throttling us (any more).
    pub fn answered(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Whether `peer` is backed off from at `now`.
    pub fn is_backed_off(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers.get(peer).is_some_and(|(until, _)| *until > now)
    }

    /// Forgets back-offs that ended long ago (twice their length), so a peer's next refusal
    /// starts from the shortest again.
    pub fn sweep(&mut self, now: Instant) {
        self.peers.retain(|_, (until, len)| *until + *len > now);
    }

    /// Peers backed off from or remembered.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_offs_double_up_to_the_cap_and_an_answer_ends_them() {
        let mut t = Throttled::default();
        let peer = PeerId::random();
        let now = Instant::now();
        t.refused(peer, now);
        assert!(t.is_backed_off(&peer, now));
        assert!(!t.is_backed_off(&peer, now + THROTTLE_BACKOFF_MIN));
        let mut at = now;
        let mut last = THROTTLE_BACKOFF_MIN;
        for _ in 0..10 {
            at += Duration::from_millis(1);
            t.refused(peer, at);
            last = (last * 2).min(THROTTLE_BACKOFF_MAX);
            assert!(t.is_backed_off(&peer, at + last - Duration::from_millis(1)));
            assert!(!t.is_backed_off(&peer, at + last));
        }
        assert_eq!(last, THROTTLE_BACKOFF_MAX);
        t.answered(&peer);
        assert!(!t.is_backed_off(&peer, at));
        // Bounded: the soonest due is forgotten first.
        for i in 0..(MAX_THROTTLED_PEERS + 10) {
            t.refused(PeerId::random(), now + Duration::from_millis(i as u64));
        }
        assert_eq!(t.len(), MAX_THROTTLED_PEERS);
        t.sweep(now + 10 * THROTTLE_BACKOFF_MAX);
        assert!(t.is_empty());
    }
}
