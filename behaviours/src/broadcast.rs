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
//! Every message is signed by its origin's ed25519 identity: the id is the SHA-256 of what the
//! origin said (its peer id, its clock, a nonce and the payload), computed by each receiver rather
//! than read from the wire, and the signature covers the id. A forwarder can change only the
//! height, which bounds how far it is forwarded, never what is delivered or by whom it is said.
//!
//! This module is the wire: the message, its signature, its frame and codec. The state machine
//! that decides what to deliver and where to forward is the node's (`dht::core::broadcast`).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::identity::{Keypair, PublicKey};
use libp2p::request_response::{self, Codec, ProtocolSupport};
use libp2p::{PeerId, StreamProtocol};
use sha2::{Digest, Sha256};

use crate::config::{BROADCAST_PROTOCOL, MAX_BROADCAST_PAYLOAD, MAX_BROADCAST_STREAMS};
use crate::frame::{read_frame, write_frame};

/// Height that covers the whole key space (buckets 0 to 255).
pub const FULL_HEIGHT: u16 = 256;
/// Length of a message id.
pub const MESSAGE_ID_LEN: usize = 32;
/// Length of the origin's nonce, which makes equal payloads sent at the same millisecond distinct.
pub const NONCE_LEN: usize = 16;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Longest encoded peer id accepted as a message origin.
pub const MAX_ORIGIN_LEN: usize = 64;
/// Fixed header: height, time, nonce, origin length.
const HEADER_LEN: usize = 2 + 8 + NONCE_LEN + 1;
/// Largest broadcast frame on the wire.
pub const MAX_BROADCAST_FRAME: usize =
    HEADER_LEN + MAX_ORIGIN_LEN + SIGNATURE_LEN + MAX_BROADCAST_PAYLOAD;
/// What the id's hash starts with, so that it can be no other hash of ours.
const ID_DOMAIN: &[u8] = b"dht-broadcast/2 id";
/// What the signed bytes start with, so that a broadcast signature signs nothing else.
const SIGNATURE_DOMAIN: &[u8] = b"dht-broadcast/2 signature:";

/// Identifies one broadcast message network-wide.
pub type MessageId = [u8; MESSAGE_ID_LEN];

/// One broadcast message as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastMessage {
    /// Network-wide id: SHA-256 of origin, time, nonce and payload (computed, never sent).
    pub id: MessageId,
    /// The node that first sent it, and signed it.
    pub origin: PeerId,
    /// The origin's wall clock when it sent the message, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The origin's random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The receiver covers its buckets below this height (the one field a forwarder sets).
    pub height: u16,
    /// The origin's signature of the id.
    pub signature: [u8; SIGNATURE_LEN],
    /// The application's bytes.
    pub payload: Arc<Vec<u8>>,
}

/// Why a message cannot be made or believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The origin's peer id does not contain its public key (only ed25519 identities do).
    #[error("the origin's peer id carries no ed25519 key")]
    NoOriginKey,
    /// The signature is not the origin's over this message.
    #[error("the signature is not the origin's")]
    Forged,
    /// Our own key cannot sign (not an ed25519 key).
    #[error("this identity cannot sign broadcasts: {0}")]
    CannotSign(String),
}

fn message_id(origin: &[u8], time_ms: u64, nonce: &[u8; NONCE_LEN], payload: &[u8]) -> MessageId {
    let mut h = Sha256::new();
    h.update(ID_DOMAIN);
    // The origin's length first, so that no two field splits hash alike.
    h.update([origin.len() as u8]);
    h.update(origin);
    h.update(time_ms.to_be_bytes());
    h.update(nonce);
    h.update(payload);
    h.finalize().into()
}

fn signed_bytes(id: &MessageId) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SIGNATURE_DOMAIN.len() + id.len());
    bytes.extend_from_slice(SIGNATURE_DOMAIN);
    bytes.extend_from_slice(id);
    bytes
}

/// The public key inside an ed25519 peer id (an identity multihash of the protobuf key).
pub fn origin_key(origin: &PeerId) -> Option<PublicKey> {
    let hash: &libp2p::multihash::Multihash<64> = origin.as_ref();
    // 0x00 is the identity multihash: the digest is the key itself.
    if hash.code() != 0 {
        return None;
    }
    PublicKey::try_decode_protobuf(hash.digest()).ok()
}

impl BroadcastMessage {
    /// A new message from `identity`, signed, at the full height.
    pub fn originate(
        identity: &Keypair,
        time_ms: u64,
        nonce: [u8; NONCE_LEN],
        payload: Vec<u8>,
    ) -> Result<Self, SignatureError> {
        let origin = identity.public().to_peer_id();
        let id = message_id(&origin.to_bytes(), time_ms, &nonce, &payload);
        let signature = identity
            .sign(&signed_bytes(&id))
            .map_err(|e| SignatureError::CannotSign(e.to_string()))?;
        let signature: [u8; SIGNATURE_LEN] = signature
            .try_into()
            .map_err(|_| SignatureError::CannotSign("not an ed25519 signature".into()))?;
        Ok(Self {
            id,
            origin,
            time_ms,
            nonce,
            height: FULL_HEIGHT,
            signature,
            payload: Arc::new(payload),
        })
    }

