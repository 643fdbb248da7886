//! The keys this node provides, and when each is announced again: every provide interval, a
//! few at a time, the longest unannounced first.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use dht_behaviours::config::{MAX_ADDRS_PER_PEER, PROVIDE_CHECKS_PER_INTERVAL};
use dht_behaviours::kad_wire::WirePeer;
use libp2p::kad::RecordKey;
use libp2p::{Multiaddr, PeerId};

use super::outbox::QueryId;

/// Keys this node provides at most (each is re-announced every provide interval, k ADD_PROVIDERs
/// and k checks apiece).
pub const MAX_PROVIDED_KEYS: usize = 16_384;
/// Re-announcements running at once; the rest wait for the next maintenance round.
pub const MAX_REPROVIDE_QUERIES: usize = 8;
/// How often the provided keys are checked for a re-announcement due, per provide interval.
pub const REPROVIDE_CHECKS_PER_INTERVAL: u32 = PROVIDE_CHECKS_PER_INTERVAL;
/// A check that found no peer to announce to is tried again this soon.
pub const REPROVIDE_RETRY: Duration = Duration::from_secs(10);

/// The keys this node provides and when each was last announced.
#[derive(Debug)]
pub struct Provided {
    keys: HashMap<RecordKey, Instant>,
    /// The addresses announced with this node.
    addrs: Vec<Multiaddr>,
    /// Whether the keys of this node found in its store (a restart) were taken in.
    resumed: bool,
    /// When the keys were last checked.
    last_check: Option<Instant>,
    /// The last check left due keys for want of room: the next comes as soon as a
    /// re-announcement ends.
    backlog: bool,
    /// Re-announcements running (at most [`MAX_REPROVIDE_QUERIES`]).
    running: HashSet<QueryId>,
    /// When the node started: the first check comes a moment after.
    started: Instant,
    /// How often each key is announced.
    interval: Duration,
}

impl Provided {
    /// Nothing provided yet by a node started at `started`, announcing every `interval`.
    pub fn new(started: Instant, interval: Duration) -> Self {
        Self {
            keys: HashMap::new(),
            addrs: Vec::new(),
            resumed: false,
            last_check: None,
            backlog: false,
            running: HashSet::new(),
            started,
            interval,
        }
    }

    /// Keys provided.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Provides `key`, announced at `now`; refused past [`MAX_PROVIDED_KEYS`].
    pub fn add(&mut self, key: RecordKey, now: Instant) -> Result<(), String> {
        if !self.keys.contains_key(&key) && self.keys.len() >= MAX_PROVIDED_KEYS {
            return Err(format!(
                "this node provides {MAX_PROVIDED_KEYS} keys already"
            ));
        }
        self.keys.insert(key, now);
        Ok(())
    }

    /// The addresses announced with this node.
    pub fn addrs(&self) -> &[Multiaddr] {
        &self.addrs
    }

    /// The addresses this node is reached at (the driver's, best first: confirmed external
    /// ones, then public listen addresses, then the rest); announced with every provider record.
    pub fn set_addrs(&mut self, mut addrs: Vec<Multiaddr>) {
        addrs.truncate(MAX_ADDRS_PER_PEER);
        self.addrs = addrs;
    }

    /// This node as the provider its announcements name.
    pub fn provider(&self, local: PeerId) -> WirePeer {
        WirePeer {
            peer: local,
            addrs: self.addrs.clone(),
        }
    }

    /// When the keys are next checked for a re-announcement.
    pub fn next_check(&self) -> Option<Instant> {
        if self.keys.is_empty() && self.resumed {
            return None;
        }
        if self.backlog && self.running.len() < MAX_REPROVIDE_QUERIES {
            return self.last_check;
        }
        let every = self.interval / REPROVIDE_CHECKS_PER_INTERVAL;
        // The first check comes a moment after the start, once the node has had a chance to join.
        let first = self.started + REPROVIDE_RETRY.min(every);
        Some(self.last_check.map_or(first, |t| t + every))
    }

    /// The keys to announce again at `now`, if a check is due: those a provide interval old,
    /// as many as there is room for, marked announced. `joined`: whether there is anyone to
    /// announce to (if not, the check comes again soon). `own` lists the keys the store names
    /// this node the provider of, taken in once (after a restart).
    pub fn due(
        &mut self,
        now: Instant,
        joined: bool,
        own: impl FnOnce() -> Vec<RecordKey>,
    ) -> Vec<RecordKey> {
        if self.next_check().is_none_or(|at| now < at) {
            return Vec::new();
        }
        self.last_check = Some(now);
        self.backlog = false;
        let every = self.interval / REPROVIDE_CHECKS_PER_INTERVAL;
        if !joined {
            let retry = REPROVIDE_RETRY.min(every);
            self.last_check = Some(now.checked_sub(every - retry).unwrap_or(now));
            return Vec::new();
        }
        if !self.resumed {
            self.resumed = true;
            let due = now.checked_sub(self.interval).unwrap_or(now);
            for key in own() {
                if self.keys.len() >= MAX_PROVIDED_KEYS {
                    break;
                }
                self.keys.entry(key).or_insert(due);
            }
        }
        let room = MAX_REPROVIDE_QUERIES.saturating_sub(self.running.len());
        // The longest unannounced first: they are the nearest to expiring on their holders.
        let mut due: Vec<(Instant, RecordKey)> = self
            .keys
            .iter()
            .filter(|(_, last)| now.saturating_duration_since(**last) >= self.interval)
            .map(|(k, last)| (*last, k.clone()))
            .collect();
        due.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_ref().cmp(b.1.as_ref())));
        self.backlog = due.len() > room;
        let due: Vec<RecordKey> = due.into_iter().take(room).map(|(_, k)| k).collect();
        for key in &due {
            self.keys.insert(key.clone(), now);
        }
        due
    }

    /// A re-announcement started as query `id`.
    pub fn announcing(&mut self, id: QueryId) {
        self.running.insert(id);
    }

    /// Query `id` ended (a re-announcement or not).
    pub fn ended(&mut self, id: &QueryId) {
        self.running.remove(id);
    }
}
