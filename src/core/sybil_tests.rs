//! Sybils that acknowledge and keep nothing, on the simulator (seeded, virtual time): a store
//! counts only copies served back, penalises the peers that claimed a copy they do not keep, and
//! goes on until the copies are on peers that serve them.

use std::collections::HashSet;
use std::time::Duration;

use dht_behaviours::Timing;
use dht_behaviours::validation::content_key;
use libp2p::PeerId;
use libp2p::kad::RecordKey;
use rand::Rng;

use super::*;
use crate::sim::{NetConfig, Sim};

const K: usize = 5;
const HONEST: usize = 10;
const SYBILS: usize = 40;

fn config() -> CoreConfig {
    test_config(K)
}

/// `HONEST` nodes, then `SYBILS` hollow ones joining through random honest nodes, settled.
fn besieged(seed: u64) -> Sim {
    besieged_by(seed, HONEST, SYBILS)
}

/// `honest` nodes, then `sybils` hollow ones joining through random honest nodes, settled.
fn besieged_by(seed: u64, honest: usize, sybils: usize) -> Sim {
    let mut sim = Sim::new(config(), NetConfig::default(), seed);
    sim.add_node();
    for i in 1..honest {
        sim.add_node();
        sim.join(i, 0);
        sim.run_for(Duration::from_millis(200));
    }
    for _ in 0..sybils {
        let i = sim.add_node();
        sim.make_hollow(i);
        let via = sim.rng().gen_range(0..honest);
        sim.join(i, via);
        sim.run_for(Duration::from_millis(50));
    }
    sim.run_for(Duration::from_secs(5));
    sim
}

fn sybil_ids(sim: &Sim) -> HashSet<PeerId> {
    (HONEST..HONEST + SYBILS).map(|i| sim.peer(i)).collect()
}

/// The honest nodes other than `publisher` that hold a live copy of `key`.
fn honest_holders(sim: &Sim, key: &[u8], publisher: usize) -> HashSet<PeerId> {
    honest_holders_of(sim, HONEST, key, publisher)
}

/// [`honest_holders`] among the first `honest` nodes.
fn honest_holders_of(sim: &Sim, honest: usize, key: &[u8], publisher: usize) -> HashSet<PeerId> {
    let now = sim.now_instant();
    let key = RecordKey::new(&key);
    (0..honest)
        .filter(|&i| i != publisher && sim.nodes[i].core.records().get(&key, now).is_some())
        .map(|i| sim.peer(i))
        .collect()
}

#[test]
fn a_store_counts_only_copies_served_back_and_blocks_peers_that_claim_copies_they_do_not_keep() {
    let mut sim = besieged(41);
    let sybils = sybil_ids(&sim);
    let in_table = |sim: &Sim| {
        sybils
            .iter()
            .filter(|p| sim.nodes[0].core.routing().contains(p))
            .count()
    };
    assert!(
        in_table(&sim) > 0,
        "the Sybils must be in the publisher's table for the test to mean anything"
    );
    let timeout = sim.query_timeout() * 3;
    let mut reached_sybils = 0;
    for v in 0..20u32 {
        let value = format!("value {v} among Sybils").into_bytes();
        let key = content_key(&value).to_vec();
        let op = sim.store(0, key.clone(), value);
        let (result, _) = sim.wait(op, timeout).expect("the store ended").clone();
        let Ok(OpOk::Stored { kept, .. }) = result else {
            panic!("store {v}: {result:?}");
        };
        let kept: HashSet<PeerId> = kept.into_iter().collect();
        reached_sybils += kept.iter().filter(|p| sybils.contains(p)).count();
        // The count is the truth: exactly the honest peers that hold it, no Sybil among them.
        assert_eq!(
            kept,
            honest_holders(&sim, &key, 0),
            "store {v}: the peers counted are those that hold a copy"
        );
        assert!(!kept.is_empty(), "store {v}: no honest copy at all");
    }
    assert_eq!(reached_sybils, 0, "no Sybil is ever counted as a copy");
    let stats = sim.nodes[0].core.stats();
    assert!(stats.unkept > 0, "the Sybils' empty answers were noticed");
    assert_eq!(
        in_table(&sim),
        0,
        "every Sybil that claimed a copy was blocked and left the table ({} unkept)",
        stats.unkept
    );
}

