//! The broadcast state machine (the dissemination is described in
//! [`dht_behaviours::broadcast`]): which message ids were seen and up to which height, what a
//! received message calls for, which peers of which buckets a message goes to, and the hand-offs
//! in flight to be retried within their bucket. No I/O; randomness from the caller's source.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dht_behaviours::broadcast::{Ack, BroadcastMessage, FULL_HEIGHT, MessageId};
use dht_behaviours::config::{
    BROADCAST_MAX_RETRIES, BROADCAST_REDUNDANCY, SEEN_CACHE_CAPACITY, SEEN_CACHE_TTL,
};
use libp2p::PeerId;
use rand::Rng;
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};

/// Identifies one hand-off of a broadcast (the core's number; the driver maps its own to it).
pub type HandoffId = u64;

/// Message ids seen lately, each with the highest height already forwarded; bounded in size and age.
#[derive(Debug)]
pub struct SeenCache {
    heights: HashMap<MessageId, u16>,
    order: VecDeque<(MessageId, Instant)>,
    capacity: usize,
    ttl: Duration,
}

impl SeenCache {
    /// An empty cache.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            heights: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            ttl,
        }
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.heights.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.heights.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((id, at)) = self.order.front().copied() {
            if now.duration_since(at) < self.ttl && self.order.len() <= self.capacity {
                break;
            }
            self.order.pop_front();
            self.heights.remove(&id);
        }
    }

    /// Records that `id` is covered up to `height`. Returns the previous height, if it was seen.
    fn raise(&mut self, id: MessageId, height: u16, now: Instant) -> Option<u16> {
        self.expire(now);
        match self.heights.get_mut(&id) {
            Some(h) => {
                let before = *h;
                *h = before.max(height);
                Some(before)
            }
            None => {
                self.heights.insert(id, height);
                self.order.push_back((id, now));
                self.expire(now);
                None
            }
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
    handoffs: HashMap<HandoffId, Handoff>,
}

impl Broadcaster {
    /// Broadcast state for the node `local`.
    pub fn new(local: PeerId) -> Self {
        Self {
            local,
            seen: SeenCache::new(SEEN_CACHE_CAPACITY, SEEN_CACHE_TTL),
            handoffs: HashMap::new(),
        }
    }

    /// Message ids remembered now.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Hand-offs awaiting an answer.
    pub fn in_flight(&self) -> usize {
        self.handoffs.len()
    }

    /// A new message from this node, already marked seen so it is never delivered back here.
    pub fn originate(
        &mut self,
        payload: Vec<u8>,
        nonce: [u8; 16],
        now: Instant,
    ) -> BroadcastMessage {
        let mut h = Sha256::new();
        h.update(self.local.to_bytes());
        h.update(nonce);
        h.update(&payload);
        let message = BroadcastMessage {
            id: h.finalize().into(),
            origin: self.local,
            height: FULL_HEIGHT,
            payload: Arc::new(payload),
        };
        self.seen.raise(message.id, FULL_HEIGHT, now);
        message
    }

    /// Decides what a received message calls for.
    pub fn receive(&mut self, message: &BroadcastMessage, now: Instant) -> Receipt {
        if message.origin == self.local {
            self.seen.raise(message.id, FULL_HEIGHT, now);
            return Receipt {
                deliver: false,
                forward: None,
                ack: Ack::Duplicate,
            };
        }
        match self.seen.raise(message.id, message.height, now) {
            None => Receipt {
                deliver: true,
                forward: (message.height > 0).then_some((0, message.height)),
                ack: Ack::Accepted,
            },
            Some(before) if before < message.height => Receipt {
                deliver: false,
                forward: Some((before, message.height)),
                ack: Ack::Accepted,
            },
            Some(_) => Receipt {
                deliver: false,
                forward: None,
                ack: Ack::Duplicate,
            },
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
    use rand::SeedableRng;

    use super::*;

    fn msg(height: u16) -> BroadcastMessage {
        BroadcastMessage {
            id: [7; 32],
            origin: PeerId::random(),
            height,
            payload: Arc::new(b"hi".to_vec()),
        }
    }

    #[test]
    fn first_copy_is_delivered_and_duplicates_are_not() {
        let mut b = Broadcaster::new(PeerId::random());
        let now = Instant::now();
        let m = msg(5);
        assert_eq!(
            b.receive(&m, now),
            Receipt {
                deliver: true,
                forward: Some((0, 5)),
                ack: Ack::Accepted
            }
        );
        assert_eq!(
            b.receive(&m, now),
            Receipt {
                deliver: false,
                forward: None,
                ack: Ack::Duplicate
            }
        );
        let taller = m.with_height(9);
        assert_eq!(
            b.receive(&taller, now),
            Receipt {
                deliver: false,
                forward: Some((5, 9)),
                ack: Ack::Accepted
            }
        );
    }

    #[test]
    fn own_messages_come_back_as_duplicates() {
        let mut b = Broadcaster::new(PeerId::random());
        let m = b.originate(b"x".to_vec(), [1; 16], Instant::now());
        assert!(!b.receive(&m.with_height(3), Instant::now()).deliver);
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
    fn seen_cache_is_bounded_and_expires() {
        let mut c = SeenCache::new(3, Duration::from_secs(10));
        let t = Instant::now();
        for i in 0..5u8 {
            c.raise([i; 32], 1, t);
        }
        assert_eq!(c.len(), 3);
        c.raise([9; 32], 1, t + Duration::from_secs(11));
        assert_eq!(c.len(), 1);
    }
}