    /// Checks that the origin signed this message (its id is recomputed at decoding, so the
    /// signature covers the payload, the time and the nonce as received).
    pub fn verify(&self) -> Result<(), SignatureError> {
        let key = origin_key(&self.origin).ok_or(SignatureError::NoOriginKey)?;
        if key.verify(&signed_bytes(&self.id), &self.signature) {
            Ok(())
        } else {
            Err(SignatureError::Forged)
        }
    }

    fn encode(&self) -> Vec<u8> {
        let origin = self.origin.to_bytes();
        let mut out =
            Vec::with_capacity(HEADER_LEN + origin.len() + SIGNATURE_LEN + self.payload.len());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        // Peer ids are at most MAX_ORIGIN_LEN bytes, so the length fits in one byte.
        out.push(origin.len() as u8);
        out.extend_from_slice(&origin);
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes a frame received from a peer; any inconsistency is an error, never a panic. The
    /// signature is not checked here ([`BroadcastMessage::verify`]): a duplicate is dropped
    /// without the cost.
    pub fn decode(frame: &[u8]) -> Result<Self, DecodeError> {
        if frame.len() < HEADER_LEN {
            return Err(DecodeError("frame shorter than the header"));
        }
        let (height, rest) = frame.split_at(2);
        let height = u16::from_be_bytes([height[0], height[1]]);
        if height > FULL_HEIGHT {
            return Err(DecodeError("height beyond the key space"));
        }
        let (time, rest) = rest.split_at(8);
        let mut time_bytes = [0u8; 8];
        time_bytes.copy_from_slice(time);
        let (nonce_bytes, rest) = rest.split_at(NONCE_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(nonce_bytes);
        let (origin_len, rest) = rest.split_at(1);
        let origin_len = usize::from(origin_len[0]);
        if origin_len > MAX_ORIGIN_LEN || rest.len() < origin_len + SIGNATURE_LEN {
            return Err(DecodeError("bad origin length"));
        }
        let (origin_bytes, rest) = rest.split_at(origin_len);
        let origin =
            PeerId::from_bytes(origin_bytes).map_err(|_| DecodeError("bad origin peer id"))?;
        let (signature_bytes, payload) = rest.split_at(SIGNATURE_LEN);
        if payload.len() > MAX_BROADCAST_PAYLOAD {
            return Err(DecodeError("payload too large"));
        }
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(signature_bytes);
        let time_ms = u64::from_be_bytes(time_bytes);
        Ok(Self {
            id: message_id(origin_bytes, time_ms, &nonce, payload),
            origin,
            time_ms,
            nonce,
            height,
            signature,
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
    /// Not taken: stale, over its origin's share, or not believed. The sender does not retry it
    /// elsewhere (that would carry a flood further).
    Refused,
    /// Not taken now: the sender is over its rate with this receiver. It tries another peer of
    /// the same bucket, whose budget for it is its own.
    Busy,
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
            [2] => Ok(Ack::Refused),
            [3] => Ok(Ack::Busy),
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
            Ack::Refused => 2,
            Ack::Busy => 3,
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
        let key = Keypair::generate_ed25519();
        BroadcastMessage::originate(&key, 1_700_000_000_000, [3; NONCE_LEN], b"hi".to_vec())
            .expect("ed25519 signs")
            .with_height(height)
    }

    #[test]
    fn frames_round_trip_and_verify() {
        let m = msg(17);
        let back = BroadcastMessage::decode(&m.encode()).expect("decode");
        assert_eq!(back, m);
        assert_eq!(back.verify(), Ok(()));
    }

    #[test]
    fn a_forwarder_can_change_the_height_and_nothing_else() {
        let m = msg(FULL_HEIGHT);
        let frame = m.with_height(4).encode();
        assert_eq!(
            BroadcastMessage::decode(&frame).expect("decode").verify(),
            Ok(())
        );
        // Every byte after the height: time, nonce, origin, signature, payload.
        for i in 2..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            if let Ok(decoded) = BroadcastMessage::decode(&bad) {
                assert!(decoded.verify().is_err(), "byte {i} changed unnoticed");
            }
        }
    }

    #[test]
    fn an_origin_cannot_be_claimed_with_another_key() {
        let mut m = msg(FULL_HEIGHT);
        let claimed = Keypair::generate_ed25519().public().to_peer_id();
        m.origin = claimed;
        let decoded = BroadcastMessage::decode(&m.encode()).expect("decode");
        assert_eq!(decoded.verify(), Err(SignatureError::Forged));
        // A peer id that is a hash of its key (not an identity multihash) names no key to check.
        let mut m = msg(FULL_HEIGHT);
        m.origin = PeerId::random();
        let decoded = BroadcastMessage::decode(&m.encode()).expect("decode");
        assert!(decoded.verify().is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let m = msg(3).encode();
        for cut in 0..m.len() {
            let _ = BroadcastMessage::decode(&m[..cut]);
        }
        let mut bad = m.clone();
        bad[0] = 0xff;
        assert!(BroadcastMessage::decode(&bad).is_err());
        let mut bad = m;
        bad[26] = 200;
        assert!(BroadcastMessage::decode(&bad).is_err());
    }
}
