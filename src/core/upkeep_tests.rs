//! Replication and hand-off: bounded among peers that never answer, a returning peer handed
//! records once per interval, a newcomer's hand-off within its share and only from a holder
//! among the k closest.

use std::time::{Duration, Instant};

use dht_behaviours::kad_wire::KadRequest;
use dht_behaviours::store::StoreLimits;
use dht_behaviours::validation::content_key;
use libp2p::PeerId;
use libp2p::kad::{Record, RecordKey};

use super::tests::{config, put};
use super::*;

#[test]
fn replication_among_peers_that_never_answer_is_bounded_and_leaves_the_handles_their_budget() {
    use super::upkeep::MAX_REPLICATION_QUERIES;
    let t0 = Instant::now();
    let cfg = config(5);
    let timing = cfg.timing.clone();
    let mut core = Core::fresh(cfg, t0);
    // Peers still connected (identify keeps naming them) whose kad requests all time out, as in
    // a half-partitioned network.
    let peers: Vec<PeerId> = (0..20).map(|_| PeerId::random()).collect();
    let see = |core: &mut Core, now| {
        for p in &peers {
            core.handle(
                Input::PeerSeen {
                    peer: *p,
                    addrs: Vec::new(),
                    same_host: false,
                },
                now,
            );
        }
    };
    see(&mut core, t0);
    let held = 3 * MAX_REPLICATION_QUERIES;
    for i in 0..held {
        let value = format!("value {i}").into_bytes();
        let record = Record::new(RecordKey::new(&content_key(&value)), value);
        let from = peers[i % peers.len()];
        let request = Input::Request {
            peer: from,
            id: i as u64,
            request: put(record),
            serving: true,
            host: None,
            same_host: false,
        };
        core.handle(request, t0);
    }
    assert_eq!(core.records().len(), held);
    // Records received are skipped by the round right after; the next one re-stores them all.
    let (mut now, end) = (t0, t0 + timing.replication_interval * 8);
    let mut peak = 0;
    while now < end {
        now = core.next_wakeup().max(now + Duration::from_millis(1));
        core.handle(Input::Tick, now);
        see(&mut core, now);
        peak = peak.max(core.restores());
        assert_eq!(
            core.operations(),
            0,
            "background work is no handle's operation"
        );
    }
    assert!(core.stats().restores >= held as u64, "{:?}", core.stats());
    assert_eq!(
        peak, MAX_REPLICATION_QUERIES,
        "the bound was reached and held (peak {peak})"
    );
}

#[test]
fn a_peer_that_leaves_and_comes_back_is_handed_the_records_once_per_replication_interval() {
    let t0 = Instant::now();
    let cfg = config(5);
    let interval = cfg.timing.replication_interval;
    let mut core = Core::fresh(cfg, t0);
    let writer = PeerId::random();
    for i in 0..50u64 {
        let value = format!("value {i}").into_bytes();
        let record = Record::new(RecordKey::new(&content_key(&value)), value);
        core.handle(
            Input::Request {
                peer: writer,
                id: i,
                request: put(record),
                serving: false,
                host: None,
                same_host: false,
            },
            t0,
        );
    }
    // Alone in the table, a newcomer is among the k closest to every key.
    let newcomer = PeerId::random();
    let puts_to = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| {
                matches!(a, Action::Send(o) if o.peer == newcomer
                    && matches!(o.request, KadRequest::PutValue { .. }))
            })
            .count()
    };
    let seen = |core: &mut Core, now| {
        core.handle(
            Input::PeerSeen {
                peer: newcomer,
                addrs: Vec::new(),
                same_host: false,
            },
            now,
        )
    };
    let first = seen(&mut core, t0);
    let handed = core.stats().handed_off;
    assert!(
        handed > 0 && puts_to(&first) > 0,
        "the newcomer gets its records"
    );
    for i in 1..20u32 {
        let at = t0 + Duration::from_millis(100 * u64::from(i));
        core.handle(Input::Unreachable { peer: newcomer }, at);
        seen(&mut core, at);
    }
    assert_eq!(
        core.stats().handed_off,
        handed,
        "leaving and coming back 19 times hands nothing more"
    );
    let later = t0 + interval;
    core.handle(Input::Unreachable { peer: newcomer }, later);
    seen(&mut core, later);
    assert_eq!(
        core.stats().handed_off,
        2 * handed,
        "again after an interval"
    );
}

