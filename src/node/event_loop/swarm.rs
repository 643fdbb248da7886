//! Swarm events: connections, dials, listeners, identify and ping.

use super::*;
use crate::core::vetting::vetted;

impl EventLoop {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<DhtBehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(e)) => self.on_kad(e),
            SwarmEvent::Behaviour(DhtBehaviourEvent::Command(e)) => self.on_command_protocol(e),
            SwarmEvent::Behaviour(DhtBehaviourEvent::Broadcast(e)) => self.on_broadcast(e),
            SwarmEvent::Behaviour(DhtBehaviourEvent::Identify(e)) => self.on_identify(e),
            SwarmEvent::Behaviour(DhtBehaviourEvent::Info(e)) => self.on_info(e),
            SwarmEvent::Behaviour(DhtBehaviourEvent::Mirror(e)) => self.on_mirror(e),
            SwarmEvent::Behaviour(DhtBehaviourEvent::Ping(e)) => self.on_ping(e),
            SwarmEvent::Behaviour(other) => trace!(?other, "behaviour event"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let first = num_established.get() == 1;
                self.connected(peer_id, connection_id, &endpoint, first);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, ?cause, "connection closed");
                let broken = cause.is_some();
                self.disconnected(peer_id, connection_id, num_established == 0, broken);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => self.dial_failed(connection_id, peer_id, &error),
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                debug!(addr = %send_back_addr, "inbound connection failed: {error}");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(addr = %with_peer(&address, self.local), "listening");
                if !self.net.listen_addrs.contains(&address) {
                    self.net.listen_addrs.push(address);
                    self.announce_addrs();
                    // An interface came up: if the node was cut off, that may be its network
                    // back; rejoin and refresh now rather than at the next round or interval.
                    self.drive(Input::NewAddress);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.net.listen_addrs.retain(|a| *a != address);
                self.announce_addrs();
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                warn!(?addresses, ?reason, "listener closed");
                self.net.listen_addrs.retain(|a| !addresses.contains(a));
                self.announce_addrs();
            }
            SwarmEvent::ExternalAddrConfirmed { .. } | SwarmEvent::ExternalAddrExpired { .. } => {
                self.announce_addrs();
            }
            SwarmEvent::ListenerError { error, .. } => warn!("listener error: {error}"),
            other => trace!(?other, "swarm event"),
        }
    }

    /// A connection to `peer` is up (`first`: its only one): a handle's `connect` is answered
    /// and joins through it; a dial of ours tells the core.
    fn connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &libp2p::core::ConnectedPoint,
        first: bool,
    ) {
        let remote = endpoint.get_remote_address().clone();
        debug!(%peer, addr = %remote, "connection established");
        self.net
            .connections
            .entry(peer)
            .or_default()
            .push((connection, remote.clone()));
        if first {
            self.emit(Event::PeerConnected(peer));
        }
        let dial = self.wires.core_dials.remove(&connection).map(|(d, _)| d);
        let asked = self.wires.dials.remove(&connection).map(|(_, reply)| reply);
        let connect = asked.is_some();
        if let Some(reply) = asked {
            let _ = reply.send(Ok(peer));
        }
        if !endpoint.is_dialer() {
            return;
        }
        let addr = with_peer(&remote, peer);
        if connect {
            // The operator's `connect`: join through it.
            self.drive(Input::Join {
                peers: vec![(peer, vec![addr])],
            });
        } else {
            self.drive(Input::Connected { peer, addr, dial });
        }
    }

    /// A connection to `peer` closed (`last`: its last one; `broken`: not by choice, as an idle
    /// one or a goodbye is).
    fn disconnected(&mut self, peer: PeerId, connection: ConnectionId, last: bool, broken: bool) {
        if let Some(conns) = self.net.connections.get_mut(&peer) {
            conns.retain(|(id, _)| *id != connection);
        }
        if !last {
            return;
        }
        self.net.connections.remove(&peer);
        self.net.kad_servers.remove(&peer);
        self.emit(Event::PeerDisconnected(peer));
        // Is it still there?
        if broken {
            self.drive(Input::ConnectionLost { peer });
        }
    }

    /// A dial failed: the core's (a bootstrap round's) or a handle's `connect`; a peer that
    /// cannot be reached must not be handed out as a closer peer.
    fn dial_failed(&mut self, connection: ConnectionId, peer: Option<PeerId>, error: &DialError) {
        debug!(?peer, "dial failed: {error}");
        if let Some((dial, addr)) = self.wires.core_dials.remove(&connection) {
            self.drive(Input::DialFailed { dial });
            let reason = dial_reason(error);
            let retry = self.core.next_round_in(Instant::now()).unwrap_or_default();
            if self.core.bootstrap().is_bootstrap(&addr) {
                warn!(%addr, "bootstrap node unreachable ({reason}); retrying in {retry:.0?}");
            } else {
                debug!(%addr, "former peer unreachable ({reason}); retrying in {retry:.0?}");
            }
        }
        if let Some((_, reply)) = self.wires.dials.remove(&connection) {
            let _ = reply.send(Err(Error::Dial {
                addr: dial_target(error),
                reason: dial_reason(error),
            }));
        }
        if let Some(peer) = peer
            && matches!(
                error,
                DialError::Transport(_) | DialError::WrongPeerId { .. }
            )
            && !self.net.connections.contains_key(&peer)
        {
            let wrong_peer = matches!(error, DialError::WrongPeerId { .. });
            self.drive(Input::Undialable { peer, wrong_peer });
        }
    }

    pub(super) fn on_identify(&mut self, event: identify::Event) {
        if let identify::Event::Received { peer_id, info, .. } = event {
            let same_host = self.on_same_host(&peer_id);
            // An identify answer ends a silent peer's quarantine: it answers again. Only peers
            // that serve our kad protocol enter the routing table; the core keeps a few of their
            // dialable addresses (loopback ones only from a peer on this host).
            self.drive(Input::Heard { peer: peer_id });
            let serves_kad = info.protocols.contains(&self.config.kad_protocol);
            debug!(peer = %peer_id, agent = %info.agent_version, serves_kad, "identified");
            if serves_kad && peer_id != self.local {
                if self.net.connections.contains_key(&peer_id) {
                    // Vetted as the core will: what is remembered stays bounded.
                    let addrs = vetted(peer_id, &info.listen_addrs, same_host);
                    self.net.kad_servers.insert(peer_id, addrs);
                }
                self.drive(Input::PeerSeen {
                    peer: peer_id,
                    addrs: info.listen_addrs.clone(),
                    same_host,
                });
            }
            if info.protocols.contains(&MIRROR_PROTOCOL) && peer_id != self.local {
                self.drive(Input::MirrorSeen {
                    peer: peer_id,
                    addrs: info.listen_addrs,
                    same_host,
                });
            }
        }
    }

    /// Whether `peer` is connected over loopback, so on this host: its loopback addresses are its.
    /// Tells the core where this node is reached, best first: confirmed external addresses, then
    /// dialable listen addresses off loopback, then loopback ones (at most
    /// `MAX_ADDRS_PER_PEER` are announced).
    pub(super) fn announce_addrs(&mut self) {
        let mut addrs: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        let (outside, local): (Vec<&Multiaddr>, Vec<&Multiaddr>) =
            self.net.listen_addrs.iter().partition(|a| !is_loopback(a));
        for a in outside.into_iter().chain(local) {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        self.drive(Input::OwnAddresses { addrs });
    }

    pub(super) fn on_same_host(&self, peer: &PeerId) -> bool {
        self.net
            .connections
            .get(peer)
            .is_some_and(|conns| conns.iter().any(|(_, a)| is_loopback(a)))
    }

    pub(super) fn on_ping(&mut self, event: ping::Event) {
        match event.result {
            Ok(_) => self.drive(Input::Heard { peer: event.peer }),
            // A peer that does not speak ping is not a dead one.
            Err(e) if ping_unsupported(&e) => {}
            Err(e) => {
                // libp2p no longer closes connections whose pings fail; a cut peer would linger.
                // A peer that does not answer (dead, cut off, or silent: it takes streams and never
                // answers) also leaves the routing table, so that lookups stop waiting on it and no
                // one is told about it; identify puts it back once it answers on a new connection.
                self.swarm.close_connection(event.connection);
                // A ping that timed out was taken and not answered: the peer is held out for a
                // while. A failed one only met a broken or closing connection (a peer stopping,
                // our own network gone), which says nothing of the peer once it is reachable.
                if matches!(e, ping::Failure::Timeout) {
                    debug!(peer = %event.peer, "ping timed out; closing the connection");
                    self.drive(Input::Silent { peer: event.peer });
                } else {
                    debug!(peer = %event.peer, "ping failed ({e}); closing the connection and evicting the peer");
                    self.evict(event.peer);
                }
            }
        }
    }

    /// Drops `peer` from the routing table; the core hands back its addresses, remembered for a
    /// rejoin should this node end up cut off.
    pub(super) fn evict(&mut self, peer: PeerId) {
        self.drive(Input::Unreachable { peer });
    }
}

