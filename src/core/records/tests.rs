//! The admission policy of [`super`], one rule at a time.

use super::*;
use dht_behaviours::validation::content_key;

fn content(value: &[u8]) -> Record {
    Record::new(RecordKey::new(&content_key(value)), value.to_vec())
}

fn records() -> (Records, Instant) {
    let local = PeerId::random();
    let timing = Timing {
        record_ttl: Duration::from_secs(3600),
        provider_ttl: Duration::from_secs(7200),
        // A one-second expiry margin.
        query_timeout: Duration::ZERO,
        ..Timing::fast()
    };
    let limits = StoreLimits {
        max_records: 64,
        max_bytes: 64 * 1024,
    };
    let now = Instant::now();
    let clock = Clock::new(now, Duration::ZERO);
    (Records::new(local, limits, &timing, clock), now)
}

#[test]
fn provider_records_live_one_provider_ttl_and_are_swept() {
    let (mut r, now) = records();
    let (alice, bob) = (PeerId::random(), PeerId::random());
    let key = RecordKey::new(&b"provided");
    let addr: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().expect("addr");
    assert_eq!(
        r.add_provider(key.clone(), alice, vec![addr.clone()], None, now),
        Ok(Added::New)
    );
    let later = now + Duration::from_secs(3600);
    assert_eq!(
        r.add_provider(key.clone(), bob, Vec::new(), None, later),
        Ok(Added::New)
    );
    let listed: Vec<PeerId> = r.providers(&key, now).map(|p| p.provider).collect();
    assert_eq!(listed, vec![alice, bob]);
    assert_eq!(r.provided_by(&alice), vec![key.clone()]);
    assert_eq!(r.provider_count(), 2);
    // Alice's record lives one provider TTL (two hours here), not one record TTL.
    let alice_ends = now + Duration::from_secs(7200);
    let just_before = alice_ends - Duration::from_secs(1);
    assert_eq!(r.providers(&key, just_before).count(), 2);
    assert_eq!(r.sweep(alice_ends), 1);
    let left: Vec<PeerId> = r.providers(&key, alice_ends).map(|p| p.provider).collect();
    assert_eq!(left, vec![bob]);
    assert!(r.provided_by(&alice).is_empty());
    // A record read back from disk never lives longer than one provider TTL from now.
    let mut old = ProviderRecord::new(key.clone(), alice, vec![addr]);
    old.expires = Some(alice_ends + Duration::from_secs(99_999));
    assert_eq!(r.restore_provider(old, alice_ends), Ok(Added::New));
    let back = r.providers(&key, alice_ends).find(|p| p.provider == alice);
    let expires = back.and_then(|p| p.expires);
    assert_eq!(expires, Some(alice_ends + Duration::from_secs(7200)));
}

#[test]
fn a_peer_never_shortens_a_held_record() {
    let (mut r, now) = records();
    let peer = Source::Peer(PeerId::random());
    let mut rec = content(b"v");
    rec.expires = Some(now + Duration::from_secs(3000));
    assert_eq!(r.admit(peer, rec.clone(), now), Ok(Admitted::New));
    let mut short = rec.clone();
    short.expires = Some(now + Duration::from_secs(2));
    assert_eq!(r.admit(peer, short, now), Ok(Admitted::Held));
    let later = now + Duration::from_secs(60);
    assert!(r.get(&rec.key, later).is_some(), "still held a minute on");
    // A longer life (a republish) is taken, capped at one TTL.
    let mut long = rec.clone();
    long.expires = Some(now + Duration::from_secs(99_999));
    assert_eq!(r.admit(peer, long, now), Ok(Admitted::Updated));
    let held = r.get(&rec.key, now).and_then(|x| x.expires);
    assert_eq!(held, Some(now + Duration::from_secs(3600)));
}

#[test]
fn own_copies_stay_and_free_keys_belong_to_their_first_writer() {
    let (mut r, now) = records();
    let (alice, mallory) = (PeerId::random(), PeerId::random());
    let key = RecordKey::new(&b"name");
    let first = Record::new(key.clone(), b"alice's".to_vec());
    assert_eq!(r.admit(Source::Peer(alice), first, now), Ok(Admitted::New));
    let forged = Record::new(key.clone(), b"mallory's".to_vec());
    assert_eq!(
        r.admit(Source::Peer(mallory), forged, now),
        Err(Refusal::Conflict)
    );
    let update = Record::new(key.clone(), b"alice's v2".to_vec());
    assert_eq!(
        r.admit(Source::Peer(alice), update, now),
        Ok(Admitted::Updated)
    );
    let own = content(b"mine");
    assert_eq!(r.admit(Source::Own, own.clone(), now), Ok(Admitted::New));
    let mut copy = own.clone();
    copy.expires = Some(now + Duration::from_secs(5));
    assert_eq!(r.admit(Source::Peer(alice), copy, now), Ok(Admitted::Held));
    assert_eq!(r.get(&own.key, now).and_then(|x| x.expires), None);
}

