//! The periodic jobs of the tick: deadlines, bootstrap rounds, expiry, persistence, replication,
//! routing refresh; and the hand-off and caching that keep copies where lookups look.

use super::*;

impl EventLoop {
    pub(super) fn on_tick(&mut self) {
        let now = Instant::now();
        let command = self.config.timing.command_timeout;
        self.tick_queries(now);
        for (_, (peer, reply)) in self.cmd_ops.take_expired(now) {
            self.commands_out.done(peer);
            self.send_queued_commands(peer);
            self.time_out(reply, "custom command", command);
        }
        for reply in self.commands_out.take_expired(now) {
            self.time_out(reply, "custom command", command);
        }
        for (_, (_, reply)) in self.info_ops.take_expired(now) {
            self.time_out(reply, "info", command);
        }
        for (_, reply) in self.dials.take_expired(now) {
            self.time_out(reply, "connect", command);
        }
        for peer in self.reputation.expired(now) {
            info!(%peer, "block ran out");
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        // kad's `kbuckets` yields only non-empty buckets.
        let joined = self.swarm.behaviour_mut().kad.kbuckets().next().is_some();
        if let Some(addrs) = self.bootstrap.due(now, joined) {
            self.dial_bootstrap(addrs);
        }
        if now.duration_since(self.last_sweep) >= EXPIRY_SWEEP {
            self.last_sweep = now;
            let gone = self
                .swarm
                .behaviour_mut()
                .kad
                .store_mut()
                .remove_expired(now);
            if gone > 0 {
                debug!(gone, "expired records removed");
                let store = self.swarm.behaviour_mut().kad.store_mut();
                self.quota.sweep(|k| store.get(k).is_some());
            }
            self.silence.sweep(now);
        }
        if let Some(writer) = self.writer.as_mut() {
            let store = self.swarm.behaviour_mut().kad.store_mut();
            if let Some(flushed) = writer.tick(store, &self.local, now) {
                self.counters.count_flush(&flushed);
            }
        }
        self.feed_mirrors();
        self.replicate(now);
        self.refresh_routing(now, false);
    }

    /// Dials bootstrap nodes, remembering each dial to tell its outcome.
    pub(super) fn dial_bootstrap(&mut self, addrs: Vec<Multiaddr>) {
        for addr in addrs {
            debug!(%addr, "dialing bootstrap node");
            let opts = DialOpts::from(addr.clone());
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => self.bootstrap.dialing(id, addr),
                Err(e) => warn!(%addr, "cannot dial bootstrap node: {e}"),
            }
        }
    }

    /// Kademlia's replication, on our lookups: every replication interval each record held here is
    /// re-stored on the k nodes now closest to its key, so that copies follow churn. A record this
    /// node published goes with a renewed life, as by a republish (so a key whose other holders all
    /// died is back on k nodes within one interval; once the publisher is gone, its copies expire
    /// one TTL later); other records keep their expiry, as re-storing never lengthens a life.
    /// Paced at [`REPLICATION_PER_TICK`] records per tick.
    pub(super) fn replicate(&mut self, now: Instant) {
        if self.config.client_mode {
            return;
        }
        if self.replication.is_empty()
            && now.duration_since(self.last_replication) >= self.config.timing.replication_interval
        {
            self.last_replication = now;
            let store = self.swarm.behaviour_mut().kad.store_mut();
            self.replication
                .extend(store.records().map(|r| r.key.clone()));
        }
        let ttl = self.config.timing.record_ttl;
        for _ in 0..REPLICATION_PER_TICK {
            let Some(key) = self.replication.pop_front() else {
                break;
            };
            let store = self.swarm.behaviour_mut().kad.store_mut();
            let Some(record) = store.get(&key).map(std::borrow::Cow::into_owned) else {
                continue;
            };
            let own = is_own(&record, &self.local);
            let purpose = Purpose::Store {
                record: outgoing_copy(record, now, ttl),
            };
            self.start_query(key.to_vec(), purpose, None);
            if own {
                // Mirrors keep a copy only as long as it lives: they are refreshed with holders.
                self.mirror_feed.record_added(&key, None);
            }
        }
    }

