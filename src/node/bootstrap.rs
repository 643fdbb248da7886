//! Joining the network: dial the bootstrap addresses, and dial them again with exponential
//! back-off for as long as the node has no connection at all.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use std::collections::HashMap;

/// First wait before dialing the bootstrap nodes again.
pub const BOOTSTRAP_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two rounds of bootstrap dials.
pub const BOOTSTRAP_BACKOFF_MAX: Duration = Duration::from_secs(30);

pub(crate) struct Bootstrapper {
    addrs: Vec<Multiaddr>,
    backoff: Duration,
    next_round: Instant,
    /// Dials of the current round, to tell their failures from others.
    dials: HashMap<ConnectionId, Multiaddr>,
}

impl Bootstrapper {
    pub(crate) fn new(addrs: Vec<Multiaddr>, now: Instant) -> Self {
        Self {
            addrs,
            backoff: BOOTSTRAP_BACKOFF_MIN,
            next_round: now,
            dials: HashMap::new(),
        }
    }

    /// The addresses to dial now, if a round is due: one is due while the node has no connection
    /// and the back-off has passed. A connected node resets the back-off.
    pub(crate) fn due(&mut self, now: Instant, connected: bool) -> Option<Vec<Multiaddr>> {
        if connected || self.addrs.is_empty() {
            self.backoff = BOOTSTRAP_BACKOFF_MIN;
            self.next_round = now + self.backoff;
            return None;
        }
        if now < self.next_round {
            return None;
        }
        self.next_round = now + self.backoff;
        self.backoff = (self.backoff * 2).min(BOOTSTRAP_BACKOFF_MAX);
        Some(self.addrs.clone())
    }

    /// Remembers a bootstrap dial of this round.
    pub(crate) fn dialing(&mut self, id: ConnectionId, addr: Multiaddr) {
        self.dials.insert(id, addr);
    }

    /// The bootstrap address a dial was for, if it was one, and the wait until the next round.
    pub(crate) fn dial_ended(
        &mut self,
        id: &ConnectionId,
        now: Instant,
    ) -> Option<(Multiaddr, Duration)> {
        let addr = self.dials.remove(id)?;
        Some((addr, self.next_round.saturating_duration_since(now)))
    }

    /// Whether `addr` (as dialed) is one of the bootstrap addresses.
    pub(crate) fn is_bootstrap(&self, addr: &Multiaddr) -> bool {
        let addr = without_peer_id(addr);
        self.addrs.iter().any(|a| without_peer_id(a) == addr)
    }
}

/// The address without a trailing `/p2p/<id>`.
fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn rounds_back_off_while_disconnected_and_reset_when_connected() {
        let t = Instant::now();
        let mut b = Bootstrapper::new(vec![addr("/ip4/127.0.0.1/tcp/1")], t);
        assert!(b.due(t, false).is_some());
        assert!(b.due(t, false).is_none());
        assert!(b.due(t + Duration::from_secs(1), false).is_some());
        assert!(b.due(t + Duration::from_secs(2), false).is_none());
        assert!(b.due(t + Duration::from_secs(3), false).is_some());
        assert!(b.due(t + Duration::from_secs(3), true).is_none());
        assert!(b.due(t + Duration::from_secs(4), false).is_some());
    }

    #[test]
    fn peer_id_suffix_is_ignored_when_matching() {
        let id = libp2p::PeerId::random();
        let b = Bootstrapper::new(vec![addr("/ip4/10.0.0.1/tcp/5")], Instant::now());
        assert!(b.is_bootstrap(&addr(&format!("/ip4/10.0.0.1/tcp/5/p2p/{id}"))));
        assert!(!b.is_bootstrap(&addr("/ip4/10.0.0.1/tcp/6")));
    }
}
