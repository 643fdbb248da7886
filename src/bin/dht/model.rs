//! `dht sim --model`: Kademlia's rules at a scale full nodes cannot reach on one machine.
//!
//! Every node is reduced to an id and a routing table with k entries per bucket (a full bucket keeps
//! its old entries, as kad does while they answer); the network is instant and never loses a
//! message. A joining node looks itself up through one bootstrap node, then refreshes the buckets
//! beyond its nearest neighbour, as our nodes do. The lookups measured are our nodes' own lookup
//! state machine ([`dht_behaviours::lookup::Lookup`]) with the parameters our nodes give it for a
//! `lookup`, a store and a fetch, answered by the model's nodes; every node asked learns the asker,
//! and the asker learns every node that answered. The network is a model (our full nodes are
//! `dht sim`, which stops being practical past a few hundred nodes): it measures hops and requests
//! against log2(N), and whether lookups and stores find the true k closest, for 1,000 to 100,000
//! nodes.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Instant;

use dht_behaviours::kad_wire::WirePeer;
use dht_behaviours::lookup::{LOOKUP_RESILIENCE, Lookup, LookupParams, PeerState};
use libp2p::PeerId;
use libp2p::kad::KBucketKey;
use rand::Rng;
use serde::Serialize;

/// Lookup parallelism alpha, as our nodes use it.
pub const ALPHA: usize = 3;

/// A 256-bit id as two halves, so that XOR distances compare as integers.
type Id = (u128, u128);

fn distance(a: Id, b: Id) -> Id {
    (a.0 ^ b.0, a.1 ^ b.1)
}

/// The bucket a peer at distance `d` falls in: log2 of the distance (255 for the farthest half).
fn bucket(d: Id) -> Option<u8> {
    let lz = if d.0 != 0 {
        d.0.leading_zeros()
    } else if d.1 != 0 {
        128 + d.1.leading_zeros()
    } else {
        return None;
    };
    u8::try_from(255 - lz).ok()
}

struct Node {
    peer: PeerId,
    id: Id,
    /// The table, grouped by bucket (bucket 255 first); `per_bucket` says where each begins.
    table: Vec<u32>,
    per_bucket: [u8; 256],
}

impl Node {
    /// Where bucket `b`'s entries begin in `table`.
    fn start_of(&self, b: u8) -> usize {
        self.per_bucket[usize::from(b) + 1..]
            .iter()
            .map(|c| usize::from(*c))
            .sum()
    }
}

/// `d` with bit `b` flipped (bit 255 is the highest).
fn with_bit(d: Id, b: u8) -> Id {
    if b >= 128 {
        (d.0 ^ (1u128 << (b - 128)), d.1)
    } else {
        (d.0, d.1 ^ (1u128 << b))
    }
}

/// The network of the model.
struct Model {
    nodes: Vec<Node>,
    index: HashMap<PeerId, u32>,
    k: usize,
}

/// A point of the key space: the SHA-256 of a key or peer id, as kad hashes them.
fn point(hashed: &[u8]) -> Id {
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 16];
    hi.copy_from_slice(&hashed[..16]);
    lo.copy_from_slice(&hashed[16..32]);
    (u128::from_be_bytes(hi), u128::from_be_bytes(lo))
}

/// What one lookup did.
struct Walk {
    closest: Vec<u32>,
    requests: u32,
    rounds: u32,
    asked: Vec<u32>,
    /// The round in which the watched node was first heard of (0: it was known already).
    found_in: Option<u32>,
}

impl Model {
    /// `a` learns `b`, if `b`'s bucket has room.
    fn learn(&mut self, a: u32, b: u32) {
        if a == b {
            return;
        }
        let (ida, idb) = (self.nodes[a as usize].id, self.nodes[b as usize].id);
        let Some(i) = bucket(distance(ida, idb)) else {
            return;
        };
        let k = self.k;
        let node = &mut self.nodes[a as usize];
        let start = node.start_of(i);
        let len = usize::from(node.per_bucket[usize::from(i)]);
        if len < k && !node.table[start..start + len].contains(&b) {
            node.table.insert(start + len, b);
            node.per_bucket[usize::from(i)] += 1;
        }
    }

