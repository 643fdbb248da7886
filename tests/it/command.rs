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
        if let Event::CommandReceived { peer, payload, len } = ev {
            assert_eq!(
                (peer, payload, len),
                (nodes[0].peer_id(), b"ping".to_vec(), 4)
            );
        } else {
            seen = events.next().await;
        }
    }

    // A large command: the handler gets all of it, the event only its first bytes and its length
    // (a slow subscriber must not make the node hold a thousand such payloads).
    let big = vec![b'a'; 100 * 1024];
    let reply = nodes[0]
        .custom_cmd(nodes[1].peer_id(), big.clone())
        .await
        .expect("reply");
    assert!(
        reply.starts_with(&big.to_ascii_uppercase()),
        "the handler saw it whole"
    );
    loop {
        match events.next().await.expect("an event") {
            Event::CommandReceived { payload, len, .. } => {
                assert_eq!(len, big.len());
                assert_eq!(payload, big[..dht::options::EVENT_PAYLOAD_PREVIEW].to_vec());
                break;
            }
            _ => continue,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_commands_and_an_oversize_one_end_without_hanging() {
    let nodes = network(2, 20).await;
    nodes[1]
        .set_command_handler(|_, payload: Vec<u8>| async move {
            // Slow enough that many are in flight at once.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(payload)
        })
        .await
        .expect("handler");
    let target = nodes[1].peer_id();
    let started = Instant::now();
    let results = futures::future::join_all((0..200u32).map(|i| {
        let node = nodes[0].clone();
        async move {
            node.custom_cmd(target, i.to_be_bytes().to_vec())
                .await
                .map(|r| (i, r))
        }
    }))
    .await;
    let mut answered = 0;
    for r in results {
        match r {
            Ok((i, reply)) => {
                assert_eq!(reply, i.to_be_bytes().to_vec());
                answered += 1;
            }
            Err(other) => panic!("a command ended with {other}"),
        }
    }
    // At most 32 go out at once to one peer; the rest wait in a bounded queue, and all are answered.
    assert_eq!(answered, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    // A 2 MiB request is refused before it is sent; the node goes on answering.
    let big = vec![0u8; 2 * 1024 * 1024];
    assert!(matches!(
        nodes[0].custom_cmd(target, big).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    assert_eq!(
        nodes[0]
            .custom_cmd(target, b"still".to_vec())
            .await
            .expect("reply"),
        b"still"
    );
    assert_eq!(
        nodes[1].status().await.expect("status").pending_operations,
        0
    );
    stop_all(&nodes).await;
}