/// A newcomer's hand-off with 100,000 records held: what it costs the event loop, printed (a
/// measurement, not part of the suite: `cargo test --lib handoff_with -- --ignored --nocapture`;
/// 6.5 ms per newcomer on 2026-12-04 in the test profile), and that it sends at most its share.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn a_handoff_with_a_hundred_thousand_records_sends_at_most_its_share() {
    use super::upkeep::MAX_HANDOFF_PER_PEER;
    let t0 = Instant::now();
    let mut cfg = config(20);
    cfg.store = StoreLimits {
        max_records: 200_000,
        max_bytes: 1 << 30,
    };
    let mut core = Core::fresh(cfg, t0);
    for i in 0..100_000u32 {
        let value = i.to_be_bytes().to_vec();
        let record = Record::new(RecordKey::new(&content_key(&value)), value);
        let _ = libp2p::kad::store::RecordStore::put(core.records_mut().store_mut(), record);
    }
    for _ in 0..200 {
        core.handle(
            Input::PeerSeen {
                peer: PeerId::random(),
                addrs: Vec::new(),
                same_host: false,
            },
            t0,
        );
    }
    let started = std::time::Instant::now();
    let mut sent = 0;
    let mut newcomers = 0;
    for _ in 0..20 {
        let actions = core.handle(
            Input::PeerSeen {
                peer: PeerId::random(),
                addrs: Vec::new(),
                same_host: false,
            },
            t0,
        );
        let puts = actions
            .iter()
            .filter(|a| matches!(a, Action::Send(o) if matches!(o.request, KadRequest::PutValue { .. })))
            .count();
        assert!(puts <= MAX_HANDOFF_PER_PEER);
        sent += puts;
        newcomers += 1;
    }
    println!(
        "hand-off with 100,000 records: {:?} per newcomer, {} records sent to {newcomers}",
        started.elapsed() / newcomers,
        sent
    );
}

/// A node hands a record to a closer newcomer only while it is itself among the k closest to the
/// key that it knows (the newcomer aside): a holder the closest set has moved past would
/// otherwise copy the value to every newcomer nearer than itself.
#[test]
fn only_a_holder_among_the_k_closest_hands_a_record_to_a_newcomer() {
    use dht_behaviours::point;
    let t0 = Instant::now();
    let k = 5;
    let mut core = Core::fresh(config(k), t0);
    let value = b"handed or not".to_vec();
    let key = content_key(&value);
    let target = point::of_key(&key);
    let own = point::distance(target, point::of_peer(core.local()));
    let record = Record::new(RecordKey::new(&key), value);
    let writer = PeerId::random();
    core.handle(
        Input::Request {
            peer: writer,
            id: 1,
            request: put(record),
            serving: false,
            host: None,
            same_host: false,
        },
        t0,
    );
    // Peers closer to the key than this node, in the order they are met.
    let mut closer = (0..)
        .map(|_| PeerId::random())
        .filter(|p| point::distance(target, point::of_peer(p)) < own);
    let handed_to = |actions: &[Action], peer: PeerId| {
        actions.iter().any(|a| {
            matches!(a, Action::Send(o) if o.peer == peer
                && matches!(o.request, KadRequest::PutValue { .. }))
        })
    };
    let mut met = 0;
    let mut handed = 0;
    // Until k closer peers are known this node is among the k closest it knows (the k-th
    // newcomer takes its place, and is handed its copy).
    for _ in 0..k {
        let peer = closer.next().expect("ids are endless");
        let actions = core.handle(
            Input::PeerSeen {
                peer,
                addrs: Vec::new(),
                same_host: false,
            },
            t0,
        );
        met += 1;
        handed += usize::from(handed_to(&actions, peer));
    }
    assert_eq!(handed, k, "each of the first {met} gets the record");
    // Once k peers closer than this node are known, it is no holder any more by its own table.
    for _ in 0..10 {
        let peer = closer.next().expect("ids are endless");
        let actions = core.handle(
            Input::PeerSeen {
                peer,
                addrs: Vec::new(),
                same_host: false,
            },
            t0,
        );
        assert!(
            !handed_to(&actions, peer),
            "a node past the k closest hands nothing on"
        );
    }
}
