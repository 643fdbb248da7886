//! Shares per host on one core fed by hand: identities cost nothing, so one host running many of
//! them gets a host's share of the store, the node's own stores keep their room, and peers on
//! other hosts are still served.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use dht_behaviours::kad_wire::KadRequest;
use dht_behaviours::store::StoreLimits;
use libp2p::kad::{Record, RecordKey};
use libp2p::{Multiaddr, PeerId};

use super::records::quota::HOST_SHARE_DIVISOR;
use super::*;

const RECORDS: usize = 1024;

/// A PUT_VALUE of a free key from `peer` on `host`; whether it was acknowledged.
fn put(core: &mut Core, peer: PeerId, host: IpAddr, id: u64, now: Instant) -> bool {
    let record = Record::new(RecordKey::new(&format!("/flood/{id}")), vec![7u8; 100]);
    let input = Input::Request {
        peer,
        id,
        request: KadRequest::PutValue { record },
        serving: false,
        host: Some(host),
        same_host: false,
    };
    core.handle(input, now).iter().any(|a| {
        matches!(
            a,
            Action::Answer {
                response: Some(_),
                ..
            }
        )
    })
}

#[test]
fn sixteen_identities_of_one_host_take_a_hosts_share_and_the_node_still_stores_its_own() {
    // Failed before host shares: 16 identities from one address each kept within its own
    // eighth and together filled the store; the node's own store then failed as "full".
    let now = Instant::now();
    let mut cfg = test_config(5);
    cfg.store = StoreLimits {
        max_records: RECORDS,
        max_bytes: 1 << 30,
    };
    let mut core = Core::fresh(cfg, now);
    let attacker = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    let mut kept = 0;
    let mut id = 0;
    for _ in 0..16 {
        let sybil = PeerId::random();
        for _ in 0..RECORDS / 8 {
            id += 1;
            kept += usize::from(put(&mut core, sybil, attacker, id, now));
        }
    }
    assert_eq!(kept, RECORDS / HOST_SHARE_DIVISOR, "one host, one share");
    assert_eq!(core.records().len(), kept);
    // Another host is served, and the node stores its own value.
    let honest = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
    assert!(put(&mut core, PeerId::random(), honest, 1_000_000, now));
    let actions = core.handle(
        Input::Store {
            op: 1,
            key: b"/mine".to_vec(),
            value: b"my value".to_vec(),
        },
        now,
    );
    let refused = actions
        .iter()
        .any(|a| matches!(a, Action::Reply { result: Err(_), .. }));
    assert!(!refused, "{actions:?}");
    assert!(
        core.records()
            .get(&RecordKey::new(&b"/mine"), now)
            .is_some()
    );
}

#[test]
fn a_fellow_holders_copy_takes_the_room_a_flood_left_the_node() {
    // Peers fill their room (all but the node's own sixteenth); a stranger's next record is
    // refused, a fellow holder's (replication, hand-off: the node's duty) is kept.
    let now = Instant::now();
    let mut cfg = test_config(5);
    cfg.store = StoreLimits {
        max_records: 64,
        max_bytes: 1 << 30,
    };
    let mut core = Core::fresh(cfg, now);
    let holder = PeerId::random();
    let addr: Multiaddr = "/ip4/203.0.113.1/tcp/4001".parse().expect("addr");
    core.handle(
        Input::PeerSeen {
            peer: holder,
            addrs: vec![addr],
            same_host: false,
        },
        now,
    );
    let mut id = 0;
    for h in 0..15u8 {
        let host = IpAddr::V4(Ipv4Addr::new(198, 51, h, 1));
        let stranger = PeerId::random();
        for _ in 0..4 {
            id += 1;
            assert!(put(&mut core, stranger, host, id, now));
        }
    }
    assert_eq!(core.records().len(), 60);
    let late = IpAddr::V4(Ipv4Addr::new(198, 51, 99, 1));
    assert!(
        !put(&mut core, PeerId::random(), late, 1000, now),
        "the peers' room is full"
    );
    let holders_host = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    assert!(
        put(&mut core, holder, holders_host, 1001, now),
        "a holder's copy is kept"
    );
    assert_eq!(core.records().len(), 61);
}
