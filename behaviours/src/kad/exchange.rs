//! One turn of an outbound kad stream: our request written (with the one riding behind it, if
//! any), then its answers read in order. A request may carry a follower: a store's check of a
//! copy rides right behind its PUT, written in the same frame, so the target reads both in one
//! wake-up and answers the check after taking the PUT (servers read a stream's requests in
//! order: ours, go-libp2p-kad-dht's). A server that answers once per stream never reads the
//! follower; it is then sent again on a stream of its own, not counted as the peer's failure.

use std::io;
use std::time::Instant;

use libp2p::Stream;

use super::OutboundId;
use super::framing::{read_frame, write_messages};
use crate::kad_wire::{KadRequest, KadResponse, MessageKind};

/// A request of ours on its way to a stream.
#[derive(Debug)]
pub struct Outgoing {
    /// Its number, unique in the behaviour.
    pub id: OutboundId,
    /// The request.
    pub request: KadRequest,
    /// When it fails unanswered.
    pub deadline: Instant,
    /// Sent once already on a stream that ended before its answer: this try takes a new one.
    pub retried: bool,
    /// Whether the answer's closer peers are read (or skipped unread).
    pub closer_wanted: bool,
    /// A request written right behind this one on the same stream, answered after it.
    pub then: Option<Box<Outgoing>>,
}

impl Outgoing {
    /// ADD_PROVIDER has no answer, so a stream the peer closed would swallow it unnoticed: it
    /// always goes on a stream of its own (which then joins the pool).
    pub(super) fn needs_fresh_stream(&self) -> bool {
        self.retried || matches!(self.request, KadRequest::AddProvider { .. })
    }

    /// This request and its follower, if any.
    pub fn ids(&self) -> impl Iterator<Item = OutboundId> + '_ {
        std::iter::once(self.id).chain(self.then.as_ref().map(|t| t.id))
    }
}

/// How one of our requests ended on its stream.
pub(super) enum Exchange {
    /// Answered (or, for a request without an answer, written).
    Answered(Option<Box<KadResponse>>),
    /// The stream ended or broke before an answer: on a reused stream, the peer had closed it.
    Closed(io::Error),
    /// A fresh stream ended cleanly with no answer: the peer refused the request (a rate limit,
    /// a full store) and is alive.
    Refused,
    /// Anything else (a malformed or cut answer).
    Failed(io::Error),
    /// No answer by the deadline.
    TimedOut,
    /// A follower whose stream ended before its turn: the peer never read it, or answers once
    /// per stream.
    Unsent,
}

impl Exchange {
    pub(super) fn is_answered(&self) -> bool {
        matches!(self, Self::Answered(_))
    }

    /// What becomes of a follower when the request ahead of it ended as `self` (not answered).
    fn for_follower(&self) -> Self {
        match self {
            Self::TimedOut => Self::TimedOut,
            Self::Failed(e) => Self::Failed(io::Error::new(e.kind(), e.to_string())),
            // The stream ended under the request ahead: the follower was never read.
            Self::Refused | Self::Closed(_) | Self::Unsent | Self::Answered(_) => Self::Unsent,
        }
    }
}

/// Writes `out` and its follower on `io` (`reused`: a stream that served before), then reads
/// their answers; by `out`'s deadline. Returns the outcome of each.
pub(super) async fn exchange(
    io: &mut Stream,
    out: &Outgoing,
    reused: bool,
    max: usize,
) -> (Exchange, Option<Exchange>) {
    let now = Instant::now();
    let first = out.request.encode(now);
    let second = out.then.as_ref().map(|t| t.request.encode(now));
    let frames: Vec<&[u8]> = std::iter::once(first.as_slice())
        .chain(second.as_deref())
        .collect();
    let deadline = tokio::time::Instant::from_std(out.deadline);
    let work = async {
        if let Err(e) = write_messages(io, &frames, max).await {
            let first = if reused && is_closed(&e) {
                Exchange::Closed(e)
            } else {
                Exchange::Failed(e)
            };
            let second = out.then.as_ref().map(|_| first.for_follower());
            return (first, second);
        }
        let first = read_answer(io, out, reused, max).await;
        let Some(then) = &out.then else {
            return (first, None);
        };
        let second = if first.is_answered() {
            // Read as on a reused stream: an end here means the peer answers once per stream.
            match read_answer(io, then, true, max).await {
                Exchange::Closed(_) => Exchange::Unsent,
                other => other,
            }
        } else {
            first.for_follower()
        };
        (first, Some(second))
    };
    match tokio::time::timeout_at(deadline, work).await {
        // A fresh stream that breaks is no stream the peer had closed before: a failure.
        Ok((Exchange::Closed(e), second)) if !reused => (Exchange::Failed(e), second),
        Ok(outcomes) => outcomes,
        Err(_) => (
            Exchange::TimedOut,
            out.then.as_ref().map(|_| Exchange::TimedOut),
        ),
    }
}

/// Reads the answer to `out` (none for ADD_PROVIDER).
async fn read_answer(io: &mut Stream, out: &Outgoing, reused: bool, max: usize) -> Exchange {
    if out.request.kind() == MessageKind::AddProvider {
        return Exchange::Answered(None);
    }
    match read_frame(io, max).await {
        Ok(Some(bytes)) => {
            match KadResponse::decode_with(&bytes, Instant::now(), out.closer_wanted) {
                Ok(response) => Exchange::Answered(Some(Box::new(response))),
                Err(e) => Exchange::Failed(e),
            }
        }
        Ok(None) if reused => Exchange::Closed(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the stream unanswered",
        )),
        Ok(None) => Exchange::Refused,
        // A fresh stream reset after our request: refused, as a clean end.
        Err(e) if is_closed(&e) && !reused => Exchange::Refused,
        Err(e) if is_closed(&e) => Exchange::Closed(e),
        Err(e) => Exchange::Failed(e),
    }
}

/// Whether a read failed because the stream was reset or closed under it.
pub(super) fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::WriteZero
    )
}
