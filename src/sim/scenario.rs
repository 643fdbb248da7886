//! The simulator's scenarios and what they report.
//!
//! Every scenario starts the same way: nodes join one after another, each through a random node
//! already in, then values are stored from random nodes. Then:
//! - `steady`: every value is fetched from another random node;
//! - `die30`: 30 % of the nodes die at once; every value is fetched from a survivor right away and
//!   again one replication interval later;
//! - `churn`: for the simulated duration (48 h by default) nodes leave and new ones join at a
//!   steady rate, with replication, republish and expiry running; values are sampled every hour
//!   and all are fetched at the end;
//! - `partition`: the network splits in two halves for ten minutes, values are stored on both
//!   sides, the split heals, and two replication intervals later every value is fetched from a
//!   random node.
//!
//! A value whose publisher is alive must never be lost. One whose publisher left ends when the
//! last renewal's copies expire (only the publisher renews a value: holders' re-stores and
//! hand-offs carry their copy's expiry, and a free key's replay by another peer extends nothing):
//! a fetch begun after that is
//! counted apart ([`SimReport::fetches_past_end`]), not as a miss, and so is the value
//! ([`SimReport::values_expired`]); one gone before it is lost.

use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use super::{NetConfig, Placement, Sim};
use crate::core::{CoreConfig, OpId, OpOk};
use dht_behaviours::validation::content_key;

/// Which run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Join, store, fetch.
    Steady,
    /// 30 % of the nodes die at once.
    Die30,
    /// Nodes leave and join at a steady rate.
    Churn,
    /// The network splits in two, then heals.
    Partition,
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "steady" => Ok(Self::Steady),
            "die30" => Ok(Self::Die30),
            "churn" => Ok(Self::Churn),
            "partition" => Ok(Self::Partition),
            other => Err(format!(
                "unknown scenario {other:?}: steady, die30, churn or partition"
            )),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// Nodes at the start.
    pub nodes: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Values stored.
    pub values: usize,
    /// The run.
    pub scenario: Scenario,
    /// The network.
    pub net: NetConfig,
    /// Each core's configuration.
    pub core: CoreConfig,
    /// Churn: how long the run lasts.
    pub duration: Duration,
    /// Churn: the share of nodes replaced per hour.
    pub churn_per_hour: f64,
}

/// Replicas per value at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaSample {
    /// Hours since the values were stored.
    pub hour: f64,
    /// Mean live copies per value.
    pub mean: f64,
    /// Fewest live copies of a value whose publisher is alive.
    pub min_publisher_alive: usize,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// The run.
    pub scenario: Scenario,
    /// Nodes at the start.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
    /// Simulated hours.
    pub simulated_hours: f64,
    /// Fetches made (each a lookup) of values due then ([`Value::due`]).
    pub lookups: usize,
    /// Share of those fetches that returned the value.
    pub lookup_success: f64,
    /// Fetches begun after their value's end (its publisher gone and the copies it renewed last
    /// expired, or expiring before the fetch's deadline): not counted above.
    pub fetches_past_end: usize,
    /// Median rounds until the node holding the value answered.
    pub hops_median: u32,
    /// Fetches that failed, by what they returned.
    pub fetch_failures: std::collections::BTreeMap<String, usize>,
    /// For each failed fetch of a value that live nodes held when it began, where the copies sat.
    pub misses_with_copies: Vec<Placement>,
    /// Median requests per fetch.
    pub requests_per_lookup_median: usize,
    /// Stores made.
    pub stores: usize,
    /// Median acknowledgements per store (each a copy kept by the peer that sent it).
    pub store_acks_median: usize,
    /// Values no living node holds at the end, though due ([`Value::due`]): lost.
    pub values_lost: usize,
    /// Of those, values whose publisher is alive (must be 0).
    pub values_lost_publisher_alive: usize,
    /// Of those, values whose publisher left.
    pub values_lost_publisher_dead: usize,
    /// Values gone at the end after their end: the publisher left and its last renewal expired.
    pub values_expired: usize,
    /// Growth of the process's resident memory per node once joined and stored, less the bytes of
    /// the records held.
    pub memory_per_node_bytes: usize,
    /// The cores' own accounting of their state per node (routing, queries, records aside).
    pub core_heap_per_node_bytes: usize,
    /// Median routing-table size once joined and stored.
    pub routing_median: usize,
    /// Messages sent per node per simulated hour.
    pub messages_per_node_per_hour: f64,
    /// Live copies per value over time.
    pub replicas: Vec<ReplicaSample>,
}

