//! The libp2p Kademlia wire messages (`/ipfs/kad/1.0.0`, libp2p's `dht.proto`) in both directions:
//! the requests our lookups send and the answers they read, and the requests peers send us and
//! the answers the core gives. Written and read here by hand: the fields a node needs, each bounded
//! where a peer controls it; unknown fields are skipped, as protobuf requires. Framing and streams
//! are [`crate::kad`]'s.

use std::io;
use std::time::{Duration, Instant};

use libp2p::kad::{Record, RecordKey};
use libp2p::{Multiaddr, PeerId};

use crate::config::{MAX_ADDRS_PER_PEER, MAX_KEY_SIZE, MAX_VALUE_SIZE};

/// Peers read from one message (closer peers or providers); the rest are skipped unread. A lookup
/// takes at most k of them (see [`crate::lookup::Lookup::on_answer`]); this bounds what one
/// message can allocate.
pub const MAX_PEERS_DECODED: usize = 256;
/// Longest peer id accepted (an identity-hashed ed25519 id is 38 bytes).
pub const MAX_PEER_ID_LEN: usize = 128;
/// Longest multiaddr accepted.
pub const MAX_ADDR_LEN: usize = 256;

/// The message types of `dht.proto`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MessageKind {
    /// PUT_VALUE (0).
    PutValue,
    /// GET_VALUE (1).
    GetValue,
    /// ADD_PROVIDER (2).
    AddProvider,
    /// GET_PROVIDERS (3).
    GetProviders,
    /// FIND_NODE (4).
    #[default]
    FindNode,
    /// PING (5), deprecated but still answered.
    Ping,
}

impl MessageKind {
    fn from_wire(v: u64) -> Option<Self> {
        Some(match v {
            0 => Self::PutValue,
            1 => Self::GetValue,
            2 => Self::AddProvider,
            3 => Self::GetProviders,
            4 => Self::FindNode,
            5 => Self::Ping,
            _ => return None,
        })
    }

    fn to_wire(self) -> u64 {
        match self {
            Self::PutValue => 0,
            Self::GetValue => 1,
            Self::AddProvider => 2,
            Self::GetProviders => 3,
            Self::FindNode => 4,
            Self::Ping => 5,
        }
    }
}

/// A kad request, ours or a peer's.
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
    /// The providers of `key` the remote knows, and its closest peers.
    GetProviders {
        /// The key.
        key: Vec<u8>,
    },
    /// The sender provides `key` (no answer is sent).
    AddProvider {
        /// The key.
        key: Vec<u8>,
        /// The providers announced (only the sender itself may be among them).
        providers: Vec<WirePeer>,
    },
    /// Whether the remote is there.
    Ping,
}

/// A peer named in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WirePeer {
    /// Its id.
    pub peer: PeerId,
    /// Its addresses (at most [`MAX_ADDRS_PER_PEER`] kept).
    pub addrs: Vec<Multiaddr>,
}

/// An answer: its type (the request's), the record (GET_VALUE, PUT_VALUE's echo), the closer peers
/// and the providers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KadResponse {
    /// The type of the request answered (servers answer with the request's type).
    pub kind: MessageKind,
    /// The record, if the answer carried one.
    pub record: Option<Record>,
    /// Closer peers, in the order sent, at most [`MAX_PEERS_DECODED`].
    pub closer: Vec<WirePeer>,
    /// Providers (GET_PROVIDERS), at most [`MAX_PEERS_DECODED`].
    pub providers: Vec<WirePeer>,
    /// Peers that were malformed or beyond [`MAX_PEERS_DECODED`].
    pub dropped: usize,
}

// ---- protobuf primitives ------------------------------------------------------------------

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
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

