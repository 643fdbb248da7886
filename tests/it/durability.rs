//! Records live exactly as long as they should through churn: re-replication after mass failure,
//! republish by the publisher alone, and expiry once nobody republishes. Replication factor 3, so
//! that replication is really exercised, and timing in seconds.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::time::Duration;

use dht::{Dht, DhtOptions, Error, Key, PeerId, Timing};
use futures::StreamExt;
use futures::future::join_all;
use tokio::time::Instant;

use crate::common::{closest, eventually, holds, network_with, stop_all};

const K: usize = 3;

fn options(timing: Timing) -> DhtOptions {
    crate::common::log_if_asked();
    DhtOptions::default()
        .listen_on(["/ip4/127.0.0.1/tcp/0".parse().expect("addr")])
        .timing(timing)
        .replication_factor(NonZeroUsize::new(K).expect("k"))
}

/// Fetches one survivor has in flight at once.
const FETCHES_IN_FLIGHT: usize = 16;

/// The keys that fewer than k of `nodes` hold, from one look at each node's store.
async fn under_replicated(nodes: &[&Dht], keys: &[Key]) -> Vec<Key> {
    let stores = join_all(nodes.iter().map(|n| n.local_records())).await;
    let held: Vec<HashSet<Key>> = stores
        .into_iter()
        .map(|r| {
            r.map(|rs| rs.into_iter().map(|r| r.key).collect())
                .unwrap_or_default()
        })
        .collect();
    keys.iter()
        .filter(|k| held.iter().filter(|h| h.contains(*k)).count() < K)
        .cloned()
        .collect()
}

