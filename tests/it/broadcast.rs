//! Broadcast reaches every other node exactly once.

use std::collections::HashMap;
use std::time::Duration;

use dht::{Dht, Event, Events};
use futures::FutureExt;
use rand::Rng;

use crate::common::{eventually, network, stop_all};

/// Takes every event already queued on `stream`, counting broadcasts by payload.
fn drain(stream: &mut Events, got: &mut HashMap<Vec<u8>, usize>) {
    while let Some(Some(ev)) = stream.next().now_or_never() {
        match ev {
            Event::Broadcast { payload, .. } => *got.entry(payload).or_default() += 1,
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

    let mut got: Vec<HashMap<Vec<u8>, usize>> = vec![HashMap::new(); nodes.len()];
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
            let want = usize::from(*from != i);
            assert_eq!(
                got[i].get(payload).copied().unwrap_or(0),
                want,
                "node {i}, {:?}",
                String::from_utf8_lossy(payload)
            );
        }
        assert_eq!(got[i].len(), expected(i), "node {i} got foreign payloads");
    }
    stop_all(&nodes).await;
}
