//! Broadcast through the core: a message of ours goes to peers of every bucket, a received one is
//! delivered once and forwarded to the buckets below its height, a failed hand-off is retried
//! with another peer of its bucket ([`Broadcaster`]). The table the plan is drawn from and the
//! randomness are the core's, so the simulator runs broadcast as the node does.

pub mod broadcaster;

use std::sync::Arc;
use std::time::Instant;

use dht_behaviours::broadcast::{BroadcastMessage, FULL_HEIGHT, NONCE_LEN};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use rand::Rng;
use rand::rngs::StdRng;

use super::config::Clock;
use super::context::Cx;
use super::events::{Action, InboundId, OpError, OpId, OpOk};
use super::routing::RoutingTable;
use super::standing::reputation::Offence;
use broadcaster::{BroadcastRefusal, Broadcaster, Bucket, Handoff, HandoffId};

/// This node's part in broadcasts: its own signed and spread, peers' delivered once and passed
/// down the buckets.
pub(super) struct Broadcast {
    broadcaster: Broadcaster,
    /// Signs this node's broadcasts.
    identity: Keypair,
    /// The wall clock, for message times.
    clock: Clock,
    next_handoff: HandoffId,
    delivered: u64,
    refused: u64,
}

impl Broadcast {
    /// The broadcasts of the node of `identity`, its wall clock read from `clock`.
    pub fn new(identity: Keypair, clock: Clock) -> Self {
        let local = identity.public().to_peer_id();
        Self {
            broadcaster: Broadcaster::new(local),
            identity,
            clock,
            next_handoff: 0,
            delivered: 0,
            refused: 0,
        }
    }

    /// Hand-offs awaiting an answer.
    pub fn in_flight(&self) -> usize {
        self.broadcaster.in_flight()
    }

    /// Messages delivered to the application so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Messages refused so far (forged, too old, seen, over a forwarder's rate).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Broadcasts `payload` from this node to the peers of `routing`; the reply says how many
    /// hand-offs went out.
    pub fn originate(
        &mut self,
        op: OpId,
        payload: Vec<u8>,
        routing: &RoutingTable,
        rng: &mut StdRng,
        cx: &mut Cx,
    ) {
        let nonce: [u8; NONCE_LEN] = rng.r#gen();
        let unix_ms = self.clock.unix_ms_at(cx.now);
        match self
            .broadcaster
            .originate(&self.identity, payload, nonce, unix_ms, cx.now)
        {
            Ok(message) => {
                let sent = self.spread(&message, 0, FULL_HEIGHT, routing, rng, cx);
                cx.out.push(Action::reply(op, Ok(OpOk::Broadcast { sent })));
            }
            Err(refusal) => cx.out.push(Action::reply(
                op,
                Err(OpError::BroadcastRefused(refusal.to_string())),
            )),
        }
    }

    /// `peer` (`blocked` or not) handed us `message` (inbound request `id`). What `peer` did
    /// wrong, if anything: a forged message is the forwarder's doing, since an honest node
    /// forwards only what it verified.
    #[allow(clippy::too_many_arguments)] // a message, its sender and where it goes next
    pub fn received(
        &mut self,
        peer: PeerId,
        blocked: bool,
        id: InboundId,
        message: BroadcastMessage,
        routing: &RoutingTable,
        rng: &mut StdRng,
        cx: &mut Cx,
    ) -> Option<Offence> {
        if blocked {
            cx.out.push(Action::AnswerBroadcast { id, ack: None });
            return None;
        }
        let unix_ms = self.clock.unix_ms_at(cx.now);
        let receipt = self.broadcaster.receive(&peer, &message, cx.now, unix_ms);
        let offence = match &receipt.refusal {
            Some(BroadcastRefusal::Forged(_)) => Some(Offence::ForgedBroadcast),
            _ => None,
        };
        if receipt.refusal.is_some() {
            self.refused += 1;
        }
        cx.out.push(Action::AnswerBroadcast {
            id,
            ack: Some(receipt.ack),
        });
        if receipt.deliver {
            self.delivered += 1;
            cx.out.push(Action::Deliver {
                origin: message.origin,
                payload: Arc::clone(&message.payload),
            });
        }
        if let Some((from, to)) = receipt.forward {
            self.spread(&message, from, to, routing, rng, cx);
        }
        offence
    }

    /// A hand-off was answered.
    pub fn answered(&mut self, id: HandoffId) {
        self.broadcaster.answered(&id);
    }

    /// A hand-off failed: another peer of its bucket, if one is left to try.
    pub fn failed(&mut self, id: HandoffId, routing: &RoutingTable, rng: &mut StdRng, cx: &mut Cx) {
        let buckets = buckets(routing);
        if let Some((peer, handoff)) = self.broadcaster.failed(&id, &buckets, rng) {
            self.send_handoff(peer, handoff, routing, cx);
        }
    }

    /// Forgets what is too old to matter at `now` (messages seen, forwarders' rates).
    pub fn prune(&mut self, now: Instant) {
        self.broadcaster.prune(now);
    }