    /// The k entries of `n`'s table closest to `target`: whole buckets in the order of their
    /// distance range to the target (as the core's routing table takes them), so only about k
    /// entries' ids are read. At a million nodes the ids are gigabytes apart in memory, and
    /// reading every entry's made joining memory-bound.
    fn closest_known(&self, n: u32, target: Id) -> Vec<u32> {
        let node = &self.nodes[n as usize];
        let from_node = distance(node.id, target);
        let mut order: Vec<(Id, u8, usize)> = Vec::new();
        let mut start = 0;
        for b in (0..=255u8).rev() {
            let len = usize::from(node.per_bucket[usize::from(b)]);
            if len > 0 {
                order.push((with_bit(from_node, b), b, start));
                start += len;
            }
        }
        order.sort_unstable();
        let mut out = Vec::with_capacity(self.k);
        for (_, b, start) in order {
            if out.len() >= self.k {
                break;
            }
            let len = usize::from(node.per_bucket[usize::from(b)]);
            let mut bucket: Vec<(Id, u32)> = node.table[start..start + len]
                .iter()
                .map(|p| (distance(self.nodes[*p as usize].id, target), *p))
                .collect();
            let room = self.k - out.len();
            if bucket.len() > room {
                bucket.select_nth_unstable(room);
                bucket.truncate(room);
            }
            bucket.sort_unstable();
            out.extend(bucket.into_iter().map(|(_, p)| p));
        }
        out
    }

    /// A joining node's lookup of `target` from `from`, as the model builds the network: it asks
    /// the alpha closest unasked peers among the k closest it knows until none is left. Returns
    /// the requests it sent.
    fn join_lookup(&mut self, from: u32, target: Id) -> u32 {
        let mut seen: BTreeMap<Id, (u32, bool)> = BTreeMap::new();
        for p in self.closest_known(from, target) {
            seen.insert(distance(self.nodes[p as usize].id, target), (p, false));
        }
        let mut requests = 0;
        loop {
            let batch: Vec<(Id, u32)> = seen
                .iter()
                .take(self.k)
                .filter(|(_, (_, done))| !done)
                .take(ALPHA)
                .map(|(d, (p, _))| (*d, *p))
                .collect();
            if batch.is_empty() {
                return requests;
            }
            for (d, q) in batch {
                requests += 1;
                seen.insert(d, (q, true));
                self.learn(q, from);
                self.learn(from, q);
                for p in self.closest_known(q, target) {
                    if p != from {
                        seen.entry(distance(self.nodes[p as usize].id, target))
                            .or_insert((p, false));
                    }
                }
            }
        }
    }

    /// The true k closest to `target`, `except` left out.
    fn truth(&self, target: Id, except: u32) -> Vec<u32> {
        let mut all: Vec<(Id, u32)> = (0..self.nodes.len() as u32)
            .filter(|p| *p != except)
            .map(|p| (distance(self.nodes[p as usize].id, target), p))
            .collect();
        let k = self.k.min(all.len());
        if all.len() > k {
            all.select_nth_unstable(k);
            all.truncate(k);
        }
        all.sort_unstable();
        all.into_iter().map(|(_, p)| p).collect()
    }
}

