//! Messages from handles to the event loop; each carries a oneshot for its reply.

use std::sync::Arc;

use futures::future::BoxFuture;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

use dht_behaviours::info::NodeInfo;

use crate::error::Result;
use crate::key::Key;
use crate::status::{
    BlockedPeer, FoundPeer, LocalRecord, Lookup, NodeStatus, PeerEntry, Provided, Provider,
    RoutingEntry, Stored,
};

/// Answers inbound custom commands: the peer and payload in, a reply or a refusal reason out.
pub type CommandHandler = Arc<
    dyn Fn(PeerId, Vec<u8>) -> BoxFuture<'static, std::result::Result<Vec<u8>, String>>
        + Send
        + Sync,
>;

pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

pub(crate) enum Command {
    Store {
        key: Key,
        value: Vec<u8>,
        reply: Reply<Stored>,
    },
    Lookup {
        key: Key,
        reply: Reply<Lookup>,
    },
    Fetch {
        key: Key,
        reply: Reply<Vec<u8>>,
    },
    Provide {
        key: Key,
        reply: Reply<Provided>,
    },
    Providers {
        key: Key,
        count: usize,
        reply: Reply<Vec<Provider>>,
    },
    FindPeer {
        peer: PeerId,
        reply: Reply<FoundPeer>,
    },
    CustomCmd {
        peer: PeerId,
        payload: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    SetCommandHandler {
        handler: Option<CommandHandler>,
        reply: Reply<()>,
    },
    Broadcast {
        payload: Vec<u8>,
        reply: Reply<usize>,
    },
    Status {
        reply: Reply<NodeStatus>,
    },
    RoutingTable {
        reply: Reply<Vec<RoutingEntry>>,
    },
    ConnectedPeers {
        reply: Reply<Vec<PeerEntry>>,
    },
    LocalRecords {
        reply: Reply<Vec<LocalRecord>>,
    },
    RemoteInfo {
        peer: PeerId,
        reply: Reply<NodeInfo>,
    },
    Connect {
        addr: Multiaddr,
        reply: Reply<PeerId>,
    },
    Block {
        peer: PeerId,
        reply: Reply<()>,
    },
    Unblock {
        peer: PeerId,
        reply: Reply<bool>,
    },
    Blocked {
        reply: Reply<Vec<BlockedPeer>>,
    },
    Stop {
        reply: Reply<()>,
    },
}
