//! IPNS records across a simulated network: a better record replaces a worse one on every holder
//! and never the reverse; a resolve returns the best version its holders serve and corrects those
//! that served an older one; a forged record is kept nowhere.

use std::time::{Duration, SystemTime};

use dht_behaviours::validators::ipns;
use libp2p::identity::Keypair;
use libp2p::kad::{Record, RecordKey};

use super::*;
use crate::sim::{SIM_EPOCH, Sim};

const K: usize = 5;
const NODES: usize = 30;
const SEED_NAME: u8 = 7;

fn network(seed: u64) -> Sim {
    Sim::settled(test_config(K), NODES, seed)
}

/// The key of a name, the same in every run.
fn name_key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).expect("any 32 bytes are an ed25519 secret")
}

/// A record for `name` pointing at `value`, valid for a day of the simulation's wall clock.
fn record(name: &Keypair, value: &str, sequence: u64) -> Vec<u8> {
    let eol = SystemTime::UNIX_EPOCH + SIM_EPOCH + Duration::from_secs(86_400);
    ipns::build_record(name, value.as_bytes(), sequence, eol, ipns::DEFAULT_TTL)
        .expect("a valid record")
}

/// The sequence of the copy each living node holds (`None`: no copy).
fn held(sim: &Sim, key: &[u8]) -> Vec<Option<u64>> {
    let now = sim.now_instant();
    let key = RecordKey::new(&key);
    (0..sim.nodes.len())
        .filter(|&i| sim.nodes[i].alive)
        .map(|i| {
            sim.nodes[i]
                .core
                .records()
                .get(&key, now)
                .and_then(|r| ipns::sequence_of(&r.value))
        })
        .collect()
}

/// The sequence of node `i`'s copy.
fn holds(sim: &Sim, i: usize, key: &[u8]) -> Option<u64> {
    let now = sim.now_instant();
    sim.nodes[i]
        .core
        .records()
        .get(&RecordKey::new(&key), now)
        .and_then(|r| ipns::sequence_of(&r.value))
}

fn store(sim: &mut Sim, i: usize, key: &[u8], value: Vec<u8>) -> Result<usize, OpError> {
    let op = sim.store(i, key.to_vec(), value);
    let timeout = sim.query_timeout() * 3;
    match sim.wait(op, timeout) {
        Some((Ok(OpOk::Stored { kept, .. }), _)) => Ok(kept.len()),
        Some((Err(e), _)) => Err(e.clone()),
        other => panic!("store by node {i}: {other:?}"),
    }
}

fn resolve(sim: &mut Sim, i: usize, key: &[u8]) -> Option<u64> {
    let op = sim.fetch(i, key.to_vec());
    let timeout = sim.query_timeout() * 2;
    match sim.wait(op, timeout) {
        Some((Ok(OpOk::Value(v)), _)) => ipns::sequence_of(v),
        other => panic!("resolve from node {i}: {other:?}"),
    }
}

#[test]
fn a_better_record_replaces_a_worse_one_everywhere_and_never_the_reverse() {
    let mut sim = network(21);
    let name = name_key(SEED_NAME);
    let key = ipns::routing_key(&name.public().to_peer_id());
    let (v1, v2) = (record(&name, "/ipfs/one", 1), record(&name, "/ipfs/two", 2));
    assert_eq!(store(&mut sim, 3, &key, v1.clone()), Ok(K));
    assert!(held(&sim, &key).iter().filter(|s| **s == Some(1)).count() > K);
    // Sequence 2, from another node: every holder it reaches takes it.
    assert_eq!(store(&mut sim, 17, &key, v2), Ok(K));
    let twos: Vec<usize> = (0..NODES)
        .filter(|&i| holds(&sim, i, &key) == Some(2))
        .collect();
    assert!(twos.len() > K);
    // Only the first publisher, whose own copy the new store did not reach, may still hold 1.
    let ones: Vec<usize> = (0..NODES)
        .filter(|&i| holds(&sim, i, &key) == Some(1))
        .collect();
    assert!(ones.iter().all(|&i| i == 3), "holders of 1: {ones:?}");
    // Sequence 1 again, from a third node: no peer takes it (it is worse than what they hold).
    let again = store(&mut sim, 25, &key, v1);
    assert!(
        matches!(
            again,
            Err(OpError::Refused(Refusal::Superseded | Refusal::Conflict))
        ),
        "the worse record is kept by no peer: {again:?}"
    );
    // Never the reverse: every node that held 2 still does.
    for &i in &twos {
        assert_eq!(holds(&sim, i, &key), Some(2), "node {i} went back");
    }
    // A resolve from anywhere gives 2, and brings the publishers' stale copies up to date.
    for from in [3, 25, 0, 9] {
        assert_eq!(resolve(&mut sim, from, &key), Some(2));
    }
    sim.run_for(Duration::from_secs(1));
    assert!(
        !held(&sim, &key).contains(&Some(1)),
        "{:?}",
        held(&sim, &key)
    );
}

