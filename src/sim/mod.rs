//! A deterministic simulator of the node's [`Core`]: many cores over a simulated network with a
//! virtual clock. Messages take a latency drawn from a seeded source, may be lost, are dropped
//! across a partition, and a request to a dead node is refused one latency later (its host
//! answers with a reset, as a killed process's does). Everything follows from the seed: the same
//! seed gives the same run, event for event.
//!
//! [`scenario`] builds the steady state, mass failure, churn and partition runs on top.

mod network;
pub mod scenario;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use std::sync::Arc;

use dht_behaviours::broadcast::{Ack, BroadcastMessage};
use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind};
use dht_behaviours::point::{self, Point};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::core::broadcast::broadcaster::HandoffId;
use crate::core::{
    Action, Clock, Core, CoreConfig, FailureKind, Input, OpError, OpId, OpOk, Report, RequestId,
};

/// The simulated wall clock at the start of a run (2026-01-01): what the cores' broadcast times
/// count from.
pub const SIM_EPOCH: Duration = Duration::from_secs(1_767_225_600);

/// The simulated network's knobs.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Mean one-way latency; each message takes between half and one and a half of it.
    pub latency: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            loss: 0.0,
        }
    }
}

enum Message {
    Request {
        rid: RequestId,
        request: KadRequest,
        /// A request behind it on the same stream: read after it, lost with it.
        then: Option<Box<(RequestId, KadRequest)>>,
    },
    /// `None`: the request was refused (its stream ended unanswered).
    Response {
        rid: RequestId,
        response: Option<KadResponse>,
    },
    /// The node is dead: its host resets the connection.
    Reset { rid: RequestId },
    /// The transport gave up on a request whose request or answer was lost.
    TimedOut { rid: RequestId },
    Broadcast {
        hid: HandoffId,
        message: BroadcastMessage,
    },
    /// `ok: false`: refused, lost, or the node is dead.
    BroadcastAnswer { hid: HandoffId, ok: bool },
    /// A dial to check `peer`'s liveness failed: it left, or sits across a partition.
    DialFailed { peer: PeerId },
}

/// An event due at `at`; events due at the same time run in the order they were scheduled.
struct Scheduled {
    at: Duration,
    seq: u64,
    event: Event,
}

impl Scheduled {
    fn key(&self) -> (Duration, u64) {
        (self.at, self.seq)
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

enum Event {
    Deliver {
        from: usize,
        to: usize,
        message: Box<Message>,
    },
    Wake {
        node: usize,
    },
}

/// One simulated node.
pub struct SimNode {
    /// Its core.
    pub core: Core,
    /// Whether it runs.
    pub alive: bool,
    /// Its side of a partition (messages cross only between equal sides).
    pub side: u8,
    /// A Sybil's host: its core runs (it joins and looks up like any node), but the requests it
    /// receives are answered by [`hollow_answer`]: every PUT acknowledged and none kept, every
    /// lookup answered with no peers.
    pub hollow: bool,
    /// The address its requests come from, fed to the cores it asks as production's driver
    /// does, so per-host budgets and shares run in the simulator too. Each node has its own
    /// (a test may put several on one by setting it).
    pub host: IpAddr,
    wake: Option<Instant>,
}

/// A distinct address for simulated node `i`, spread over the address space as real nodes are
/// (an odd multiplier is a bijection on 32 bits, so no two nodes share one), so networks (/16s)
/// hold few nodes each.
fn host_of(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from((i as u32).wrapping_mul(0x9e37_79b1)))
}

/// What a hollow node answers: the echo of a PUT (an acknowledgement, the record thrown away),
/// no record and no peers to anything else.
fn hollow_answer(request: KadRequest) -> KadResponse {
    match request {
        KadRequest::PutValue { record } => KadResponse {
            record: Some(record),
            ..KadResponse::to(MessageKind::PutValue)
        },
        KadRequest::FindNode { .. } => KadResponse::to(MessageKind::FindNode),
        KadRequest::GetValue { .. } => KadResponse::to(MessageKind::GetValue),
        KadRequest::GetProviders { .. } => KadResponse::to(MessageKind::GetProviders),
        KadRequest::AddProvider { .. } => KadResponse::to(MessageKind::AddProvider),
        KadRequest::Ping => KadResponse::to(MessageKind::Ping),
    }
}

/// Where a value's live copies sit ([`Sim::placement`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    /// Living nodes holding a live copy.
    pub copies: usize,
    /// The rank of the nearest holder among the living nodes by distance to the key.
    pub nearest: Option<usize>,
    /// Holders among the k closest living nodes.
    pub among_k: usize,
}

