use super::*;
use libp2p::kad::KBucketKey;

fn params(k: usize, resilience: usize, narrow: bool) -> LookupParams {
    LookupParams {
        k,
        alpha: 3,
        resilience,
        narrow,
    }
}

fn wire(peers: &[PeerId]) -> Vec<WirePeer> {
    peers
        .iter()
        .map(|p| WirePeer {
            peer: *p,
            addrs: vec![],
        })
        .collect()
}

/// Drives `lookup` over a network where every peer knows all of `network`.
fn run(lookup: &mut Lookup, network: &[PeerId], dead: &[PeerId]) {
    while let Some((peer, _)) = lookup.next_request() {
        if dead.contains(&peer) {
            lookup.on_failure(&peer);
        } else {
            lookup.on_answer(&peer, wire(network));
        }
    }
}

fn sorted_by_distance(key: &[u8], peers: &[PeerId]) -> Vec<PeerId> {
    let target = KBucketKey::new(key.to_vec());
    let mut v = peers.to_vec();
    v.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
    v
}

#[test]
fn a_closer_peer_that_never_answered_makes_the_verdict_unsure() {
    let network: Vec<PeerId> = (0..20).map(|_| PeerId::random()).collect();
    let key = b"unsure";
    let sorted = sorted_by_distance(key, &network);
    let seeds = network.iter().map(|p| (*p, vec![]));
    let mut lookup = Lookup::new(key, seeds, params(3, 3, false));
    // The closest peer times out, the next dies: only the first is an unknown.
    while let Some((peer, _)) = lookup.next_request() {
        if peer == sorted[0] {
            lookup.on_timeout(&peer);
        } else if peer == sorted[1] {
            lookup.on_failure(&peer);
        } else {
            lookup.on_answer(&peer, vec![]);
        }
    }
    assert!(lookup.is_finished());
    assert_eq!(lookup.unanswered_closer(), 1);
    let answered: Vec<PeerId> = lookup.closest(3).iter().map(|c| c.peer).collect();
    assert_eq!(answered, sorted[2..5].to_vec(), "it went on past both");

    // Peers that only failed (refused, reset) leave the verdict sure.
    let seeds = network.iter().map(|p| (*p, vec![]));
    let mut lookup = Lookup::new(key, seeds, params(3, 3, false));
    run(&mut lookup, &network, &sorted[..2]);
    assert!(lookup.is_finished());
    assert_eq!(lookup.unanswered_closer(), 0);
}

#[test]
fn finds_the_k_closest_from_one_far_seed() {
    let network: Vec<PeerId> = (0..100).map(|_| PeerId::random()).collect();
    let truth = sorted_by_distance(b"key", &network);
    let seed = *truth.last().expect("peers");
    let mut lookup = Lookup::new(b"key", [(seed, vec![])], params(10, 3, false));
    run(&mut lookup, &network, &[]);
    assert!(lookup.is_finished());
    let found: Vec<PeerId> = lookup.closest(10).into_iter().map(|c| c.peer).collect();
    assert_eq!(found, truth[..10]);
    // Two rounds at most: the seed, then the three closest.
    assert!(lookup.requests() <= 4, "{} requests", lookup.requests());
}

#[test]
fn one_network_gets_at_most_its_share_of_the_closest_and_the_rest_are_the_next_closest() {
    let network: Vec<PeerId> = (0..100).map(|_| PeerId::random()).collect();
    let truth = sorted_by_distance(b"key", &network);
    // The 40 closest to the key all sit behind one public /16; the others on loopback.
    let crowd: Vec<PeerId> = truth[..40].to_vec();
    let addr = |p: &PeerId| -> Vec<Multiaddr> {
        let i = network.iter().position(|q| q == p).unwrap_or(0);
        let a = if crowd.contains(p) {
            format!("/ip4/8.8.{}.{}/tcp/4001", i / 200, i % 200 + 1)
        } else {
            format!("/ip4/127.0.0.1/tcp/{}", 10_000 + i)
        };
        vec![a.parse().expect("multiaddr")]
    };
    let answer: Vec<WirePeer> = network
        .iter()
        .map(|p| WirePeer {
            peer: *p,
            addrs: addr(p),
        })
        .collect();
    let seed = *truth.last().expect("peers");
    let mut lookup = Lookup::new(b"key", [(seed, addr(&seed))], params(10, 3, false));
    while let Some((peer, _)) = lookup.next_request() {
        lookup.on_answer(&peer, answer.clone());
    }
    assert!(lookup.is_finished());
    let found: Vec<PeerId> = lookup.closest(10).into_iter().map(|c| c.peer).collect();
    let mut expected: Vec<PeerId> = truth[..MAX_GROUP_PER_LOOKUP].to_vec();
    expected.extend(truth[40..40 + 10 - MAX_GROUP_PER_LOOKUP].iter().copied());
    assert_eq!(
        found, expected,
        "the crowd's 3 closest, then the next closest of the rest"
    );
    assert!(lookup.ignored() > 0);
}

