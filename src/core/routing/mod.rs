//! The routing table: Kademlia's k-buckets, as a plain data structure with no clock of its own.
//!
//! Policy, as the paper and go-libp2p-kad-dht (#45, #283) have it: a full bucket keeps its old
//! contacts while they answer (old peers are the likeliest to stay), so a newcomer only takes the
//! place of an entry that has stopped answering. An entry that failed a request is *stale*: it is
//! still used, but the next newcomer for its bucket replaces it, and [`MAX_FAILURES`] failures in a row
//! remove it, so that a dead peer leaves within a few requests, not at the next refresh.
//! A full bucket's old contacts are not taken on trust, though: when a newcomer finds the bucket
//! full, one of its entries (each in turn, at most one per [`BUCKET_CHECK_INTERVAL`]) is named
//! for a liveness check (the paper pings the least recently seen contact; entries here keep no
//! clock, so they take turns). Without it, a far
//! bucket that nothing asks fills with departed peers under churn, which keeps every live
//! newcomer out and hands only the dead to other nodes' lookups: at 3,000 simulated nodes over
//! 48 h, fetches ended "not found" because every peer that answers named for a key had left.
//!
//! Address diversity ([`diversity`]): at most [`MAX_GROUP_PER_BUCKET`] peers of one public
//! network in a bucket and [`MAX_GROUP_PER_TABLE`] in the table; a newcomer beyond is not kept
//! ([`Inserted::Crowded`]).

pub mod diversity;

use std::time::{Duration, Instant};

use libp2p::kad::KBucketKey;
use libp2p::{Multiaddr, PeerId};

pub use dht_behaviours::point::{Point, distance};
use dht_behaviours::point::{ilog2, of_peer};

use diversity::{Group, GroupCounts, MAX_GROUP_PER_BUCKET, MAX_GROUP_PER_TABLE, group_of};

/// Requests in a row a peer may fail before it leaves the table.
pub const MAX_FAILURES: u8 = 2;
/// A full bucket names one of its entries for a liveness check at most this often, and only
/// when a newcomer knocks: a bucket of k is gone through in k intervals (20 minutes at k = 20),
/// at most one check a minute per bucket, about 15 for a table of 10,000 nodes.
pub const BUCKET_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The point of a hashed kad key.
pub fn point<T>(key: &KBucketKey<T>) -> Point {
    let bytes = key.hashed_bytes();
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 16];
    hi.copy_from_slice(&bytes[..16]);
    lo.copy_from_slice(&bytes[16..32]);
    (u128::from_be_bytes(hi), u128::from_be_bytes(lo))
}

/// The indices of `buckets` buckets in the order of their distance range from a target at
/// `from_local` (the target's distance from this node), nearest range first. Bucket `i` holds
/// distances from us with highest bit `b = 255 - i`; its peers sit at `from_local xor 2^b` in
/// every bit from `b` up (see [`RoutingTable::closest`]). Flipping a set bit of `from_local`
/// lowers the value, the more the higher the bit; flipping a clear one raises it, the less the
/// lower the bit. So: buckets whose bit of `from_local` is set, highest bit first, then those
/// whose bit is clear, lowest bit first. No sort and no allocation.
fn bucket_order(from_local: Point, buckets: usize) -> impl Iterator<Item = usize> {
    let bit = move |i: usize| {
        let b = 255 - i as u32;
        if b >= 128 {
            from_local.0 >> (b - 128) & 1 == 1
        } else {
            from_local.1 >> b & 1 == 1
        }
    };
    let set = (0..buckets).filter(move |&i| bit(i));
    let clear = (0..buckets).rev().filter(move |&i| !bit(i));
    set.chain(clear)
}

