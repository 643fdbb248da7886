//! Answers to inbound Kademlia requests, from this node's own routing table and store. A
//! PUT_VALUE is acknowledged (its record echoed, as the kad protocol has it) only when admission
//! kept the record, so a peer's count of acknowledgements is a count of copies really held.
//! Provider records are kept as libp2p's kad keeps them (a peer announces only itself).

use std::time::Instant;

use dht_behaviours::config::{MAX_ADDRS_PER_PEER, MAX_ESTABLISHED};
use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind, WirePeer};
use libp2p::PeerId;
use libp2p::kad::{KBucketKey, RecordKey};

use super::Core;
use super::events::{Action, InboundId};
use super::queries::QueryEvent;
use super::records::{Admitted, Records, Refusal, Source};
use super::routing::RoutingTable;

/// Inbound kad requests one peer may make per second, sustained. A busy honest client (the
/// standard benchmark's, 400 stores a second through 20 nodes) sends a node about 500.
pub const SERVE_RATE_PER_PEER: u32 = 2_000;
/// Inbound kad requests one peer may make in a burst.
pub const SERVE_BURST_PER_PEER: u32 = 4_000;
/// Peers whose request rate is tracked at once: as many as the connections a node keeps.
pub const MAX_RATED_PEERS: usize = MAX_ESTABLISHED as usize;

// A hand-off (records sent to a newcomer at once) fits in one peer's burst.
const _: () = assert!(super::maintenance::MAX_HANDOFF_PER_PEER as u32 <= SERVE_BURST_PER_PEER);

/// What serving one request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Served {
    /// Answer with this.
    Answer(KadResponse),
    /// A PUT_VALUE kept (or already held): answer with the echo.
    Kept(Admitted, KadResponse),
    /// A PUT_VALUE refused: no acknowledgement goes back.
    Refused(Refusal),
    /// A request that takes no answer (ADD_PROVIDER), with the providers kept.
    Silent(usize),
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
            closer: closer(table, &key, &peer, k),
            ..KadResponse::to(MessageKind::FindNode)
        }),
        KadRequest::GetValue { key } => {
            // The record if held, and the closer peers either way, as every kad server answers.
            let record = records.get(&RecordKey::new(&key), now).cloned();
            Served::Answer(KadResponse {
                record,
                closer: closer(table, &key, &peer, k),
                ..KadResponse::to(MessageKind::GetValue)
            })
        }
        KadRequest::PutValue { record } => {
            let echo = record.clone();
            match records.admit(Source::Peer(peer), record, now) {
                Ok(admitted) => Served::Kept(
                    admitted,
                    KadResponse {
                        record: Some(echo),
                        ..KadResponse::to(MessageKind::PutValue)
                    },
                ),
                Err(refusal) => Served::Refused(refusal),
            }
        }
        KadRequest::GetProviders { key } => {
            let providers = records
                .providers(&RecordKey::new(&key), now)
                .map(|p| WirePeer {
                    peer: p.provider,
                    addrs: p.addresses.clone(),
                })
                .collect();
            Served::Answer(KadResponse {
                providers,
                closer: closer(table, &key, &peer, k),
                ..KadResponse::to(MessageKind::GetProviders)
            })
        }
        KadRequest::AddProvider { key, providers } => {
            let key = RecordKey::new(&key);
            let mut kept = 0;
            // A peer may announce itself only.
            for mut p in providers.into_iter().filter(|p| p.peer == peer) {
                p.addrs.truncate(MAX_ADDRS_PER_PEER);
                if records.add_provider(key.clone(), p.peer, p.addrs, now) {
                    kept += 1;
                }
            }
            Served::Silent(kept)
        }
        KadRequest::Ping => Served::Answer(KadResponse::to(MessageKind::Ping)),
    }
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn serve(
        &mut self,
        peer: PeerId,
        id: InboundId,
        request: KadRequest,
        serving: bool,
        now: Instant,
        out: &mut Vec<Action>,
        events: &mut Vec<QueryEvent>,
    ) {
        // A blocked peer's requests go unanswered, whatever reached us (the transport refuses
        // its connections too, but one may have been open when it was blocked).
        if !self.config.serving || self.is_blocked(&peer) {
            out.push(Action::Answer { id, response: None });
            return;
        }
        // Each peer gets its share of this node, not the node: beyond its rate its requests are
        // refused (the stream reset), at the cost of a map lookup.
        if !self.serve_limits.take(&super::rate::peer_key(&peer), now) {
            self.stats.throttled += 1;
            out.push(Action::Answer { id, response: None });
            return;
        }
        self.stats.served += 1;
        // As go-libp2p-kad-dht answers: a bucket's worth of closer peers, whatever the replication
        // factor, so that a small k does not starve the asker's routing table.
        let k = self.config.bucket_size();
        let served = serve(&self.routing, &mut self.records, peer, request, k, now);
        let response = match served {
            Served::Answer(r) => Some(r),
            Served::Kept(admitted, r) => {
                self.stats.puts_kept += 1;
                if admitted == Admitted::New
                    && let Some(record) = &r.record
                {
                    self.kept.push((record.key.clone(), Some(peer)));
                }
                Some(r)
            }
            Served::Refused(refusal) => {
                self.refused(peer, refusal, now, out);
                None
            }
            Served::Silent(_) => None,
        };
        out.push(Action::Answer { id, response });
        if serving {
            self.seen(peer, Vec::new(), now, events);
        }
    }
}
