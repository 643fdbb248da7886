//! Provider records (Kademlia ADD_PROVIDER / GET_PROVIDERS): which peers say they provide a key,
//! with their addresses and an expiry.
//!
//! The store is bounded per key, per provider and in all ([`ProviderLimits`]). A full store
//! refuses a new record; it never evicts a live record of another provider to make room (libp2p's
//! `MemoryStore` silently replaces a farther provider). A provider announcing a key again only
//! refreshes its own record. Records past their expiry make room for new ones and are dropped by
//! [`ProviderStore::remove_expired`]; an index by expiry finds them without a scan.
//!
//! With change tracking on, the store remembers which (key, provider) pairs changed, for a
//! persistence layer to write in batches (as [`crate::store::BoundedStore`] does for records).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::mem::size_of;
use std::time::Instant;

use libp2p::kad::{ProviderRecord, RecordKey};
use libp2p::{Multiaddr, PeerId};

use crate::config::{KAD_MAX_PACKET_SIZE, KAD_PACKET_OVERHEAD, MAX_ADDRS_PER_PEER, MAX_KEY_SIZE};
use crate::kad_wire::{MAX_ADDR_LEN, MAX_PEER_ID_LEN, MAX_PEERS_DECODED};

/// Providers kept for one key. A GET_PROVIDERS answer carries them all, so they must fit one kad
/// message beside the closer peers (checked below with [`MAX_PROVIDER_WIRE_BYTES`]).
pub const MAX_PROVIDERS_PER_KEY: usize = 64;
/// Provider records kept in all, over every key (as many as the record store's records).
pub const MAX_PROVIDER_RECORDS: usize = 65_536;
/// The share of the store one remote provider may hold at once (as for records: an eighth).
pub const PROVIDER_SHARE_DIVISOR: usize = 8;
/// Keys one remote peer may provide here at once, so that one identity cannot fill the store for
/// everyone. The node's own records are not counted against it.
pub const MAX_KEYS_PER_PROVIDER: usize = MAX_PROVIDER_RECORDS / PROVIDER_SHARE_DIVISOR;
/// Keys all the providers of one host (an IPv4 address, an IPv6 /64) may provide here at once:
/// a host running many identities gets one identity's share.
pub const MAX_KEYS_PER_HOST: usize = MAX_KEYS_PER_PROVIDER;
/// Providers of one host kept for one key: filling a key takes this many hosts over
/// [`MAX_PROVIDERS_PER_KEY`], not that many identities.
pub const MAX_PROVIDERS_PER_KEY_PER_HOST: usize = 4;
/// Providers of one address group (an IPv4 /16, an IPv6 /48) kept for one key: a handful of
/// hosts in one network cannot take a key's slots, whatever hosts they are.
pub const MAX_PROVIDERS_PER_KEY_PER_GROUP: usize = 8;
/// A key's last slots kept for providers of an address group it has none of yet: filling a key
/// takes this many more groups, and an honest provider in a network of its own finds room.
pub const DIVERSE_RESERVE_PER_KEY: usize = 16;
/// Bytes of addresses kept with one provider record (its first addresses that fit, at most
/// [`MAX_ADDRS_PER_PEER`]): room for eight ordinary addresses of 64 bytes, and for at least one of
/// the longest accepted.
pub const MAX_PROVIDER_ADDR_BYTES: usize = 512;
/// Protobuf framing of one length-delimited field below 16 KiB: one tag byte and two length bytes.
const FIELD_FRAMING: usize = 3;
/// The most bytes one provider takes in a GET_PROVIDERS answer: the peer field around its id and
/// its addresses, each in its own field.
pub const MAX_PROVIDER_WIRE_BYTES: usize = FIELD_FRAMING
    + FIELD_FRAMING
    + MAX_PEER_ID_LEN
    + MAX_ADDRS_PER_PEER * FIELD_FRAMING
    + MAX_PROVIDER_ADDR_BYTES;

