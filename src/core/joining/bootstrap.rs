//! Joining the network: dial the bootstrap addresses, and dial them again with exponential
//! back-off for as long as the routing table is empty (connections from clients such as the
//! console do not count: they route nothing). Once joined, each routing refresh dials again the
//! bootstrap nodes missing from the routing table, so that the two sides of a healed partition
//! find each other through them. A node cut off dials, in its rounds, the peers that left its
//! table lately too. Pure bookkeeping: the core turns its rounds into [`super::super::Action::Dial`]s.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

pub use super::super::events::DialId;

/// First wait before dialing the bootstrap nodes again.
pub const BOOTSTRAP_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two rounds of bootstrap dials.
pub const BOOTSTRAP_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Peers that left the routing table lately, remembered to be dialed in the rounds of a node cut
/// off: a bootstrap node has no one else to dial, and a healed partition's other side has
/// evicted it.
pub const REJOIN_PEERS: usize = 16;
/// Addresses dialed per remembered peer.
pub const REJOIN_ADDRS_PER_PEER: usize = 2;

/// The bootstrap addresses, the rounds dialing them, and the peers to rejoin through.
#[derive(Debug)]
pub struct Bootstrapper {
    addrs: Vec<Multiaddr>,
    backoff: Duration,
    next_round: Instant,
    /// Dials of the current round, to tell their failures from others.
    dials: HashMap<DialId, Multiaddr>,
    /// The peer each bootstrap address led to, once it did.
    peers: HashMap<Multiaddr, PeerId>,
    /// Peers that left the routing table lately (newest last), each with an address or two that
    /// end in its id.
    left: VecDeque<(PeerId, Vec<Multiaddr>)>,
}

impl Bootstrapper {
    /// Rounds dialing `addrs`, the first due at `now`.
    pub fn new(addrs: Vec<Multiaddr>, now: Instant) -> Self {
        Self {
            addrs,
            backoff: BOOTSTRAP_BACKOFF_MIN,
            next_round: now,
            dials: HashMap::new(),
            peers: HashMap::new(),
            left: VecDeque::new(),
        }
    }

    /// The addresses to dial now, if a round is due: one is due while the node has not joined
    /// (its routing table is empty) and the back-off has passed. Joining resets the back-off.
    /// A round dials the bootstrap addresses and the peers that left the routing table lately.
    pub fn due(&mut self, now: Instant, joined: bool) -> Option<Vec<Multiaddr>> {
        if joined || (self.addrs.is_empty() && self.left.is_empty()) {
            self.backoff = BOOTSTRAP_BACKOFF_MIN;
            self.next_round = now + self.backoff;
            return None;
        }
        if now < self.next_round {
            return None;
        }
        self.next_round = now + self.backoff;
        self.backoff = (self.backoff * 2).min(BOOTSTRAP_BACKOFF_MAX);
        let mut round = self.addrs.clone();
        round.extend(self.left.iter().rev().flat_map(|(_, a)| a.iter().cloned()));
        Some(round)
    }

    /// When the next round is due (`None`: none will be, joined or nothing to dial).
    pub fn next_round(&self, joined: bool) -> Option<Instant> {
        let idle = joined || (self.addrs.is_empty() && self.left.is_empty());
        (!idle).then_some(self.next_round)
    }

    /// Replaces the bootstrap addresses; a round is due at `now`.
    pub fn set_addrs(&mut self, addrs: Vec<Multiaddr>, now: Instant) {
        self.addrs = addrs;
        self.retry_now(now);
    }

