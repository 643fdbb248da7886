//! An iterative Kademlia lookup as a pure state machine: which peer to ask next, what an answer
//! adds, when the lookup is done. No I/O, no clock: the event loop sends the requests (through
//! [`crate::kad_wire`]) and feeds the answers and failures back.
//!
//! Why our own and not libp2p-kad's queries: kad takes every peer of an answer into a query, so one
//! liar answering with 1,000 made-up peers makes a lookup dial 1,000 addresses; it waits for all k
//! closest peers to answer before a store may start (k requests before the first PUT_VALUE); and it
//! asks alpha peers at once even for a fetch that the closest peer almost always answers alone.
//! Here:
//! - at most k peers are taken from one answer (the k closest to the target);
//! - a lookup is done when the `resilience` closest live peers it knows have answered (go-libp2p's
//!   "beta"); a store then puts to the k closest it knows, and any that fails is replaced by the
//!   next closest, so liveness is checked by the PUT itself rather than by k extra requests;
//! - a lookup may start narrow (one request at a time) and widens to alpha at the first miss,
//!   failure or slow answer;
//! - at most [`MAX_GROUP_PER_LOOKUP`] of its live candidates come from one address group (the
//!   /16 or /32 of a public address, [`crate::diversity`]), so identities minted behind one
//!   network cannot be all of a key's k closest: a store's targets and a fetch's closest peers
//!   obey the same bound, so a value stored past them is found past them.

use std::collections::BTreeMap;

use libp2p::{Multiaddr, PeerId};
use rustc_hash::FxHashMap;

use crate::config::MAX_ADDRS_PER_PEER;
use crate::diversity::{Group, group_of};
use crate::kad_wire::WirePeer;
use crate::point::{self, Point};

/// go-libp2p's "beta": a lookup ends once this many of the closest live peers have answered.
pub const LOOKUP_RESILIENCE: usize = 3;
/// Candidates a lookup keeps, in multiples of k (the farthest waiting ones are forgotten).
pub const CANDIDATES_PER_K: usize = 3;
/// Live candidates of one address group a lookup keeps at most (a closer one displaces the
/// farthest not yet asked): at most this many of a value's k copies sit behind one network.
/// Peers with no public address are in no group (a local network is not bounded).
pub const MAX_GROUP_PER_LOOKUP: usize = 3;

/// Where a candidate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Not asked yet.
    Waiting,
    /// Asked; no answer yet.
    InFlight,
    /// Answered (without the record, for a fetch).
    Succeeded,
    /// Answered with the record sought.
    Held,
    /// Could not be reached (dial refused, stream reset) or answered with garbage.
    Failed,
    /// Asked, and no answer came in time: unlike a failure, this says nothing of what the peer
    /// holds, so a fetch that ends without the record and past such a peer did not find it absent.
    Unanswered,
    /// Asked, and it refused (its rate limit): to be asked again once its back-off ends. Still
    /// a candidate, but it holds no parallel slot meanwhile, so the next peer is asked at once.
    Deferred,
}

impl PeerState {
    fn answered(self) -> bool {
        matches!(self, Self::Succeeded | Self::Held)
    }

    /// Still a candidate: not failed, not given up on.
    fn live(self) -> bool {
        !matches!(self, Self::Failed | Self::Unanswered)
    }
}

/// The knobs of one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupParams {
    /// Replication factor: peers taken from one answer, and the size of the result.
    pub k: usize,
    /// Requests in flight at once once wide.
    pub alpha: usize,
    /// The lookup ends when this many of the closest live peers have answered.
    pub resilience: usize,
    /// Start with one request in flight, widening to `alpha` at the first miss or failure.
    pub narrow: bool,
}

/// One peer the lookup knows of.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its id.
    pub peer: PeerId,
    /// Addresses learned from answers (empty for peers of our routing table: the swarm knows them).
    pub addrs: Vec<Multiaddr>,
    /// Where it stands.
    pub state: PeerState,
    /// The address group of the first public address it was named with, if any.
    pub group: Option<Group>,
}

