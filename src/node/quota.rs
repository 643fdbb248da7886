//! How many records this node stores on behalf of each remote peer, so that one peer cannot fill
//! the store for everyone (a sybil needs many identities, and each is bounded).

use std::collections::HashMap;

use libp2p::PeerId;
use libp2p::kad::RecordKey;

/// Records one remote peer may have stored here at once (an eighth of the store).
pub const MAX_RECORDS_PER_PEER: usize = dht_behaviours::config::STORE_MAX_RECORDS / 8;

#[derive(Default)]
pub(crate) struct Quota {
    origin: HashMap<RecordKey, PeerId>,
    count: HashMap<PeerId, usize>,
}

impl Quota {
    /// Whether `peer` may store `key` here: always for a key already held (a re-store adds no
    /// record), otherwise while it is under its quota.
    pub(crate) fn admits(&self, peer: &PeerId, key: &RecordKey) -> bool {
        self.origin.contains_key(key)
            || self.count.get(peer).copied().unwrap_or(0) < MAX_RECORDS_PER_PEER
    }

    /// `peer` stored `key` here. A key already held stays counted against the peer that first
    /// stored it: a re-store by another holder (replication, hand-off) adds no new record, and
    /// moving the key to that holder's account would free the first peer's quota for more.
    pub(crate) fn stored(&mut self, peer: PeerId, key: RecordKey) {
        if self.origin.contains_key(&key) {
            return;
        }
        self.origin.insert(key, peer);
        *self.count.entry(peer).or_default() += 1;
    }

    fn release(&mut self, peer: &PeerId) {
        if let Some(n) = self.count.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.count.remove(peer);
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
            if let Some(peer) = self.origin.remove(&key) {
                self.release(&peer);
            }
        }
    }

    /// Records `peer` has stored here now.
    #[cfg(test)]
    pub(crate) fn used(&self, peer: &PeerId) -> usize {
        self.count.get(peer).copied().unwrap_or(0)
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
            assert!(q.admits(&peer, &key));
            q.stored(peer, key);
        }
        let extra = RecordKey::new(&b"one more");
        assert!(!q.admits(&peer, &extra));
        // Overwriting its own key is fine; another peer has its own quota.
        assert!(q.admits(&peer, &RecordKey::new(&0usize.to_be_bytes())));
        assert!(q.admits(&PeerId::random(), &extra));
        // Another holder re-storing the peer's keys (replication) frees none of its quota.
        let holder = PeerId::random();
        for i in 0..16usize {
            q.stored(holder, RecordKey::new(&i.to_be_bytes()));
        }
        assert_eq!(q.used(&peer), MAX_RECORDS_PER_PEER);
        assert_eq!(q.used(&holder), 0);
        assert!(!q.admits(&peer, &extra));
        q.sweep(|k| k.as_ref() != 0usize.to_be_bytes());
        assert_eq!(q.used(&peer), MAX_RECORDS_PER_PEER - 1);
        assert!(q.admits(&peer, &extra));
    }
}
