//! The core's periodic work and the copies it makes on its own: replication and republish, expiry,
//! routing refresh, hand-off to closer newcomers, and caching under demand.

use std::time::{Duration, Instant};

use dht_behaviours::point;
use dht_behaviours::store::is_own;
use libp2p::kad::Record;
use libp2p::{Multiaddr, PeerId};
use rand::Rng;

use super::Core;
use super::context::Cx;
use super::queries::Purpose;
use super::records::{CACHE_TTL_DIVISOR, Source};
use super::routing::RoutingTable;
use super::upkeep::{MAX_HANDOFF_PER_PEER, REPLICATION_PER_BATCH};

/// Random keys tried to find one in a given bucket when refreshing it (keys are hashed).
pub const REFRESH_KEY_TRIES: usize = 16;
/// The farthest bucket: `ilog2` of the largest XOR distance between 256-bit keys.
const MAX_BUCKET: u32 = 255;

/// A copy of a local record for another node: our own published copy has no expiry, the copy sent
/// gets the TTL; other records keep theirs (sending never extends a life).
pub fn outgoing_copy(mut record: Record, now: Instant, ttl: Duration) -> Record {
    record.expires = record.expires.or(Some(now + ttl));
    record
}

impl Core {
    /// When the periodic work next falls due: the sweep, replication, the join's follow-ups and
    /// refreshes, the bootstrap dials, the re-announcements.
    pub(super) fn next_maintenance(&self) -> Instant {
        let soonest = self
            .upkeep
            .next_wakeup()
            .min(self.joining.next_wakeup(!self.routing.is_empty()));
        self.provided
            .next_check()
            .map_or(soonest, |at| soonest.min(at))
    }

    pub(super) fn maintain(&mut self, cx: &mut Cx) {
        if self.upkeep.sweep_due(cx.now) {
            self.records.sweep(cx.now);
            self.standing.silence.sweep(cx.now);
            self.budget.prune(cx.now);
            self.broadcast.prune(cx.now);
        }
        self.replicate(cx);
        self.reprovide(cx);
        if self.joining.follow_up_due(cx.now) {
            // Our own id only: the buckets were refreshed after the join's lookup.
            let target = self.local.to_bytes();
            self.start(target, Purpose::Refresh, cx);
        }
        if self.joining.refresh_due(cx.now) {
            let target = self.local.to_bytes();
            self.start(target.clone(), Purpose::Refresh, cx);
            // A peer we joined through that left the table is a sign of trouble (a partition, a
            // mass failure): a full far bucket keeps its old contacts, so a table can end up
            // holding one side of a healed split only, and lookups through such tables never
            // cross. A second lookup of our own id starts from the missing bootstrap peers alone,
            // which brings their side's nodes near our id into our near buckets (and us into
            // theirs, as we ask them).
            let missing = self.joining.missing_from(&self.routing);
            if !missing.is_empty() {
                self.queries.start(
                    target,
                    Purpose::Refresh,
                    missing,
                    false,
                    cx.now,
                    &mut cx.events,
                );
            }
            self.refresh_buckets(cx);
        }
    }

    /// Kademlia's replication, on our lookups: every replication interval each record held here is
    /// re-stored on the k nodes now closest to its key, so that copies follow churn. This node's
    /// own records go with a renewed life (a republish); others keep their expiry. A record a peer
    /// re-stored here within the interval is skipped: that peer has just done the work (the
    /// Kademlia paper's rule, which saves k-fold re-stores). Paced in batches.
    fn replicate(&mut self, cx: &mut Cx) {
        if !self.config.serving {
            return;
        }
        let records = &self.records;
        let due = self.upkeep.batch_due(cx.now, || {
            let mut keys: Vec<_> = records.live(cx.now).map(|r| r.key.clone()).collect();
            // Store order is not deterministic; the simulator needs it to be.
            keys.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
            keys
        });
        if !due {
            return;
        }
        let interval = self.config.timing.replication_interval;
        let ttl = self.config.timing.record_ttl;
        let mut started = 0;
        while started < REPLICATION_PER_BATCH {
            let Some(key) = self.upkeep.next_key() else {
                break;
            };
            let Some(record) = self.records.get(&key, cx.now).cloned() else {
                continue;
            };
            let own = is_own(&record, &self.local);
            if !own
                && self
                    .records
                    .received_since(&key, cx.now.checked_sub(interval))
            {
                continue;
            }
            started += 1;
            self.stats.restores += 1;
            if own {
                // Mirrors keep a copy only as long as it lives: they are refreshed with holders.
                cx.kept.push((key.clone(), None));
            }
            let purpose = Purpose::Store {
                record: outgoing_copy(record, cx.now, ttl),
            };
            let id = self.start(key.to_vec(), purpose, cx);
            self.upkeep.restoring(id);
        }
    }

