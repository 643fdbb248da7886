//! The event loop: the one task that owns the swarm. Handles talk to it through commands; every
//! pending operation is keyed by its query or request id and has a deadline.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dht_behaviours::behaviour::{is_loopback, vetted_addrs, with_peer};
use dht_behaviours::broadcast::{Broadcaster, FULL_HEIGHT, Handoff};
use dht_behaviours::command::CommandReply;
use dht_behaviours::config::MAX_COMMAND_REPLY;
use dht_behaviours::info::{NodeInfo, RoutingPeer};
use dht_behaviours::mirror::{MIRROR_PROTOCOL, MirrorRecord};
use dht_behaviours::store::is_own;
use dht_behaviours::validation::{RecordError, validate_record};
use dht_behaviours::{DhtBehaviour, DhtBehaviourEvent, ProtocolConfig};
use futures::StreamExt;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, InboundRequest, KBucketKey, Quorum, Record, RecordKey};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, ping};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tracing::{debug, info, trace, warn};

use super::bandwidth::Bandwidth;
use super::bootstrap::Bootstrapper;
use super::command::{Command, CommandHandler, Reply};
use super::mirror_feed::MirrorFeed;
use super::outbound::OutboundCommands;
use super::pending::Pending;
use super::persistence::{RecordDb, Writer};
use super::quota::Quota;
use super::reputation::{BLOCK_DURATION, BlockReason, Offence, Reputation};
use super::silence::Silence;
use lookups::{KadOutbox, Purpose, Query, QueryKey};

mod lookups;
use crate::error::Error;
use crate::event::Event;
use crate::key::Key;
use crate::status::{
    BlockedPeer, Counters, LocalRecord, NodeStatus, PREVIEW_LEN, PeerEntry, RoutingEntry, Stored,
};

/// How often deadlines, bootstrap and expiry are checked.
pub const TICK: Duration = Duration::from_millis(200);
/// How often expired records are swept from the store.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(5);
/// Records handed to one newcomer at once (the rest follow with the periodic replication).
pub const MAX_HANDOFF_PER_PEER: usize = 256;
/// Content keys remembered to tell repeated fetches (demand) from first ones.
pub const DEMAND_TRACKED_KEYS: usize = 4096;
/// A cached copy lives this many times shorter than a stored one.
pub const CACHE_TTL_DIVISOR: u32 = 8;
/// Custom-command handlers running at once; more inbound commands are refused as busy.
pub const MAX_RUNNING_HANDLERS: usize = 256;
/// Network operations (kad queries, dials, info requests) pending at once; more are refused with
/// [`Error::Busy`] rather than queued without bound.
pub const MAX_PENDING_OPERATIONS: usize = 4096;
/// Records re-stored per tick during a replication round.
pub const REPLICATION_PER_TICK: usize = 32;
/// Random keys tried to find one in a given far bucket when refreshing it (as libp2p-kad does).
pub const REFRESH_KEY_TRIES: usize = 16;

type HandlerDone = (ResponseChannel<CommandReply>, CommandReply);
/// A record as a mirror receives it: with the time it has left (our own published copy has no
/// expiry; the mirror's copy gets the TTL, as any holder's).
fn mirror_copy(record: &Record, now: Instant, ttl: Duration) -> MirrorRecord {
    MirrorRecord {
        key: record.key.to_vec(),
        value: record.value.clone(),
        expires_in: record
            .expires
            .map_or(ttl, |at| at.saturating_duration_since(now)),
    }
}

/// A copy of a local record for another node: our own published copy has no expiry, the copy sent
/// gets the TTL; other records keep theirs (sending never extends a life).
fn outgoing_copy(mut record: Record, now: Instant, ttl: Duration) -> Record {
    record.expires = record.expires.or(Some(now + ttl));
    record
}

pub(crate) struct EventLoop {
    swarm: Swarm<DhtBehaviour>,
    config: ProtocolConfig,
    local: PeerId,
    commands: mpsc::Receiver<Command>,
    events: Arc<broadcast::Sender<Event>>,
    handler_done_tx: mpsc::Sender<HandlerDone>,
    handler_done_rx: mpsc::Receiver<HandlerDone>,
    handler: Option<CommandHandler>,
    handler_slots: Arc<Semaphore>,
    queries: Pending<QueryKey, Query>,
    next_query: QueryKey,
    kad_outbox: KadOutbox,
    cmd_ops: Pending<OutboundRequestId, (PeerId, Reply<Vec<u8>>)>,
    broadcaster: Broadcaster,
    bootstrap: Bootstrapper,
    connections: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    listen_addrs: Vec<Multiaddr>,
    counters: Counters,
    started: Instant,
    last_sweep: Instant,
    alive: watch::Sender<()>,
    bandwidth: Arc<Bandwidth>,
    dials: Pending<ConnectionId, Reply<PeerId>>,
    info_ops: Pending<OutboundRequestId, (PeerId, Reply<NodeInfo>)>,
    demand: Demand,
    reputation: Reputation,
    commands_out: OutboundCommands,
    quota: Quota,
    writer: Option<Writer>,
    mirror_feed: MirrorFeed,
    /// The listen addresses of the mirrors we feed (from identify), so that a mirror whose
    /// connection was closed (a missed ping) is dialed again rather than starved of refreshes.
    mirror_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    last_replication: Instant,
    replication: VecDeque<RecordKey>,
    last_refresh: Instant,
    silence: Silence,
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
}