    /// `peer` left the routing table; `addrs` are the ones it was known by.
    pub fn peer_left<'a>(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = &'a Multiaddr>) {
        let addrs: Vec<Multiaddr> = addrs
            .into_iter()
            .take(REJOIN_ADDRS_PER_PEER)
            .map(|a| {
                let mut a = without_peer_id(a);
                a.push(Protocol::P2p(peer));
                a
            })
            .collect();
        self.left.retain(|(p, _)| *p != peer);
        if addrs.is_empty() {
            return;
        }
        if self.left.len() >= REJOIN_PEERS {
            self.left.pop_front();
        }
        self.left.push_back((peer, addrs));
    }

    /// The next round is due now, with the back-off reset: the node has a new address (its
    /// network came back), so waiting out a long back-off would only delay the rejoin.
    pub fn retry_now(&mut self, now: Instant) {
        self.backoff = BOOTSTRAP_BACKOFF_MIN;
        self.next_round = now;
    }

    /// The bootstrap addresses to dial at a routing refresh of a joined node: those whose peer is
    /// not in the routing table (evicted after a partition, or never reached).
    pub fn missing(&self, mut in_table: impl FnMut(&PeerId) -> bool) -> Vec<Multiaddr> {
        self.addrs
            .iter()
            .filter(|a| !self.peers.get(*a).is_some_and(&mut in_table))
            .cloned()
            .collect()
    }

    /// Remembers a bootstrap dial of this round.
    pub fn dialing(&mut self, id: DialId, addr: Multiaddr) {
        self.dials.insert(id, addr);
    }

    /// A bootstrap dial connected to `peer`; returns its address, if it was one.
    pub fn dial_connected(&mut self, id: &DialId, peer: PeerId) -> Option<Multiaddr> {
        let addr = self.dials.remove(id)?;
        self.peers.insert(addr.clone(), peer);
        Some(addr)
    }

    /// The bootstrap address a failed dial was for, if it was one, and the wait until the next
    /// round.
    pub fn dial_failed(&mut self, id: &DialId, now: Instant) -> Option<(Multiaddr, Duration)> {
        let addr = self.dials.remove(id)?;
        Some((addr, self.next_round.saturating_duration_since(now)))
    }

    /// Whether `addr` (as dialed) is one of the bootstrap addresses.
    pub fn is_bootstrap(&self, addr: &Multiaddr) -> bool {
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
    fn a_new_address_makes_a_round_due_at_once() {
        let t = Instant::now();
        let mut b = Bootstrapper::new(vec![addr("/ip4/127.0.0.1/tcp/1")], t);
        for s in [0, 1, 3, 7, 15] {
            assert!(b.due(t + Duration::from_secs(s), false).is_some());
        }
        assert!(b.due(t + Duration::from_secs(16), false).is_none());
        b.retry_now(t + Duration::from_secs(16));
        assert!(b.due(t + Duration::from_secs(16), false).is_some());
        assert!(
            b.due(t + Duration::from_secs(17), false).is_some(),
            "back-off reset"
        );
    }

    #[test]
    fn bootstrap_nodes_missing_from_the_table_are_dialed_again() {
        let (a, c) = (addr("/ip4/10.0.0.1/tcp/5"), addr("/ip4/10.0.0.2/tcp/5"));
        let mut b = Bootstrapper::new(vec![a.clone(), c.clone()], Instant::now());
        let peer = libp2p::PeerId::random();
        let id: DialId = 7;
        b.dialing(id, a.clone());
        assert_eq!(b.dial_connected(&id, peer), Some(a.clone()));
        assert_eq!(b.dial_connected(&id, peer), None, "a dial ends once");
        // `c` never connected: always missing; `a` is missing only when its peer left the table.
        assert_eq!(b.missing(|p| *p == peer), vec![c.clone()]);
        assert_eq!(b.missing(|_| false), vec![a, c]);
    }

    #[test]
    fn peers_that_left_are_dialed_by_id_while_cut_off() {
        let t = Instant::now();
        // A bootstrap node: no address of its own to dial, so no round until a peer leaves.
        let mut b = Bootstrapper::new(Vec::new(), t);
        assert!(b.due(t, false).is_none());
        let peers: Vec<PeerId> = (0..REJOIN_PEERS + 1).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            let known = [
                addr(&format!("/ip4/10.0.0.{i}/tcp/1")),
                addr(&format!("/ip4/10.0.1.{i}/tcp/1")),
                addr(&format!("/ip4/10.0.2.{i}/tcp/1")),
            ];
            b.peer_left(*p, &known);
        }
        let round = b.due(t + BOOTSTRAP_BACKOFF_MIN, false).expect("a round");
        assert_eq!(round.len(), REJOIN_PEERS * REJOIN_ADDRS_PER_PEER);
        let last = peers[REJOIN_PEERS];
        assert_eq!(
            round[0],
            addr(&format!("/ip4/10.0.0.{REJOIN_PEERS}/tcp/1/p2p/{last}")),
            "newest first, dialed by id"
        );
        assert!(
            !round
                .iter()
                .any(|a| a.to_string().contains(&peers[0].to_string())),
            "the oldest was forgotten"
        );
        assert!(b.due(t, true).is_none(), "joined: no round");
    }

    #[test]
    fn peer_id_suffix_is_ignored_when_matching() {
        let id = libp2p::PeerId::random();
        let b = Bootstrapper::new(vec![addr("/ip4/10.0.0.1/tcp/5")], Instant::now());
        assert!(b.is_bootstrap(&addr(&format!("/ip4/10.0.0.1/tcp/5/p2p/{id}"))));
        assert!(!b.is_bootstrap(&addr("/ip4/10.0.0.1/tcp/6")));
    }
}
