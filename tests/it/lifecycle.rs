//! Start-up errors and shutdown.

use std::time::Duration;

use dht::{Dht, DhtOptions, Error, Key, Timing};
use libp2p::identity::Keypair;

use crate::common::{
    addr_of, eventually, options, reserved_addr, tcp_port, wait_routed, without_p2p,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_node_frees_its_port_and_later_calls_say_shutdown() {
    // The node listens on a reserved port: one from the ephemeral range could be taken, once freed,
    // by another test's connection before this test binds it again.
    let first = Dht::start(options(20)).await.expect("first node");
    let node = Dht::start(
        options(20)
            .listen_on([reserved_addr()])
            .bootstrap(addr_of(&first).await),
    )
    .await
    .expect("second node");
    let nodes = vec![first, node.clone()];
    wait_routed(&nodes, 1).await;
    let addr = addr_of(&node).await;
    let port = tcp_port(&addr);
    let mut events = node.events();
    assert!(node.running());
    node.stop().await;
    assert!(!node.running());
    node.wait().await;

    assert!(matches!(
        node.store(b"x".to_vec()).await,
        Err(Error::Shutdown)
    ));
    assert!(matches!(
        node.fetch(&Key::for_value(b"x")).await,
        Err(Error::Shutdown)
    ));
    assert!(matches!(node.status().await, Err(Error::Shutdown)));
    assert!(matches!(
        node.custom_cmd(nodes[0].peer_id(), b"x".to_vec()).await,
        Err(Error::Shutdown)
    ));
    assert!(matches!(
        node.broadcast(b"x".to_vec()).await,
        Err(Error::Shutdown)
    ));
    // Streams end, and new ones end at once.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), async {
            while events.next().await.is_some() {}
        })
        .await,
        Ok(())
    );
    assert_eq!(node.events().next().await, None);
    node.stop().await; // twice is fine

    // The socket is gone: the same port can be bound again.
    let again = Dht::start(
        options(20).listen_on([format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr")]),
    )
    .await
    .expect("the port is free again");
    // The survivor notices the departure.
    eventually(
        Duration::from_secs(10),
        "the peer to disconnect",
        || async {
            (nodes[0]
                .connected_peers()
                .await
                .ok()?
                .iter()
                .all(|p| p.peer != node.peer_id()))
            .then_some(())
        },
    )
    .await;
    again.stop().await;
    nodes[0].stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_and_bad_options_are_errors_at_start() {
    let first = Dht::start(options(20)).await.expect("start");
    let addr = addr_of(&first).await;
    let taken = without_p2p(&addr);
    match Dht::start(options(20).listen_on([taken.clone()])).await {
        Err(Error::Listen { addr, reason }) => {
            assert_eq!(addr, taken);
            assert!(!reason.is_empty());
        }
        Err(other) => panic!("expected a listen error, got {other}"),
        Ok(_) => panic!("a second node bound a port in use"),
    }
    let mut timing = Timing::fast();
    timing.replication_interval = timing.record_ttl;
    assert!(matches!(
        Dht::start(DhtOptions::default().timing(timing)).await,
        Err(Error::Config(_))
    ));
    assert!(DhtOptions::default().kad_protocol("no-slash").is_err());
    let unsupported = "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr");
    assert!(matches!(
        Dht::start(options(20).listen_on([unsupported])).await,
        Err(Error::Listen { .. })
    ));
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_peers_keeps_retrying_its_bootstrap_and_joins_when_it_appears() {
    // A reserved port, free: the bootstrap node will come up there later.
    let bare = reserved_addr();

    let joiner = Dht::start(options(20).bootstrap(bare.clone()))
        .await
        .expect("joiner");
    assert!(matches!(
        joiner.fetch(&Key::for_value(b"x")).await,
        Err(Error::NoPeers)
    ));
    let boot = Dht::start(options(20).listen_on([bare]))
        .await
        .expect("bootstrap node");
    eventually(
        Duration::from_secs(20),
        "the joiner to route the bootstrap node",
        || async {
            joiner
                .routing_table()
                .await
                .ok()?
                .iter()
                .any(|e| e.peer == boot.peer_id())
                .then_some(())
        },
    )
    .await;
    let stored = boot.store(b"late".to_vec()).await.expect("store");
    assert_eq!(joiner.fetch(&stored.key).await.expect("fetch"), b"late");
    joiner.stop().await;
    boot.stop().await;
}

/// `Some` once `node`'s routing table holds every one of `ids`.
async fn routes_all(node: &Dht, ids: &[libp2p::PeerId]) -> Option<()> {
    let table = node.routing_table().await.ok()?;
    ids.iter()
        .all(|id| table.iter().any(|e| e.peer == *id))
        .then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_peers_all_left_dials_them_again_when_they_return() {
    // The first node has no bootstrap address of its own; its two peers come back with none
    // either, so only the first node's memory of them can bring the network together again.
    let first = Dht::start(options(3)).await.expect("first node");
    let boot = addr_of(&first).await;
    let keys = [Keypair::generate_ed25519(), Keypair::generate_ed25519()];
    let mut peers = Vec::new();
    for key in &keys {
        let node = Dht::start(
            options(3)
                .keypair(key.clone())
                .listen_on([reserved_addr()])
                .bootstrap(boot.clone()),
        )
        .await
        .expect("peer");
        peers.push(node);
    }
    wait_routed(&peers, 1).await;
    // The first node must know both before they leave: it remembers only peers of its table. (A
    // peer's own table holding the first node says nothing of the first node's: on a loaded
    // machine the second peer used to stop before the first node had identified it.)
    let ids: Vec<_> = peers.iter().map(Dht::peer_id).collect();
    eventually(
        Duration::from_secs(30),
        "the first node to route both peers",
        || routes_all(&first, &ids),
    )
    .await;
    let mut addrs = Vec::new();
    for p in &peers {
        addrs.push(without_p2p(&addr_of(p).await));
        p.stop().await;
        p.wait().await;
    }
    // Their dials fail at the first node's next refresh: they leave its routing table.
    eventually(
        Duration::from_secs(30),
        "the first node's routing table to empty",
        || async { first.routing_table().await.ok()?.is_empty().then_some(()) },
    )
    .await;
    let back: Vec<Dht> =
        futures::future::join_all(keys.iter().zip(&addrs).map(|(key, addr)| {
            Dht::start(options(3).keypair(key.clone()).listen_on([addr.clone()]))
        }))
        .await
        .into_iter()
        .map(|r| r.expect("peer back on its address"))
        .collect();
    eventually(
        Duration::from_secs(45),
        "the first node to route both returned peers",
        || routes_all(&first, &ids),
    )
    .await;
    // And they serve again: a value stored through one is fetched through the first node.
    wait_routed(&back, 1).await;
    let stored = back[0]
        .store(b"together again".to_vec())
        .await
        .expect("store");
    assert!(stored.nodes >= 2, "stored on {} nodes", stored.nodes);
    let everyone: Vec<Dht> = std::iter::once(first.clone())
        .chain(back.iter().cloned())
        .collect();
    assert_eq!(
        crate::common::holders(&everyone, &stored.key).await,
        stored.nodes,
        "the count is the nodes that hold it"
    );
    assert_eq!(
        first.fetch(&stored.key).await.expect("fetch"),
        b"together again"
    );
    first.stop().await;
    for n in &back {
        n.stop().await;
    }
}
