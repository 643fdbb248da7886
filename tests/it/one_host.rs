//! Several identities from one address, over real sockets (issue #27). The victim counts
//! 127.0.0.1 as a host like any other (`include_loopback`), so the test host's one address
//! plays the attacker's machine.

use std::time::{Duration, SystemTime};

use dht::{Dht, ProtocolConfig, Timing};
use dht_behaviours::ip_limits::IpLimit;
use dht_behaviours::kad;
use dht_behaviours::kad_wire::KadRequest;
use dht_behaviours::store::StoreLimits;
use dht_behaviours::{DhtBehaviour, DhtBehaviourEvent};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{Record, RecordKey};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};

use crate::common::{addr_of, options, tcp_swarm};

/// Requests one attacker keeps in flight.
const IN_FLIGHT: usize = 16;

/// A node that counts loopback as a host, with a small store.
async fn victim(max_records: usize) -> Dht {
    let mut opts = options(20).store_limits(StoreLimits {
        max_records,
        max_bytes: 64 << 20,
    });
    opts.protocol.ip_limit = IpLimit {
        max_per_ip: 64,
        include_loopback: true,
    };
    Dht::start(opts).await.expect("start victim")
}

/// A bare swarm of our protocols under a fresh identity, driven by the test.
fn attacker() -> libp2p::Swarm<DhtBehaviour> {
    let config = ProtocolConfig {
        timing: Timing::fast(),
        ..ProtocolConfig::default()
    };
    tcp_swarm(Keypair::generate_ed25519(), |k| {
        DhtBehaviour::new(k, &config)
    })
}

