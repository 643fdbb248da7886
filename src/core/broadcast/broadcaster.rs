//! The broadcast state machine (the dissemination is described in
//! [`dht_behaviours::broadcast`]): which message ids were seen and up to which height, what a
//! received message calls for, which peers of which buckets a message goes to, and the hand-offs
//! in flight to be retried within their bucket. No I/O; randomness from the caller's source.
//!
//! What a node takes, cheapest check first: a message within its age ([`MAX_BROADCAST_AGE`],
//! [`MAX_CLOCK_SKEW`]); not already covered; from a forwarder within its rate ([`FORWARDER_RATE`], a duplicate costing a fraction);
//! signed by its origin (a forged one blocks the forwarder: an honest node forwards only what it
//! verified); an origin within its share of the seen cache ([`MAX_BROADCASTS_PER_ORIGIN`]); room
//! in the seen cache. A full cache refuses rather than forgets, and every id is remembered for
//! longer than its message is acceptable, so no flood can make a node deliver a message twice.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use dht_behaviours::broadcast::{Ack, BroadcastMessage, MessageId, NONCE_LEN, SignatureError};
use dht_behaviours::config::{
    BROADCAST_MAX_RETRIES, BROADCAST_REDUNDANCY, DUPLICATE_HANDOFF_COST, FORWARDER_BURST,
    FORWARDER_RATE, MAX_BROADCAST_AGE, MAX_BROADCASTS_PER_ORIGIN, MAX_CLOCK_SKEW, MAX_FORWARDERS,
    SEEN_CACHE_CAPACITY, SEEN_CACHE_TTL,
};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use rand::Rng;
use rand::seq::SliceRandom;

use super::super::rate::{RateLimits, peer_key};

pub use super::super::events::HandoffId;

/// Why a message was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastRefusal {
    /// The forwarder is over its rate.
    #[error("the forwarder is over its rate")]
    ForwarderRate,
    /// Older than [`MAX_BROADCAST_AGE`] by its origin's clock.
    #[error("the message is too old")]
    Stale,
    /// Further ahead than [`MAX_CLOCK_SKEW`].
    #[error("the message is from the future")]
    Future,
    /// Not signed by its origin.
    #[error("{0}")]
    Forged(SignatureError),
    /// Its origin already has [`MAX_BROADCASTS_PER_ORIGIN`] messages remembered.
    #[error("the origin sent {MAX_BROADCASTS_PER_ORIGIN} messages within {} s; try later", SEEN_CACHE_TTL.as_secs())]
    OriginRate,
    /// The seen cache is full of messages still acceptable.
    #[error("the seen cache is full")]
    Full,
}

/// Message ids seen lately, each with the highest height already forwarded and its origin;
/// bounded in size, per origin and in age.
#[derive(Debug)]
pub struct SeenCache {
    entries: HashMap<MessageId, (u16, PeerId)>,
    per_origin: HashMap<PeerId, usize>,
    order: VecDeque<(MessageId, Instant)>,
    capacity: usize,
    origin_share: usize,
    ttl: Duration,
}

impl SeenCache {
    /// An empty cache of `capacity` ids, at most `origin_share` of one origin, each kept `ttl`.
    pub fn new(capacity: usize, origin_share: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            per_origin: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            origin_share,
            ttl,
        }
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((id, at)) = self.order.front().copied() {
            if now.saturating_duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            if let Some((_, origin)) = self.entries.remove(&id)
                && let Some(n) = self.per_origin.get_mut(&origin)
            {
                *n -= 1;
                if *n == 0 {
                    self.per_origin.remove(&origin);
                }
            }
        }
    }

    /// The height `id` is covered to, if it was seen.
    fn height(&mut self, id: &MessageId, now: Instant) -> Option<u16> {
        self.expire(now);
        self.entries.get(id).map(|(h, _)| *h)
    }

    /// Remembers a new id, if its origin and the cache have room.
    fn insert(
        &mut self,
        id: MessageId,
        origin: PeerId,
        height: u16,
        now: Instant,
    ) -> Result<(), BroadcastRefusal> {
        self.expire(now);
        if self.per_origin.get(&origin).copied().unwrap_or(0) >= self.origin_share {
            return Err(BroadcastRefusal::OriginRate);
        }
        if self.entries.len() >= self.capacity {
            return Err(BroadcastRefusal::Full);
        }
        self.entries.insert(id, (height, origin));
        *self.per_origin.entry(origin).or_insert(0) += 1;
        self.order.push_back((id, now));
        Ok(())
    }

    /// Raises a seen id's height.
    fn raise(&mut self, id: &MessageId, height: u16) {
        if let Some((h, _)) = self.entries.get_mut(id) {
            *h = (*h).max(height);
        }
    }
}

