//! Answers to inbound Kademlia requests, from this node's own routing table and store. A
//! PUT_VALUE is acknowledged (its record echoed, as the kad protocol has it) only when admission
//! kept the record, so a peer's count of acknowledgements is a count of copies really held.

use std::time::Instant;

use dht_behaviours::kad_wire::{KadRequest, KadResponse, WirePeer};
use libp2p::PeerId;
use libp2p::kad::{KBucketKey, RecordKey};

use super::records::{Admitted, Records, Refusal, Source};
use super::routing::RoutingTable;

/// What serving one request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Served {
    /// Answer with this.
    Answer(KadResponse),
    /// A PUT_VALUE kept (or already held): answer with the echo.
    Kept(Admitted, KadResponse),
    /// A PUT_VALUE refused: no acknowledgement goes back.
    Refused(Refusal),
}

/// The `k` peers of `table` closest to `key`, the requester left out.
fn closer(table: &RoutingTable, key: &[u8], requester: &PeerId, k: usize) -> Vec<WirePeer> {
    let target = KBucketKey::new(key.to_vec());
    table
        .closest(&target, k + 1)
        .into_iter()
        .filter(|e| e.peer() != requester)
        .take(k)
        .map(|e| WirePeer {
            peer: *e.peer(),
            addrs: e.addrs.clone(),
        })
        .collect()
}

/// Serves `request` from `peer` at `now`.
pub fn serve(
    table: &RoutingTable,
    records: &mut Records,
    peer: PeerId,
    request: KadRequest,
    k: usize,
    now: Instant,
) -> Served {
    match request {
        KadRequest::FindNode { key } => Served::Answer(KadResponse {
            record: None,
            closer: closer(table, &key, &peer, k),
            dropped: 0,
        }),
        KadRequest::GetValue { key } => {
            // The record if held, and the closer peers either way, as every kad server answers.
            let record = records.get(&RecordKey::new(&key), now).cloned();
            Served::Answer(KadResponse {
                record,
                closer: closer(table, &key, &peer, k),
                dropped: 0,
            })
        }
        KadRequest::PutValue { record } => {
            let echo = record.clone();
            match records.admit(Source::Peer(peer), record, now) {
                Ok(admitted) => Served::Kept(
                    admitted,
                    KadResponse {
                        record: Some(echo),
                        closer: Vec::new(),
                        dropped: 0,
                    },
                ),
                Err(refusal) => Served::Refused(refusal),
            }
        }
    }
}
