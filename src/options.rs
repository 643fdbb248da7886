//! Options a node starts from; defaults are named constants.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use dht_behaviours::config::parse_protocol_name;
use dht_behaviours::store::StoreLimits;
use dht_behaviours::{ProtocolConfig, Timing};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};

use crate::error::Result;

/// Listen address of a library node unless told otherwise: every interface, a port the OS picks.
pub const DEFAULT_LIBRARY_LISTEN: &str = "/ip4/0.0.0.0/tcp/0";
/// Events buffered for each subscriber before the slowest one starts missing some.
pub const EVENT_BUFFER: usize = 1024;
/// Bytes of a peer's command an event carries (the handler gets all of it): a slow subscriber
/// makes the node hold at most [`EVENT_BUFFER`] of them, 4 MiB, not 1,024 commands of 1 MiB.
pub const EVENT_PAYLOAD_PREVIEW: usize = 4096;
/// Commands from handles queued for the event loop.
pub const COMMAND_BUFFER: usize = 1024;

/// The transport a node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportKind {
    /// TCP with noise (encryption, authentication) and yamux: the real network.
    #[default]
    Tcp,
    /// libp2p's in-process memory transport with plaintext and yamux: `/memory/<n>` addresses,
    /// reachable only from the same process. No encryption: for simulations and tests only.
    Memory,
}

/// How to start a node.
#[derive(Clone)]
pub struct DhtOptions {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Nodes to join through, with or without `/p2p/<id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// The node's key; a fresh one when `None`.
    pub keypair: Option<Keypair>,
    /// Protocol parameters: kad protocol name, k, alpha, timing.
    pub protocol: ProtocolConfig,
    /// Bounds of the local record store.
    pub store_limits: StoreLimits,
    /// TCP (the default) or the in-process memory transport (simulations).
    pub transport: TransportKind,
    /// Peers refused from the start.
    pub blocked: Vec<PeerId>,
    /// The mirror nodes this node feeds every record it holds (the operator's choice: a peer
    /// that announces the mirror protocol without being listed here gets nothing).
    pub mirror_peers: Vec<PeerId>,
    /// A mirror's feeders: the only peers whose mirror pushes it takes (outside the shares, up
    /// to its store's bounds). Anyone else's push is refused; they store through kad, within
    /// their shares, like at any node.
    pub mirror_feeders: Vec<PeerId>,
    /// Where the node keeps its identity key and its records across restarts; in memory only
    /// (everything lost at stop) when `None`.
    pub data_dir: Option<PathBuf>,
}

impl Default for DhtOptions {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LIBRARY_LISTEN
                .parse()
                .map(|a| vec![a])
                .unwrap_or_default(),
            bootstrap: Vec::new(),
            keypair: None,
            protocol: ProtocolConfig::default(),
            store_limits: StoreLimits::default(),
            transport: TransportKind::Tcp,
            blocked: Vec::new(),
            mirror_peers: Vec::new(),
            mirror_feeders: Vec::new(),
            data_dir: None,
        }
    }
}

impl DhtOptions {
    /// Listen on these addresses instead of the default.
    pub fn listen_on(mut self, addrs: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.listen = addrs.into_iter().collect();
        self
    }

    /// Join the network through this node.
    pub fn bootstrap(mut self, addr: Multiaddr) -> Self {
        self.bootstrap.push(addr);
        self
    }

    /// Use this identity.
    pub fn keypair(mut self, keypair: Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// Store every value on the `k` closest nodes.
    pub fn replication_factor(mut self, k: NonZeroUsize) -> Self {
        self.protocol.replication_factor = k;
        self
    }

    /// Use these deadlines and intervals.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.protocol.timing = timing;
        self
    }

    /// Speak a private kad protocol instead of `/ipfs/kad/1.0.0`.
    pub fn kad_protocol(mut self, name: &str) -> Result<Self> {
        self.protocol.kad_protocol = parse_protocol_name(name)?;
        Ok(self)
    }

    /// Amino mode: behave as a conforming IPFS DHT server (see [`ProtocolConfig::amino`]):
    /// `/ipfs/kad/1.0.0`, k = 20, the standard TTLs and message size, and only `/pk/`, `/ipns/`
    /// and provider records kept.
    ///
    /// [`ProtocolConfig::amino`]: dht_behaviours::ProtocolConfig::amino
    pub fn amino(mut self) -> Self {
        self.protocol = self.protocol.amino();
        self
    }

    /// Use the DHT without serving it: no kad answers, never in routing tables, never a storage
    /// target. For consoles, one-shot commands and light clients.
    pub fn client_mode(mut self, client: bool) -> Self {
        self.protocol.client_mode = client;
        self
    }

    /// Refuse this peer (repeatable).
    pub fn block(mut self, peer: PeerId) -> Self {
        self.blocked.push(peer);
        self
    }

    /// Run on this transport.
    pub fn transport(mut self, transport: TransportKind) -> Self {
        self.transport = transport;
        self
    }

    /// Bound the local store.
    pub fn store_limits(mut self, limits: StoreLimits) -> Self {
        self.store_limits = limits;
        self
    }

    /// Keep the identity key (unless one is given) and the records in `dir`, across restarts.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Run as a mirror node: keep a copy of every record seen in the network (see
    /// [`ProtocolConfig::mirror`]).
    pub fn mirror(mut self, mirror: bool) -> Self {
        self.protocol.mirror = mirror;
        self
    }

    /// Feeds the mirror node `peer` every record held here (repeatable). Only chosen mirrors
    /// are fed.
    pub fn mirror_peer(mut self, peer: PeerId) -> Self {
        if !self.mirror_peers.contains(&peer) {
            self.mirror_peers.push(peer);
        }
        self
    }

    /// As a mirror, takes the mirror pushes of `peer` (repeatable): only named feeders are
    /// mirrored.
    pub fn mirror_feeder(mut self, peer: PeerId) -> Self {
        if !self.mirror_feeders.contains(&peer) {
            self.mirror_feeders.push(peer);
        }
        self
    }
}