/// How many of `nodes` hold an unexpired copy of `key`.
async fn holders(nodes: &[&Dht], key: &Key) -> usize {
    join_all(nodes.iter().map(|n| holds(n, key)))
        .await
        .into_iter()
        .filter(|h| *h)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_die_at_once_and_every_value_is_soon_on_three_live_nodes_again() {
    let timing = Timing {
        replication_interval: Duration::from_secs(5),
        ..Timing::fast()
    };
    let nodes = network_with(20, || options(timing.clone())).await;
    let ids: Vec<PeerId> = nodes.iter().map(Dht::peer_id).collect();

    // 100 values, published by the first 14 nodes (the victims are drawn from all 20, so some
    // publishers die too: their values must survive through the other holders).
    let mut keys = Vec::new();
    for i in 0..100 {
        let value = format!("churn value {i}").into_bytes();
        let stored = nodes[i % 14].store(value).await.expect("store");
        assert!(
            stored.nodes >= K,
            "value {i} stored on {} nodes",
            stored.nodes
        );
        keys.push(stored.key);
    }

    // Kill 6 of the other nodes at once. With k = 3, a random 30 % would take all three closest
    // holders of about 2 % of the keys: such a key is lost until its publisher republishes it
    // (the next test). Victims are drawn until none takes every closest holder of a key.
    let mut rng_state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let victims: HashSet<PeerId> = loop {
        let mut pool: Vec<PeerId> = ids[14..].to_vec();
        pool.extend(ids[..14].iter().copied());
        let mut chosen = HashSet::new();
        while chosen.len() < 6 {
            let p = pool[(next() % pool.len() as u64) as usize];
            chosen.insert(p);
        }
        let wipes_a_key = keys
            .iter()
            .any(|k| closest(&ids, k, K).iter().all(|p| chosen.contains(p)));
        if !wipes_a_key {
            break chosen;
        }
    };
    for n in nodes.iter().filter(|n| victims.contains(&n.peer_id())) {
        n.stop().await;
    }
    let killed_at = Instant::now();
    let survivors: Vec<&Dht> = nodes
        .iter()
        .filter(|n| !victims.contains(&n.peer_id()))
        .collect();
    assert_eq!(survivors.len(), 14);

    // Right away: every value fetchable from every survivor (16 fetches in flight per survivor,
    // as a client would pace them; a fetch still has its own deadline).
    for node in &survivors {
        let results: Vec<_> = futures::stream::iter(keys.iter().map(|k| node.fetch(k)))
            .buffered(FETCHES_IN_FLIGHT)
            .collect()
            .await;
        for (key, result) in keys.iter().zip(results) {
            let value = result.unwrap_or_else(|e| panic!("fetch {key} from a survivor: {e}"));
            assert_eq!(Key::for_value(&value), *key);
        }
    }
    let fetched_in = killed_at.elapsed();

    // Re-replication: every value back on >= 3 live nodes. The survivors re-store what they hold
    // every replication interval; the deadline allows a few rounds on a loaded machine, and the
    // time it took is printed, not asserted (a wall-clock bound would measure the machine).
    let short_at_first = under_replicated(&survivors, &keys).await.len();
    let within = 3 * (timing.replication_interval + timing.query_timeout);
    eventually(
        within,
        "every value to be on 3 live nodes again",
        || async {
            under_replicated(&survivors, &keys)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    println!(
        "6 of 20 killed: 1400 fetches from 14 survivors all good within {fetched_in:?}; \
         {short_at_first} under-replicated keys back on >= {K} live nodes {:?} after the kill",
        killed_at.elapsed()
    );
    for n in survivors {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_alone_restores_a_key_and_without_it_the_key_expires_and_is_never_stale() {
    let timing = Timing {
        query_timeout: Duration::from_secs(5),
        replication_interval: Duration::from_secs(3),
        record_ttl: Duration::from_secs(20),
        ..Timing::fast()
    };
    let nodes = network_with(12, || options(timing.clone())).await;
    let all: Vec<&Dht> = nodes.iter().collect();
    let value = b"republished by its publisher".to_vec();
    let publisher = &nodes[0];
    let key = publisher.store(value.clone()).await.expect("store").key;
    // Every node that holds it now, but the publisher.
    let mut doomed = Vec::new();
    for n in &nodes[1..] {
        if holders(&[n], &key).await == 1 {
            doomed.push(n.peer_id());
        }
    }
    assert!(!doomed.is_empty(), "nobody but the publisher holds the key");
    for n in nodes.iter().filter(|n| doomed.contains(&n.peer_id())) {
        n.stop().await;
    }
    let live: Vec<&Dht> = all
        .iter()
        .copied()
        .filter(|n| !doomed.contains(&n.peer_id()))
        .collect();

    // Scenario 2: within one replication interval, when the publisher re-stores its records (plus
    // the lookup), the key is on 3 live nodes again.
    eventually(
        timing.replication_interval + timing.query_timeout,
        "the publisher to republish onto 3 live nodes",
        || async { (holders(&live, &key).await >= K).then_some(()) },
    )
    .await;

    // Scenario 3: the publisher goes too. Every copy's life comes from a store by the publisher,
    // and nothing else lengthens it (replication keeps the expiry, caching never lengthens it): so
    // each copy expires at most one TTL after the publisher left, and is never served after that.
    publisher.stop().await;
    let expiry = Instant::now() + timing.record_ttl;
    let rest: Vec<&Dht> = live[1..].to_vec();
    // Fetch from every survivor until the expiry: the right value or not found, never later.
    let grace = Duration::from_millis(500);
    let end = expiry + dht::node::EXPIRY_SWEEP + Duration::from_secs(1);
    while Instant::now() < end {
        let asked_at = Instant::now();
        for (i, n) in rest.iter().enumerate() {
            match n.fetch(&key).await {
                Ok(v) => {
                    assert_eq!(v, value);
                    assert!(
                        asked_at <= expiry + grace,
                        "node {i} served the value {:?} after its expiry",
                        asked_at - expiry
                    );
                }
                Err(Error::NotFound(_) | Error::Timeout { .. }) => {}
                Err(e) => panic!("unexpected fetch error: {e}"),
            }
        }
    }
    for (i, n) in rest.iter().enumerate() {
        assert!(
            matches!(n.fetch(&key).await, Err(Error::NotFound(_))),
            "node {i} still finds the key after its TTL"
        );
        let status = n.status().await.expect("status");
        assert_eq!(
            status.stored_keys, 0,
            "node {i} still stores the expired record"
        );
    }
    stop_all(&nodes).await;
}