/// An iterative lookup for the peers closest to a key.
#[derive(Debug)]
pub struct Lookup {
    target: Point,
    params: LookupParams,
    candidates: BTreeMap<Point, Candidate>,
    /// Each candidate's distance by id. Answers name the same peers again and again (the k
    /// closest to a key all name each other), and hashing an id into the key space (SHA-256) was
    /// most of a lookup's own cost. A fast hash is safe here: the map holds at most the
    /// candidates, a few hundred ids.
    distances: FxHashMap<PeerId, Point>,
    in_flight: usize,
    wide: bool,
    requests: usize,
    ignored: usize,
}

impl Lookup {
    /// A lookup for `key` (hashed for distance, as kad does), starting from `seeds`.
    pub fn new(
        key: &[u8],
        seeds: impl IntoIterator<Item = (PeerId, Vec<Multiaddr>)>,
        params: LookupParams,
    ) -> Self {
        let params = LookupParams {
            k: params.k.max(1),
            alpha: params.alpha.max(1),
            resilience: params.resilience.clamp(1, params.k.max(1)),
            narrow: params.narrow,
        };
        let mut lookup = Self {
            target: point::of_key(key),
            params,
            candidates: BTreeMap::new(),
            distances: FxHashMap::default(),
            in_flight: 0,
            wide: !params.narrow,
            requests: 0,
            ignored: 0,
        };
        for (peer, addrs) in seeds {
            lookup.add(peer, addrs);
        }
        lookup.prune();
        lookup
    }

    fn distance(&self, peer: &PeerId) -> Point {
        match self.distances.get(peer) {
            Some(d) => *d,
            None => point::distance(self.target, point::of_peer(peer)),
        }
    }

    /// Forgets the candidate at distance `d`.
    fn forget(&mut self, d: &Point) {
        if let Some(c) = self.candidates.remove(d) {
            self.distances.remove(&c.peer);
        }
    }

