//! Hostile peers: forged answers are discarded and their senders blocked; operators can block.

use std::time::Duration;

use dht::{Dht, Key, Multiaddr, PeerId, ProtocolConfig, StoreLimits, Timing};
use dht_behaviours::{DhtBehaviour, DhtBehaviourEvent};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{KBucketKey, Record, RecordKey};
use libp2p::swarm::SwarmEvent;
use libp2p::{SwarmBuilder, identify, noise, tcp, yamux};

use crate::common::{addr_of, eventually, network, options, stop_all};

/// A peer that speaks our protocols but holds a forged value under `key` and serves it to anyone.
/// It is driven here, not by our event loop, so nothing validates what it stores.
async fn liar(
    keypair: Keypair,
    boot: Multiaddr,
    key: &Key,
    forged: Vec<u8>,
) -> (PeerId, Multiaddr, tokio::task::JoinHandle<()>) {
    let config = ProtocolConfig {
        timing: Timing::fast(),
        ..ProtocolConfig::default()
    };
    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|k| DhtBehaviour::new(k, &config, StoreLimits::default()))
        .expect("behaviour")
        .build();
    let id = *swarm.local_peer_id();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    swarm
        .behaviour_mut()
        .kad
        .store_mut()
        .put(Record::new(RecordKey::new(&key.as_bytes()), forged))
        .expect("forged record");
    swarm.dial(boot).expect("dial");
    let task =
        tokio::spawn(async move {
            loop {
                if let SwarmEvent::Behaviour(DhtBehaviourEvent::Identify(
                    identify::Event::Received { peer_id, info, .. },
                )) = swarm.select_next_some().await
                {
                    swarm
                        .behaviour_mut()
                        .learn_from_identify(&peer_id, &info, true);
                }
            }
        });
    (id, addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_is_outvoted_by_the_hash_and_blocked() {
    let nodes = network(4, 20).await;
    // A value whose key is closer to the liar than to any honest node: every lookup asks it first.
    let keypair = Keypair::generate_ed25519();
    let liar_id = keypair.public().to_peer_id();
    let honest: Vec<PeerId> = nodes.iter().map(Dht::peer_id).collect();
    let value = (0u32..)
        .map(|i| format!("the true value {i}").into_bytes())
        .find(|v| {
            let target = KBucketKey::new(Key::for_value(v).as_bytes().to_vec());
            let to_liar = target.distance(&KBucketKey::from(liar_id));
            honest
                .iter()
                .all(|p| to_liar < target.distance(&KBucketKey::from(*p)))
        })
        .expect("some value is closest to the liar");
    let key = Key::for_value(&value);
    let (_, liar_addr, liar_task) = liar(
        keypair,
        addr_of(&nodes[0]).await,
        &key,
        b"a forged value".to_vec(),
    )
    .await;
    eventually(Duration::from_secs(10), "the liar to be routed", || async {
        nodes[0]
            .routing_table()
            .await
            .ok()?
            .iter()
            .any(|e| e.peer == liar_id)
            .then_some(())
    })
    .await;
    nodes[1].store(value.clone()).await.expect("store");

    // A client (it holds nothing, so every fetch asks the network) that joined through the liar.
    let reader = Dht::start(
        options(20)
            .client_mode(true)
            .bootstrap(liar_addr.with(libp2p::multiaddr::Protocol::P2p(liar_id))),
    )
    .await
    .expect("reader");
    eventually(
        Duration::from_secs(10),
        "the reader to route the honest nodes",
        || async { (reader.routing_table().await.ok()?.len() >= 4).then_some(()) },
    )
    .await;
    // Every fetch returns the true value; repeated fetches run the whole lookup, so the liar's
    // answer is seen and checked sooner or later.
    eventually(
        Duration::from_secs(20),
        "the liar to be blocked",
        || async {
            assert_eq!(
                reader.fetch(&key).await.expect("fetch"),
                value,
                "a forged value was returned"
            );
            reader
                .blocked()
                .await
                .ok()?
                .iter()
                .any(|b| b.peer == liar_id && b.remaining.is_some())
                .then_some(())
        },
    )
    .await;
    let status = reader.status().await.expect("status");
    assert!(status.counters.records_refused >= 1 && status.counters.peers_blocked >= 1);
    assert!(
        reader
            .routing_table()
            .await
            .expect("table")
            .iter()
            .all(|e| e.peer != liar_id)
    );
    eventually(
        Duration::from_secs(10),
        "the liar to be disconnected",
        || async {
            reader
                .connected_peers()
                .await
                .ok()?
                .iter()
                .all(|p| p.peer != liar_id)
                .then_some(())
        },
    )
    .await;
    liar_task.abort();
    reader.stop().await;
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_block_and_unblock_peers() {
    let nodes = network(3, 20).await;
    let (a, b) = (&nodes[0], nodes[1].peer_id());
    a.block(b).await.expect("block");
    assert_eq!(
        a.blocked()
            .await
            .expect("list")
            .iter()
            .map(|x| (x.peer, x.remaining))
            .collect::<Vec<_>>(),
        vec![(b, None)]
    );
    eventually(
        Duration::from_secs(10),
        "the blocked peer to be gone",
        || async {
            let gone = a.connected_peers().await.ok()?.iter().all(|p| p.peer != b)
                && a.routing_table().await.ok()?.iter().all(|e| e.peer != b);
            gone.then_some(())
        },
    )
    .await;
    // Still usable through the others, and the blocked peer cannot get back in.
    let stored = a.store(b"after the block".to_vec()).await.expect("store");
    assert_eq!(stored.remote, 1, "stored on the one unblocked peer only");
    // The handshake may complete, but the blocking side closes the connection at once.
    let _ = nodes[1].connect(addr_of(a).await).await;
    eventually(
        Duration::from_secs(10),
        "the blocked peer to be turned away",
        || async {
            let out = nodes[1]
                .connected_peers()
                .await
                .ok()?
                .iter()
                .all(|p| p.peer != a.peer_id());
            let out = out && a.connected_peers().await.ok()?.iter().all(|p| p.peer != b);
            out.then_some(())
        },
    )
    .await;
    assert!(a.unblock(b).await.expect("unblock"));
    assert!(!a.unblock(b).await.expect("unblock twice"));
    nodes[1]
        .connect(addr_of(a).await)
        .await
        .expect("reconnect after unblock");
    stop_all(&nodes).await;
}