/// One peer of the table.
#[derive(Debug, Clone)]
pub struct Entry {
    peer: PeerId,
    point: Point,
    /// Where it listens (the addresses it told us, at most
    /// [`dht_behaviours::config::MAX_ADDRS_PER_PEER`]).
    pub addrs: Vec<Multiaddr>,
    /// Requests failed in a row since its last answer.
    pub failures: u8,
    /// Its address group when it came in (kept: a peer cannot move out of its group's bound by
    /// announcing other addresses later).
    group: Option<Group>,
}

impl Entry {
    /// Whether this is `peer`, at point `p`: points compare as two integers, so other entries
    /// are told apart without comparing ids (this runs for every message a node receives).
    fn is(&self, p: Point, peer: &PeerId) -> bool {
        self.point == p && self.peer == *peer
    }

    /// The peer's id.
    pub fn peer(&self) -> &PeerId {
        &self.peer
    }
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The peer is new in the table.
    New,
    /// The peer was there already (its addresses were updated).
    Known,
    /// A stale entry made room for the peer.
    Replaced(PeerId),
    /// The bucket is full of answering peers: the newcomer is not kept. `check` names an entry
    /// whose liveness the caller should check (see the module's doc), when one is due.
    Full {
        /// The entry to check, and its addresses.
        check: Option<(PeerId, Vec<Multiaddr>)>,
    },
    /// The bucket or the table holds as many peers of the newcomer's address group as it may.
    Crowded,
    /// The peer is this node.
    Local,
}

/// k-buckets around `local`. Buckets are kept from the farthest (index 0: distance 2^255 and up)
/// inwards, grown as peers arrive, so a table costs what its peers cost and no more.
#[derive(Debug)]
pub struct RoutingTable {
    local: Point,
    k: usize,
    /// `buckets[i]` holds the peers whose distance has `ilog2 == 255 - i`.
    buckets: Vec<Vec<Entry>>,
    /// Beside each bucket: the last liveness check it asked for, and which entry is next.
    checks: Vec<(Option<Instant>, usize)>,
    len: usize,
    groups: GroupCounts,
}

impl RoutingTable {
    /// An empty table for `local`, with `k` peers per bucket.
    pub fn new(local: PeerId, k: usize) -> Self {
        Self {
            local: of_peer(&local),
            k: k.max(1),
            buckets: Vec::new(),
            checks: Vec::new(),
            len: 0,
            groups: GroupCounts::default(),
        }
    }

    /// Peers in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index of the bucket `p` falls in, or `None` for this node itself.
    fn index(&self, p: Point) -> Option<usize> {
        let log = ilog2(distance(self.local, p))?;
        Some(255 - log as usize)
    }

    /// The bucket `peer` belongs in, and its point.
    fn index_of(&self, peer: &PeerId) -> Option<(usize, Point)> {
        let p = of_peer(peer);
        Some((self.index(p)?, p))
    }

