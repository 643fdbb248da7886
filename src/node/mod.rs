//! The node: builds the swarm, binds its listeners, and builds the event loop that owns it. The
//! caller spawns the loop and talks to it through the channel ends it is handed ([`Link`]).

mod bandwidth;
mod event_loop;
pub mod handshakes;
mod pending;
pub mod persistence;
mod warnings;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dht_behaviours::DhtBehaviour;
use futures::{FutureExt, StreamExt};
use libp2p::Multiaddr;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::{Transport, upgrade};
use libp2p::identity::Keypair;
use libp2p::kad::Record;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Swarm, SwarmBuilder, noise, plaintext, tcp, yamux};

use bandwidth::Counted;
use std::net::IpAddr;
use std::time::{Instant, SystemTime};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, info};

pub use crate::core::joining::bootstrap::{BOOTSTRAP_BACKOFF_MAX, BOOTSTRAP_BACKOFF_MIN};
pub use bandwidth::Bandwidth;
pub use event_loop::{EXPIRY_SWEEP, MAX_RUNNING_HANDLERS, TICK};

use crate::command::Command;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::identity;
use crate::options::{COMMAND_BUFFER, DhtOptions, EVENT_BUFFER, TransportKind};
pub(crate) use event_loop::EventLoop;
use event_loop::Parts;
use handshakes::{HandshakeGuard, INBOUND_HANDSHAKE_TIMEOUT};
use persistence::RecordDb;

/// How long start-up waits for every listener to report its address.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

fn build_swarm(
    keypair: Keypair,
    options: &DhtOptions,
    bandwidth: Arc<Bandwidth>,
) -> Result<Swarm<DhtBehaviour>> {
    let protocol = options.protocol.clone();
    let idle = protocol.timing.idle_timeout;
    let transport_error = |e: &dyn std::fmt::Display| Error::Transport(e.to_string());
    let builder = SwarmBuilder::with_existing_identity(keypair).with_tokio();
    // Both arms are TCP-or-memory + security + yamux, with byte counters under the security layer.
    let swarm = match options.transport {
        TransportKind::Tcp => builder
            .with_other_transport(|key| {
                let noise = noise::Config::new(key).map_err(Box::new)?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(HandshakeGuard::new(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .map(move |stream, _| Counted::new(stream, bandwidth.clone()))
                        .upgrade(upgrade::Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default())
                        .inbound_timeout(INBOUND_HANDSHAKE_TIMEOUT),
                ))
            })
            .map_err(|e| transport_error(&e))?
            .with_dns()
            .map_err(|e| transport_error(&e))?
            .with_behaviour(|key| DhtBehaviour::new(key, &protocol))
            .map_err(|e| transport_error(&e))?
            .with_swarm_config(swarm_config(idle))
            .build(),
        TransportKind::Memory => builder
            .with_other_transport(|key| {
                MemoryTransport::default()
                    .map(move |stream, _| Counted::new(stream, bandwidth.clone()))
                    .upgrade(upgrade::Version::V1Lazy)
                    .authenticate(plaintext::Config::new(key))
                    .multiplex(yamux::Config::default())
            })
            .map_err(|e| transport_error(&e))?
            .with_behaviour(|key| DhtBehaviour::new(key, &protocol))
            .map_err(|e| transport_error(&e))?
            .with_swarm_config(swarm_config(idle))
            .build(),
    };
    Ok(swarm)
}

/// Swarm settings shared by both transports. Substreams negotiate their protocol lazily: the
/// opener sends its protocol and its first message together instead of waiting a round trip for
/// the other side's confirmation (every kad request, command and hand-off opens a substream).
fn swarm_config(
    idle: std::time::Duration,
) -> impl FnOnce(libp2p::swarm::Config) -> libp2p::swarm::Config {
    move |c| {
        c.with_idle_connection_timeout(idle)
            .with_substream_upgrade_protocol_override(upgrade::Version::V1Lazy)
    }
}

/// The handle's ends of a node's channels.
pub(crate) struct Link {
    /// The node's key (its peer id, and the signer of its IPNS records).
    pub identity: libp2p::identity::Keypair,
    /// Where commands go.
    pub commands: mpsc::Sender<Command>,
    /// The event stream's sender, weakly: the loop owns it, so streams end when the loop does.
    pub events: std::sync::Weak<broadcast::Sender<Event>>,
    /// Closed when the loop has ended.
    pub alive: watch::Receiver<()>,
}

/// Builds a node; returns once every listen address is bound, or the first bind error. The
/// returned loop does nothing until it is spawned.
/// The record database in `data_dir`, if the node has one, and the records read from it.
async fn open_store(
    data_dir: Option<&std::path::Path>,
    local: libp2p::PeerId,
) -> Result<(Option<Arc<RecordDb>>, Vec<Record>)> {
    let Some(dir) = data_dir else {
        return Ok((None, Vec::new()));
    };
    // Reading (and cleaning) a large database is blocking work: off the runtime's workers,
    // which other nodes of this process (and the handle) share.
    let dir_name = dir.display().to_string();
    let dir = dir.to_path_buf();
    let (db, loaded) = tokio::task::spawn_blocking(move || open_records(&dir, local))
        .await
        .map_err(|e| Error::Persistence {
            path: dir_name.clone(),
            reason: format!("the database task failed: {e}"),
        })??;
    Ok((Some(Arc::new(db)), loaded))
}