    /// Lookups of a random key in each bucket beyond the nearest that is not full: full buckets
    /// are kept fresh by the traffic through them (a failing entry makes room for the next peer
    /// met), sparse ones need looking for. Keys are hashed, so a key in a given bucket is found by
    /// trying [`REFRESH_KEY_TRIES`] random ones; a bucket none of them falls in is left to the
    /// next refresh (a bucket that near holds few peers, and the lookup of our own id walks
    /// through it), rather than looking up a key that landed elsewhere: that lookup would refresh
    /// a far, full bucket again (at 1,000 simulated nodes, most of a refresh's traffic).
    pub(super) fn refresh_buckets(&mut self, cx: &mut Cx) {
        let local = point::of_peer(&self.local);
        let sparse: Vec<u32> = sparse_buckets(&self.routing, self.config.bucket_size());
        for bucket in sparse {
            let found = (0..REFRESH_KEY_TRIES).find_map(|_| {
                let key: [u8; 32] = self.rng.r#gen();
                let landed = point::ilog2(point::distance(local, point::of_key(&key)));
                (landed == Some(bucket)).then_some(key)
            });
            if let Some(key) = found {
                self.start(key.to_vec(), Purpose::RefreshBucket, cx);
            }
        }
    }

    /// Kademlia's hand-off: a new peer closer to a key than this node gets the record now, not at
    /// the next replication round. At most [`MAX_HANDOFF_PER_PEER`] records go at once, and a peer
    /// gets them at most once per replication interval: one that leaves the table and comes back
    /// (a flapping link, a peer identify keeps naming) would otherwise be sent them every time,
    /// and replication covers what changed in between.
    pub(super) fn hand_off(&mut self, peer: PeerId, cx: &mut Cx) {
        if !self.config.serving || self.records.is_empty() {
            return;
        }
        if !self.upkeep.hand_off(peer, cx.now) {
            return;
        }
        let here = point::of_peer(&self.local);
        let newcomer = point::of_peer(&peer);
        let ttl = self.config.timing.record_ttl;
        let k = self.config.k;
        let routing = &self.routing;
        // Closer than this node, and among the k closest this node knows: a peer closer than us
        // but outside the k closest would hold a copy no lookup asks for. And only from a node
        // that was itself among them before the newcomer came (k + 1 with the newcomer, who is
        // closer: the k-th holder, whose place the newcomer takes, hands its copy on): a node
        // holding a copy it is no longer responsible for (the closest set moved on under churn)
        // would otherwise hand it to every newcomer nearer than itself, and those on again
        // (3,000 simulated nodes over 48 h ended with 178 copies a value, not about 20, once
        // tables took newcomers in freely).
        let mut records: Vec<Record> = self
            .records
            .live(cx.now)
            .filter(|r| {
                let target = point::of_key(r.key.as_ref());
                point::distance(target, newcomer) < point::distance(target, here)
                    && routing.among_closest_to(target, &peer, k)
                    && routing.local_among_closest_to(target, k + 1)
            })
            .map(|r| outgoing_copy(r.clone(), cx.now, ttl))
            .collect();
        records.sort_unstable_by(|a, b| a.key.as_ref().cmp(b.key.as_ref()));
        records.truncate(MAX_HANDOFF_PER_PEER);
        let addrs = self
            .routing
            .get(&peer)
            .map(|e| e.addrs.clone())
            .unwrap_or_default();
        for record in records {
            self.stats.handed_off += 1;
            self.queries
                .put_once(peer, addrs.clone(), record, cx.now, &mut cx.events);
        }
    }

    /// A fetch under demand found where to cache: the closest peer that lacked the value gets a
    /// short-lived copy, or this node keeps one when every peer asked held it.
    pub(super) fn cache(
        &mut self,
        mut record: Record,
        peer: Option<(PeerId, Vec<Multiaddr>)>,
        cx: &mut Cx,
    ) {
        self.stats.cached += 1;
        match peer {
            Some((peer, addrs)) => {
                let cap = cx.now + self.config.timing.record_ttl / CACHE_TTL_DIVISOR;
                record.expires = Some(record.expires.map_or(cap, |e| e.min(cap)));
                self.queries
                    .put_once(peer, addrs, record, cx.now, &mut cx.events);
            }
            None if self.config.serving => {
                let _ = self.records.admit(Source::Cache, record, cx.now);
            }
            None => {}
        }
    }

    /// The clock's tick: requests past their deadline fail, blocks and back-offs run out, and
    /// whatever periodic work is due is done.
    pub(super) fn tick(&mut self, cx: &mut Cx) {
        for peer in self.queries.tick(cx.now, &mut cx.events) {
            self.failed(&peer, cx);
        }
        self.standing.throttled.sweep(cx.now);
        self.standing_tick(cx);
        self.maintain(cx);
        self.joining.tick(&self.routing, cx);
        self.mirrors.feed(&self.records, cx);
        self.commands.expire(&self.routing, cx);
    }
}

/// The buckets beyond the nearest non-empty one that hold fewer than `size` peers, nearest first,
/// empty ones included: a peer in a bucket this node has never heard from is found only by
/// looking there. The nearest non-empty bucket is left out (the lookup of this node's own id
/// covers it).
fn sparse_buckets(table: &RoutingTable, size: usize) -> Vec<u32> {
    let sizes: std::collections::HashMap<u32, usize> = table.bucket_sizes().collect();
    let Some(&nearest) = sizes.keys().min() else {
        return Vec::new();
    };
    (nearest + 1..=MAX_BUCKET)
        .filter(|log| sizes.get(log).copied().unwrap_or(0) < size)
        .collect()
}
