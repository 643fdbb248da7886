//! Reopening a database: what comes back, with which expiry, and what does not.

use std::path::PathBuf;

use dht_behaviours::Timing;
use dht_behaviours::providers::{ProviderLimits, ProviderStore};
use dht_behaviours::store::{BoundedStore, StoreLimits};
use libp2p::Multiaddr;
use libp2p::kad::store::RecordStore;
use sha2::{Digest, Sha256};

use super::*;
use crate::core::Clock;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dht-persist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn content(value: &[u8]) -> Record {
    Record::new(
        RecordKey::from(Sha256::digest(value).to_vec()),
        value.to_vec(),
    )
}

#[test]
fn records_survive_a_reopen_with_their_expiry_and_expired_ones_do_not() {
    let dir = temp_dir("reopen");
    let local = PeerId::random();
    let other = PeerId::random();
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut store = BoundedStore::new(StoreLimits::default());
    store.track_changes();
    let mut own = content(b"mine");
    own.publisher = Some(local);
    let mut held = content(b"held");
    held.publisher = Some(other);
    held.expires = Some(now + Duration::from_secs(3600));
    let mut dying = content(b"dying");
    dying.expires = Some(now + Duration::from_secs(3));
    for r in [own.clone(), held.clone(), dying.clone()] {
        store.put(r).expect("put");
    }
    let changes: Vec<Change> = store
        .take_changes()
        .iter()
        .map(|k| change_for(&store, k, &local, now, wall))
        .collect();
    {
        let db = RecordDb::open(&dir).expect("open");
        db.write(&changes, wall).expect("write");
        assert_eq!(db.rows().expect("rows"), 3);
    }
    // Reopened five seconds later (simulated on both clocks): the dying record is gone.
    let later = now + Duration::from_secs(5);
    let wall_later = wall + Duration::from_secs(5);
    let db = RecordDb::open(&dir).expect("reopen");
    let loaded = db.load(local, later, wall_later).expect("load");
    assert_eq!(
        (loaded.expired, loaded.corrupt, loaded.published),
        (1, 0, 1)
    );
    assert_eq!(db.rows().expect("rows"), 2, "the expired row is deleted");
    let by_key = |k: &RecordKey| loaded.records.iter().find(|r| r.key == *k).expect("loaded");
    let mine = by_key(&own.key);
    assert_eq!((mine.publisher, mine.expires), (Some(local), None));
    let kept = by_key(&held.key);
    assert_eq!(kept.publisher, Some(other));
    let left = kept
        .expires
        .expect("an expiry")
        .saturating_duration_since(later);
    // The original expiry (one hour after `now`), not a fresh TTL.
    assert!(
        left <= Duration::from_secs(3595) && left >= Duration::from_secs(3594),
        "{left:?}"
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn removals_and_lost_ownership_are_written() {
    let dir = temp_dir("remove");
    let local = PeerId::random();
    let now = Instant::now();
    let wall = SystemTime::now();
    let db = RecordDb::open(&dir).expect("open");
    let mut store = BoundedStore::new(StoreLimits::default());
    store.track_changes();
    let mut own = Record::new(RecordKey::new(&"/name"), b"v1".to_vec());
    own.publisher = Some(local);
    store.put(own.clone()).expect("put");
    store.put(content(b"gone soon")).expect("put");
    let flush = |store: &mut BoundedStore| {
        let changes: Vec<Change> = store
            .take_changes()
            .iter()
            .map(|k| change_for(store, k, &local, now, wall))
            .collect();
        db.write(&changes, wall).expect("write");
    };
    flush(&mut store);
    store.remove(&content(b"gone soon").key);
    // Another publisher's version of the free key replaces ours: we no longer republish it.
    let mut theirs = own.clone();
    theirs.publisher = Some(PeerId::random());
    theirs.expires = Some(now + Duration::from_secs(60));
    store.put(theirs).expect("put");
    flush(&mut store);
    let loaded = db.load(local, now, wall).expect("load");
    assert_eq!(loaded.records.len(), 1);
    assert_eq!(loaded.published, 0);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes every change `store` tracked.
fn flush_providers(db: &RecordDb, store: &mut ProviderStore, now: Instant, wall: SystemTime) {
    let changes: Vec<Change> = store
        .take_changes_within(usize::MAX)
        .iter()
        .map(|(k, p)| provider_change_for(store, k, p, now, wall))
        .collect();
    db.write(&changes, wall).expect("write");
}

#[test]
fn provider_records_survive_a_reopen_with_their_expiry_and_expired_ones_do_not() {
    let dir = temp_dir("providers");
    let local = PeerId::random();
    let (peer, gone) = (PeerId::random(), PeerId::random());
    let now = Instant::now();
    let wall = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let addr: Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().expect("addr");
    let key = RecordKey::new(&b"provided key");
    let removed = RecordKey::new(&b"no longer provided");
    let mut store = ProviderStore::new(local, ProviderLimits::default());
    store.track_changes();
    // A peer's record, this node's own, one about to expire and one removed after it was written.
    store
        .add(
            key.clone(),
            peer,
            vec![addr.clone()],
            (now + hour, None),
            now,
        )
        .expect("add");
    store
        .add(key.clone(), local, Vec::new(), (now + 2 * hour, None), now)
        .expect("add");
    store
        .add(
            key.clone(),
            gone,
            Vec::new(),
            (now + Duration::from_secs(3), None),
            now,
        )
        .expect("add");
    store
        .add(removed.clone(), peer, Vec::new(), (now + hour, None), now)
        .expect("add");
    {
        let db = RecordDb::open(&dir).expect("open");
        flush_providers(&db, &mut store, now, wall);
        assert_eq!(db.provider_rows().expect("rows"), 4);
        assert!(store.remove(&removed, &peer));
        flush_providers(&db, &mut store, now, wall);
        assert_eq!(db.provider_rows().expect("rows"), 3);
    }
    // Reopened five seconds later (simulated on both clocks): the expiring record is gone.
    let later = now + Duration::from_secs(5);
    let wall_later = wall + Duration::from_secs(5);
    let db = RecordDb::open(&dir).expect("reopen");
    let loaded = db.load(local, later, wall_later).expect("load");
    assert_eq!(
        (loaded.providers, loaded.expired, loaded.corrupt),
        (2, 1, 0)
    );
    assert_eq!(
        db.provider_rows().expect("rows"),
        2,
        "the expired row is deleted"
    );
    // Back in a node's store, with their original expiry (not a fresh TTL) and addresses.
    let timing = Timing::default();
    let clock = Clock::new(later, Duration::ZERO);
    let mut records = Records::new(local, StoreLimits::default(), &timing, clock);
    let records = restore_providers(Some(&db), &mut records);
    let back: Vec<ProviderRecord> = records.providers(&key, later).collect();
    assert_eq!(back.len(), 2);
    let of = |p: &PeerId| back.iter().find(|r| r.provider == *p).expect("restored");
    assert_eq!(of(&peer).addresses, vec![addr]);
    let left = of(&peer)
        .expires
        .expect("an expiry")
        .saturating_duration_since(later);
    assert!(
        left <= hour - Duration::from_secs(5) && left >= hour - Duration::from_secs(6),
        "{left:?}"
    );
    assert_eq!(records.provided_by(&local), vec![key.clone()]);
    assert!(records.provided_by(&gone).is_empty());
    assert_eq!(records.provider_count(), 2);
    // Held once: a second restore finds nothing more; what changes now is tracked for writing.
    restore_providers(Some(&db), records);
    assert_eq!(records.provider_count(), 2);
    records
        .add_provider(removed, peer, Vec::new(), None, later)
        .expect("add");
    assert_eq!(records.providers_mut().pending_changes(), 1);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_provider_rows_are_dropped() {
    let dir = temp_dir("provider-garbage");
    let wall = SystemTime::now();
    let db = RecordDb::open(&dir).expect("open");
    let garbage = [
        Change::PutProvider {
            id: b"\x00\x01".to_vec(),
            row: vec![1; 12],
        },
        Change::PutProvider {
            id: rows::provider_id(&RecordKey::new(&b"k"), &PeerId::random()),
            row: vec![9; 3],
        },
    ];
    db.write(&garbage, wall).expect("write");
    let loaded = db
        .load(PeerId::random(), Instant::now(), wall)
        .expect("load");
    assert_eq!((loaded.providers, loaded.corrupt), (0, 2));
    assert_eq!(db.provider_rows().expect("rows"), 0);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}
