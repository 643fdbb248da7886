//! Each peer's and each host's share of this node: inbound requests beyond a peer's rate, or
//! its host's, are refused before any work is done for them.

use std::net::IpAddr;
use std::time::Instant;

use dht_behaviours::config::MAX_ESTABLISHED;
use libp2p::PeerId;

use super::rate::{RateLimits, peer_key};

/// Inbound kad requests one peer may make per second, sustained. A busy honest client (the
/// standard benchmark's, 400 stores a second through 20 nodes) sends a node about 500.
pub const SERVE_RATE_PER_PEER: u32 = 2_000;
/// Inbound kad requests one peer may make in a burst.
pub const SERVE_BURST_PER_PEER: u32 = 4_000;
/// Peers whose request rate is tracked at once: as many as the connections a node keeps.
pub const MAX_RATED_PEERS: usize = MAX_ESTABLISHED as usize;
/// Inbound kad requests one host (an IPv4 address, an IPv6 /64) may make per second, whatever
/// the identities it runs: four peers' worth. Identities cost nothing, and a host may hold
/// `MAX_CONNECTIONS_PER_IP` (16) connections, so per-peer budgets alone let one host ask for
/// 32,000 a second, more than a node serves (about 13,000 measured with `bench/readflood.sh`).
pub const SERVE_RATE_PER_HOST: u32 = 4 * SERVE_RATE_PER_PEER;
/// Inbound kad requests one host may make in a burst.
pub const SERVE_BURST_PER_HOST: u32 = 4 * SERVE_BURST_PER_PEER;

/// Where an inbound request came from.
#[derive(Debug, Clone, Copy)]
pub struct From {
    /// The peer.
    pub peer: PeerId,
    /// Its host, when hosts are budgeted (see [`super::Input::Request`]).
    pub host: Option<IpAddr>,
    /// Whether it is on this host (its loopback addresses are dialable from here).
    pub same_host: bool,
}

impl From {
    /// A request from `peer`, of `host` (if budgeted), on this host or not.
    pub fn new(peer: PeerId, host: Option<IpAddr>, same_host: bool) -> Self {
        Self {
            peer,
            host,
            same_host,
        }
    }
}

/// A host as a rate key: an IPv4 address whole, an IPv6 address by its /64 (what one host or
/// one customer is given).
pub fn host_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => (4 << 32) | u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return host_key(IpAddr::V4(v4));
            }
            let o = v6.octets();
            u64::from_be_bytes([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
        }
    }
}

/// The request budgets of every peer and every host.
pub(super) struct ServeBudget {
    /// Each peer's ([`SERVE_RATE_PER_PEER`]).
    peers: RateLimits<u64>,
    /// Each host's ([`SERVE_RATE_PER_HOST`]).
    hosts: RateLimits<u64>,
}

impl ServeBudget {
    /// Full budgets for everyone.
    pub fn new() -> Self {
        Self {
            peers: RateLimits::new(SERVE_RATE_PER_PEER, SERVE_BURST_PER_PEER, MAX_RATED_PEERS),
            hosts: RateLimits::new(SERVE_RATE_PER_HOST, SERVE_BURST_PER_HOST, MAX_RATED_PEERS),
        }
    }

    /// Whether a request `from` fits its budgets at `now`, which it is charged to. The host's
    /// budget is charged only for requests within their peer's.
    pub fn take(&mut self, from: &From, now: Instant) -> bool {
        self.peers.take(&peer_key(&from.peer), now)
            && from
                .host
                .is_none_or(|ip| self.hosts.take(&host_key(ip), now))
    }

    /// Forgets the budgets full again at `now`.
    pub fn prune(&mut self, now: Instant) {
        self.peers.prune(now);
        self.hosts.prune(now);
    }
}
