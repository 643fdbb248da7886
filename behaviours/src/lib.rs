//! The protocol core of `dht`: every `NetworkBehaviour` a node is made of, with nothing that knows
//! about tasks, users or the command line.
//!
//! - [`behaviour`]: the composed behaviour (kad, custom commands, broadcast, identify, ping, limits);
//! - [`config`]: limits as named constants, the timing profile and its checks;
//! - [`kad_wire`], [`kad`]: the Kademlia wire messages both ways, and the protocol on streams
//!   that carry many requests (the node's core answers peers' requests and sends its own;
//!   libp2p-kad is not used);
//! - [`store`], [`validation`]: the bounded record store and record checks; [`providers`]: the
//!   bounded provider-record store;
//! - [`lookup`]: one iterative lookup, as a pure state machine; [`point`]: key-space points and
//!   XOR distances; [`diversity`]: address groups;
//! - [`command`], [`broadcast`], [`info`], [`mirror`]: our own sub-protocols, over [`frame`]d
//!   streams.
//! - [`validators`]: namespaced record validators (`/pk/`, `/ipns/`) as pure functions.

pub mod behaviour;
pub mod broadcast;
pub mod command;
pub mod config;
pub mod diversity;
pub mod frame;
pub mod info;
pub mod ip_limits;
pub mod kad;
pub mod kad_wire;
pub mod lookup;
pub mod mirror;
pub mod point;
pub mod providers;
pub mod store;
pub mod validation;
pub mod validators;

pub use behaviour::{DhtBehaviour, DhtBehaviourEvent};
pub use config::{ConfigError, ProtocolConfig, Timing};
