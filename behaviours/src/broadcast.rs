//! Broadcast: a payload reaches every node, and each node's application sees it once.
//!
//! Dissemination follows Kademlia's own structure (as in Kadcast). A node holding a message with
//! *height* `h` is responsible for every node whose XOR distance to it is below `2^h`, which are
//! exactly the peers of its buckets `0..h`. It hands the message to
//! [`crate::config::BROADCAST_REDUNDANCY`] peers of each such bucket `i`, with height `i`. The
//! subtrees are disjoint, so each node is reached a small multiple of the redundancy times in all
//! (4.7 hand-offs per node with a redundancy of 2, at 300 simulated nodes: the tests of
//! `dht::core::broadcast`), not once per edge as in flooding. A failed hand-off is retried with
//! another peer of the same bucket; a seen-cache remembers the highest height already forwarded,
//! so duplicates are dropped and a later, taller copy covers only what is new.
//!
//! This module is the wire: the message, its frame and codec. The state machine that decides what
//! to deliver and where to forward is the node's (`dht::core::broadcast`).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::request_response::{self, Codec, ProtocolSupport};
use libp2p::{PeerId, StreamProtocol};

use crate::config::{BROADCAST_PROTOCOL, MAX_BROADCAST_PAYLOAD, MAX_BROADCAST_STREAMS};
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
}