/// What to do with a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Hand the payload to the application (only the first time).
    pub deliver: bool,
    /// Forward to the buckets in this range of indices.
    pub forward: Option<(u16, u16)>,
    /// What to answer the sender.
    pub ack: Ack,
    /// Why it was refused, when it was.
    pub refusal: Option<BroadcastRefusal>,
}

impl Receipt {
    fn refused(refusal: BroadcastRefusal) -> Self {
        Self {
            deliver: false,
            forward: None,
            ack: Ack::Refused,
            refusal: Some(refusal),
        }
    }

    fn busy() -> Self {
        Self {
            ack: Ack::Busy,
            ..Self::refused(BroadcastRefusal::ForwarderRate)
        }
    }

    fn duplicate() -> Self {
        Self {
            deliver: false,
            forward: None,
            ack: Ack::Duplicate,
            refusal: None,
        }
    }
}

/// A hand-off in flight, kept so that a failure can be retried within the same bucket.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// The message as sent (its height is the bucket index).
    pub message: BroadcastMessage,
    /// Peers of that bucket tried so far.
    pub tried: Vec<PeerId>,
}

/// Peers of one routing-table bucket, by bucket index (log2 of the XOR distance).
#[derive(Debug, Clone)]
pub struct Bucket {
    /// log2 of the distance of its peers.
    pub index: u16,
    /// Its peers.
    pub peers: Vec<PeerId>,
}

/// The protocol state of broadcast, free of any I/O.
#[derive(Debug)]
pub struct Broadcaster {
    local: PeerId,
    seen: SeenCache,
    forwarders: RateLimits<u64>,
    handoffs: HashMap<HandoffId, Handoff>,
}

impl Broadcaster {
    /// Broadcast state for the node `local`, with the limits of [`dht_behaviours::config`].
    pub fn new(local: PeerId) -> Self {
        Self::with_cache(
            local,
            SeenCache::new(
                SEEN_CACHE_CAPACITY,
                MAX_BROADCASTS_PER_ORIGIN,
                SEEN_CACHE_TTL,
            ),
        )
    }

    /// Broadcast state with its own seen cache (tests of its bounds).
    pub fn with_cache(local: PeerId, seen: SeenCache) -> Self {
        Self {
            local,
            seen,
            forwarders: RateLimits::new(FORWARDER_RATE, FORWARDER_BURST, MAX_FORWARDERS),
            handoffs: HashMap::new(),
        }
    }

    /// Message ids remembered now.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Forgets forwarders idle long enough to have their whole burst again.
    pub fn prune(&mut self, now: Instant) {
        self.forwarders.prune(now);
    }

    /// Hand-offs awaiting an answer.
    pub fn in_flight(&self) -> usize {
        self.handoffs.len()
    }

    /// A new message from this node, signed at `unix_ms`, already marked seen so it is never
    /// delivered back here. Refused when this node is over its own share of the seen cache (as
    /// every other node would refuse it).
    pub fn originate(
        &mut self,
        identity: &Keypair,
        payload: Vec<u8>,
        nonce: [u8; NONCE_LEN],
        unix_ms: u64,
        now: Instant,
    ) -> Result<BroadcastMessage, BroadcastRefusal> {
        let message = BroadcastMessage::originate(identity, unix_ms, nonce, payload)
            .map_err(BroadcastRefusal::Forged)?;
        self.seen
            .insert(message.id, self.local, message.height, now)?;
        Ok(message)
    }

