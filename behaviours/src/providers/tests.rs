//! The provider store's bounds: per key, per provider, per host and in all; refreshes,
//! expiry and change tracking.

use std::time::Duration;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn store(per_key: usize, per_provider: usize, total: usize) -> ProviderStore {
    ProviderStore::new(
        PeerId::random(),
        ProviderLimits {
            per_key,
            per_provider,
            total,
            ..ProviderLimits::default()
        },
    )
}

fn key(i: u32) -> RecordKey {
    RecordKey::new(&i.to_be_bytes())
}

fn addr(i: u16) -> Multiaddr {
    format!("/ip4/10.0.0.1/tcp/{i}").parse().expect("addr")
}

fn peers(s: &ProviderStore, k: &RecordKey, now: Instant) -> Vec<PeerId> {
    s.providers(k, now).iter().map(|p| p.provider).collect()
}

#[test]
fn a_full_key_refuses_and_keeps_its_providers_in_order() {
    let mut s = store(3, 100, 100);
    let now = Instant::now();
    let held: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
    for (i, p) in held.iter().enumerate() {
        let expires = now + HOUR * (3 - i as u32);
        assert_eq!(
            s.add(key(1), *p, vec![], (expires, None), now),
            Ok(Added::New)
        );
    }
    let late = PeerId::random();
    assert_eq!(
        s.add(key(1), late, vec![addr(1)], (now + HOUR * 9, None), now),
        Err(ProviderRefusal::KeyFull)
    );
    assert_eq!(peers(&s, &key(1), now), held, "oldest first, none replaced");
    // Another key still takes it.
    assert_eq!(
        s.add(key(2), late, vec![], (now + HOUR, None), now),
        Ok(Added::New)
    );
    assert_eq!(s.len(), 4);
}

#[test]
fn a_full_store_and_a_full_share_refuse() {
    let mut s = store(10, 2, 3);
    let now = Instant::now();
    let (a, b) = (PeerId::random(), PeerId::random());
    s.add(key(1), a, vec![], (now + HOUR, None), now)
        .expect("add");
    s.add(key(2), a, vec![], (now + HOUR, None), now)
        .expect("add");
    assert_eq!(
        s.add(key(3), a, vec![], (now + HOUR, None), now),
        Err(ProviderRefusal::ProviderFull)
    );
    s.add(key(3), b, vec![], (now + HOUR, None), now)
        .expect("add");
    assert_eq!(
        s.add(key(4), b, vec![], (now + HOUR, None), now),
        Err(ProviderRefusal::StoreFull)
    );
    // This node's own records are held to no share and no bound of the store (what it
    // provides is bounded where it provides): peers filling the store cannot push it out.
    let mut own = ProviderStore::new(
        a,
        ProviderLimits {
            per_key: 10,
            per_provider: 1,
            total: 3,
            ..ProviderLimits::default()
        },
    );
    for i in 0..3 {
        own.add(key(i), a, vec![], (now + HOUR, None), now)
            .expect("own");
    }
    assert_eq!(
        own.add(key(9), a, vec![], (now + HOUR, None), now),
        Ok(Added::New)
    );
    assert_eq!((s.len(), own.len()), (3, 4));
}

#[test]
fn the_providers_of_one_host_share_one_providers_budget_and_a_few_slots_of_a_key() {
    let now = Instant::now();
    let mut s = ProviderStore::new(
        PeerId::random(),
        ProviderLimits {
            per_key: 8,
            per_provider: 100,
            total: 100,
            per_host: 5,
            per_key_per_host: 2,
            per_key_per_group: 8,
            diverse_reserve: 0,
        },
    );
    let (crowd, other) = (Some(1u64), Some(2u64));
    let id = |_| PeerId::random();
    // Fresh identities of one host: two slots of a key, then refused.
    for _ in 0..2 {
        s.add(key(1), id(()), vec![], (now + HOUR, crowd), now)
            .expect("within the host's share of the key");
    }
    assert_eq!(
        s.add(key(1), id(()), vec![], (now + HOUR, crowd), now),
        Err(ProviderRefusal::HostFull)
    );
    // Another host still gets in, and so does a peer whose host is not counted.
    s.add(key(1), id(()), vec![], (now + HOUR, other), now)
        .expect("another host");
    s.add(key(1), id(()), vec![], (now + HOUR, None), now)
        .expect("a host not counted");
    // Across keys, the host's identities together get one provider's budget.
    for k in 2..5 {
        s.add(key(k), id(()), vec![], (now + HOUR, crowd), now)
            .expect("within the host's budget");
    }
    assert_eq!(
        s.add(key(9), id(()), vec![], (now + HOUR, crowd), now),
        Err(ProviderRefusal::HostFull)
    );
    // Its records expire: the budget is free again.
    let later = now + 2 * HOUR;
    s.add(key(9), id(()), vec![], (later + HOUR, crowd), later)
        .expect("the host's expired records made room");
}

