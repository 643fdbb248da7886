//! How much this node stores on behalf of others, in records and in bytes: per remote peer, per
//! host (an IPv4 address, an IPv6 /64: identities cost nothing, addresses do), and for all peers
//! together, so that no peer and no host can fill the store, and a flood never takes the room a
//! node keeps for its own records.
//!
//! The shares fit together: a peer may hold an eighth of the store, a host (whatever identities
//! it runs) a quarter, all peers together fifteen sixteenths; the last sixteenth is this node's
//! own. Once peers together hold three quarters of their room, the host holding the most is
//! refused first: a new record from a host is refused while it holds at least as much as every
//! other host, so a few heavy hosts cannot crowd out the many light ones.

use std::collections::HashMap;

use dht_behaviours::config::{MAX_VALUE_SIZE, STORE_MAX_BYTES, STORE_MAX_RECORDS};
use dht_behaviours::store::StoreLimits;
use libp2p::PeerId;
use libp2p::kad::RecordKey;

/// The share of the store's records and bytes one remote peer may hold at once: an eighth.
pub const PEER_SHARE_DIVISOR: usize = 8;
/// The share one host may hold at once, whatever identities it runs: a quarter (two peers').
pub const HOST_SHARE_DIVISOR: usize = 4;
/// The part of the store kept for this node's own records: a sixteenth, which no peer can take.
pub const OWN_RESERVE_DIVISOR: usize = 16;
/// Peers together holding this many quarters of their room makes the store "filling": from then
/// on the host holding the most is refused first.
pub const FAIR_FROM_QUARTERS: usize = 3;
/// Records one remote peer may have stored here at once with the default store limits.
pub const MAX_RECORDS_PER_PEER: usize = STORE_MAX_RECORDS / PEER_SHARE_DIVISOR;
/// Bytes (keys plus values) one remote peer may have stored here at once with the default limits.
pub const MAX_BYTES_PER_PEER: usize = STORE_MAX_BYTES / PEER_SHARE_DIVISOR;
/// Records one host may have stored here at once with the default store limits.
pub const MAX_RECORDS_PER_HOST: usize = STORE_MAX_RECORDS / HOST_SHARE_DIVISOR;
/// Bytes one host may have stored here at once with the default store limits.
pub const MAX_BYTES_PER_HOST: usize = STORE_MAX_BYTES / HOST_SHARE_DIVISOR;

const _: () = assert!(MAX_BYTES_PER_PEER >= MAX_VALUE_SIZE);
// A host holds at least a peer's share, and less than all peers' room.
const _: () = assert!(HOST_SHARE_DIVISOR <= PEER_SHARE_DIVISOR);
const _: () = assert!(OWN_RESERVE_DIVISOR > HOST_SHARE_DIVISOR);

/// Records and bytes held for someone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    records: usize,
    bytes: usize,
}

impl Usage {
    fn add(&mut self, bytes: usize) {
        self.records += 1;
        self.bytes += bytes;
    }

    /// Takes one record of `bytes` off; whether nothing is left.
    fn take(&mut self, bytes: usize) -> bool {
        self.records = self.records.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
        self.records == 0
    }

    fn fits(&self, bytes: usize, bound: Usage) -> bool {
        self.records < bound.records && self.bytes + bytes <= bound.bytes
    }

    /// A weight to compare hosts by: the larger of the record and byte fractions held.
    fn weight(&self, of: Usage) -> f64 {
        let r = self.records as f64 / of.records.max(1) as f64;
        let b = self.bytes as f64 / of.bytes.max(1) as f64;
        r.max(b)
    }
}

/// Why a new record is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// The peer holds its share.
    Peer,
    /// Its host holds its share.
    Host,
    /// Peers together fill their room (the node's own reserve is left), or the store is filling
    /// and this host holds the most.
    Room,
}

/// The accounts of the records this node keeps for others.
#[derive(Debug)]
pub(crate) struct Quota {
    peer_bound: Usage,
    host_bound: Usage,
    room: Usage,
    origin: HashMap<RecordKey, (PeerId, Option<u64>, usize)>,
    usage: HashMap<PeerId, Usage>,
    hosts: HashMap<u64, Usage>,
    total: Usage,
}

impl Default for Quota {
    fn default() -> Self {
        Self::new(StoreLimits::default())
    }
}

