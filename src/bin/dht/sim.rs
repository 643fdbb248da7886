//! `dht sim`: many full nodes in one process on libp2p's in-memory transport, to see how joining and
//! lookups scale with the size of the network.

use std::io::Write;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dht::{Dht, DhtOptions, Key, PeerId, Timing, TransportKind};
use libp2p::kad::KBucketKey;
use rand::Rng;
use serde::Serialize;

/// Idle connections of simulated nodes close after this long.
pub const SIM_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ping interval of simulated nodes.
pub const SIM_PING_INTERVAL: Duration = Duration::from_secs(60);

/// What one simulation measured.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// Nodes in the network.
    pub nodes: usize,
    /// Replication factor (and lookup width) k.
    pub k: usize,
    /// Seconds to start every node.
    pub start_secs: f64,
    /// Seconds until every routing table held min(N-1, k) peers; `None` if that never happened.
    pub settle_secs: Option<f64>,
    /// Smallest and median routing-table size at the end of settling.
    pub routing_min: usize,
    /// Median routing-table size.
    pub routing_median: usize,
    /// Resident memory of the process divided by the number of nodes, MiB.
    pub mib_per_node: f64,
    /// Lookups run.
    pub lookups: usize,
    /// Median and largest number of requests per lookup.
    pub requests_median: u32,
    /// Largest number of requests of a lookup.
    pub requests_max: u32,
    /// log2(N), the number of hops Kademlia promises (times alpha requests per hop).
    pub log2_n: f64,
    /// Share of the true k closest nodes that lookups found, on average.
    pub lookup_accuracy: f64,
    /// Median lookup time, ms.
    pub lookup_median_ms: f64,
    /// Values stored, and fetched from another random node.
    pub fetches: usize,
    /// Share of fetches that returned the value.
    pub fetch_success: f64,
}