struct Value {
    key: Vec<u8>,
    value: Vec<u8>,
    publisher: usize,
    /// Once the publisher is gone: when the last copy it renewed expires (simulated time).
    ends: Option<Duration>,
}

impl Value {
    /// Whether the value should still be found by a fetch that begins at `at` and may run for
    /// `limit`: its publisher renews it, or its last renewal outlives the fetch.
    fn due(&self, at: Duration, limit: Duration) -> bool {
        self.ends.is_none_or(|end| end > at + limit)
    }
}

/// Kills node `i`; values it published end with the copies it renewed last.
fn kill(sim: &mut Sim, values: &mut [Value], i: usize) {
    sim.kill(i);
    let now = sim.elapsed();
    for v in values
        .iter_mut()
        .filter(|v| v.publisher == i && v.ends.is_none())
    {
        v.ends = Some(sim.latest_expiry(&v.key).unwrap_or(now));
    }
}

struct Fetches {
    /// Each fetch: its op, the value, where its copies sat when it began (a miss of a value no
    /// one holds is an expiry or a loss, not a lookup's failure), and whether it was due then
    /// ([`Value::due`]).
    ops: Vec<(OpId, usize, Placement, bool)>,
}

/// Resident memory of this process in bytes (Linux; 0 elsewhere).
fn resident() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn median<T: Ord + Copy + Default>(mut v: Vec<T>) -> T {
    if v.is_empty() {
        return T::default();
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs `spec`.
pub fn run(spec: &SimSpec) -> SimReport {
    let wall = Instant::now();
    let rss_before = resident();
    let mut sim = Sim::new(spec.core.clone(), spec.net.clone(), spec.seed);
    build(&mut sim, spec.nodes);
    let values = store_values(&mut sim, spec.values);
    let record_bytes: usize = sim.nodes.iter().map(|n| n.core.records().bytes()).sum();
    let rss = resident().saturating_sub(rss_before);
    let memory_per_node_bytes = rss.saturating_sub(record_bytes) / spec.nodes.max(1);
    let core_heap_per_node_bytes =
        sim.nodes.iter().map(|n| n.core.heap_bytes()).sum::<usize>() / spec.nodes.max(1);
    let routing_median = median(sim.nodes.iter().map(|n| n.core.routing().len()).collect());
    let acks: Vec<usize> = values
        .iter()
        .filter_map(|(op, _)| match sim.results.get(op) {
            Some((Ok(OpOk::Stored { kept, .. }), _)) => Some(kept.len()),
            _ => None,
        })
        .collect();
    let mut values: Vec<Value> = values.into_iter().map(|(_, v)| v).collect();
    let stored_at = sim.elapsed();
    let messages_before = sim.messages;
    let mut replicas = vec![sample(&sim, &values, 0.0)];
    let mut fetches = Fetches { ops: Vec::new() };
    let interval = spec.core.timing.replication_interval;
    match spec.scenario {
        Scenario::Steady => fetch_all(&mut sim, &values, &mut fetches),
        Scenario::Die30 => {
            let n = sim.nodes.len();
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut sim, &mut order);
            for &i in order.iter().take(n * 3 / 10) {
                kill(&mut sim, &mut values, i);
            }
            fetch_all(&mut sim, &values, &mut fetches);
            sim.run_for(interval + spec.core.timing.query_timeout * 2);
            replicas.push(sample(&sim, &values, hours(sim.elapsed() - stored_at)));
            fetch_all(&mut sim, &values, &mut fetches);
        }
        Scenario::Churn => {
            churn(
                &mut sim,
                spec,
                &mut values,
                stored_at,
                &mut replicas,
                &mut fetches,
            );
            fetch_all(&mut sim, &values, &mut fetches);
        }
        Scenario::Partition => {
            let n = sim.nodes.len();
            for i in 0..n {
                sim.set_side(i, u8::from(i % 2 == 1));
            }
            let more = store_values(&mut sim, spec.values / 2);
            sim.run_for(Duration::from_secs(600));
            for i in 0..n {
                sim.set_side(i, 0);
            }
            // Tables heal over refreshes, then replication moves copies to the true closest.
            sim.run_for(2 * interval + spec.core.timing.query_timeout * 2);
            let mut all = values;
            all.extend(more.into_iter().map(|(_, v)| v));
            replicas.push(sample(&sim, &all, hours(sim.elapsed() - stored_at)));
            fetch_all(&mut sim, &all, &mut fetches);
            return report(
                spec,
                &sim,
                &all,
                &fetches,
                acks,
                replicas,
                (wall, stored_at, messages_before),
                (
                    memory_per_node_bytes,
                    core_heap_per_node_bytes,
                    routing_median,
                ),
            );
        }
    }
    report(
        spec,
        &sim,
        &values,
        &fetches,
        acks,
        replicas,
        (wall, stored_at, messages_before),
        (
            memory_per_node_bytes,
            core_heap_per_node_bytes,
            routing_median,
        ),
    )
}

fn hours(d: Duration) -> f64 {
    d.as_secs_f64() / 3600.0
}

fn shuffle(sim: &mut Sim, v: &mut [usize]) {
    for i in (1..v.len()).rev() {
        let j = sim.rng().gen_range(0..=i);
        v.swap(i, j);
    }
}

fn random_alive(sim: &mut Sim, except: Option<usize>) -> usize {
    let n = sim.nodes.len();
    loop {
        let i = sim.rng().gen_range(0..n);
        if sim.nodes[i].alive && Some(i) != except {
            return i;
        }
    }
}

/// Nodes join one after another, each through a random node already in, a few at a time.
fn build(sim: &mut Sim, nodes: usize) {
    let first = sim.add_node();
    debug_assert_eq!(first, 0);
    for _ in 1..nodes {
        let via = random_alive(sim, None);
        let i = sim.add_node();
        sim.join(i, via);
        sim.run_for(Duration::from_millis(50));
    }
    // Time for the last joins' lookups (each ends within its deadline).
    let settle = sim.query_timeout() * 2;
    sim.run_for(settle);
}

/// Stores `count` random values from random nodes, and waits for every store to end.
fn store_values(sim: &mut Sim, count: usize) -> Vec<(OpId, Value)> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let publisher = random_alive(sim, None);
        let len = sim.rng().gen_range(32..256);
        let value: Vec<u8> = (0..len).map(|_| sim.rng().r#gen()).collect();
        let key = content_key(&value).to_vec();
        let op = sim.store(publisher, key.clone(), value.clone());
        out.push((
            op,
            Value {
                key,
                value,
                publisher,
                ends: None,
            },
        ));
        sim.run_for(Duration::from_millis(10));
    }
    // A store ends within two query deadlines (its lookup, then its PUTs).
    let limit = sim.query_timeout() * 3;
    for (op, _) in &out {
        sim.wait(*op, limit);
    }
    out
}

