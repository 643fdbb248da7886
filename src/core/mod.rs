//! The node's Kademlia policy as a pure state machine: [`Core::handle`] takes an [`Input`] (a
//! command, an inbound request, an answer or failure of one of our requests, a peer seen, a timer)
//! with the current time, and returns [`Action`]s (send this request, answer that one, reply to
//! that operation). No tokio, no swarm, no `Instant::now()`; randomness from a seeded source. The
//! same code runs under the simulator ([`crate::sim`]) with a virtual clock.
//!
//! `Core` is a composition of machines, each owning its state and decisions and importing
//! nothing above it: [`routing`] (the k-buckets, bounded per network), [`records`] (the store and
//! the one admission policy), [`queries`] with [`query`] and [`outbox`] (the lookups and our
//! requests in flight), `operations` (the handles' operations, bounded), [`standing`] (offences,
//! blocks, silences, back-offs), [`budget`] (each peer's and host's share of our answers),
//! [`joining`] (joins, bootstrap dials, refreshes), [`upkeep`] (when periodic work is due),
//! [`provided`] (the keys provided and their schedule), [`vetting`] (the addresses peers give),
//! [`mirrors`], [`broadcast`] and [`commands`]. One input's handling shares a context (`Cx`: the time, the actions, the query
//! events, the records taken in). What spans machines is the core's glue, in the files above
//! this one: `ops` and `providing` (the handles' operations), [`server`] (answers to peers' kad
//! requests), `peers` (standing and our requests' fates), `join`, [`maintenance`] (the tick) and
//! `protocols` (broadcasts, commands, mirror pushes).

pub mod broadcast;
pub mod budget;
pub mod commands;
pub mod config;
mod context;
mod events;
mod join;
pub mod joining;
pub mod maintenance;
pub mod mirrors;
mod operations;
mod ops;
pub mod outbox;
mod peers;
mod protocols;
pub mod provided;
pub mod providing;
pub mod queries;
pub mod query;
pub mod rate;
pub mod records;
pub mod routing;
pub mod server;
pub mod standing;
mod stats;
pub mod upkeep;
pub mod vetting;

use std::time::Instant;

use dht_behaviours::lookup::CANDIDATES_PER_K;
use libp2p::identity::Keypair;
use libp2p::kad::KBucketKey;
use libp2p::{Multiaddr, PeerId};
use rand::SeedableRng;
use rand::rngs::StdRng;

use broadcast::Broadcast;
pub use config::{BUCKET_SIZE, Clock, CoreConfig};
use context::Cx;
pub use events::{
    Action, CommandId, DialId, HandoffId, InboundId, Input, MirrorId, OpError, OpId, OpOk, Report,
};
use joining::Joining;
use mirrors::Mirrors;
use operations::Operations;
pub use operations::{DEMAND_TRACKED_KEYS, MAX_OPERATIONS};
pub use outbox::{FailureKind, Outgoing, QueryId, RequestId};
use queries::{Outcome, Purpose, Queries, QueryConfig, QueryEvent};
pub use records::{Admitted, Records, Refusal, Source};
use routing::{Inserted, RoutingTable};
use standing::Standing;
pub use standing::offence_for;
pub use stats::CoreStats;
use upkeep::Upkeep;
use vetting::vetted;

/// The configuration of the core tests: replication factor `k`, the fast timing profile.
#[cfg(test)]
pub(crate) fn test_config(k: usize) -> CoreConfig {
    use dht_behaviours::ProtocolConfig;
    let protocol = ProtocolConfig {
        replication_factor: std::num::NonZeroUsize::new(k).unwrap_or(std::num::NonZeroUsize::MIN),
        timing: dht_behaviours::Timing::fast(),
        ..ProtocolConfig::default()
    };
    CoreConfig::new(&protocol, dht_behaviours::store::StoreLimits::default(), 7)
}

#[cfg(test)]
impl Core {
    /// A core of a fresh identity, its wall clock starting at the epoch (tests).
    pub(crate) fn fresh(config: CoreConfig, now: Instant) -> Self {
        Self::new(
            Keypair::generate_ed25519(),
            config,
            Clock::new(now, std::time::Duration::ZERO),
        )
    }
}

/// One node's Kademlia policy.
pub struct Core {
    local: PeerId,
    config: CoreConfig,
    routing: RoutingTable,
    records: Records,
    queries: Queries,
    /// The handles' operations running, and the keys in demand.
    ops: Operations,
    joining: Joining,
    upkeep: Upkeep,
    /// The keys this node provides.
    provided: provided::Provided,
    rng: StdRng,
    stats: CoreStats,
    standing: Standing,
    mirrors: Mirrors,
    broadcast: Broadcast,
    /// Each peer's and each host's share of this node's answers.
    budget: budget::ServeBudget,
    commands: commands::Commands,
}

