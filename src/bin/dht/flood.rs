//! `dht flood`: hostile load against one node, to measure its defences. One fresh identity sends
//! PUT_VALUE requests with distinct keys as fast as the node takes them (a window of requests in
//! flight, a new one as each ends), and counts what it acknowledged and refused.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dht::{Multiaddr, PeerId, ProtocolConfig};
use dht_behaviours::kad_codec::MAX_KAD_STREAMS;
use dht_behaviours::kad_wire::KadRequest;
use dht_behaviours::{DhtBehaviour, DhtBehaviourEvent};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{Record, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{Event, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{SwarmBuilder, noise, tcp, yamux};
use serde::Serialize;

/// Requests in flight: half the kad streams a connection carries (the rest is the target's own).
const IN_FLIGHT: usize = MAX_KAD_STREAMS / 2;

/// What the flood did.
#[derive(Debug, Serialize)]
pub struct FloodReport {
    /// Seconds it ran.
    pub seconds: f64,
    /// PUT_VALUE requests sent.
    pub sent: u64,
    /// Acknowledged (the record echoed: the node kept it).
    pub acknowledged: u64,
    /// Answered with nothing, reset or failed (refused, throttled, or over a limit).
    pub refused: u64,
    /// Value bytes acknowledged.
    pub bytes_acknowledged: u64,
}

/// Floods the node at `addr` (which must end in `/p2p/<id>`) for `duration` with `size`-byte
/// values.
pub async fn run(addr: Multiaddr, duration: Duration, size: usize) -> Result<FloodReport> {
    let Some(Protocol::P2p(target)) = addr.iter().last() else {
        bail!("the address must end in /p2p/<peer id>: {addr}");
    };
    let target: PeerId = target;
    let protocol = ProtocolConfig::default();
    let mut swarm = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .context("transport")?
        .with_behaviour(|key| DhtBehaviour::new(key, &protocol))
        .context("behaviour")?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    let started = Instant::now();
    let mut report = FloodReport {
        seconds: 0.0,
        sent: 0,
        acknowledged: 0,
        refused: 0,
        bytes_acknowledged: 0,
    };
    let mut in_flight = std::collections::HashSet::new();
    let run_id: u64 = rand::random();
    while started.elapsed() < duration || !in_flight.is_empty() {
        while started.elapsed() < duration && in_flight.len() < IN_FLIGHT {
            let mut value = vec![0u8; size];
            value[..8.min(size)].copy_from_slice(&report.sent.to_be_bytes()[..8.min(size)]);
            let key = format!("/flood/{run_id:016x}/{}", report.sent).into_bytes();
            let record = Record::new(RecordKey::new(&key), value);
            let id = swarm.behaviour_mut().kad.send_request_with_addresses(
                &target,
                Ok(KadRequest::PutValue { record }),
                vec![addr.clone()],
            );
            in_flight.insert(id);
            report.sent += 1;
        }
        let event = tokio::time::timeout(Duration::from_secs(30), swarm.select_next_some())
            .await
            .context("the node stopped answering for 30 s")?;
        // Each request ends once: answered with its record echoed (kept), or anything else.
        let (request_id, kept) = match event {
            SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            })) => (request_id, response.record.is_some()),
            SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(Event::OutboundFailure {
                request_id,
                ..
            })) => (request_id, false),
            _ => continue,
        };
        if !in_flight.remove(&request_id) {
            continue;
        }
        if kept {
            report.acknowledged += 1;
            report.bytes_acknowledged += size as u64;
        } else {
            report.refused += 1;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
