//! Peers that stopped answering. A peer whose ping goes unanswered leaves the routing table; but
//! other nodes still name it in their lookup answers, and kad would take it back as soon as a
//! stream to it opens, although it answers nothing. So it stays out until it is heard from again
//! (a ping answered, identify received) or its quarantine runs out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a silent peer is kept out of the routing table unless it answers first.
pub const SILENT_QUARANTINE: Duration = Duration::from_secs(600);
/// Silent peers remembered at most; when full, the oldest quarantine is dropped.
pub const MAX_SILENT_PEERS: usize = 4096;

/// The quarantine of silent peers.
#[derive(Debug, Default)]
pub struct Silence {
    until: HashMap<PeerId, Instant>,
}

impl Silence {
    /// `peer` failed to answer at `now`.
    pub fn silenced(&mut self, peer: PeerId, now: Instant) {
        if self.until.len() >= MAX_SILENT_PEERS && !self.until.contains_key(&peer) {
            self.sweep(now);
            if self.until.len() >= MAX_SILENT_PEERS
                && let Some(oldest) = self.until.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p)
            {
                self.until.remove(&oldest);
            }
        }
        self.until.insert(peer, now + SILENT_QUARANTINE);
    }

    /// `peer` answered: it is no longer held out. Whether it was.
    pub fn heard_from(&mut self, peer: &PeerId) -> bool {
        self.until.remove(peer).is_some()
    }

    /// Whether `peer` is held out at `now`.
    pub fn is_silent(&self, peer: &PeerId, now: Instant) -> bool {
        self.until.get(peer).is_some_and(|t| *t > now)
    }

    /// Forgets quarantines that ran out.
    pub fn sweep(&mut self, now: Instant) {
        self.until.retain(|_, t| *t > now);
    }

    /// Peers held out now (including run-out ones not yet swept).
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Whether no peer is held out.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_ends_when_heard_from_or_run_out() {
        let mut s = Silence::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        s.silenced(a, now);
        s.silenced(b, now);
        assert!(s.is_silent(&a, now));
        assert!(s.heard_from(&a));
        assert!(!s.is_silent(&a, now));
        assert!(!s.is_silent(&b, now + SILENT_QUARANTINE));
        s.sweep(now + SILENT_QUARANTINE);
        assert!(s.is_empty());
    }

    #[test]
    fn bounded() {
        let mut s = Silence::default();
        let now = Instant::now();
        let first = PeerId::random();
        s.silenced(first, now);
        for i in 0..MAX_SILENT_PEERS {
            s.silenced(PeerId::random(), now + Duration::from_millis(i as u64 + 1));
        }
        assert_eq!(s.len(), MAX_SILENT_PEERS);
        assert!(!s.is_silent(&first, now), "the oldest went first");
    }
}
