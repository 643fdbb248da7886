//! How much this node stores on behalf of each remote peer, in records and in bytes, so that one
//! peer cannot fill the store for everyone (a sybil needs many identities, and each is bounded).

use std::collections::HashMap;

use dht_behaviours::store::StoreLimits;
use libp2p::PeerId;
use libp2p::kad::RecordKey;

/// The share of the store's records and bytes one remote peer may hold at once: an eighth.
pub const PEER_SHARE_DIVISOR: usize = 8;
/// Records one remote peer may have stored here at once with the default store limits.
pub const MAX_RECORDS_PER_PEER: usize =
    dht_behaviours::config::STORE_MAX_RECORDS / PEER_SHARE_DIVISOR;
/// Bytes (keys plus values) one remote peer may have stored here at once with the default limits.
pub const MAX_BYTES_PER_PEER: usize = dht_behaviours::config::STORE_MAX_BYTES / PEER_SHARE_DIVISOR;

const _: () = assert!(MAX_BYTES_PER_PEER >= dht_behaviours::config::MAX_VALUE_SIZE);

/// What one peer holds here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    records: usize,
    bytes: usize,
}

/// Per-peer accounts of the records this node keeps for others.
#[derive(Debug)]
pub(crate) struct Quota {
    max_records: usize,
    max_bytes: usize,
    origin: HashMap<RecordKey, (PeerId, usize)>,
    usage: HashMap<PeerId, Usage>,
}

impl Default for Quota {
    fn default() -> Self {
        Self::new(StoreLimits::default())
    }
}

impl Quota {
    /// Accounts sized as a share of a store with `limits`.
    pub(crate) fn new(limits: StoreLimits) -> Self {
        Self {
            max_records: (limits.max_records / PEER_SHARE_DIVISOR).max(1),
            max_bytes: (limits.max_bytes / PEER_SHARE_DIVISOR)
                .max(dht_behaviours::config::MAX_VALUE_SIZE),
            origin: HashMap::new(),
            usage: HashMap::new(),
        }
    }

    /// Whether `peer` may store `key` (`bytes` of key plus value) here: always for a key already
    /// held (a re-store adds no record), otherwise while it is under both of its bounds.
    pub(crate) fn admits(&self, peer: &PeerId, key: &RecordKey, bytes: usize) -> bool {
        if self.origin.contains_key(key) {
            return true;
        }
        let used = self.usage.get(peer).copied().unwrap_or_default();
        used.records < self.max_records && used.bytes + bytes <= self.max_bytes
    }

    /// `peer` stored `key` here. A key already held stays counted against the peer that first
    /// stored it: a re-store by another holder (replication, hand-off) adds no new record, and
    /// moving the key to that holder's account would free the first peer's quota for more.
    pub(crate) fn stored(&mut self, peer: PeerId, key: RecordKey, bytes: usize) {
        if self.origin.contains_key(&key) {
            return;
        }
        self.origin.insert(key, (peer, bytes));
        let used = self.usage.entry(peer).or_default();
        used.records += 1;
        used.bytes += bytes;
    }

    /// The peer whose account holds `key`.
    pub(crate) fn origin(&self, key: &RecordKey) -> Option<&PeerId> {
        self.origin.get(key).map(|(p, _)| p)
    }

    fn release(&mut self, peer: &PeerId, bytes: usize) {
        if let Some(used) = self.usage.get_mut(peer) {
            used.records = used.records.saturating_sub(1);
            used.bytes = used.bytes.saturating_sub(bytes);
            if used.records == 0 {
                self.usage.remove(peer);
            }
        }
    }

    /// Forgets the records that are no longer stored (expired or removed).
    pub(crate) fn sweep(&mut self, still_stored: impl Fn(&RecordKey) -> bool) {
        let gone: Vec<RecordKey> = self
            .origin
            .keys()
            .filter(|k| !still_stored(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some((peer, bytes)) = self.origin.remove(&key) {
                self.release(&peer, bytes);
            }
        }
    }

    /// Records `peer` has stored here now.
    #[cfg(test)]
    pub(crate) fn used(&self, peer: &PeerId) -> usize {
        self.usage.get(peer).map_or(0, |u| u.records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_bounded_and_released_as_its_records_go() {
        let mut q = Quota::default();
        let peer = PeerId::random();
        for i in 0..MAX_RECORDS_PER_PEER {
            let key = RecordKey::new(&i.to_be_bytes());
            assert!(q.admits(&peer, &key, 16));
            q.stored(peer, key, 16);
        }
        let extra = RecordKey::new(&b"one more");
        assert!(!q.admits(&peer, &extra, 16));
        // Overwriting its own key is fine; another peer has its own quota.
        assert!(q.admits(&peer, &RecordKey::new(&0usize.to_be_bytes()), 16));
        assert!(q.admits(&PeerId::random(), &extra, 16));
        // Another holder re-storing the peer's keys (replication) frees none of its quota.
        let holder = PeerId::random();
        for i in 0..16usize {
            q.stored(holder, RecordKey::new(&i.to_be_bytes()), 16);
        }
        assert_eq!(q.used(&peer), MAX_RECORDS_PER_PEER);
        assert_eq!(q.used(&holder), 0);
        assert!(!q.admits(&peer, &extra, 16));
        q.sweep(|k| k.as_ref() != 0usize.to_be_bytes());
        assert_eq!(q.used(&peer), MAX_RECORDS_PER_PEER - 1);
        assert!(q.admits(&peer, &extra, 16));
    }

    #[test]
    fn large_values_hit_the_byte_bound_long_before_the_record_bound() {
        let mut q = Quota::default();
        let peer = PeerId::random();
        let big = dht_behaviours::config::MAX_VALUE_SIZE;
        let mut kept = 0;
        for i in 0..MAX_RECORDS_PER_PEER {
            let key = RecordKey::new(&i.to_be_bytes());
            if !q.admits(&peer, &key, big) {
                break;
            }
            q.stored(peer, key, big);
            kept += 1;
        }
        assert_eq!(kept, MAX_BYTES_PER_PEER / big);
        assert!(kept < MAX_RECORDS_PER_PEER);
    }
}