impl Model {
    /// Runs our lookup state machine from `from` for `key`, each round sending every request it
    /// allows and answering them from the model: a node in `holders` answers with the record, any
    /// other with the k closest peers it knows. Stops once a holder answered, if there are any.
    fn drive(
        &mut self,
        from: u32,
        key: &[u8],
        params: LookupParams,
        holders: &[u32],
        watch: Option<u32>,
    ) -> Walk {
        let target = point(KBucketKey::new(key.to_vec()).hashed_bytes());
        let known = self.closest_known(from, target);
        let mut found_in = watch.filter(|w| known.contains(w)).map(|_| 0);
        let seeds = known
            .into_iter()
            .map(|p| (self.nodes[p as usize].peer, Vec::new()));
        let mut lookup = Lookup::new(key, seeds, params);
        let (mut requests, mut rounds, mut asked) = (0, 0, Vec::new());
        loop {
            let mut batch = Vec::new();
            while let Some((peer, _)) = lookup.next_request() {
                batch.push(peer);
            }
            if batch.is_empty() {
                break;
            }
            rounds += 1;
            for peer in batch {
                let Some(&q) = self.index.get(&peer) else {
                    lookup.on_failure(&peer);
                    continue;
                };
                requests += 1;
                asked.push(q);
                self.learn(q, from);
                self.learn(from, q);
                if holders.contains(&q) {
                    lookup.on_found(&peer);
                    continue;
                }
                let closer: Vec<WirePeer> = self
                    .closest_known(q, target)
                    .into_iter()
                    .filter(|p| *p != from)
                    .inspect(|p| {
                        if Some(*p) == watch && found_in.is_none() {
                            found_in = Some(rounds);
                        }
                    })
                    .map(|p| WirePeer {
                        peer: self.nodes[p as usize].peer,
                        addrs: Vec::new(),
                    })
                    .collect();
                lookup.on_answer(&peer, closer);
            }
            if asked.iter().any(|a| holders.contains(a)) {
                break;
            }
        }
        let closest = lookup
            .closest(self.k)
            .into_iter()
            .filter_map(|c| self.index.get(&c.peer).map(|i| (*i, c.state)))
            .filter(|(_, state)| *state != PeerState::Waiting || params.resilience < self.k)
            .map(|(i, _)| i)
            .collect();
        Walk {
            closest,
            requests,
            rounds,
            asked,
            found_in,
        }
    }
}

/// A random id at distance 2^b..2^(b+1) from `id`.
fn in_bucket(id: Id, b: u8, rng: &mut impl Rng) -> Id {
    let (hi, lo): (u128, u128) = (rng.r#gen(), rng.r#gen());
    let d = if b >= 128 {
        let top = 1u128 << (b - 128);
        ((hi & (top - 1)) | top, lo)
    } else {
        let top = 1u128 << b;
        (0, (lo & (top - 1)) | top)
    };
    distance(id, d)
}

/// What the model measured.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// Nodes.
    pub nodes: usize,
    /// Bucket size and replication factor k.
    pub k: usize,
    /// Wall-clock seconds the joins took to simulate.
    pub join_secs: f64,
    /// Requests all joins sent, per node.
    pub join_requests_per_node: f64,
    /// Smallest and median routing table.
    pub routing_min: usize,
    /// Median routing table.
    pub routing_median: usize,
    /// Lookups measured.
    pub lookups: usize,
    /// Median and largest requests per lookup.
    pub requests_median: u32,
    /// Largest requests of a lookup.
    pub requests_max: u32,
    /// Median and largest rounds (hops at alpha in parallel) per lookup.
    pub rounds_median: u32,
    /// Largest rounds of a lookup.
    pub rounds_max: u32,
    /// Median and largest round in which a lookup first heard of the true closest node: the hop
    /// count Kademlia bounds by log2(N). (Rounds go on after it: a lookup must hear from all k
    /// closest, at least k / alpha rounds.)
    pub hops_median: u32,
    /// Largest hop count.
    pub hops_max: u32,
    /// log2(N).
    pub log2_n: f64,
    /// Share of the true k closest that lookups found, on average.
    pub accuracy: f64,
    /// Median requests of a store's lookup (it ends when the 3 closest live peers answered).
    pub store_requests_median: u32,
    /// Share of the true k closest among a store's k targets, on average.
    pub store_accuracy: f64,
    /// Median requests of a fetch (the closest known peer first, then alpha at a time).
    pub fetch_requests_median: u32,
    /// Fetches (a lookup from another node for a value stored on a writer's k closest) that found
    /// a holder.
    pub fetch_success: f64,
    /// Bytes of model state (ids and tables) per node; a real node costs far more.
    pub model_bytes_per_node: f64,
}