    /// Refreshes the routing table with our lookups, as Kademlia's bootstrap does: one for our own
    /// id (which finds and connects our closest neighbours), then one for a random key in each
    /// non-empty bucket beyond the nearest (best effort: keys are hashed, so a key landing in a far
    /// bucket is found by trying [`REFRESH_KEY_TRIES`] random ones), every bootstrap interval and on
    /// joining. The peers they reach enter the table as they connect. libp2p-kad still starts its
    /// own bootstrap while its table holds fewer than 20 peers (that switch is not public): such a
    /// query is ended here at once, so only ours run.
    pub(super) fn refresh_routing(&mut self, now: Instant, force: bool) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        for mut q in kad.iter_queries_mut() {
            if matches!(q.info(), kad::QueryInfo::Bootstrap { .. }) {
                q.finish();
            }
        }
        let due = now.duration_since(self.last_refresh) >= self.config.timing.bootstrap_interval;
        if !(force || due) {
            return;
        }
        let buckets: Vec<u32> = kad.kbuckets().filter_map(|b| b.range().0.ilog2()).collect();
        if buckets.is_empty() {
            return;
        }
        self.last_refresh = now;
        let missing = self.bootstrap.missing(|peer| {
            self.swarm
                .behaviour_mut()
                .kad
                .kbucket(*peer)
                .is_some_and(|b| b.iter().any(|e| e.node.key.preimage() == peer))
        });
        self.dial_bootstrap(missing);
        let local = KBucketKey::from(self.local);
        let mut targets = vec![self.local.to_bytes()];
        for bucket in buckets.into_iter().skip(1) {
            let mut key: [u8; 32] = rand::random();
            for _ in 1..REFRESH_KEY_TRIES {
                if local.distance(&KBucketKey::new(key.to_vec())).ilog2() == Some(bucket) {
                    break;
                }
                key = rand::random();
            }
            targets.push(key.to_vec());
        }
        for target in targets {
            self.start_query(target, Purpose::Refresh, None);
        }
    }

    /// When a cached copy made now expires: sooner than a stored one, and never later than the
    /// copy it was made from (caching must not lengthen a record's life).
    pub(super) fn cache_expiry(&self, original: Option<Instant>) -> Instant {
        let cached = Instant::now() + self.config.timing.record_ttl / CACHE_TTL_DIVISOR;
        original.map_or(cached, |e| e.min(cached))
    }

    /// Keeps a fetched value here as a cached copy (serving nodes only).
    pub(super) fn cache_here(&mut self, mut record: Record) {
        if self.config.client_mode {
            return;
        }
        record.expires = Some(self.cache_expiry(record.expires));
        if self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .put(record)
            .is_ok()
        {
            debug!("caching a fetched value here");
            self.counters.values_cached += 1;
        }
    }

    /// Kademlia's hand-off: a new peer closer to a key than this node gets the record now, not at
    /// the next replication round. At most [`MAX_HANDOFF_PER_PEER`] records go at once; the periodic
    /// replication covers the rest.
    pub(super) fn hand_off_records(&mut self, peer: PeerId) {
        if self.config.client_mode {
            return;
        }
        let here = KBucketKey::from(self.local);
        let newcomer = KBucketKey::from(peer);
        let now = Instant::now();
        let ttl = self.config.timing.record_ttl;
        let kad = &mut self.swarm.behaviour_mut().kad;
        let records: Vec<Record> = kad
            .store_mut()
            .records()
            .filter(|r| {
                let target = KBucketKey::new(r.key.to_vec());
                target.distance(&newcomer) < target.distance(&here)
            })
            .take(MAX_HANDOFF_PER_PEER)
            .map(|r| outgoing_copy(r.into_owned(), now, ttl))
            .collect();
        if !records.is_empty() {
            debug!(%peer, records = records.len(), "handing records to a closer newcomer");
        }
        for record in records {
            self.counters.records_handed_off += 1;
            kad.put_record_to(record, std::iter::once(peer), Quorum::One);
        }
    }
}
