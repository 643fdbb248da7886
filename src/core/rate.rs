//! Token buckets per key (a peer, an origin): a sustained rate with a burst, in bounded memory.
//! Used where one peer must get its share and not more (inbound kad requests, broadcast
//! hand-offs).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// One token bucket per key, refilled at `rate` per second up to `burst`.
#[derive(Debug)]
pub struct RateLimits<K> {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: HashMap<K, (f64, Instant)>,
}

impl<K: Hash + Eq + Clone> RateLimits<K> {
    /// Buckets of `burst` tokens refilled at `rate` per second, for at most `max_keys` keys.
    pub fn new(rate: u32, burst: u32, max_keys: usize) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            max_keys,
            buckets: HashMap::new(),
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Forgets the keys whose bucket is full again (idle ones): a full bucket is the same as
    /// none, and a core that served thousands of peers once should not keep them all.
    pub fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .retain(|_, (tokens, since)| refill(*tokens, *since, now, rate, burst) < burst);
        // A map that once held many keys keeps their room unless told: a node asked by
        // hundreds of peers while it joined should not hold that memory for good.
        if self.buckets.capacity() > 4 * self.buckets.len() + 16 {
            self.buckets.shrink_to_fit();
        }
    }

    /// Takes one token of `key`'s bucket; false when it is empty (over its rate), or when no
    /// bucket can be made for a new key (every tracked key is still over its burst).
    pub fn take(&mut self, key: &K, now: Instant) -> bool {
        self.charge(key, 1.0, now)
    }

    /// Takes `cost` tokens (a fraction for cheap requests) of `key`'s bucket, as [`Self::take`].
    pub fn charge(&mut self, key: &K, cost: f64, now: Instant) -> bool {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            self.prune(now);
            if self.buckets.len() >= self.max_keys {
                return false;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let (tokens, since) = self.buckets.entry(key.clone()).or_insert((burst, now));
        let available = refill(*tokens, *since, now, rate, burst);
        *since = now;
        if available >= cost {
            *tokens = available - cost;
            true
        } else {
            *tokens = available;
            false
        }
    }
}

/// `tokens` left at `since`, refilled until `now`.
fn refill(tokens: f64, since: Instant, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(since).as_secs_f64();
    (tokens + elapsed * rate).min(burst)
}

/// A peer as a rate key: 8 bytes of its id's digest (the key's own random bytes for an ed25519
/// id, the hash's for others) instead of its 80-byte id. Two peers sharing them would share a
/// budget; finding an id that shares an honest peer's takes about 2^64 tries.
pub fn peer_key(peer: &libp2p::PeerId) -> u64 {
    let digest = peer.as_ref().digest();
    let mut last = [0u8; 8];
    let n = digest.len().min(8);
    last[8 - n..].copy_from_slice(&digest[digest.len() - n..]);
    u64::from_be_bytes(last)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let mut limits = RateLimits::new(10, 5, 8);
        let t = Instant::now();
        let taken = (0..20).filter(|_| limits.take(&1u8, t)).count();
        assert_eq!(taken, 5, "the burst");
        // One second later: ten more, not twenty.
        let later = t + Duration::from_secs(1);
        let taken = (0..20).filter(|_| limits.take(&1u8, later)).count();
        assert_eq!(taken, 5, "refilled at most to the burst");
        let much_later = later + Duration::from_millis(300);
        let taken = (0..20).filter(|_| limits.take(&1u8, much_later)).count();
        assert_eq!(taken, 3, "three tokens in 300 ms at 10 per second");
        // Another key is not affected.
        assert!(limits.take(&2u8, much_later));
    }

    #[test]
    fn keys_are_bounded_and_idle_ones_forgotten() {
        let mut limits = RateLimits::new(1, 2, 2);
        let t = Instant::now();
        assert!(limits.take(&1u8, t));
        assert!(limits.take(&2u8, t));
        // Both still below their burst: a third key cannot be tracked.
        assert!(!limits.take(&3u8, t));
        assert_eq!(limits.len(), 2);
        // Once they refilled, they are forgotten for the newcomer.
        assert!(limits.take(&3u8, t + Duration::from_secs(5)));
        assert_eq!(limits.len(), 1);
    }
}