fn median<T: Copy + Ord>(v: &mut [T]) -> T {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Builds a network of `n` nodes, one join after the other, then measures `lookups` lookups and as
/// many store-then-fetch pairs.
pub fn run(n: usize, k: usize, lookups: usize) -> ModelReport {
    let mut rng = rand::thread_rng();
    let mut model = Model {
        nodes: Vec::with_capacity(n),
        index: HashMap::with_capacity(n),
        k,
    };
    let started = Instant::now();
    let mut join_requests = 0u64;
    for i in 0..n as u32 {
        let peer = PeerId::random();
        model.index.insert(peer, i);
        model.nodes.push(Node {
            peer,
            id: point(KBucketKey::from(peer).hashed_bytes()),
            table: Vec::new(),
            per_bucket: [0; 256],
        });
        if i == 0 {
            continue;
        }
        let boot = rng.gen_range(0..i);
        model.learn(i, boot);
        model.learn(boot, i);
        let me = model.nodes[i as usize].id;
        join_requests += u64::from(model.join_lookup(i, me));
        // Refresh every bucket beyond the nearest neighbour, as kad's bootstrap does.
        let nearest = model.nodes[i as usize]
            .table
            .iter()
            .filter_map(|p| bucket(distance(me, model.nodes[*p as usize].id)))
            .min()
            .unwrap_or(255);
        for b in nearest.saturating_add(1)..=255 {
            let target = in_bucket(me, b, &mut rng);
            join_requests += u64::from(model.join_lookup(i, target));
        }
    }
    let join_secs = started.elapsed().as_secs_f64();
    let mut sizes: Vec<usize> = model.nodes.iter().map(|x| x.table.len()).collect();
    let routing_min = sizes.iter().copied().min().unwrap_or(0);
    let routing_median = median(&mut sizes);
    let state: usize = model
        .nodes
        .iter()
        .map(|x| std::mem::size_of::<Node>() + 4 * x.table.capacity())
        .sum();

    let (mut requests, mut rounds, mut hops) = (Vec::new(), Vec::new(), Vec::new());
    let (mut store_requests, mut fetch_requests) = (Vec::new(), Vec::new());
    let (mut accuracy, mut store_accuracy, mut found) = (0.0, 0.0, 0);
    let wide = |resilience| LookupParams {
        k,
        alpha: ALPHA,
        resilience,
        narrow: false,
    };
    for _ in 0..lookups {
        let from = rng.gen_range(0..n as u32);
        let key: [u8; 32] = rng.r#gen();
        let target = point(KBucketKey::new(key.to_vec()).hashed_bytes());
        let truth = model.truth(target, from);
        let share = |found: &[u32]| {
            found.iter().filter(|p| truth.contains(p)).count() as f64 / truth.len().max(1) as f64
        };
        // `lookup`: the k closest, every one of them heard from.
        let walk = model.drive(from, &key, wide(k), &[], truth.first().copied());
        if let Some(h) = walk.found_in {
            hops.push(h);
        }
        accuracy += share(&walk.closest);
        requests.push(walk.requests);
        rounds.push(walk.rounds);
        // A store: the lookup ends once the 3 closest live peers answered; the value goes to the k
        // closest it knows (and the writer keeps a copy).
        let walk = model.drive(from, &key, wide(LOOKUP_RESILIENCE), &[], None);
        store_accuracy += share(&walk.closest);
        store_requests.push(walk.requests);
        let mut holders = walk.closest;
        holders.push(from);
        // A fetch from another node: the closest known peer first, until a holder answers.
        let reader = (from + rng.gen_range(1..n.max(2) as u32)) % n as u32;
        let narrow = LookupParams {
            narrow: true,
            ..wide(k)
        };
        let fetch = model.drive(reader, &key, narrow, &holders, None);
        fetch_requests.push(fetch.requests);
        if reader == from || fetch.asked.iter().any(|a| holders.contains(a)) {
            found += 1;
        }
    }
    ModelReport {
        nodes: n,
        k,
        join_secs,
        join_requests_per_node: join_requests as f64 / n as f64,
        routing_min,
        routing_median,
        lookups,
        requests_max: requests.iter().copied().max().unwrap_or(0),
        requests_median: median(&mut requests),
        rounds_max: rounds.iter().copied().max().unwrap_or(0),
        rounds_median: median(&mut rounds),
        hops_max: hops.iter().copied().max().unwrap_or(0),
        hops_median: if hops.is_empty() {
            0
        } else {
            median(&mut hops)
        },
        log2_n: (n as f64).log2(),
        accuracy: accuracy / lookups.max(1) as f64,
        store_requests_median: median(&mut store_requests),
        store_accuracy: store_accuracy / lookups.max(1) as f64,
        fetch_requests_median: median(&mut fetch_requests),
        fetch_success: found as f64 / lookups.max(1) as f64,
        model_bytes_per_node: state as f64 / n as f64,
    }
}

/// Prints the report as text.
pub fn print(r: &ModelReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "model: {} nodes, k = {}, alpha = {ALPHA}, instant lossless network, our lookup state machine",
        r.nodes, r.k
    )?;
    writeln!(
        out,
        "joins: {:.1} s to simulate, {:.0} requests per node; routing table min {}, median {}",
        r.join_secs, r.join_requests_per_node, r.routing_min, r.routing_median
    )?;
    writeln!(
        out,
        "lookups: {} - requests median {} (max {}), rounds median {} (max {}); the closest node \
         reached after {} hops median (max {}) vs log2(N) = {:.1}; {:.1}% of the true k closest found",
        r.lookups,
        r.requests_median,
        r.requests_max,
        r.rounds_median,
        r.rounds_max,
        r.hops_median,
        r.hops_max,
        r.log2_n,
        100.0 * r.accuracy
    )?;
    writeln!(
        out,
        "stores: requests median {}; {:.1}% of the true k closest among the k targets",
        r.store_requests_median,
        100.0 * r.store_accuracy
    )?;
    writeln!(
        out,
        "fetch from another node: {:.1}% found a holder, requests median {}; model state {:.0} bytes \
         per node",
        100.0 * r.fetch_success,
        r.fetch_requests_median,
        r.model_bytes_per_node
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_highest_differing_bit() {
        assert_eq!(bucket((1 << 127, 0)), Some(255));
        assert_eq!(bucket((0, 1)), Some(0));
        assert_eq!(bucket((0, 0)), None);
        let mut rng = rand::thread_rng();
        for b in [0u8, 5, 127, 128, 200, 255] {
            let id = (rng.r#gen(), rng.r#gen());
            assert_eq!(bucket(distance(id, in_bucket(id, b, &mut rng))), Some(b));
        }
    }

    #[test]
    fn the_closest_known_match_a_full_sort_of_the_table() {
        let mut rng = rand::thread_rng();
        let mut model = Model {
            nodes: Vec::new(),
            index: HashMap::new(),
            k: 20,
        };
        for i in 0..600u32 {
            let peer = PeerId::random();
            model.index.insert(peer, i);
            model.nodes.push(Node {
                peer,
                id: point(KBucketKey::from(peer).hashed_bytes()),
                table: Vec::new(),
                per_bucket: [0; 256],
            });
        }
        for b in 1..600 {
            model.learn(0, b);
        }
        let table = model.nodes[0].table.clone();
        assert!(table.len() > 20, "{} entries", table.len());
        let mut targets: Vec<Id> = (0..50).map(|_| (rng.r#gen(), rng.r#gen())).collect();
        targets.push(model.nodes[0].id);
        targets.extend(table.iter().step_by(5).map(|p| model.nodes[*p as usize].id));
        for target in targets {
            let mut sorted = table.clone();
            sorted.sort_by_key(|p| distance(model.nodes[*p as usize].id, target));
            assert_eq!(model.closest_known(0, target), sorted[..20].to_vec());
        }
    }

    #[test]
    fn a_small_network_finds_the_true_closest() {
        let r = run(300, 20, 50);
        assert!(r.accuracy > 0.95, "{r:?}");
        assert!(r.store_accuracy > 0.95, "{r:?}");
        assert!(r.fetch_success > 0.95, "{r:?}");
        assert!(r.routing_min >= 20, "{r:?}");
    }
}