// The limits must fit together: a key's providers all fit in one answer, in the room a record's
// value takes in a GET_VALUE answer (the closer peers and framing have KAD_PACKET_OVERHEAD)...
const _: () = assert!(
    MAX_PROVIDERS_PER_KEY * MAX_PROVIDER_WIRE_BYTES + MAX_KEY_SIZE + KAD_PACKET_OVERHEAD
        <= KAD_MAX_PACKET_SIZE
);
// ... and a peer reads every one of them.
const _: () = assert!(MAX_PROVIDERS_PER_KEY <= MAX_PEERS_DECODED);
// A field's length fits in the two bytes of framing counted.
const _: () = assert!(MAX_PROVIDER_ADDR_BYTES < 1 << 14 && MAX_PEER_ID_LEN < 1 << 14);
// The longest address accepted from the wire can be kept.
const _: () = assert!(MAX_PROVIDER_ADDR_BYTES >= MAX_ADDR_LEN);
const _: () = assert!(MAX_KEYS_PER_PROVIDER >= 1 && MAX_KEYS_PER_PROVIDER <= MAX_PROVIDER_RECORDS);
const _: () = assert!(MAX_PROVIDERS_PER_KEY <= MAX_PROVIDER_RECORDS);
const _: () = assert!(MAX_PROVIDERS_PER_KEY_PER_HOST * 4 <= MAX_PROVIDERS_PER_KEY);
const _: () = assert!(MAX_PROVIDERS_PER_KEY_PER_HOST <= MAX_PROVIDERS_PER_KEY_PER_GROUP);
const _: () =
    assert!(MAX_PROVIDERS_PER_KEY_PER_GROUP * 4 <= MAX_PROVIDERS_PER_KEY - DIVERSE_RESERVE_PER_KEY);

/// The address group of a host key (as `server::host_key` makes them: an IPv4 address in the
/// low 32 bits, tagged `4 << 32`, or an IPv6 /64 prefix): its IPv4 /16, or its IPv6 /48. Both
/// are the key without its low 16 bits.
pub fn group_of(host: u64) -> u64 {
    host & !0xffff
}

/// Memory one entry of the expiry index takes beyond its key and value (a B-tree node's share).
const INDEX_ENTRY_OVERHEAD: usize = 16;
/// Memory one address takes beyond its bytes: the shared allocation a `Multiaddr` points to.
const ADDR_OVERHEAD: usize = 2 * size_of::<usize>() + size_of::<Vec<u8>>();

/// Bounds of one [`ProviderStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderLimits {
    /// Providers kept for one key.
    pub per_key: usize,
    /// Keys one remote provider may provide here.
    pub per_provider: usize,
    /// Keys the providers of one host may provide here.
    pub per_host: usize,
    /// Providers of one host kept for one key.
    pub per_key_per_host: usize,
    /// Providers of one address group kept for one key.
    pub per_key_per_group: usize,
    /// A key's last slots, kept for providers of a group it has none of.
    pub diverse_reserve: usize,
    /// Provider records kept in all.
    pub total: usize,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        Self {
            per_key: MAX_PROVIDERS_PER_KEY,
            per_provider: MAX_KEYS_PER_PROVIDER,
            per_host: MAX_KEYS_PER_HOST,
            per_key_per_host: MAX_PROVIDERS_PER_KEY_PER_HOST,
            per_key_per_group: MAX_PROVIDERS_PER_KEY_PER_GROUP,
            diverse_reserve: DIVERSE_RESERVE_PER_KEY,
            total: MAX_PROVIDER_RECORDS,
        }
    }
}

/// What [`ProviderStore::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new provider of the key is kept.
    New,
    /// The provider's record was there already: its expiry (and addresses, if any were given)
    /// are the new ones.
    Refreshed,
}

/// Why a provider record was not kept. Nothing held was touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProviderRefusal {
    /// The record had expired already.
    #[error("the provider record has expired")]
    Expired,
    /// The key has its most providers, all live.
    #[error("the key has as many live providers as are kept")]
    KeyFull,
    /// The provider provides as many keys here as one provider may.
    #[error("the provider holds its share of the provider store already")]
    ProviderFull,
    /// The providers of the announcing host hold their share, of the key or of the store.
    #[error("the host's providers hold their share of the provider store already")]
    HostFull,
    /// The store holds its most records, all live.
    #[error("the provider store is full")]
    StoreFull,
}

/// One provider of a key.
#[derive(Debug, Clone)]
struct Slot {
    peer: PeerId,
    /// The host it announced from, when hosts are counted.
    host: Option<u64>,
    addrs: Vec<Multiaddr>,
    expires: Instant,
    /// Unique per record: its place in the expiry index.
    seq: u64,
}

