//! The mirror protocol in both directions: a serving node hands every record it holds to the
//! mirrors it meets, and a mirror keeps what it is handed (through the core's one admission
//! policy, with no per-peer quota).

use super::*;

/// A record as a mirror receives it: with the time it has left (our own published copy has no
/// expiry; the mirror's copy gets the TTL, as any holder's).
fn mirror_copy(record: &Record, now: Instant, ttl: Duration) -> MirrorRecord {
    MirrorRecord {
        key: record.key.to_vec(),
        value: record.value.clone(),
        expires_in: record
            .expires
            .map_or(ttl, |at| at.saturating_duration_since(now)),
    }
}

impl EventLoop {
    /// `peer` speaks the mirror protocol: it gets every record held here, at a steady pace.
    pub(super) fn mirror_seen(&mut self, peer: PeerId) {
        if self.config.client_mode {
            return;
        }
        let now = Instant::now();
        let keys: Vec<RecordKey> = self
            .core
            .records()
            .live(now)
            .map(|r| r.key.clone())
            .collect();
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
            let Some(record) = self
                .core
                .records()
                .get(&handoff.key, now)
                .map(|r| mirror_copy(r, now, ttl))
            else {
                continue;
            };
            let behaviour = self.swarm.behaviour_mut();
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

    /// The mirror protocol: a mirror keeps what it is handed (validated, within its store's
    /// limits, never living longer than the sender's copy nor than the TTL, never shortening a
    /// copy it holds); a sender only logs.
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
                let mut record = Record::new(RecordKey::from(request.key), request.value);
                // Never longer than the sender's copy nor than the TTL.
                let life = request.expires_in.min(self.config.timing.record_ttl);
                record.expires = Some(Instant::now() + life);
                self.drive(Input::Mirror { peer, record });
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
}
