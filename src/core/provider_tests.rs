//! Provider records and peer routing across simulated networks of cores: announcements counted
//! only where they are served back, found from any node, renewed while their provider lives,
//! gone once it stops, surviving churn; peers found by id.

use std::collections::HashSet;
use std::time::Duration;

use libp2p::PeerId;
use libp2p::kad::RecordKey;

use super::*;
use crate::sim::Sim;

const K: usize = 5;
const NODES: usize = 40;

fn config() -> CoreConfig {
    test_config(K)
}

/// `NODES` nodes, each joined through a random earlier one, settled.
fn network(seed: u64) -> Sim {
    Sim::settled(config(), NODES, seed)
}

/// The living nodes whose store lists `provider` for `key`, `provider` itself left out.
fn listing(sim: &Sim, key: &[u8], provider: usize) -> HashSet<PeerId> {
    let now = sim.now_instant();
    let who = sim.peer(provider);
    let key = RecordKey::new(&key);
    (0..sim.nodes.len())
        .filter(|&i| i != provider && sim.nodes[i].alive)
        .filter(|&i| {
            sim.nodes[i]
                .core
                .records()
                .providers(&key, now)
                .any(|p| p.provider == who)
        })
        .map(|i| sim.peer(i))
        .collect()
}

fn provide(sim: &mut Sim, i: usize, key: &[u8]) -> usize {
    let op = sim.provide(i, key.to_vec());
    let timeout = sim.query_timeout() * 3;
    match sim.wait(op, timeout) {
        Some((Ok(OpOk::Stored { kept, .. }), _)) => kept.len(),
        other => panic!("provide by node {i} failed: {other:?}"),
    }
}

fn providers(sim: &mut Sim, i: usize, key: &[u8], want: usize) -> (HashSet<PeerId>, usize) {
    let op = sim.providers(i, key.to_vec(), want);
    let timeout = sim.query_timeout() * 2;
    match sim.wait(op, timeout) {
        Some((Ok(OpOk::Providers(found)), report)) => {
            (found.iter().map(|p| p.peer).collect(), report.requests)
        }
        other => panic!("providers from node {i} failed: {other:?}"),
    }
}

#[test]
fn providers_announced_by_several_nodes_are_found_from_another_and_counted_where_served() {
    let mut sim = network(3);
    let key = b"\x12\x20some content multihash.........".to_vec();
    let announcers = [2, 11, 27];
    for &a in &announcers {
        let kept = provide(&mut sim, a, &key);
        // The count is the peers that named the provider when asked back, and each of them
        // does list it.
        let listing = listing(&sim, &key, a);
        // k peers, or k - 1 when the provider is among the k closest itself (it lists itself).
        assert!(kept >= K - 1, "node {a}'s announcement is on {kept} peers");
        assert_eq!(listing.len(), kept, "the count is the peers that list it");
    }
    let expected: HashSet<PeerId> = announcers.iter().map(|&a| sim.peer(a)).collect();
    for from in [0, 19, 38] {
        let (found, _) = providers(&mut sim, from, &key, 20);
        assert_eq!(found, expected, "node {from} finds every provider");
    }
    // Asked for one, a lookup stops at the first answer that names any.
    let (one, requests_one) = providers(&mut sim, 35, &key, 1);
    assert_eq!(one.len(), 1);
    assert!(one.is_subset(&expected));
    let (_, requests_all) = providers(&mut sim, 35, &key, 20);
    assert!(
        requests_one <= requests_all,
        "an early stop never costs more ({requests_one} > {requests_all})"
    );
    // A key nobody provides: an empty answer, not an error.
    let (none, _) = providers(&mut sim, 5, b"nobody provides this", 20);
    assert!(none.is_empty());
}

#[test]
fn provider_records_are_renewed_while_their_provider_lives_and_expire_once_it_stops() {
    let mut sim = network(5);
    let ttl = config().timing.provider_ttl;
    let (live, gone) = (4, 9);
    let key_live = b"provided by a node that stays".to_vec();
    let key_gone = b"provided by a node that leaves".to_vec();
    provide(&mut sim, live, &key_live);
    provide(&mut sim, gone, &key_gone);
    sim.kill(gone);
    // Three provider TTLs: only re-announcements can keep a record alive that long.
    sim.run_for(ttl * 3);
    assert!(
        listing(&sim, &key_live, live).len() >= K - 1,
        "the living provider's record is renewed on the current closest nodes"
    );
    let (found, _) = providers(&mut sim, 30, &key_live, 20);
    assert_eq!(found, HashSet::from([sim.peer(live)]));
    assert!(
        listing(&sim, &key_gone, gone).is_empty(),
        "the departed provider's record expired everywhere"
    );
    let (found, _) = providers(&mut sim, 30, &key_gone, 20);
    assert!(found.is_empty());
}