impl EventLoop {
    pub(crate) fn new(parts: Parts) -> Self {
        let now = Instant::now();
        let local = *parts.swarm.local_peer_id();
        let (handler_done_tx, handler_done_rx) = mpsc::channel(MAX_RUNNING_HANDLERS);
        Self {
            swarm: parts.swarm,
            config: parts.config,
            local,
            commands: parts.commands,
            events: parts.events,
            handler_done_tx,
            handler_done_rx,
            handler: None,
            handler_slots: Arc::new(Semaphore::new(MAX_RUNNING_HANDLERS)),
            queries: Pending::new(),
            next_query: 0,
            kad_outbox: KadOutbox::default(),
            cmd_ops: Pending::new(),
            dials: Pending::new(),
            info_ops: Pending::new(),
            demand: Demand::default(),
            commands_out: OutboundCommands::default(),
            quota: Quota::default(),
            reputation: Reputation::default(),
            broadcaster: Broadcaster::new(local),
            bootstrap: Bootstrapper::new(parts.bootstrap, now),
            connections: HashMap::new(),
            listen_addrs: parts.listen_addrs,
            counters: Counters::default(),
            started: now,
            last_sweep: now,
            alive: parts.alive,
            bandwidth: parts.bandwidth,
            writer: parts.db.map(|db| Writer::new(db, now)),
            mirror_feed: MirrorFeed::default(),
            mirror_addrs: HashMap::new(),
            last_replication: now,
            replication: VecDeque::new(),
            last_refresh: now,
            silence: Silence::default(),
        }
    }

    /// Blocks the peers given at start.
    pub(crate) fn with_blocks(mut self, peers: &[PeerId]) -> Self {
        for peer in peers {
            self.reputation.block(*peer);
            self.enforce_block(*peer);
        }
        self
    }

    /// Disconnects and refuses `peer`, and drops it from the routing table.
    fn enforce_block(&mut self, peer: PeerId) {
        let behaviour = self.swarm.behaviour_mut();
        behaviour.blocked.block_peer(peer);
        behaviour.kad.remove_peer(&peer);
    }

    /// Records what `peer` did; blocks it when that was one offence too many.
    fn offend(&mut self, peer: PeerId, offence: Offence) {
        if self.reputation.offend(peer, offence, Instant::now()) {
            warn!(%peer, ?offence, "blocking a misbehaving peer for {BLOCK_DURATION:?}");
            self.counters.peers_blocked += 1;
            self.enforce_block(peer);
        }
    }