/// Provider records, bounded per key, per provider and in all; see the module doc.
#[derive(Debug)]
pub struct ProviderStore {
    /// Each key's providers, in the order they first announced it.
    keys: HashMap<RecordKey, Vec<Slot>>,
    /// Every record by (expiry, seq): the earliest expiry first.
    expiry: BTreeMap<(Instant, u64), (RecordKey, PeerId)>,
    /// Keys each provider provides here.
    per_provider: HashMap<PeerId, usize>,
    /// Records announced from each host.
    per_host: HashMap<u64, usize>,
    /// This node: its own records are not counted against the per-provider share.
    local: PeerId,
    limits: ProviderLimits,
    len: usize,
    key_bytes: usize,
    addr_count: usize,
    addr_bytes: usize,
    next_seq: u64,
    changed: Option<HashSet<(RecordKey, PeerId)>>,
}

/// `addrs` within the bounds of one record: the first ones, duplicates and over-long ones left
/// out, at most [`MAX_ADDRS_PER_PEER`] and [`MAX_PROVIDER_ADDR_BYTES`] bytes in all.
pub fn bounded_addrs(addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    let mut kept: Vec<Multiaddr> = Vec::with_capacity(addrs.len().min(MAX_ADDRS_PER_PEER));
    let mut bytes = 0;
    for addr in addrs {
        if kept.len() >= MAX_ADDRS_PER_PEER {
            break;
        }
        let len = addr.len();
        if len > MAX_ADDR_LEN || bytes + len > MAX_PROVIDER_ADDR_BYTES || kept.contains(&addr) {
            continue;
        }
        bytes += len;
        kept.push(addr);
    }
    kept
}

fn addr_bytes(addrs: &[Multiaddr]) -> usize {
    addrs.iter().map(Multiaddr::len).sum()
}

fn record(key: &RecordKey, slot: &Slot) -> ProviderRecord {
    ProviderRecord {
        key: key.clone(),
        provider: slot.peer,
        expires: Some(slot.expires),
        addresses: slot.addrs.clone(),
    }
}