/// Fetches every value from a random living node other than its publisher, and waits for them.
fn fetch_all(sim: &mut Sim, values: &[Value], fetches: &mut Fetches) {
    let start = fetches.ops.len();
    let limit = sim.query_timeout() * 2;
    for (v, value) in values.iter().enumerate() {
        let from = random_alive(sim, Some(value.publisher));
        let held = sim.placement(&value.key);
        let due = value.due(sim.elapsed(), limit);
        let op = sim.fetch(from, value.key.clone());
        fetches.ops.push((op, v, held, due));
        sim.run_for(Duration::from_millis(10));
    }
    for &(op, _, _, _) in &fetches.ops[start..] {
        sim.wait(op, limit);
    }
}

fn sample(sim: &Sim, values: &[Value], hour: f64) -> ReplicaSample {
    let counts: Vec<(usize, bool)> = values
        .iter()
        .map(|v| (sim.holders(&v.key), sim.nodes[v.publisher].alive))
        .collect();
    let mean = counts.iter().map(|(c, _)| *c as f64).sum::<f64>() / counts.len().max(1) as f64;
    let min_publisher_alive = counts
        .iter()
        .filter(|(_, alive)| *alive)
        .map(|(c, _)| *c)
        .min()
        .unwrap_or(0);
    ReplicaSample {
        hour,
        mean,
        min_publisher_alive,
    }
}

