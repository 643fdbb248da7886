//! Records find their way: hand-off to closer newcomers, and caching along the lookup path.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::time::Duration;

use dht::{Dht, DhtOptions, Key, PeerId, Timing};

use crate::common::{addr_of, closest, eventually, holds, network_with, stop_all};

/// Fast deadlines, but replication (and republish) far away: what these tests see cannot come from them.
fn quiet_timing() -> Timing {
    Timing {
        replication_interval: Duration::from_secs(600),
        record_ttl: Duration::from_secs(3600),
        ..Timing::fast()
    }
}

fn options(k: usize) -> DhtOptions {
    DhtOptions::default()
        .listen_on(["/ip4/127.0.0.1/tcp/0".parse().expect("addr")])
        .timing(quiet_timing())
        .replication_factor(NonZeroUsize::new(k).expect("k"))
}

async fn network(n: usize, k: usize) -> Vec<Dht> {
    network_with(n, || options(k)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_among_the_closest_receives_its_keys_within_seconds() {
    let nodes = network(8, 3).await;
    let mut keys = Vec::new();
    for i in 0..40 {
        keys.push(
            nodes[i % nodes.len()]
                .store(format!("hand-off value {i}").into_bytes())
                .await
                .expect("store")
                .key,
        );
    }
    let newcomer = Dht::start(options(3).bootstrap(addr_of(&nodes[0]).await))
        .await
        .expect("start newcomer");
    let mut ids: Vec<PeerId> = nodes.iter().map(Dht::peer_id).collect();
    ids.push(newcomer.peer_id());
    let due: Vec<&Key> = keys
        .iter()
        .filter(|k| closest(&ids, k, 3).contains(&newcomer.peer_id()))
        .collect();
    assert!(
        !due.is_empty(),
        "the newcomer is among the 3 closest to none of 40 keys (unlikely); rerun"
    );
    let started = std::time::Instant::now();
    for key in &due {
        eventually(
            Duration::from_secs(10),
            "the newcomer to receive its keys",
            || async { holds(&newcomer, key).await.then_some(()) },
        )
        .await;
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let counters = futures::future::join_all(nodes.iter().map(|n| n.status())).await;
    let handed: u64 = counters
        .iter()
        .map(|s| s.as_ref().expect("status").counters.records_handed_off)
        .sum();
    assert!(
        handed >= due.len() as u64,
        "{handed} hand-offs for {} due keys",
        due.len()
    );
    newcomer.stop().await;
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_content_is_cached_on_the_lookup_path() {
    let nodes = network(10, 3).await;
    let value = b"popular content".to_vec();
    let stored = nodes[0].store(value.clone()).await.expect("store");
    let mut holders = BTreeSet::new();
    for n in &nodes {
        if holds(n, &stored.key).await {
            holders.insert(n.peer_id());
        }
    }
    // A reader that holds no copy fetches it ten times.
    let reader = nodes
        .iter()
        .find(|n| !holders.contains(&n.peer_id()))
        .expect("a reader without a copy");
    for _ in 0..10 {
        assert_eq!(reader.fetch(&stored.key).await.expect("fetch"), value);
    }
    // A node that lacked the value now holds a copy with the shorter cache TTL: the closest node on
    // the reader's lookup path that lacked it, or, when every node asked held it, the reader.
    // (A lookup that times out ends one query timeout later: 10 s in the fast profile.)
    let cached = eventually(Duration::from_secs(25), "a cached copy", || async {
        for n in &nodes {
            if holders.contains(&n.peer_id()) {
                continue;
            }
            let records = n.local_records().await.ok()?;
            if let Some(r) = records.iter().find(|r| r.key == stored.key) {
                return Some((n.peer_id(), r.expires_in));
            }
        }
        None
    })
    .await;
    let ttl = quiet_timing().record_ttl;
    let left = cached.1.expect("a cached copy expires");
    assert!(
        left <= ttl / 8,
        "cached copy lives {left:?}, more than TTL/8"
    );
    assert!(!holders.contains(&cached.0));
    let status = reader.status().await.expect("status");
    assert!(status.counters.values_cached >= 1);
    stop_all(&nodes).await;
}
