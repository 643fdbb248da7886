//! Broadcast: a payload reaches every node, and each node's application sees it once.
//!
//! Dissemination follows Kademlia's own structure (as in Kadcast). A node holding a message with
//! *height* `h` is responsible for every node whose XOR distance to it is below `2^h`, which are
//! exactly the peers of its buckets `0..h`. It hands the message to [`BROADCAST_REDUNDANCY`] peers
//! of each such bucket `i`, with height `i`. The subtrees are disjoint, so each node is reached
//! about `BROADCAST_REDUNDANCY` times in all, not once per edge as in flooding. A failed hand-off
//! is retried with another peer of the same bucket; a seen-cache remembers the highest height
//! already forwarded, so duplicates are dropped and a later, taller copy covers only what is new.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use libp2p::request_response::{self, Codec, OutboundRequestId, ProtocolSupport};
use libp2p::{PeerId, StreamProtocol};
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};

use crate::config::{
    BROADCAST_MAX_RETRIES, BROADCAST_PROTOCOL, BROADCAST_REDUNDANCY, MAX_BROADCAST_PAYLOAD,
    MAX_BROADCAST_STREAMS, SEEN_CACHE_CAPACITY, SEEN_CACHE_TTL,
};
use crate::frame::{read_frame, write_frame};

/// Height that covers the whole key space (buckets 0 to 255).
pub const FULL_HEIGHT: u16 = 256;
/// Length of a message id.
pub const MESSAGE_ID_LEN: usize = 32;
/// Longest encoded peer id accepted as a message origin.
pub const MAX_ORIGIN_LEN: usize = 64;
/// Fixed header: id, height, origin length.
const HEADER_LEN: usize = MESSAGE_ID_LEN + 2 + 1;
/// Largest broadcast frame on the wire.
pub const MAX_BROADCAST_FRAME: usize = HEADER_LEN + MAX_ORIGIN_LEN + MAX_BROADCAST_PAYLOAD;

/// Identifies one broadcast message network-wide.
pub type MessageId = [u8; MESSAGE_ID_LEN];

/// One broadcast message as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastMessage {
    /// Network-wide id: SHA-256 of origin, a nonce and the payload.
    pub id: MessageId,
    /// The node that first sent it.
    pub origin: PeerId,
    /// The receiver covers its buckets below this height.
    pub height: u16,
    /// The application's bytes.
    pub payload: Arc<Vec<u8>>,
}

impl BroadcastMessage {
    fn encode(&self) -> Vec<u8> {
        let origin = self.origin.to_bytes();
        let mut out = Vec::with_capacity(HEADER_LEN + origin.len() + self.payload.len());
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.height.to_be_bytes());
        // Peer ids are at most MAX_ORIGIN_LEN bytes, so the length fits in one byte.
        out.push(origin.len() as u8);
        out.extend_from_slice(&origin);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes a frame received from a peer; any inconsistency is an error, never a panic.
    pub fn decode(frame: &[u8]) -> Result<Self, DecodeError> {
        if frame.len() < HEADER_LEN {
            return Err(DecodeError("frame shorter than the header"));
        }
        let (id, rest) = frame.split_at(MESSAGE_ID_LEN);
        let (height, rest) = rest.split_at(2);
        let height = u16::from_be_bytes([height[0], height[1]]);
        if height > FULL_HEIGHT {
            return Err(DecodeError("height beyond the key space"));
        }
        let (origin_len, rest) = rest.split_at(1);
        let origin_len = usize::from(origin_len[0]);
        if origin_len > MAX_ORIGIN_LEN || rest.len() < origin_len {
            return Err(DecodeError("bad origin length"));
        }
        let (origin, payload) = rest.split_at(origin_len);
        let origin = PeerId::from_bytes(origin).map_err(|_| DecodeError("bad origin peer id"))?;
        if payload.len() > MAX_BROADCAST_PAYLOAD {
            return Err(DecodeError("payload too large"));
        }
        let mut id_bytes = [0u8; MESSAGE_ID_LEN];
        id_bytes.copy_from_slice(id);
        Ok(Self {
            id: id_bytes,
            origin,
            height,
            payload: Arc::new(payload.to_vec()),
        })
    }

