//! Providers, peer routing and IPNS names over real TCP on 127.0.0.1: what the driver carries
//! (ADD_PROVIDER, which has no answer on the wire; the addresses nodes announce) and what the
//! handle builds (signed IPNS records with their sequence managed).

use std::collections::BTreeSet;

use dht::ipns::{Name, PublishOptions};
use dht::{Error, Key, PeerId};
use libp2p::identity::Keypair;

use crate::common::{addr_of, closest, network, stop_all, tcp_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_announced_by_several_nodes_are_found_with_their_addresses() {
    let nodes = network(8, 3).await;
    let key = Key::parse("QmY7Yh4UquoXHLPFo2XbhXkhBvFoPwmQUSa92pxnxjQuPU").expect("a CIDv0");
    let announcers = [1, 4, 6];
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.peer_id()).collect();
    let closest = closest(&ids, &key, 3);
    for &a in &announcers {
        let provided = nodes[a].provide(&key).await.expect("provide");
        // The k closest list it: k peers, or k - 1 and itself.
        let itself = usize::from(closest.contains(&ids[a]));
        assert_eq!(provided.remote + itself, 3, "node {a}'s announcement");
    }
    let expected: BTreeSet<PeerId> = announcers.iter().map(|&a| nodes[a].peer_id()).collect();
    let found = nodes[7].providers(&key, 20).await.expect("providers");
    let peers: BTreeSet<PeerId> = found.iter().map(|p| p.peer).collect();
    assert_eq!(peers, expected);
    for p in &found {
        let i = nodes
            .iter()
            .position(|n| n.peer_id() == p.peer)
            .expect("a node");
        let port = tcp_port(&addr_of(&nodes[i]).await);
        assert!(
            p.addrs.iter().any(|a| tcp_port(a) == port),
            "provider {i} is announced at its listening port {port}: {:?}",
            p.addrs
        );
    }
    let none = nodes[0]
        .providers(&Key::parse("nobody provides this").expect("key"), 20)
        .await
        .expect("providers");
    assert!(none.is_empty());
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_is_found_at_the_address_it_listens_on() {
    let nodes = network(6, 3).await;
    for (from, sought) in [(0, 5), (5, 0), (2, 4)] {
        let found = nodes[from]
            .find_peer(nodes[sought].peer_id())
            .await
            .expect("find_peer");
        let port = tcp_port(&addr_of(&nodes[sought]).await);
        assert!(
            found.addrs.iter().any(|a| tcp_port(a) == port),
            "node {sought} found at {:?}, listening on port {port}",
            found.addrs
        );
    }
    let unknown = PeerId::random();
    match nodes[1].find_peer(unknown).await {
        Err(Error::PeerNotFound(p)) => assert_eq!(p, unknown),
        other => panic!("an unknown peer: {other:?}"),
    }
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipns_name_resolves_to_its_latest_publication_from_every_node() {
    let nodes = network(6, 3).await;
    // The node's own name, then a name of a given key published by two different nodes: the
    // sequence goes up each time, whoever publishes.
    let own = nodes[2]
        .publish_ipns(b"/ipfs/first", PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(own.name, Name(nodes[2].peer_id()));
    assert_eq!(own.sequence, 0);
    let key = Keypair::generate_ed25519();
    let with_key = |k: &Keypair| PublishOptions {
        key: Some(k.clone()),
        ..PublishOptions::default()
    };
    let first = nodes[0]
        .publish_ipns(b"/ipfs/one", with_key(&key))
        .await
        .expect("publish");
    let second = nodes[4]
        .publish_ipns(b"/ipfs/two", with_key(&key))
        .await
        .expect("publish again");
    assert_eq!((first.sequence, second.sequence), (0, 1));
    // The k closest keep it: k peers, or k - 1 and the publisher itself.
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.peer_id()).collect();
    let itself = usize::from(closest(&ids, &second.name.key(), 3).contains(&ids[4]));
    assert_eq!(second.stored.remote + itself, 3);
    for (i, node) in nodes.iter().enumerate() {
        let resolved = node.resolve_ipns(&second.name).await.expect("resolve");
        assert_eq!(resolved.value, b"/ipfs/two", "node {i}");
        assert_eq!(resolved.sequence, 1);
        let own = node.resolve_ipns(&Name(nodes[2].peer_id())).await;
        assert_eq!(own.expect("resolve own").value, b"/ipfs/first");
    }
    // A name nobody published.
    let nobody = Name(PeerId::random());
    assert!(matches!(
        nodes[3].resolve_ipns(&nobody).await,
        Err(Error::NotFound(_))
    ));
    stop_all(&nodes).await;
}
