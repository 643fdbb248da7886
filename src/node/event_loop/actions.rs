//! The core's actions carried out: requests and answers onto the swarm, replies to the handles,
//! events to subscribers, blocks into the transport, and what an operator reads in the log. No
//! decision is made here: each action says what to do.

use std::time::Instant;

use dht_behaviours::broadcast::{Ack, BroadcastMessage};
use dht_behaviours::command::CommandReply;
use dht_behaviours::kad_wire::KadResponse;
use dht_behaviours::mirror::MirrorRecord;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use tracing::{debug, info, trace, warn};

use super::EventLoop;
use crate::core::standing::reputation::{BLOCK_DURATION, Offence};
use crate::core::{Action, CommandId, HandoffId, InboundId, Input, MirrorId, Outgoing, Refusal};
use crate::event::Event;

impl EventLoop {
    /// Hands `input` to the core at the current time and carries out what it asks.
    pub(super) fn drive(&mut self, input: Input) {
        let actions = self.core.handle(input, Instant::now());
        for action in actions {
            self.act(action);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Send(o) => self.send_kad(o),
            Action::Answer { id, response } => self.answer_kad(id, response),
            Action::Reply { op, result, report } => self.op_done(op, result, report),
            Action::SendCommand {
                id,
                peer,
                addrs,
                payload,
            } => self.send_command(id, peer, addrs, payload),
            Action::RunHandler { id, peer, payload } => self.run_handler(id, peer, payload),
            Action::AnswerCommand { id, reply } => self.answer_command(id, reply),
            Action::Broadcast {
                id,
                peer,
                addrs,
                message,
            } => self.send_broadcast(id, peer, addrs, message),
            Action::AnswerBroadcast { id, ack } => self.answer_broadcast(id, ack),
            Action::Deliver { origin, payload } => {
                self.counters.broadcasts_received += 1;
                self.emit(Event::Broadcast {
                    origin,
                    payload: payload.as_ref().clone(),
                });
            }
            Action::Mirror {
                id,
                peer,
                addrs,
                record,
            } => self.send_mirror(id, peer, addrs, record),
            Action::AnswerMirror { id, kept } => self.answer_mirror(id, kept),
            Action::MirrorFound { peer } => {
                let records = self.core.records().len();
                info!(%peer, records, "mirror node found; sending it the records held here");
            }
            Action::Refused { peer, refusal } => self.refused(peer, &refusal),
            Action::Evicted { peer, addrs } => {
                debug!(%peer, "peer left the routing table: failed requests, or unreachable");
                self.counters.peers_evicted += 1;
                trace!(%peer, ?addrs, "remembered for a rejoin");
            }
            Action::Lied { peer, error } => {
                self.counters.records_refused += 1;
                if self.peer_warnings.allow(Instant::now()) {
                    warn!(%peer, "discarded an invalid record: {error}");
                }
            }
            Action::HeldOut { peer, held } => {
                debug!(%peer, "ping timed out; evicting the peer, holding it out for {held:?}");
            }
            Action::Block { peer, offence } => self.block(peer, offence),
            Action::Dial { dial, addr } => self.dial(dial, addr),
            Action::CheckPeer { peer, addrs } => self.check_peer(peer, addrs),
            Action::Joined { peer } => info!(%peer, "joined the network"),
            Action::Relearn => self.relearn(),
            Action::Unblock { peer } => {
                info!(%peer, "unblocked");
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            }
        }
    }