impl Core {
    /// A core for the node of `identity`, started at `clock`.
    pub fn new(identity: Keypair, config: CoreConfig, clock: Clock) -> Self {
        let local = identity.public().to_peer_id();
        let now = clock.now;
        let t = &config.timing;
        let queries = Queries::new(
            local,
            QueryConfig {
                k: config.k,
                bucket_size: config.bucket_size(),
                alpha: config.alpha,
                query_timeout: t.query_timeout,
                peer_timeout: t.peer_timeout(),
                serving: config.serving,
            },
        );
        Self {
            local,
            routing: RoutingTable::new(local, config.bucket_size()),
            records: Records::new(local, config.store, t, clock).for_amino(config.amino),
            queries,
            ops: Operations::default(),
            joining: Joining::new(now, t.bootstrap_interval),
            upkeep: Upkeep::new(now, t.replication_interval),
            provided: provided::Provided::new(now, t.provide_interval),
            rng: StdRng::seed_from_u64(config.seed),
            stats: CoreStats::default(),
            standing: Standing::default(),
            mirrors: Mirrors::new(local, &config, now),
            broadcast: Broadcast::new(identity, clock),
            budget: budget::ServeBudget::new(),
            commands: commands::Commands::new(config.timing.command_timeout),
            config,
        }
    }

    /// This node's id.
    pub fn local(&self) -> &PeerId {
        &self.local
    }

    /// The routing table.
    pub fn routing(&self) -> &RoutingTable {
        &self.routing
    }

    /// The records.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// The records, for the driver (persistence).
    pub fn records_mut(&mut self) -> &mut Records {
        &mut self.records
    }

    /// What the core did so far.
    pub fn stats(&self) -> CoreStats {
        CoreStats {
            mirrors_ignored: self.mirrors.ignored(),
            broadcasts_delivered: self.broadcast.delivered(),
            broadcasts_refused: self.broadcast.refused(),
            ..self.stats
        }
    }

    /// Broadcast hand-offs awaiting an answer.
    pub fn broadcasts_in_flight(&self) -> usize {
        self.broadcast.in_flight()
    }

    /// Hand-offs to mirrors waiting or in flight.
    pub fn mirror_pending(&self) -> usize {
        self.mirrors.pending()
    }

    /// Hand-offs to mirrors given up (backlog full, or out of tries).
    pub fn mirror_dropped(&self) -> u64 {
        self.mirrors.dropped()
    }

    /// Our commands queued or in flight.
    pub fn commands_pending(&self) -> usize {
        self.commands.pending()
    }

    /// Operations and background queries running.
    pub fn queries(&self) -> usize {
        self.queries.len()
    }

    /// The handles' operations running (stores, fetches, lookups): what their admission counts.
    /// Background work (replication, refresh, joins) has its own bound and never takes their
    /// place.
    pub fn operations(&self) -> usize {
        self.ops.len()
    }

    /// Re-stores (replication and republish) running.
    pub fn restores(&self) -> usize {
        self.upkeep.restores()
    }

    /// Background queries running (replication and republish, refreshes, joins).
    pub fn background_queries(&self) -> usize {
        self.queries.len().saturating_sub(self.ops.len())
    }

    /// Peers of answers left out of lookups so far (beyond k, repeated, blocked or silent).
    pub fn ignored(&self) -> usize {
        self.queries.ignored() + self.standing.left_out
    }