    fn add(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> bool {
        let d = self.distance(&peer);
        self.add_at(d, peer, addrs)
    }

    /// Adds `peer` at distance `d` (computed once by the caller: hashing ids is a lookup's main
    /// cost).
    fn add_at(&mut self, d: Point, peer: PeerId, mut addrs: Vec<Multiaddr>) -> bool {
        if let Some(c) = self.candidates.get_mut(&d) {
            for a in addrs {
                if c.addrs.len() < MAX_ADDRS_PER_PEER && !c.addrs.contains(&a) {
                    c.addrs.push(a);
                }
            }
            return false;
        }
        addrs.truncate(MAX_ADDRS_PER_PEER);
        let group = group_of(&addrs);
        if let Some(g) = group
            && !self.make_room_in(g, d)
        {
            self.ignored += 1;
            return false;
        }
        self.distances.insert(peer, d);
        self.candidates.insert(
            d,
            Candidate {
                peer,
                addrs,
                state: PeerState::Waiting,
                group,
            },
        );
        true
    }

    /// Whether a candidate of group `g` at distance `d` may join: yes while the group has fewer
    /// than [`MAX_GROUP_PER_LOOKUP`] live candidates, or by displacing the group's farthest one not
    /// yet asked when that one is farther than `d`.
    fn make_room_in(&mut self, g: Group, d: Point) -> bool {
        let mut live = 0;
        let mut farthest_waiting = None;
        for (cd, c) in &self.candidates {
            if c.group == Some(g) && c.state.live() {
                live += 1;
                if c.state == PeerState::Waiting {
                    farthest_waiting = Some(*cd);
                }
            }
        }
        if live < MAX_GROUP_PER_LOOKUP {
            return true;
        }
        match farthest_waiting {
            Some(far) if far > d => {
                self.forget(&far);
                true
            }
            _ => false,
        }
    }

    /// Forgets the farthest live candidates beyond the cap: first those not asked yet, and those
    /// that answered without the record when none is left to drop (beyond the cap they cannot be
    /// among the closest that decide the lookup). Peers in flight or deferred stay (their answers
    /// are still expected), and so do holders. Peers that failed or went unanswered are not
    /// counted and stay, so that one named again is not asked again; at most one per request,
    /// they are bounded by the requests made. Counting them against the cap (as this did) let a
    /// routing table full of departed peers fill a lookup with failures, after which every
    /// closer peer an answer named was dropped at once: under churn, fetches of values held by
    /// all of the 20 closest nodes ended "not found" after 60 requests.
    fn prune(&mut self) {
        let cap = CANDIDATES_PER_K * self.params.k;
        let mut live = self.live().count();
        while live > cap {
            let farthest = |state: PeerState| {
                self.candidates
                    .iter()
                    .rev()
                    .find(|(_, c)| c.state == state)
                    .map(|(d, _)| *d)
            };
            let Some(d) = farthest(PeerState::Waiting).or_else(|| farthest(PeerState::Succeeded))
            else {
                break;
            };
            self.forget(&d);
            live -= 1;
        }
    }

    /// The live candidates (not failed), closest first.
    fn live(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.values().filter(|c| c.state.live())
    }

    /// Whether the lookup is over: the `resilience` closest live peers have all answered (also when
    /// there is no live peer left at all).
    pub fn is_finished(&self) -> bool {
        self.live()
            .take(self.params.resilience)
            .all(|c| c.state.answered())
    }

    /// The next peer to ask, with the addresses learned for it, if one may be asked now. Only the
    /// closest live peers are asked: beyond `max(resilience, alpha)` an answer could not change
    /// the outcome.
    pub fn next_request(&mut self) -> Option<(PeerId, Vec<Multiaddr>)> {
        let parallel = if self.wide { self.params.alpha } else { 1 };
        if self.in_flight >= parallel || self.is_finished() {
            return None;
        }
        let window = self.params.resilience.max(self.params.alpha);
        let d = self
            .candidates
            .iter()
            .filter(|(_, c)| c.state.live())
            .take(window)
            .find(|(_, c)| c.state == PeerState::Waiting)
            .map(|(d, _)| *d)?;
        let c = self.candidates.get_mut(&d)?;
        c.state = PeerState::InFlight;
        self.in_flight += 1;
        self.requests += 1;
        Some((c.peer, c.addrs.clone()))
    }

    fn settle(&mut self, peer: &PeerId, state: PeerState) -> bool {
        let d = self.distance(peer);
        match self.candidates.get_mut(&d) {
            Some(c) if c.state == PeerState::InFlight => {
                c.state = state;
                self.in_flight -= 1;
                true
            }
            _ => false,
        }
    }

    /// `peer` answered without the record, naming `closer` peers: the k of them closest to the
    /// target are taken (peers the caller refused are already filtered out). Returns how many
    /// new candidates were added. An answer the lookup did not ask for is ignored.
    pub fn on_answer(&mut self, peer: &PeerId, closer: Vec<WirePeer>) -> usize {
        if !self.settle(peer, PeerState::Succeeded) {
            return 0;
        }
        self.wide = true;
        let mut closer: Vec<(Point, WirePeer)> = closer
            .into_iter()
            .filter(|p| p.peer != *peer)
            .map(|p| (self.distance(&p.peer), p))
            .collect();
        closer.sort_by_key(|(d, _)| *d);
        closer.dedup_by(|a, b| a.0 == b.0);
        // One network's share of the answer first: an answer stuffed with one crowd must not
        // push everyone else out of the k taken.
        let before = closer.len();
        let mut shares: Vec<(Group, usize)> = Vec::new();
        closer.retain(|(_, p)| {
            let Some(g) = group_of(&p.addrs) else {
                return true;
            };
            match shares.iter_mut().find(|(s, _)| *s == g) {
                Some((_, n)) => {
                    *n += 1;
                    *n <= MAX_GROUP_PER_LOOKUP
                }
                None => {
                    shares.push((g, 1));
                    true
                }
            }
        });
        self.ignored += before - closer.len();
        self.ignored += closer.len().saturating_sub(self.params.k);
        closer.truncate(self.params.k);
        let added = closer
            .into_iter()
            .map(|(d, p)| self.add_at(d, p.peer, p.addrs))
            .filter(|added| *added)
            .count();
        self.prune();
        added
    }

    /// `peer` answered with the record sought.
    pub fn on_found(&mut self, peer: &PeerId) {
        self.settle(peer, PeerState::Held);
    }

    /// `peer` answered with the record sought and named `closer` peers, which are taken as
    /// [`Lookup::on_answer`] takes them (a lookup that wants every version asks on past holders).
    pub fn on_found_naming(&mut self, peer: &PeerId, closer: Vec<WirePeer>) {
        let d = self.distance(peer);
        let asked = self
            .candidates
            .get(&d)
            .is_some_and(|c| c.state == PeerState::InFlight);
        self.on_answer(peer, closer);
        if asked && let Some(c) = self.candidates.get_mut(&d) {
            c.state = PeerState::Held;
        }
    }

    /// `peer` did not answer (or answered with garbage or a false record); the lookup widens.
    pub fn on_failure(&mut self, peer: &PeerId) {
        if self.settle(peer, PeerState::Failed) {
            self.wide = true;
        }
    }

    /// `peer` refused the request (it is throttling us): it is to be asked again
    /// ([`Lookup::on_retry`]), and its slot goes to the next candidate meanwhile. The lookup
    /// waits for its answer as for any peer asked: a search is not over while a closer peer that
    /// may hold the value has not answered. Whether it was in flight.
    pub fn on_refused(&mut self, peer: &PeerId) -> bool {
        self.settle(peer, PeerState::Deferred)
    }

    /// `peer`, refused before, is asked again now; whether it still waits for that (the lookup
    /// may have moved past it).
    pub fn on_retry(&mut self, peer: &PeerId) -> bool {
        let d = self.distance(peer);
        match self.candidates.get_mut(&d) {
            Some(c) if c.state == PeerState::Deferred => {
                c.state = PeerState::InFlight;
                self.in_flight += 1;
                self.requests += 1;
                true
            }
            _ => false,
        }
    }

    /// `peer` did not answer in time; the lookup widens and goes on without it.
    pub fn on_timeout(&mut self, peer: &PeerId) {
        if self.settle(peer, PeerState::Unanswered) {
            self.wide = true;
        }
    }

    /// How many peers went unanswered that are closer to the target than the farthest of the
    /// `resilience` closest peers that answered: had they answered, the outcome could differ. Zero
    /// means the lookup's verdict stands on answers alone (a fetch's "not found" is then true).
    pub fn unanswered_closer(&self) -> usize {
        let decisive = self
            .candidates
            .iter()
            .filter(|(_, c)| c.state.answered())
            .take(self.params.resilience)
            .last()
            .map(|(d, _)| *d);
        self.candidates
            .iter()
            .filter(|(d, c)| {
                c.state == PeerState::Unanswered && decisive.is_none_or(|far| **d < far)
            })
            .count()
    }

    /// Goes on until the `resilience` closest live peers have answered (at most the candidates
    /// kept, [`CANDIDATES_PER_K`] times k), at full width: a fetch whose k closest all lacked the
    /// value asks past them, where copies may sit while the closest set changes under churn.
    /// Returns whether there is anyone left to ask.
    pub fn deepen(&mut self, resilience: usize) -> bool {
        let most = CANDIDATES_PER_K * self.params.k;
        self.params.resilience = self.params.resilience.max(resilience.min(most));
        self.wide = true;
        !self.is_finished()
    }

    /// Allows `alpha` requests in flight (a narrow start whose first answer is slow).
    pub fn widen(&mut self) {
        self.wide = true;
    }

    /// The `n` closest live candidates, closest first.
    pub fn closest(&self, n: usize) -> Vec<Candidate> {
        self.live().take(n).cloned().collect()
    }

    /// The closest peer that answered without the record (where a fetched value is worth caching).
    pub fn closest_lacking(&self) -> Option<PeerId> {
        self.candidates
            .values()
            .find(|c| c.state == PeerState::Succeeded)
            .map(|c| c.peer)
    }

    /// Requests sent so far.
    pub fn requests(&self) -> usize {
        self.requests
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Peers named in answers beyond the k taken from each, or beyond their address group's share.
    pub fn ignored(&self) -> usize {
        self.ignored
    }

    /// The replication factor of this lookup.
    pub fn k(&self) -> usize {
        self.params.k
    }
}

#[cfg(test)]
mod tests;
