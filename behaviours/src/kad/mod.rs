//! The Kademlia protocol on streams that carry many requests, as the libp2p kad-dht spec asks
//! ("implementations must handle additional RPC request messages on an incoming stream") and
//! go-libp2p-kad-dht does: it keeps one stream per peer and sends its next request on it, and an
//! ADD_PROVIDER, which has no answer, is lost on a stream the other side closed after one message.
//!
//! - [`framing`]: varint-length-prefixed messages, one after another on a stream;
//! - `exchange`: one turn of an outbound stream, a request and the one riding behind it;
//! - [`handler`]: one connection's streams: inbound ones served request after request, outbound
//!   ones pooled and reused;
//! - [`behaviour`]: the `NetworkBehaviour`: requests to peers, answers back, each exactly once.
//!
//! The messages themselves are [`crate::kad_wire`]'s.

pub mod behaviour;
mod exchange;
pub mod framing;
pub mod handler;
pub mod messages;
mod upgrade;

use std::io;
use std::time::Duration;

use libp2p::StreamProtocol;

pub use behaviour::{Event, Kad, Responder};

use crate::config::MAX_CONNECTIONS_PER_PEER;

/// Peers' kad streams open at once on one connection; one more is refused (reset) at once.
/// go-libp2p-kad-dht opens one per peer; rust-libp2p's kad serves up to 32. Twice our own
/// outbound pool: a peer of ours replacing idle streams (the new one may arrive before the old
/// one's end is seen) never meets the limit.
pub const MAX_INBOUND_KAD_STREAMS: usize = 64;
/// Our kad streams open at once on one connection (requests beyond wait for one to be free).
pub const MAX_OUTBOUND_KAD_STREAMS: usize = 32;
// A full outbound pool and as many replacements fit within a peer's inbound limit.
const _: () = assert!(MAX_INBOUND_KAD_STREAMS >= 2 * MAX_OUTBOUND_KAD_STREAMS);
/// Peers' kad streams open at once from one peer, on all its connections.
pub const MAX_INBOUND_KAD_STREAMS_PER_PEER: usize =
    MAX_INBOUND_KAD_STREAMS * MAX_CONNECTIONS_PER_PEER as usize;
/// Requests one inbound stream serves; after answering the last, the stream is closed and the
/// peer opens another. Nothing accumulates per stream, so this is a backstop, set so that a peer
/// at its full serve rate (`SERVE_RATE_PER_PEER`) reopens about once a minute.
pub const MAX_REQUESTS_PER_KAD_STREAM: u32 = 131_072;

/// Request ids of [`Kad`]: unique per behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboundId(u64);

/// The bounds of one connection's kad streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// The largest message read or written.
    pub max_message: usize,
    /// How long one of our requests may take, from being sent to its answer.
    pub request_timeout: Duration,
    /// How long a stream may stay open between requests (inbound: waiting for the peer's next
    /// one; outbound: waiting for ours).
    pub idle_timeout: Duration,
    /// Peers' streams open at once on the connection.
    pub max_inbound_streams: usize,
    /// Our streams open at once on the connection.
    pub max_outbound_streams: usize,
    /// Requests served on one inbound stream.
    pub max_requests_per_stream: u32,
}

impl StreamLimits {
    /// The limits of the named constants, with the given message size and timeouts.
    pub fn new(max_message: usize, request_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            max_message,
            request_timeout,
            idle_timeout,
            max_inbound_streams: MAX_INBOUND_KAD_STREAMS,
            max_outbound_streams: MAX_OUTBOUND_KAD_STREAMS,
            max_requests_per_stream: MAX_REQUESTS_PER_KAD_STREAM,
        }
    }
}

/// Why one of our requests failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No answer by the request timeout.
    #[error("the request timed out")]
    Timeout,
    /// The peer could not be dialed.
    #[error("the peer could not be dialed")]
    Dial,
    /// The peer does not speak our kad protocol.
    #[error("the peer does not speak the kad protocol")]
    Unsupported,
    /// The peer ended the request's stream without an answer: it refused the request (its rate
    /// limit, a full store) and is alive.
    #[error("the peer refused the request")]
    Refused,
    /// The connection closed before the answer.
    #[error("the connection closed")]
    ConnectionClosed,
    /// The stream failed, or the answer was malformed (`InvalidData`).
    #[error("{0}")]
    Io(io::Error),
}

impl Failure {
    /// The same failure again (an I/O error by its kind and message), for a request's follower.
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Timeout => Self::Timeout,
            Self::Dial => Self::Dial,
            Self::Unsupported => Self::Unsupported,
            Self::Refused => Self::Refused,
            Self::ConnectionClosed => Self::ConnectionClosed,
            Self::Io(e) => Self::Io(io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// Whether the peer answered bytes that are no kad answer.
    pub fn is_malformed(&self) -> bool {
        matches!(self, Self::Io(e) if e.kind() == io::ErrorKind::InvalidData)
    }
}

/// Builds the kad behaviour for `protocol` within `limits`. A node that does not `serve` speaks
/// the protocol outbound only (peers see a client, as kad's client mode has it).
pub fn new_behaviour(protocol: StreamProtocol, serve: bool, limits: StreamLimits) -> Kad {
    Kad::new(protocol, serve, limits)
}
