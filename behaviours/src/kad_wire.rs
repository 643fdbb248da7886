//! The client side of the libp2p Kademlia wire protocol (`/ipfs/kad/1.0.0`): FIND_NODE, GET_VALUE
//! and PUT_VALUE requests sent by our own lookups (see [`crate::lookup`]), and the answers parsed
//! with a bound on everything a peer controls.
//!
//! Serving stays with libp2p-kad: this behaviour only sends (its protocol is outbound only), so
//! every inbound kad stream still reaches kad. Messages are protobuf (libp2p's `dht.proto`),
//! written and read here by hand: a varint length prefix, then the fields this client needs;
//! unknown fields are skipped, as protobuf requires.

use std::io;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::kad::{Record, RecordKey};
use libp2p::request_response::{self, Codec, ProtocolSupport};
use libp2p::{Multiaddr, PeerId, StreamProtocol};

use crate::config::{KAD_MAX_PACKET_SIZE, MAX_ADDRS_PER_PEER, MAX_KEY_SIZE, MAX_VALUE_SIZE};

/// Closer peers read from one answer; the rest are skipped unread. A lookup takes at most k of
/// them (see [`crate::lookup::Lookup::on_answer`]); this bounds what one answer can allocate.
pub const MAX_PEERS_DECODED: usize = 256;
/// Longest peer id accepted in an answer (an identity-hashed ed25519 id is 38 bytes).
pub const MAX_PEER_ID_LEN: usize = 128;
/// Longest multiaddr accepted in an answer.
pub const MAX_ADDR_LEN: usize = 256;
/// Kad requests of our lookups in flight on one connection.
pub const MAX_KAD_CLIENT_STREAMS: usize = 64;

const MSG_PUT_VALUE: u64 = 0;
const MSG_GET_VALUE: u64 = 1;
const MSG_FIND_NODE: u64 = 4;

/// A request of ours.
#[derive(Debug, Clone, PartialEq)]
pub enum KadRequest {
    /// The peers the remote knows closest to `key` (the raw key: it is hashed for distance).
    FindNode {
        /// Target key.
        key: Vec<u8>,
    },
    /// The record under `key`, if the remote holds it, and its closest peers.
    GetValue {
        /// Record key.
        key: Vec<u8>,
    },
    /// Store `record` (kad acknowledges by echoing it).
    PutValue {
        /// The record, with its expiry sent as whole seconds left.
        record: Record,
    },
}

/// A peer named in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WirePeer {
    /// Its id.
    pub peer: PeerId,
    /// Its addresses (at most [`MAX_ADDRS_PER_PEER`] kept).
    pub addrs: Vec<Multiaddr>,
}

/// An answer: the record (GET_VALUE, PUT_VALUE's echo) and the closer peers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KadResponse {
    /// The record, if the answer carried one.
    pub record: Option<Record>,
    /// Closer peers, in the order sent, at most [`MAX_PEERS_DECODED`].
    pub closer: Vec<WirePeer>,
    /// Closer peers that were malformed or beyond [`MAX_PEERS_DECODED`].
    pub dropped: usize,
}

// ---- protobuf primitives ------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_uint(out: &mut Vec<u8>, field: u64, v: u64) {
    put_varint(out, field << 3);
    put_varint(out, v);
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

/// One protobuf field: its number and either a varint or a length-delimited slice.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> io::Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| invalid("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(invalid("varint too long"))
    }

    fn take(&mut self, n: u64) -> io::Result<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| invalid("length too large"))?;
        if n > self.buf.len() {
            return Err(invalid("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field, or `None` at the end.
    fn next_field(&mut self) -> io::Result<Option<(u64, Field<'a>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Other
            }
            2 => {
                let len = self.varint()?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Other
            }
            _ => return Err(invalid("unsupported protobuf wire type")),
        };
        Ok(Some((tag >> 3, field)))
    }
}

// ---- messages -----------------------------------------------------------------------------

fn encode_record(record: &Record, now: Instant) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.key.as_ref().len() + record.value.len() + 64);
    put_bytes(&mut out, 1, record.key.as_ref());
    put_bytes(&mut out, 2, &record.value);
    if let Some(publisher) = record.publisher {
        put_bytes(&mut out, 666, &publisher.to_bytes());
    }
    if let Some(at) = record.expires {
        // 0 would mean "never expires": a record with less than a second left is sent as 1.
        let secs = at.saturating_duration_since(now).as_secs().max(1);
        put_uint(&mut out, 777, secs.min(u64::from(u32::MAX)));
    }
    out
}

