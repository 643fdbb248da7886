//! The kad protocol as a `NetworkBehaviour`: our requests go to a connection of their peer
//! (dialed first when there is none) and come back answered or failed, each exactly once; peers'
//! requests come out as events, each with a [`Responder`] that takes the core's answer back to
//! the stream it arrived on.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::task::{Context, Poll};
use std::time::Instant;

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, DialError, DialFailure, FromSwarm,
    NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol};

use super::handler::{Handler, Outgoing};
use super::messages::{HandlerIn, HandlerOut};
use super::{Failure, OutboundId, StreamLimits};
use crate::kad_wire::{KadRequest, KadResponse};

/// Where the answer to a peer's request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Responder {
    peer: PeerId,
    connection: ConnectionId,
    stream: u64,
    request: u32,
}

/// What the kad protocol reports.
// Requests are the common case and pass through once: boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Event {
    /// A peer's request: answer it with [`Kad::answer`] (an ADD_PROVIDER takes none).
    Request {
        /// Who asks.
        peer: PeerId,
        /// On which connection.
        connection: ConnectionId,
        /// Where the answer goes.
        responder: Responder,
        /// The request.
        request: KadRequest,
    },
    /// A peer sent bytes that are no kad request.
    Malformed {
        /// Who.
        peer: PeerId,
        /// What was wrong.
        error: String,
    },
    /// A peer's stream failed (cut short, or a message over the size limit).
    InboundFailure {
        /// Whose.
        peer: PeerId,
        /// Why.
        error: io::Error,
    },
    /// The answer to one of our requests.
    Response {
        /// Who answered.
        peer: PeerId,
        /// Which request.
        id: OutboundId,
        /// The answer.
        response: Box<KadResponse>,
    },
    /// One of our requests failed.
    Failure {
        /// To whom it went.
        peer: PeerId,
        /// Which request.
        id: OutboundId,
        /// Why.
        error: Failure,
    },
}

/// The kad protocol over streams that carry many requests.
pub struct Kad {
    protocol: StreamProtocol,
    serve: bool,
    limits: StreamLimits,
    /// Each peer's connections, oldest first: requests go on the oldest, so its streams are
    /// the ones reused.
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Requests handed to a connection.
    sent: HashMap<OutboundId, (PeerId, ConnectionId)>,
    /// Requests waiting for a dial to their peer.
    dialing: HashMap<PeerId, Vec<Outgoing>>,
    events: VecDeque<ToSwarm<Event, HandlerIn>>,
    next_id: u64,
}