impl ProviderStore {
    /// An empty store for the node `local`, bounded by `limits`.
    pub fn new(local: PeerId, limits: ProviderLimits) -> Self {
        Self {
            keys: HashMap::new(),
            expiry: BTreeMap::new(),
            per_provider: HashMap::new(),
            per_host: HashMap::new(),
            local,
            limits,
            len: 0,
            key_bytes: 0,
            addr_count: 0,
            addr_bytes: 0,
            next_seq: 0,
            changed: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> ProviderLimits {
        self.limits
    }

    /// Keeps `provider` as a provider of `key` until `expires`, with its addresses (bounded by
    /// [`bounded_addrs`]).
    ///
    /// A provider already held for the key is refreshed: the new expiry, and the new addresses
    /// unless none are given. A new provider is refused when the key, the provider's share or the
    /// store is full of live records; expired records are dropped to make room first. A live
    /// record of another provider is never replaced.
    ///
    /// `host` is where the announcement came from (an IPv4 address or IPv6 /64 as a number),
    /// when hosts are counted: a host's providers share one provider's budget, and a few slots of
    /// each key. This node's own records are bounded by what it provides, not by these limits.
    pub fn add(
        &mut self,
        key: RecordKey,
        provider: PeerId,
        addrs: Vec<Multiaddr>,
        (expires, host): (Instant, Option<u64>),
        now: Instant,
    ) -> Result<Added, ProviderRefusal> {
        if expires <= now {
            return Err(ProviderRefusal::Expired);
        }
        let mut addrs = bounded_addrs(addrs);
        if self.refresh(&key, &provider, &mut addrs, expires) {
            self.mark(&key, &provider);
            return Ok(Added::Refreshed);
        }
        self.drop_expired_of(&key, now);
        let own = provider == self.local;
        let slots = self.keys.get(&key).map_or(&[][..], Vec::as_slice);
        if !own && slots.len() >= self.limits.per_key {
            return Err(ProviderRefusal::KeyFull);
        }
        if let Some(h) = host.filter(|_| !own) {
            let of_host = slots.iter().filter(|s| s.host == Some(h)).count();
            if of_host >= self.limits.per_key_per_host {
                return Err(ProviderRefusal::HostFull);
            }
            let group = group_of(h);
            let of_group = slots
                .iter()
                .filter(|s| s.host.map(group_of) == Some(group))
                .count();
            if of_group >= self.limits.per_key_per_group {
                return Err(ProviderRefusal::HostFull);
            }
            let open = self
                .limits
                .per_key
                .saturating_sub(self.limits.diverse_reserve);
            if of_group > 0 && slots.len() >= open {
                return Err(ProviderRefusal::KeyFull);
            }
            if self.per_host.get(&h).copied().unwrap_or(0) >= self.limits.per_host {
                self.remove_expired(now);
                if self.per_host.get(&h).copied().unwrap_or(0) >= self.limits.per_host {
                    return Err(ProviderRefusal::HostFull);
                }
            }
        }
        if provider != self.local && self.provided(&provider) >= self.limits.per_provider {
            self.remove_expired(now);
            if self.provided(&provider) >= self.limits.per_provider {
                return Err(ProviderRefusal::ProviderFull);
            }
        }
        if !own && self.len >= self.limits.total {
            self.remove_expired(now);
            if self.len >= self.limits.total {
                return Err(ProviderRefusal::StoreFull);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.expiry.insert((expires, seq), (key.clone(), provider));
        *self.per_provider.entry(provider).or_insert(0) += 1;
        if let Some(h) = host {
            *self.per_host.entry(h).or_insert(0) += 1;
        }
        self.len += 1;
        self.addr_count += addrs.len();
        self.addr_bytes += addr_bytes(&addrs);
        let slot = Slot {
            peer: provider,
            host,
            addrs,
            expires,
            seq,
        };
        match self.keys.entry(key.clone()) {
            Entry::Occupied(mut e) => e.get_mut().push(slot),
            Entry::Vacant(e) => {
                self.key_bytes += key.as_ref().len();
                e.insert(vec![slot]);
            }
        }
        self.mark(&key, &provider);
        Ok(Added::New)
    }

    /// Refreshes `provider`'s record of `key` if it is held (taking `addrs` unless empty);
    /// whether it was.
    fn refresh(
        &mut self,
        key: &RecordKey,
        provider: &PeerId,
        addrs: &mut Vec<Multiaddr>,
        expires: Instant,
    ) -> bool {
        let Some(slot) = self
            .keys
            .get_mut(key)
            .and_then(|slots| slots.iter_mut().find(|s| s.peer == *provider))
        else {
            return false;
        };
        if let Some(entry) = self.expiry.remove(&(slot.expires, slot.seq)) {
            self.expiry.insert((expires, slot.seq), entry);
        }
        slot.expires = expires;
        if !addrs.is_empty() {
            self.addr_count = self.addr_count - slot.addrs.len() + addrs.len();
            self.addr_bytes = self.addr_bytes - addr_bytes(&slot.addrs) + addr_bytes(addrs);
            slot.addrs = std::mem::take(addrs);
        }
        true
    }

    /// Keys `provider` provides here.
    fn provided(&self, provider: &PeerId) -> usize {
        self.per_provider.get(provider).copied().unwrap_or(0)
    }

    /// Drops the expired providers of `key` alone.
    fn drop_expired_of(&mut self, key: &RecordKey, now: Instant) {
        let expired: Vec<PeerId> = self.keys.get(key).map_or_else(Vec::new, |slots| {
            slots
                .iter()
                .filter(|s| s.expires <= now)
                .map(|s| s.peer)
                .collect()
        });
        for peer in expired {
            self.remove(key, &peer);
        }
    }

    /// The live providers of `key` at `now`, in the order they first announced it (oldest first;
    /// a refresh keeps a provider's place; records put back after a restart come in the order
    /// they were read).
    ///
    /// Diverse first: the first provider of each address group in the order the groups first
    /// announced, then each group's second, and so on (a provider of unknown host is a group of
    /// its own), so that an asker taking the first few meets as many networks as there are,
    /// not one crowd that announced early.
    pub fn providers(&self, key: &RecordKey, now: Instant) -> Vec<ProviderRecord> {
        let Some(slots) = self.keys.get(key) else {
            return Vec::new();
        };
        let live: Vec<&Slot> = slots.iter().filter(|s| s.expires > now).collect();
        let mut rank: Vec<(usize, usize, usize)> = Vec::with_capacity(live.len());
        let mut groups: Vec<(u64, usize)> = Vec::new();
        for (i, slot) in live.iter().enumerate() {
            let nth = match slot.host.map(group_of) {
                Some(g) => match groups.iter_mut().find(|(x, _)| *x == g) {
                    Some((_, n)) => {
                        *n += 1;
                        *n - 1
                    }
                    None => {
                        groups.push((g, 1));
                        0
                    }
                },
                None => 0,
            };
            rank.push((nth, i, i));
        }
        rank.sort_unstable();
        rank.into_iter()
            .map(|(_, _, i)| record(key, live[i]))
            .collect()
    }

    /// `provider`'s record of `key`, whatever its expiry.
    pub fn get(&self, key: &RecordKey, provider: &PeerId) -> Option<ProviderRecord> {
        self.keys
            .get(key)?
            .iter()
            .find(|s| s.peer == *provider)
            .map(|s| record(key, s))
    }

    /// Removes `provider`'s record of `key`; whether it was held.
    pub fn remove(&mut self, key: &RecordKey, provider: &PeerId) -> bool {
        let Some(slots) = self.keys.get_mut(key) else {
            return false;
        };
        let Some(i) = slots.iter().position(|s| s.peer == *provider) else {
            return false;
        };
        let slot = slots.remove(i);
        if slots.is_empty() {
            self.keys.remove(key);
            self.key_bytes -= key.as_ref().len();
        }
        self.expiry.remove(&(slot.expires, slot.seq));
        if let Entry::Occupied(mut e) = self.per_provider.entry(*provider) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        if let Some(h) = slot.host
            && let Entry::Occupied(mut e) = self.per_host.entry(h)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        self.len -= 1;
        self.addr_count -= slot.addrs.len();
        self.addr_bytes -= addr_bytes(&slot.addrs);
        self.mark(key, provider);
        true
    }

    /// Drops every record expired at `now` (its expiry reached); returns how many went.
    pub fn remove_expired(&mut self, now: Instant) -> usize {
        let mut gone = 0;
        while let Some(((expires, _), _)) = self.expiry.first_key_value()
            && *expires <= now
        {
            let Some((_, (key, peer))) = self.expiry.pop_first() else {
                break;
            };
            // The index entry is gone already; `remove` finds the record by its key.
            if self.remove(&key, &peer) {
                gone += 1;
            }
        }
        gone
    }

    /// The keys `provider` provides here (expired records not yet dropped included), in the
    /// order of their bytes. A scan of the whole store: for rare use, such as re-announcing this
    /// node's own keys after a restart.
    pub fn provided_by(&self, provider: &PeerId) -> Vec<RecordKey> {
        if self.provided(provider) == 0 {
            return Vec::new();
        }
        let mut keys: Vec<RecordKey> = self
            .keys
            .iter()
            .filter(|(_, slots)| slots.iter().any(|s| s.peer == *provider))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        keys
    }

    /// Every record held (expired ones not yet dropped included), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = ProviderRecord> + '_ {
        self.keys
            .iter()
            .flat_map(|(key, slots)| slots.iter().map(move |s| record(key, s)))
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys with at least one provider.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// An estimate of the memory the store takes on the heap, in bytes (allocator and hash-table
    /// slack left out).
    pub fn heap_bytes(&self) -> usize {
        let per_key = size_of::<RecordKey>() + size_of::<Vec<Slot>>();
        let per_record = size_of::<Slot>()
            + size_of::<((Instant, u64), (RecordKey, PeerId))>()
            + INDEX_ENTRY_OVERHEAD;
        let per_provider = size_of::<PeerId>() + size_of::<usize>();
        self.keys.len() * per_key
            + self.key_bytes
            + self.len * per_record
            + self.addr_count * (size_of::<Multiaddr>() + ADDR_OVERHEAD)
            + self.addr_bytes
            + self.per_provider.len() * per_provider
    }

    /// Starts remembering changed (key, provider) pairs (for persistence).
    pub fn track_changes(&mut self) {
        self.changed.get_or_insert_with(HashSet::new);
    }

    /// Takes at most `max` changed pairs; empty when tracking is off. A pair's current state is
    /// whatever [`ProviderStore::get`] returns now: present means written, absent means removed.
    pub fn take_changes_within(&mut self, max: usize) -> Vec<(RecordKey, PeerId)> {
        let Some(changed) = self.changed.as_mut() else {
            return Vec::new();
        };
        let taken: Vec<(RecordKey, PeerId)> = changed.iter().take(max).cloned().collect();
        for pair in &taken {
            changed.remove(pair);
        }
        taken
    }

    /// Marks `pairs` as changed again (a write of them failed and must be retried).
    pub fn mark_changed(&mut self, pairs: impl IntoIterator<Item = (RecordKey, PeerId)>) {
        if let Some(changed) = self.changed.as_mut() {
            changed.extend(pairs);
        }
    }

    /// Pairs changed and not yet taken.
    pub fn pending_changes(&self) -> usize {
        self.changed.as_ref().map_or(0, HashSet::len)
    }

    fn mark(&mut self, key: &RecordKey, provider: &PeerId) {
        if let Some(changed) = self.changed.as_mut() {
            changed.insert((key.clone(), *provider));
        }
    }
}

#[cfg(test)]
mod tests;