/// PUTs every record of `records` to `target` from `swarm`; how many were acknowledged.
async fn put_all(
    swarm: &mut libp2p::Swarm<DhtBehaviour>,
    target: PeerId,
    addr: &Multiaddr,
    records: Vec<Record>,
) -> usize {
    let mut pending = records.into_iter();
    let mut in_flight = std::collections::HashSet::new();
    let mut acked = 0;
    loop {
        while in_flight.len() < IN_FLIGHT {
            let Some(record) = pending.next() else { break };
            in_flight.insert(swarm.behaviour_mut().kad.send_request(
                &target,
                KadRequest::PutValue { record },
                vec![addr.clone()],
            ));
        }
        if in_flight.is_empty() {
            return acked;
        }
        match swarm.select_next_some().await {
            SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Response {
                id,
                response,
                ..
            })) => {
                in_flight.remove(&id);
                acked += usize::from(response.record.is_some());
            }
            SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Failure { id, .. })) => {
                in_flight.remove(&id);
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_identities_from_one_address_cannot_fill_a_node() {
    // Failed before host shares: each identity kept within its own eighth, and together they
    // filled the store; the victim's own store then failed as "full".
    const RECORDS: usize = 512;
    let node = victim(RECORDS).await;
    let (id, addr) = (node.peer_id(), addr_of(&node).await);
    let mut acked = 0;
    for a in 0..16 {
        let mut swarm = attacker();
        let records = (0..RECORDS / 8)
            .map(|i| Record::new(RecordKey::new(&format!("/flood/{a}/{i}")), vec![b'x'; 100]))
            .collect();
        acked += put_all(&mut swarm, id, &addr, records).await;
    }
    let share = RECORDS / dht::core::records::quota::HOST_SHARE_DIVISOR;
    let held = node.key_count().await.expect("keys");
    assert_eq!(held, acked, "every acknowledgement is a copy held");
    assert_eq!(held, share, "one host, one share of the store");
    // The node's own store is taken.
    node.store_at(
        &dht::Key::parse("/mine").expect("key"),
        b"my value".to_vec(),
    )
    .await
    .expect("the node stores its own value");
    assert_eq!(node.key_count().await.expect("keys"), share + 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_record_replayed_by_four_identities_is_checked_once() {
    use dht_behaviours::validators::ipns::{build_record, routing_key_for};
    // Failed before: every replay of a held IPNS record had its signature checked again.
    let node = victim(1024).await;
    let (id, addr) = (node.peer_id(), addr_of(&node).await);
    let owner = Keypair::generate_ed25519();
    let eol = SystemTime::now() + Duration::from_secs(3600);
    let value =
        build_record(&owner, b"/ipfs/bafy", 1, eol, Duration::from_secs(300)).expect("record");
    let record = Record::new(RecordKey::new(&routing_key_for(&owner)), value);
    let mut acked = 0;
    for _ in 0..4 {
        let mut swarm = attacker();
        acked += put_all(&mut swarm, id, &addr, vec![record.clone(); 200]).await;
    }
    assert_eq!(acked, 800, "the copy is held: every replay is acknowledged");
    let status = node.status().await.expect("status");
    assert_eq!(
        status.counters.signatures_checked, 1,
        "{:?}",
        status.counters
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_by_another_peer_does_not_renew_a_free_keys_life() {
    // Failed before: any peer's unchanged replay with a fresh TTL renewed the value's life, so
    // a departed publisher's value lived as long as someone replayed it.
    let node = victim(1024).await;
    let (id, addr) = (node.peer_id(), addr_of(&node).await);
    let key = dht::Key::parse("/v/published").expect("key");
    let mut publisher = attacker();
    let mut record = Record::new(RecordKey::new(&key.as_bytes()), b"the value".to_vec());
    record.publisher = Some(*publisher.local_peer_id());
    let life = |secs| Some(std::time::Instant::now() + Duration::from_secs(secs));
    let left = || async {
        let held = node.local_records().await.expect("records");
        let r = held.iter().find(|r| r.key == key).expect("held");
        r.expires_in.expect("a copy from a peer expires")
    };
    record.expires = life(20);
    assert_eq!(
        put_all(&mut publisher, id, &addr, vec![record.clone()]).await,
        1
    );
    assert!(left().await <= Duration::from_secs(20));
    // Another identity replays it with a fresh, long life: acknowledged (the copy is held), and
    // nothing renewed.
    let mut replayer = attacker();
    let mut replay = record.clone();
    replay.expires = life(100);
    assert_eq!(
        put_all(&mut replayer, id, &addr, vec![replay.clone()]).await,
        1
    );
    assert!(
        left().await <= Duration::from_secs(20),
        "a replay renewed the value"
    );
    // Its publisher's republish does.
    assert_eq!(put_all(&mut publisher, id, &addr, vec![replay]).await, 1);
    assert!(left().await > Duration::from_secs(60));
    node.stop().await;
}

/// An attacker at `ip` (a loopback address of its own: 127/8 is all the test host's). The
/// victim dials it there, so the victim's connection, which carries the attacker's requests,
/// has `ip` as its remote address (a dial from the attacker would leave from 127.0.0.1).
async fn attacker_at(node: &Dht, ip: &str) -> libp2p::Swarm<DhtBehaviour> {
    let mut swarm = attacker();
    swarm
        .listen_on(format!("/ip4/{ip}/tcp/0").parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let me = *swarm.local_peer_id();
    let dial = node.connect(addr.with(libp2p::multiaddr::Protocol::P2p(me)));
    tokio::pin!(dial);
    let (mut dialed, mut established) = (false, false);
    let both = async {
        while !(dialed && established) {
            tokio::select! {
                r = &mut dial, if !dialed => {
                    r.expect("the victim dials the attacker");
                    dialed = true;
                }
                e = swarm.select_next_some() => {
                    established |= matches!(e, SwarmEvent::ConnectionEstablished { .. });
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("connected");
    swarm
}

/// Announces `swarm`'s peer as a provider of `key` to `target` and asks for the key's
/// providers right behind the announcement, on the same stream: the answer comes once the
/// announcement was taken (or refused).
async fn announce(
    swarm: &mut libp2p::Swarm<DhtBehaviour>,
    target: PeerId,
    addr: &Multiaddr,
    key: &[u8],
) -> Vec<PeerId> {
    let me = *swarm.local_peer_id();
    let provide = KadRequest::AddProvider {
        key: key.to_vec(),
        providers: vec![dht_behaviours::kad_wire::WirePeer {
            peer: me,
            addrs: vec!["/ip4/192.0.2.1/tcp/4001".parse().expect("addr")],
        }],
    };
    let ask = KadRequest::GetProviders { key: key.to_vec() };
    let (_, check) =
        swarm
            .behaviour_mut()
            .kad
            .send_pair(&target, (provide, false), ask, vec![addr.clone()]);
    let answer = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Response {
                    id,
                    response,
                    ..
                })) if id == check => return response.providers.iter().map(|p| p.peer).collect(),
                SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Failure {
                    id,
                    error,
                    ..
                })) if id == check => panic!("GET_PROVIDERS failed: {error}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_from_six_networks_cannot_hide_one_from_a_seventh() {
    use dht_behaviours::providers::{
        MAX_PROVIDERS_PER_KEY_PER_GROUP, MAX_PROVIDERS_PER_KEY_PER_HOST,
    };
    // Failed before address groups: 12 hosts of 4 identities each were all kept ahead of the
    // honest provider, which came 49th in the answer a `findprovs` reads the first 20 of.
    let node = victim(1024).await;
    let (id, addr) = (node.peer_id(), addr_of(&node).await);
    let key = b"content everyone wants".to_vec();
    let mut attackers = std::collections::HashSet::new();
    let mut listed = Vec::new();
    for net in 0..6 {
        // Three hosts of each /16, each as many identities as a host may provide a key with.
        for host in 1..=3 {
            for _ in 0..MAX_PROVIDERS_PER_KEY_PER_HOST {
                let ip = format!("127.{}.0.{host}", 10 + net);
                let mut swarm = attacker_at(&node, &ip).await;
                attackers.insert(*swarm.local_peer_id());
                listed = announce(&mut swarm, id, &addr, &key).await;
            }
        }
    }
    let kept = listed.iter().filter(|p| attackers.contains(p)).count();
    // More than one host's worth were kept (each /16 was seen as hosts of its own), and no
    // more than a group's share of each /16.
    assert_eq!(
        kept,
        6 * MAX_PROVIDERS_PER_KEY_PER_GROUP,
        "attackers kept: {kept} of {}",
        attackers.len()
    );
    let mut honest = attacker_at(&node, "127.99.0.1").await;
    let me = *honest.local_peer_id();
    let listed = announce(&mut honest, id, &addr, &key).await;
    let first = &listed[..listed.len().min(20)];
    assert!(
        first.contains(&me),
        "the honest provider is among the first 20 of {} listed",
        listed.len()
    );
    node.stop().await;
}
