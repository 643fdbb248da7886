//! Custom commands between nodes.

use std::time::{Duration, Instant};

use dht::{Error, Event};

use crate::common::{eventually, network, stop_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_command_round_trip_and_refusal_without_handler() {
    let nodes = network(3, 20).await;
    nodes[1]
        .set_command_handler(|peer, payload: Vec<u8>| async move {
            let mut reply = payload.to_ascii_uppercase();
            reply.extend_from_slice(format!(" from {peer}").as_bytes());
            Ok(reply)
        })
        .await
        .expect("handler");
    let mut events = nodes[1].events();
    let reply = nodes[0]
        .custom_cmd(nodes[1].peer_id(), b"ping".to_vec())
        .await
        .expect("reply");
    assert_eq!(
        reply,
        format!("PING from {}", nodes[0].peer_id()).into_bytes()
    );
    let seen = eventually(Duration::from_secs(5), "the command event", || {
        let next = futures::FutureExt::now_or_never(events.next());
        async move { next.flatten() }
    })
    .await;
    let mut seen = Some(seen);
    while let Some(ev) = seen.take() {
        if let Event::CommandReceived { peer, payload } = ev {
            assert_eq!((peer, payload), (nodes[0].peer_id(), b"ping".to_vec()));
        } else {
            seen = events.next().await;
        }
    }

    // A handler's refusal arrives as a typed error.
    nodes[2]
        .set_command_handler(|_, _| async { Err("not today".to_string()) })
        .await
        .expect("handler");
    match nodes[0].custom_cmd(nodes[2].peer_id(), b"x".to_vec()).await {
        Err(Error::CommandRefused { reason, .. }) => assert_eq!(reason, "not today"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    nodes[2].clear_command_handler().await.expect("clear");
    match nodes[0].custom_cmd(nodes[2].peer_id(), b"x".to_vec()).await {
        Err(Error::CommandRefused { reason, .. }) => assert!(reason.contains("no command handler")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_command_to_a_departed_peer_fails_within_the_deadline() {
    let nodes = network(3, 20).await;
    let gone = nodes[2].peer_id();
    nodes[2].stop().await;
    let started = Instant::now();
    let result = nodes[0].custom_cmd(gone, b"hello?".to_vec()).await;
    assert!(
        matches!(
            result,
            Err(Error::CommandFailed { .. } | Error::Timeout { .. })
        ),
        "got {result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    stop_all(&nodes[..2]).await;
}
