//! The records a node keeps, and the one admission policy every copy goes through: this node's own
//! stores, inbound PUT_VALUEs (a peer's store, a holder's re-store or hand-off) and cached copies.
//!
//! The rules, in the order they are checked:
//! 1. The record must be valid: a content key is the SHA-256 of its value ([`validate_record`]).
//! 2. A copy from a peer lives at most one TTL from now (a peer cannot make us keep a record
//!    longer), a cached copy at most a TTL / [`CACHE_TTL_DIVISOR`], and never longer than the
//!    copy it came from.
//! 3. This node's own published copy is never replaced nor shortened by a copy from elsewhere.
//! 4. A held record's life is never shortened by a peer: a copy with an earlier expiry leaves the
//!    held one as it is (and is acknowledged: the node does hold the record).
//! 5. A free (non-content) key's value is replaced only by the peer that stored it first, or by
//!    this node's own store; anyone else is refused, so no peer can overwrite what others wrote.
//!    Its life is renewed only by that peer or the publisher its copies name: an unchanged
//!    replay by anyone else is acknowledged and extends nothing.
//!    A key under a validated namespace (`/pk/`, `/ipns/`) must pass its validator (rule 1), and
//!    its signed record is replaced only by a better one, whoever sends it (an IPNS record by a
//!    higher sequence, then a later end of life: [`select`]); a worse one is refused. An IPNS
//!    copy never lives past its record's end of life.
//! 6. A new key counts against the sending peer's share and its host's, in records and bytes,
//!    and peers together never take the sixteenth kept for this node's own records
//!    ([`quota`]); a re-store of a held key adds nothing. A mirror node, which keeps
//!    everything its named feeders hand it, has no quota.
//! 7. A full store refuses; it never evicts a living record to make room.
//!
//! Provider records (ADD_PROVIDER) are kept apart, in a [`ProviderStore`]: each lives one
//! provider TTL from its last announcement, and a full key or store refuses a new provider rather
//! than evict one.

pub mod quota;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dht_behaviours::Timing;
use dht_behaviours::providers::{Added, ProviderLimits, ProviderRefusal, ProviderStore};
use dht_behaviours::store::{BoundedStore, StoreLimits, is_own};
use dht_behaviours::validation::{RecordError, is_content_key, is_namespaced, validate_record};
use dht_behaviours::validators::{Namespace, ipns, pk, select};
use libp2p::Multiaddr;
use libp2p::PeerId;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{ProviderRecord, Record, RecordKey};

use super::config::Clock;
use super::rate::{RateLimits, peer_key};
use quota::{Over, Quota};

/// A cached copy lives this many times shorter than a stored one.
pub const CACHE_TTL_DIVISOR: u32 = 8;
/// Signed records (`/pk/`, `/ipns/`) one peer may have checked per second, sustained: a check
/// of an RSA-4096 signature costs about 0.1 ms, so a peer gets at most 2 % of a core.
pub const VERIFY_RATE_PER_PEER: u32 = 200;
/// Signed records one peer may have checked in a burst (a republish of many names at once).
pub const VERIFY_BURST_PER_PEER: u32 = 400;
/// Signed records one host may have checked per second, whatever identities it runs.
pub const VERIFY_RATE_PER_HOST: u32 = 4 * VERIFY_RATE_PER_PEER;
/// Signed records one host may have checked in a burst.
pub const VERIFY_BURST_PER_HOST: u32 = 4 * VERIFY_BURST_PER_PEER;
/// Peers and hosts whose verifications are budgeted at once: as many as the connections a node
/// keeps.
pub const MAX_VERIFY_BUDGETS: usize = dht_behaviours::config::MAX_ESTABLISHED as usize;

/// Where a copy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This node's own store: the published copy, kept without expiry while the node runs.
    Own,
    /// A PUT_VALUE from a peer.
    Peer(PeerId),
    /// A mirror push from one of this mirror's named feeders: kept like a peer's copy, outside
    /// the shares (the operator chose to keep everything it sends, up to the store's bounds).
    Feeder(PeerId),
    /// A value this node fetched and keeps as a cache.
    Cache,
}