fn decode_record(bytes: &[u8], now: Instant) -> io::Result<Record> {
    let mut fields = Fields { buf: bytes };
    let (mut key, mut value, mut publisher, mut ttl) = (None, Vec::new(), None, 0u64);
    while let Some((number, field)) = fields.next_field()? {
        match (number, field) {
            (1, Field::Bytes(b)) => key = Some(b),
            (2, Field::Bytes(b)) => value = b.to_vec(),
            (666, Field::Bytes(b)) if !b.is_empty() => {
                publisher =
                    Some(PeerId::from_bytes(b).map_err(|_| invalid("invalid publisher id"))?);
            }
            (777, Field::Varint(v)) => ttl = v,
            _ => {}
        }
    }
    let key = key.ok_or_else(|| invalid("record without a key"))?;
    if key.is_empty() || key.len() > MAX_KEY_SIZE || value.len() > MAX_VALUE_SIZE {
        return Err(invalid("record out of bounds"));
    }
    let mut record = Record::new(RecordKey::new(&key), value);
    record.publisher = publisher;
    record.expires = (ttl > 0).then(|| now + Duration::from_secs(ttl.min(u64::from(u32::MAX))));
    Ok(record)
}

/// A closer peer, or `None` when it is malformed (a bad id): one bad entry is skipped, not fatal.
fn decode_peer(bytes: &[u8]) -> io::Result<Option<WirePeer>> {
    let mut fields = Fields { buf: bytes };
    let (mut peer, mut addrs) = (None, Vec::new());
    while let Some((number, field)) = fields.next_field()? {
        match (number, field) {
            (1, Field::Bytes(b)) if b.len() <= MAX_PEER_ID_LEN => peer = PeerId::from_bytes(b).ok(),
            (2, Field::Bytes(b)) if b.len() <= MAX_ADDR_LEN && addrs.len() < MAX_ADDRS_PER_PEER => {
                if let Ok(addr) = Multiaddr::try_from(b.to_vec()) {
                    addrs.push(addr);
                }
            }
            _ => {}
        }
    }
    Ok(peer.map(|peer| WirePeer { peer, addrs }))
}

impl KadRequest {
    /// The protobuf message.
    pub fn encode(&self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::FindNode { key } => {
                put_uint(&mut out, 1, MSG_FIND_NODE);
                put_bytes(&mut out, 2, key);
            }
            Self::GetValue { key } => {
                put_uint(&mut out, 1, MSG_GET_VALUE);
                put_bytes(&mut out, 2, key);
            }
            Self::PutValue { record } => {
                put_uint(&mut out, 1, MSG_PUT_VALUE);
                put_bytes(&mut out, 2, record.key.as_ref());
                put_bytes(&mut out, 3, &encode_record(record, now));
            }
        }
        out
    }
}

impl KadResponse {
    /// Parses an answer; anything malformed is an error, never a panic.
    pub fn decode(bytes: &[u8], now: Instant) -> io::Result<Self> {
        let mut fields = Fields { buf: bytes };
        let mut response = Self::default();
        while let Some((number, field)) = fields.next_field()? {
            match (number, field) {
                (3, Field::Bytes(b)) => response.record = Some(decode_record(b, now)?),
                (8, Field::Bytes(b)) if response.closer.len() < MAX_PEERS_DECODED => {
                    match decode_peer(b)? {
                        Some(p) => response.closer.push(p),
                        None => response.dropped += 1,
                    }
                }
                (8, _) => response.dropped += 1,
                _ => {}
            }
        }
        Ok(response)
    }

    /// The protobuf form of an answer (what a kad server sends; used by tests and fuzzing).
    pub fn encode(&self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(record) = &self.record {
            put_uint(&mut out, 1, MSG_GET_VALUE);
            put_bytes(&mut out, 2, record.key.as_ref());
            put_bytes(&mut out, 3, &encode_record(record, now));
        } else {
            put_uint(&mut out, 1, MSG_FIND_NODE);
        }
        for p in &self.closer {
            let mut peer = Vec::new();
            put_bytes(&mut peer, 1, &p.peer.to_bytes());
            for a in &p.addrs {
                put_bytes(&mut peer, 2, &a.to_vec());
            }
            put_bytes(&mut out, 8, &peer);
        }
        out
    }
}

// ---- framing and codec ----------------------------------------------------------------------

/// Reads one varint-length-prefixed message of at most `max` bytes.
pub async fn read_message<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut len = 0usize;
    for i in 0..5 {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            if len > max {
                return Err(invalid("kad message over the size limit"));
            }
            let mut buf = vec![0u8; len];
            io.read_exact(&mut buf).await?;
            return Ok(buf);
        }
    }
    Err(invalid("length prefix too long"))
}

/// Writes one varint-length-prefixed message, refusing more than `max` bytes.
pub async fn write_message<T>(io: &mut T, bytes: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "kad message over the size limit",
        ));
    }
    let mut framed = Vec::with_capacity(bytes.len() + 5);
    put_varint(&mut framed, bytes.len() as u64);
    framed.extend_from_slice(bytes);
    io.write_all(&framed).await?;
    io.flush().await
}