/// Whether a ping failed because the peer does not speak ping. With lazy protocol negotiation
/// (the swarm's substream override) a refused protocol shows as an I/O error wrapping the
/// negotiation error, not as [`ping::Failure::Unsupported`].
fn ping_unsupported(failure: &ping::Failure) -> bool {
    match failure {
        ping::Failure::Unsupported => true,
        ping::Failure::Other { error } => error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<libp2p::core::upgrade::NegotiationError>()),
        _ => false,
    }
}

/// The address a failed dial was aimed at, for messages.
fn dial_target(error: &DialError) -> String {
    match error {
        DialError::Transport(attempts) => attempts
            .iter()
            .map(|(a, _)| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        DialError::WrongPeerId { address, .. } => address.to_string(),
        _ => "peer".to_owned(),
    }
}

/// Why a dial failed, in one line: the root cause of each attempt (e.g. "Connection refused").
fn dial_reason(error: &DialError) -> String {
    match error {
        DialError::Transport(attempts) => {
            let mut causes: Vec<String> = attempts
                .iter()
                .map(|(_, e)| {
                    let mut cause: &dyn std::error::Error = e;
                    while let Some(inner) = cause.source() {
                        cause = inner;
                    }
                    cause.to_string()
                })
                .collect();
            causes.dedup();
            causes.join("; ")
        }
        other => other.to_string(),
    }
}
