//! Starting a node: the event loop that `node` builds, spawned on the runtime, and the handle
//! to it. The one place that knows both sides: the handle constructs nothing from `node`, and
//! `node` knows nothing of the handle.

use crate::error::Result;
use crate::handle::Dht;
use crate::node;
use crate::options::DhtOptions;

impl Dht {
    /// Starts a node and returns its handle once every listen address is bound.
    /// A bind error (address in use, bad address) is returned, not logged.
    pub async fn start(options: DhtOptions) -> Result<Self> {
        let timing = options.protocol.timing.clone();
        let (event_loop, link) = node::build(options).await?;
        tokio::spawn(event_loop.run());
        Ok(Dht::new(
            link.identity,
            link.commands,
            link.events,
            link.alive,
            timing,
        ))
    }
}
