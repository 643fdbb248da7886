//! Multi-node scenarios over real TCP on 127.0.0.1.

mod broadcast;
mod cli;
mod command;
mod common;
mod disk;
mod durability;
mod garbage;
mod hostile;
mod kad_streams;
mod lifecycle;
mod one_host;
mod persistence;
mod records;
mod robustness;
mod rogue;
mod routing;
mod store_fetch;