    /// Adds `peer` (or updates its addresses), by the policy in the module's doc. An answer or a
    /// request from the peer also clears its failures. No liveness check is asked for.
    pub fn insert(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> Inserted {
        self.insert_checking(peer, addrs, None)
    }

    /// [`RoutingTable::insert`] at `now`: a full bucket names an entry to check when one is due.
    pub fn insert_at(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) -> Inserted {
        self.insert_checking(peer, addrs, Some(now))
    }

    fn insert_checking(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        now: Option<Instant>,
    ) -> Inserted {
        let p = of_peer(&peer);
        let Some(i) = self.index(p) else {
            return Inserted::Local;
        };
        if self.buckets.len() <= i {
            self.buckets.resize_with(i + 1, Vec::new);
            self.checks.resize(i + 1, (None, 0));
        }
        let k = self.k;
        let bucket = &mut self.buckets[i];
        if let Some(e) = bucket.iter_mut().find(|e| e.is(p, &peer)) {
            e.failures = 0;
            if !addrs.is_empty() {
                e.addrs = addrs;
            }
            return Inserted::Known;
        }
        let group = group_of(&addrs);
        if let Some(g) = group
            && (bucket.iter().filter(|e| e.group == Some(g)).count() >= MAX_GROUP_PER_BUCKET
                || self.groups.get(&g) >= MAX_GROUP_PER_TABLE)
        {
            return Inserted::Crowded;
        }
        let entry = Entry {
            peer,
            point: p,
            addrs,
            failures: 0,
            group,
        };
        if bucket.len() < k {
            // A bucket holds at most k: room for k at once, not a doubling's worth of slack.
            bucket.reserve_exact(k - bucket.len());
            bucket.push(entry);
            self.len += 1;
            self.groups.add(group);
            return Inserted::New;
        }
        match bucket.iter().position(|e| e.failures > 0) {
            Some(stale) => {
                let old = std::mem::replace(&mut bucket[stale], entry);
                self.groups.remove(old.group);
                self.groups.add(group);
                Inserted::Replaced(*old.peer())
            }
            None => {
                let (last, next) = &mut self.checks[i];
                let check = now
                    .filter(|now| last.is_none_or(|at| *now >= at + BUCKET_CHECK_INTERVAL))
                    .map(|now| {
                        *last = Some(now);
                        let e = &bucket[*next % bucket.len()];
                        *next = (*next + 1) % bucket.len();
                        (e.peer, e.addrs.clone())
                    });
                Inserted::Full { check }
            }
        }
    }

    /// Whether `peer` is in the table.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.get(peer).is_some()
    }

    /// The entry of `peer`.
    pub fn get(&self, peer: &PeerId) -> Option<&Entry> {
        let (i, p) = self.index_of(peer)?;
        self.buckets.get(i)?.iter().find(|e| e.is(p, peer))
    }

    /// A request to `peer` failed: it goes stale, and leaves after [`MAX_FAILURES`]. Returns its
    /// entry if it left.
    pub fn failed(&mut self, peer: &PeerId) -> Option<Entry> {
        let (i, p) = self.index_of(peer)?;
        let bucket = self.buckets.get_mut(i)?;
        let pos = bucket.iter().position(|e| e.is(p, peer))?;
        bucket[pos].failures = bucket[pos].failures.saturating_add(1);
        if bucket[pos].failures < MAX_FAILURES {
            return None;
        }
        self.len -= 1;
        let entry = bucket.remove(pos);
        self.groups.remove(entry.group);
        Some(entry)
    }

    /// Removes `peer` (blocked, unreachable, or gone for good). Returns its entry if it was there.
    pub fn remove(&mut self, peer: &PeerId) -> Option<Entry> {
        let (i, p) = self.index_of(peer)?;
        let bucket = self.buckets.get_mut(i)?;
        let pos = bucket.iter().position(|e| e.is(p, peer))?;
        self.len -= 1;
        let entry = bucket.remove(pos);
        self.groups.remove(entry.group);
        Some(entry)
    }

    /// The `n` peers of the table closest to `target`, closest first. Whole buckets are taken in
    /// the order of their distance range and only the entries taken are sorted, so a lookup of a
    /// table of hundreds costs about `n` distances, not one per entry (answering FIND_NODE and
    /// seeding lookups are the hottest paths of a busy node and of the simulator).
    ///
    /// Why the order holds: a peer `p` of the bucket with `ilog2(d(local, p)) = b` is at
    /// `d(p, t) = d(local, t) xor d(local, p)`, which agrees with `d(local, t) xor 2^b` on every
    /// bit from `b` up; so the buckets' ranges are disjoint, ordered by that value.
    pub fn closest<T>(&self, target: &KBucketKey<T>, n: usize) -> Vec<&Entry> {
        self.closest_to(point(target), n)
    }