#[test]
fn a_re_announcement_refreshes_without_evicting() {
    let mut s = store(2, 10, 10);
    let now = Instant::now();
    let (a, b) = (PeerId::random(), PeerId::random());
    s.add(key(1), a, vec![addr(1)], (now + HOUR, None), now)
        .expect("add");
    s.add(key(1), b, vec![addr(2)], (now + HOUR, None), now)
        .expect("add");
    // The key is full, yet a provider it holds may announce again.
    let later = now + HOUR / 2;
    assert_eq!(
        s.add(key(1), a, vec![], (later + HOUR, None), later),
        Ok(Added::Refreshed)
    );
    assert_eq!(
        s.add(key(1), b, vec![addr(3)], (later + HOUR, None), later),
        Ok(Added::Refreshed)
    );
    assert_eq!(s.len(), 2);
    let held = s.providers(&key(1), now + HOUR + Duration::from_secs(1));
    assert_eq!(held.len(), 2, "both live past their first expiry");
    assert_eq!(held[0].provider, a, "a refresh keeps the provider's place");
    assert_eq!(
        held[0].addresses,
        vec![addr(1)],
        "no addresses: the old ones stay"
    );
    assert_eq!(
        held[1].addresses,
        vec![addr(3)],
        "new addresses replace the old"
    );
    // The index follows the refresh: nothing expires at the first expiry.
    assert_eq!(s.remove_expired(now + HOUR), 0);
    assert_eq!(s.remove_expired(later + HOUR), 2);
    assert!(s.is_empty());
}

#[test]
fn expired_records_make_room() {
    let mut s = store(2, 2, 4);
    let now = Instant::now();
    let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
    s.add(key(1), a, vec![], (now + HOUR, None), now)
        .expect("add");
    s.add(key(1), b, vec![], (now + 2 * HOUR, None), now)
        .expect("add");
    s.add(key(2), a, vec![], (now + 3 * HOUR, None), now)
        .expect("add");
    let later = now + HOUR;
    // Key 1 is full, but a's record there has expired: it goes, c comes in.
    assert_eq!(
        s.add(key(1), c, vec![], (later + HOUR, None), later),
        Ok(Added::New)
    );
    assert_eq!(peers(&s, &key(1), later), vec![b, c]);
    // a's share has room again, and so has the store; then the store is full.
    s.add(key(3), a, vec![], (later + HOUR, None), later)
        .expect("a's share");
    assert_eq!(
        s.add(key(4), b, vec![], (later + HOUR, None), later),
        Err(ProviderRefusal::StoreFull)
    );
    // Once three of them expire, the store makes room for another key.
    let much_later = now + 2 * HOUR;
    assert_eq!(
        s.add(key(4), b, vec![], (much_later + HOUR, None), much_later),
        Ok(Added::New)
    );
    assert_eq!(s.len(), 2, "a's record of key 2 and b's of key 4");
    assert_eq!(
        s.add(key(5), c, vec![], (now, None), now),
        Err(ProviderRefusal::Expired)
    );
}

#[test]
fn expiry_drops_records_and_their_accounts() {
    let mut s = store(10, 10, 10);
    s.track_changes();
    let now = Instant::now();
    let (a, b) = (PeerId::random(), PeerId::random());
    s.add(key(1), a, vec![addr(1)], (now + HOUR, None), now)
        .expect("add");
    s.add(key(1), b, vec![], (now + 2 * HOUR, None), now)
        .expect("add");
    s.add(key(2), a, vec![addr(2)], (now + 2 * HOUR, None), now)
        .expect("add");
    assert_eq!(s.provided_by(&a), vec![key(1), key(2)]);
    let full = s.heap_bytes();
    assert_eq!(s.take_changes_within(usize::MAX).len(), 3);
    assert_eq!(s.remove_expired(now + HOUR), 1);
    assert_eq!(s.take_changes_within(usize::MAX), vec![(key(1), a)]);
    assert!(s.get(&key(1), &a).is_none());
    assert_eq!(s.provided_by(&a), vec![key(2)]);
    assert!(s.heap_bytes() < full);
    assert_eq!(s.remove_expired(now + 2 * HOUR), 2);
    assert!(s.is_empty() && s.keys() == 0 && s.provided_by(&b).is_empty());
    assert_eq!(s.heap_bytes(), 0);
    assert!(s.providers(&key(1), now).is_empty());
}

#[test]
fn a_live_record_of_another_provider_is_never_replaced() {
    let mut s = store(1, 10, 10);
    let now = Instant::now();
    let (a, b) = (PeerId::random(), PeerId::random());
    s.add(key(1), a, vec![addr(1)], (now + HOUR, None), now)
        .expect("add");
    // Over and over, up to its last moment.
    for i in 0..10 {
        let at = now + HOUR / 10 * i;
        assert_eq!(
            s.add(key(1), b, vec![addr(2)], (at + 2 * HOUR, None), at),
            Err(ProviderRefusal::KeyFull)
        );
    }
    let held = s.get(&key(1), &a).expect("held");
    assert_eq!(
        (held.expires, held.addresses),
        (Some(now + HOUR), vec![addr(1)])
    );
    assert!(s.get(&key(1), &b).is_none());
}

