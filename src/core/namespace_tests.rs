//! Records under validated namespaces (`/pk/`, `/ipns/`) on one core fed by hand: a record that
//! fails its validator is not kept, not acknowledged, and costs its sender an offence.

use std::time::Instant;

use dht_behaviours::kad_wire::{KadRequest, KadResponse};
use dht_behaviours::validators::pk;
use dht_behaviours::{ProtocolConfig, Timing};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use libp2p::kad::{Record, RecordKey};

use super::*;

fn core(now: Instant) -> Core {
    let protocol = ProtocolConfig {
        timing: Timing::fast(),
        ..ProtocolConfig::default()
    };
    let config = CoreConfig::new(&protocol, dht_behaviours::store::StoreLimits::default(), 7);
    Core::fresh(config, now)
}

/// A PUT_VALUE from `from`, fed at the core's start; whether it was acknowledged.
fn put(core: &mut Core, from: PeerId, id: u64, key: Vec<u8>, value: Vec<u8>) -> bool {
    let input = Input::Request {
        peer: from,
        id,
        request: KadRequest::PutValue {
            record: Record::new(RecordKey::new(&key), value),
        },
        serving: true,
        host: None,
        same_host: false,
    };
    let now = core.records().clock().now;
    core.handle(input, now).iter().any(|a| {
        matches!(
            a,
            Action::Answer {
                response: Some(KadResponse {
                    record: Some(_),
                    ..
                }),
                ..
            }
        )
    })
}

#[test]
fn a_public_key_is_kept_under_its_own_name_and_refused_under_another() {
    let now = Instant::now();
    let mut core = core(now);
    let sender = PeerId::random();
    let owner = Keypair::generate_ed25519();
    let other = Keypair::generate_ed25519();
    let key = pk::routing_key(&owner.public().to_peer_id());
    let held = |core: &Core| core.records().get(&RecordKey::new(&key), now).is_some();
    // Another key under the owner's name: refused, not acknowledged, an offence.
    let forged = other.public().encode_protobuf();
    assert!(
        !put(&mut core, sender, 1, key.clone(), forged),
        "a forged key is not acknowledged"
    );
    assert!(!held(&core));
    assert_eq!(core.stats().puts_refused, 1);
    // Garbage is refused alike.
    assert!(!put(
        &mut core,
        sender,
        2,
        key.clone(),
        b"not a key".to_vec()
    ));
    // The owner's key is kept, from anyone.
    let genuine = owner.public().encode_protobuf();
    assert!(put(&mut core, PeerId::random(), 3, key.clone(), genuine));
    assert!(held(&core), "a valid /pk/ record is held");
    // Two more invalid records make four offences of 3 points: the sender is blocked.
    assert!(!core.is_blocked(&sender));
    for id in 4..6 {
        put(&mut core, sender, id, key.clone(), b"\x08\x01".to_vec());
    }
    assert!(
        core.is_blocked(&sender),
        "invalid records add up to a block"
    );
}

#[test]
fn an_invalid_ipns_record_is_refused_and_a_free_key_is_unaffected() {
    let now = Instant::now();
    let mut core = core(now);
    let name = Keypair::generate_ed25519().public().to_peer_id();
    let key = dht_behaviours::validators::ipns::routing_key(&name);
    assert!(!put(
        &mut core,
        PeerId::random(),
        1,
        key.clone(),
        b"garbage".to_vec()
    ));
    assert!(core.records().get(&RecordKey::new(&key), now).is_none());
    // A key that merely looks alike is a free key, with no validator.
    let free = b"/ipnsish/anything".to_vec();
    assert!(put(
        &mut core,
        PeerId::random(),
        2,
        free,
        b"garbage".to_vec()
    ));
}

#[test]
fn an_ipns_record_is_replaced_only_by_a_better_one_and_lives_no_longer_than_its_end_of_life() {
    use dht_behaviours::validators::ipns::{build_record, routing_key_for};
    use std::time::{Duration, UNIX_EPOCH};
    let now = Instant::now();
    let mut core = core(now);
    // Core::fresh's wall clock starts at the epoch.
    let wall = UNIX_EPOCH;
    let owner = Keypair::generate_ed25519();
    let key = routing_key_for(&owner);
    let ttl = Duration::from_secs(300);
    let eol = wall + Duration::from_secs(60);
    let record = |seq: u64, eol| build_record(&owner, b"/ipfs/bafy", seq, eol, ttl).expect("built");
    let held = |core: &Core| {
        core.records()
            .get(&RecordKey::new(&key), now)
            .map(|r| (r.value.clone(), r.expires))
    };
    let (v1, v2, v3) = (record(1, eol), record(2, eol), record(3, eol));
    let (a, b) = (PeerId::random(), PeerId::random());
    assert!(put(&mut core, a, 1, key.clone(), v2.clone()));
    assert_eq!(
        held(&core),
        Some((v2.clone(), Some(now + Duration::from_secs(60))))
    );
    // An older sequence from anyone is refused, and is no offence (a stale republisher).
    assert!(!put(&mut core, b, 2, key.clone(), v1));
    assert_eq!(held(&core).map(|h| h.0), Some(v2));
    // A newer one replaces it, whoever sends it.
    assert!(put(&mut core, b, 3, key.clone(), v3.clone()));
    assert_eq!(held(&core).map(|h| h.0), Some(v3));
    assert!(!core.is_blocked(&b));
    // A record past its end of life is invalid.
    let dead = record(4, wall);
    assert!(!put(&mut core, a, 4, key.clone(), dead));
}

