//! The event loop: the one task that owns the swarm, and the driver of the node's [`Core`]. Kad
//! policy (the routing table, the records and their admission, lookups, stores, fetches,
//! replication, refresh, hand-off, caching, answers to peers' kad requests) is the core's; this
//! loop feeds it swarm events, handle commands and ticks, and carries out its actions. Peers'
//! standing (offences, blocks, silent peers), bootstrap rounds, the mirrors' feed, broadcast and
//! custom commands are the core's too; the application's command handler runs here, as do node
//! info and persistence. Every pending operation has a deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dht_behaviours::behaviour::{is_loopback, with_peer};
use dht_behaviours::command::CommandReply;
use dht_behaviours::config::MAX_COMMAND_REPLY;
use dht_behaviours::info::{NodeInfo, RoutingPeer};
use dht_behaviours::mirror::{MIRROR_PROTOCOL, MirrorRecord};
use dht_behaviours::store::StoreLimits;
use dht_behaviours::{DhtBehaviour, DhtBehaviourEvent, ProtocolConfig};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::Record;
use libp2p::request_response::{self};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, ping};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, info, trace, warn};

use super::bandwidth::Bandwidth;
use super::persistence::{RecordDb, Writer, restore_providers};
use super::warnings::PeerWarnings;
use crate::command::{Command, CommandHandler, Reply};
use crate::core::joining::bootstrap::DialId;
use crate::core::standing::reputation::Offence;
use crate::core::{Clock, Core, CoreConfig, InboundId, Input, Refusal};
use callers::Caller;
use wires::Wires;

mod actions;
mod callers;
mod commands;
mod kad;
mod maintenance;
mod mirrors;
mod protocols;
mod swarm;
mod wires;
use crate::error::Error;
use crate::event::Event;
use crate::key::Key;
use crate::status::{
    BlockedPeer, Counters, LocalRecord, NodeStatus, PREVIEW_LEN, PeerEntry, RoutingEntry, Stored,
};

/// How often deadlines, bootstrap and expiry are checked.
pub const TICK: Duration = Duration::from_millis(200);
pub use crate::core::commands::MAX_RUNNING_HANDLERS;
pub use crate::core::upkeep::EXPIRY_SWEEP;
/// Dials and node-info requests the handles asked for, pending at once; more are refused with
/// [`Error::Busy`] rather than queued without bound. Each holds a connection attempt or a stream;
/// the core bounds the handles' lookups itself ([`crate::core::MAX_OPERATIONS`]).
pub const MAX_PENDING_REQUESTS: usize = 1024;

type HandlerDone = (InboundId, CommandReply);

/// The application's handler of peers' commands: it runs on its own task, and its answers come
/// back on a channel.
struct Handler {
    app: Option<CommandHandler>,
    done_tx: mpsc::Sender<HandlerDone>,
    done_rx: mpsc::Receiver<HandlerDone>,
}

/// This node's listen addresses and its connections.
struct Net {
    connections: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    /// Connected peers that identify said serve kad, with their addresses (vetted as the core
    /// vets them): what the core re-learns from should its table empty ([`Action::Relearn`]).
    kad_servers: HashMap<PeerId, Vec<Multiaddr>>,
    listen_addrs: Vec<Multiaddr>,
}
pub(crate) struct EventLoop {
    swarm: Swarm<DhtBehaviour>,
    config: ProtocolConfig,
    local: PeerId,
    commands: mpsc::Receiver<Command>,
    events: Arc<broadcast::Sender<Event>>,
    /// The application's handler of peers' commands, and its answers coming back.
    handler: Handler,
    core: Core,
    wires: Wires,
    /// Our listen addresses and connections.
    net: Net,
    counters: Counters,
    started: Instant,
    alive: watch::Sender<()>,
    bandwidth: Arc<Bandwidth>,
    writer: Option<Writer>,
    /// Warnings about peers written this minute (the rest are summarised).
    peer_warnings: PeerWarnings,
}

pub(crate) struct Parts {
    pub swarm: Swarm<DhtBehaviour>,
    pub config: ProtocolConfig,
    pub commands: mpsc::Receiver<Command>,
    pub events: Arc<broadcast::Sender<Event>>,
    pub bootstrap: Vec<Multiaddr>,
    pub listen_addrs: Vec<Multiaddr>,
    pub alive: watch::Sender<()>,
    pub bandwidth: Arc<Bandwidth>,
    pub db: Option<Arc<RecordDb>>,
    /// Bounds of the record store.
    pub store: StoreLimits,
    /// Records read from the data directory, put in the store before anything else happens.
    pub loaded: Vec<Record>,
    /// The node's key (the core signs its broadcasts with it).
    pub identity: Keypair,
    /// The mirrors the operator chose.
    pub mirror_peers: Vec<PeerId>,
    /// The feeders a mirror takes pushes from, as the operator named them.
    pub mirror_feeders: Vec<PeerId>,
}

