//! The core and the kad protocol: inputs in, actions out. Handle commands for stores, fetches and
//! lookups become core inputs; peers' kad requests go to the core to be answered (a refused PUT
//! gets no acknowledgement); our requests go out as the core asks, and their answers and failures
//! go back in. This file only translates; the policy is [`crate::core`]'s, the code the simulator
//! runs.

use dht_behaviours::kad::{self, Failure, OutboundId, Responder};
use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind};
use libp2p::PeerId;
use libp2p::swarm::ConnectionId;
use tracing::{debug, trace};

use super::EventLoop;
use crate::core::standing::reputation::Offence;
use crate::core::{FailureKind, Input};

impl EventLoop {
    /// The handles' operations running (counted against [`super::MAX_PENDING_OPERATIONS`];
    /// background queries have their own bound in the core).
    pub(super) fn running_queries(&self) -> usize {
        self.core.operations()
    }

    /// A kad-protocol event: a peer's request, or the answer or failure of one of ours.
    pub(super) fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::Malformed { peer, error } => {
                debug!(%peer, "malformed kad request: {error}");
                self.offend(peer, Offence::MalformedMessage);
            }
            kad::Event::Request {
                peer,
                connection,
                responder,
                request,
            } => self.kad_request(peer, connection, responder, request),
            kad::Event::Response { peer, id, response } => self.kad_response(peer, id, *response),
            kad::Event::Failure {
                peer,
                id: request_id,
                error,
            } => {
                let Some(id) = self.wires.kad_requests.remove(&request_id) else {
                    return;
                };
                trace!(%peer, "kad request failed: {error}");
                if error.is_malformed() {
                    self.offend(peer, Offence::MalformedMessage);
                }
                let kind = match error {
                    Failure::Timeout => FailureKind::TimedOut,
                    Failure::Refused => FailureKind::Refused,
                    _ => FailureKind::Broken,
                };
                self.drive(Input::Failure { id, kind });
            }
            kad::Event::InboundFailure { peer, error } => {
                debug!(%peer, "inbound kad stream failed: {error}");
                if error.kind() == std::io::ErrorKind::InvalidData {
                    self.offend(peer, Offence::MalformedMessage);
                }
            }
        }
    }

    /// A peer's kad request: to the core, which answers it at once.
    fn kad_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        responder: Responder,
        request: KadRequest,
    ) {
        match request.kind() {
            MessageKind::PutValue => self.counters.stores_served += 1,
            MessageKind::GetValue => self.counters.fetches_served += 1,
            _ => {}
        }
        let takes_no_answer = request.kind() == MessageKind::AddProvider;
        let id = self.wires.kad_inbound.insert(responder);
        self.drive(Input::Request {
            peer,
            id,
            request,
            // Peers enter the routing table from identify, which tells whether they serve.
            serving: false,
            host: self.host_of(&peer, connection),
            same_host: self.on_same_host(&peer),
        });
        // The core answers at once; a request it left unanswered ends its stream (an
        // ADD_PROVIDER takes no answer: its stream reads on).
        if let Some(responder) = self.wires.kad_inbound.remove(&id)
            && !takes_no_answer
        {
            trace!(%peer, "kad request left unanswered");
            self.swarm.behaviour_mut().kad.answer(responder, None);
        }
    }

    /// The answer to one of our kad requests, to the core (which vets the addresses it names).
    fn kad_response(&mut self, peer: PeerId, request_id: OutboundId, response: KadResponse) {
        let Some(id) = self.wires.kad_requests.remove(&request_id) else {
            return;
        };
        let before = self.core.ignored();
        let dropped = response.dropped;
        let same_host = self.on_same_host(&peer);
        self.drive(Input::Response {
            id,
            response,
            same_host,
        });
        let ignored = dropped + (self.core.ignored() - before);
        self.counters.answer_peers_ignored += ignored as u64;
    }
}
