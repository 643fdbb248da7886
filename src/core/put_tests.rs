//! A store's put phase on one core fed by hand: each target's check rides right behind its PUT,
//! the two answers count in whichever order they come, and only a copy served back counts.

use std::collections::HashSet;
use std::time::Instant;

use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind};
use libp2p::PeerId;
use libp2p::kad::Record;

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
                        },
                    };
                    let check = Input::Response {
                        id: then.id,
                        response: served,
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
                result: Ok(OpOk::Stored { kept }),
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