#[test]
fn a_resolve_returns_the_best_version_and_corrects_holders_of_older_ones() {
    let mut sim = network(22);
    let name = name_key(SEED_NAME);
    let key = ipns::routing_key(&name.public().to_peer_id());
    store(&mut sim, 2, &key, record(&name, "/ipfs/old", 1)).expect("stored");
    // One holder alone learns of sequence 2 (its publisher reached only it).
    let now = sim.now_instant();
    let holders: Vec<usize> = (0..NODES)
        .filter(|&i| {
            i != 2
                && sim.nodes[i]
                    .core
                    .records()
                    .get(&RecordKey::new(&key), now)
                    .is_some()
        })
        .collect();
    assert!(holders.len() >= K);
    let newer = Record::new(RecordKey::new(&key), record(&name, "/ipfs/new", 2));
    let lone = holders[0];
    let publisher = sim.peer(2);
    sim.nodes[lone]
        .core
        .records_mut()
        .admit(Source::Peer(publisher), newer, now)
        .expect("the better record is admitted");
    assert_eq!(
        held(&sim, &key).iter().filter(|s| **s == Some(2)).count(),
        1
    );
    // A resolve from a node that holds nothing asks several holders and gets the best.
    let asker = (0..NODES)
        .find(|&i| i != 2 && !holders.contains(&i))
        .expect("a node without a copy");
    assert_eq!(resolve(&mut sim, asker, &key), Some(2));
    sim.run_for(Duration::from_secs(2));
    let after = held(&sim, &key);
    let corrected = after.iter().filter(|s| **s == Some(2)).count();
    assert!(
        corrected > 1,
        "the holders that served sequence 1 were sent sequence 2: {after:?}"
    );
    assert!(sim.nodes[asker].core.stats().corrected > 0);
}

#[test]
fn a_forged_record_is_refused_everywhere() {
    let mut sim = network(23);
    let name = name_key(SEED_NAME);
    let key = ipns::routing_key(&name.public().to_peer_id());
    // Signed by another key, filed under the name: its own publisher's core refuses it...
    let forger = name_key(SEED_NAME + 1);
    let forged = record(&forger, "/ipfs/forged", 9);
    assert!(matches!(
        store(&mut sim, 4, &key, forged.clone()),
        Err(OpError::Refused(_))
    ));
    // ...and a PUT_VALUE of it sent straight to every node is refused by each.
    let from = sim.peer(4);
    for i in 0..NODES {
        let request = dht_behaviours::kad_wire::KadRequest::PutValue {
            record: Record::new(RecordKey::new(&key), forged.clone()),
        };
        let input = Input::Request {
            peer: from,
            id: 1_000 + i as u64,
            request,
            serving: true,
            host: None,
            same_host: false,
        };
        sim.input(i, input);
    }
    assert!(held(&sim, &key).iter().all(Option::is_none));
    let op = sim.fetch(11, key.clone());
    let timeout = sim.query_timeout() * 2;
    assert!(matches!(
        sim.wait(op, timeout),
        Some((Err(OpError::NotFound), _))
    ));
}

#[test]
fn a_resolve_cut_off_by_its_deadline_returns_the_best_record_it_has() {
    let mut sim = network(24);
    let name = name_key(SEED_NAME);
    let key = ipns::routing_key(&name.public().to_peer_id());
    store(&mut sim, 6, &key, record(&name, "/ipfs/held", 1)).expect("stored");
    // Node 6 is cut off from everyone: every request it sends goes unanswered.
    sim.set_side(6, 1);
    assert_eq!(
        resolve(&mut sim, 6, &key),
        Some(1),
        "its own copy, at the deadline"
    );
}
