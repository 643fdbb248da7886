//! Store and fetch across a network.

use std::collections::BTreeSet;
use std::time::Duration;

use dht::limits::MAX_VALUE_SIZE;
use dht::{Dht, Error, Key, PeerId};
use libp2p::kad::KBucketKey;

use crate::common::{network, stop_all};

async fn holders(nodes: &[Dht], key: &Key) -> BTreeSet<PeerId> {
    let mut out = BTreeSet::new();
    for n in nodes {
        if n.local_records()
            .await
            .expect("records")
            .iter()
            .any(|r| r.key == *key)
        {
            out.insert(n.peer_id());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_stored_on_one_node_is_fetched_verified_from_all_others() {
    let nodes = network(10, 20).await;
    let value = b"the quick brown fox".to_vec();
    let stored = nodes[3].store(value.clone()).await.expect("store");
    assert_eq!(stored.key, Key::for_value(&value));
    assert!(
        stored.remote >= 9,
        "stored on {} peers, expected all 9",
        stored.remote
    );
    assert_eq!(stored.nodes, stored.remote + 1);
    assert_eq!(
        holders(&nodes, &stored.key).await.len(),
        stored.nodes,
        "the count is the nodes that hold it"
    );
    for (i, node) in nodes.iter().enumerate() {
        let got = node
            .fetch(&stored.key)
            .await
            .unwrap_or_else(|e| panic!("node {i}: {e}"));
        assert_eq!(got, value, "node {i}");
    }
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replication_factor_three_exactly_the_closest_hold_the_value() {
    let nodes = network(10, 3).await;
    for round in 0..5 {
        let publisher = &nodes[round];
        let value = format!("value number {round}").into_bytes();
        let stored = publisher.store(value.clone()).await.expect("store");
        assert!(
            stored.nodes >= 3,
            "round {round}: only {} nodes",
            stored.nodes
        );

        let target = KBucketKey::new(stored.key.as_bytes().to_vec());
        let mut ids: Vec<PeerId> = nodes.iter().map(|n| n.peer_id()).collect();
        ids.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
        let mut expected: BTreeSet<PeerId> = ids.into_iter().take(3).collect();
        expected.insert(publisher.peer_id());

        assert_eq!(
            holders(&nodes, &stored.key).await,
            expected,
            "round {round}"
        );
        assert_eq!(
            stored.nodes,
            expected.len(),
            "round {round}: reported count"
        );
        for node in &nodes {
            assert_eq!(node.fetch(&stored.key).await.expect("fetch"), value);
        }
    }
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_at_and_fetch_large_and_tiny_values_and_unknown_keys() {
    let nodes = network(4, 20).await;
    let big: Vec<u8> = (0..MAX_VALUE_SIZE).map(|i| (i * 7 % 251) as u8).collect();
    let free = Key::parse("/v/big-value").expect("key");
    let stored = nodes[0]
        .store_at(&free, big.clone())
        .await
        .expect("store 64 KiB");
    assert_eq!(stored.remote, 3);
    let tiny_key = Key::parse("/v/tiny").expect("key");
    nodes[1]
        .store_at(&tiny_key, vec![42u8])
        .await
        .expect("store 1 byte");
    for node in &nodes[1..] {
        assert_eq!(node.fetch(&free).await.expect("fetch big"), big);
    }
    assert_eq!(
        nodes[3].fetch(&tiny_key).await.expect("fetch tiny"),
        vec![42u8]
    );

    // A content key must match its value.
    let wrong = Key::for_value(b"something else");
    assert!(matches!(
        nodes[0].store_at(&wrong, b"value".to_vec()).await,
        Err(Error::ContentMismatch(_))
    ));

    // Unknown keys end with NotFound, within the deadline.
    let unknown = Key::for_value(b"never stored");
    let started = std::time::Instant::now();
    match nodes[2].fetch(&unknown).await {
        Err(Error::NotFound(k)) => assert_eq!(k, unknown),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );

    // Oversize values are refused before any traffic.
    let before: Vec<_> = futures::future::join_all(nodes.iter().map(|n| n.status())).await;
    let err = nodes[0]
        .store(vec![0u8; MAX_VALUE_SIZE + 1])
        .await
        .expect_err("too large");
    assert!(
        matches!(err, Error::ValueTooLarge { size, max } if size == MAX_VALUE_SIZE + 1 && max == MAX_VALUE_SIZE)
    );
    let err = nodes[0]
        .store_at(&free, vec![0u8; MAX_VALUE_SIZE + 1])
        .await
        .expect_err("too large");
    assert!(matches!(err, Error::ValueTooLarge { .. }));
    let after: Vec<_> = futures::future::join_all(nodes.iter().map(|n| n.status())).await;
    for (b, a) in before.iter().zip(&after) {
        let (b, a) = (b.as_ref().expect("status"), a.as_ref().expect("status"));
        assert_eq!(a.counters.stores_issued, b.counters.stores_issued);
        assert_eq!(a.counters.stores_served, b.counters.stores_served);
    }
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_stores_at_once_all_reach_every_node() {
    // Each store puts to the same 5 peers: 200 requests to each at once, more than a kad server
    // takes on one connection (32), so ours wait their turn instead of being dropped.
    let nodes = network(6, 6).await;
    let values: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("burst value {i}").into_bytes())
        .collect();
    let stores = values.iter().map(|v| nodes[0].store(v.clone()));
    let results = futures::future::join_all(stores).await;
    for (i, r) in results.into_iter().enumerate() {
        let stored = r.unwrap_or_else(|e| panic!("store {i}: {e}"));
        assert_eq!(
            stored.remote, 5,
            "store {i} reached {} of 5 peers",
            stored.remote
        );
    }
    let last = Key::for_value(&values[199]);
    assert_eq!(holders(&nodes, &last).await.len(), 6);
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_store_that_every_peer_refused_is_an_error_and_nothing_is_held() {
    // Stores of 8 records give one remote peer a share of one.
    let limits = dht::StoreLimits {
        max_records: 8,
        max_bytes: 1 << 20,
    };
    let nodes =
        crate::common::network_with(2, || crate::common::options(20).store_limits(limits)).await;
    let client = Dht::start(
        crate::common::options(20)
            .client_mode(true)
            .bootstrap(crate::common::addr_of(&nodes[0]).await),
    )
    .await
    .expect("start client");
    crate::common::wait_routed(std::slice::from_ref(&client), 2).await;
    let first = client
        .store(b"within the share".to_vec())
        .await
        .expect("store");
    assert_eq!((first.nodes, first.remote), (2, 2), "both nodes kept it");
    assert_eq!(
        holders(&nodes, &first.key).await.len(),
        2,
        "and both hold it"
    );
    let over = b"over the share".to_vec();
    match client.store(over.clone()).await {
        Err(Error::NotKept(key)) => assert_eq!(key, Key::for_value(&over)),
        other => panic!("expected NotKept, got {other:?}"),
    }
    assert!(holders(&nodes, &Key::for_value(&over)).await.is_empty());
    assert_eq!(
        holders(&nodes, &first.key).await.len(),
        2,
        "the first is kept"
    );
    client.stop().await;
    stop_all(&nodes).await;
}