#[test]
fn invalid_expired_over_quota_and_full_are_refused() {
    let (mut r, now) = records();
    let peer = PeerId::random();
    let wrong = Record::new(RecordKey::new(&content_key(b"a")), b"b".to_vec());
    assert!(matches!(
        r.admit(Source::Peer(peer), wrong, now),
        Err(Refusal::Invalid(_))
    ));
    let mut old = content(b"old");
    old.expires = Some(now);
    assert_eq!(r.admit(Source::Peer(peer), old, now), Err(Refusal::Expired));
    // 64 records in all, 8 per peer.
    let mut admitted = 0;
    for i in 0..20u32 {
        if r.admit(Source::Peer(peer), content(&i.to_be_bytes()), now)
            .is_ok()
        {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 64 / 8);
    for i in 100..200u32 {
        let _ = r.admit(
            Source::Peer(PeerId::random()),
            content(&i.to_be_bytes()),
            now,
        );
    }
    // Peers fill their room; the node's own sixteenth (4 records) is left for its stores.
    assert_eq!(r.len(), 60);
    for i in 0..4u32 {
        let own = content(&(1000 + i).to_be_bytes());
        assert_eq!(r.admit(Source::Own, own, now), Ok(Admitted::New));
    }
    assert_eq!(
        r.admit(Source::Own, content(b"one more"), now),
        Err(Refusal::Full)
    );
}

#[test]
fn only_its_publisher_renews_a_free_key() {
    // Failed before: any peer's unchanged replay with a fresh TTL renewed the value's life on
    // every holder, so a departed publisher's value lived as long as someone replayed it.
    let (mut r, now) = records();
    let (publisher, replayer) = (PeerId::random(), PeerId::random());
    let key = RecordKey::new(&b"/v/name");
    let mut first = Record::new(key.clone(), b"value".to_vec());
    first.publisher = Some(publisher);
    first.expires = Some(now + Duration::from_secs(600));
    let life = |r: &Records| r.get(&key, now).and_then(|x| x.expires);
    assert_eq!(
        r.admit(Source::Peer(publisher), first.clone(), now),
        Ok(Admitted::New)
    );
    let mut replay = first.clone();
    replay.expires = Some(now + Duration::from_secs(3000));
    replay.publisher = Some(replayer);
    assert_eq!(
        r.admit(Source::Peer(replayer), replay, now),
        Ok(Admitted::Held)
    );
    assert_eq!(
        life(&r),
        Some(now + Duration::from_secs(600)),
        "a replay renews nothing"
    );
    // A holder passing the publisher's copy on (its publisher named) renews nothing either
    // here, where the publisher stored first; the publisher's own republish does.
    let mut renewal = first.clone();
    renewal.expires = Some(now + Duration::from_secs(3000));
    assert_eq!(
        r.admit(Source::Peer(publisher), renewal.clone(), now),
        Ok(Admitted::Updated)
    );
    assert_eq!(life(&r), Some(now + Duration::from_secs(3000)));
    // Where a holder's hand-off came first, the publisher its copy names still renews it.
    let (mut r, now) = records();
    let holder = PeerId::random();
    first.expires = Some(now + Duration::from_secs(600));
    assert_eq!(
        r.admit(Source::Peer(holder), first.clone(), now),
        Ok(Admitted::New)
    );
    let mut replay = first.clone();
    replay.expires = Some(now + Duration::from_secs(3000));
    assert_eq!(
        r.admit(Source::Peer(replayer), replay, now),
        Ok(Admitted::Held)
    );
    let mut renewal = first.clone();
    renewal.expires = Some(now + Duration::from_secs(3000));
    assert_eq!(
        r.admit(Source::Peer(publisher), renewal, now),
        Ok(Admitted::Updated)
    );
    assert_eq!(
        r.get(&key, now).and_then(|x| x.expires),
        Some(now + Duration::from_secs(3000))
    );
}