/// The kad client only sends: kad itself serves inbound kad streams.
fn not_served() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "the kad client does not serve")
}

/// Our kad requests and their answers, over the kad protocol's framing.
#[derive(Debug, Clone, Copy, Default)]
pub struct KadClientCodec;

impl Codec for KadClientCodec {
    type Protocol = StreamProtocol;
    type Request = KadRequest;
    type Response = KadResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<KadRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(not_served())
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<KadResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_message(io, KAD_MAX_PACKET_SIZE).await?;
        KadResponse::decode(&bytes, Instant::now())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: KadRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &req.encode(Instant::now()), KAD_MAX_PACKET_SIZE).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: KadResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(not_served())
    }
}

/// The kad client behaviour.
pub type KadClient = request_response::Behaviour<KadClientCodec>;

/// Builds the kad client for `protocol`; a request unanswered after `timeout` fails.
pub fn new_behaviour(protocol: StreamProtocol, timeout: Duration) -> KadClient {
    request_response::Behaviour::with_codec(
        KadClientCodec,
        [(protocol, ProtocolSupport::Outbound)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(MAX_KAD_CLIENT_STREAMS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    fn peer(addrs: usize) -> WirePeer {
        WirePeer {
            peer: PeerId::random(),
            addrs: (0..addrs)
                .map(|i| format!("/ip4/10.0.0.{i}/tcp/4001").parse().expect("addr"))
                .collect(),
        }
    }

    #[test]
    fn answers_round_trip() {
        let now = Instant::now();
        let mut record = Record::new(RecordKey::new(&b"key"), b"value".to_vec());
        record.publisher = Some(PeerId::random());
        record.expires = Some(now + Duration::from_secs(90));
        let answer = KadResponse {
            record: Some(record.clone()),
            closer: vec![peer(0), peer(2)],
            dropped: 0,
        };
        let back = KadResponse::decode(&answer.encode(now), now).expect("decode");
        assert_eq!(back.closer, answer.closer);
        let got = back.record.expect("record");
        assert_eq!(
            (got.key, got.value, got.publisher),
            (record.key, record.value, record.publisher)
        );
        assert_eq!(got.expires, Some(now + Duration::from_secs(90)));
    }

    #[test]
    fn a_dying_record_is_sent_with_one_second_not_forever() {
        let now = Instant::now();
        let mut record = Record::new(RecordKey::new(&b"k"), vec![1]);
        record.expires = Some(now + Duration::from_millis(300));
        let answer = KadResponse {
            record: Some(record),
            ..Default::default()
        };
        let back = KadResponse::decode(&answer.encode(now), now).expect("decode");
        assert_eq!(
            back.record.and_then(|r| r.expires),
            Some(now + Duration::from_secs(1))
        );
    }

    #[test]
    fn peers_and_addresses_are_bounded() {
        let now = Instant::now();
        let answer = KadResponse {
            closer: (0..MAX_PEERS_DECODED + 10)
                .map(|_| peer(MAX_ADDRS_PER_PEER + 3))
                .collect(),
            ..Default::default()
        };
        let back = KadResponse::decode(&answer.encode(now), now).expect("decode");
        assert_eq!(back.closer.len(), MAX_PEERS_DECODED);
        assert_eq!(back.dropped, 10);
        assert!(
            back.closer
                .iter()
                .all(|p| p.addrs.len() == MAX_ADDRS_PER_PEER)
        );
    }

    #[test]
    fn malformed_answers_are_errors_and_bad_peers_are_skipped() {
        let now = Instant::now();
        assert!(KadResponse::decode(&[0x1a, 0x05, 1], now).is_err()); // truncated record
        assert!(KadResponse::decode(&[0x0b], now).is_err()); // wire type 3
        assert!(KadResponse::decode(&[0xff; 11], now).is_err()); // over-long varint
        let mut bad_peer = Vec::new();
        put_bytes(&mut bad_peer, 1, b"not a peer id");
        let mut msg = Vec::new();
        put_bytes(&mut msg, 8, &bad_peer);
        let back = KadResponse::decode(&msg, now).expect("decode");
        assert!(back.closer.is_empty());
        assert_eq!(back.dropped, 1);
    }

    #[test]
    fn framing_refuses_oversize_prefixes_before_allocating() {
        let mut buf = Vec::new();
        put_varint(&mut buf, (KAD_MAX_PACKET_SIZE + 1) as u64);
        let err = block_on(read_message(&mut Cursor::new(buf), KAD_MAX_PACKET_SIZE))
            .expect_err("too long");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut out = Vec::new();
        block_on(write_message(&mut Cursor::new(&mut out), b"hello", 16)).expect("write");
        let back = block_on(read_message(&mut Cursor::new(out), 16)).expect("read");
        assert_eq!(back, b"hello");
    }
}