    /// [`RoutingTable::closest`] for a point already hashed.
    pub fn closest_to(&self, t: Point, n: usize) -> Vec<&Entry> {
        let from_local = distance(t, self.local);
        let mut out: Vec<&Entry> = Vec::with_capacity(n.min(self.len));
        let mut bucket: Vec<(Point, &Entry)> = Vec::with_capacity(self.k);
        for i in bucket_order(from_local, self.buckets.len()) {
            if out.len() >= n {
                break;
            }
            bucket.clear();
            bucket.extend(self.buckets[i].iter().map(|e| (distance(t, e.point), e)));
            let room = n - out.len();
            if bucket.len() > room {
                bucket.select_nth_unstable_by_key(room, |(d, _)| *d);
                bucket.truncate(room);
            }
            bucket.sort_unstable_by_key(|(d, _)| *d);
            out.extend(bucket.iter().map(|(_, e)| *e));
        }
        out
    }

    /// Whether no bucket is full: the table kept every peer it heard of, as in a network small
    /// enough (below about twice a bucket's size) that its farthest half fits one bucket. A
    /// bucket with room is no proof of knowing its range (a node hears of most peers through
    /// lookups, and in a large network its middle buckets stay sparse: seen in the simulator at
    /// 1,000 nodes, where a walk through non-full buckets named the wrong 20 peers for a key);
    /// a table with no full bucket at all is the case where the closest known are, stale entries
    /// aside, the closest.
    pub fn is_unsaturated(&self) -> bool {
        self.buckets.iter().all(|b| b.len() < self.k)
    }

    /// Whether `peer` and this node are both among the `n` closest to `target` that this node
    /// knows (itself counted): a fellow holder of a key with replication factor `n`.
    pub fn both_among_closest<T>(&self, target: &KBucketKey<T>, peer: &PeerId, n: usize) -> bool {
        let t = point(target);
        let own = distance(t, self.local);
        let closest = self.closest(target, n);
        let closer = closest
            .iter()
            .filter(|e| distance(t, e.point) < own)
            .count();
        closer < n && closest.iter().take(n - 1).any(|e| e.peer == *peer)
    }

