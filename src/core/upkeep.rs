//! When the core's periodic work falls due: the expiry sweep, the rounds of replication (paced
//! in batches, a bounded number running), and which newcomers were handed records lately.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad::RecordKey;

use super::budget::SERVE_BURST_PER_PEER;
use super::outbox::QueryId;

/// How often expired records are swept from the store.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(5);
/// Re-stores (replication and republish) running at once at most; a batch waits while this many
/// run, so that a round among peers that do not answer (a partition, a mass failure) does not
/// grow without bound. A round of 65,536 records at [`REPLICATION_PER_BATCH`] per
/// [`REPLICATION_PACE`] starts 160 a second, each usually done within a second.
pub const MAX_REPLICATION_QUERIES: usize = 256;
/// Records re-stored per batch during a replication round.
pub const REPLICATION_PER_BATCH: usize = 32;
/// Time between two replication batches.
pub const REPLICATION_PACE: Duration = Duration::from_millis(200);
/// Records handed to one newcomer at once (the rest follow with the periodic replication).
pub const MAX_HANDOFF_PER_PEER: usize = 256;
/// Peers remembered as handed records lately (the oldest forgotten first when full).
pub const MAX_HANDOFF_PEERS: usize = 4096;

// A hand-off (records sent to a newcomer at once) fits in one peer's burst.
const _: () = assert!(MAX_HANDOFF_PER_PEER as u32 <= SERVE_BURST_PER_PEER);

/// The schedule of the core's periodic work.
pub(super) struct Upkeep {
    /// The keys of the replication round in progress, in order.
    round: VecDeque<RecordKey>,
    last_replication: Instant,
    last_sweep: Instant,
    /// Re-stores running (at most [`MAX_REPLICATION_QUERIES`]).
    restoring: HashSet<QueryId>,
    /// Peers handed records lately, and when (at most [`MAX_HANDOFF_PEERS`]).
    handed: HashMap<PeerId, Instant>,
    /// How often every record is re-stored, and a peer handed records at most.
    interval: Duration,
}

impl Upkeep {
    /// Nothing done yet at `now`; replicating every `interval`.
    pub fn new(now: Instant, interval: Duration) -> Self {
        Self {
            round: VecDeque::new(),
            last_replication: now,
            last_sweep: now,
            restoring: HashSet::new(),
            handed: HashMap::new(),
            interval,
        }
    }

    /// Whether the expiry sweep is due at `now` (it is then counted as done).
    pub fn sweep_due(&mut self, now: Instant) -> bool {
        if now < self.last_sweep + EXPIRY_SWEEP {
            return false;
        }
        self.last_sweep = now;
        true
    }

    /// Whether a batch of replication is due at `now`: the next of the round in progress, or a
    /// new round's first, its keys listed by `keys` (in a deterministic order).
    pub fn batch_due(&mut self, now: Instant, keys: impl FnOnce() -> Vec<RecordKey>) -> bool {
        if self.round.is_empty() {
            if now < self.last_replication + self.interval {
                return false;
            }
            self.round.extend(keys());
        } else if now < self.last_replication + REPLICATION_PACE {
            return false;
        }
        self.last_replication = now;
        true
    }

    /// The round's next key, while fewer than [`MAX_REPLICATION_QUERIES`] re-stores run.
    pub fn next_key(&mut self) -> Option<RecordKey> {
        if self.restoring.len() >= MAX_REPLICATION_QUERIES {
            return None;
        }
        self.round.pop_front()
    }

    /// A re-store started as query `id`.
    pub fn restoring(&mut self, id: QueryId) {
        self.restoring.insert(id);
    }

    /// Query `id` ended (a re-store or not).
    pub fn ended(&mut self, id: &QueryId) {
        self.restoring.remove(id);
    }

    /// Re-stores running.
    pub fn restores(&self) -> usize {
        self.restoring.len()
    }

    /// Whether `peer` may be handed records at `now`: not if it was within the interval. The
    /// hand-off is remembered (the oldest forgotten past [`MAX_HANDOFF_PEERS`]).
    pub fn hand_off(&mut self, peer: PeerId, now: Instant) -> bool {
        let interval = self.interval;
        if self
            .handed
            .get(&peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < interval)
        {
            return false;
        }
        if self.handed.len() >= MAX_HANDOFF_PEERS && !self.handed.contains_key(&peer) {
            self.handed
                .retain(|_, at| now.saturating_duration_since(*at) < interval);
            if self.handed.len() >= MAX_HANDOFF_PEERS
                && let Some(oldest) = self
                    .handed
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(p, _)| *p)
            {
                self.handed.remove(&oldest);
            }
        }
        self.handed.insert(peer, now);
        true
    }

    /// When the sweep or the next batch of replication falls due.
    pub fn next_wakeup(&self) -> Instant {
        let replication = if self.round.is_empty() {
            self.last_replication + self.interval
        } else {
            self.last_replication + REPLICATION_PACE
        };
        replication.min(self.last_sweep + EXPIRY_SWEEP)
    }

    /// Heap bytes of the schedule, by its own accounting.
    pub fn heap_bytes(&self) -> usize {
        self.round.capacity() * std::mem::size_of::<RecordKey>()
            + self.handed.capacity() * (std::mem::size_of::<(PeerId, Instant)>() + 1)
    }
}
