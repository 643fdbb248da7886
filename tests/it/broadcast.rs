//! Broadcast reaches every other node exactly once, in its origin's name (signed by its key;
//! forgeries and floods are the simulator's tests, `dht::core::broadcast`).

use std::collections::HashMap;
use std::time::Duration;

use dht::{Dht, Event, Events};
use futures::FutureExt;
use libp2p::PeerId;
use rand::Rng;

use crate::common::{eventually, network, stop_all};

/// Takes every event already queued on `stream`: the origins each payload arrived from.
fn drain(stream: &mut Events, got: &mut HashMap<Vec<u8>, Vec<PeerId>>) {
    while let Some(Some(ev)) = stream.next().now_or_never() {
        match ev {
            Event::Broadcast { origin, payload } => got.entry(payload).or_default().push(origin),
            Event::Missed(n) => panic!("missed {n} events"),
            _ => {}
        }
    }
}

async fn quiet(nodes: &[Dht]) -> bool {
    for n in nodes {
        match n.status().await {
            Ok(s) if s.pending_operations == 0 => {}
            _ => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_broadcasts_reach_every_other_node_exactly_once() {
    let nodes = network(10, 20).await;
    let mut streams: Vec<Events> = nodes.iter().map(|n| n.events()).collect();
    let mut origin_of = HashMap::new();
    let mut rng = rand::thread_rng();
    for i in 0..20 {
        let from = rng.gen_range(0..nodes.len());
        let payload = format!("broadcast {i}").into_bytes();
        let sent = nodes[from]
            .broadcast(payload.clone())
            .await
            .expect("broadcast");
        assert!(sent > 0, "broadcast {i} was handed to nobody");
        origin_of.insert(payload, from);
    }
    let expected = |i: usize| origin_of.values().filter(|from| **from != i).count();

    let mut got: Vec<HashMap<Vec<u8>, Vec<PeerId>>> = vec![HashMap::new(); nodes.len()];
    let mut remaining = std::mem::take(&mut streams);
    eventually(Duration::from_secs(20), "every broadcast to arrive", || {
        for (i, s) in remaining.iter_mut().enumerate() {
            drain(s, &mut got[i]);
        }
        let done = (0..nodes.len()).all(|i| got[i].len() >= expected(i));
        async move { done.then_some(()) }
    })
    .await;
    // Then no hand-off may be left in flight anywhere (twice in a row), so no late duplicate can come.
    for _ in 0..2 {
        eventually(Duration::from_secs(20), "hand-offs to settle", || async {
            quiet(&nodes).await.then_some(())
        })
        .await;
    }
    for (i, s) in remaining.iter_mut().enumerate() {
        drain(s, &mut got[i]);
        for (payload, from) in &origin_of {
            let want: Vec<PeerId> = (*from != i)
                .then(|| nodes[*from].peer_id())
                .into_iter()
                .collect();
            assert_eq!(
                got[i].get(payload).cloned().unwrap_or_default(),
                want,
                "node {i}, {:?}: delivered once, in its origin's name",
                String::from_utf8_lossy(payload)
            );
        }
        assert_eq!(got[i].len(), expected(i), "node {i} got foreign payloads");
    }
    stop_all(&nodes).await;
}