    /// Hands `message` to peers of our buckets `from..to`; how many hand-offs went out.
    fn spread(
        &mut self,
        message: &BroadcastMessage,
        from: u16,
        to: u16,
        routing: &RoutingTable,
        rng: &mut StdRng,
        cx: &mut Cx,
    ) -> usize {
        let buckets = buckets(routing);
        let plan = self.broadcaster.plan(message, &buckets, from, to, rng);
        let sent = plan.len();
        for (peer, message) in plan {
            let handoff = Handoff {
                message,
                tried: vec![peer],
            };
            self.send_handoff(peer, handoff, routing, cx);
        }
        sent
    }

    fn send_handoff(
        &mut self,
        peer: PeerId,
        handoff: Handoff,
        routing: &RoutingTable,
        cx: &mut Cx,
    ) {
        let id = self.next_handoff;
        self.next_handoff += 1;
        let message = handoff.message.clone();
        self.broadcaster.sent(id, handoff);
        let addrs = routing
            .get(&peer)
            .map(|e| e.addrs.clone())
            .unwrap_or_default();
        cx.out.push(Action::Broadcast {
            id,
            peer,
            addrs,
            message,
        });
    }
}

/// The routing table as buckets of peers (index: log2 of the distance), for the plan.
fn buckets(routing: &RoutingTable) -> Vec<Bucket> {
    routing
        .buckets()
        .map(|(index, entries)| Bucket {
            index: u16::try_from(index).unwrap_or(u16::MAX),
            peers: entries.iter().map(|e| *e.peer()).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::time::Duration;

    use dht_behaviours::broadcast::{BroadcastMessage, NONCE_LEN};
    use dht_behaviours::config::{BROADCAST_REDUNDANCY, FORWARDER_BURST, MAX_BROADCAST_AGE};
    use dht_behaviours::store::StoreLimits;
    use dht_behaviours::{ProtocolConfig, Timing};
    use libp2p::identity::Keypair;

    use super::super::{CoreConfig, OpOk};
    use crate::sim::{NetConfig, Sim};

    fn network(n: usize, seed: u64) -> Sim {
        let protocol = ProtocolConfig {
            timing: Timing::fast(),
            ..ProtocolConfig::default()
        };
        let config = CoreConfig::new(&protocol, StoreLimits::default(), 0);
        let mut sim = Sim::new(config, NetConfig::default(), seed);
        sim.add_node();
        for i in 1..n {
            sim.add_node();
            sim.join(i, 0);
            sim.run_for(Duration::from_millis(200));
        }
        sim.run_for(Duration::from_secs(5));
        sim
    }

    /// How many times each node delivered `payload`.
    fn deliveries(sim: &Sim, payload: &[u8]) -> HashMap<usize, usize> {
        let mut counts = HashMap::new();
        for (node, _, p) in &sim.delivered {
            if p.as_slice() == payload {
                *counts.entry(*node).or_insert(0) += 1;
            }
        }
        counts
    }

    #[test]
    fn a_broadcast_reaches_every_other_node_exactly_once() {
        let n = 300;
        let mut sim = network(n, 11);
        let origin = 7;
        let payloads: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
        let ops: Vec<_> = payloads
            .iter()
            .map(|p| sim.broadcast(origin, p.clone()))
            .collect();
        sim.run_for(Duration::from_secs(10));
        for op in ops {
            let sent = match sim.results.get(&op) {
                Some((Ok(OpOk::Broadcast { sent }), _)) => *sent,
                other => panic!("broadcast ended with {other:?}"),
            };
            assert!(sent >= 2, "hand-offs to the buckets: {sent}");
        }
        for payload in &payloads {
            let counts = deliveries(&sim, payload);
            assert!(
                !counts.contains_key(&origin),
                "not delivered back to its origin"
            );
            assert_eq!(counts.len(), n - 1, "every other node");
            assert!(counts.values().all(|c| *c == 1), "each exactly once");
        }
        // Kadcast's cost: a small multiple of the redundancy per node (4.7 here, with 2), where
        // flooding would send one per routing-table entry (about 100 here).
        let per_node = sim.handoffs as f64 / (payloads.len() * n) as f64;
        let bound = (3 * BROADCAST_REDUNDANCY) as f64;
        assert!(
            per_node <= bound,
            "{per_node:.2} hand-offs per node and broadcast"
        );
    }

    /// A flood from two attacking nodes: one forges messages in another node's name, one hands
    /// out valid messages of 400 fresh identities at once and replays a genuine one later.
    /// Nothing forged is delivered and its sender is blocked everywhere it tried; the flood takes
    /// each victim's forwarder budget and no more; no node delivers any message twice; and a
    /// genuine broadcast sent during the flood still reaches every node.
    #[test]
    fn under_a_flood_of_forged_fresh_and_replayed_messages_each_node_delivers_each_once() {
        let n = 60;
        let mut sim = network(n, 13);
        let (forger, flooder, victim_origin) = (0, 1, 5);
        let now_ms = |sim: &Sim| {
            u64::try_from((crate::sim::SIM_EPOCH + sim.elapsed()).as_millis()).expect("fits")
        };
        // Forged: signed by the forger's own key, claiming node 5 as origin.
        // Keys from fixed secrets: the run is reproducible.
        let key = |i: u32| {
            let mut secret = [0x5a; 32];
            secret[..4].copy_from_slice(&i.to_be_bytes());
            Keypair::ed25519_from_bytes(secret).expect("any 32 bytes are a secret")
        };
        let forger_key = key(u32::MAX);
        for to in 2..n {
            let mut m = BroadcastMessage::originate(
                &forger_key,
                now_ms(&sim),
                [to as u8; NONCE_LEN],
                b"forged".to_vec(),
            )
            .expect("sign");
            m.origin = sim.peer(victim_origin);
            sim.hand(forger, to, m);
        }
        // Fresh: 400 valid messages of 400 new identities, to each of 3 victims.
        let sybils: Vec<BroadcastMessage> = (0..400u32)
            .map(|i| {
                let mut payload = b"sybil ".to_vec();
                payload.extend_from_slice(&i.to_be_bytes());
                BroadcastMessage::originate(&key(i), now_ms(&sim), [0; NONCE_LEN], payload)
                    .expect("sign")
            })
            .collect();
        for to in 2..5 {
            for m in &sybils {
                sim.hand(flooder, to, m.clone());
            }
        }
        let genuine = b"genuine".to_vec();
        sim.broadcast(9, genuine.clone());
        sim.run_for(Duration::from_secs(20));
        // A replay of a genuine message, within its window and after it.
        let recorded = BroadcastMessage::originate(
            &key(u32::MAX - 1),
            now_ms(&sim),
            [1; NONCE_LEN],
            b"recorded".to_vec(),
        )
        .expect("sign");
        sim.hand(flooder, 10, recorded.clone());
        sim.run_for(Duration::from_secs(20));
        for to in 2..n {
            sim.hand(flooder, to, recorded.clone());
        }
        sim.run_for(MAX_BROADCAST_AGE);
        for to in 2..n {
            sim.hand(flooder, to, recorded.clone());
        }
        sim.run_for(Duration::from_secs(20));

        let mut counts: HashMap<(usize, Vec<u8>), usize> = HashMap::new();
        for (node, origin, payload) in &sim.delivered {
            assert_ne!(payload.as_slice(), b"forged", "a forgery was delivered");
            assert!(
                *origin != sim.peer(victim_origin) || payload.as_slice() != b"forged",
                "delivered in the name of node {victim_origin}"
            );
            *counts.entry((*node, payload.to_vec())).or_insert(0) += 1;
        }
        assert!(
            counts.values().all(|c| *c == 1),
            "some node delivered a message twice"
        );
        for to in 2..n {
            assert!(
                sim.nodes[to].core.is_blocked(&sim.peer(forger)),
                "node {to} did not block the forger"
            );
        }
        // Every node but the origin and the forger (blocked, so out of every table).
        let missed = |payload: &[u8], origin: Option<usize>| -> Vec<usize> {
            (0..n)
                .filter(|i| *i != forger && Some(*i) != origin)
                .filter(|i| !counts.contains_key(&(*i, payload.to_vec())))
                .collect()
        };
        assert_eq!(
            missed(&genuine, Some(9)),
            Vec::<usize>::new(),
            "genuine not delivered"
        );
        assert_eq!(
            missed(b"recorded", None),
            Vec::<usize>::new(),
            "recorded not delivered"
        );
        // The flood: each victim took at most its forwarder burst from the flooder.
        let sybil_kinds = counts
            .keys()
            .filter(|(_, p)| p.starts_with(b"sybil "))
            .map(|(_, p)| p.clone())
            .collect::<HashSet<_>>()
            .len();
        assert!(
            sybil_kinds <= 3 * FORWARDER_BURST as usize,
            "{sybil_kinds} flood messages got in"
        );
    }

    #[test]
    fn after_thirty_percent_die_the_living_get_each_broadcast_at_most_once_and_nearly_all() {
        let n = 300;
        let mut sim = network(n, 12);
        let origin = 3;
        for i in (0..n).filter(|i| *i != origin && i % 10 < 3) {
            sim.kill(i);
        }
        let payload = b"after the failure".to_vec();
        sim.broadcast(origin, payload.clone());
        sim.run_for(Duration::from_secs(30));
        let counts = deliveries(&sim, &payload);
        let living = sim.nodes.iter().filter(|n| n.alive).count() - 1;
        assert!(counts.values().all(|c| *c == 1), "never twice");
        assert!(
            counts.keys().all(|i| sim.nodes[*i].alive),
            "only the living deliver"
        );
        let reached = counts.len() as f64 / living as f64;
        assert!(
            reached >= 0.95,
            "{} of {living} living nodes reached",
            counts.len()
        );
    }
}