/// What the node knows of a peer that sends a copy, beyond its id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sender {
    /// Its host ([`super::budget::host_key`]; `None`: unknown, or loopback in a local network),
    /// whose shares bound it too.
    pub host: Option<u64>,
    /// A fellow holder: it and this node are both among the k closest to the key this node
    /// knows, so its copy (a re-store, a hand-off) is this node's duty and may take the room
    /// kept for the node's own records.
    pub holder: bool,
}

/// What admission did with a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// A new key is held now.
    New,
    /// The held record was updated (a longer life, or its owner's new value).
    Updated,
    /// The node already held the record at least as long: nothing changed.
    Held,
}

/// Why a copy was refused. Nothing is acknowledged for a refused copy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The record itself is wrong (the sender may be lying).
    #[error("invalid record: {0}")]
    Invalid(#[from] RecordError),
    /// The record had expired already.
    #[error("the record has expired")]
    Expired,
    /// A free key held for another peer; only that peer may replace its value.
    #[error("the key holds another peer's value")]
    Conflict,
    /// The sender, or its host, has had as many signed records checked as it may for now.
    #[error("too many signed records to check from this sender; try again shortly")]
    Busy,
    /// The sender, or its host, holds its share of the store already.
    #[error("the sender's share of the store (its own or its host's) is used up")]
    Quota,
    /// The store is full.
    #[error("the store is full")]
    Full,
    /// The closest nodes hold a better version of this signed record (a newer IPNS record).
    #[error("the network holds a newer version of this record")]
    Superseded,
    /// An Amino-mode node keeps only records of a validated namespace.
    #[error("only /pk/ and /ipns/ records are kept in Amino mode")]
    OutsideAmino,
}

/// The record store with its admission policy and per-peer accounts.
pub struct Records {
    local: PeerId,
    store: BoundedStore,
    quota: Quota,
    ttl: Duration,
    /// Provider records, apart from the records.
    providers: ProviderStore,
    /// How long a provider record lives after its last announcement.
    provider_ttl: Duration,
    /// When a peer last stored each key here (the replication round skips those a peer has just
    /// re-stored).
    received: HashMap<RecordKey, Instant>,
    /// Amino mode: only `/pk/` and `/ipns/` records are kept.
    amino: bool,
    /// The wall clock, for the validity of signed records.
    clock: Clock,
    /// Signed records whose signature was checked (a replay of one held is not).
    verifications: u64,
    /// Each peer's and each host's budget of signature checks.
    verify_budget: (RateLimits<u64>, RateLimits<u64>),
}

impl Records {
    /// An empty store for `local`, bounded by `limits` (provider records by their own constants);
    /// with `timing`'s lives: copies from peers live at most the record TTL, a record counts as
    /// gone its expiry margin before its expiry, a provider record lives one provider TTL. `clock`
    /// tells the wall-clock time (signed records' validity).
    pub fn new(local: PeerId, limits: StoreLimits, timing: &Timing, clock: Clock) -> Self {
        Self {
            local,
            store: BoundedStore::new(limits).with_expiry_margin(timing.expiry_margin()),
            quota: Quota::new(limits),
            ttl: timing.record_ttl,
            providers: ProviderStore::new(local, ProviderLimits::default()),
            provider_ttl: timing.provider_ttl,
            received: HashMap::new(),
            amino: false,
            clock,
            verifications: 0,
            verify_budget: (
                RateLimits::new(
                    VERIFY_RATE_PER_PEER,
                    VERIFY_BURST_PER_PEER,
                    MAX_VERIFY_BUDGETS,
                ),
                RateLimits::new(
                    VERIFY_RATE_PER_HOST,
                    VERIFY_BURST_PER_HOST,
                    MAX_VERIFY_BUDGETS,
                ),
            ),
        }
    }