/// The simulator.
pub struct Sim {
    /// The nodes, by index.
    pub nodes: Vec<SimNode>,
    index: HashMap<PeerId, usize>,
    config: CoreConfig,
    net: NetConfig,
    base: Instant,
    now: Duration,
    /// Events by time, then by the order they were scheduled in.
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    rng: StdRng,
    next_op: OpId,
    /// Ended operations: what they came to and their cost.
    pub results: HashMap<OpId, (Result<OpOk, OpError>, Report)>,
    inbound: HashMap<u64, (usize, RequestId)>,
    inbound_broadcasts: HashMap<u64, (usize, HandoffId)>,
    /// Broadcasts delivered: by which node, from which origin, what.
    pub delivered: Vec<(usize, PeerId, Arc<Vec<u8>>)>,
    /// Broadcast hand-offs sent so far.
    pub handoffs: u64,
    next_inbound: u64,
    /// Messages delivered or lost so far.
    pub messages: u64,
    seed: u64,
}

impl Sim {
    /// An empty network; every core gets `config` (with a seed of its own derived from `seed`).
    pub fn new(config: CoreConfig, net: NetConfig, seed: u64) -> Self {
        Self {
            nodes: Vec::new(),
            index: HashMap::new(),
            config,
            net,
            base: Instant::now(),
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            next_op: 0,
            results: HashMap::new(),
            inbound: HashMap::new(),
            inbound_broadcasts: HashMap::new(),
            delivered: Vec::new(),
            handoffs: 0,
            next_inbound: 0,
            messages: 0,
            seed,
        }
    }

    /// The cores' query deadline.
    pub fn query_timeout(&self) -> Duration {
        self.config.timing.query_timeout
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// The virtual clock as an `Instant` (what the cores are given).
    pub fn now_instant(&self) -> Instant {
        self.instant()
    }

    /// The simulator's own randomness (scenarios draw from it too, so runs stay reproducible).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Adds a node (not yet joined); returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let mut secret = [0u8; 32];
        self.rng.fill(&mut secret);
        // Any 32 bytes are an ed25519 secret.
        let identity =
            Keypair::ed25519_from_bytes(secret).unwrap_or_else(|_| Keypair::generate_ed25519());
        let peer = identity.public().to_peer_id();
        let mut config = self.config.clone();
        config.seed = self.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let clock = Clock::new(self.instant(), SIM_EPOCH + self.now);
        let core = Core::new(identity, config, clock);
        self.index.insert(peer, i);
        self.nodes.push(SimNode {
            core,
            alive: true,
            side: 0,
            hollow: false,
            host: host_of(i),
            wake: None,
        });
        i
    }

    /// A network of `nodes` nodes, each joined through a random earlier one, given 5 s to settle.
    pub fn settled(config: CoreConfig, nodes: usize, seed: u64) -> Self {
        let mut sim = Self::new(config, NetConfig::default(), seed);
        sim.add_node();
        for i in 1..nodes {
            sim.add_node();
            let via = sim.rng.gen_range(0..i);
            sim.join(i, via);
            sim.run_for(Duration::from_millis(50));
        }
        sim.run_for(Duration::from_secs(5));
        sim
    }

    /// The peer id of node `i`.
    pub fn peer(&self, i: usize) -> PeerId {
        *self.nodes[i].core.local()
    }

    /// Node `i` joins through node `via`.
    pub fn join(&mut self, i: usize, via: usize) {
        let peers = vec![(self.peer(via), Vec::new())];
        self.input(i, Input::Join { peers });
    }

    /// Node `i` stores `value` under `key`; returns the operation's number.
    pub fn store(&mut self, i: usize, key: Vec<u8>, value: Vec<u8>) -> OpId {
        let op = self.op();
        self.input(i, Input::Store { op, key, value });
        op
    }

    /// Node `i` fetches `key`.
    pub fn fetch(&mut self, i: usize, key: Vec<u8>) -> OpId {
        let op = self.op();
        self.input(i, Input::Fetch { op, key });
        op
    }

    /// Node `i` looks up the closest peers to `key`.
    pub fn closest(&mut self, i: usize, key: Vec<u8>) -> OpId {
        let op = self.op();
        self.input(i, Input::Closest { op, key });
        op
    }

    /// Node `i` announces itself as a provider of `key` (simulated nodes have no addresses).
    pub fn provide(&mut self, i: usize, key: Vec<u8>) -> OpId {
        let op = self.op();
        self.input(i, Input::Provide { op, key });
        op
    }

    /// Node `i` looks for up to `want` providers of `key`.
    pub fn providers(&mut self, i: usize, key: Vec<u8>, want: usize) -> OpId {
        let op = self.op();
        self.input(i, Input::Providers { op, key, want });
        op
    }

    /// Node `i` looks for `peer`'s addresses.
    pub fn find_peer(&mut self, i: usize, peer: PeerId) -> OpId {
        let op = self.op();
        self.input(i, Input::FindPeer { op, peer });
        op
    }

