//! A fetch on one core fed by hand: when its k closest peers all lack the value, it asks on past
//! them (where copies sit while the closest set changes under churn) before saying not found.

use std::time::Instant;

use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind};
use libp2p::PeerId;
use libp2p::kad::{KBucketKey, Record};

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
                    let input = Input::Response { id: o.id, response };
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
