//! A store's put phase on one core fed by hand: each target's check rides right behind its PUT,
//! the two answers count in whichever order they come, and only a copy served back counts.

use std::collections::HashSet;
use std::time::Instant;

use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind, WirePeer};
use libp2p::PeerId;
use libp2p::kad::{KBucketKey, Record};

use super::throttle_tests::core_with_peers;
use super::*;

/// How a target answers its PUT and its check.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    /// Acknowledges, then serves the copy.
    Honest,
    /// Serves the copy before its acknowledgement comes (answers may arrive in any order).
    CheckFirst,
    /// Acknowledges and keeps nothing: a lie.
    Liar,
    /// Refuses the PUT (a full store) and holds nothing: no lie.
    Refuses,
}

/// Runs a store of `value` under `key` through a core of k = 3 that knows 6 peers, each target
/// answering as `behave` says. Returns the reply's kept peers, the peers that got the record (in
/// order), every action and the core's counters after.
fn store(behave: impl Fn(usize) -> Target) -> (Vec<PeerId>, Vec<PeerId>, Vec<Action>, CoreStats) {
    let now = Instant::now();
    let (mut core, _) = core_with_peers(6, now);
    let (key, value) = (b"/v/piped".to_vec(), b"value".to_vec());
    let record = Record::new(key.clone(), value.clone());
    let mut queue = core.handle(Input::Store { op: 1, key, value }, now);
    let (mut targets, mut all) = (Vec::new(), Vec::new());
    while !queue.is_empty() {
        let mut next = Vec::new();
        for action in &queue {
            let Action::Send(o) = action else { continue };
            let step = match &o.request {
                KadRequest::FindNode { .. } => vec![Input::Response {
                    id: o.id,
                    response: KadResponse::to(MessageKind::FindNode),
                    same_host: false,
                }],
                KadRequest::PutValue { .. } => {
                    let then = o.then.as_ref().expect("the check rides with its PUT");
                    assert!(
                        matches!(then.request, KadRequest::GetValue { .. }) && then.peer == o.peer,
                        "the check follows the PUT to the same peer: {then:?}"
                    );
                    assert!(!then.closer_wanted, "a check needs the record alone");
                    let behave = behave(targets.len());
                    targets.push(o.peer);
                    let mut served = KadResponse::to(MessageKind::GetValue);
                    if matches!(behave, Target::Honest | Target::CheckFirst) {
                        served.record = Some(record.clone());
                    }
                    let put = match behave {
                        Target::Refuses => Input::Failure {
                            id: o.id,
                            kind: FailureKind::Refused,
                        },
                        _ => Input::Response {
                            id: o.id,
                            response: KadResponse::to(MessageKind::PutValue),
                            same_host: false,
                        },
                    };
                    let check = Input::Response {
                        id: then.id,
                        response: served,
                        same_host: false,
                    };
                    if behave == Target::CheckFirst {
                        vec![check, put]
                    } else {
                        vec![put, check]
                    }
                }
                other => panic!("no other request in a store: {other:?}"),
            };
            for input in step {
                next.extend(core.handle(input, now));
            }
        }
        all.extend(queue);
        queue = next;
    }
    let kept = all
        .iter()
        .find_map(|a| match a {
            Action::Reply {
                op: 1,
                result: Ok(OpOk::Stored { kept, .. }),
                ..
            } => Some(kept.clone()),
            _ => None,
        })
        .expect("the store replied");
    (kept, targets, all, core.stats())
}

#[test]
fn a_check_rides_with_its_put_and_counts_in_either_order() {
    let (kept, targets, all, stats) = store(|i| {
        if i % 2 == 0 {
            Target::Honest
        } else {
            Target::CheckFirst
        }
    });
    assert!(targets.len() >= 2, "at least two targets: {targets:?}");
    let unique: HashSet<PeerId> = targets.iter().copied().collect();
    assert_eq!(unique.len(), targets.len(), "each target once");
    assert_eq!(
        kept.iter().copied().collect::<HashSet<_>>(),
        unique,
        "every target that served the copy counts, whichever answer came first"
    );
    assert!(!all.iter().any(|a| matches!(a, Action::Lied { .. })));
    assert_eq!(stats.unkept, 0);
}