impl Quota {
    /// Accounts sized as shares of a store with `limits`.
    pub(crate) fn new(limits: StoreLimits) -> Self {
        let share = |divisor: usize| Usage {
            records: (limits.max_records / divisor).max(1),
            bytes: (limits.max_bytes / divisor).max(MAX_VALUE_SIZE),
        };
        let reserve = share(OWN_RESERVE_DIVISOR);
        Self {
            peer_bound: share(PEER_SHARE_DIVISOR),
            host_bound: share(HOST_SHARE_DIVISOR),
            room: Usage {
                records: limits.max_records.saturating_sub(reserve.records).max(1),
                bytes: limits
                    .max_bytes
                    .saturating_sub(reserve.bytes)
                    .max(MAX_VALUE_SIZE),
            },
            origin: HashMap::new(),
            usage: HashMap::new(),
            hosts: HashMap::new(),
            total: Usage::default(),
        }
    }

    /// Whether `peer` on `host` (`None`: unknown, or loopback in a local network) may store
    /// `key` (`bytes` of key plus value) here: always for a key already held (a re-store adds
    /// no record), otherwise while the peer, its host and all peers together are within bounds.
    /// A fellow holder's copy (`duty`) may also take the room kept for the node's own records:
    /// replication and hand-off are the node's duty, which a flood must not crowd out.
    pub(crate) fn admits(
        &self,
        peer: &PeerId,
        (host, duty): (Option<u64>, bool),
        key: &RecordKey,
        bytes: usize,
    ) -> Result<(), Over> {
        if self.origin.contains_key(key) {
            return Ok(());
        }
        let used = self.usage.get(peer).copied().unwrap_or_default();
        if !used.fits(bytes, self.peer_bound) {
            return Err(Over::Peer);
        }
        if !duty && !self.total.fits(bytes, self.room) {
            return Err(Over::Room);
        }
        let Some(host) = host else {
            return Ok(());
        };
        let held = self.hosts.get(&host).copied().unwrap_or_default();
        if !held.fits(bytes, self.host_bound) {
            return Err(Over::Host);
        }
        if !duty && self.filling() && self.hosts.len() > 1 {
            let mine = held.weight(self.room);
            let most_of_others = self
                .hosts
                .iter()
                .filter(|(h, _)| **h != host)
                .map(|(_, u)| u.weight(self.room))
                .fold(0.0, f64::max);
            if mine >= most_of_others {
                return Err(Over::Room);
            }
        }
        Ok(())
    }

    /// Whether peers together hold enough of their room that the heaviest host is refused first.
    fn filling(&self) -> bool {
        let at = |room: usize| room / 4 * FAIR_FROM_QUARTERS;
        self.total.records >= at(self.room.records) || self.total.bytes >= at(self.room.bytes)
    }

    /// `peer` on `host` stored `key` here. A key already held stays counted against the peer
    /// that first stored it: a re-store by another holder (replication, hand-off) adds no new
    /// record, and moving the key to that holder's account would free the first peer's share.
    pub(crate) fn stored(&mut self, peer: PeerId, host: Option<u64>, key: RecordKey, bytes: usize) {
        if self.origin.contains_key(&key) {
            return;
        }
        self.origin.insert(key, (peer, host, bytes));
        self.usage.entry(peer).or_default().add(bytes);
        if let Some(h) = host {
            self.hosts.entry(h).or_default().add(bytes);
        }
        self.total.add(bytes);
    }

    /// The peer whose account holds `key`.
    pub(crate) fn origin(&self, key: &RecordKey) -> Option<&PeerId> {
        self.origin.get(key).map(|(p, _, _)| p)
    }

