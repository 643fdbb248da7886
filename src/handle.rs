//! The handle: a cheap, cloneable way to use a running node from any task.

use std::future::Future;
use std::sync::Weak;
use std::time::Duration;

use dht_behaviours::Timing;
use dht_behaviours::config::MAX_BROADCAST_PAYLOAD;
use dht_behaviours::config::{MAX_COMMAND_REQUEST, MAX_VALUE_SIZE};
use dht_behaviours::info::NodeInfo;
use dht_behaviours::validation::validate_at;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::command::{Command, CommandHandler, Reply};
use crate::error::{Error, Result};
use crate::event::{Event, Events};
use crate::key::Key;
use crate::status::{
    BlockedPeer, FoundPeer, LocalRecord, Lookup, NodeStatus, PeerEntry, Provided, Provider,
    RoutingEntry, Stored,
};

/// Extra time a handle waits beyond an operation's own deadline before it gives up on the loop.
pub const HANDLE_GRACE: Duration = Duration::from_secs(2);
/// Deadline of quick local queries (status, routing table, store listing).
pub const LOCAL_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A running node. Clones share the node; after [`Dht::stop`] every call returns [`Error::Shutdown`].
#[derive(Clone)]
pub struct Dht {
    peer_id: PeerId,
    /// The node's key: it signs the IPNS records the node publishes under its own name.
    identity: Keypair,
    commands: mpsc::Sender<Command>,
    events: Weak<broadcast::Sender<Event>>,
    alive: watch::Receiver<()>,
    timing: Timing,
}

impl Dht {
    pub(crate) fn new(
        identity: Keypair,
        commands: mpsc::Sender<Command>,
        events: Weak<broadcast::Sender<Event>>,
        alive: watch::Receiver<()>,
        timing: Timing,
    ) -> Self {
        Self {
            peer_id: identity.public().to_peer_id(),
            identity,
            commands,
            events,
            alive,
            timing,
        }
    }

