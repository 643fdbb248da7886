//! A fetch on one core fed by hand: when its k closest peers all lack the value, it asks on past
//! them (where copies sit while the closest set changes under churn) before saying not found.

use std::time::{Duration, Instant};

use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind};
use libp2p::PeerId;
use libp2p::kad::{KBucketKey, Record, RecordKey};

use super::queries::FETCH_DEPTH_IN_K;
use super::throttle_tests::core_with_peers;
use super::*;

/// Runs a fetch of `key` through a core of k = 3 that knows 9 peers, `holder` (the rank among
/// the peers by distance to the key, if any) serving the value and the others answering without
/// it. Returns the reply's result and the peers asked, in order, with the peers by rank.
fn fetch(holder: Option<usize>) -> (Result<OpOk, OpError>, Vec<PeerId>, Vec<PeerId>) {
    let now = Instant::now();
    let (mut core, mut peers) = core_with_peers(9, now);
    let key = b"/v/deep".to_vec();
    let target = KBucketKey::new(key.clone());
    peers.sort_by_key(|p| KBucketKey::from(*p).distance(&target));
    let record = Record::new(key.clone(), b"found past the closest".to_vec());
    let mut queue = core.handle(Input::Fetch { op: 1, key }, now);
    let mut asked = Vec::new();
    let mut reply = None;
    while !queue.is_empty() {
        let mut next = Vec::new();
        for action in &queue {
            match action {
                Action::Send(o) => {
                    assert!(matches!(o.request, KadRequest::GetValue { .. }));
                    asked.push(o.peer);
                    let mut response = KadResponse::to(MessageKind::GetValue);
                    if holder.is_some_and(|h| peers[h] == o.peer) {
                        response.record = Some(record.clone());
                    }
                    let input = Input::Response {
                        id: o.id,
                        response,
                        same_host: false,
                    };
                    next.extend(core.handle(input, now));
                }
                Action::Reply { op: 1, result, .. } => reply = Some(result.clone()),
                _ => {}
            }
        }
        queue = next;
    }
    (reply.expect("the fetch replied"), asked, peers)
}

#[test]
fn a_fetch_whose_k_closest_lack_the_value_asks_past_them() {
    // The fifth closest holds it: the three closest lack it (a closest set that changed).
    let (result, asked, peers) = fetch(Some(4));
    assert_eq!(
        result,
        Ok(OpOk::Value(b"found past the closest".to_vec())),
        "asked {asked:?}"
    );
    assert!(asked.contains(&peers[4]));
    // Absent everywhere: not found once the closest 2k have answered, and no farther.
    let (result, asked, peers) = fetch(None);
    assert!(matches!(result, Err(OpError::NotFound)), "{result:?}");
    let depth = FETCH_DEPTH_IN_K * 3;
    let mut expected = peers[..depth].to_vec();
    let mut got = asked.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "the closest {depth}, each once");
}

/// The handles' operations waiting for a lookup are bounded: past [`MAX_OPERATIONS`] one more
/// ends busy at once, while a fetch of a record held here and a peer's own address are still
/// answered (they wait for nothing); one ending makes room again.
#[test]
fn operations_past_the_bound_end_busy_and_what_is_held_is_still_answered() {
    let now = Instant::now();
    let (mut core, peers) = core_with_peers(4, now);
    let held = b"/v/held here".to_vec();
    let put = Input::Store {
        op: 0,
        key: held.clone(),
        value: b"kept".to_vec(),
    };
    core.handle(put, now);
    let mut first = None;
    // The store of `held` runs too: the bound counts it.
    for op in 1..MAX_OPERATIONS as u64 {
        let key = format!("/v/missing {op}").into_bytes();
        let actions = core.handle(Input::Fetch { op, key }, now);
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Reply { .. })),
            "operation {op} of {MAX_OPERATIONS} waits for its lookup"
        );
        if first.is_none() {
            first = actions.iter().find_map(|a| match a {
                Action::Send(o) => Some(o.id),
                _ => None,
            });
        }
    }
    assert_eq!(core.operations(), MAX_OPERATIONS);
    let busy = |actions: &[Action], op: OpId| {
        actions.iter().any(|a| {
            matches!(a, Action::Reply { op: o, result: Err(OpError::Busy { pending }), .. }
                if *o == op && *pending == MAX_OPERATIONS)
        })
    };
    let over = MAX_OPERATIONS as u64;
    let key = b"/v/one too many".to_vec();
    assert!(busy(
        &core.handle(Input::Fetch { op: over, key }, now),
        over
    ));
    let key = b"/v/another".to_vec();
    let store = Input::Store {
        op: over + 1,
        key: key.clone(),
        value: b"v".to_vec(),
    };
    assert!(busy(&core.handle(store, now), over + 1));
    assert!(
        core.records().get(&RecordKey::new(&key), now).is_none(),
        "a store refused as busy keeps nothing here either"
    );
    let local = Input::Fetch {
        op: over + 2,
        key: held,
    };
    let answered = core.handle(local, now);
    assert!(answered.iter().any(|a| matches!(
        a,
        Action::Reply { op, result: Ok(OpOk::Value(v)), .. } if *op == over + 2 && v == b"kept"
    )));
    let known = Input::FindPeer {
        op: over + 3,
        peer: peers[0],
    };
    let answered = core.handle(known, now);
    assert!(answered.iter().any(|a| matches!(
        a,
        Action::Reply { op, result: Ok(OpOk::PeerAddrs { .. }), .. } if *op == over + 3
    )));
    // One lookup's request times out for good: the room it leaves takes the next.
    let _ = first.expect("the first fetch sent a request");
    let later = now + core.config.timing.query_timeout + Duration::from_secs(1);
    core.handle(Input::Tick, later);
    assert!(core.operations() < MAX_OPERATIONS);
    let key = b"/v/room again".to_vec();
    let actions = core.handle(Input::Fetch { op: over + 4, key }, later);
    assert!(!busy(&actions, over + 4));
}
