//! What the kad behaviour and a connection's handler tell each other.

use std::io;

use super::exchange::Outgoing;
use super::{Failure, OutboundId};
use crate::kad_wire::{KadRequest, KadResponse};

/// What the behaviour tells a connection's handler.
#[derive(Debug)]
pub enum HandlerIn {
    /// Send this request.
    Send(Outgoing),
    /// The answer to request `request` read on inbound stream `stream`; `None` refuses it,
    /// ending the stream unanswered.
    Answer {
        /// The stream's number in this handler.
        stream: u64,
        /// The request's number on the stream (from 1).
        request: u32,
        /// The answer.
        response: Option<Box<KadResponse>>,
    },
}

/// What a connection's handler tells the behaviour.
#[derive(Debug)]
pub enum HandlerOut {
    /// A peer's request, read on inbound stream `stream`.
    Request {
        /// The stream's number in this handler.
        stream: u64,
        /// The request's number on the stream (from 1).
        number: u32,
        /// The request.
        request: KadRequest,
    },
    /// A peer's request that could not be decoded; its stream is closed.
    Malformed(String),
    /// An inbound stream failed (cut, or over the size limit).
    InboundFailed(io::Error),
    /// The answer to one of our requests.
    Response {
        /// The request's number.
        id: OutboundId,
        /// The answer.
        response: Box<KadResponse>,
    },
    /// One of our requests failed.
    Failed {
        /// The request's number.
        id: OutboundId,
        /// Why.
        error: Failure,
    },
}
