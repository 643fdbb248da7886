//! Builds the Kademlia behaviour from our configuration.

use libp2p::PeerId;
use libp2p::kad::{self, Mode, StoreInserts};

use crate::config::{KAD_MAX_PACKET_SIZE, ProtocolConfig};
use crate::store::{BoundedStore, StoreLimits};

/// The kad behaviour with our record store.
pub type Kademlia = kad::Behaviour<BoundedStore>;

/// Kademlia in server mode, with the packet limit raised to carry the largest record and record
/// filtering on, so that every inbound record is validated before it is stored.
pub fn new_behaviour(local: PeerId, config: &ProtocolConfig, limits: StoreLimits) -> Kademlia {
    let t = &config.timing;
    let mut kad_config = kad::Config::new(config.kad_protocol.clone());
    kad_config
        .set_replication_factor(config.replication_factor)
        .set_parallelism(config.parallelism)
        .set_query_timeout(t.query_timeout)
        .set_substreams_timeout(t.query_timeout.min(std::time::Duration::from_secs(10)))
        .set_record_ttl(Some(t.record_ttl))
        // Replication, republication and routing refresh run on the node's own lookups
        // (`crate::lookup`), which take at most k peers from one answer.
        .set_replication_interval(None)
        .set_publication_interval(None)
        .set_provider_record_ttl(Some(t.record_ttl))
        .set_periodic_bootstrap_interval(None)
        .set_record_filtering(StoreInserts::FilterBoth)
        .set_max_packet_size(KAD_MAX_PACKET_SIZE);
    let store = BoundedStore::new(local, limits).with_expiry_margin(t.expiry_margin());
    let mut kad = kad::Behaviour::with_config(local, store, kad_config);
    // Without a confirmed external address kad would stay a client: it would neither answer
    // queries nor enter anyone's routing table (rust-libp2p #4074). Serving nodes say so.
    kad.set_mode(Some(if config.client_mode {
        Mode::Client
    } else {
        Mode::Server
    }));
    kad
}
