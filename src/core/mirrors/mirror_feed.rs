//! Which records go to which mirror node, and when: a bounded queue drained at a steady pace, a cap
//! on hand-offs in flight (a mirror's connection takes a bounded number of streams), and a few
//! retries for hand-offs that failed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::kad::RecordKey;

pub use super::super::events::MirrorId;

/// Mirror nodes a node sends records to.
pub const MAX_MIRRORS: usize = 8;
/// Records handed to mirrors per round at most.
pub const MIRROR_FEED_PER_TICK: usize = 64;
/// Time between two rounds of hand-offs to mirrors (with [`MIRROR_FEED_PER_TICK`], at most 320
/// records a second).
pub const MIRROR_PACE: Duration = Duration::from_millis(200);
/// Hand-offs to mirrors in flight at once (below the mirror protocol's streams per connection).
pub const MIRROR_IN_FLIGHT: usize = 32;
/// Records waiting for a mirror at most; past it, new ones are dropped (and counted).
pub const MIRROR_BACKLOG: usize = 262_144;
/// Tries per record and mirror.
pub const MIRROR_ATTEMPTS: u8 = 3;

/// One record for one mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// The mirror.
    pub peer: PeerId,
    /// The record's key (its current value is read from the store when sent).
    pub key: RecordKey,
    /// Tries so far.
    pub attempts: u8,
}

/// The mirrors this node knows and the records on their way to them.
#[derive(Debug, Default)]
pub struct MirrorFeed {
    mirrors: HashSet<PeerId>,
    queue: VecDeque<Handoff>,
    in_flight: HashMap<MirrorId, Handoff>,
    dropped: u64,
}

impl MirrorFeed {
    /// A newly seen mirror, to be sent `keys` (everything held here). `false` when it was known
    /// already or too many mirrors are.
    pub fn add_mirror(&mut self, peer: PeerId, keys: impl IntoIterator<Item = RecordKey>) -> bool {
        if self.mirrors.len() >= MAX_MIRRORS || !self.mirrors.insert(peer) {
            return false;
        }
        for key in keys {
            self.push(Handoff {
                peer,
                key,
                attempts: 0,
            });
        }
        true
    }

    /// A mirror that cannot be reached any more: nothing more goes to it. Whether it was known.
    pub fn remove_mirror(&mut self, peer: &PeerId) -> bool {
        self.queue.retain(|h| h.peer != *peer);
        self.mirrors.remove(peer)
    }

    /// Whether `peer` is a known mirror.
    pub fn is_mirror(&self, peer: &PeerId) -> bool {
        self.mirrors.contains(peer)
    }

    /// Whether any mirror is known.
    pub fn has_mirrors(&self) -> bool {
        !self.mirrors.is_empty()
    }

    /// Queues `key` for every mirror but `except` (where the record came from).
    pub fn record_added(&mut self, key: &RecordKey, except: Option<PeerId>) {
        let targets: Vec<PeerId> = self
            .mirrors
            .iter()
            .filter(|p| Some(**p) != except)
            .copied()
            .collect();
        for peer in targets {
            self.push(Handoff {
                peer,
                key: key.clone(),
                attempts: 0,
            });
        }
    }

    fn push(&mut self, handoff: Handoff) {
        if self.queue.len() >= MIRROR_BACKLOG {
            self.dropped += 1;
        } else {
            self.queue.push_back(handoff);
        }
    }

    /// The hand-offs to send now: at most [`MIRROR_FEED_PER_TICK`], and never more than
    /// [`MIRROR_IN_FLIGHT`] in flight. Each must be reported with [`MirrorFeed::sent`] (or is lost).
    pub fn due(&mut self) -> Vec<Handoff> {
        let room = MIRROR_IN_FLIGHT
            .saturating_sub(self.in_flight.len())
            .min(MIRROR_FEED_PER_TICK);
        let mut out = Vec::with_capacity(room.min(self.queue.len()));
        while out.len() < room {
            let Some(h) = self.queue.pop_front() else {
                break;
            };
            if self.mirrors.contains(&h.peer) {
                out.push(h);
            }
        }
        out
    }

    /// `handoff` went out as request `id`.
    pub fn sent(&mut self, id: MirrorId, mut handoff: Handoff) {
        handoff.attempts = handoff.attempts.saturating_add(1);
        self.in_flight.insert(id, handoff);
    }

    /// The mirror acknowledged request `id`.
    pub fn acknowledged(&mut self, id: &MirrorId) {
        self.in_flight.remove(id);
    }

    /// Request `id` failed: queued again unless it ran out of tries. Whether it was one of ours.
    pub fn failed(&mut self, id: &MirrorId) -> bool {
        let Some(handoff) = self.in_flight.remove(id) else {
            return false;
        };
        if handoff.attempts < MIRROR_ATTEMPTS {
            self.push(handoff);
        } else {
            self.dropped += 1;
        }
        true
    }

    /// Whether a round would send something now.
    pub fn has_due(&self) -> bool {
        !self.queue.is_empty() && self.in_flight.len() < MIRROR_IN_FLIGHT
    }

    /// Hand-offs waiting and in flight.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.in_flight.len()
    }

    /// Hand-offs given up (backlog full or out of tries).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> RecordKey {
        RecordKey::new(&i.to_be_bytes())
    }

    fn ids(n: usize) -> Vec<MirrorId> {
        (0..n as u64).collect()
    }

    #[test]
    fn paced_bounded_in_flight_and_retried() {
        let mut feed = MirrorFeed::default();
        let mirror = PeerId::random();
        assert!(feed.add_mirror(mirror, (0..100).map(key)));
        assert!(!feed.add_mirror(mirror, (0..100).map(key)), "known already");
        let first = feed.due();
        assert_eq!(first.len(), MIRROR_IN_FLIGHT);
        let ids = ids(MIRROR_IN_FLIGHT + 1);
        for (id, h) in ids.iter().zip(first) {
            feed.sent(*id, h);
        }
        assert!(feed.due().is_empty(), "no room while the window is full");
        feed.acknowledged(&ids[0]);
        assert!(feed.failed(&ids[1]));
        assert!(!feed.failed(&ids[MIRROR_IN_FLIGHT]), "not ours");
        assert_eq!(feed.pending(), 100 - 1, "all but the acknowledged one");
        assert_eq!(feed.due().len(), 2, "two free places in the window");
    }

    #[test]
    fn gives_up_after_its_attempts_and_forgets_removed_mirrors() {
        let mut feed = MirrorFeed::default();
        let mirror = PeerId::random();
        feed.add_mirror(mirror, [key(1)]);
        let ids = ids(MIRROR_ATTEMPTS as usize);
        for id in &ids {
            let h = feed.due().pop().expect("due");
            feed.sent(*id, h);
            feed.failed(id);
        }
        assert_eq!((feed.pending(), feed.dropped()), (0, 1));
        let other = PeerId::random();
        feed.add_mirror(other, []);
        feed.record_added(&key(2), Some(other));
        assert_eq!(feed.pending(), 1, "not sent back to where it came from");
        assert!(feed.remove_mirror(&mirror));
        assert!(feed.due().is_empty());
    }
}