#[test]
fn a_liar_is_replaced_and_a_refusal_is_no_lie() {
    // The first target lies, the second refuses, every other (the replacements) is honest.
    let (kept, targets, _, stats) = store(|i| match i {
        0 => Target::Liar,
        1 => Target::Refuses,
        _ => Target::Honest,
    });
    let (liar, refuser) = (targets[0], targets[1]);
    assert!(!kept.contains(&liar) && !kept.contains(&refuser));
    // Each miss was replaced by a spare candidate, so the store still reached its k - 1 peers
    // (this node keeps the k-th copy, or the lookup's k closest were all peers).
    assert!(kept.len() >= 2, "replacements kept copies: {kept:?}");
    assert_eq!(
        targets.len(),
        kept.len() + 2,
        "one replacement per miss: {targets:?}"
    );
    // The liar acknowledged a copy it does not serve; the refuser promised nothing.
    assert_eq!(stats.unkept, 1, "one lie: the liar's");
}

/// The peers among the first `n` of `peers` and `core`'s own id by distance to `key` (a serving
/// node keeps its own copy and puts to the others).
fn nearest(core: &Core, peers: &[PeerId], key: &[u8], n: usize) -> Vec<PeerId> {
    let target = KBucketKey::new(key.to_vec());
    let mut sorted = peers.to_vec();
    sorted.push(*core.local());
    sorted.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
    sorted.truncate(n);
    sorted.retain(|p| p != core.local());
    sorted
}

/// The peers `actions` send a store's PUT_VALUE to, and whether any FIND_NODE goes out beside
/// them.
fn puts_and_lookup(actions: &[Action]) -> (Vec<PeerId>, bool) {
    let mut puts = Vec::new();
    let mut lookup = false;
    for a in actions {
        if let Action::Send(o) = a {
            match o.request {
                // A store's PUT carries its check; one without is a hand-off of a record this
                // node holds to a newcomer closer to it, not part of the store.
                KadRequest::PutValue { .. } if o.then.is_some() => puts.push(o.peer),
                KadRequest::FindNode { .. } => lookup = true,
                _ => {}
            }
        }
    }
    (puts, lookup)
}

/// Answers every request among `actions` as an honest peer that knows `closer` (named in
/// FIND_NODE answers) and serves `record` back; returns what the core did next.
fn answer_honestly(
    core: &mut Core,
    actions: &[Action],
    record: &Record,
    closer: &[WirePeer],
    now: Instant,
) -> Vec<Action> {
    let mut next = Vec::new();
    for a in actions {
        let Action::Send(o) = a else { continue };
        let mut response = match o.request {
            KadRequest::FindNode { .. } => KadResponse::to(MessageKind::FindNode),
            _ => KadResponse::to(MessageKind::PutValue),
        };
        response.closer = closer
            .iter()
            .filter(|w| w.peer != o.peer)
            .cloned()
            .collect();
        next.extend(core.handle(
            Input::Response {
                id: o.id,
                response,
                same_host: false,
            },
            now,
        ));
        if let Some(then) = &o.then {
            let mut served = KadResponse::to(MessageKind::GetValue);
            served.record = Some(record.clone());
            let input = Input::Response {
                id: then.id,
                response: served,
                same_host: false,
            };
            next.extend(core.handle(input, now));
        }
    }
    next
}

fn stored(actions: &[Action]) -> Option<Vec<PeerId>> {
    actions.iter().find_map(|a| match a {
        Action::Reply {
            result: Ok(OpOk::Stored { kept, .. }),
            ..
        } => Some(kept.clone()),
        _ => None,
    })
}

