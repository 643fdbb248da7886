//! "Throttled is not failed", on one core fed by hand: a peer that refuses our lookups (its rate
//! limit) stays in the table and is backed off from; a table emptied by real failures asks the
//! driver to re-learn the peers still connected.

use std::time::Instant;

use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind};
use libp2p::PeerId;
use libp2p::kad::KBucketKey;

use super::standing::throttle::THROTTLE_BACKOFF_MIN;
use super::*;

/// A core of k = 3 that knows `n` peers, on this host (their loopback addresses are kept).
pub(super) fn core_with_peers(n: usize, now: Instant) -> (Core, Vec<PeerId>) {
    let mut core = Core::fresh(test_config(3), now);
    let peers: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
    for (i, peer) in peers.iter().enumerate() {
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 4001 + i)
            .parse()
            .expect("addr");
        core.handle(
            Input::PeerSeen {
                peer: *peer,
                addrs: vec![addr],
                same_host: true,
            },
            now,
        );
    }
    assert_eq!(core.routing().len(), n);
    (core, peers)
}

/// The GET_VALUEs among `actions`: request and peer.
fn gets(actions: &[Action]) -> Vec<(RequestId, PeerId)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(o) if matches!(o.request, KadRequest::GetValue { .. }) => {
                Some((o.id, o.peer))
            }
            _ => None,
        })
        .collect()
}

/// Runs a fetch of `key` to its end: `refuse` peers refuse every request, the rest answer that
/// they hold nothing and know no one closer. Returns the peers asked, in order.
fn fetch(
    core: &mut Core,
    op: OpId,
    key: &[u8],
    refuse: &[PeerId],
    now: Instant,
) -> (Vec<PeerId>, Vec<Action>) {
    let mut asked = Vec::new();
    let mut all = Vec::new();
    let mut queue = core.handle(
        Input::Fetch {
            op,
            key: key.to_vec(),
        },
        now,
    );
    while !queue.is_empty() {
        let mut next = Vec::new();
        for (id, peer) in gets(&queue) {
            asked.push(peer);
            let input = if refuse.contains(&peer) {
                Input::Failure {
                    id,
                    kind: FailureKind::Refused,
                }
            } else {
                Input::Response {
                    id,
                    response: KadResponse::to(MessageKind::GetValue),
                    same_host: false,
                }
            };
            next.extend(core.handle(input, now));
        }
        all.extend(queue);
        queue = next;
    }
    (asked, all)
}

#[test]
fn a_peer_that_refuses_our_lookups_stays_and_is_backed_off_from() {
    let now = Instant::now();
    let (mut core, peers) = core_with_peers(4, now);
    // Every peer refuses ten fetches in a row: before, two failed lookup requests evicted a
    // peer, and a reader under the servers' rate limits lost its whole table.
    for op in 0..10 {
        let (asked, actions) = fetch(&mut core, op, b"key", &peers, now);
        assert!(!asked.is_empty(), "fetch {op} asked no one");
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Evicted { .. } | Action::Relearn)),
            "fetch {op}: {actions:?}"
        );
    }
    assert_eq!(core.routing().len(), 4, "refusals evict no one");
    // One peer refuses; the next fetch within its back-off starts from the others alone, and
    // once the back-off has passed it is asked again.
    let later = now + 100 * THROTTLE_BACKOFF_MIN;
    let (mut core, peers) = core_with_peers(4, later);
    // The closest to the key, which a fetch asks first.
    let target = KBucketKey::new(b"key".to_vec());
    let busy = *peers
        .iter()
        .min_by_key(|p| KBucketKey::from(**p).distance(&target))
        .expect("peers");
    let (asked, _) = fetch(&mut core, 100, b"key", &[busy], later);
    assert!(asked.contains(&busy));
    let (asked, _) = fetch(&mut core, 101, b"key", &[], later);
    assert!(!asked.contains(&busy), "backed off: {asked:?}");
    let after = later + THROTTLE_BACKOFF_MIN;
    let (asked, _) = fetch(&mut core, 102, b"key", &[], after);
    assert!(asked.contains(&busy), "back again: {asked:?}");
}

#[test]
fn a_table_emptied_by_timeouts_asks_to_relearn_its_connected_peers() {
    let now = Instant::now();
    let (mut core, peers) = core_with_peers(2, now);
    let mut relearn = 0;
    for op in 0..4 {
        let actions = core.handle(
            Input::Fetch {
                op,
                key: b"key".to_vec(),
            },
            now,
        );
        for (id, _) in gets(&actions) {
            let kind = FailureKind::TimedOut;
            let after = core.handle(Input::Failure { id, kind }, now);
            relearn += after
                .iter()
                .filter(|a| matches!(a, Action::Relearn))
                .count();
        }
        if core.routing().is_empty() {
            break;
        }
    }
    assert!(core.routing().is_empty(), "peers that time out leave");
    assert_eq!(relearn, 1, "the table emptied once: one call to re-learn");
    // The driver answers with the kad servers still connected: the table is back.
    for peer in peers {
        core.handle(
            Input::PeerSeen {
                peer,
                addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().expect("addr")],
                same_host: false,
            },
            now,
        );
    }
    assert_eq!(core.routing().len(), 2);
}

#[test]
fn a_refused_lookup_request_is_asked_again_after_the_back_off_and_the_fetch_succeeds() {
    // Failed before: the refusal counted as the peer's "no", and with every peer busy a fetch
    // of a value they all held ended "not found".
    use dht_behaviours::validation::content_key;
    use libp2p::kad::{Record, RecordKey};
    let now = Instant::now();
    let (mut core, peers) = core_with_peers(1, now);
    let value = b"held by the busy peer".to_vec();
    let key = content_key(&value);
    let actions = core.handle(
        Input::Fetch {
            op: 1,
            key: key.to_vec(),
        },
        now,
    );
    let sent = gets(&actions);
    assert_eq!(sent.len(), 1);
    let (id, peer) = sent[0];
    assert_eq!(peer, peers[0]);
    let kind = FailureKind::Refused;
    let after = core.handle(Input::Failure { id, kind }, now);
    assert!(
        gets(&after).is_empty(),
        "not asked again at once: {after:?}"
    );
    assert!(
        !after.iter().any(|a| matches!(a, Action::Reply { .. })),
        "{after:?}"
    );
    assert!(core.next_wakeup() <= now + THROTTLE_BACKOFF_MIN);
    let retry = core.handle(Input::Tick, now + THROTTLE_BACKOFF_MIN);
    let again = gets(&retry);
    assert_eq!(again.len(), 1, "{retry:?}");
    assert_eq!(again[0].1, peer);
    let response = KadResponse {
        record: Some(Record::new(RecordKey::new(&key), value.clone())),
        ..KadResponse::to(MessageKind::GetValue)
    };
    let done = core.handle(
        Input::Response {
            id: again[0].0,
            response,
            same_host: false,
        },
        now + THROTTLE_BACKOFF_MIN,
    );
    let found = done
        .iter()
        .any(|a| matches!(a, Action::Reply { result: Ok(OpOk::Value(v)), .. } if *v == value));
    assert!(found, "{done:?}");
}
