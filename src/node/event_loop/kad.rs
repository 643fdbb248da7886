//! The core and the kad protocol: inputs in, actions out. Handle commands for stores, fetches and
//! lookups become core inputs; peers' kad requests go to the core to be answered (a refused PUT
//! gets no acknowledgement); our requests go out as the core asks, and their answers and failures
//! go back in. This file only translates; the policy is [`crate::core`]'s, the code the simulator
//! runs.

use dht_behaviours::behaviour::vetted_addrs;
use dht_behaviours::kad::{self, Failure, OutboundId, Responder};
use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind, WirePeer};
use libp2p::PeerId;
use libp2p::swarm::ConnectionId;
use tracing::{debug, trace};

use super::EventLoop;
use crate::core::standing::reputation::Offence;
use crate::core::{FailureKind, Input};

/// `addr` without its `/p2p/<id>` part.
pub(super) fn without_p2p(addr: &libp2p::Multiaddr) -> libp2p::Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect()
}

impl EventLoop {
    /// The handles' operations running (counted against [`super::MAX_PENDING_OPERATIONS`];
    /// background queries have their own bound in the core).
    pub(super) fn running_queries(&self) -> usize {
        self.core.operations()
    }

    /// The peers of an answer with their dialable addresses only (loopback ones only from a peer
    /// on this host). Which of them may join a lookup is the core's call.
    fn admissible(&self, from: &PeerId, closer: Vec<WirePeer>) -> Vec<WirePeer> {
        let same_host = self.on_same_host(from);
        closer
            .into_iter()
            .map(|p| WirePeer {
                addrs: vetted_addrs(p.peer, &p.addrs, same_host).collect(),
                peer: p.peer,
            })
            .collect()
    }

    /// Providers named by `from` (announced, or listed in an answer) with their dialable
    /// addresses only, vetted as closer peers' are, kept bare (no `/p2p/` part: the provider's id
    /// travels beside them, as other implementations expect).
    fn admissible_providers(&self, from: &PeerId, providers: Vec<WirePeer>) -> Vec<WirePeer> {
        self.admissible(from, providers)
            .into_iter()
            .map(|mut p| {
                p.addrs = p.addrs.iter().map(without_p2p).collect();
                p
            })
            .collect()
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
        mut request: KadRequest,
    ) {
        if let KadRequest::AddProvider { providers, .. } = &mut request {
            *providers = self.admissible_providers(&peer, std::mem::take(providers));
        }
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

    /// The answer to one of our kad requests: its peers' addresses vetted, to the core.
    fn kad_response(&mut self, peer: PeerId, request_id: OutboundId, mut response: KadResponse) {
        let Some(id) = self.wires.kad_requests.remove(&request_id) else {
            return;
        };
        response.providers =
            self.admissible_providers(&peer, std::mem::take(&mut response.providers));
        let offered = response.closer.len();
        response.closer = self.admissible(&peer, std::mem::take(&mut response.closer));
        let before = self.core.ignored();
        let dropped = response.dropped + (offered - response.closer.len());
        self.drive(Input::Response { id, response });
        let ignored = dropped + (self.core.ignored() - before);
        self.counters.answer_peers_ignored += ignored as u64;
    }
}
