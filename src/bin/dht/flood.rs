//! `dht flood`: hostile load against one node, to measure its defences. One fresh identity sends
//! requests of one kind as fast as the node takes them (a window of requests in flight, a new one
//! as each ends), and counts what the node answered and refused: PUT_VALUE with distinct keys
//! (`put`, counting the acknowledgements: copies kept), or GET_VALUE / FIND_NODE for random keys
//! (`get`, `find`: lookups the node must answer from its routing table and store).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dht::{Multiaddr, PeerId, ProtocolConfig};
use dht_behaviours::kad::{self, MAX_OUTBOUND_KAD_STREAMS};
use dht_behaviours::kad_wire::KadRequest;
use dht_behaviours::{DhtBehaviour, DhtBehaviourEvent};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{Record, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{SwarmBuilder, noise, tcp, yamux};
use serde::Serialize;

/// Requests in flight: one on each kad stream a connection may carry.
const IN_FLIGHT: usize = MAX_OUTBOUND_KAD_STREAMS;

/// The requests a flood sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// PUT_VALUE with distinct keys and `--size`-byte values.
    Put,
    /// GET_VALUE for random keys (the node answers with its closest peers).
    Get,
    /// FIND_NODE for random keys.
    Find,
}

/// What the flood did.
#[derive(Debug, Serialize)]
pub struct FloodReport {
    /// The requests sent.
    pub kind: Kind,
    /// Seconds it ran.
    pub seconds: f64,
    /// Requests sent.
    pub sent: u64,
    /// Requests the node answered (for PUT_VALUE, the acknowledged ones).
    pub answered: u64,
    /// PUT_VALUE only: acknowledged (the record echoed: the node kept it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<u64>,
    /// Answered with nothing, reset or failed (refused, throttled, or over a limit).
    pub refused: u64,
    /// PUT_VALUE only: value bytes acknowledged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_acknowledged: Option<u64>,
}

/// The request number `n` of a `kind` flood tagged `run_id`.
fn request(kind: Kind, run_id: u64, n: u64, size: usize) -> KadRequest {
    match kind {
        Kind::Put => {
            let mut value = vec![0u8; size];
            value[..8.min(size)].copy_from_slice(&n.to_be_bytes()[..8.min(size)]);
            let key = format!("/flood/{run_id:016x}/{n}").into_bytes();
            KadRequest::PutValue {
                record: Record::new(RecordKey::new(&key), value),
            }
        }
        Kind::Get => KadRequest::GetValue {
            key: rand::random::<[u8; 32]>().to_vec(),
        },
        Kind::Find => KadRequest::FindNode {
            key: rand::random::<[u8; 32]>().to_vec(),
        },
    }
}

/// Floods the node at `addr` (which must end in `/p2p/<id>`) for `duration` with `kind`
/// requests (`size`-byte values for PUT_VALUE).
pub async fn run(
    addr: Multiaddr,
    duration: Duration,
    kind: Kind,
    size: usize,
) -> Result<FloodReport> {
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
    let put = kind == Kind::Put;
    let mut report = FloodReport {
        kind,
        seconds: 0.0,
        sent: 0,
        answered: 0,
        acknowledged: put.then_some(0),
        refused: 0,
        bytes_acknowledged: put.then_some(0),
    };
    let mut in_flight = std::collections::HashSet::new();
    let run_id: u64 = rand::random();
    while started.elapsed() < duration || !in_flight.is_empty() {
        while started.elapsed() < duration && in_flight.len() < IN_FLIGHT {
            let id = swarm.behaviour_mut().kad.send_request(
                &target,
                request(kind, run_id, report.sent, size),
                vec![addr.clone()],
            );
            in_flight.insert(id);
            report.sent += 1;
        }
        let event = tokio::time::timeout(Duration::from_secs(30), swarm.select_next_some())
            .await
            .context("the node stopped answering for 30 s")?;
        // Each request ends once: answered (a PUT_VALUE only with its record echoed: kept), or
        // anything else.
        let (request_id, answered) = match event {
            SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Response {
                id,
                response,
                ..
            })) => (id, !put || response.record.is_some()),
            SwarmEvent::Behaviour(DhtBehaviourEvent::Kad(kad::Event::Failure { id, .. })) => {
                (id, false)
            }
            _ => continue,
        };
        if !in_flight.remove(&request_id) {
            continue;
        }
        if answered {
            report.answered += 1;
            if put {
                report.acknowledged = report.acknowledged.map(|n| n + 1);
                report.bytes_acknowledged = report.bytes_acknowledged.map(|b| b + size as u64);
            }
        } else {
            report.refused += 1;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
