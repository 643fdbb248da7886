//! The handles' operations: who waits for each, and the core's outcome turned into the answer
//! the handle expects (the library's [`Error`]s, the status types).

use std::time::Duration;

use dht_behaviours::Timing;
use libp2p::PeerId;
use tracing::{debug, warn};

use super::EventLoop;
use crate::command::Reply;
use crate::core::vetting::without_p2p;
use crate::core::{Input, OpError, OpId, OpOk, Refusal, Report};
use crate::error::Error;
use crate::key::Key;
use crate::status::{self, Stored};

/// Who waits for an operation's outcome.
pub(crate) enum Caller {
    /// A store, and the key it stores under.
    Store(Key, Reply<Stored>),
    /// A fetch.
    Fetch(Key, Reply<Vec<u8>>),
    /// A `lookup` of the k closest peers.
    Peers(Reply<status::Lookup>),
    /// A provide, and the key announced.
    Provide(Key, Reply<status::Provided>),
    /// A search for providers.
    Providers(Reply<Vec<status::Provider>>),
    /// A search for a peer's addresses.
    FindPeer(PeerId, Reply<status::FoundPeer>),
    /// A broadcast: how many hand-offs went out.
    Broadcast(Reply<usize>),
    /// A custom command to a peer: its handler's answer.
    Command(PeerId, Reply<Vec<u8>>),
}

impl Caller {
    /// Answers an operation the core ended with an outcome of another kind (a bug): an error,
    /// not a wait until the handle's own deadline.
    fn mismatched(self) {
        let e = || Error::Timeout {
            operation: "operation",
            after: Duration::ZERO,
        };
        match self {
            Self::Store(_, r) => drop(r.send(Err(e()))),
            Self::Fetch(_, r) => drop(r.send(Err(e()))),
            Self::Peers(r) => drop(r.send(Err(e()))),
            Self::Provide(_, r) => drop(r.send(Err(e()))),
            Self::Providers(r) => drop(r.send(Err(e()))),
            Self::FindPeer(_, r) => drop(r.send(Err(e()))),
            Self::Broadcast(r) => drop(r.send(Err(e()))),
            Self::Command(_, r) => drop(r.send(Err(e()))),
        }
    }

    /// Answers with the error an operation that ended with `e` amounts to.
    fn fail(self, e: OpError, timing: &Timing) {
        let general = |e, key: Option<Key>, operation| error_of(e, key, operation, timing);
        match self {
            Self::Store(key, r) => drop(r.send(Err(general(e, Some(key), "store")))),
            Self::Fetch(key, r) => drop(r.send(Err(general(e, Some(key), "fetch")))),
            Self::Peers(r) => drop(r.send(Err(general(e, None, "lookup")))),
            Self::Provide(_, r) => drop(r.send(Err(general(e, None, "provide")))),
            Self::Providers(r) => drop(r.send(Err(general(e, None, "providers")))),
            Self::FindPeer(peer, r) => drop(r.send(Err(match e {
                OpError::NotFound => Error::PeerNotFound(peer),
                e => general(e, None, "find_peer"),
            }))),
            Self::Broadcast(r) => drop(r.send(Err(general(e, None, "broadcast")))),
            Self::Command(peer, r) => drop(r.send(Err(match e {
                OpError::CommandRefused(reason) => Error::CommandRefused { peer, reason },
                OpError::CommandFailed(reason) => Error::CommandFailed { peer, reason },
                _ => Error::Timeout {
                    operation: "custom command",
                    after: timing.command_timeout,
                },
            }))),
        }
    }
}

/// The library's error for an operation `operation` (on `key`, if it has one) that ended with
/// `e`.
fn error_of(e: OpError, key: Option<Key>, operation: &'static str, timing: &Timing) -> Error {
    let timeout = || Error::Timeout {
        operation,
        after: timing.query_timeout,
    };
    match e {
        OpError::NotFound => key.map_or_else(timeout, Error::NotFound),
        OpError::Timeout => timeout(),
        OpError::NoPeers => Error::NoPeers,
        OpError::Busy { pending } => Error::Busy { pending },
        OpError::NotKept => match key {
            Some(key) => Error::NotKept(key),
            None => timeout(),
        },
        OpError::Refused(r @ (Refusal::Full | Refusal::Quota)) => Error::StoreFull(r.to_string()),
        OpError::Refused(refusal) => Error::Refused(refusal.to_string()),
        OpError::BroadcastRefused(reason) => Error::BroadcastRefused(reason),
        OpError::ProvideRefused(reason) => Error::ProvideRefused(reason),
        // Only commands end so, and they are answered by the caller.
        OpError::CommandRefused(reason) | OpError::CommandFailed(reason) => {
            Error::Transport(reason)
        }
    }
}

impl EventLoop {
    /// Starts an operation for `caller` with the input `make` builds from its number.
    pub(super) fn start_op(&mut self, caller: Caller, make: impl FnOnce(OpId) -> Input) {
        let op = self.wires.start(caller);
        self.drive(make(op));
    }

    /// Operation `op` ended with `result`: its caller gets the answer.
    pub(super) fn op_done(&mut self, op: OpId, result: Result<OpOk, OpError>, report: Report) {
        let Some(caller) = self.wires.callers.remove(&op) else {
            return;
        };
        match result {
            Ok(ok) => self.succeeded(caller, ok, report),
            Err(e) => {
                self.counters.errors += 1;
                caller.fail(e, &self.config.timing);
            }
        }
    }

    fn succeeded(&mut self, caller: Caller, ok: OpOk, report: Report) {
        match (caller, ok) {
            (Caller::Store(key, reply), OpOk::Stored { kept, here }) => {
                let remote = kept.len();
                debug!(%key, remote, took = ?report.took, "store finished");
                let nodes = remote + usize::from(here);
                let _ = reply.send(Ok(Stored { key, nodes, remote }));
            }
            (Caller::Fetch(_, reply), OpOk::Value(value)) => {
                let _ = reply.send(Ok(value));
            }
            (Caller::Peers(reply), OpOk::Closest(peers)) => {
                let _ = reply.send(Ok(status::Lookup {
                    peers,
                    requests: u32::try_from(report.requests).unwrap_or(u32::MAX),
                    duration: report.took,
                }));
            }
            (Caller::Provide(key, reply), OpOk::Stored { kept, .. }) => {
                debug!(%key, remote = kept.len(), took = ?report.took, "provide finished");
                let remote = kept.len();
                let _ = reply.send(Ok(status::Provided { key, remote }));
            }
            (Caller::Providers(reply), OpOk::Providers(found)) => {
                let found = found
                    .into_iter()
                    .map(|p| status::Provider {
                        peer: p.peer,
                        addrs: p.addrs,
                    })
                    .collect();
                let _ = reply.send(Ok(found));
            }
            (Caller::FindPeer(peer, reply), OpOk::PeerAddrs { addrs, reached }) => {
                // Bare addresses, as providers' are: the peer id is beside them.
                let addrs = addrs.iter().map(without_p2p).collect();
                let _ = reply.send(Ok(status::FoundPeer {
                    peer,
                    addrs,
                    reached,
                }));
            }
            (Caller::Command(_, reply), OpOk::Command(bytes)) => {
                let _ = reply.send(Ok(bytes));
            }
            (Caller::Broadcast(reply), OpOk::Broadcast { sent }) => {
                let _ = reply.send(Ok(sent));
            }
            (caller, other) => {
                warn!(?other, "an operation ended with an answer of another kind");
                self.counters.errors += 1;
                caller.mismatched();
            }
        }
    }
}
