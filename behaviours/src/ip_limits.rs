//! A cap on inbound connections per remote IP address. libp2p's connection limits count per peer id,
//! and peer ids cost nothing to make: without this, one host could take every connection slot.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::ConnectionEstablished;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// The per-IP cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpLimit {
    /// Inbound connections accepted from one IP address at once.
    pub max_per_ip: u32,
    /// Whether loopback addresses count too. Off by default: a local network (`dht -n 100`, the
    /// test suite) runs every node on 127.0.0.1.
    pub include_loopback: bool,
}

/// The error a refused connection carries.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already has {count} inbound connections (the limit per IP address)")]
pub struct TooManyFromIp {
    /// The address.
    pub ip: IpAddr,
    /// Connections it has.
    pub count: u32,
}

/// Counts established inbound connections per IP and refuses those over the cap.
#[derive(Debug)]
pub struct IpLimits {
    limit: IpLimit,
    per_ip: HashMap<IpAddr, u32>,
    connections: HashMap<ConnectionId, IpAddr>,
}

/// The IP address a multiaddr starts from, if any (memory addresses have none).
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl IpLimits {
    /// A behaviour enforcing `limit`.
    pub fn new(limit: IpLimit) -> Self {
        Self {
            limit,
            per_ip: HashMap::new(),
            connections: HashMap::new(),
        }
    }

    /// Inbound connections counted from `ip` now.
    pub fn count(&self, ip: &IpAddr) -> u32 {
        self.per_ip.get(ip).copied().unwrap_or(0)
    }

    fn limited_ip(&self, remote: &Multiaddr) -> Option<IpAddr> {
        ip_of(remote).filter(|ip| self.limit.include_loopback || !ip.is_loopback())
    }

    fn check(&self, remote: &Multiaddr) -> Result<(), ConnectionDenied> {
        let Some(ip) = self.limited_ip(remote) else {
            return Ok(());
        };
        let count = self.count(&ip);
        if count >= self.limit.max_per_ip {
            return Err(ConnectionDenied::new(TooManyFromIp { ip, count }));
        }
        Ok(())
    }
}

impl NetworkBehaviour for IpLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        // Refused before the handshake costs anything.
        self.check(remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(remote)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // Counted once the swarm has the connection: another behaviour may still refuse it after
        // this one said yes, and then no closing event would ever come.
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                connection_id,
                endpoint: ConnectedPoint::Listener { send_back_addr, .. },
                ..
            }) => {
                if let Some(ip) = self.limited_ip(send_back_addr) {
                    *self.per_ip.entry(ip).or_default() += 1;
                    self.connections.insert(connection_id, ip);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                if let Some(ip) = self.connections.remove(&connection_id)
                    && let Some(n) = self.per_ip.get_mut(&ip)
                {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.per_ip.remove(&ip);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("addr")
    }

    fn established(limits: &mut IpLimits, id: ConnectionId, remote: &Multiaddr) {
        let endpoint = ConnectedPoint::Listener {
            local_addr: addr("/ip4/10.0.0.1/tcp/3000"),
            send_back_addr: remote.clone(),
        };
        limits.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: PeerId::random(),
            connection_id: id,
            endpoint: &endpoint,
            failed_addresses: &[],
            other_established: 0,
        }));
    }

    #[test]
    fn one_ip_is_capped_and_slots_come_back() {
        let mut limits = IpLimits::new(IpLimit {
            max_per_ip: 2,
            include_loopback: false,
        });
        let a = addr("/ip4/1.2.3.4/tcp/5000");
        let b = addr("/ip4/5.6.7.8/tcp/5000");
        let first = ConnectionId::new_unchecked(1);
        let second = ConnectionId::new_unchecked(2);
        assert!(limits.check(&a).is_ok());
        established(&mut limits, first, &a);
        established(&mut limits, second, &a);
        assert!(
            limits.check(&a).is_err(),
            "the third from one IP is refused"
        );
        assert!(limits.check(&b).is_ok(), "another IP is not affected");
        limits.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: PeerId::random(),
            connection_id: first,
            endpoint: &ConnectedPoint::Listener {
                local_addr: addr("/ip4/10.0.0.1/tcp/3000"),
                send_back_addr: a.clone(),
            },
            cause: None,
            remaining_established: 0,
        }));
        assert!(
            limits.check(&a).is_ok(),
            "a closed connection frees its slot"
        );
        assert_eq!(limits.count(&ip_of(&a).expect("ip")), 1);
    }

    #[test]
    fn loopback_and_memory_are_exempt_unless_asked() {
        let lo = addr("/ip4/127.0.0.1/tcp/5000");
        let mem = addr("/memory/7");
        let mut free = IpLimits::new(IpLimit {
            max_per_ip: 1,
            include_loopback: false,
        });
        for i in 0..5 {
            established(&mut free, ConnectionId::new_unchecked(i), &lo);
        }
        assert!(free.check(&lo).is_ok() && free.check(&mem).is_ok());
        let mut strict = IpLimits::new(IpLimit {
            max_per_ip: 1,
            include_loopback: true,
        });
        established(&mut strict, ConnectionId::new_unchecked(1), &lo);
        assert!(strict.check(&lo).is_err());
    }
}
