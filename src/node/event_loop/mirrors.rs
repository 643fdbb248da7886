//! The mirror protocol on the swarm: records a mirror is handed go to the core (its one admission
//! policy; its named feeders outside the shares, anyone else refused) and are acknowledged only
//! once kept; the outcomes of the hand-offs the core sends go back to it.

use super::*;

impl EventLoop {
    /// The mirror protocol: what a mirror is handed goes to the core, whose admission decides
    /// (validated, within the store's limits, never living longer than the sender's copy nor
    /// than the TTL, never shortening a copy it holds); a sender only logs.
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
                self.counters.stores_served += 1;
                let id = self.wires.mirror_inbound.insert(channel);
                let record = request;
                self.drive(Input::Mirror { peer, id, record });
                // The core answers at once; a push it left unanswered is not acknowledged.
                self.wires.mirror_inbound.remove(&id);
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
            } => {
                if let Some(id) = self.wires.mirror_requests.remove(&request_id) {
                    self.drive(Input::MirrorAcked { id });
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, "record not mirrored ({error}); retrying unless out of tries");
                if let Some(id) = self.wires.mirror_requests.remove(&request_id) {
                    self.drive(Input::MirrorFailed { id });
                }
            }
            other => trace!(?other, "mirror event"),
        }
    }
}