    fn send_kad(&mut self, o: Outgoing) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        match o.then {
            Some(then) => {
                let first = (o.request, o.closer_wanted);
                let (rid, then_rid) = kad.send_pair(&o.peer, first, then.request, o.addrs);
                self.wires.kad_requests.insert(rid, o.id);
                self.wires.kad_requests.insert(then_rid, then.id);
            }
            None => {
                let rid = kad.send_request_with(&o.peer, o.request, o.addrs, o.closer_wanted);
                self.wires.kad_requests.insert(rid, o.id);
            }
        }
    }

    fn answer_kad(&mut self, id: InboundId, response: Option<KadResponse>) {
        let Some(responder) = self.wires.kad_inbound.remove(&id) else {
            return;
        };
        // None ends the stream unanswered: nothing is acknowledged.
        self.swarm.behaviour_mut().kad.answer(responder, response);
    }

    fn send_command(
        &mut self,
        id: CommandId,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        payload: Vec<u8>,
    ) {
        let rid = self
            .swarm
            .behaviour_mut()
            .command
            .send_request_with_addresses(&peer, payload, addrs);
        self.wires.command_requests.insert(rid, id);
    }

    fn answer_command(&mut self, id: InboundId, reply: CommandReply) {
        let Some(channel) = self.wires.command_inbound.remove(&id) else {
            return;
        };
        if self
            .swarm
            .behaviour_mut()
            .command
            .send_response(channel, reply)
            .is_err()
        {
            debug!("custom command answer not sent: the requester is gone");
        }
    }

    fn send_broadcast(
        &mut self,
        id: HandoffId,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        message: BroadcastMessage,
    ) {
        let rid = self
            .swarm
            .behaviour_mut()
            .broadcast
            .send_request_with_addresses(&peer, message, addrs);
        self.wires.broadcast_requests.insert(rid, id);
    }

    fn answer_broadcast(&mut self, id: InboundId, ack: Option<Ack>) {
        let Some(channel) = self.wires.broadcast_inbound.remove(&id) else {
            return;
        };
        if let Some(ack) = ack
            && self
                .swarm
                .behaviour_mut()
                .broadcast
                .send_response(channel, ack)
                .is_err()
        {
            debug!("broadcast ack not sent: the sender is gone");
        }
    }

    fn send_mirror(
        &mut self,
        id: MirrorId,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        record: MirrorRecord,
    ) {
        let rid = self
            .swarm
            .behaviour_mut()
            .mirror
            .send_request_with_addresses(&peer, record, addrs);
        self.wires.mirror_requests.insert(rid, id);
        self.counters.records_mirrored += 1;
    }

    fn answer_mirror(&mut self, id: InboundId, kept: bool) {
        let Some(channel) = self.wires.mirror_inbound.remove(&id) else {
            return;
        };
        // Refused: the channel drops unanswered, and the sender sees no acknowledgement.
        if kept
            && self
                .swarm
                .behaviour_mut()
                .mirror
                .send_response(channel, ())
                .is_err()
        {
            debug!("mirror acknowledgement not sent: the sender is gone");
        }
    }

    fn refused(&mut self, peer: PeerId, refusal: &Refusal) {
        self.counters.records_refused += 1;
        if let Refusal::Invalid(error) = refusal {
            if self.peer_warnings.allow(Instant::now()) {
                warn!(%peer, "refused a record: {error}");
            }
        } else {
            debug!(%peer, "refused a record: {refusal}");
        }
    }

    fn block(&mut self, peer: PeerId, offence: Option<Offence>) {
        match offence {
            Some(offence) => {
                if self.peer_warnings.allow(Instant::now()) {
                    warn!(%peer, ?offence, "blocking a misbehaving peer for {BLOCK_DURATION:?}");
                }
                self.counters.peers_blocked += 1;
            }
            None => info!(%peer, "blocked by the operator"),
        }
        self.swarm.behaviour_mut().blocked.block_peer(peer);
    }

    fn check_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, "liveness check not dialed: {e}");
        }
    }

    fn relearn(&mut self) {
        let servers: Vec<(PeerId, Vec<Multiaddr>)> = self
            .net
            .kad_servers
            .iter()
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        info!(
            connected = servers.len(),
            "the routing table emptied; re-learning the kad servers still connected"
        );
        for (peer, addrs) in servers {
            let same_host = self.on_same_host(&peer);
            self.drive(Input::PeerSeen {
                peer,
                addrs,
                same_host,
            });
        }
    }
}