fn median<T: Copy + Ord>(v: &mut [T]) -> Option<T> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs a simulation of `n` nodes with replication factor `k`.
pub async fn run(
    n: usize,
    k: usize,
    lookups: usize,
    fetches: usize,
    settle_limit: Duration,
) -> Result<SimReport> {
    let k_nz = NonZeroUsize::new(k).context("k must be at least 1")?;
    let options = || {
        // Default intervals (no republish storms during a run); connections close after 10 s idle
        // and pings are rare, since open connections are what a simulated node costs most.
        DhtOptions::default()
            .listen_on(["/memory/0".parse().expect("memory address")])
            .transport(TransportKind::Memory)
            .replication_factor(k_nz)
            .timing(Timing {
                idle_timeout: SIM_IDLE_TIMEOUT,
                ping_interval: SIM_PING_INTERVAL,
                ping_timeout: SIM_PING_INTERVAL,
                ..Timing::default()
            })
    };
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    let mut nodes: Vec<Dht> = Vec::with_capacity(n);
    let mut addrs: Vec<dht::Multiaddr> = Vec::with_capacity(n);
    for i in 0..n {
        let mut o = options();
        if i > 0 {
            o = o.bootstrap(addrs[rng.gen_range(0..i)].clone());
        }
        let node = Dht::start(o).await.with_context(|| format!("node {i}"))?;
        addrs.push(node.listen_addrs().await?.remove(0));
        nodes.push(node);
        if i % 500 == 499 {
            eprintln!("started {} nodes", i + 1);
        }
    }
    let start_secs = started.elapsed().as_secs_f64();

    let want = (n - 1).min(k);
    let settle_started = Instant::now();
    let mut sizes;
    let settle_secs = loop {
        sizes = Vec::with_capacity(n);
        for node in &nodes {
            sizes.push(node.routing_table().await.map(|t| t.len()).unwrap_or(0));
        }
        if sizes.iter().all(|s| *s >= want) {
            break Some(settle_started.elapsed().as_secs_f64());
        }
        if settle_started.elapsed() > settle_limit {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let routing_min = sizes.iter().copied().min().unwrap_or(0);
    let routing_median = median(&mut sizes).unwrap_or(0);
    let mib_per_node = resident_mib() / n as f64;

    // Lookups from random nodes for random keys, checked against the true k closest.
    let ids: Vec<PeerId> = nodes.iter().map(Dht::peer_id).collect();
    let mut requests = Vec::new();
    let mut times = Vec::new();
    let mut accuracy = 0.0;
    for _ in 0..lookups {
        let from = rng.gen_range(0..n);
        let key = Key::from_bytes(rand::random::<[u8; 16]>().to_vec())?;
        let target = KBucketKey::new(key.as_bytes().to_vec());
        let mut truth: Vec<PeerId> = ids.iter().copied().filter(|p| *p != ids[from]).collect();
        truth.sort_by_cached_key(|p| target.distance(&KBucketKey::from(*p)));
        truth.truncate(k);
        match nodes[from].lookup(&key).await {
            Ok(l) => {
                let found = l.peers.iter().filter(|p| truth.contains(p)).count();
                accuracy += found as f64 / truth.len().max(1) as f64;
                requests.push(l.requests);
                times.push(l.duration);
            }
            Err(e) => eprintln!("lookup from node {from} failed: {e}"),
        }
    }
    let requests_max = requests.iter().copied().max().unwrap_or(0);
    let requests_median = median(&mut requests).unwrap_or(0);
    let lookup_median_ms = median(&mut times).map_or(0.0, |d| d.as_secs_f64() * 1e3);

    // Values stored through random nodes, each fetched from another random node.
    let mut ok = 0;
    for i in 0..fetches {
        let value = format!("sim value {i} {}", rng.r#gen::<u64>()).into_bytes();
        let writer = rng.gen_range(0..n);
        let reader = (writer + rng.gen_range(1..n.max(2))) % n;
        if let Ok(stored) = nodes[writer].store(value.clone()).await
            && nodes[reader].fetch(&stored.key).await.ok().as_deref() == Some(value.as_slice())
        {
            ok += 1;
        }
    }

    for node in &nodes {
        node.stop().await;
    }
    Ok(SimReport {
        nodes: n,
        k,
        start_secs,
        settle_secs,
        routing_min,
        routing_median,
        mib_per_node,
        lookups,
        requests_median,
        requests_max,
        log2_n: (n as f64).log2(),
        lookup_accuracy: if requests.is_empty() {
            0.0
        } else {
            accuracy / lookups as f64
        },
        lookup_median_ms,
        fetches,
        fetch_success: if fetches == 0 {
            0.0
        } else {
            ok as f64 / fetches as f64
        },
    })
}

/// Prints the report as text.
pub fn print(r: &SimReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "nodes {} (k = {}), in-memory transport, one process",
        r.nodes, r.k
    )?;
    writeln!(out, "start: {:.1} s", r.start_secs)?;
    match r.settle_secs {
        Some(s) => writeln!(out, "every routing table >= min(N-1, k) after {s:.1} s")?,
        None => writeln!(out, "routing tables did not all reach min(N-1, k) in time")?,
    }
    writeln!(
        out,
        "routing table size: min {}, median {}",
        r.routing_min, r.routing_median
    )?;
    writeln!(out, "memory: {:.2} MiB per node", r.mib_per_node)?;
    writeln!(
        out,
        "lookups: {} - requests median {} (max {}) vs log2(N) = {:.1}; {:.1}% of the true k closest found; median {:.1} ms",
        r.lookups,
        r.requests_median,
        r.requests_max,
        r.log2_n,
        100.0 * r.lookup_accuracy,
        r.lookup_median_ms
    )?;
    writeln!(
        out,
        "store then fetch from another node: {}/{} ({:.1}%)",
        (r.fetch_success * r.fetches as f64).round(),
        r.fetches,
        100.0 * r.fetch_success
    )
}