impl Kad {
    /// Speaks `protocol` within `limits`; takes peers' requests only when `serve`.
    pub fn new(protocol: StreamProtocol, serve: bool, limits: StreamLimits) -> Self {
        Self {
            protocol,
            serve,
            limits,
            connections: HashMap::new(),
            sent: HashMap::new(),
            dialing: HashMap::new(),
            events: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Sends `request` to `peer`, dialing `addrs` first when not connected. Its answer or its
    /// failure comes back as an event, once, by the request timeout.
    pub fn send_request(
        &mut self,
        peer: &PeerId,
        request: KadRequest,
        addrs: Vec<Multiaddr>,
    ) -> OutboundId {
        self.send_request_with(peer, request, addrs, true)
    }

    /// Like [`Kad::send_request`]; the answer's closer peers are skipped unread unless
    /// `closer_wanted`.
    pub fn send_request_with(
        &mut self,
        peer: &PeerId,
        request: KadRequest,
        addrs: Vec<Multiaddr>,
        closer_wanted: bool,
    ) -> OutboundId {
        let out = self.outgoing(request, closer_wanted);
        let id = out.id;
        self.send(*peer, out, addrs);
        id
    }

    /// Sends `first` and, right behind it on the same stream, `then` (a check of what `first`
    /// gives, read by the peer after it has taken `first`). Each is answered or fails on its
    /// own, `first`'s event first; `then` is sent again on a stream of its own when the peer
    /// never read it (it answers once per stream). `then`'s closer peers are skipped unread.
    pub fn send_pair(
        &mut self,
        peer: &PeerId,
        first: (KadRequest, bool),
        then: KadRequest,
        addrs: Vec<Multiaddr>,
    ) -> (OutboundId, OutboundId) {
        let mut out = self.outgoing(first.0, first.1);
        let follower = self.outgoing(then, false);
        let ids = (out.id, follower.id);
        out.then = Some(Box::new(follower));
        self.send(*peer, out, addrs);
        ids
    }

    fn outgoing(&mut self, request: KadRequest, closer_wanted: bool) -> Outgoing {
        let id = OutboundId(self.next_id);
        self.next_id += 1;
        Outgoing {
            id,
            request,
            deadline: Instant::now() + self.limits.request_timeout,
            retried: false,
            closer_wanted,
            then: None,
        }
    }

    fn send(&mut self, peer: PeerId, out: Outgoing, addrs: Vec<Multiaddr>) {
        if let Some(&connection) = self.connections.get(&peer).and_then(|c| c.first()) {
            self.send_on(peer, connection, out);
        } else {
            let waiting = self.dialing.entry(peer).or_default();
            waiting.push(out);
            if waiting.len() == 1 {
                self.events.push_back(ToSwarm::Dial {
                    opts: DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(PeerCondition::Disconnected)
                        .build(),
                });
            }
        }
    }

    /// Answers the request `responder` came with; `None` refuses it (the stream ends unanswered:
    /// a PUT refused is not acknowledged).
    pub fn answer(&mut self, responder: Responder, response: Option<KadResponse>) {
        self.events.push_back(ToSwarm::NotifyHandler {
            peer_id: responder.peer,
            handler: NotifyHandler::One(responder.connection),
            event: HandlerIn::Answer {
                stream: responder.stream,
                request: responder.request,
                response: response.map(Box::new),
            },
        });
    }

    /// Requests sent and not yet answered or failed, waiting dials included.
    pub fn in_flight(&self) -> usize {
        let dialing: usize = self
            .dialing
            .values()
            .flatten()
            .map(|o| o.ids().count())
            .sum();
        self.sent.len() + dialing
    }

    fn send_on(&mut self, peer: PeerId, connection: ConnectionId, out: Outgoing) {
        for id in out.ids() {
            self.sent.insert(id, (peer, connection));
        }
        self.events.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(connection),
            event: HandlerIn::Send(out),
        });
    }

    fn fail(&mut self, peer: PeerId, id: OutboundId, error: Failure) {
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::Failure { peer, id, error }));
    }

    fn connected(&mut self, peer: PeerId, connection: ConnectionId) {
        self.connections.entry(peer).or_default().push(connection);
        for out in self.dialing.remove(&peer).unwrap_or_default() {
            self.send_on(peer, connection, out);
        }
    }

    fn handler(&self) -> Handler {
        Handler::new(self.protocol.clone(), self.serve, self.limits)
    }
}

impl NetworkBehaviour for Kad {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.connected(peer, connection);
        Ok(self.handler())
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.connected(peer, connection);
        Ok(self.handler())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                if let Some(list) = self.connections.get_mut(&peer_id) {
                    list.retain(|c| *c != connection_id);
                    if list.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                let lost: Vec<OutboundId> = self
                    .sent
                    .iter()
                    .filter(|(_, (_, c))| *c == connection_id)
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    self.sent.remove(&id);
                    self.fail(peer_id, id, Failure::ConnectionClosed);
                }
            }
            FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                error,
                ..
            }) => {
                // Another dial to the peer is under way, or it connected meanwhile: wait for it.
                if matches!(error, DialError::DialPeerConditionFalse(_))
                    || self.connections.contains_key(&peer)
                {
                    return;
                }
                for out in self.dialing.remove(&peer).unwrap_or_default() {
                    for id in out.ids() {
                        self.fail(peer, id, Failure::Dial);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let event = match event {
            HandlerOut::Request {
                stream,
                number,
                request,
            } => Event::Request {
                peer,
                connection,
                responder: Responder {
                    peer,
                    connection,
                    stream,
                    request: number,
                },
                request,
            },
            HandlerOut::Malformed(error) => Event::Malformed { peer, error },
            HandlerOut::InboundFailed(error) => Event::InboundFailure { peer, error },
            HandlerOut::Response { id, response } => {
                if self.sent.remove(&id).is_none() {
                    return;
                }
                Event::Response { peer, id, response }
            }
            HandlerOut::Failed { id, error } => {
                if self.sent.remove(&id).is_none() {
                    return;
                }
                Event::Failure { peer, id, error }
            }
        };
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }
}