    /// Node `i` broadcasts `payload`.
    pub fn broadcast(&mut self, i: usize, payload: Vec<u8>) -> OpId {
        let op = self.op();
        self.input(i, Input::Broadcast { op, payload });
        op
    }

    /// Node `from` hands `message` to node `to` as it is, past its own core: what a node that
    /// forges, replays or floods sends. Its answer comes back to `from` under an id its core
    /// never issued (and ignores).
    pub fn hand(&mut self, from: usize, to: usize, message: BroadcastMessage) {
        let hid = HandoffId::MAX - self.next_op;
        self.next_op += 1;
        self.send(from, to, Message::Broadcast { hid, message });
    }

    fn op(&mut self) -> OpId {
        self.next_op += 1;
        self.next_op
    }

    /// Stops node `i` at once (its state is gone; requests to it are refused).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    /// Makes node `i` hollow (a Sybil that acknowledges and keeps nothing), see
    /// [`SimNode::hollow`].
    pub fn make_hollow(&mut self, i: usize) {
        self.nodes[i].hollow = true;
    }

    /// Puts node `i` on `side` of a partition (0 for all: no partition).
    pub fn set_side(&mut self, i: usize, side: u8) {
        self.nodes[i].side = side;
    }

    /// Feeds `input` to node `i` now and carries out its actions.
    pub fn input(&mut self, i: usize, input: Input) {
        if !self.nodes[i].alive {
            return;
        }
        let now = self.instant();
        let actions = self.nodes[i].core.handle(input, now);
        self.apply(i, actions);
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        let seq = self.seq;
        self.queue.push(Reverse(Scheduled { at, seq, event }));
    }
    fn rewake(&mut self, i: usize) {
        let next = self.nodes[i].core.next_wakeup();
        let at = next.saturating_duration_since(self.base).max(self.now);
        let at_instant = self.base + at;
        if self.nodes[i].wake.is_some_and(|w| w <= at_instant) {
            return;
        }
        self.nodes[i].wake = Some(at_instant);
        self.schedule(at, Event::Wake { node: i });
    }

    /// Runs every event up to `until` (virtual time since the start).
    pub fn run_until(&mut self, until: Duration) {
        while self.queue.peek().is_some_and(|Reverse(e)| e.at <= until) {
            let Some(Reverse(Scheduled { at, event, .. })) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.dispatch(event);
        }
        self.now = self.now.max(until);
    }
    /// Runs until the operation `op` ended (or `limit` of virtual time passed); its result.
    pub fn wait(&mut self, op: OpId, limit: Duration) -> Option<&(Result<OpOk, OpError>, Report)> {
        let until = self.now + limit;
        while !self.results.contains_key(&op) && self.now < until {
            let Some(at) = self.queue.peek().map(|Reverse(e)| e.at) else {
                break;
            };
            if at > until {
                break;
            }
            self.run_until(at);
        }
        self.results.get(&op)
    }

    /// Where the live copies of `key` sit now among the living nodes ordered by distance to the
    /// key: how many there are, the rank of the nearest (0 is the closest node of all) and how
    /// many of the k closest hold one. A fetch that misses a value held within the k closest
    /// is a lookup's failure; one held only farther out is replication's.
    pub fn placement(&self, key: &[u8]) -> Placement {
        let k = self.config.k;
        let now = self.instant();
        let record_key = libp2p::kad::RecordKey::new(&key);
        let target = point::of_key(key);
        let mut live: Vec<(Point, bool)> = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| {
                let d = point::distance(target, point::of_peer(n.core.local()));
                (d, n.core.records().get(&record_key, now).is_some())
            })
            .collect();
        live.sort_unstable_by_key(|(d, _)| *d);
        Placement {
            copies: live.iter().filter(|(_, held)| *held).count(),
            nearest: live.iter().position(|(_, held)| *held),
            among_k: live.iter().take(k).filter(|(_, held)| *held).count(),
        }
    }

    /// The latest expiry among the living nodes' live copies of `key`, as simulated time (`None`
    /// when none holds one; a publisher's own copy, which has none, counts as never). Once its
    /// publisher is gone no one renews a value (copies travel with their expiry), so this is
    /// when it ends.
    pub fn latest_expiry(&self, key: &[u8]) -> Option<Duration> {
        let now = self.instant();
        let key = libp2p::kad::RecordKey::new(&key);
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.core.records().get(&key, now))
            .map(|r| {
                r.expires
                    .map_or(Duration::MAX, |e| e.saturating_duration_since(self.base))
            })
            .max()
    }

    /// The living nodes that hold a live copy of `key` now.
    pub fn holders(&self, key: &[u8]) -> usize {
        let now = self.instant();
        let key = libp2p::kad::RecordKey::new(&key);
        self.nodes
            .iter()
            .filter(|n| n.alive && n.core.records().get(&key, now).is_some())
            .count()
    }
}