    /// The clocks the store started at.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The wall-clock time at `now`.
    pub fn wall(&self, now: Instant) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.clock.unix_ms_at(now))
    }

    /// Signature checks made so far (replays of a held record make none).
    pub fn verifications(&self) -> u64 {
        self.verifications
    }

    /// Whether a living copy of `record`, byte for byte, is held: it passed every check when it
    /// came first, so a replay is judged without hashing or verifying it again.
    fn holds_identical(&self, record: &Record, now: Instant) -> bool {
        self.store
            .get_any(&record.key)
            .is_some_and(|held| held.expires.is_none_or(|e| e > now) && held.value == record.value)
    }

    /// Checks a namespaced record against its validator; for an IPNS record, the moment its end
    /// of life comes on the monotonic clock.
    fn validate_namespaced(
        &mut self,
        record: &Record,
        now: Instant,
    ) -> Result<Option<Instant>, RecordError> {
        let wall = self.wall(now);
        if Namespace::of(record.key.as_ref()).is_some() {
            self.verifications += 1;
        }
        match Namespace::of(record.key.as_ref()) {
            Some((Namespace::Ipns, name)) => {
                let valid = ipns::validate(name, &record.value, wall)?;
                let left = valid.eol.duration_since(wall).unwrap_or_default();
                Ok(Some(now + left))
            }
            Some((Namespace::Pk, name)) => pk::validate(name, &record.value)
                .map(|_| None)
                .map_err(Into::into),
            None => Ok(None),
        }
    }

    /// Takes one signature check from `peer`'s budget and its host's.
    fn charge_verification(
        &mut self,
        peer: &PeerId,
        host: Option<u64>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let (peers, hosts) = &mut self.verify_budget;
        if !peers.take(&peer_key(peer), now) {
            return Err(Refusal::Busy);
        }
        if let Some(h) = host
            && !hosts.take(&h, now)
        {
            return Err(Refusal::Busy);
        }
        Ok(())
    }

    /// The end of life of a copy identical to a held record, read without a signature check.
    fn end_of_life_of_held(
        &self,
        record: &Record,
        now: Instant,
    ) -> Result<Option<Instant>, Refusal> {
        if !matches!(
            Namespace::of(record.key.as_ref()),
            Some((Namespace::Ipns, _))
        ) {
            return Ok(None);
        }
        let wall = self.wall(now);
        match ipns::end_of_life_unchecked(&record.value) {
            Some(eol) if eol > wall => Ok(Some(now + eol.duration_since(wall).unwrap_or_default())),
            _ => Err(Refusal::Expired),
        }
    }

    /// The same store for an Amino-mode node: only `/pk/` and `/ipns/` records are kept.
    pub fn for_amino(mut self, amino: bool) -> Self {
        self.amino = amino;
        self
    }

    /// The record under `key`, if it lives at `now`.
    pub fn get(&self, key: &RecordKey, now: Instant) -> Option<&Record> {
        self.store.get_at(key, now)
    }

    /// Records held and living at `now`.
    pub fn live(&self, now: Instant) -> impl Iterator<Item = &Record> + '_ {
        self.store.records_at(now)
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.store.bytes()
    }

    /// Takes back a record read from the data directory. A signed one is checked again: its end of
    /// life may have passed while the node was down, and it lives no longer than that.
    pub fn restore(&mut self, mut record: Record, now: Instant) -> Result<(), Refusal> {
        if self.amino && Namespace::of(record.key.as_ref()).is_none() {
            return Err(Refusal::OutsideAmino);
        }
        if let Some(eol) = self.validate_namespaced(&record, now)? {
            record.expires = Some(record.expires.map_or(eol, |e| e.min(eol)));
        }
        self.store.put(record).map_err(|_| Refusal::Full)
    }

    /// The store, for the driver's persistence (change tracking) and status.
    pub fn store_mut(&mut self) -> &mut BoundedStore {
        &mut self.store
    }

    /// Whether a peer stored `key` here after `since` (`None`: ever).
    pub fn received_since(&self, key: &RecordKey, since: Option<Instant>) -> bool {
        self.received
            .get(key)
            .is_some_and(|at| since.is_none_or(|s| *at > s))
    }

    /// The one admission function: keeps `record` from `source`, or says why not (module doc).
    pub fn admit(
        &mut self,
        source: Source,
        record: Record,
        now: Instant,
    ) -> Result<Admitted, Refusal> {
        self.admit_from(source, Sender::default(), record, now)
    }

    /// [`Records::admit`] for a copy from a peer the node knows more of (`sender`).
    pub fn admit_from(
        &mut self,
        source: Source,
        sender: Sender,
        record: Record,
        now: Instant,
    ) -> Result<Admitted, Refusal> {
        let key = record.key.clone();
        let admitted = self.decide(source, sender, record, now);
        if admitted.is_ok() && matches!(source, Source::Peer(_) | Source::Feeder(_)) {
            self.received.insert(key, now);
        }
        admitted
    }

    fn decide(
        &mut self,
        source: Source,
        sender: Sender,
        mut record: Record,
        now: Instant,
    ) -> Result<Admitted, Refusal> {
        if self.amino && Namespace::of(record.key.as_ref()).is_none() {
            return Err(Refusal::OutsideAmino);
        }
        let end_of_life = if self.holds_identical(&record, now) {
            self.end_of_life_of_held(&record, now)?
        } else {
            validate_record(record.key.as_ref(), &record.value)?;
            if let Source::Peer(peer) = source
                && is_namespaced(record.key.as_ref())
            {
                self.charge_verification(&peer, sender.host, now)?;
            }
            self.validate_namespaced(&record, now)?
        };
        self.stamp_life(source, &mut record, end_of_life, now);
        if record.expires.is_some_and(|e| e <= now) {
            return Err(Refusal::Expired);
        }
        let bytes = record.key.as_ref().len() + record.value.len();
        if let Some(admitted) = self.against_held(source, &mut record, now)? {
            return Ok(admitted);
        }
        let new = self.store.get_any(&record.key).is_none();
        if let Source::Peer(peer) = source
            && new
        {
            let within = (sender.host, sender.holder);
            match self.quota.admits(&peer, within, &record.key, bytes) {
                Ok(()) => {}
                Err(Over::Peer | Over::Host) => return Err(Refusal::Quota),
                Err(Over::Room) => return Err(Refusal::Full),
            }
        }
        let key = record.key.clone();
        self.store.put(record).map_err(|_| Refusal::Full)?;
        if let Source::Peer(peer) = source {
            self.quota.stored(peer, sender.host, key, bytes);
        }
        Ok(if new {
            Admitted::New
        } else {
            Admitted::Updated
        })
    }

    /// The life a record gets here from `source`: our own lives until we stop publishing it,
    /// a peer's or a feeder's at most the TTL, a cached one a fraction of it; none outlives its
    /// signed end of life.
    fn stamp_life(
        &self,
        source: Source,
        record: &mut Record,
        end_of_life: Option<Instant>,
        now: Instant,
    ) {
        match source {
            Source::Own => {
                record.publisher = Some(self.local);
                record.expires = None;
            }
            Source::Peer(_) | Source::Feeder(_) => {
                let cap = now + self.ttl;
                record.expires = Some(record.expires.map_or(cap, |e| e.min(cap)));
            }
            Source::Cache => {
                let cap = now + self.ttl / CACHE_TTL_DIVISOR;
                record.expires = Some(record.expires.map_or(cap, |e| e.min(cap)));
            }
        }
        if let Some(eol) = end_of_life {
            record.expires = Some(record.expires.map_or(eol, |e| e.min(eol)));
        }
    }

    /// `record` from `source` against the live copy held under its key, if any: refused (a
    /// conflict), the held copy kept as it is (`Some(Held)`: nothing to store), or `None`: to be
    /// stored (taking the held copy's publisher when it only renews it).
    fn against_held(
        &self,
        source: Source,
        record: &mut Record,
        now: Instant,
    ) -> Result<Option<Admitted>, Refusal> {
        if let Some(held) = self.store.get_any(&record.key) {
            let held_lives = held.expires.is_none_or(|e| e > now);
            if held_lives {
                let same = held.value == record.value;
                let key = record.key.as_ref();
                // A signed record's better version replaces even this node's own copy.
                if source != Source::Own
                    && is_own(held, &self.local)
                    && (same || !is_namespaced(key))
                {
                    return Ok(Some(Admitted::Held));
                }
                if !same && is_namespaced(key) {
                    // Signed: the better record wins, whoever brings it.
                    if select(key, &record.value, &held.value) != Ordering::Greater {
                        return Err(Refusal::Conflict);
                    }
                } else if !same && !is_content_key(key) {
                    let owner = match source {
                        Source::Own => true,
                        Source::Peer(p) | Source::Feeder(p) => {
                            self.quota.origin(&record.key) == Some(&p)
                        }
                        Source::Cache => false,
                    };
                    if !owner {
                        return Err(Refusal::Conflict);
                    }
                } else if same && source != Source::Own {
                    // A free key's life is the publisher's to renew: its first writer here, or
                    // the publisher its copies name. A replay by anyone else is acknowledged
                    // (the copy is held) and changes nothing, so a departed publisher's value
                    // ends with its last renewal.
                    if !is_content_key(key)
                        && !is_namespaced(key)
                        && let Source::Peer(p) = source
                        && self.quota.origin(&record.key) != Some(&p)
                        && held.publisher != Some(p)
                    {
                        return Ok(Some(Admitted::Held));
                    }
                    // Never shorten: keep whichever copy lives longer.
                    let longer = match (held.expires, record.expires) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(a), Some(b)) => b > a,
                    };
                    if !longer {
                        return Ok(Some(Admitted::Held));
                    }
                    record.publisher = held.publisher;
                }
            }
        }
        Ok(None)
    }

    /// Keeps `provider` as a provider of `key` for one provider TTL from `now`, or refreshes its
    /// record (a new expiry, and the new addresses unless none are given). A new provider is
    /// refused when its key, its share or the store is full of live records: none is evicted.
    pub fn add_provider(
        &mut self,
        key: RecordKey,
        provider: PeerId,
        addresses: Vec<Multiaddr>,
        host: Option<u64>,
        now: Instant,
    ) -> Result<Added, ProviderRefusal> {
        let expires = now + self.provider_ttl;
        self.providers
            .add(key, provider, addresses, (expires, host), now)
    }

    /// Puts back a provider record read from the data directory, with the expiry it had (never
    /// more than one provider TTL from `now`).
    pub fn restore_provider(
        &mut self,
        record: ProviderRecord,
        now: Instant,
    ) -> Result<Added, ProviderRefusal> {
        let cap = now + self.provider_ttl;
        let expires = record.expires.map_or(cap, |e| e.min(cap));
        let ProviderRecord {
            key,
            provider,
            addresses,
            ..
        } = record;
        self.providers
            .add(key, provider, addresses, (expires, None), now)
    }

    /// The providers of `key` living at `now`, in the order they first announced it.
    pub fn providers(
        &self,
        key: &RecordKey,
        now: Instant,
    ) -> impl Iterator<Item = ProviderRecord> + '_ {
        self.providers.providers(key, now).into_iter()
    }

    /// The keys `provider` provides here (this node's own, to announce them again after a
    /// restart), in the order of their bytes.
    pub fn provided_by(&self, provider: &PeerId) -> Vec<RecordKey> {
        self.providers.provided_by(provider)
    }

    /// Provider records held.
    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    /// The provider store, for the driver's persistence (change tracking) and status.
    pub fn providers_mut(&mut self) -> &mut ProviderStore {
        &mut self.providers
    }

    /// Removes every record and provider record expired at `now`; returns how many went.
    pub fn sweep(&mut self, now: Instant) -> usize {
        // Idle verification budgets are as good as none.
        self.verify_budget.0.prune(now);
        self.verify_budget.1.prune(now);
        let providers_gone = self.providers.remove_expired(now);
        let gone = self.store.remove_expired(now);
        if gone > 0 {
            let store = &self.store;
            self.quota.sweep(|k| store.get_any(k).is_some());
            self.received.retain(|k, _| store.get_any(k).is_some());
        }
        gone + providers_gone
    }
}

#[cfg(test)]
mod tests;