/// Listens on `addrs` and waits until each has its address (or fails with a clear error).
async fn start_listening(
    swarm: &mut Swarm<DhtBehaviour>,
    addrs: &[Multiaddr],
) -> Result<Vec<Multiaddr>> {
    let mut waiting = HashSet::new();
    for addr in addrs {
        ensure_port_free(addr)?;
        let id = swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
            addr: addr.clone(),
            reason: describe(&e),
        })?;
        waiting.insert((id, addr.clone()));
    }
    let mut listen_addrs = Vec::new();
    let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
    while let Some((_, first)) = waiting.iter().next().cloned() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| Error::Listen {
                addr: first.clone(),
                reason: "no address after 5 s".into(),
            })?;
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                waiting.retain(|(id, _)| *id != listener_id);
                listen_addrs.push(address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let addr = waiting
                    .iter()
                    .find(|(id, _)| *id == listener_id)
                    .map(|(_, a)| a.clone());
                return Err(Error::Listen {
                    addr: addr.unwrap_or(first),
                    reason: reason
                        .err()
                        .map_or_else(|| "listener closed".into(), |e| e.to_string()),
                });
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                let addr = waiting
                    .iter()
                    .find(|(id, _)| *id == listener_id)
                    .map(|(_, a)| a.clone());
                return Err(Error::Listen {
                    addr: addr.unwrap_or(first),
                    reason: error.to_string(),
                });
            }
            other => debug!(?other, "event during start-up"),
        }
    }

    // A wildcard listener reports one address per interface, all at once: take those too.
    while let Some(Some(event)) = swarm.next().now_or_never() {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => listen_addrs.push(address),
            other => debug!(?other, "event during start-up"),
        }
    }
    Ok(listen_addrs)
}

pub(crate) async fn build(options: DhtOptions) -> Result<(EventLoop, Link)> {
    options.protocol.validate()?;
    let keypair = match (&options.keypair, &options.data_dir) {
        (Some(key), _) => key.clone(),
        (None, Some(dir)) => identity::load_or_create(&dir.join(persistence::KEY_FILE))?,
        (None, None) => Keypair::generate_ed25519(),
    };
    let bandwidth = Arc::new(Bandwidth::default());
    let mut swarm = build_swarm(keypair.clone(), &options, bandwidth.clone())?;
    let local = *swarm.local_peer_id();
    let (db, loaded) = open_store(options.data_dir.as_deref(), local).await?;
    let listen_addrs = start_listening(&mut swarm, &options.listen).await?;

    let (command_tx, command_rx) = mpsc::channel(COMMAND_BUFFER);
    let (event_tx, _) = broadcast::channel(EVENT_BUFFER);
    let events = Arc::new(event_tx);
    let (alive_tx, alive_rx) = watch::channel(());
    let weak_events = Arc::downgrade(&events);
    let event_loop = EventLoop::new(Parts {
        swarm,
        config: options.protocol.clone(),
        commands: command_rx,
        events,
        bootstrap: options.bootstrap.clone(),
        listen_addrs,
        alive: alive_tx,
        bandwidth,
        db,
        store: options.store_limits,
        loaded,
        identity: keypair.clone(),
        mirror_peers: options.mirror_peers.clone(),
        mirror_feeders: options.mirror_feeders.clone(),
    })
    .with_blocks(&options.blocked);
    let link = Link {
        identity: keypair,
        commands: command_tx,
        events: weak_events,
        alive: alive_rx,
    };
    Ok((event_loop, link))
}

/// Opens the record database in `dir` and reads its unexpired records, for the event loop to put
/// in the core's store before it turns on change tracking (only what changes from then on is
/// written back); the database holds the provider records it read for
/// [`persistence::restore_providers`].
fn open_records(dir: &std::path::Path, local: libp2p::PeerId) -> Result<(RecordDb, Vec<Record>)> {
    let db = RecordDb::open(dir)?;
    let loaded = db.load(local, Instant::now(), SystemTime::now())?;
    info!(
        records = loaded.records.len(),
        published = loaded.published,
        providers = loaded.providers,
        expired = loaded.expired,
        corrupt = loaded.corrupt,
        dir = %dir.display(),
        "records read from the data directory"
    );
    Ok((db, loaded.records))
}

/// libp2p-tcp binds listeners with `SO_REUSEPORT`, so on Linux a second process could share a
/// port already in use and take half of its connections. A plain bind first makes that an error.
fn ensure_port_free(addr: &Multiaddr) -> Result<()> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) if port != 0 => std::net::TcpListener::bind((ip, port))
            .map(drop)
            .map_err(|e| Error::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            }),
        _ => Ok(()),
    }
}

/// A transport error in words, with the OS error when there is one (e.g. "address in use").
fn describe<E: std::error::Error>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