/// Replaces `churn_per_hour` of the nodes every hour, a few at a time, for the run's duration;
/// samples the replicas every hour (six times over a shorter run).
fn churn(
    sim: &mut Sim,
    spec: &SimSpec,
    values: &mut [Value],
    stored_at: Duration,
    replicas: &mut Vec<ReplicaSample>,
    fetches: &mut Fetches,
) {
    let step = Duration::from_secs(60);
    let steps_per_hour = 60.0;
    let per_step = spec.churn_per_hour * spec.nodes as f64 / steps_per_hour;
    let mut owed = 0.0;
    // Hourly samples, or six over a shorter run.
    let period = Duration::from_secs(3600).min(spec.duration / 6).max(step);
    let mut samples = 1;
    while sim.elapsed() - stored_at < spec.duration {
        owed += per_step;
        while owed >= 1.0 {
            owed -= 1.0;
            let gone = random_alive(sim, None);
            kill(sim, values, gone);
            let via = random_alive(sim, None);
            let i = sim.add_node();
            sim.join(i, via);
        }
        sim.run_for(step);
        if sim.elapsed() - stored_at >= period * samples {
            let at = hours(sim.elapsed() - stored_at);
            replicas.push(sample(sim, values, at));
            // Long runs (10,000 nodes over 48 h take hours) say how far they are.
            tracing::info!(
                simulated_hours = format!("{at:.1}"),
                of = format!("{:.1}", hours(spec.duration)),
                messages = sim.messages,
                "churn"
            );
            // A few fetches every hour, so lookups run through the churned network too. They end
            // before the churn goes on: a node that left with its fetch under way is not a miss.
            let start = fetches.ops.len();
            let picks: Vec<usize> = (0..values.len().min(20))
                .map(|_| sim.rng().gen_range(0..values.len()))
                .collect();
            for v in picks {
                let from = random_alive(sim, None);
                let held = sim.placement(&values[v].key);
                let due = values[v].due(sim.elapsed(), sim.query_timeout() * 2);
                let op = sim.fetch(from, values[v].key.clone());
                fetches.ops.push((op, v, held, due));
            }
            let limit = sim.query_timeout() * 2;
            for &(op, _, _, _) in &fetches.ops[start..] {
                sim.wait(op, limit);
            }
            samples += 1;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    spec: &SimSpec,
    sim: &Sim,
    values: &[Value],
    fetches: &Fetches,
    acks: Vec<usize>,
    replicas: Vec<ReplicaSample>,
    (wall, stored_at, messages_before): (Instant, Duration, u64),
    (memory_per_node_bytes, core_heap_per_node_bytes, routing_median): (usize, usize, usize),
) -> SimReport {
    let mut ok = 0;
    let mut failures = std::collections::BTreeMap::new();
    let mut misses_with_copies = Vec::new();
    let mut hops = Vec::new();
    let mut requests = Vec::new();
    let mut past_end = 0;
    for &(op, v, placed, due) in &fetches.ops {
        if !due {
            past_end += 1;
            continue;
        }
        let why = match sim.results.get(&op) {
            Some((Ok(OpOk::Value(got)), report)) if *got == values[v].value => {
                ok += 1;
                hops.push(report.hops);
                requests.push(report.requests);
                continue;
            }
            Some((Ok(_), _)) => "wrong value".to_owned(),
            Some((Err(e), _)) => e.to_string(),
            None => "no answer".to_owned(),
        };
        // Nodes that die never come back: a publisher alive now was alive at the fetch.
        let publisher = if sim.nodes[values[v].publisher].alive {
            "publisher alive"
        } else {
            "publisher gone"
        };
        let copies = if placed.copies > 0 {
            "copies left"
        } else {
            "no copy left"
        };
        *failures
            .entry(format!("{why} ({publisher}, {copies})"))
            .or_default() += 1;
        if placed.copies > 0 {
            misses_with_copies.push(placed);
        }
    }
    let mut lost_alive = 0;
    let mut lost_dead = 0;
    let mut expired = 0;
    for v in values {
        if sim.holders(&v.key) == 0 {
            if !v.due(sim.elapsed(), Duration::ZERO) {
                expired += 1;
            } else if sim.nodes[v.publisher].alive {
                lost_alive += 1;
            } else {
                lost_dead += 1;
            }
        }
    }
    let after = sim.elapsed().saturating_sub(stored_at);
    let node_hours = sim.nodes.iter().filter(|n| n.alive).count() as f64 * hours(after);
    let messages = sim.messages - messages_before;
    SimReport {
        scenario: spec.scenario,
        nodes: spec.nodes,
        seed: spec.seed,
        wall_s: wall.elapsed().as_secs_f64(),
        simulated_hours: hours(sim.elapsed()),
        lookups: fetches.ops.len() - past_end,
        lookup_success: ok as f64 / (fetches.ops.len() - past_end).max(1) as f64,
        fetches_past_end: past_end,
        fetch_failures: failures,
        misses_with_copies,
        hops_median: median(hops),
        requests_per_lookup_median: median(requests),
        stores: acks.len(),
        store_acks_median: median(acks),
        values_lost: lost_alive + lost_dead,
        values_lost_publisher_alive: lost_alive,
        values_lost_publisher_dead: lost_dead,
        values_expired: expired,
        memory_per_node_bytes,
        core_heap_per_node_bytes,
        routing_median,
        messages_per_node_per_hour: if node_hours > 0.0 {
            messages as f64 / node_hours
        } else {
            0.0
        },
        replicas,
    }
}
