//! The driver carries out the core's timers on real sockets: a publisher's re-store puts a value
//! back on k live nodes after a holder died. The policy itself (mass failure, the publisher alone,
//! expiry that is never stale, churn) is tested deterministically on the core and the simulator
//! (`src/core/tests.rs`); this checks only that the timers fire and their requests go out.

use std::num::NonZeroUsize;
use std::time::Duration;

use dht::{Dht, DhtOptions, Key, PeerId, Timing};

use crate::common::{SETTLE, closest, eventually, holds, network_with, stop_all};

const K: usize = 3;

fn options(timing: Timing) -> DhtOptions {
    crate::common::log_if_asked();
    DhtOptions::default()
        .listen_on(["/ip4/127.0.0.1/tcp/0".parse().expect("addr")])
        .timing(timing)
        .replication_factor(NonZeroUsize::new(K).expect("k"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_replaced_by_the_next_replication_round() {
    let timing = Timing {
        replication_interval: Duration::from_secs(2),
        ..Timing::fast()
    };
    // k + 2 nodes, the publisher the farthest from the key: the store reaches the k closest (and
    // the publisher keeps its own copy); the closest dies, and the next in line, which holds
    // nothing yet, must receive a copy from a replication round.
    let nodes = network_with(K + 2, || options(timing.clone())).await;
    let ids: Vec<PeerId> = nodes.iter().map(Dht::peer_id).collect();
    let value = b"replicated by a timer".to_vec();
    let key = Key::for_value(&value);
    let ranked = closest(&ids, &key, ids.len());
    let index = |p: &PeerId| ids.iter().position(|q| q == p).expect("a node");
    let publisher = &nodes[index(&ranked[K + 1])];
    assert_eq!(publisher.store(value).await.expect("store").key, key);
    for (rank, p) in ranked.iter().enumerate() {
        let held = holds(&nodes[index(p)], &key).await;
        assert_eq!(held, rank < K || rank == K + 1, "rank {rank} holds: {held}");
    }
    nodes[index(&ranked[0])].stop().await;
    let next = &nodes[index(&ranked[K])];
    // A liveness bound, not a speed check: the round comes every 2 s.
    eventually(
        SETTLE,
        "the next closest node to receive a copy",
        || async { holds(next, &key).await.then_some(()) },
    )
    .await;
    stop_all(&nodes).await;
}