    /// Every entry, farthest bucket first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flatten()
    }

    /// The `ilog2` of the distance of each non-empty bucket and its peers, nearest first.
    pub fn buckets(&self) -> impl Iterator<Item = (u32, &[Entry])> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| !b.is_empty())
            .map(|(i, b)| (255 - i as u32, b.as_slice()))
    }

    /// The `ilog2` of the distance of each non-empty bucket and its number of peers, farthest
    /// first.
    pub fn bucket_sizes(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(i, b)| (255 - i as u32, b.len()))
    }

    /// Whether `peer` would be among the `n` closest to `target` that this table knows, this node
    /// counted: the test of a hand-off (should a newcomer hold a record we hold?).
    pub fn among_closest_to(&self, t: Point, peer: &PeerId, n: usize) -> bool {
        let d = distance(t, of_peer(peer));
        let closer = self
            .entries()
            .filter(|e| e.peer != *peer && distance(t, e.point) < d)
            .take(n)
            .count();
        let local_closer = usize::from(distance(t, self.local) < d);
        closer + local_closer < n
    }

    /// Whether this node is among the `n` closest to `target` that it knows: one of a key's
    /// holders by its own table.
    pub fn local_among_closest_to(&self, t: Point, n: usize) -> bool {
        let own = distance(t, self.local);
        self.entries()
            .filter(|e| distance(t, e.point) < own)
            .take(n)
            .count()
            < n
    }

    /// Heap bytes the table holds (entries and their address lists), for memory reports.
    pub fn heap_bytes(&self) -> usize {
        let entries: usize = self
            .buckets
            .iter()
            .map(|b| b.capacity() * std::mem::size_of::<Entry>())
            .sum();
        let addrs: usize = self
            .entries()
            .map(|e| e.addrs.capacity() * std::mem::size_of::<Multiaddr>())
            .sum();
        self.buckets.capacity() * std::mem::size_of::<Vec<Entry>>()
            + self.checks.capacity() * std::mem::size_of::<(Option<Instant>, usize)>()
            + entries
            + addrs
            + self.groups.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static NEXT_SEED: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
    }

    /// `n` distinct peers, the same ones in every run of a test (each test runs on its own
    /// thread): where a test depends on how ids fall into buckets, a random draw would make it
    /// fail now and then (the diversity test below failed once on CI).
    fn peers(n: usize) -> Vec<PeerId> {
        (0..n)
            .map(|_| {
                let seed = NEXT_SEED.get();
                NEXT_SEED.set(seed + 1);
                crate::identity::from_seed(seed).public().to_peer_id()
            })
            .collect()
    }

    #[test]
    fn a_full_bucket_keeps_answering_peers_and_takes_newcomers_for_stale_ones() {
        let local = peers(1)[0];
        let mut table = RoutingTable::new(local, 2);
        // The farthest bucket holds half of all ids: fill it, then offer one more.
        let far: Vec<PeerId> = peers(200)
            .into_iter()
            .filter(|p| {
                KBucketKey::from(local)
                    .distance(&KBucketKey::from(*p))
                    .ilog2()
                    == Some(255)
            })
            .take(4)
            .collect();
        assert_eq!(table.insert(far[0], vec![]), Inserted::New);
        assert_eq!(table.insert(far[1], vec![]), Inserted::New);
        assert_eq!(table.insert(far[2], vec![]), Inserted::Full { check: None });
        assert!(
            table.failed(&far[0]).is_none(),
            "one failure makes it stale, not gone"
        );
        assert_eq!(table.insert(far[2], vec![]), Inserted::Replaced(far[0]));
        assert_eq!(table.len(), 2);
        assert!(table.failed(&far[1]).is_none());
        assert!(
            table.failed(&far[1]).is_some(),
            "the second failure in a row removes it"
        );
        assert_eq!(table.len(), 1);
        assert_eq!(table.insert(local, vec![]), Inserted::Local);
    }

    /// A newcomer at a full bucket gets one of its entries checked, each in turn, at most one per
    /// interval; a checked entry that proves dead (and leaves) makes room for the next newcomer.
    #[test]
    fn a_full_bucket_has_its_entries_checked_in_turn_when_newcomers_knock() {
        let local = peers(1)[0];
        let mut table = RoutingTable::new(local, 2);
        let far: Vec<PeerId> = peers(400)
            .into_iter()
            .filter(|p| ilog2(distance(of_peer(&local), of_peer(p))) == Some(255))
            .take(6)
            .collect();
        let t0 = Instant::now();
        assert_eq!(table.insert_at(far[0], vec![], t0), Inserted::New);
        assert_eq!(table.insert_at(far[1], vec![], t0), Inserted::New);
        let checked = |i: Inserted| match i {
            Inserted::Full { check } => check.map(|(p, _)| p),
            other => panic!("expected a full bucket, got {other:?}"),
        };
        assert_eq!(checked(table.insert_at(far[2], vec![], t0)), Some(far[0]));
        // Within the interval: no second check, however many knock.
        let soon = t0 + BUCKET_CHECK_INTERVAL / 2;
        assert_eq!(checked(table.insert_at(far[3], vec![], soon)), None);
        assert_eq!(checked(table.insert_at(far[4], vec![], soon)), None);
        // The next interval checks the next entry.
        let later = t0 + BUCKET_CHECK_INTERVAL;
        assert_eq!(
            checked(table.insert_at(far[3], vec![], later)),
            Some(far[1])
        );
        // The check found far[1] gone: it leaves, and the next newcomer takes its place.
        assert!(table.remove(&far[1]).is_some());
        assert_eq!(table.insert_at(far[5], vec![], later), Inserted::New);
        assert!(table.contains(&far[5]) && table.contains(&far[0]));
        // The plain insert never asks for a check.
        let again = t0 + 10 * BUCKET_CHECK_INTERVAL;
        assert_eq!(table.insert(far[2], vec![]), Inserted::Full { check: None });
        assert!(checked(table.insert_at(far[2], vec![], again)).is_some());
    }

    /// A hundred identities behind one public address take at most two places of a bucket and
    /// ten of the table; as many on 127.0.0.1 or a LAN are all kept (failed on the old code,
    /// which kept every one that found room).
    #[test]
    fn one_network_gets_a_bounded_share_of_the_table_and_local_networks_are_free() {
        let local = peers(1)[0];
        let mut table = RoutingTable::new(local, 20);
        let one_host: Vec<Multiaddr> = vec!["/ip4/45.1.2.3/tcp/4001".parse().expect("addr")];
        let sybils = peers(100);
        let crowded = sybils
            .iter()
            .filter(|p| table.insert(**p, one_host.clone()) == Inserted::Crowded)
            .count();
        assert_eq!(table.len(), MAX_GROUP_PER_TABLE);
        assert_eq!(crowded, 100 - MAX_GROUP_PER_TABLE);
        assert!(table.bucket_sizes().all(|(_, n)| n <= MAX_GROUP_PER_BUCKET));
        // Another network still gets in; and a place freed is a place for the group again.
        let other = peers(1)[0];
        let elsewhere = vec!["/ip4/46.1.2.3/tcp/4001".parse().expect("addr")];
        assert_ne!(table.insert(other, elsewhere), Inserted::Crowded);
        let gone = *sybils
            .iter()
            .find(|p| table.contains(p))
            .expect("a sybil kept");
        table.remove(&gone);
        let outside: Vec<PeerId> = sybils
            .iter()
            .copied()
            .filter(|p| *p != gone && !table.contains(p))
            .collect();
        assert!(
            outside
                .iter()
                .any(|p| table.insert(*p, one_host.clone()) == Inserted::New)
        );
        assert_eq!(table.len(), MAX_GROUP_PER_TABLE + 1);
        for lan in ["/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.9/tcp/4001"] {
            let mut table = RoutingTable::new(local, 20);
            let addrs: Vec<Multiaddr> = vec![lan.parse().expect("addr")];
            for p in &sybils {
                table.insert(*p, addrs.clone());
            }
            assert!(
                table.len() > MAX_GROUP_PER_TABLE * 3,
                "{lan}: {}",
                table.len()
            );
        }
    }

    #[test]
    fn closest_matches_a_full_sort() {
        let local = peers(1)[0];
        let mut table = RoutingTable::new(local, 20);
        let all = peers(300);
        for p in &all {
            table.insert(*p, vec![]);
        }
        let kept: Vec<PeerId> = table.entries().map(|e| *e.peer()).collect();
        // Random keys, this node's own id, and ids of peers in the table (near and far).
        let mut targets: Vec<Vec<u8>> = (0..50u32).map(|i| i.to_be_bytes().to_vec()).collect();
        targets.push(local.to_bytes());
        targets.extend(kept.iter().step_by(7).map(|p| p.to_bytes()));
        for key in targets {
            let target = KBucketKey::new(key);
            let mut sorted = kept.clone();
            sorted.sort_by_key(|p| target.distance(&KBucketKey::new(p.to_bytes())));
            for n in [1, 3, 20, 60, kept.len() + 5] {
                let got: Vec<PeerId> = table
                    .closest(&target, n)
                    .into_iter()
                    .map(|e| *e.peer())
                    .collect();
                assert_eq!(got, sorted[..n.min(kept.len())].to_vec(), "n = {n}");
            }
        }
        let target = KBucketKey::new(b"target".to_vec());
        let got: Vec<PeerId> = table
            .closest(&target, 20)
            .into_iter()
            .map(|e| *e.peer())
            .collect();
        assert!(table.remove(&got[0]).is_some());
        assert!(!table.contains(&got[0]));
    }
}