    pub(crate) async fn run(mut self) {
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
                Some((channel, reply)) = self.handler_done_rx.recv() => {
                    self.counters.commands_served += 1;
                    if self.swarm.behaviour_mut().command.send_response(channel, reply).is_err() {
                        debug!("custom command reply not sent: the requester is gone");
                    }
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tick.tick() => self.on_tick(),
            }
        };
        // A clean stop writes every change first: `stop()` returning means the data dir is whole.
        if let Some(writer) = self.writer.as_mut() {
            let store = self.swarm.behaviour_mut().kad.store_mut();
            for flushed in writer.finish(store, &self.local).await {
                self.counters.count_flush(&flushed);
            }
        }
        if let Some(reply) = stop_reply {
            let _ = reply.send(Ok(()));
        }
        // Dropping the swarm closes every listener and connection; dropping `alive` then tells
        // waiting handles that the node is gone, and the pending replies' senders go with `self`.
        let EventLoop { swarm, alive, .. } = self;
        drop(swarm);
        drop(alive);
    }

    fn emit(&self, event: Event) {
        // No subscriber is fine; a slow one learns how many it missed.
        let _ = self.events.send(event);
    }

    fn deadline(&self, d: Duration) -> Instant {
        Instant::now() + d
    }

    // ---- commands -------------------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Store { key, value, reply } => self.start_store(key, value, reply),
            Command::Fetch { key, reply } => self.start_fetch(key, reply),
            Command::Lookup { key, reply } => {
                let Some(reply) = self.admit(reply) else {
                    return;
                };
                self.start_query(key.as_bytes().to_vec(), Purpose::Peers { reply });
            }
            Command::CustomCmd {
                peer,
                payload,
                reply,
            } => {
                self.counters.commands_sent += 1;
                let deadline = self.deadline(self.config.timing.command_timeout + TICK);
                self.commands_out.push(peer, payload, reply, deadline);
                self.send_queued_commands(peer);
            }
            Command::SetCommandHandler { handler, reply } => {
                self.handler = handler;
                let _ = reply.send(Ok(()));
            }
            Command::Broadcast { payload, reply } => {
                self.counters.broadcasts_sent += 1;
                let message = self.broadcaster.originate(payload, Instant::now());
                let sent = self.hand_off(&message, 0, FULL_HEIGHT);
                let _ = reply.send(Ok(sent));
            }
            Command::Status { reply } => {
                let _ = reply.send(Ok(self.status()));
            }
            Command::RoutingTable { reply } => {
                let _ = reply.send(Ok(self.routing_table()));
            }
            Command::ConnectedPeers { reply } => {
                let peers = self
                    .connections
                    .iter()
                    .map(|(peer, conns)| PeerEntry {
                        peer: *peer,
                        addrs: conns.iter().map(|(_, a)| a.clone()).collect(),
                    })
                    .collect();
                let _ = reply.send(Ok(peers));
            }
            Command::LocalRecords { reply } => {
                let _ = reply.send(Ok(self.local_records()));
            }
            Command::RemoteInfo { peer, reply } => {
                let Some(reply) = self.admit(reply) else {
                    return;
                };
                let id = self.swarm.behaviour_mut().info.send_request(&peer, ());
                let deadline = self.deadline(self.config.timing.command_timeout + TICK);
                self.info_ops.insert(id, deadline, (peer, reply));
            }
            Command::Block { peer, reply } => {
                info!(%peer, "blocked by the operator");
                self.reputation.block(peer);
                self.enforce_block(peer);
                let _ = reply.send(Ok(()));
            }
            Command::Unblock { peer, reply } => {
                let was = self.reputation.unblock(&peer);
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                let _ = reply.send(Ok(was));
            }
            Command::Blocked { reply } => {
                let now = Instant::now();
                let mut list: Vec<BlockedPeer> = self
                    .reputation
                    .blocked()
                    .map(|(peer, reason)| BlockedPeer {
                        peer: *peer,
                        remaining: match reason {
                            BlockReason::Manual => None,
                            BlockReason::Misbehaved { until } => {
                                Some(until.saturating_duration_since(now))
                            }
                        },
                    })
                    .collect();
                list.sort_by_key(|b| b.peer);
                let _ = reply.send(Ok(list));
            }
            Command::Connect { addr, reply } => {
                let Some(reply) = self.admit(reply) else {
                    return;
                };
                let opts = DialOpts::from(addr.clone());
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        let deadline = self.deadline(self.config.timing.command_timeout);
                        self.dials.insert(id, deadline, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dial {
                            addr: addr.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Stop { reply } => {
                // Handled in `run`; kept total for the compiler.
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// `reply` back when one more network operation may start; otherwise it is answered with
    /// [`Error::Busy`]: every pending operation holds a query and a reply until its deadline, so their
    /// number is bounded.
    fn admit<T>(&mut self, reply: Reply<T>) -> Option<Reply<T>> {
        let pending = self.queries.len() + self.dials.len() + self.info_ops.len();
        if pending < MAX_PENDING_OPERATIONS {
            return Some(reply);
        }
        self.counters.errors += 1;
        let _ = reply.send(Err(Error::Busy { pending }));
        None
    }

    fn start_store(&mut self, key: Key, value: Vec<u8>, reply: Reply<Stored>) {
        // Only handles send stores, and they validated the record before any traffic.
        self.counters.stores_issued += 1;
        let Some(reply) = self.admit(reply) else {
            return;
        };
        let mut record = Record::new(key.to_record_key(), value);
        record.publisher = Some(self.local);
        // The publisher's own copy lives as long as the node; copies elsewhere get the TTL.
        // A client serves nobody, so it keeps no copy.
        let serving = !self.config.client_mode;
        let kad = &mut self.swarm.behaviour_mut().kad;
        if serving && let Err(e) = kad.store_mut().put(record.clone()) {
            self.counters.errors += 1;
            let _ = reply.send(Err(Error::StoreFull(e.to_string())));
            return;
        }
        record.expires = Some(Instant::now() + self.config.timing.record_ttl);
        self.mirror_feed.record_added(&record.key, None);
        let purpose = Purpose::Store {
            record,
            reply: Some(reply),
        };
        self.start_query(key.as_bytes().to_vec(), purpose);
    }

    fn start_fetch(&mut self, key: Key, reply: Reply<Vec<u8>>) {
        self.counters.fetches_issued += 1;
        let record_key = key.to_record_key();
        let kad = &mut self.swarm.behaviour_mut().kad;
        // The store returns only living records (it hides them a margin before their expiry).
        if let Some(r) = kad.store_mut().get(&record_key)
            && validate_record(key.as_bytes(), &r.value).is_ok()
        {
            let _ = reply.send(Ok(r.value.clone()));
            return;
        }
        if kad.kbuckets().next().is_none() {
            self.counters.errors += 1;
            let _ = reply.send(Err(Error::NoPeers));
            return;
        }
        let Some(reply) = self.admit(reply) else {
            return;
        };
        self.start_query(key.as_bytes().to_vec(), Purpose::Fetch { key, reply });
    }

    /// Hands `message` to peers of our buckets `from..to`; returns how many hand-offs were sent.
    fn hand_off(
        &mut self,
        message: &dht_behaviours::broadcast::BroadcastMessage,
        from: u16,
        to: u16,
    ) -> usize {
        let behaviour = self.swarm.behaviour_mut();
        let buckets = behaviour.buckets();
        let plan = self.broadcaster.plan(message, &buckets, from, to);
        let sent = plan.len();
        for (peer, msg) in plan {
            let id = behaviour.broadcast.send_request(&peer, msg.clone());
            self.broadcaster.sent(
                id,
                Handoff {
                    message: msg,
                    tried: vec![peer],
                },
            );
        }
        sent
    }

    fn status(&mut self) -> NodeStatus {
        let local = self.local;
        let kad = &mut self.swarm.behaviour_mut().kad;
        let routing_table_size = kad.kbuckets().map(|b| b.num_entries()).sum();
        let store = kad.store_mut();
        NodeStatus {
            peer_id: local,
            listen_addrs: self
                .listen_addrs
                .iter()
                .map(|a| with_peer(a, local))
                .collect(),
            connected_peers: self.connections.len(),
            routing_table_size,
            stored_keys: store.len(),
            stored_bytes: store.bytes(),
            pending_operations: self.queries.len()
                + self.cmd_ops.len()
                + self.commands_out.queued()
                + self.info_ops.len()
                + self.dials.len()
                + self.broadcaster.in_flight()
                + self.mirror_feed.pending(),
            uptime: self.started.elapsed(),
            counters: self.counters.clone(),
            bytes_in: self.bandwidth.inbound(),
            bytes_out: self.bandwidth.outbound(),
            database: self.writer.as_ref().map(|w| w.path().to_path_buf()),
            mirror: self.config.mirror,
        }
    }

    fn routing_table(&mut self) -> Vec<RoutingEntry> {
        let mut entries = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            let index = bucket.range().0.ilog2().unwrap_or(0);
            for entry in bucket.iter() {
                entries.push(RoutingEntry {
                    bucket: index,
                    peer: *entry.node.key.preimage(),
                    addrs: entry.node.value.iter().cloned().collect(),
                });
            }
        }
        entries.sort_by_key(|e| (e.bucket, e.peer));
        entries
    }

    fn local_records(&mut self) -> Vec<LocalRecord> {
        let local = self.local;
        let now = Instant::now();
        let mut records: Vec<LocalRecord> = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .records()
            .map(|r| LocalRecord {
                key: Key::from_record_key(&r.key),
                size: r.value.len(),
                preview: r.value.iter().take(PREVIEW_LEN).copied().collect(),
                published_here: r.publisher == Some(local),
                expires_in: r.expires.map(|e| e.saturating_duration_since(now)),
            })
            .collect();
        records.sort_by(|a, b| a.key.cmp(&b.key));
        records
    }

    // ---- timers ---------------------------------------------------------------------------

    /// Ends a pending operation whose deadline passed.
    fn time_out<T>(&mut self, reply: Reply<T>, operation: &'static str, after: Duration) {
        self.counters.errors += 1;
        let _ = reply.send(Err(Error::Timeout { operation, after }));
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let command = self.config.timing.command_timeout;
        self.give_up_overdue_requests(now);
        self.expire_queries(now);
        self.widen_slow_fetches(now);
        for (_, (peer, reply)) in self.cmd_ops.take_expired(now) {
            self.commands_out.done(peer);
            self.send_queued_commands(peer);
            self.time_out(reply, "custom command", command);
        }
        for reply in self.commands_out.take_expired(now) {
            self.time_out(reply, "custom command", command);
        }
        for (_, (_, reply)) in self.info_ops.take_expired(now) {
            self.time_out(reply, "info", command);
        }
        for (_, reply) in self.dials.take_expired(now) {
            self.time_out(reply, "connect", command);
        }
        for peer in self.reputation.expired(now) {
            info!(%peer, "block ran out");
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        // kad's `kbuckets` yields only non-empty buckets.
        let joined = self.swarm.behaviour_mut().kad.kbuckets().next().is_some();
        if let Some(addrs) = self.bootstrap.due(now, joined) {
            self.dial_bootstrap(addrs);
        }
        if now.duration_since(self.last_sweep) >= EXPIRY_SWEEP {
            self.last_sweep = now;
            let gone = self
                .swarm
                .behaviour_mut()
                .kad
                .store_mut()
                .remove_expired(now);
            if gone > 0 {
                debug!(gone, "expired records removed");
                let store = self.swarm.behaviour_mut().kad.store_mut();
                self.quota.sweep(|k| store.get(k).is_some());
            }
            self.silence.sweep(now);
        }
        if let Some(writer) = self.writer.as_mut() {
            let store = self.swarm.behaviour_mut().kad.store_mut();
            if let Some(flushed) = writer.tick(store, &self.local, now) {
                self.counters.count_flush(&flushed);
            }
        }
        self.feed_mirrors();
        self.replicate(now);
        self.refresh_routing(now, false);
    }

    /// Dials bootstrap nodes, remembering each dial to tell its outcome.
    fn dial_bootstrap(&mut self, addrs: Vec<Multiaddr>) {
        for addr in addrs {
            debug!(%addr, "dialing bootstrap node");
            let opts = DialOpts::from(addr.clone());
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => self.bootstrap.dialing(id, addr),
                Err(e) => warn!(%addr, "cannot dial bootstrap node: {e}"),
            }
        }
    }

    /// Kademlia's replication, on our lookups: every replication interval each record held here is
    /// re-stored on the k nodes now closest to its key, so that copies follow churn. A record this
    /// node published goes with a renewed life, as by a republish (so a key whose other holders all
    /// died is back on k nodes within one interval; once the publisher is gone, its copies expire
    /// one TTL later); other records keep their expiry, as re-storing never lengthens a life.
    /// Paced at [`REPLICATION_PER_TICK`] records per tick.
    fn replicate(&mut self, now: Instant) {
        if self.config.client_mode {
            return;
        }
        if self.replication.is_empty()
            && now.duration_since(self.last_replication) >= self.config.timing.replication_interval
        {
            self.last_replication = now;
            let store = self.swarm.behaviour_mut().kad.store_mut();
            self.replication
                .extend(store.records().map(|r| r.key.clone()));
        }
        let ttl = self.config.timing.record_ttl;
        for _ in 0..REPLICATION_PER_TICK {
            let Some(key) = self.replication.pop_front() else {
                break;
            };
            let store = self.swarm.behaviour_mut().kad.store_mut();
            let Some(record) = store.get(&key).map(std::borrow::Cow::into_owned) else {
                continue;
            };
            let own = is_own(&record, &self.local);
            let purpose = Purpose::Store {
                record: outgoing_copy(record, now, ttl),
                reply: None,
            };
            self.start_query(key.to_vec(), purpose);
            if own {
                // Mirrors keep a copy only as long as it lives: they are refreshed with holders.
                self.mirror_feed.record_added(&key, None);
            }
        }
    }

    /// Refreshes the routing table with our lookups, as Kademlia's bootstrap does: one for our own
    /// id (which finds and connects our closest neighbours), then one for a random key in each
    /// non-empty bucket beyond the nearest (best effort: keys are hashed, so a key landing in a far
    /// bucket is found by trying [`REFRESH_KEY_TRIES`] random ones), every bootstrap interval and on
    /// joining. The peers they reach enter the table as they connect. libp2p-kad still starts its
    /// own bootstrap while its table holds fewer than 20 peers (that switch is not public): such a
    /// query is ended here at once, so only ours run.
    fn refresh_routing(&mut self, now: Instant, force: bool) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        for mut q in kad.iter_queries_mut() {
            if matches!(q.info(), kad::QueryInfo::Bootstrap { .. }) {
                q.finish();
            }
        }
        let due = now.duration_since(self.last_refresh) >= self.config.timing.bootstrap_interval;
        if !(force || due) {
            return;
        }
        let buckets: Vec<u32> = kad.kbuckets().filter_map(|b| b.range().0.ilog2()).collect();
        if buckets.is_empty() {
            return;
        }
        self.last_refresh = now;
        let missing = self.bootstrap.missing(|peer| {
            self.swarm
                .behaviour_mut()
                .kad
                .kbucket(*peer)
                .is_some_and(|b| b.iter().any(|e| e.node.key.preimage() == peer))
        });
        self.dial_bootstrap(missing);
        let local = KBucketKey::from(self.local);
        let mut targets = vec![self.local.to_bytes()];
        for bucket in buckets.into_iter().skip(1) {
            let mut key: [u8; 32] = rand::random();
            for _ in 1..REFRESH_KEY_TRIES {
                if local.distance(&KBucketKey::new(key.to_vec())).ilog2() == Some(bucket) {
                    break;
                }
                key = rand::random();
            }
            targets.push(key.to_vec());
        }
        for target in targets {
            self.start_query(target, Purpose::Refresh);
        }
    }

    // ---- mirrors --------------------------------------------------------------------------

    /// `peer` speaks the mirror protocol: it gets every record held here, at a steady pace.
    fn mirror_seen(&mut self, peer: PeerId) {
        if self.config.client_mode {
            return;
        }
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let keys: Vec<RecordKey> = store.records().map(|r| r.key.clone()).collect();
        let held = keys.len();
        if self.mirror_feed.add_mirror(peer, keys) {
            info!(%peer, records = held, "mirror node found; sending it the records held here");
        }
    }

    /// Sends the mirrors the next records due, read from the store as they are now.
    fn feed_mirrors(&mut self) {
        let now = Instant::now();
        let ttl = self.config.timing.record_ttl;
        for handoff in self.mirror_feed.due() {
            let behaviour = self.swarm.behaviour_mut();
            let Some(record) = behaviour
                .kad
                .store_mut()
                .get(&handoff.key)
                .map(|r| mirror_copy(&r, now, ttl))
            else {
                continue;
            };
            let addrs = self
                .mirror_addrs
                .get(&handoff.peer)
                .cloned()
                .unwrap_or_default();
            let id = behaviour
                .mirror
                .send_request_with_addresses(&handoff.peer, record, addrs);
            self.mirror_feed.sent(id, handoff);
            self.counters.records_mirrored += 1;
        }
    }

    /// The mirror protocol: a mirror stores what it is handed (validated, within its store's
    /// limits, never living longer than the sender's copy nor than the TTL); a sender only logs.
    fn on_mirror(&mut self, event: request_response::Event<MirrorRecord, ()>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let behaviour = self.swarm.behaviour_mut();
                if behaviour.mirror.send_response(channel, ()).is_err() {
                    debug!(%peer, "mirror acknowledgement not sent: the sender is gone");
                }
                self.counters.stores_served += 1;
                if let Err(e) = validate_record(&request.key, &request.value) {
                    self.counters.records_refused += 1;
                    warn!(%peer, "refused a mirrored record: {e}");
                    self.offend(peer, offence_for(&e));
                    return;
                }
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let key = RecordKey::from(request.key);
                let expires =
                    Instant::now() + request.expires_in.min(self.config.timing.record_ttl);
                // Our own copy stays; so does a copy that outlives the one handed over. Every holder
                // feeds the mirror, each with the life its own copy has left: a holder's older copy
                // must not shorten the publisher's fresh one (on a loaded machine, enough for the
                // mirror's copy to be hidden by the expiry margin until the next refresh).
                let keeps =
                    |r: &Record| is_own(r, &self.local) || r.expires.is_none_or(|a| a >= expires);
                if store.get(&key).is_some_and(|r| keeps(&r)) {
                    return;
                }
                let mut record = Record::new(key, request.value);
                record.expires = Some(expires);
                if let Err(e) = store.put(record) {
                    self.counters.records_refused += 1;
                    debug!(%peer, "could not keep a mirrored record: {e}");
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                if is_malformed(&error) {
                    self.offend(peer, Offence::MalformedMessage);
                }
                debug!(%peer, "mirror request failed: {error}");
            }
            request_response::Event::Message {
                message: request_response::Message::Response { request_id, .. },
                ..
            } => self.mirror_feed.acknowledged(&request_id),
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, "record not mirrored ({error}); retrying unless out of tries");
                self.mirror_feed.failed(&request_id);
            }
            other => trace!(?other, "mirror event"),
        }
    }

    // ---- swarm events ---------------------------------------------------------------------

    fn on_swarm_event(&mut self, event: SwarmEvent<DhtBehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(e)) => self.on_kad(e),
            SwarmEvent::Behaviour(DhtBehaviourEvent::KadClient(e)) => self.on_kad_client(e),
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
                let remote = endpoint.get_remote_address().clone();
                debug!(peer = %peer_id, addr = %remote, "connection established");
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .push((connection_id, remote.clone()));
                if num_established.get() == 1 {
                    self.emit(Event::PeerConnected(peer_id));
                }
                let bootstrap = self.bootstrap.dial_connected(&connection_id, peer_id);
                let asked = self.dials.remove(&connection_id).map(|(_, reply)| reply);
                let joined =
                    asked.is_some() || bootstrap.is_some() || self.bootstrap.is_bootstrap(&remote);
                if let Some(reply) = asked {
                    let _ = reply.send(Ok(peer_id));
                }
                if endpoint.is_dialer() && joined {
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    kad.add_address(&peer_id, with_peer(&remote, peer_id));
                    self.refresh_routing(Instant::now(), true);
                    info!(peer = %peer_id, addr = %remote, "joined the network");
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, ?cause, "connection closed");
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.retain(|(id, _)| *id != connection_id);
                }
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                    self.emit(Event::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                debug!(?peer_id, "dial failed: {error}");
                if let Some((addr, retry)) =
                    self.bootstrap.dial_failed(&connection_id, Instant::now())
                {
                    let reason = dial_reason(&error);
                    if self.bootstrap.is_bootstrap(&addr) {
                        warn!(%addr, "bootstrap node unreachable ({reason}); retrying in {retry:.0?}");
                    } else {
                        debug!(%addr, "former peer unreachable ({reason}); retrying in {retry:.0?}");
                    }
                }
                if let Some((_, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(Error::Dial {
                        addr: dial_target(&error),
                        reason: dial_reason(&error),
                    }));
                }
                // A peer we cannot reach must not be handed out as a closer peer.
                if let Some(peer) = peer_id
                    && matches!(
                        error,
                        DialError::Transport(_) | DialError::WrongPeerId { .. }
                    )
                    && !self.connections.contains_key(&peer)
                {
                    // Remembered for a rejoin only if the address was not someone else's.
                    if matches!(error, DialError::Transport(_)) {
                        self.evict(peer);
                    } else {
                        self.swarm.behaviour_mut().kad.remove_peer(&peer);
                    }
                    self.mirror_addrs.remove(&peer);
                    if self.mirror_feed.remove_mirror(&peer) {
                        debug!(%peer, "mirror unreachable; no more records go to it");
                    }
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                debug!(addr = %send_back_addr, "inbound connection failed: {error}");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(addr = %with_peer(&address, self.local), "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                    // An interface came up: if the node was cut off, that may be its network
                    // back; rejoin and refresh now rather than at the next round or interval.
                    self.bootstrap.retry_now(Instant::now());
                    self.refresh_routing(Instant::now(), true);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                warn!(?addresses, ?reason, "listener closed");
                self.listen_addrs.retain(|a| !addresses.contains(a));
            }
            SwarmEvent::ListenerError { error, .. } => warn!("listener error: {error}"),
            other => trace!(?other, "swarm event"),
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            // kad's own queries: bootstrap, its replication job, hand-offs and cache writes.
            kad::Event::OutboundQueryProgressed { result, .. } => {
                trace!(?result, "kad query progressed");
            }
            kad::Event::InboundRequest { request } => self.on_inbound_kad(request),
            kad::Event::RoutingUpdated {
                peer, is_new_peer, ..
            } => {
                if self.silence.is_silent(&peer, Instant::now()) {
                    // Named by someone else's lookup answer, or a stream opened: not an answer.
                    trace!(%peer, "a silent peer stays out of the routing table");
                    self.swarm.behaviour_mut().kad.remove_peer(&peer);
                    return;
                }
                if is_new_peer {
                    debug!(%peer, "peer added to the routing table");
                    self.hand_off_records(peer);
                }
            }
            other => trace!(?other, "kad event"),
        }
    }

    /// Sends the commands queued for `peer` while it has free slots.
    fn send_queued_commands(&mut self, peer: PeerId) {
        while let Some((payload, reply, deadline)) = self.commands_out.next_to_send(peer) {
            let id = self
                .swarm
                .behaviour_mut()
                .command
                .send_request(&peer, payload);
            self.cmd_ops.insert(id, deadline, (peer, reply));
        }
    }

    /// When a cached copy made now expires: sooner than a stored one, and never later than the
    /// copy it was made from (caching must not lengthen a record's life).
    fn cache_expiry(&self, original: Option<Instant>) -> Instant {
        let cached = Instant::now() + self.config.timing.record_ttl / CACHE_TTL_DIVISOR;
        original.map_or(cached, |e| e.min(cached))
    }

    /// Keeps a fetched value here as a cached copy (serving nodes only).
    fn cache_here(&mut self, mut record: Record) {
        if self.config.client_mode {
            return;
        }
        record.expires = Some(self.cache_expiry(record.expires));
        if self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .put(record)
            .is_ok()
        {
            debug!("caching a fetched value here");
            self.counters.values_cached += 1;
        }
    }

    /// Kademlia's hand-off: a new peer closer to a key than this node gets the record now, not at
    /// the next replication round. At most [`MAX_HANDOFF_PER_PEER`] records go at once; the periodic
    /// replication covers the rest.
    fn hand_off_records(&mut self, peer: PeerId) {
        if self.config.client_mode {
            return;
        }
        let here = KBucketKey::from(self.local);
        let newcomer = KBucketKey::from(peer);
        let now = Instant::now();
        let ttl = self.config.timing.record_ttl;
        let kad = &mut self.swarm.behaviour_mut().kad;
        let records: Vec<Record> = kad
            .store_mut()
            .records()
            .filter(|r| {
                let target = KBucketKey::new(r.key.to_vec());
                target.distance(&newcomer) < target.distance(&here)
            })
            .take(MAX_HANDOFF_PER_PEER)
            .map(|r| outgoing_copy(r.into_owned(), now, ttl))
            .collect();
        if !records.is_empty() {
            debug!(%peer, records = records.len(), "handing records to a closer newcomer");
        }
        for record in records {
            self.counters.records_handed_off += 1;
            kad.put_record_to(record, std::iter::once(peer), Quorum::One);
        }
    }

    fn on_inbound_kad(&mut self, request: InboundRequest) {
        match request {
            InboundRequest::PutRecord {
                source,
                record: Some(record),
                ..
            } => {
                self.counters.stores_served += 1;
                if let Err(e) = validate_record(record.key.as_ref(), &record.value) {
                    self.counters.records_refused += 1;
                    warn!(peer = %source, "refused a record: {e}");
                    self.offend(source, offence_for(&e));
                    return;
                }
                // A mirror takes everything; its store limits still hold.
                let mirror = self.config.mirror;
                if !mirror && !self.quota.admits(&source, &record.key) {
                    self.counters.records_refused += 1;
                    debug!(peer = %source, "refused a record: the peer's quota is used up");
                    return;
                }
                let key = record.key.clone();
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let held = store.get(&key);
                // Our own published copy is the one we republish: a copy sent back to us (from a
                // mirror, say, which does not keep publishers) must not replace it.
                if held.as_ref().is_some_and(|r| is_own(r, &self.local)) {
                    return;
                }
                // kad shortens the life of a record stored far from its key; a mirror, far from
                // most keys, keeps the longer life it was given by the mirror protocol (no expiry
                // is the longest).
                let outlives = |r: &Record| {
                    r.expires
                        .is_none_or(|a| record.expires.is_some_and(|b| a >= b))
                };
                if self.config.mirror && held.as_ref().is_some_and(|r| outlives(r)) {
                    return;
                }
                let new = held.is_none();
                let mirrored = new && self.mirror_feed.has_mirrors();
                match store.put(record) {
                    Ok(()) => {
                        if mirrored {
                            self.mirror_feed.record_added(&key, Some(source));
                        }
                        if !mirror {
                            self.quota.stored(source, key);
                        }
                    }
                    Err(e) => {
                        self.counters.records_refused += 1;
                        warn!(peer = %source, "could not store a record: {e}");
                    }
                }
            }
            InboundRequest::AddProvider {
                record: Some(record),
            } => {
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .add_provider(record)
                {
                    debug!("provider record not stored: {e}");
                }
            }
            InboundRequest::GetRecord { .. } => self.counters.fetches_served += 1,
            other => trace!(?other, "inbound kad request"),
        }
    }

    fn on_command_protocol(&mut self, event: request_response::Event<Vec<u8>, CommandReply>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    self.emit(Event::CommandReceived {
                        peer,
                        payload: request.clone(),
                    });
                    self.answer_command(peer, request, channel);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some((_, (peer, reply))) = self.cmd_ops.remove(&request_id) {
                        self.commands_out.done(peer);
                        self.send_queued_commands(peer);
                        let _ = reply.send(match response {
                            CommandReply::Ok(bytes) => Ok(bytes),
                            CommandReply::Refused(reason) => {
                                self.counters.errors += 1;
                                Err(Error::CommandRefused { peer, reason })
                            }
                        });
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, (_, reply))) = self.cmd_ops.remove(&request_id) {
                    self.commands_out.done(peer);
                    self.send_queued_commands(peer);
                    self.counters.errors += 1;
                    let _ = reply.send(Err(match error {
                        request_response::OutboundFailure::Timeout => Error::Timeout {
                            operation: "custom command",
                            after: self.config.timing.command_timeout,
                        },
                        other => Error::CommandFailed {
                            peer,
                            reason: other.to_string(),
                        },
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, "inbound custom command failed: {error}");
                if is_malformed(&error) {
                    self.offend(peer, Offence::MalformedMessage);
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn answer_command(
        &mut self,
        peer: PeerId,
        payload: Vec<u8>,
        channel: ResponseChannel<CommandReply>,
    ) {
        let refuse = |this: &mut Self, channel, reason: &str| {
            let reply = CommandReply::Refused(reason.to_owned());
            if this
                .swarm
                .behaviour_mut()
                .command
                .send_response(channel, reply)
                .is_err()
            {
                debug!("custom command refusal not sent: the requester is gone");
            }
        };
        let Some(handler) = self.handler.clone() else {
            return refuse(self, channel, "no command handler registered");
        };
        let Ok(permit) = self.handler_slots.clone().try_acquire_owned() else {
            return refuse(self, channel, "busy: too many commands in progress");
        };
        let done = self.handler_done_tx.clone();
        let timeout = self.config.timing.command_timeout;
        tokio::spawn(run_handler(
            handler, peer, payload, channel, done, timeout, permit,
        ));
    }

    fn on_broadcast(
        &mut self,
        event: request_response::Event<
            dht_behaviours::broadcast::BroadcastMessage,
            dht_behaviours::broadcast::Ack,
        >,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let receipt = self.broadcaster.receive(&request, Instant::now());
                    if self
                        .swarm
                        .behaviour_mut()
                        .broadcast
                        .send_response(channel, receipt.ack)
                        .is_err()
                    {
                        debug!(%peer, "broadcast ack not sent");
                    }
                    if receipt.deliver {
                        self.counters.broadcasts_received += 1;
                        self.emit(Event::Broadcast {
                            origin: request.origin,
                            payload: request.payload.as_ref().clone(),
                        });
                    }
                    if let Some((from, to)) = receipt.forward {
                        self.hand_off(&request, from, to);
                    }
                }
                request_response::Message::Response { request_id, .. } => {
                    self.broadcaster.answered(&request_id);
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, "broadcast hand-off failed: {error}");
                let buckets = self.swarm.behaviour_mut().buckets();
                if let Some((next, handoff)) = self.broadcaster.failed(&request_id, &buckets) {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .broadcast
                        .send_request(&next, handoff.message.clone());
                    self.broadcaster.sent(id, handoff);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, "inbound broadcast failed: {error}");
                if is_malformed(&error) {
                    self.offend(peer, Offence::MalformedMessage);
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_info(&mut self, event: request_response::Event<(), NodeInfo>) {
        match event {
            request_response::Event::Message { message, .. } => match message {
                request_response::Message::Request { channel, .. } => {
                    let info = self.node_info();
                    if self
                        .swarm
                        .behaviour_mut()
                        .info
                        .send_response(channel, info)
                        .is_err()
                    {
                        debug!("info answer not sent: the requester is gone");
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some((_, (_, reply))) = self.info_ops.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, (_, reply))) = self.info_ops.remove(&request_id) {
                    let _ = reply.send(Err(Error::CommandFailed {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            other => trace!(?other, "info event"),
        }
    }

    fn node_info(&mut self) -> NodeInfo {
        let status = self.status();
        NodeInfo {
            peer_id: status.peer_id.to_string(),
            agent_version: self.config.agent_version.clone(),
            listen_addrs: status
                .listen_addrs
                .iter()
                .map(ToString::to_string)
                .collect(),
            connected_peers: status.connected_peers,
            routing_table: self
                .routing_table()
                .into_iter()
                .map(|e| RoutingPeer {
                    peer: e.peer.to_string(),
                    bucket: e.bucket,
                })
                .collect(),
            stored_keys: status.stored_keys,
            stored_bytes: status.stored_bytes,
            uptime_secs: status.uptime.as_secs(),
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        if let identify::Event::Received { peer_id, info, .. } = event {
            self.silence.heard_from(&peer_id, Instant::now());
            let same_host = self.on_same_host(&peer_id);
            let added = self
                .swarm
                .behaviour_mut()
                .learn_from_identify(&peer_id, &info, same_host);
            debug!(peer = %peer_id, agent = %info.agent_version, added, "identified");
            if info.protocols.contains(&MIRROR_PROTOCOL) && peer_id != self.local {
                self.mirror_seen(peer_id);
                if self.mirror_feed.is_mirror(&peer_id) {
                    let addrs = vetted_addrs(peer_id, &info.listen_addrs, same_host).collect();
                    self.mirror_addrs.insert(peer_id, addrs);
                }
            }
        }
    }

    /// Whether `peer` is connected over loopback, so on this host: its loopback addresses are its.
    fn on_same_host(&self, peer: &PeerId) -> bool {
        self.connections
            .get(peer)
            .is_some_and(|conns| conns.iter().any(|(_, a)| is_loopback(a)))
    }

    fn on_ping(&mut self, event: ping::Event) {
        match event.result {
            Ok(_) => {
                self.silence.heard_from(&event.peer, Instant::now());
            }
            // A peer that does not speak ping is not a dead one.
            Err(ping::Failure::Unsupported) => {}
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
                    // Counted once per quarantine: each connection to a cut peer times out.
                    if let Some(held) = self.silence.silenced(event.peer, Instant::now()) {
                        debug!(peer = %event.peer, "ping timed out; closing the connection, evicting the peer, holding it out for {held:?}");
                        self.offend(event.peer, Offence::Unanswered);
                    } else {
                        debug!(peer = %event.peer, "ping timed out on another connection; closing it");
                    }
                } else {
                    debug!(peer = %event.peer, "ping failed ({e}); closing the connection and evicting the peer");
                }
                if self.evict(event.peer) {
                    self.counters.peers_evicted += 1;
                }
            }
        }
    }

    /// Drops `peer` from the routing table, remembering its addresses for a rejoin should this
    /// node end up cut off. Whether it was there.
    fn evict(&mut self, peer: PeerId) -> bool {
        let Some(entry) = self.swarm.behaviour_mut().kad.remove_peer(&peer) else {
            return false;
        };
        self.bootstrap.peer_left(peer, entry.node.value.iter());
        true
    }
}

async fn run_handler(
    handler: CommandHandler,
    peer: PeerId,
    payload: Vec<u8>,
    channel: ResponseChannel<CommandReply>,
    done: mpsc::Sender<HandlerDone>,
    timeout: Duration,
    _permit: OwnedSemaphorePermit,
) {
    let reply = match tokio::time::timeout(timeout, handler(peer, payload)).await {
        Ok(Ok(bytes)) if bytes.len() <= MAX_COMMAND_REPLY => CommandReply::Ok(bytes),
        Ok(Ok(bytes)) => CommandReply::Refused(format!(
            "reply of {} bytes exceeds the limit of {MAX_COMMAND_REPLY}",
            bytes.len()
        )),
        Ok(Err(reason)) => CommandReply::Refused(reason),
        Err(_) => CommandReply::Refused("the handler timed out".to_owned()),
    };
    // The loop is gone only when the node stops; then nobody needs the reply.
    let _ = done.send((channel, reply)).await;
}

/// The peers a record goes to: the `k` nodes closest to `key` among the peers found and, when it
/// serves (`local_counts`), this node itself, which keeps its own copy and is left out.
pub(crate) fn replication_targets(
    local: &PeerId,
    local_counts: bool,
    key: &[u8],
    peers: impl Iterator<Item = PeerId>,
    k: usize,
) -> Vec<PeerId> {
    let target = KBucketKey::new(key.to_vec());
    let mut all: Vec<PeerId> = peers.filter(|p| p != local).collect();
    all.sort_unstable();
    all.dedup();
    if local_counts {
        all.push(*local);
    }
    all.sort_by_cached_key(|p| target.distance(&KBucketKey::from(*p)));
    all.into_iter().take(k).filter(|p| p != local).collect()
}

/// The offence a refused record amounts to.
fn offence_for(error: &RecordError) -> Offence {
    match error {
        RecordError::ContentMismatch => Offence::ForgedContent,
        _ => Offence::InvalidRecord,
    }
}

/// Whether an inbound failure means the peer sent bytes our codec could not decode.
fn is_malformed(error: &request_response::InboundFailure) -> bool {
    matches!(error, request_response::InboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData)
}

/// Which content keys this node fetched lately, to tell popular ones. Bounded: it forgets
/// everything when [`DEMAND_TRACKED_KEYS`] are tracked.
#[derive(Default)]
struct Demand {
    seen: std::collections::HashSet<Key>,
}

impl Demand {
    /// Records a fetch of `key`; whether it was fetched before.
    fn repeated(&mut self, key: &Key) -> bool {
        if self.seen.contains(key) {
            return true;
        }
        if self.seen.len() >= DEMAND_TRACKED_KEYS {
            self.seen.clear();
        }
        self.seen.insert(key.clone());
        false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_k_closest_without_self() {
        let local = PeerId::random();
        let peers: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
        let key = b"some key";
        let targets = replication_targets(&local, true, key, peers.iter().copied(), 3);
        let client = replication_targets(&local, false, key, peers.iter().copied(), 3);
        assert_eq!(client.len(), 3);
        assert!(!client.contains(&local));
        let target = KBucketKey::new(key.to_vec());
        let mut everyone = peers.clone();
        everyone.push(local);
        everyone.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
        let expected: Vec<PeerId> = everyone
            .into_iter()
            .take(3)
            .filter(|p| *p != local)
            .collect();
        assert_eq!(targets, expected);
        assert!(targets.len() == 3 || targets.len() == 2);
    }

    #[test]
    fn addresses_get_the_peer_id_once() {
        let peer = PeerId::random();
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().expect("addr");
        let full = with_peer(&a, peer);
        assert_eq!(with_peer(&full, peer), full);
        assert!(full.to_string().ends_with(&peer.to_string()));
    }
}