#[test]
fn a_node_of_a_small_network_puts_beside_its_lookup() {
    let now = Instant::now();
    // k = 3 and 6 peers: no bucket is anywhere near full, so the table knows every peer.
    let (mut core, peers) = core_with_peers(6, now);
    let (key, value) = (b"/v/early".to_vec(), b"value".to_vec());
    let record = Record::new(key.clone(), value.clone());
    let first = core.handle(
        Input::Store {
            op: 1,
            key: key.clone(),
            value,
        },
        now,
    );
    let (puts, lookup) = puts_and_lookup(&first);
    assert!(lookup, "the lookup still runs, to confirm the targets");
    assert_eq!(
        puts,
        nearest(&core, &peers, &key, 3),
        "the k closest known get the record in the first round, beside the lookup"
    );
    // One round trip: the answers to the first round end the store.
    let next = answer_honestly(&mut core, &first, &record, &[], now);
    let kept = stored(&next).expect("the store ended with the first round's answers");
    assert_eq!(
        kept.iter().copied().collect::<HashSet<_>>(),
        puts.iter().copied().collect::<HashSet<_>>()
    );
}

#[test]
fn a_closer_peer_the_lookup_finds_gets_the_record_and_every_copy_served_counts() {
    let now = Instant::now();
    let (mut core, peers) = core_with_peers(6, now);
    let (key, value) = (b"/v/early-miss".to_vec(), b"value".to_vec());
    let record = Record::new(key.clone(), value.clone());
    // A peer the table does not know, closer to the key than any it does.
    let target = KBucketKey::new(key.clone());
    let best = *peers
        .iter()
        .min_by_key(|p| target.distance(&KBucketKey::from(**p)))
        .expect("peers");
    let newcomer = (1000..)
        .map(|s| PeerId::from(crate::identity::from_seed(s).public()))
        .find(|p| target.distance(&KBucketKey::from(*p)) < target.distance(&KBucketKey::from(best)))
        .expect("some seed is closer");
    let named = vec![WirePeer {
        peer: newcomer,
        addrs: vec!["/ip4/127.0.0.1/tcp/5999".parse().expect("addr")],
    }];
    let first = core.handle(
        Input::Store {
            op: 1,
            key: key.clone(),
            value,
        },
        now,
    );
    let (early, _) = puts_and_lookup(&first);
    assert_eq!(early, nearest(&core, &peers, &key, 3));
    assert!(!early.contains(&newcomer));
    let mut actions = answer_honestly(&mut core, &first, &record, &named, now);
    let mut later = Vec::new();
    let kept = loop {
        if let Some(kept) = stored(&actions) {
            break kept;
        }
        assert!(!actions.is_empty(), "the store stalled");
        later.extend(puts_and_lookup(&actions).0);
        actions = answer_honestly(&mut core, &actions, &record, &named, now);
    };
    assert_eq!(
        later,
        vec![newcomer],
        "the closer peer found gets the record, once"
    );
    // The early target pushed past the k closest served its copy: a copy, counted.
    let all: HashSet<PeerId> = early.iter().chain(&later).copied().collect();
    assert_eq!(kept.iter().copied().collect::<HashSet<_>>(), all);
}

#[test]
fn a_node_with_a_full_bucket_looks_up_before_it_puts() {
    let now = Instant::now();
    // Enough peers that the farthest bucket fills: the network is past what the table can
    // vouch for, whatever the key.
    let mut core = Core::fresh(test_config(3), now);
    for seed in 0..120 {
        let peer = PeerId::from(crate::identity::from_seed(seed).public());
        let addrs = vec![
            format!("/ip4/127.0.0.1/tcp/{}", 4001 + seed)
                .parse()
                .expect("addr"),
        ];
        core.handle(
            Input::PeerSeen {
                peer,
                addrs,
                same_host: false,
            },
            now,
        );
    }
    assert!(core.routing().bucket_sizes().any(|(_, n)| n >= BUCKET_SIZE));
    for i in 0..8 {
        let key = format!("/v/full-{i}").into_bytes();
        let first = core.handle(
            Input::Store {
                op: i,
                key,
                value: b"v".to_vec(),
            },
            now,
        );
        let (puts, lookup) = puts_and_lookup(&first);
        assert!(lookup && puts.is_empty(), "the lookup goes first: {puts:?}");
    }
}
