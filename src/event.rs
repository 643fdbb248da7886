//! What a node tells its users as it happens.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use libp2p::PeerId;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// Something that happened on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A broadcast from another node; each message arrives once.
    Broadcast {
        /// The node that sent it first.
        origin: PeerId,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// A peer sent this node a custom command (the handler answers it, with all of it).
    CommandReceived {
        /// The sender.
        peer: PeerId,
        /// The payload's first [`crate::options::EVENT_PAYLOAD_PREVIEW`] bytes.
        payload: Vec<u8>,
        /// The payload's whole length.
        len: usize,
    },
    /// The first connection to a peer opened.
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// This subscriber fell behind and missed this many events.
    Missed(u64),
}

/// A stream of [`Event`]s; every subscriber sees every event (or learns how many it missed).
pub struct Events {
    inner: BroadcastStream<Event>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Self {
        Self {
            inner: BroadcastStream::new(rx),
        }
    }

    /// The next event; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<Event> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|r| r.unwrap_or_else(|BroadcastStreamRecvError::Lagged(n)| Event::Missed(n)))
        })
    }
}
