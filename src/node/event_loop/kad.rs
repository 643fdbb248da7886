//! The core and the kad protocol: inputs in, actions out. Handle commands for stores, fetches and
//! lookups become core inputs; peers' kad requests go to the core to be answered (a refused PUT
//! gets no acknowledgement); our requests go out as the core asks, and their answers and failures
//! go back in. This file only translates; the policy is [`crate::core`]'s, the code the simulator
//! runs.

use std::time::{Duration, Instant};

use dht_behaviours::behaviour::vetted_addrs;
use dht_behaviours::kad::{self, Failure};
use dht_behaviours::kad_wire::{KadRequest, MessageKind, WirePeer};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use tracing::{debug, info, trace, warn};

use super::EventLoop;
use crate::command::Reply;
use crate::core::standing::reputation::{BLOCK_DURATION, Offence};
use crate::core::{Action, FailureKind, Input, OpError, OpId, OpOk, Refusal, Report};
use crate::error::Error;
use crate::event::Event;
use crate::key::Key;
use crate::status::{self, Stored};

/// `addr` without its `/p2p/<id>` part.
fn without_p2p(addr: &libp2p::Multiaddr) -> libp2p::Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect()
}

/// Who waits for an operation's outcome.
pub(crate) enum Caller {
    /// A store, and the key it stores under.
    Store(Key, Reply<Stored>),
    /// A fetch.
    Fetch(Key, Reply<Vec<u8>>),
    /// A `lookup` of the k closest peers.
    Peers(Reply<status::Lookup>),
    /// A provide, and the key announced.
    Provide(Key, Reply<status::Provided>),
    /// A search for providers.
    Providers(Reply<Vec<status::Provider>>),
    /// A search for a peer's addresses.
    FindPeer(PeerId, Reply<status::FoundPeer>),
    /// A broadcast: how many hand-offs went out.
    Broadcast(Reply<usize>),
    /// A custom command to a peer: its handler's answer.
    Command(PeerId, Reply<Vec<u8>>),
}

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
            Action::Send(o) => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                match o.then {
                    Some(then) => {
                        let first = (o.request, o.closer_wanted);
                        let (rid, then_rid) = kad.send_pair(&o.peer, first, then.request, o.addrs);
                        self.wires.kad_requests.insert(rid, o.id);
                        self.wires.kad_requests.insert(then_rid, then.id);
                    }
                    None => {
                        let rid =
                            kad.send_request_with(&o.peer, o.request, o.addrs, o.closer_wanted);
                        self.wires.kad_requests.insert(rid, o.id);
                    }
                }
            }
            Action::Answer { id, response } => {
                let Some(responder) = self.wires.kad_inbound.remove(&id) else {
                    return;
                };
                // None ends the stream unanswered: nothing is acknowledged.
                self.swarm.behaviour_mut().kad.answer(responder, response);
            }
            Action::Reply { op, result, report } => self.op_done(op, result, report),
            Action::SendCommand {
                id,
                peer,
                addrs,
                payload,
            } => {
                let rid = self
                    .swarm
                    .behaviour_mut()
                    .command
                    .send_request_with_addresses(&peer, payload, addrs);
                self.wires.command_requests.insert(rid, id);
            }
            Action::RunHandler { id, peer, payload } => self.run_handler(id, peer, payload),
            Action::AnswerCommand { id, reply } => {
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
            Action::Broadcast {
                id,
                peer,
                addrs,
                message,
            } => {
                let rid = self
                    .swarm
                    .behaviour_mut()
                    .broadcast
                    .send_request_with_addresses(&peer, message, addrs);
                self.wires.broadcast_requests.insert(rid, id);
            }
            Action::AnswerMirror { id, kept } => {
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
            Action::AnswerBroadcast { id, ack } => {
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
            } => {
                let rid = self
                    .swarm
                    .behaviour_mut()
                    .mirror
                    .send_request_with_addresses(&peer, record, addrs);
                self.wires.mirror_requests.insert(rid, id);
                self.counters.records_mirrored += 1;
            }
            Action::MirrorFound { peer } => {
                let records = self.core.records().len();
                info!(%peer, records, "mirror node found; sending it the records held here");
            }
            Action::Refused { peer, refusal } => {
                self.counters.records_refused += 1;
                if let Refusal::Invalid(error) = &refusal {
                    if self.peer_warnings.allow(Instant::now()) {
                        warn!(%peer, "refused a record: {error}");
                    }
                } else {
                    debug!(%peer, "refused a record: {refusal}");
                }
            }
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
            Action::Block { peer, offence } => {
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
            Action::Dial { dial, addr } => self.dial(dial, addr),
            Action::CheckPeer { peer, addrs } => {
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    debug!(%peer, "liveness check not dialed: {e}");
                }
            }
            Action::Joined { peer } => info!(%peer, "joined the network"),
            Action::Relearn => {
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
                    self.drive(Input::PeerSeen { peer, addrs });
                }
            }
            Action::Unblock { peer } => {
                info!(%peer, "unblocked");
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            }
        }
    }

    /// Starts an operation for `caller` with the input `make` builds from its number.
    pub(super) fn start_op(&mut self, caller: Caller, make: impl FnOnce(OpId) -> Input) {
        let op = self.wires.start(caller);
        self.drive(make(op));
    }

    fn op_done(&mut self, op: OpId, result: Result<OpOk, OpError>, report: Report) {
        let Some(caller) = self.wires.callers.remove(&op) else {
            return;
        };
        let t = &self.config.timing;
        let timeout = |operation| Error::Timeout {
            operation,
            after: t.query_timeout,
        };
        let error = |e: OpError, key: Option<Key>, operation| match e {
            OpError::NotFound => key.map_or_else(|| timeout(operation), Error::NotFound),
            OpError::Timeout => timeout(operation),
            OpError::NoPeers => Error::NoPeers,
            OpError::Refused(r @ (Refusal::Full | Refusal::Quota)) => {
                Error::StoreFull(r.to_string())
            }
            OpError::Refused(refusal) => Error::Refused(refusal.to_string()),
            OpError::BroadcastRefused(reason) => Error::BroadcastRefused(reason),
            OpError::ProvideRefused(reason) => Error::ProvideRefused(reason),
            // Only commands end so, and they are answered below.
            OpError::CommandRefused(reason) | OpError::CommandFailed(reason) => {
                Error::Transport(reason)
            }
        };
        if result.is_err() {
            self.counters.errors += 1;
        }
        match (caller, result) {
            (Caller::Store(key, reply), Ok(OpOk::Stored { kept })) => {
                let remote = kept.len();
                debug!(%key, remote, took = ?report.took, "store finished");
                if remote == 0 && self.config.client_mode {
                    self.counters.errors += 1;
                    let _ = reply.send(Err(Error::NotKept(key)));
                    return;
                }
                let _ = reply.send(Ok(Stored {
                    key,
                    nodes: remote + usize::from(!self.config.client_mode),
                    remote,
                }));
            }
            (Caller::Fetch(_, reply), Ok(OpOk::Value(value))) => {
                let _ = reply.send(Ok(value));
            }
            (Caller::Peers(reply), Ok(OpOk::Closest(peers))) => {
                let _ = reply.send(Ok(status::Lookup {
                    peers,
                    requests: u32::try_from(report.requests).unwrap_or(u32::MAX),
                    duration: report.took,
                }));
            }
            (Caller::Provide(key, reply), Ok(OpOk::Stored { kept })) => {
                debug!(%key, remote = kept.len(), took = ?report.took, "provide finished");
                let remote = kept.len();
                let _ = reply.send(Ok(status::Provided { key, remote }));
            }
            (Caller::Providers(reply), Ok(OpOk::Providers(found))) => {
                let found = found
                    .into_iter()
                    .map(|p| status::Provider {
                        peer: p.peer,
                        addrs: p.addrs,
                    })
                    .collect();
                let _ = reply.send(Ok(found));
            }
            (Caller::FindPeer(peer, reply), Ok(OpOk::PeerAddrs { addrs, reached })) => {
                // Bare addresses, as providers' are: the peer id is beside them.
                let addrs = addrs.iter().map(without_p2p).collect();
                let _ = reply.send(Ok(status::FoundPeer {
                    peer,
                    addrs,
                    reached,
                }));
            }
            (Caller::Provide(_, reply), Err(e)) => {
                let _ = reply.send(Err(error(e, None, "provide")));
            }
            (Caller::Providers(reply), Err(e)) => {
                let _ = reply.send(Err(error(e, None, "providers")));
            }
            (Caller::FindPeer(peer, reply), Err(OpError::NotFound)) => {
                let _ = reply.send(Err(Error::PeerNotFound(peer)));
            }
            (Caller::FindPeer(_, reply), Err(e)) => {
                let _ = reply.send(Err(error(e, None, "find_peer")));
            }
            (Caller::Store(key, reply), Err(e)) => {
                let _ = reply.send(Err(error(e, Some(key), "store")));
            }
            (Caller::Fetch(key, reply), Err(e)) => {
                let _ = reply.send(Err(error(e, Some(key), "fetch")));
            }
            (Caller::Peers(reply), Err(e)) => {
                let _ = reply.send(Err(error(e, None, "lookup")));
            }
            (Caller::Command(_, reply), Ok(OpOk::Command(bytes))) => {
                let _ = reply.send(Ok(bytes));
            }
            (Caller::Command(peer, reply), Err(e)) => {
                let _ = reply.send(Err(match e {
                    OpError::CommandRefused(reason) => Error::CommandRefused { peer, reason },
                    OpError::CommandFailed(reason) => Error::CommandFailed { peer, reason },
                    _ => Error::Timeout {
                        operation: "custom command",
                        after: t.command_timeout,
                    },
                }));
            }
            (Caller::Broadcast(reply), Ok(OpOk::Broadcast { sent })) => {
                let _ = reply.send(Ok(sent));
            }
            (Caller::Broadcast(reply), Err(e)) => {
                let _ = reply.send(Err(error(e, None, "broadcast")));
            }
            (caller, Ok(other)) => {
                warn!(?other, "an operation ended with an answer of another kind");
                let after = Duration::ZERO;
                let e = Error::Timeout {
                    operation: "operation",
                    after,
                };
                match caller {
                    Caller::Store(_, r) => drop(r.send(Err(e))),
                    Caller::Fetch(_, r) => drop(r.send(Err(e))),
                    Caller::Peers(r) => drop(r.send(Err(e))),
                    Caller::Broadcast(r) => drop(r.send(Err(e))),
                    Caller::Command(_, r) => drop(r.send(Err(e))),
                    Caller::Provide(_, r) => drop(r.send(Err(e))),
                    Caller::Providers(r) => drop(r.send(Err(e))),
                    Caller::FindPeer(_, r) => drop(r.send(Err(e))),
                }
            }
        }
    }

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
                mut request,
            } => {
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
            kad::Event::Response {
                peer,
                id: request_id,
                mut response,
            } => {
                let Some(id) = self.wires.kad_requests.remove(&request_id) else {
                    return;
                };
                response.providers =
                    self.admissible_providers(&peer, std::mem::take(&mut response.providers));
                let offered = response.closer.len();
                response.closer = self.admissible(&peer, std::mem::take(&mut response.closer));
                let before = self.core.ignored();
                let dropped = response.dropped + (offered - response.closer.len());
                self.drive(Input::Response {
                    id,
                    response: *response,
                });
                let ignored = dropped + (self.core.ignored() - before);
                self.counters.answer_peers_ignored += ignored as u64;
            }
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
}
