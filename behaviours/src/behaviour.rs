//! The composed behaviour of a node: every protocol it speaks, plus connection limits and a block list.

use libp2p::allow_block_list::{self, BlockedPeers};
use libp2p::identity::Keypair;
use libp2p::kad::KBucketKey;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, PeerId, connection_limits, identify, ping};

use crate::broadcast::{self, BroadcastBehaviour};
use crate::command::{self, CommandBehaviour};
use crate::config::{
    IDENTIFY_PROTOCOL, MAX_ADDRS_PER_PEER, MAX_CONNECTIONS_PER_PEER, MAX_ESTABLISHED,
    MAX_PENDING_INCOMING, MAX_PENDING_OUTGOING, ProtocolConfig,
};
use crate::info::{self, InfoBehaviour};
use crate::ip_limits::IpLimits;
use crate::kad::{self, Kad, StreamLimits};
use crate::mirror::{self, MirrorBehaviour};

/// Everything a `dht` node speaks.
#[derive(NetworkBehaviour)]
pub struct DhtBehaviour {
    /// Peers refused outright.
    pub blocked: allow_block_list::Behaviour<BlockedPeers>,
    /// Caps on pending and established connections.
    pub limits: connection_limits::Behaviour,
    /// A cap on inbound connections per IP address.
    pub ip_limits: IpLimits,
    /// The kad protocol: our lookups' requests out, and peers' requests in for the core to answer.
    pub kad: Kad,
    /// Custom commands.
    pub command: CommandBehaviour,
    /// Broadcast hand-offs.
    pub broadcast: BroadcastBehaviour,
    /// Read-only introspection.
    pub info: InfoBehaviour,
    /// Records handed to mirror nodes.
    pub mirror: MirrorBehaviour,
    /// Identify: agent version, listen addresses and protocols of peers.
    pub identify: identify::Behaviour,
    /// Liveness of connections.
    pub ping: ping::Behaviour,
}

impl DhtBehaviour {
    /// Builds the behaviour for the node with key `keypair`.
    pub fn new(keypair: &Keypair, config: &ProtocolConfig) -> Self {
        let t = &config.timing;
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
            .with_max_pending_outgoing(Some(MAX_PENDING_OUTGOING))
            .with_max_established(Some(MAX_ESTABLISHED))
            .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
        Self {
            blocked: allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(limits),
            ip_limits: IpLimits::new(config.ip_limit),
            kad: kad::new_behaviour(
                config.kad_protocol.clone(),
                !config.client_mode,
                StreamLimits::new(config.max_packet_size(), t.peer_timeout(), t.idle_timeout),
            ),
            command: command::new_behaviour(t.command_timeout),
            broadcast: broadcast::new_behaviour(t.broadcast_timeout),
            info: info::new_behaviour(t.command_timeout),
            mirror: mirror::new_behaviour(t.command_timeout, config.mirror),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), keypair.public())
                    .with_agent_version(config.agent_version.clone())
                    .with_push_listen_addr_updates(true)
                    // Dials use only the addresses the node vetted (no loopback ones from a peer
                    // on another host, at most a few per peer), not every listen address a peer
                    // announced: identify's own address cache would add them all.
                    .with_cache_size(0),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(t.ping_interval)
                    .with_timeout(t.ping_timeout),
            ),
        }
    }

    /// The bucket index of `peer` in our routing table (log2 of its distance to `local`).
    pub fn bucket_index(local: &PeerId, peer: &PeerId) -> Option<u32> {
        KBucketKey::from(*local)
            .distance(&KBucketKey::from(*peer))
            .ilog2()
    }
}

/// Whether an address advertised by a peer can be dialed at all: TCP (not to `0.0.0.0` or `::`),
/// or the in-process memory transport.
pub fn is_dialable(addr: &Multiaddr) -> bool {
    addr.iter().all(|p| match p {
        Protocol::Ip4(ip) => !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_unspecified(),
        _ => true,
    }) && addr
        .iter()
        .any(|p| matches!(p, Protocol::Tcp(_) | Protocol::Memory(_)))
}

/// The addresses `peer` advertised that are worth dialing: dialable ones, loopback ones only from a
/// peer on this host (`same_host`: from anywhere else they would point at ourselves), at most
/// [`MAX_ADDRS_PER_PEER`], each ending in `/p2p/<peer>`.
pub fn vetted_addrs<'a>(
    peer: PeerId,
    addrs: impl IntoIterator<Item = &'a Multiaddr>,
    same_host: bool,
) -> impl Iterator<Item = Multiaddr> {
    addrs
        .into_iter()
        .filter(move |a| is_dialable(a) && (same_host || !is_loopback(a)))
        .take(MAX_ADDRS_PER_PEER)
        .map(move |a| with_peer(a, peer))
}

/// `addr` ending in `/p2p/<peer>` exactly once, so one address is never kept twice.
pub fn with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    let bare: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    bare.with(Protocol::P2p(peer))
}

/// Whether the address is on the loopback interface.
pub fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_not_dialable() {
        let ok: Multiaddr = "/ip4/127.0.0.1/tcp/4000".parse().expect("addr");
        let any: Multiaddr = "/ip4/0.0.0.0/tcp/4000".parse().expect("addr");
        let udp: Multiaddr = "/ip4/127.0.0.1/udp/4000".parse().expect("addr");
        assert!(is_dialable(&ok));
        assert!(!is_dialable(&any));
        assert!(!is_dialable(&udp));
        assert!(is_loopback(&ok));
        assert!(!is_loopback(&"/ip4/10.1.2.3/tcp/1".parse().expect("addr")));
    }
}