    async fn call<T>(
        &self,
        deadline: Duration,
        operation: &'static str,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| Error::Shutdown)?;
        match tokio::time::timeout(deadline + HANDLE_GRACE, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => Err(Error::Timeout {
                operation,
                after: deadline,
            }),
        }
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Stores `value` under its SHA-256 on the closest nodes and here. Returns the key and how
    /// many nodes hold it.
    pub async fn store(&self, value: impl Into<Vec<u8>>) -> Result<Stored> {
        let value = value.into();
        // The key is the value's own hash, so only the size can be wrong.
        if value.len() > MAX_VALUE_SIZE {
            return Err(Error::ValueTooLarge {
                size: value.len(),
                max: MAX_VALUE_SIZE,
            });
        }
        let key = Key::for_value(&value);
        self.call(2 * self.timing.query_timeout, "store", |reply| {
            Command::Store { key, value, reply }
        })
        .await
    }

    /// Stores `value` under `key`. A 32-byte key is a content key: the value must hash to it.
    pub async fn store_at(&self, key: &Key, value: impl Into<Vec<u8>>) -> Result<Stored> {
        let value = value.into();
        validate_at(key.as_bytes(), &value, std::time::SystemTime::now())
            .map_err(|e| Error::from_record(e, key))?;
        let key = key.clone();
        self.call(2 * self.timing.query_timeout, "store", |reply| {
            Command::Store { key, value, reply }
        })
        .await
    }

    /// Fetches the value under `key`, from here or from the network. A value under a content key
    /// is checked against its hash: a mismatching copy is discarded and the lookup goes on.
    pub async fn fetch(&self, key: &Key) -> Result<Vec<u8>> {
        let key = key.clone();
        self.call(self.timing.query_timeout, "fetch", |reply| Command::Fetch {
            key,
            reply,
        })
        .await
    }

    /// Finds the k peers closest to `key` with an iterative lookup; also reports its cost.
    pub async fn lookup(&self, key: &Key) -> Result<Lookup> {
        let key = key.clone();
        self.call(self.timing.query_timeout, "lookup", |reply| {
            Command::Lookup { key, reply }
        })
        .await
    }

    /// Announces this node as a provider of `key` on the k closest nodes, and again every
    /// provide interval (22 h) while the node runs (and after a restart with a data directory).
    /// Returns how many peers were seen to keep the announcement.
    pub async fn provide(&self, key: &Key) -> Result<Provided> {
        let key = key.clone();
        self.call(2 * self.timing.query_timeout, "provide", |reply| {
            Command::Provide { key, reply }
        })
        .await
    }

    /// Finds up to `count` providers of `key` (this node's own store first, then a lookup that
    /// asks each node on the way and stops once it has `count`). An empty list: none is known.
    pub async fn providers(&self, key: &Key, count: usize) -> Result<Vec<Provider>> {
        let key = key.clone();
        self.call(self.timing.query_timeout, "providers", |reply| {
            Command::Providers { key, count, reply }
        })
        .await
    }

    /// Finds the addresses of `peer`: from the routing table when it is there, else from a lookup
    /// of its id, which asks the peer itself once it is reached.
    pub async fn find_peer(&self, peer: PeerId) -> Result<FoundPeer> {
        self.call(self.timing.query_timeout, "find_peer", |reply| {
            Command::FindPeer { peer, reply }
        })
        .await
    }

    /// This node's key (it signs the node's own IPNS records).
    pub(crate) fn identity(&self) -> &Keypair {
        &self.identity
    }

    /// Sends a custom command to `peer` and returns its handler's reply.
    pub async fn custom_cmd(&self, peer: PeerId, payload: impl Into<Vec<u8>>) -> Result<Vec<u8>> {
        let payload = payload.into();
        if payload.len() > MAX_COMMAND_REQUEST {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                max: MAX_COMMAND_REQUEST,
            });
        }
        self.call(self.timing.command_timeout, "custom command", |reply| {
            Command::CustomCmd {
                peer,
                payload,
                reply,
            }
        })
        .await
    }

    /// Sets the handler that answers custom commands from other nodes. Without one, commands are
    /// refused with "no command handler registered". The handler has the command deadline to answer.
    pub async fn set_command_handler<F, Fut>(&self, handler: F) -> Result<()>
    where
        F: Fn(PeerId, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Vec<u8>, String>> + Send + 'static,
    {
        let handler: CommandHandler =
            std::sync::Arc::new(move |peer, payload| Box::pin(handler(peer, payload)));
        self.call(LOCAL_QUERY_TIMEOUT, "set handler", |reply| {
            Command::SetCommandHandler {
                handler: Some(handler),
                reply,
            }
        })
        .await
    }

    /// Removes the custom-command handler.
    pub async fn clear_command_handler(&self) -> Result<()> {
        self.call(LOCAL_QUERY_TIMEOUT, "clear handler", |reply| {
            Command::SetCommandHandler {
                handler: None,
                reply,
            }
        })
        .await
    }

    /// Sends `payload` to every node of the network; each delivers it once to its application (not
    /// to this node's). Returns the number of peers it was handed to directly.
    pub async fn broadcast(&self, payload: impl Into<Vec<u8>>) -> Result<usize> {
        let payload = payload.into();
        if payload.len() > MAX_BROADCAST_PAYLOAD {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                max: MAX_BROADCAST_PAYLOAD,
            });
        }
        self.call(LOCAL_QUERY_TIMEOUT, "broadcast", |reply| {
            Command::Broadcast { payload, reply }
        })
        .await
    }

    /// A stream of what happens on the node from now on: broadcasts and custom commands received,
    /// peers connected and disconnected. It ends when the node stops.
    pub fn events(&self) -> Events {
        let rx = match self.events.upgrade() {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(1);
                drop(tx);
                rx
            }
        };
        Events::new(rx)
    }

    /// The node's state now.
    pub async fn status(&self) -> Result<NodeStatus> {
        self.call(LOCAL_QUERY_TIMEOUT, "status", |reply| Command::Status {
            reply,
        })
        .await
    }

    /// Listen addresses, each ending in `/p2p/<peer id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        Ok(self.status().await?.listen_addrs)
    }

    /// Peers with an open connection.
    pub async fn peer_count(&self) -> Result<usize> {
        Ok(self.status().await?.connected_peers)
    }

    /// Records in the local store.
    pub async fn key_count(&self) -> Result<usize> {
        Ok(self.status().await?.stored_keys)
    }

    /// A snapshot of the routing table.
    pub async fn routing_table(&self) -> Result<Vec<RoutingEntry>> {
        self.call(LOCAL_QUERY_TIMEOUT, "routing table", |reply| {
            Command::RoutingTable { reply }
        })
        .await
    }

    /// Connected peers with their addresses.
    pub async fn connected_peers(&self) -> Result<Vec<PeerEntry>> {
        self.call(LOCAL_QUERY_TIMEOUT, "peers", |reply| {
            Command::ConnectedPeers { reply }
        })
        .await
    }

    /// The records held in the local store.
    pub async fn local_records(&self) -> Result<Vec<LocalRecord>> {
        self.call(LOCAL_QUERY_TIMEOUT, "local store", |reply| {
            Command::LocalRecords { reply }
        })
        .await
    }

    /// Dials `addr` (with or without `/p2p/<id>`) and returns the peer id that answered. The peer
    /// joins the routing table if it speaks our kad protocol.
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId> {
        self.call(self.timing.command_timeout, "connect", |reply| {
            Command::Connect { addr, reply }
        })
        .await
    }

    /// Asks `peer` for its account of itself (peer id, addresses, routing table, store size).
    pub async fn remote_info(&self, peer: PeerId) -> Result<NodeInfo> {
        self.call(self.timing.command_timeout, "info", |reply| {
            Command::RemoteInfo { peer, reply }
        })
        .await
    }

    /// Disconnects and refuses `peer` until [`Dht::unblock`], and drops it from the routing table.
    pub async fn block(&self, peer: PeerId) -> Result<()> {
        self.call(LOCAL_QUERY_TIMEOUT, "block", |reply| Command::Block {
            peer,
            reply,
        })
        .await
    }

    /// Lifts a block; whether the peer was blocked.
    pub async fn unblock(&self, peer: PeerId) -> Result<bool> {
        self.call(LOCAL_QUERY_TIMEOUT, "unblock", |reply| Command::Unblock {
            peer,
            reply,
        })
        .await
    }

    /// The block list: peers blocked by the operator, and peers blocked for misbehaving (forged
    /// content, invalid records, malformed messages) with the time their block has left.
    pub async fn blocked(&self) -> Result<Vec<BlockedPeer>> {
        self.call(LOCAL_QUERY_TIMEOUT, "blocked", |reply| Command::Blocked {
            reply,
        })
        .await
    }

    /// Stops the node: closes every connection and listener, ends the event loop, and returns when
    /// it is gone. Stopping a stopped node is fine.
    pub async fn stop(&self) {
        let _ = self
            .call(LOCAL_QUERY_TIMEOUT, "stop", |reply| Command::Stop { reply })
            .await;
        self.wait().await;
    }

    /// Whether the node still runs.
    pub fn running(&self) -> bool {
        self.alive.has_changed().is_ok()
    }

    /// Waits until the node has stopped.
    pub async fn wait(&self) {
        let mut alive = self.alive.clone();
        while alive.changed().await.is_ok() {}
    }
}
