//! The mirror sub-protocol: nodes hand records to mirror nodes, which keep a copy of everything.
//!
//! Only mirrors accept it (inbound), so identify's protocol list is how a node learns that a peer is
//! a mirror. A record goes with the time it has left to live: kad's PUT_VALUE would not do, as kad
//! shortens the life of a record stored far from its key exponentially (to nothing, for a mirror
//! far from most keys), and a mirror must neither drop records early nor keep them past their
//! expiry.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response::{self, Codec, ProtocolSupport};

use crate::config::{MAX_KEY_SIZE, MAX_VALUE_SIZE};
use crate::frame::{read_frame, write_frame};

/// The mirror protocol.
pub const MIRROR_PROTOCOL: StreamProtocol = StreamProtocol::new("/dht/mirror/1.0.0");
/// Largest mirror frame: key length, key, time to live, value.
pub const MAX_MIRROR_FRAME: usize = 1 + MAX_KEY_SIZE + 8 + MAX_VALUE_SIZE;
/// Concurrent mirror streams per connection.
pub const MAX_MIRROR_STREAMS: usize = 64;

/// A record handed to a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRecord {
    /// Record key (1 to [`MAX_KEY_SIZE`] bytes).
    pub key: Vec<u8>,
    /// Value (at most [`MAX_VALUE_SIZE`] bytes).
    pub value: Vec<u8>,
    /// Time the record has left to live, to the millisecond.
    pub expires_in: Duration,
}

impl MirrorRecord {
    /// The wire form: key length (1 byte, 0 means 256), key, milliseconds to live (8 bytes, big
    /// endian), value.
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        if self.key.is_empty() || self.key.len() > MAX_KEY_SIZE || self.value.len() > MAX_VALUE_SIZE
        {
            return Err(invalid("record out of bounds"));
        }
        let mut out = Vec::with_capacity(1 + self.key.len() + 8 + self.value.len());
        // MAX_KEY_SIZE is 256: the length fits a byte, 256 written as 0.
        out.push((self.key.len() % 256) as u8);
        out.extend_from_slice(&self.key);
        let ms = u64::try_from(self.expires_in.as_millis()).unwrap_or(u64::MAX);
        out.extend_from_slice(&ms.to_be_bytes());
        out.extend_from_slice(&self.value);
        Ok(out)
    }

    /// Parses the wire form; anything malformed is an error, never a panic.
    pub fn decode(frame: &[u8]) -> io::Result<Self> {
        let (&len, rest) = frame.split_first().ok_or_else(|| invalid("empty frame"))?;
        let key_len = if len == 0 { 256 } else { usize::from(len) };
        if key_len > MAX_KEY_SIZE || rest.len() < key_len + 8 {
            return Err(invalid("truncated mirror record"));
        }
        let (key, rest) = rest.split_at(key_len);
        let (ttl, value) = rest.split_at(8);
        let mut ms = [0u8; 8];
        ms.copy_from_slice(ttl);
        if value.len() > MAX_VALUE_SIZE {
            return Err(invalid("value over the size limit"));
        }
        Ok(Self {
            key: key.to_vec(),
            value: value.to_vec(),
            expires_in: Duration::from_millis(u64::from_be_bytes(ms)),
        })
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

/// Records in frames; the mirror acknowledges with an empty frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorCodec;

impl Codec for MirrorCodec {
    type Protocol = StreamProtocol;
    type Request = MirrorRecord;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<MirrorRecord>
    where
        T: AsyncRead + Unpin + Send,
    {
        MirrorRecord::decode(&read_frame(io, MAX_MIRROR_FRAME).await?)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, 0).await.map(drop)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: MirrorRecord,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req.encode()?, MAX_MIRROR_FRAME).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &[], 0).await
    }
}

/// The mirror behaviour.
pub type MirrorBehaviour = request_response::Behaviour<MirrorCodec>;

/// Builds the mirror behaviour: a mirror accepts records, every other node only sends them.
pub fn new_behaviour(timeout: Duration, mirror: bool) -> MirrorBehaviour {
    let support = if mirror {
        ProtocolSupport::Inbound
    } else {
        ProtocolSupport::Outbound
    };
    request_response::Behaviour::with_codec(
        MirrorCodec,
        [(MIRROR_PROTOCOL, support)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(MAX_MIRROR_STREAMS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    fn record(key_len: usize, value_len: usize) -> MirrorRecord {
        MirrorRecord {
            key: vec![1; key_len],
            value: vec![2; value_len],
            expires_in: Duration::from_millis(123_456),
        }
    }

    #[test]
    fn records_round_trip_at_their_limits() {
        for r in [
            record(1, 0),
            record(32, 100),
            record(MAX_KEY_SIZE, MAX_VALUE_SIZE),
        ] {
            let mut buf = Vec::new();
            block_on(MirrorCodec.write_request(
                &MIRROR_PROTOCOL,
                &mut Cursor::new(&mut buf),
                r.clone(),
            ))
            .expect("write");
            let back = block_on(MirrorCodec.read_request(&MIRROR_PROTOCOL, &mut Cursor::new(buf)))
                .expect("read");
            assert_eq!(back, r);
        }
    }

    #[test]
    fn malformed_records_are_errors() {
        assert!(record(0, 1).encode().is_err());
        assert!(record(MAX_KEY_SIZE + 1, 1).encode().is_err());
        assert!(record(1, MAX_VALUE_SIZE + 1).encode().is_err());
        assert!(MirrorRecord::decode(&[]).is_err());
        assert!(MirrorRecord::decode(&[5, 1, 2]).is_err());
        let mut over = record(1, 0).encode().expect("encode");
        over.extend(std::iter::repeat_n(0, MAX_VALUE_SIZE + 1));
        assert!(MirrorRecord::decode(&over).is_err());
    }
}
