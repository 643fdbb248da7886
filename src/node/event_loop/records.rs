//! Records that peers hand us: inbound kad requests, and the mirror protocol in both directions.

use super::*;

impl EventLoop {
    /// `peer` speaks the mirror protocol: it gets every record held here, at a steady pace.
    pub(super) fn mirror_seen(&mut self, peer: PeerId) {
        if self.config.client_mode {
            return;
        }
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let keys: Vec<RecordKey> = store.records().map(|r| r.key.clone()).collect();
        let held = keys.len();
        if self.mirror_feed.add_mirror(peer, keys) {
            info!(%peer, records = held, "mirror node found; sending it the records held here");
        }
    }

    /// Sends the mirrors the next records due, read from the store as they are now.
    pub(super) fn feed_mirrors(&mut self) {
        let now = Instant::now();
        let ttl = self.config.timing.record_ttl;
        for handoff in self.mirror_feed.due() {
            let behaviour = self.swarm.behaviour_mut();
            let Some(record) = behaviour
                .kad
                .store_mut()
                .get(&handoff.key)
                .map(|r| mirror_copy(&r, now, ttl))
            else {
                continue;
            };
            let addrs = self
                .mirror_addrs
                .get(&handoff.peer)
                .cloned()
                .unwrap_or_default();
            let id = behaviour
                .mirror
                .send_request_with_addresses(&handoff.peer, record, addrs);
            self.mirror_feed.sent(id, handoff);
            self.counters.records_mirrored += 1;
        }
    }

    /// The mirror protocol: a mirror stores what it is handed (validated, within its store's
    /// limits, never living longer than the sender's copy nor than the TTL); a sender only logs.
    pub(super) fn on_mirror(&mut self, event: request_response::Event<MirrorRecord, ()>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let behaviour = self.swarm.behaviour_mut();
                if behaviour.mirror.send_response(channel, ()).is_err() {
                    debug!(%peer, "mirror acknowledgement not sent: the sender is gone");
                }
                self.counters.stores_served += 1;
                if let Err(e) = validate_record(&request.key, &request.value) {
                    self.counters.records_refused += 1;
                    warn!(%peer, "refused a mirrored record: {e}");
                    self.offend(peer, offence_for(&e));
                    return;
                }
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let key = RecordKey::from(request.key);
                let expires =
                    Instant::now() + request.expires_in.min(self.config.timing.record_ttl);
                // Our own copy stays; so does a copy that outlives the one handed over. Every holder
                // feeds the mirror, each with the life its own copy has left: a holder's older copy
                // must not shorten the publisher's fresh one (on a loaded machine, enough for the
                // mirror's copy to be hidden by the expiry margin until the next refresh).
                let keeps =
                    |r: &Record| is_own(r, &self.local) || r.expires.is_none_or(|a| a >= expires);
                if store.get(&key).is_some_and(|r| keeps(&r)) {
                    return;
                }
                let mut record = Record::new(key, request.value);
                record.expires = Some(expires);
                if let Err(e) = store.put(record) {
                    self.counters.records_refused += 1;
                    debug!(%peer, "could not keep a mirrored record: {e}");
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                if is_malformed(&error) {
                    self.offend(peer, Offence::MalformedMessage);
                }
                debug!(%peer, "mirror request failed: {error}");
            }
            request_response::Event::Message {
                message: request_response::Message::Response { request_id, .. },
                ..
            } => self.mirror_feed.acknowledged(&request_id),
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, "record not mirrored ({error}); retrying unless out of tries");
                self.mirror_feed.failed(&request_id);
            }
            other => trace!(?other, "mirror event"),
        }
    }

    pub(super) fn on_kad(&mut self, event: kad::Event) {
        match event {
            // kad's own queries: bootstrap, its replication job, hand-offs and cache writes.
            kad::Event::OutboundQueryProgressed { result, .. } => {
                trace!(?result, "kad query progressed");
            }
            kad::Event::InboundRequest { request } => self.on_inbound_kad(request),
            kad::Event::RoutingUpdated {
                peer, is_new_peer, ..
            } => {
                if self.silence.is_silent(&peer, Instant::now()) {
                    // Named by someone else's lookup answer, or a stream opened: not an answer.
                    trace!(%peer, "a silent peer stays out of the routing table");
                    self.swarm.behaviour_mut().kad.remove_peer(&peer);
                    return;
                }
                if is_new_peer {
                    debug!(%peer, "peer added to the routing table");
                    self.hand_off_records(peer);
                }
            }
            other => trace!(?other, "kad event"),
        }
    }

    pub(super) fn on_inbound_kad(&mut self, request: InboundRequest) {
        match request {
            InboundRequest::PutRecord {
                source,
                record: Some(record),
                ..
            } => {
                self.counters.stores_served += 1;
                if let Err(e) = validate_record(record.key.as_ref(), &record.value) {
                    self.counters.records_refused += 1;
                    warn!(peer = %source, "refused a record: {e}");
                    self.offend(source, offence_for(&e));
                    return;
                }
                // A mirror takes everything; its store limits still hold.
                let mirror = self.config.mirror;
                let bytes = record.key.as_ref().len() + record.value.len();
                if !mirror && !self.quota.admits(&source, &record.key, bytes) {
                    self.counters.records_refused += 1;
                    debug!(peer = %source, "refused a record: the peer's quota is used up");
                    return;
                }
                let key = record.key.clone();
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let held = store.get(&key);
                // Our own published copy is the one we republish: a copy sent back to us (from a
                // mirror, say, which does not keep publishers) must not replace it.
                if held.as_ref().is_some_and(|r| is_own(r, &self.local)) {
                    return;
                }
                // kad shortens the life of a record stored far from its key; a mirror, far from
                // most keys, keeps the longer life it was given by the mirror protocol (no expiry
                // is the longest).
                let outlives = |r: &Record| {
                    r.expires
                        .is_none_or(|a| record.expires.is_some_and(|b| a >= b))
                };
                if self.config.mirror && held.as_ref().is_some_and(|r| outlives(r)) {
                    return;
                }
                let new = held.is_none();
                let mirrored = new && self.mirror_feed.has_mirrors();
                match store.put(record) {
                    Ok(()) => {
                        if mirrored {
                            self.mirror_feed.record_added(&key, Some(source));
                        }
                        if !mirror {
                            self.quota.stored(source, key, bytes);
                        }
                    }
                    Err(e) => {
                        self.counters.records_refused += 1;
                        warn!(peer = %source, "could not store a record: {e}");
                    }
                }
            }
            InboundRequest::AddProvider {
                record: Some(record),
            } => {
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .add_provider(record)
                {
                    debug!("provider record not stored: {e}");
                }
            }
            InboundRequest::GetRecord { .. } => self.counters.fetches_served += 1,
            other => trace!(?other, "inbound kad request"),
        }
    }
}