#[test]
fn takes_at_most_k_peers_from_one_answer() {
    let seed = PeerId::random();
    let mut lookup = Lookup::new(b"key", [(seed, vec![])], params(5, 3, false));
    let liar_answer: Vec<PeerId> = (0..1000).map(|_| PeerId::random()).collect();
    let (asked, _) = lookup.next_request().expect("a request");
    assert_eq!(asked, seed);
    assert_eq!(lookup.on_answer(&seed, wire(&liar_answer)), 5);
    assert_eq!(lookup.ignored(), 995);
    // The made-up peers never answer: the lookup asks each at most once and ends.
    let mut asked = 0;
    while let Some((peer, _)) = lookup.next_request() {
        asked += 1;
        lookup.on_failure(&peer);
    }
    assert_eq!(asked, 5);
    assert!(lookup.is_finished());
    assert_eq!(lookup.closest(5).len(), 1);
}

#[test]
fn dead_peers_are_skipped_and_replaced() {
    let network: Vec<PeerId> = (0..50).map(|_| PeerId::random()).collect();
    let truth = sorted_by_distance(b"x", &network);
    let dead = truth[..2].to_vec();
    let seeds = network.iter().map(|p| (*p, vec![]));
    let mut lookup = Lookup::new(b"x", seeds, params(5, 3, false));
    run(&mut lookup, &network, &dead);
    let found: Vec<PeerId> = lookup.closest(5).into_iter().map(|c| c.peer).collect();
    assert_eq!(found, truth[2..7]);
    assert!(
        lookup
            .closest(3)
            .iter()
            .all(|c| c.state == PeerState::Succeeded)
    );
}

#[test]
fn a_narrow_lookup_asks_one_peer_until_a_miss() {
    let network: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
    let seeds = network.iter().map(|p| (*p, vec![]));
    let mut lookup = Lookup::new(b"v", seeds, params(5, 5, true));
    let (first, _) = lookup.next_request().expect("first");
    assert!(lookup.next_request().is_none(), "narrow: one at a time");
    lookup.on_found(&first);
    assert_eq!(lookup.in_flight(), 0);
    let (second, _) = lookup.next_request().expect("second");
    lookup.on_answer(&second, vec![]);
    assert!(lookup.next_request().is_some() && lookup.next_request().is_some());
    assert_eq!(lookup.closest_lacking(), Some(second));
}

#[test]
fn a_failed_peer_named_again_is_not_asked_again() {
    let (a, b) = (PeerId::random(), PeerId::random());
    let dead = PeerId::random();
    let mut lookup = Lookup::new(b"k", [(a, vec![]), (b, vec![])], params(3, 3, false));
    let mut asked = Vec::new();
    while let Some((peer, _)) = lookup.next_request() {
        asked.push(peer);
    }
    lookup.on_answer(&a, wire(&[dead]));
    let (next, _) = lookup.next_request().expect("the dead peer");
    assert_eq!(next, dead);
    lookup.on_failure(&dead);
    lookup.on_answer(&b, wire(&[dead]));
    assert!(lookup.next_request().is_none());
    assert!(lookup.is_finished());
}

#[test]
fn unsolicited_answers_change_nothing() {
    let seed = PeerId::random();
    let mut lookup = Lookup::new(b"k", [(seed, vec![])], params(3, 3, false));
    let stranger = PeerId::random();
    assert_eq!(lookup.on_answer(&stranger, wire(&[PeerId::random()])), 0);
    lookup.on_failure(&stranger);
    assert_eq!(lookup.closest(3).len(), 1);
    assert_eq!(lookup.in_flight(), 0);
}

/// Seeds that are all departed (a stale routing table under churn) fail, and the closer
/// peers that a live one names are still asked. Failed on the old code, which counted the
/// failures against the candidates' cap and so dropped every peer named after them.
#[test]
fn departed_seeds_do_not_crowd_out_the_peers_named_after_them() {
    let k = 4;
    let network: Vec<PeerId> = (0..400).map(|_| PeerId::random()).collect();
    let truth = sorted_by_distance(b"k", &network);
    // Departed peers closest to the key after the true k, as many as the cap leaves room
    // for beside one live peer far out that knows everyone.
    let departed: Vec<PeerId> = truth[k..k + CANDIDATES_PER_K * k - 1].to_vec();
    let live_seed = *truth.last().expect("peers");
    let seeds = departed.iter().chain([&live_seed]).map(|p| (*p, vec![]));
    let mut lookup = Lookup::new(b"k", seeds, params(k, k, false));
    run(&mut lookup, &network, &departed);
    assert!(lookup.is_finished());
    let found: Vec<PeerId> = lookup.closest(k).into_iter().map(|c| c.peer).collect();
    assert_eq!(found, truth[..k], "the true k closest, asked and answered");
    assert!(
        lookup
            .closest(k)
            .iter()
            .all(|c| c.state == PeerState::Succeeded)
    );
}

#[test]
fn candidates_stay_bounded() {
    let network: Vec<PeerId> = (0..200).map(|_| PeerId::random()).collect();
    let seeds = network.iter().map(|p| (*p, vec![]));
    let lookup = Lookup::new(b"k", seeds, params(4, 3, false));
    assert_eq!(lookup.closest(usize::MAX).len(), CANDIDATES_PER_K * 4);
}

#[test]
fn an_empty_lookup_is_finished() {
    let mut lookup = Lookup::new(b"k", [], params(3, 3, false));
    assert!(lookup.is_finished());
    assert!(lookup.next_request().is_none());
}