#[test]
fn in_a_small_network_stores_put_early_and_still_count_only_copies_served_back() {
    // 6 honest nodes and 8 Sybils: no bucket fills, so every store puts beside its lookup
    // (the rule of `Core::start_awaited`), to Sybils among the rest.
    let (honest, sybils) = (6, 8);
    let mut sim = besieged_by(43, honest, sybils);
    let table = sim.nodes[0].core.routing();
    assert!(
        table.is_unsaturated() && table.len() >= K,
        "the publisher must put early for the test to mean anything"
    );
    let sybil_ids: HashSet<PeerId> = (honest..honest + sybils).map(|i| sim.peer(i)).collect();
    let timeout = sim.query_timeout() * 3;
    for v in 0..20u32 {
        let value = format!("value {v} put early among Sybils").into_bytes();
        let key = content_key(&value).to_vec();
        let op = sim.store(0, key.clone(), value);
        let (result, _) = sim.wait(op, timeout).expect("the store ended").clone();
        let Ok(OpOk::Stored { kept, .. }) = result else {
            panic!("store {v}: {result:?}");
        };
        let kept: HashSet<PeerId> = kept.into_iter().collect();
        assert!(
            kept.is_disjoint(&sybil_ids),
            "store {v}: a Sybil was counted"
        );
        assert_eq!(
            kept,
            honest_holders_of(&sim, honest, &key, 0),
            "store {v}: the peers counted are those that hold a copy"
        );
        assert!(!kept.is_empty(), "store {v}: no honest copy at all");
    }
    assert!(
        sim.nodes[0].core.stats().unkept > 0,
        "the Sybils' empty answers were noticed"
    );
}

#[test]
fn once_the_sybils_vanish_every_value_is_on_k_honest_nodes_and_found_by_all() {
    let mut sim = besieged(42);
    let timeout = sim.query_timeout() * 3;
    let mut keys = Vec::new();
    for v in 0..20u32 {
        let value = format!("value {v} stored while Sybils abound").into_bytes();
        let key = content_key(&value).to_vec();
        let op = sim.store(v as usize % HONEST, key.clone(), value);
        sim.wait(op, timeout).expect("the store ended");
        keys.push((key, v as usize % HONEST));
    }
    // One replication interval: each value goes on to honest peers that serve it.
    let interval = config().timing.replication_interval;
    sim.run_for(interval * 2);
    for (key, publisher) in &keys {
        let copies = honest_holders(&sim, key, *publisher).len() + 1;
        assert!(
            copies >= K,
            "a value is on {copies} honest nodes, fewer than k = {K}"
        );
    }
    // Every Sybil vanishes at once, without a goodbye.
    for i in HONEST..HONEST + SYBILS {
        sim.kill(i);
    }
    for (key, _) in &keys {
        for reader in 0..HONEST {
            let op = sim.fetch(reader, key.clone());
            let (result, _) = sim.wait(op, timeout).expect("the fetch ended").clone();
            assert!(
                matches!(result, Ok(OpOk::Value(_))),
                "node {reader} could not fetch a value after the Sybils vanished: {result:?}"
            );
        }
    }
}

#[test]
fn a_routing_table_full_of_dead_peers_closer_to_the_key_never_shortens_a_received_copy() {
    // libp2p-kad's store shortens a received record's life for every routing entry closer to the
    // key; copies were seen with minutes left of 48 h while dead Sybils lingered. Ours admits a
    // copy by its own rules alone, whoever the table holds.
    let now = std::time::Instant::now();
    let mut cfg = config();
    cfg.timing = Timing::default();
    let ttl = cfg.timing.record_ttl;
    let mut core = Core::fresh(cfg, now);
    let value = b"kept for its whole life".to_vec();
    let key = RecordKey::new(&content_key(&value));
    for _ in 0..300 {
        let input = Input::PeerSeen {
            peer: PeerId::random(),
            addrs: Vec::new(),
            same_host: false,
        };
        core.handle(input, now);
    }
    assert!(core.routing().len() >= 20, "the table filled");
    let mut record = libp2p::kad::Record::new(key.clone(), value);
    record.expires = Some(now + ttl);
    let input = Input::Request {
        peer: PeerId::random(),
        id: 1,
        request: dht_behaviours::kad_wire::KadRequest::PutValue { record },
        serving: true,
        host: None,
        same_host: false,
    };
    core.handle(input, now);
    // Every peer of the table turns out dead.
    let dead: Vec<PeerId> = core.routing().entries().map(|e| *e.peer()).collect();
    for peer in dead {
        core.handle(Input::Unreachable { peer }, now);
    }
    let later = now + Duration::from_secs(3600);
    let held = core
        .records()
        .get(&key, later)
        .expect("still held an hour later");
    assert_eq!(
        held.expires,
        Some(now + ttl),
        "the copy keeps its whole life"
    );
}
