//! The protocol core of `dht`: every `NetworkBehaviour` a node is made of, with nothing that knows
//! about tasks, users or the command line.
//!
//! - [`behaviour`]: the composed behaviour (kad, custom commands, broadcast, identify, ping, limits);
//! - [`config`]: limits as named constants, the timing profile and its checks;
//! - [`kad`], [`store`], [`validation`]: Kademlia, its bounded record store and record checks;
//! - [`lookup`], [`kad_wire`]: our own iterative lookups, sent over the kad protocol;
//! - [`command`], [`broadcast`], [`info`], [`mirror`]: our own sub-protocols, over [`frame`]d
//!   streams.

pub mod behaviour;
pub mod broadcast;
pub mod command;
pub mod config;
pub mod frame;
pub mod info;
pub mod ip_limits;
pub mod kad;
pub mod kad_wire;
pub mod lookup;
pub mod mirror;
pub mod store;
pub mod validation;

pub use behaviour::{DhtBehaviour, DhtBehaviourEvent};
pub use config::{ConfigError, ProtocolConfig, Timing};