    /// Handles one input at `now`.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut cx = Cx::new(now);
        let had_peers = !self.routing.is_empty();
        self.dispatch(input, &mut cx);
        if had_peers && self.routing.is_empty() {
            self.emptied(&mut cx);
        }
        self.flush(&mut cx);
        for (key, from) in std::mem::take(&mut cx.kept) {
            self.mirrors.record_added(&key, from);
        }
        cx.out
    }

    /// Hands `input` to the machine or the glue that takes it.
    fn dispatch(&mut self, input: Input, cx: &mut Cx) {
        let now = cx.now;
        match input {
            Input::Store { op, key, value } => self.store(op, key, value, cx),
            Input::Fetch { op, key } => self.fetch(op, key, cx),
            Input::Provide { op, key } => self.provide(op, key, cx),
            Input::OwnAddresses { addrs } => self.provided.set_addrs(addrs),
            Input::Providers { op, key, want } => self.find_providers(op, key, want, cx),
            Input::FindPeer { op, peer } => self.find_peer(op, peer, cx),
            Input::Closest { op, key } => self.closest(op, key, cx),
            Input::Command { op, peer, payload } => {
                self.commands.send(op, peer, payload, &self.routing, cx)
            }
            Input::CommandAnswered { id, reply } => {
                self.commands.answered(id, reply, &self.routing, cx)
            }
            Input::CommandFailed { id, reason } => {
                self.commands.failed(id, reason, &self.routing, cx)
            }
            Input::CommandReceived { peer, id, payload } => {
                self.command_received(peer, id, payload, cx)
            }
            Input::HandlerDone { id, reply } => self.commands.handler_done(id, reply, cx),
            Input::SetHandler { present } => self.commands.set_handler(present),
            Input::Broadcast { op, payload } => self.originate(op, payload, cx),
            Input::BroadcastReceived { peer, id, message } => {
                self.broadcast_received(peer, id, message, cx)
            }
            Input::BroadcastAnswered { id } => self.broadcast.answered(id),
            Input::BroadcastFailed { id } => self.handoff_failed(id, cx),
            Input::Join { peers } => self.join(peers, cx),
            Input::Bootstrap { addrs } => self.set_bootstrap(addrs, cx),
            Input::Connected { peer, addr, dial } => self.connected(peer, addr, dial, cx),
            Input::DialFailed { dial } => self.joining.dial_failed(&dial, now),
            Input::NewAddress => self.new_address(cx),
            Input::PeerSeen {
                peer,
                addrs,
                same_host,
            } => self.seen(peer, vetted(peer, &addrs, same_host), cx),
            Input::Mirror { peer, id, record } => self.mirrored(peer, id, record, cx),
            Input::Undialable { peer, wrong_peer } => self.undialable(peer, wrong_peer, cx),
            Input::MirrorSeen {
                peer,
                addrs,
                same_host,
            } => self.mirror_seen(peer, vetted(peer, &addrs, same_host), cx),
            Input::MirrorAcked { id } => self.mirrors.acked(id),
            Input::MirrorFailed { id } => self.mirrors.failed(id),
            Input::Unreachable { peer } => self.unreachable(&peer, cx),
            Input::ConnectionLost { peer } => self.connection_lost(peer, cx),
            Input::Silent { peer } => self.silent(peer, cx),
            Input::Heard { peer } => {
                self.standing.silence.heard_from(&peer, now);
            }
            Input::Offence { peer, offence } => self.offend(peer, offence, cx),
            Input::Block { peer } => self.block(peer, cx),
            Input::Unblock { peer } => self.unblock(peer, cx),
            Input::Request {
                peer,
                id,
                request,
                serving,
                host,
                same_host,
            } => {
                let from = budget::From::new(peer, host, same_host);
                self.serve(from, id, request, serving, cx)
            }
            Input::Response {
                id,
                response,
                same_host,
            } => self.response(id, response, same_host, cx),
            Input::Failure { id, kind } => self.request_failed(id, kind, cx),
            Input::Tick => self.tick(cx),
        }
    }

    /// Turns what the queries want into actions, following up on ended queries (which may start
    /// more) until nothing is left.
    fn flush(&mut self, cx: &mut Cx) {
        while !cx.events.is_empty() {
            for event in std::mem::take(&mut cx.events) {
                self.on_query_event(event, cx);
            }
        }
    }

    fn on_query_event(&mut self, event: QueryEvent, cx: &mut Cx) {
        match event {
            QueryEvent::Send(o) => {
                self.stats.sent += 1;
                cx.out.push(Action::Send(o));
            }
            QueryEvent::Done {
                id,
                outcome,
                requests,
                hops,
                took,
            } => {
                self.upkeep.ended(&id);
                self.provided.ended(&id);
                if self.joining.ended(id, cx.now) {
                    self.refresh_buckets(cx);
                }
                let Some((op, store)) = self.ops.ended(&id) else {
                    return;
                };
                let result = match outcome {
                    Outcome::Stored { kept } => {
                        // A serving node keeps its own copy; a client's store that no peer
                        // kept is lost.
                        let here = store && self.config.serving;
                        if store && !here && kept.is_empty() {
                            Err(OpError::NotKept)
                        } else {
                            Ok(OpOk::Stored { kept, here })
                        }
                    }
                    Outcome::Superseded => Err(OpError::Refused(Refusal::Superseded)),
                    Outcome::Found { record, .. } => Ok(OpOk::Value(record.value)),
                    Outcome::NotFound { unanswered: 0 } => Err(OpError::NotFound),
                    Outcome::NotFound { .. } | Outcome::TimedOut => Err(OpError::Timeout),
                    Outcome::Peers { peers } => Ok(OpOk::Closest(peers)),
                    Outcome::Providers { providers } => Ok(OpOk::Providers(providers)),
                    Outcome::PeerFound { addrs, reached } => Ok(OpOk::PeerAddrs { addrs, reached }),
                    Outcome::Refreshed => return,
                };
                let report = Report {
                    requests,
                    hops,
                    took,
                };
                cx.out.push(Action::Reply { op, result, report });
            }
            QueryEvent::CacheAt { record, peer } => self.cache(record, peer, cx),
            QueryEvent::Correct {
                record,
                from,
                stale,
            } => self.correct(record, from, stale, cx),
            QueryEvent::Lied { peer, error } => self.lied(peer, error, cx),
            QueryEvent::Unkept { peer } => self.unkept(peer, cx),
            QueryEvent::OneoffDone { .. } => {}
            QueryEvent::Check { peer, addrs } => cx.out.push(Action::CheckPeer { peer, addrs }),
        }
    }

    /// Starts a query in the background (maintenance, republishing): its lookup goes first.
    fn start(&mut self, key: Vec<u8>, purpose: Purpose, cx: &mut Cx) -> QueryId {
        self.start_query(key, purpose, false, cx)
    }

    pub(super) fn start_query(
        &mut self,
        key: Vec<u8>,
        purpose: Purpose,
        early: bool,
        cx: &mut Cx,
    ) -> QueryId {
        let target = KBucketKey::new(key.clone());
        let want = match purpose {
            Purpose::Refresh => self.config.bucket_size(),
            _ => self.config.k,
        };
        let mut seeds: Vec<(PeerId, Vec<Multiaddr>)> = self
            .routing
            .closest(&target, CANDIDATES_PER_K * want)
            .into_iter()
            .map(|e| (*e.peer(), e.addrs.clone()))
            .collect();
        // Peers throttling us are left out while others remain (they come back through answers).
        if seeds
            .iter()
            .any(|(p, _)| !self.standing.throttled.is_backed_off(p, cx.now))
        {
            seeds.retain(|(p, _)| !self.standing.throttled.is_backed_off(p, cx.now));
        }
        self.queries
            .start(key, purpose, seeds, early, cx.now, &mut cx.events)
    }

    /// `peer` serves kad: it joins the routing table if there is room (and it is neither blocked
    /// nor silent), and a newcomer gets the records it is now closer to than this node.
    fn seen(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, cx: &mut Cx) {
        if !self.standing.admissible(&peer, cx.now) {
            return;
        }
        match self.routing.insert_at(peer, addrs, cx.now) {
            Inserted::New | Inserted::Replaced(_) => self.hand_off(peer, cx),
            Inserted::Full {
                check: Some((peer, addrs)),
            } => cx.events.push(QueryEvent::Check { peer, addrs }),
            Inserted::Known | Inserted::Full { .. } | Inserted::Crowded | Inserted::Local => {}
        }
    }

    /// A request to `peer` failed; it may leave the table.
    fn failed(&mut self, peer: &PeerId, cx: &mut Cx) {
        if let Some(entry) = self.routing.failed(peer) {
            self.stats.evicted += 1;
            self.joining.left(*entry.peer(), &entry.addrs);
            cx.out.push(Action::Evicted {
                peer: *entry.peer(),
                addrs: entry.addrs,
            });
        }
    }

    /// When the core next has something to do without any other input.
    pub fn next_wakeup(&self) -> Instant {
        let queries = self.queries.next_wakeup();
        let maintenance = self.next_maintenance();
        let soonest = [self.mirrors.next_round(), self.commands.next_deadline()]
            .into_iter()
            .flatten()
            .fold(maintenance, Instant::min);
        queries.map_or(soonest, |q| q.min(soonest))
    }

    /// Heap bytes of the core's own state, records aside (routing table, queries, outbox, demand,
    /// operations), by its own accounting.
    pub fn heap_bytes(&self) -> usize {
        self.routing.heap_bytes()
            + self.queries.heap_bytes()
            + self.ops.heap_bytes()
            + self.upkeep.heap_bytes()
    }
}

#[cfg(test)]
mod fetch_tests;
#[cfg(test)]
mod namespace_tests;
#[cfg(test)]
mod provider_tests;
#[cfg(test)]
mod put_tests;
#[cfg(test)]
mod resolve_tests;
#[cfg(test)]
mod share_tests;
#[cfg(test)]
mod sybil_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod throttle_tests;
#[cfg(test)]
mod upkeep_tests;