impl EventLoop {
    pub(crate) fn new(parts: Parts) -> Self {
        let now = Instant::now();
        let swarm = parts.swarm;
        let local = *swarm.local_peer_id();
        let (handler_done_tx, handler_done_rx) = mpsc::channel(MAX_RUNNING_HANDLERS);
        let mut core_config = CoreConfig::new(&parts.config, parts.store, rand::random());
        core_config.mirror_peers = parts.mirror_peers.into_iter().collect();
        core_config.mirror_feeders = parts.mirror_feeders.into_iter().collect();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut core = Core::new(parts.identity, core_config, Clock::new(now, unix));
        let records = restore_providers(parts.db.as_deref(), core.records_mut());
        let total = parts.loaded.len();
        let (mut full, mut invalid) = (0, Vec::new());
        for record in parts.loaded {
            let key = record.key.clone();
            match records.restore(record, now) {
                Ok(()) => {}
                Err(Refusal::Full) => full += 1,
                Err(_) => invalid.push(key),
            }
        }
        if full > 0 {
            warn!(
                full,
                total, "records in the data directory exceed the store's limits; not loaded"
            );
        }
        if !invalid.is_empty() {
            info!(
                invalid = invalid.len(),
                total,
                "records in the data directory no longer valid (an IPNS record past its end of life, a key outside --amino); not loaded"
            );
        }
        // Only what changes from now on is written back, and the rows found invalid go.
        records.store_mut().track_changes();
        records.store_mut().mark_changed(invalid);
        let mut event_loop = Self {
            swarm,
            config: parts.config,
            local,
            commands: parts.commands,
            events: parts.events,
            handler: Handler {
                app: None,
                done_tx: handler_done_tx,
                done_rx: handler_done_rx,
            },
            core,
            wires: Wires::default(),
            net: Net {
                connections: HashMap::new(),
                kad_servers: HashMap::new(),
                listen_addrs: parts.listen_addrs,
            },
            counters: Counters::default(),
            started: now,
            alive: parts.alive,
            bandwidth: parts.bandwidth,
            writer: parts.db.map(|db| Writer::new(db, now)),
            peer_warnings: PeerWarnings::new(now),
        };
        event_loop.drive(Input::Bootstrap {
            addrs: parts.bootstrap,
        });
        event_loop
    }

    /// Blocks the peers given at start.
    pub(crate) fn with_blocks(mut self, peers: &[PeerId]) -> Self {
        for peer in peers {
            self.drive(Input::Block { peer: *peer });
        }
        self
    }

    /// Tells the core what `peer` did (it blocks the peer when that was one offence too many).
    fn offend(&mut self, peer: PeerId, offence: Offence) {
        self.drive(Input::Offence { peer, offence });
    }

    pub(crate) async fn run(mut self) {
        self.announce_addrs();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop_reply = loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Stop { reply }) => {
                        info!("stopping");
                        break Some(reply);
                    }
                    Some(command) => self.on_command(command),
                    None => {
                        debug!("every handle was dropped; stopping");
                        break None;
                    }
                },
                Some((id, reply)) = self.handler.done_rx.recv() => {
                    self.counters.commands_served += 1;
                    self.drive(Input::HandlerDone { id, reply });
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tick.tick() => self.on_tick(),
            }
        };
        // A clean stop writes every change first: `stop()` returning means the data dir is whole.
        if let Some(writer) = self.writer.as_mut() {
            let store = self.core.records_mut();
            for flushed in writer.finish(store, &self.local).await {
                self.counters.count_flush(&flushed);
            }
        }
        if let Some(reply) = stop_reply {
            let _ = reply.send(Ok(()));
        }
        // Everything goes before `alive` does: the swarm (every listener and connection), the
        // pending replies' senders and the database, whose lock a node restarted on the same data
        // dir takes as soon as `stop()` returns. Dropping `alive` then tells waiting handles.
        let alive = std::mem::replace(&mut self.alive, watch::channel(()).0);
        drop(self);
        drop(alive);
    }

    /// The host a peer's request came from, for the core's per-host budget: the IP address of
    /// the connection that carried it. Loopback counts as no host unless the per-IP connection
    /// limit includes it (a local network runs every node on 127.0.0.1).
    fn host_of(&self, peer: &PeerId, connection: ConnectionId) -> Option<std::net::IpAddr> {
        let (_, addr) = self
            .net
            .connections
            .get(peer)?
            .iter()
            .find(|(id, _)| *id == connection)?;
        let ip = dht_behaviours::ip_limits::ip_of(addr)?;
        (self.config.ip_limit.include_loopback || !ip.is_loopback()).then_some(ip)
    }

    fn emit(&self, event: Event) {
        // No subscriber is fine; a slow one learns how many it missed.
        let _ = self.events.send(event);
    }

    fn deadline(&self, d: Duration) -> Instant {
        Instant::now() + d
    }

    /// Ends a pending operation whose deadline passed.
    fn time_out<T>(&mut self, reply: Reply<T>, operation: &'static str, after: Duration) {
        self.counters.errors += 1;
        let _ = reply.send(Err(Error::Timeout { operation, after }));
    }
}

/// Whether an inbound failure means the peer sent bytes our codec could not decode.
fn is_malformed(error: &request_response::InboundFailure) -> bool {
    matches!(error, request_response::InboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_the_peer_id_once() {
        let peer = PeerId::random();
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().expect("addr");
        let full = with_peer(&a, peer);
        assert_eq!(with_peer(&full, peer), full);
        assert!(full.to_string().ends_with(&peer.to_string()));
    }
}
