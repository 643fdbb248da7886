//! Operations waiting for the network, each with a deadline: nothing waits forever.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// Pending entries keyed by query or request id.
pub(crate) struct Pending<K, V> {
    entries: HashMap<K, (Instant, V)>,
}

impl<K: Eq + Hash + Copy, V> Pending<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    pub(crate) fn insert(&mut self, key: K, deadline: Instant, value: V) {
        self.entries.insert(key, (deadline, value));
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<(Instant, V)> {
        self.entries.remove(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Removes and returns every entry whose deadline has passed.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<(K, V)> {
        let expired: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, (d, _))| *d <= now)
            .map(|(k, _)| *k)
            .collect();
        expired
            .into_iter()
            .filter_map(|k| self.entries.remove(&k).map(|(_, v)| (k, v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expired_entries_are_taken_once() {
        let now = Instant::now();
        let mut p = Pending::new();
        p.insert(1, now, "a");
        p.insert(2, now + Duration::from_secs(5), "b");
        assert_eq!(p.take_expired(now), vec![(1, "a")]);
        assert!(p.take_expired(now).is_empty());
        assert_eq!(p.len(), 1);
        assert_eq!(p.remove(&2).map(|(_, v)| v), Some("b"));
    }
}
