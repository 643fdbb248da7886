//! The kad protocol as a request-response exchange: one varint-length-prefixed message each way
//! per stream, at most [`KAD_MAX_PACKET_SIZE`] bytes. Our lookups send requests over it and the
//! core's answers to peers' requests go back over it (see [`crate::kad_wire`] for the messages).
//! A client node speaks it outbound only, so it never takes a peer's request.
//!
//! libp2p's request-response drops a request that fails to decode without telling the behaviour's
//! owner, so a peer could send garbage unseen: a request whose bytes are malformed is delivered as
//! [`Malformed`] instead, for the node to hold against its sender.

use std::io;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::{self, Codec, ProtocolSupport};

use crate::config::KAD_MAX_PACKET_SIZE;
use crate::kad_wire::{KadRequest, KadResponse, MessageKind, invalid, put_varint};

/// Bytes reserved for a message before any of it arrived.
pub const PREALLOCATE_LIMIT: usize = 16 * 1024;
/// Kad streams open at once on one connection, both ways (rust-libp2p's kad allows 32 inbound).
pub const MAX_KAD_STREAMS: usize = 64;

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
            // Grown as the bytes arrive: a length prefix alone reserves little (a peer may claim
            // the whole limit on every stream and send nothing).
            let mut buf = Vec::with_capacity(len.min(PREALLOCATE_LIMIT));
            (&mut *io).take(len as u64).read_to_end(&mut buf).await?;
            if buf.len() < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "kad message cut short",
                ));
            }
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

/// A peer's request that could not be decoded, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed kad request: {0}")]
pub struct Malformed(pub String);

/// A kad request as the codec carries it: ours always `Ok`; a peer's `Err` when malformed.
pub type Request = Result<KadRequest, Malformed>;

/// Kad requests and answers over the kad protocol's framing. Each stream gets its own copy, so
/// the copy that wrote an ADD_PROVIDER knows that no answer comes back: the protocol has none, and
/// the remote closes the stream once it has read the request.
#[derive(Debug, Clone, Copy)]
pub struct KadCodec {
    /// The request written on this stream takes no answer.
    unanswered: bool,
    /// The largest message read or written.
    max: usize,
}

impl KadCodec {
    /// A codec for messages of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            unanswered: false,
            max,
        }
    }
}

impl Default for KadCodec {
    fn default() -> Self {
        Self::new(KAD_MAX_PACKET_SIZE)
    }
}

impl Codec for KadCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = KadResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let decoded = match read_message(io, self.max).await {
            Ok(bytes) => KadRequest::decode(&bytes, Instant::now()),
            Err(e) => Err(e),
        };
        match decoded {
            Ok(request) => Ok(Ok(request)),
            // Garbage (or a type we do not know, which is no offence: the node just does not
            // answer it) is handed on; a stream closed early stays an error.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Err(Malformed(e.to_string()))),
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<KadResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        if self.unanswered {
            // Written and closed: the request was delivered as far as a stream can tell.
            return Ok(KadResponse::to(MessageKind::AddProvider));
        }
        let bytes = read_message(io, self.max).await?;
        KadResponse::decode(&bytes, Instant::now())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let req = req.map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        self.unanswered = matches!(req, KadRequest::AddProvider { .. });
        write_message(io, &req.encode(Instant::now()), self.max).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: KadResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &res.encode(Instant::now()), self.max).await
    }
}

/// The kad protocol behaviour: our requests out, peers' requests in (when serving).
pub type Kad = request_response::Behaviour<KadCodec>;

/// Builds the kad behaviour for `protocol`, messages of at most `max` bytes; a request unanswered
/// after `timeout` fails. A node that does not `serve` speaks the protocol outbound only (peers
/// see a client, as kad's client mode has it).
pub fn new_behaviour(protocol: StreamProtocol, timeout: Duration, serve: bool, max: usize) -> Kad {
    let support = if serve {
        ProtocolSupport::Full
    } else {
        ProtocolSupport::Outbound
    };
    request_response::Behaviour::with_codec(
        KadCodec::new(max),
        [(protocol, support)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(MAX_KAD_STREAMS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

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
