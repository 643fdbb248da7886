//! A record store bounded in records *and* bytes. libp2p's `MemoryStore` bounds only the record
//! count and the size of one value; a node must also bound the memory all values take together.
//! Provider records are kept apart, in [`crate::providers::ProviderStore`].

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};

use crate::config::{EXPIRY_MARGIN, MAX_VALUE_SIZE, STORE_MAX_BYTES, STORE_MAX_RECORDS};

/// Limits of one [`BoundedStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Records held at most.
    pub max_records: usize,
    /// Bytes of keys plus values held at most.
    pub max_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_records: STORE_MAX_RECORDS,
            max_bytes: STORE_MAX_BYTES,
        }
    }
}

/// Records in memory with a record and a byte budget. It keeps no provider record: those are in
/// a [`crate::providers::ProviderStore`], and the provider half of [`RecordStore`] is inert.
///
/// With change tracking on, the store remembers which keys changed since the last
/// [`BoundedStore::take_changes`], so that a persistence layer writes each change once, in batches,
/// outside the swarm's poll (the kad store trait is synchronous and must not wait on a disk).
pub struct BoundedStore {
    records: HashMap<RecordKey, Record>,
    bytes: usize,
    limits: StoreLimits,
    changed: Option<HashSet<RecordKey>>,
    margin: Duration,
}

/// Whether `record` is `local`'s own published copy: the one it republishes, with no expiry while
/// the node runs (copies elsewhere carry the TTL).
pub fn is_own(record: &Record, local: &PeerId) -> bool {
    record.publisher.as_ref() == Some(local) && record.expires.is_none()
}

/// Whether `record` still lives at `now`, counting it gone `margin` before its expiry.
fn alive(record: &Record, now: Instant, margin: Duration) -> bool {
    record.expires.is_none_or(|t| t > now + margin)
}

fn footprint(record: &Record) -> usize {
    record.key.as_ref().len() + record.value.len()
}

impl BoundedStore {
    /// An empty store bounded by `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            records: HashMap::new(),
            bytes: 0,
            limits,
            changed: None,
            margin: EXPIRY_MARGIN,
        }
    }

    /// Counts a record gone this long before its expiry (at least [`EXPIRY_MARGIN`]; see
    /// [`crate::Timing::expiry_margin`]).
    pub fn with_expiry_margin(mut self, margin: Duration) -> Self {
        self.margin = margin.max(EXPIRY_MARGIN);
        self
    }

    /// Starts remembering changed keys (for persistence).
    pub fn track_changes(&mut self) {
        self.changed.get_or_insert_with(HashSet::new);
    }

    /// Keys put or removed since the last call; empty when tracking is off. A key's current state
    /// is whatever [`RecordStore::get`] returns now: present means written, absent means removed.
    pub fn take_changes(&mut self) -> Vec<RecordKey> {
        self.changed
            .as_mut()
            .map(|c| c.drain().collect())
            .unwrap_or_default()
    }

    /// Takes the changed keys, at most `max_keys` of them and as few as reach `max_bytes` of
    /// keys and values (at least one): a flush copies what it writes, so a large backlog is written
    /// in bounded batches instead of copied at once.
    pub fn take_changes_within(&mut self, max_keys: usize, max_bytes: usize) -> Vec<RecordKey> {
        let Some(changed) = self.changed.as_mut() else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        let mut bytes = 0;
        for key in changed.iter() {
            if taken.len() >= max_keys || (bytes >= max_bytes && !taken.is_empty()) {
                break;
            }
            bytes += key.as_ref().len() + self.records.get(key).map_or(0, |r| r.value.len());
            taken.push(key.clone());
        }
        for key in &taken {
            changed.remove(key);
        }
        taken
    }

    /// Marks `keys` as changed again (a write of them failed and must be retried).
    pub fn mark_changed(&mut self, keys: impl IntoIterator<Item = RecordKey>) {
        if let Some(changed) = self.changed.as_mut() {
            changed.extend(keys);
        }
    }

    /// Keys changed and not yet taken.
    pub fn pending_changes(&self) -> usize {
        self.changed.as_ref().map_or(0, HashSet::len)
    }

    fn mark(&mut self, key: &RecordKey) {
        if let Some(changed) = self.changed.as_mut() {
            changed.insert(key.clone());
        }
    }

    /// Records held now.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes of keys plus values held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The limits in force.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// The record under `key` if it still lives at `now` (the clock as an argument, for callers
    /// that run on a clock of their own, such as a simulation).
    pub fn get_at(&self, key: &RecordKey, now: Instant) -> Option<&Record> {
        self.records.get(key).filter(|r| alive(r, now, self.margin))
    }

    /// The record under `key` whatever its expiry (to compare a copy offered with the one held).
    pub fn get_any(&self, key: &RecordKey) -> Option<&Record> {
        self.records.get(key)
    }

    /// The records living at `now`.
    pub fn records_at(&self, now: Instant) -> impl Iterator<Item = &Record> + '_ {
        let margin = self.margin;
        self.records.values().filter(move |r| alive(r, now, margin))
    }

    /// Drops every record that has expired by `now`; returns how many went.
    pub fn remove_expired(&mut self, now: Instant) -> usize {
        let before = self.records.len();
        let mut freed = 0;
        let changed = &mut self.changed;
        let margin = self.margin;
        self.records.retain(|key, r| {
            let keep = alive(r, now, margin);
            if !keep {
                freed += footprint(r);
                if let Some(c) = changed.as_mut() {
                    c.insert(key.clone());
                }
            }
            keep
        });
        self.bytes -= freed;
        before - self.records.len()
    }
}