    /// Decides what a message handed to us by `from` calls for, at `now` (`unix_ms` on the wall
    /// clock).
    pub fn receive(
        &mut self,
        from: &PeerId,
        message: &BroadcastMessage,
        now: Instant,
        unix_ms: u64,
    ) -> Receipt {
        let age_ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if message.time_ms.saturating_add(age_ms(MAX_BROADCAST_AGE)) < unix_ms {
            return Receipt::refused(BroadcastRefusal::Stale);
        }
        if message.time_ms > unix_ms.saturating_add(age_ms(MAX_CLOCK_SKEW)) {
            return Receipt::refused(BroadcastRefusal::Future);
        }
        let before = self.seen.height(&message.id, now);
        if before.is_some_and(|h| h >= message.height) {
            if !self
                .forwarders
                .charge(&peer_key(from), DUPLICATE_HANDOFF_COST, now)
            {
                return Receipt::busy();
            }
            return Receipt::duplicate();
        }
        if !self.forwarders.take(&peer_key(from), now) {
            return Receipt::busy();
        }
        // Only what is acted on pays for a signature check; a message in our own name that we
        // do not remember is checked too (ours from before a restart, or a forgery).
        if let Err(e) = message.verify() {
            return Receipt::refused(BroadcastRefusal::Forged(e));
        }
        if message.origin == self.local {
            return Receipt::duplicate();
        }
        match before {
            None => {
                if let Err(refusal) =
                    self.seen
                        .insert(message.id, message.origin, message.height, now)
                {
                    return Receipt::refused(refusal);
                }
                Receipt {
                    deliver: true,
                    forward: (message.height > 0).then_some((0, message.height)),
                    ack: Ack::Accepted,
                    refusal: None,
                }
            }
            Some(before) => {
                self.seen.raise(&message.id, message.height);
                Receipt {
                    deliver: false,
                    forward: Some((before, message.height)),
                    ack: Ack::Accepted,
                    refusal: None,
                }
            }
        }
    }

    /// Chooses the hand-offs for buckets `from..to`: up to [`BROADCAST_REDUNDANCY`] random peers
    /// of each, never the message's origin.
    pub fn plan(
        &self,
        message: &BroadcastMessage,
        buckets: &[Bucket],
        from: u16,
        to: u16,
        rng: &mut impl Rng,
    ) -> Vec<(PeerId, BroadcastMessage)> {
        let mut out = Vec::new();
        for bucket in buckets.iter().filter(|b| b.index >= from && b.index < to) {
            let mut peers: Vec<PeerId> = bucket
                .peers
                .iter()
                .copied()
                .filter(|p| *p != message.origin && *p != self.local)
                .collect();
            peers.shuffle(rng);
            for peer in peers.into_iter().take(BROADCAST_REDUNDANCY) {
                out.push((peer, message.with_height(bucket.index)));
            }
        }
        out
    }

    /// Remembers a hand-off that was sent.
    pub fn sent(&mut self, id: HandoffId, handoff: Handoff) {
        self.handoffs.insert(id, handoff);
    }

    /// A hand-off was answered.
    pub fn answered(&mut self, id: &HandoffId) {
        self.handoffs.remove(id);
    }

    /// A hand-off failed: returns another peer of the same bucket to try, if any remain.
    pub fn failed(
        &mut self,
        id: &HandoffId,
        buckets: &[Bucket],
        rng: &mut impl Rng,
    ) -> Option<(PeerId, Handoff)> {
        let mut handoff = self.handoffs.remove(id)?;
        if handoff.tried.len() > BROADCAST_MAX_RETRIES {
            return None;
        }
        let bucket = buckets.iter().find(|b| b.index == handoff.message.height)?;
        let mut candidates: Vec<PeerId> = bucket
            .peers
            .iter()
            .copied()
            .filter(|p| {
                *p != handoff.message.origin && *p != self.local && !handoff.tried.contains(p)
            })
            .collect();
        candidates.shuffle(rng);
        let next = candidates.into_iter().next()?;
        handoff.tried.push(next);
        Some((next, handoff))
    }
}

