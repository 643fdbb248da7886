//! `dht`: a Kademlia distributed hash table node on rust-libp2p.
//!
//! A node speaks the standard libp2p protocols (`/ipfs/kad/1.0.0`, identify, ping) over TCP with
//! noise and yamux, plus two of its own: custom commands and broadcast. One task owns the libp2p
//! swarm; a cloneable [`Dht`] handle talks to it through channels.
//!
//! ```no_run
//! use dht::{Dht, DhtOptions, Key};
//!
//! # async fn example() -> Result<(), dht::Error> {
//! let node = Dht::start(DhtOptions::default().bootstrap("/ip4/127.0.0.1/tcp/3000".parse().unwrap())).await?;
//! let stored = node.store(b"hello".to_vec()).await?;
//! println!("{} stored on {} nodes", stored.key, stored.nodes);
//! let value = node.fetch(&stored.key).await?;
//! assert_eq!(value, b"hello");
//! node.stop().await;
//! # Ok(()) }
//! ```

pub mod cid;
pub(crate) mod command;
pub mod core;
pub mod error;
pub mod event;
pub mod handle;
pub mod identity;
pub mod ipns;
pub mod key;
pub mod node;
pub mod options;
pub mod sim;
mod start;
pub mod status;

pub use command::CommandHandler;
pub use dht_behaviours::info::{NodeInfo, RoutingPeer};
pub use dht_behaviours::store::StoreLimits;
pub use dht_behaviours::{ProtocolConfig, Timing, config as limits};
pub use error::{Error, Result};
pub use event::{Event, Events};
pub use handle::Dht;
pub use key::{Key, KeyError};
pub use libp2p::{Multiaddr, PeerId};
pub use options::{DhtOptions, TransportKind};
pub use status::{
    BlockedPeer, Counters, LocalRecord, Lookup, NodeStatus, PeerEntry, RoutingEntry, Stored,
};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