impl RecordStore for BoundedStore {
    type RecordsIter<'a> = Box<dyn Iterator<Item = Cow<'a, Record>> + 'a>;
    type ProvidedIter<'a> = std::iter::Empty<Cow<'a, ProviderRecord>>;

    /// The record, unless it is within its expiry margin (kad serves what this returns).
    fn get(&self, key: &RecordKey) -> Option<Cow<'_, Record>> {
        let now = Instant::now();
        self.records
            .get(key)
            .filter(|r| alive(r, now, self.margin))
            .map(Cow::Borrowed)
    }

    fn put(&mut self, record: Record) -> Result<()> {
        if record.value.len() > MAX_VALUE_SIZE {
            return Err(Error::ValueTooLarge);
        }
        let size = footprint(&record);
        let len = self.records.len();
        let key = record.key.clone();
        match self.records.entry(record.key.clone()) {
            Entry::Occupied(mut e) => {
                if *e.get() == record {
                    // Nothing changes (a publisher's replication stores its own copy again).
                    return Ok(());
                }
                let old = footprint(e.get());
                if self.bytes - old + size > self.limits.max_bytes {
                    return Err(Error::MaxRecords);
                }
                self.bytes = self.bytes - old + size;
                e.insert(record);
            }
            Entry::Vacant(e) => {
                if len >= self.limits.max_records || self.bytes + size > self.limits.max_bytes {
                    return Err(Error::MaxRecords);
                }
                self.bytes += size;
                e.insert(record);
            }
        }
        self.mark(&key);
        Ok(())
    }

    fn remove(&mut self, key: &RecordKey) {
        if let Some(r) = self.records.remove(key) {
            self.bytes -= footprint(&r);
            self.mark(key);
        }
    }

    /// Every living record (kad's replication job reads this; a dying one must not go out).
    fn records(&self) -> Self::RecordsIter<'_> {
        let now = Instant::now();
        Box::new(
            self.records
                .values()
                .filter(move |r| alive(r, now, self.margin))
                .map(Cow::Borrowed),
        )
    }

    /// Refused: provider records are kept in a [`crate::providers::ProviderStore`] (the node's
    /// core answers ADD_PROVIDER itself; libp2p-kad, the caller of this trait, is not used).
    fn add_provider(&mut self, _record: ProviderRecord) -> Result<()> {
        Err(Error::MaxProvidedKeys)
    }

    /// None: this store keeps no provider record (see `add_provider`).
    fn providers(&self, _key: &RecordKey) -> Vec<ProviderRecord> {
        Vec::new()
    }

    /// None: this store keeps no provider record (see `add_provider`).
    fn provided(&self) -> Self::ProvidedIter<'_> {
        std::iter::empty()
    }

    /// Nothing to remove: this store keeps no provider record (see `add_provider`).
    fn remove_provider(&mut self, _key: &RecordKey, _provider: &PeerId) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_records: usize, max_bytes: usize) -> BoundedStore {
        BoundedStore::new(StoreLimits {
            max_records,
            max_bytes,
        })
    }

    fn rec(key: &str, len: usize) -> Record {
        Record::new(RecordKey::new(&key), vec![7; len])
    }

    #[test]
    fn counts_records_and_bytes() {
        let mut s = store(10, 1000);
        s.put(rec("a", 10)).expect("put");
        s.put(rec("b", 20)).expect("put");
        assert_eq!((s.len(), s.bytes()), (2, 32));
        s.put(rec("a", 5)).expect("overwrite");
        assert_eq!((s.len(), s.bytes()), (2, 27));
        s.remove(&RecordKey::new(&"b"));
        assert_eq!((s.len(), s.bytes()), (1, 6));
    }

    #[test]
    fn record_limit_holds_but_overwrites_pass() {
        let mut s = store(2, 1000);
        s.put(rec("a", 1)).expect("put");
        s.put(rec("b", 1)).expect("put");
        assert!(matches!(s.put(rec("c", 1)), Err(Error::MaxRecords)));
        s.put(rec("a", 2)).expect("overwrite within limits");
    }

    #[test]
    fn byte_limit_holds() {
        let mut s = store(10, 50);
        s.put(rec("a", 40)).expect("put");
        assert!(matches!(s.put(rec("b", 40)), Err(Error::MaxRecords)));
        assert!(matches!(s.put(rec("a", 60)), Err(Error::MaxRecords)));
        assert_eq!(s.bytes(), 41);
    }

    #[test]
    fn oversize_value_is_refused() {
        let mut s = store(10, usize::MAX);
        assert!(matches!(
            s.put(rec("a", MAX_VALUE_SIZE + 1)),
            Err(Error::ValueTooLarge)
        ));
    }

    #[test]
    fn changes_are_taken_in_bounded_batches() {
        let mut s = store(100, usize::MAX);
        s.track_changes();
        for i in 0..10 {
            s.put(rec(&format!("k{i}"), 100)).expect("put");
        }
        // 102 bytes each: a 250-byte batch is three records (the one that reaches it included).
        let first = s.take_changes_within(100, 250);
        assert_eq!(first.len(), 3);
        assert_eq!(s.pending_changes(), 7);
        assert_eq!(s.take_changes_within(4, usize::MAX).len(), 4);
        // At least one, however small the byte bound.
        assert_eq!(s.take_changes_within(100, 0).len(), 1);
        assert_eq!(s.take_changes_within(100, usize::MAX).len(), 2);
        assert_eq!(s.pending_changes(), 0);
    }

    #[test]
    fn changes_are_tracked_once_per_key() {
        let mut s = store(10, 1000);
        s.put(rec("untracked", 1)).expect("put");
        assert!(s.take_changes().is_empty());
        s.track_changes();
        s.put(rec("a", 1)).expect("put");
        s.put(rec("a", 2)).expect("overwrite");
        s.put(rec("b", 1)).expect("put");
        s.remove(&RecordKey::new(&"b"));
        s.remove(&RecordKey::new(&"never there"));
        assert!(s.put(rec("big", MAX_VALUE_SIZE + 1)).is_err());
        let mut changed: Vec<Vec<u8>> = s.take_changes().iter().map(|k| k.to_vec()).collect();
        changed.sort();
        assert_eq!(changed, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(s.pending_changes(), 0);
        let mut old = rec("old", 1);
        old.expires = Some(Instant::now());
        s.put(old).expect("put");
        s.take_changes();
        s.remove_expired(Instant::now() + Duration::from_millis(1));
        assert_eq!(s.take_changes(), vec![RecordKey::new(&"old")]);
    }

    #[test]
    fn a_record_in_its_last_second_is_neither_served_nor_listed() {
        let mut s = store(10, 1000);
        let mut dying = rec("dying", 3);
        dying.expires = Some(Instant::now() + EXPIRY_MARGIN / 2);
        let mut living = rec("living", 3);
        living.expires = Some(Instant::now() + 10 * EXPIRY_MARGIN);
        s.put(dying).expect("put");
        s.put(living).expect("put");
        assert!(s.get(&RecordKey::new(&"dying")).is_none());
        assert!(s.get(&RecordKey::new(&"living")).is_some());
        assert_eq!(s.records().count(), 1);
        assert_eq!(s.remove_expired(Instant::now()), 1);
    }

    #[test]
    fn no_provider_record_is_kept_here() {
        let mut s = store(10, 1000);
        let key = RecordKey::new(&"k");
        let record = ProviderRecord::new(key.clone(), PeerId::random(), Vec::new());
        assert!(s.add_provider(record).is_err());
        assert!(s.providers(&key).is_empty());
        assert_eq!(s.provided().count(), 0);
    }

    #[test]
    fn expired_records_are_dropped() {
        let mut s = store(10, 1000);
        let now = Instant::now();
        let mut old = rec("old", 3);
        old.expires = Some(now);
        let mut fresh = rec("fresh", 3);
        fresh.expires = Some(now + Duration::from_secs(60));
        s.put(old).expect("put");
        s.put(fresh).expect("put");
        assert_eq!(s.remove_expired(now + Duration::from_millis(1)), 1);
        assert_eq!((s.len(), s.bytes()), (1, 8));
    }
}