#[cfg(test)]
mod tests {
    use dht_behaviours::broadcast::FULL_HEIGHT;
    use rand::SeedableRng;

    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn signed(key: &Keypair, time_ms: u64, nonce: u8) -> BroadcastMessage {
        BroadcastMessage::originate(key, time_ms, [nonce; NONCE_LEN], b"hi".to_vec())
            .expect("ed25519 signs")
    }

    fn msg(height: u16) -> BroadcastMessage {
        signed(&Keypair::generate_ed25519(), T0, 1).with_height(height)
    }

    fn receipt(deliver: bool, forward: Option<(u16, u16)>, ack: Ack) -> Receipt {
        Receipt {
            deliver,
            forward,
            ack,
            refusal: None,
        }
    }

    #[test]
    fn first_copy_is_delivered_and_duplicates_are_not() {
        let mut b = Broadcaster::new(PeerId::random());
        let (from, now) = (PeerId::random(), Instant::now());
        let m = msg(5);
        assert_eq!(
            b.receive(&from, &m, now, T0),
            receipt(true, Some((0, 5)), Ack::Accepted)
        );
        assert_eq!(
            b.receive(&from, &m, now, T0),
            receipt(false, None, Ack::Duplicate)
        );
        let taller = m.with_height(9);
        assert_eq!(
            b.receive(&from, &taller, now, T0),
            receipt(false, Some((5, 9)), Ack::Accepted)
        );
    }

    #[test]
    fn own_messages_come_back_as_duplicates() {
        let key = Keypair::generate_ed25519();
        let mut b = Broadcaster::new(key.public().to_peer_id());
        let now = Instant::now();
        let m = b
            .originate(&key, b"x".to_vec(), [1; 16], T0, now)
            .expect("room");
        let r = b.receive(&PeerId::random(), &m.with_height(3), now, T0);
        assert!(!r.deliver);
        assert_eq!(r.ack, Ack::Duplicate);
    }

    #[test]
    fn forged_stale_and_future_messages_are_refused() {
        let mut b = Broadcaster::new(PeerId::random());
        let (from, now) = (PeerId::random(), Instant::now());
        // Claims another origin than the key that signed it.
        let mut forged = msg(FULL_HEIGHT);
        forged.origin = Keypair::generate_ed25519().public().to_peer_id();
        let r = b.receive(&from, &forged, now, T0);
        assert_eq!(
            r.refusal,
            Some(BroadcastRefusal::Forged(SignatureError::Forged))
        );
        assert!(!r.deliver && r.forward.is_none());
        // The payload changed on the way (the id is recomputed from what arrives).
        let mut changed = msg(FULL_HEIGHT);
        changed.id[0] ^= 1;
        assert!(matches!(
            b.receive(&from, &changed, now, T0).refusal,
            Some(BroadcastRefusal::Forged(_))
        ));
        let key = Keypair::generate_ed25519();
        let age = u64::try_from(MAX_BROADCAST_AGE.as_millis()).expect("fits");
        let skew = u64::try_from(MAX_CLOCK_SKEW.as_millis()).expect("fits");
        let old = signed(&key, T0 - age - 1, 2);
        assert_eq!(
            b.receive(&from, &old, now, T0).refusal,
            Some(BroadcastRefusal::Stale)
        );
        let ahead = signed(&key, T0 + skew + 1, 3);
        assert_eq!(
            b.receive(&from, &ahead, now, T0).refusal,
            Some(BroadcastRefusal::Future)
        );
        // At the edges of the window it is taken.
        assert!(
            b.receive(&from, &signed(&key, T0 - age, 4), now, T0)
                .deliver
        );
        assert!(
            b.receive(&from, &signed(&key, T0 + skew, 5), now, T0)
                .deliver
        );
    }