pub(crate) fn invalid(why: &str) -> io::Error {
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

/// A peer, or `None` when it is malformed (a bad id): one bad entry is skipped, not fatal.
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

/// Bytes a peer usually takes in an answer (an identity of 38 bytes and two addresses), to size
/// the buffer once.
const ENCODED_PEER_GUESS: usize = 64;

fn put_peers(out: &mut Vec<u8>, field: u64, peers: &[WirePeer]) {
    // Written in place, lengths first: an answer names up to 20 peers and is built for every
    // request served, so no buffer per peer or per address.
    for p in peers {
        let id: &libp2p::multihash::Multihash<64> = p.peer.as_ref();
        let id_len = id.encoded_len();
        let len = field_len(id_len)
            + p.addrs
                .iter()
                .map(|a| field_len(a.as_ref().len()))
                .sum::<usize>();
        put_varint(out, (field << 3) | 2);
        put_varint(out, len as u64);
        put_varint(out, (1 << 3) | 2);
        put_varint(out, id_len as u64);
        // Writing to a Vec cannot fail.
        let _ = id.write(&mut *out);
        for a in &p.addrs {
            put_bytes(out, 2, a.as_ref());
        }
    }
}

/// The bytes of a length-delimited field numbered below 16 holding `n` bytes.
fn field_len(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Adds the peer in `bytes` to `into` if it is well formed and there is room; counts it in
/// `dropped` otherwise.
fn take_peer(bytes: &[u8], into: &mut Vec<WirePeer>, dropped: &mut usize) -> io::Result<()> {
    if into.len() >= MAX_PEERS_DECODED {
        *dropped += 1;
        return Ok(());
    }
    match decode_peer(bytes)? {
        Some(p) => into.push(p),
        None => *dropped += 1,
    }
    Ok(())
}

fn bounded_key(key: Option<&[u8]>, empty_ok: bool) -> io::Result<Vec<u8>> {
    let key = key.unwrap_or_default();
    if key.len() > MAX_KEY_SIZE || (key.is_empty() && !empty_ok) {
        return Err(invalid("key out of bounds"));
    }
    Ok(key.to_vec())
}

impl KadRequest {
    /// The type this request goes as.
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::FindNode { .. } => MessageKind::FindNode,
            Self::GetValue { .. } => MessageKind::GetValue,
            Self::PutValue { .. } => MessageKind::PutValue,
            Self::GetProviders { .. } => MessageKind::GetProviders,
            Self::AddProvider { .. } => MessageKind::AddProvider,
            Self::Ping => MessageKind::Ping,
        }
    }

    /// The protobuf message.
    pub fn encode(&self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, 1, self.kind().to_wire());
        match self {
            Self::FindNode { key } | Self::GetValue { key } | Self::GetProviders { key } => {
                put_bytes(&mut out, 2, key);
            }
            Self::PutValue { record } => {
                put_bytes(&mut out, 2, record.key.as_ref());
                put_bytes(&mut out, 3, &encode_record(record, now));
            }
            Self::AddProvider { key, providers } => {
                put_bytes(&mut out, 2, key);
                put_peers(&mut out, 9, providers);
            }
            Self::Ping => {}
        }
        out
    }

    /// Parses a peer's request; anything malformed is an [`io::ErrorKind::InvalidData`] error, a
    /// message type this node does not know an [`io::ErrorKind::Unsupported`] one.
    pub fn decode(bytes: &[u8], now: Instant) -> io::Result<Self> {
        let mut fields = Fields { buf: bytes };
        // proto3: an absent type is 0, PUT_VALUE.
        let (mut kind, mut key, mut record) = (0, None, None);
        let (mut providers, mut dropped) = (Vec::new(), 0);
        while let Some((number, field)) = fields.next_field()? {
            match (number, field) {
                (1, Field::Varint(v)) => kind = v,
                (2, Field::Bytes(b)) => key = Some(b),
                (3, Field::Bytes(b)) => record = Some(decode_record(b, now)?),
                (9, Field::Bytes(b)) => take_peer(b, &mut providers, &mut dropped)?,
                _ => {}
            }
        }
        let kind = MessageKind::from_wire(kind).ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "unknown kad message type")
        })?;
        Ok(match kind {
            MessageKind::FindNode => Self::FindNode {
                key: bounded_key(key, true)?,
            },
            MessageKind::GetValue => Self::GetValue {
                key: bounded_key(key, false)?,
            },
            MessageKind::GetProviders => Self::GetProviders {
                key: bounded_key(key, false)?,
            },
            MessageKind::AddProvider => Self::AddProvider {
                key: bounded_key(key, false)?,
                providers,
            },
            MessageKind::PutValue => Self::PutValue {
                record: record.ok_or_else(|| invalid("PUT_VALUE without a record"))?,
            },
            MessageKind::Ping => Self::Ping,
        })
    }
}

impl KadResponse {
    /// An answer of type `kind` with nothing in it yet.
    pub fn to(kind: MessageKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    /// Parses an answer; anything malformed is an error, never a panic.
    pub fn decode(bytes: &[u8], now: Instant) -> io::Result<Self> {
        Self::decode_with(bytes, now, true)
    }

    /// Parses an answer, its closer peers only when `closer` (a store's check of a copy wants the
    /// record alone: a server names about 20 peers beside it, most of the work of reading it).
    pub fn decode_with(bytes: &[u8], now: Instant, closer: bool) -> io::Result<Self> {
        let mut fields = Fields { buf: bytes };
        let mut response = Self::default();
        while let Some((number, field)) = fields.next_field()? {
            match (number, field) {
                (1, Field::Varint(v)) => {
                    response.kind = MessageKind::from_wire(v).unwrap_or_default();
                }
                (3, Field::Bytes(b)) => response.record = Some(decode_record(b, now)?),
                (8, Field::Bytes(_)) if !closer => {}
                (8, Field::Bytes(b)) => {
                    take_peer(b, &mut response.closer, &mut response.dropped)?;
                }
                (9, Field::Bytes(b)) => {
                    take_peer(b, &mut response.providers, &mut response.dropped)?;
                }
                (8 | 9, _) => response.dropped += 1,
                _ => {}
            }
        }
        Ok(response)
    }

    /// The protobuf form of an answer, as a kad server sends it: the request's type, the key with
    /// the record, the closer peers and the providers.
    pub fn encode(&self, now: Instant) -> Vec<u8> {
        let peers = self.closer.len() + self.providers.len();
        let record = self.record.as_ref().map_or(0, |r| r.value.len() + 128);
        let mut out = Vec::with_capacity(16 + record + peers * ENCODED_PEER_GUESS);
        put_uint(&mut out, 1, self.kind.to_wire());
        if let Some(record) = &self.record {
            put_bytes(&mut out, 2, record.key.as_ref());
            put_bytes(&mut out, 3, &encode_record(record, now));
        }
        put_peers(&mut out, 8, &self.closer);
        put_peers(&mut out, 9, &self.providers);
        out
    }
}

#[cfg(test)]
mod tests;