    /// The same message, handed on with another height.
    pub fn with_height(&self, height: u16) -> Self {
        Self {
            height,
            ..self.clone()
        }
    }
}

/// A broadcast frame that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed broadcast frame: {0}")]
pub struct DecodeError(&'static str);

/// What a receiver answers to a hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// The message was new, or taller than the copy seen before.
    Accepted,
    /// Already covered.
    Duplicate,
}

/// Frames broadcast messages; the reply is one byte.
#[derive(Debug, Clone, Copy, Default)]
pub struct BroadcastCodec;

impl Codec for BroadcastCodec {
    type Protocol = StreamProtocol;
    type Request = BroadcastMessage;
    type Response = Ack;

    async fn read_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<BroadcastMessage>
    where
        T: AsyncRead + Unpin + Send,
    {
        let frame = read_frame(io, MAX_BROADCAST_FRAME).await?;
        BroadcastMessage::decode(&frame).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Ack>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, 1).await?.as_slice() {
            [0] => Ok(Ack::Accepted),
            [1] => Ok(Ack::Duplicate),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed broadcast ack",
            )),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: BroadcastMessage,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req.encode(), MAX_BROADCAST_FRAME).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Ack,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let byte = match res {
            Ack::Accepted => 0,
            Ack::Duplicate => 1,
        };
        write_frame(io, &[byte], 1).await
    }
}

/// The broadcast hand-off behaviour.
pub type BroadcastBehaviour = request_response::Behaviour<BroadcastCodec>;

/// Builds the broadcast behaviour with the given hand-off deadline.
pub fn new_behaviour(timeout: Duration) -> BroadcastBehaviour {
    request_response::Behaviour::with_codec(
        BroadcastCodec,
        [(BROADCAST_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(MAX_BROADCAST_STREAMS),
    )
}

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
    handoffs: HashMap<OutboundRequestId, Handoff>,
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
    pub fn originate(&mut self, payload: Vec<u8>, now: Instant) -> BroadcastMessage {
        let nonce: [u8; 16] = rand::random();
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
    ) -> Vec<(PeerId, BroadcastMessage)> {
        let mut rng = rand::thread_rng();
        let mut out = Vec::new();
        for bucket in buckets.iter().filter(|b| b.index >= from && b.index < to) {
            let mut peers: Vec<PeerId> = bucket
                .peers
                .iter()
                .copied()
                .filter(|p| *p != message.origin && *p != self.local)
                .collect();
            peers.shuffle(&mut rng);
            for peer in peers.into_iter().take(BROADCAST_REDUNDANCY) {
                out.push((peer, message.with_height(bucket.index)));
            }
        }
        out
    }

    /// Remembers a hand-off that was sent.
    pub fn sent(&mut self, id: OutboundRequestId, handoff: Handoff) {
        self.handoffs.insert(id, handoff);
    }

    /// A hand-off was answered.
    pub fn answered(&mut self, id: &OutboundRequestId) {
        self.handoffs.remove(id);
    }

    /// A hand-off failed: returns another peer of the same bucket to try, if any remain.
    pub fn failed(
        &mut self,
        id: &OutboundRequestId,
        buckets: &[Bucket],
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
        candidates.shuffle(&mut rand::thread_rng());
        let next = candidates.into_iter().next()?;
        handoff.tried.push(next);
        Some((next, handoff))
    }
}

#[cfg(test)]
mod tests {
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
    fn frames_round_trip() {
        let m = msg(17);
        assert_eq!(BroadcastMessage::decode(&m.encode()).expect("decode"), m);
    }

    #[test]
    fn garbage_never_panics() {
        let m = msg(3).encode();
        for cut in 0..m.len() {
            let _ = BroadcastMessage::decode(&m[..cut]);
        }
        let mut bad = m.clone();
        bad[32] = 0xff;
        assert!(BroadcastMessage::decode(&bad).is_err());
        let mut bad = m;
        bad[34] = 200;
        assert!(BroadcastMessage::decode(&bad).is_err());
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
        let m = b.originate(b"x".to_vec(), Instant::now());
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
        let plan = b.plan(&m, &buckets, 0, 5);
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