    #[test]
    fn a_full_cache_refuses_new_messages_and_never_forgets_one_it_may_see_again() {
        let ttl = Duration::from_secs(600);
        let mut b = Broadcaster::with_cache(PeerId::random(), SeenCache::new(4, 4, ttl));
        let now = Instant::now();
        let genuine = msg(FULL_HEIGHT);
        assert!(b.receive(&PeerId::random(), &genuine, now, T0).deliver);
        // A flood of fresh ids from fresh origins, each through its own forwarder.
        let mut refused = 0;
        for _ in 0..50 {
            let r = b.receive(&PeerId::random(), &msg(FULL_HEIGHT), now, T0);
            refused += usize::from(r.refusal == Some(BroadcastRefusal::Full));
        }
        assert_eq!(
            refused, 47,
            "three took the room left, the rest were refused"
        );
        // The genuine id is still known: its second copy is a duplicate, not a second delivery.
        let again = b.receive(&PeerId::random(), &genuine, now, T0);
        assert_eq!(again, receipt(false, None, Ack::Duplicate));
        // Room again once the ids age out.
        let later = now + ttl;
        assert!(
            b.receive(&PeerId::random(), &msg(FULL_HEIGHT), later, T0)
                .deliver
        );
    }

    #[test]
    fn one_origin_holds_at_most_its_share_of_the_cache() {
        let ttl = Duration::from_secs(600);
        let mut b = Broadcaster::with_cache(PeerId::random(), SeenCache::new(100, 3, ttl));
        let now = Instant::now();
        let loud = Keypair::generate_ed25519();
        let taken = (0..10u8)
            .filter(|i| {
                b.receive(&PeerId::random(), &signed(&loud, T0, *i), now, T0)
                    .deliver
            })
            .count();
        assert_eq!(taken, 3);
        assert!(
            b.receive(&PeerId::random(), &msg(FULL_HEIGHT), now, T0)
                .deliver
        );
    }

    #[test]
    fn one_forwarder_gets_its_rate_and_not_more() {
        let mut b = Broadcaster::new(PeerId::random());
        let (flooder, now) = (PeerId::random(), Instant::now());
        let taken = (0..1000)
            .filter(|_| b.receive(&flooder, &msg(FULL_HEIGHT), now, T0).deliver)
            .count();
        assert_eq!(taken, FORWARDER_BURST as usize);
        // Others are served meanwhile.
        assert!(
            b.receive(&PeerId::random(), &msg(FULL_HEIGHT), now, T0)
                .deliver
        );
    }

    #[test]
    fn plan_takes_redundant_peers_per_bucket_below_height() {
        let b = Broadcaster::new(PeerId::random());
        let buckets: Vec<Bucket> = (0..4)
            .map(|i| Bucket {
                index: i * 2,
                peers: (0..5).map(|_| PeerId::random()).collect(),
            })
            .collect();
        let m = msg(FULL_HEIGHT);
        let plan = b.plan(
            &m,
            &buckets,
            0,
            5,
            &mut rand::rngs::StdRng::seed_from_u64(1),
        );
        assert_eq!(plan.len(), 3 * BROADCAST_REDUNDANCY);
        assert!(plan.iter().all(|(_, m)| m.height < 5 && m.height % 2 == 0));
    }

    #[test]
    fn seen_cache_expires() {
        let mut c = SeenCache::new(3, 3, Duration::from_secs(10));
        let t = Instant::now();
        let origin = PeerId::random();
        for i in 0..5u8 {
            let _ = c.insert([i; 32], origin, 1, t);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.height(&[0; 32], t), Some(1));
        assert_eq!(c.height(&[0; 32], t + Duration::from_secs(11)), None);
        assert!(c.is_empty());
        assert!(c.per_origin.is_empty());
    }
}