#[test]
fn addresses_are_bounded_in_count_and_bytes() {
    let many: Vec<Multiaddr> = (0..20).map(addr).chain([addr(0)]).collect();
    let kept = bounded_addrs(many);
    assert_eq!(kept.len(), MAX_ADDRS_PER_PEER);
    assert_eq!(kept[0], addr(0));
    // Long (DNS) addresses: only as many as fit the byte bound.
    let long: Vec<Multiaddr> = (0..MAX_ADDRS_PER_PEER)
        .map(|i| {
            let host = format!("{i}{}", "h".repeat(200));
            format!("/dns4/{host}/tcp/1").parse().expect("addr")
        })
        .collect();
    let kept = bounded_addrs(long);
    assert!(addr_bytes(&kept) <= MAX_PROVIDER_ADDR_BYTES);
    assert_eq!(kept.len(), 2);
}

#[test]
fn remove_and_changes() {
    let mut s = store(10, 10, 10);
    let now = Instant::now();
    let a = PeerId::random();
    s.add(key(1), a, vec![], (now + HOUR, None), now)
        .expect("untracked");
    assert!(s.take_changes_within(10).is_empty());
    s.track_changes();
    assert!(s.remove(&key(1), &a));
    assert!(!s.remove(&key(1), &a));
    assert_eq!(s.pending_changes(), 1);
    let taken = s.take_changes_within(10);
    s.mark_changed(taken);
    assert_eq!(s.pending_changes(), 1);
    assert_eq!(s.iter().count(), 0);
}

/// A host key for an IPv4 address, as the server makes them.
fn v4(a: u8, b: u8, c: u8, d: u8) -> Option<u64> {
    Some((4 << 32) | u64::from(u32::from_be_bytes([a, b, c, d])))
}

#[test]
fn five_hosts_cannot_hide_an_honest_provider_from_the_first_twenty() {
    // Failed before: 5 hosts x 4 identities announced first took the first 20 places of the
    // answer, and `findprovs` (20 by default) returned only them.
    let mut s = ProviderStore::new(PeerId::random(), ProviderLimits::default());
    let now = Instant::now();
    let expires = now + HOUR;
    let k = key(7);
    let mut attackers = Vec::new();
    for (h, group) in [(1u8, 51u8), (2, 51), (3, 51), (4, 52), (5, 53)] {
        for _ in 0..MAX_PROVIDERS_PER_KEY_PER_HOST {
            let p = PeerId::random();
            if s.add(k.clone(), p, vec![], (expires, v4(198, group, 0, h)), now)
                .is_ok()
            {
                attackers.push(p);
            }
        }
    }
    // One /16 holds at most its share of the key's slots, whatever hosts it has.
    assert_eq!(attackers.len(), MAX_PROVIDERS_PER_KEY_PER_GROUP + 8);
    let honest = PeerId::random();
    assert_eq!(
        s.add(k.clone(), honest, vec![], (expires, v4(192, 0, 2, 9)), now),
        Ok(Added::New)
    );
    let listed = peers(&s, &k, now);
    let place = listed.iter().position(|p| *p == honest).expect("listed");
    // Each network's first provider comes before any network's second: the honest one is
    // fourth, after the first of each of the attackers' three /16s.
    assert_eq!(place, 3, "{listed:?}");
    assert!(place < 20);
}

#[test]
fn a_keys_last_slots_are_kept_for_networks_it_has_none_of() {
    let mut s = ProviderStore::new(PeerId::random(), ProviderLimits::default());
    let now = Instant::now();
    let expires = now + HOUR;
    let k = key(8);
    // Twelve /16s of one host each take four slots each: 48, the key's open slots.
    let mut n = 0;
    for group in 0..12u8 {
        for _ in 0..MAX_PROVIDERS_PER_KEY_PER_HOST {
            let at = v4(100, group, 0, 1);
            if s.add(k.clone(), PeerId::random(), vec![], (expires, at), now)
                .is_ok()
            {
                n += 1;
            }
        }
    }
    let open = MAX_PROVIDERS_PER_KEY - DIVERSE_RESERVE_PER_KEY;
    assert_eq!(n, open);
    // Another host of a network already there is refused (its group is under its cap, the key
    // is not full); one of a new network gets in.
    let crowd = v4(100, 0, 0, 99);
    assert_eq!(
        s.add(k.clone(), PeerId::random(), vec![], (expires, crowd), now),
        Err(ProviderRefusal::KeyFull)
    );
    let honest = v4(203, 0, 113, 5);
    assert_eq!(
        s.add(k.clone(), PeerId::random(), vec![], (expires, honest), now),
        Ok(Added::New)
    );
}