#[test]
fn provider_records_survive_churn() {
    let mut sim = network(8);
    let interval = config().timing.provide_interval;
    let provider = 1;
    let key = b"provided through churn".to_vec();
    provide(&mut sim, provider, &key);
    // Every node that holds the record dies, and a third of the others with them; newcomers join.
    let holders = listing(&sim, &key, provider);
    let mut killed = 0;
    for i in 0..NODES {
        if i != provider && (holders.contains(&sim.peer(i)) || i % 3 == 0) {
            sim.kill(i);
            killed += 1;
        }
    }
    assert!(killed >= K);
    for _ in 0..10 {
        let i = sim.add_node();
        sim.join(i, provider);
        sim.run_for(Duration::from_millis(50));
    }
    assert!(listing(&sim, &key, provider).is_empty());
    // The provider's next announcement goes to the closest nodes living then.
    sim.run_for(interval + sim.query_timeout() * 3);
    assert!(!listing(&sim, &key, provider).is_empty());
    let newcomer = sim.nodes.len() - 1;
    let (found, _) = providers(&mut sim, newcomer, &key, 20);
    assert_eq!(found, HashSet::from([sim.peer(provider)]));
}

#[test]
fn a_peer_is_found_by_its_id_and_an_unknown_id_is_not() {
    let mut sim = network(12);
    let timeout = sim.query_timeout() * 2;
    // A peer far from the asker's table: the lookup reaches it.
    let sought = (1..NODES)
        .find(|&i| !sim.nodes[0].core.routing().contains(&sim.peer(i)))
        .expect("a peer outside node 0's table");
    let op = sim.find_peer(0, sim.peer(sought));
    match sim.wait(op, timeout) {
        Some((Ok(OpOk::PeerAddrs { reached, .. }), _)) => assert!(*reached),
        other => panic!("find_peer failed: {other:?}"),
    }
    let op = sim.find_peer(0, PeerId::random());
    match sim.wait(op, timeout) {
        Some((Err(OpError::NotFound), _)) => {}
        other => panic!("an unknown peer is not found: {other:?}"),
    }
    // A dead peer is not reached; no address of it is made up.
    sim.kill(sought);
    let op = sim.find_peer(3, sim.peer(sought));
    match sim.wait(op, timeout) {
        Some((Ok(OpOk::PeerAddrs { reached, .. }), _)) => assert!(!*reached),
        Some((Err(_), _)) => {}
        other => panic!("find_peer of a dead peer: {other:?}"),
    }
}

#[test]
fn every_provided_key_is_renewed_in_time_however_many_there_are() {
    let mut sim = network(14);
    let ttl = config().timing.provider_ttl;
    // More than the checks of one interval could start, eight at a time.
    let keys: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| format!("provided key {i}").into_bytes())
        .collect();
    for k in &keys {
        provide(&mut sim, 6, k);
    }
    sim.run_for(ttl * 3);
    let lapsed = keys
        .iter()
        .filter(|k| listing(&sim, k, 6).is_empty())
        .count();
    assert_eq!(lapsed, 0, "{lapsed} of {} keys lapsed", keys.len());
}

#[test]
fn announcements_carry_the_addresses_the_driver_gives_the_core() {
    let mut sim = network(15);
    let addrs: Vec<libp2p::Multiaddr> = vec![
        "/ip4/203.0.113.7/tcp/4001".parse().expect("addr"),
        "/ip6/2001:db8::7/tcp/4001".parse().expect("addr"),
    ];
    sim.input(
        9,
        Input::OwnAddresses {
            addrs: addrs.clone(),
        },
    );
    let key = b"announced with addresses".to_vec();
    provide(&mut sim, 9, &key);
    let now = sim.now_instant();
    let who = sim.peer(9);
    let holder = (0..NODES)
        .find(|&i| listing(&sim, &key, 9).contains(&sim.peer(i)))
        .expect("a holder");
    let held = sim.nodes[holder]
        .core
        .records()
        .providers(&RecordKey::new(&key), now)
        .find(|p| p.provider == who)
        .expect("listed");
    assert_eq!(held.addresses, addrs);
    // And find_peer of this node from itself gives them too.
    let op = sim.find_peer(9, who);
    let timeout = sim.query_timeout();
    match sim.wait(op, timeout) {
        Some((Ok(OpOk::PeerAddrs { addrs: found, .. }), _)) => assert_eq!(*found, addrs),
        other => panic!("find_peer of itself: {other:?}"),
    }
}