#[test]
fn an_amino_node_keeps_only_namespaced_and_provider_records_and_says_why_it_refuses_its_own() {
    let now = Instant::now();
    let protocol = ProtocolConfig {
        timing: Timing::fast(),
        ..ProtocolConfig::default()
    }
    .amino();
    assert_eq!(protocol.replication_factor.get(), 20);
    let config = CoreConfig::new(&protocol, dht_behaviours::store::StoreLimits::default(), 7);
    let mut core = Core::fresh(config, now);
    let sender = PeerId::random();
    // A free key and a content key: refused, and no offence (another network's habits).
    assert!(!put(
        &mut core,
        sender,
        1,
        b"/v/name".to_vec(),
        b"x".to_vec()
    ));
    let value = b"some content".to_vec();
    let content = dht_behaviours::validation::content_key(&value).to_vec();
    assert!(!put(&mut core, sender, 2, content, value));
    assert!(!core.is_blocked(&sender));
    assert_eq!(core.records().len(), 0);
    // A valid /pk/ record is kept.
    let owner = Keypair::generate_ed25519();
    let key = pk::routing_key(&owner.public().to_peer_id());
    assert!(put(
        &mut core,
        sender,
        3,
        key,
        owner.public().encode_protobuf()
    ));
    // So is a provider record (ADD_PROVIDER from the provider itself).
    let provide = Input::Request {
        peer: sender,
        id: 4,
        request: KadRequest::AddProvider {
            key: b"\x12\x20any multihash of content....".to_vec(),
            providers: vec![dht_behaviours::kad_wire::WirePeer {
                peer: sender,
                addrs: Vec::new(),
            }],
        },
        serving: true,
        host: None,
        same_host: false,
    };
    core.handle(provide, now);
    let listed = core
        .records()
        .providers(
            &RecordKey::new(b"\x12\x20any multihash of content...."),
            now,
        )
        .count();
    assert_eq!(listed, 1);
    // This node's own store of a free key is refused, saying why.
    let actions = core.handle(
        Input::Store {
            op: 9,
            key: b"/v/mine".to_vec(),
            value: b"y".to_vec(),
        },
        now,
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Reply {
            op: 9,
            result: Err(OpError::Refused(Refusal::OutsideAmino)),
            ..
        }
    )));
}

#[test]
fn a_replayed_signed_record_is_not_checked_again_and_checks_are_budgeted_per_peer() {
    use super::records::VERIFY_BURST_PER_PEER;
    use dht_behaviours::validators::ipns::{build_record, routing_key_for};
    use std::time::{Duration, UNIX_EPOCH};
    let now = Instant::now();
    let mut core = core(now);
    let eol = UNIX_EPOCH + Duration::from_secs(3600);
    let ttl = Duration::from_secs(300);
    let owner = Keypair::generate_ed25519();
    let key = routing_key_for(&owner);
    let value = build_record(&owner, b"/ipfs/bafy", 1, eol, ttl).expect("built");
    assert!(put(
        &mut core,
        PeerId::random(),
        1,
        key.clone(),
        value.clone()
    ));
    assert_eq!(core.records().verifications(), 1);
    // Four identities replay it unchanged: each replay is acknowledged (the copy is held) and
    // none costs a signature check (failed before: every replay was verified again).
    let replayers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
    for i in 0..400u64 {
        let from = replayers[(i % 4) as usize];
        assert!(put(&mut core, from, 10 + i, key.clone(), value.clone()));
    }
    assert_eq!(core.records().verifications(), 1);
    // A copy that differs is checked (and this one, its signature broken, refused).
    let mut forged = value.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(!put(&mut core, replayers[0], 999, key, forged));
    assert_eq!(core.records().verifications(), 2);
    // One peer sending new signed records gets its burst of checks, then is refused (and not
    // blocked: it is busy, not lying) until its budget refills.
    let flooder = PeerId::random();
    let names = VERIFY_BURST_PER_PEER as usize + 20;
    let mut kept = 0;
    for i in 0..names {
        let owner = Keypair::generate_ed25519();
        let value = build_record(&owner, b"/ipfs/bafy", 1, eol, ttl).expect("built");
        if put(
            &mut core,
            flooder,
            2000 + i as u64,
            routing_key_for(&owner),
            value,
        ) {
            kept += 1;
        }
    }
    assert_eq!(kept, VERIFY_BURST_PER_PEER as usize);
    assert_eq!(
        core.records().verifications(),
        2 + u64::from(VERIFY_BURST_PER_PEER)
    );
    assert!(!core.is_blocked(&flooder));
}