    fn release(&mut self, peer: &PeerId, host: Option<u64>, bytes: usize) {
        if self.usage.get_mut(peer).is_some_and(|u| u.take(bytes)) {
            self.usage.remove(peer);
        }
        if let Some(h) = host
            && self.hosts.get_mut(&h).is_some_and(|u| u.take(bytes))
        {
            self.hosts.remove(&h);
        }
        self.total.take(bytes);
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
            if let Some((peer, host, bytes)) = self.origin.remove(&key) {
                self.release(&peer, host, bytes);
            }
        }
    }

    /// Records `peer` has stored here now.
    #[cfg(test)]
    pub(crate) fn used(&self, peer: &PeerId) -> usize {
        self.usage.get(peer).map_or(0, |u| u.records)
    }

    /// Records the peers on `host` have stored here now.
    #[cfg(test)]
    pub(crate) fn used_by_host(&self, host: u64) -> usize {
        self.hosts.get(&host).map_or(0, |u| u.records)
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
            assert!(q.admits(&peer, (None, false), &key, 16).is_ok());
            q.stored(peer, None, key, 16);
        }
        let extra = RecordKey::new(&b"one more");
        assert!(q.admits(&peer, (None, false), &extra, 16).is_err());
        // Overwriting its own key is fine; another peer has its own quota.
        assert!(
            q.admits(
                &peer,
                (None, false),
                &RecordKey::new(&0usize.to_be_bytes()),
                16
            )
            .is_ok()
        );
        assert!(
            q.admits(&PeerId::random(), (None, false), &extra, 16)
                .is_ok()
        );
        // Another holder re-storing the peer's keys (replication) frees none of its quota.
        let holder = PeerId::random();
        for i in 0..16usize {
            q.stored(holder, None, RecordKey::new(&i.to_be_bytes()), 16);
        }
        assert_eq!(q.used(&peer), MAX_RECORDS_PER_PEER);
        assert_eq!(q.used(&holder), 0);
        assert!(q.admits(&peer, (None, false), &extra, 16).is_err());
        q.sweep(|k| k.as_ref() != 0usize.to_be_bytes());
        assert_eq!(q.used(&peer), MAX_RECORDS_PER_PEER - 1);
        assert!(q.admits(&peer, (None, false), &extra, 16).is_ok());
    }

    #[test]
    fn large_values_hit_the_byte_bound_long_before_the_record_bound() {
        let mut q = Quota::default();
        let peer = PeerId::random();
        let big = dht_behaviours::config::MAX_VALUE_SIZE;
        let mut kept = 0;
        for i in 0..MAX_RECORDS_PER_PEER {
            let key = RecordKey::new(&i.to_be_bytes());
            if q.admits(&peer, (None, false), &key, big).is_err() {
                break;
            }
            q.stored(peer, None, key, big);
            kept += 1;
        }
        assert_eq!(kept, MAX_BYTES_PER_PEER / big);
        assert!(kept < MAX_RECORDS_PER_PEER);
    }

    #[test]
    fn one_host_holds_its_share_whatever_identities_it_runs() {
        // Failed before host shares: 16 identities of one host, each within its own share,
        // filled the store (the attack of issue #27).
        let mut q = Quota::default();
        let host = Some(7);
        let mut kept = 0;
        for i in 0..(2 * STORE_MAX_RECORDS) {
            let peer = PeerId::from_bytes(&PeerId::random().to_bytes()).expect("id");
            for j in 0..(STORE_MAX_RECORDS / 16) {
                let key = RecordKey::new(&format!("{i}/{j}"));
                if q.admits(&peer, (host, false), &key, 100).is_ok() {
                    q.stored(peer, host, key, 100);
                    kept += 1;
                }
            }
            if i >= 16 {
                break;
            }
        }
        assert_eq!(kept, MAX_RECORDS_PER_HOST);
        assert_eq!(q.used_by_host(7), MAX_RECORDS_PER_HOST);
        // Another host is served as before.
        let other = PeerId::random();
        assert!(
            q.admits(&other, (Some(8), false), &RecordKey::new(&b"x"), 100)
                .is_ok()
        );
    }

    #[test]
    fn peers_together_leave_the_own_reserve_and_the_heaviest_host_is_refused_first() {
        let limits = StoreLimits {
            max_records: 1600,
            max_bytes: 1 << 30,
        };
        let mut q = Quota::new(limits);
        let mut n = 0u32;
        let mut fill = |q: &mut Quota, host: u64, peers: usize, each: usize| -> usize {
            let mut kept = 0;
            for _ in 0..peers {
                let peer = PeerId::random();
                for _ in 0..each {
                    n += 1;
                    let key = RecordKey::new(&n.to_be_bytes());
                    if q.admits(&peer, (Some(host), false), &key, 10).is_ok() {
                        q.stored(peer, Some(host), key, 10);
                        kept += 1;
                    }
                }
            }
            kept
        };
        // Three heavy hosts, each under its quarter (400), bring peers past three quarters of
        // their room (1,125 of 1,500): from then on a host holding the most is refused, while
        // it is still under its own share, and a light host is served.
        assert_eq!(fill(&mut q, 1, 4, 95), 380);
        assert_eq!(fill(&mut q, 2, 4, 95), 380);
        assert_eq!(fill(&mut q, 3, 4, 95), 380);
        assert_eq!(fill(&mut q, 1, 1, 1), 0, "the heaviest is refused first");
        assert_eq!(fill(&mut q, 4, 1, 50), 50);
        // Many light hosts fill the rest of the peers' room, never the node's own sixteenth.
        let mut light = 0;
        for host in 10..400 {
            light += fill(&mut q, host, 1, 5);
        }
        assert!(light > 0);
        let total = 3 * 380 + 50 + light;
        assert_eq!(
            total,
            1600 - 1600 / OWN_RESERVE_DIVISOR,
            "peers fill their room only"
        );
    }
}
