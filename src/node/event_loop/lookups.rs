//! Stores, fetches, `lookup`, replication and refresh run on the core's query engine
//! ([`crate::core::queries`]), the same code the simulator drives. This file only translates: it
//! seeds a query with the routing table's closest peers, sends what the engine asks over the kad
//! client (`/ipfs/kad/1.0.0`, answered by any libp2p kad server), feeds answers and failures back,
//! and hands each outcome to the caller waiting for it.

use std::collections::HashMap;
use std::time::Instant;

use dht_behaviours::behaviour::vetted_addrs;
use dht_behaviours::kad_wire::{KadRequest, KadResponse, WirePeer};
use dht_behaviours::lookup::CANDIDATES_PER_K;
use libp2p::PeerId;
use libp2p::kad::{KBucketKey, Quorum};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId};
use tracing::{debug, trace, warn};

use super::{EventLoop, offence_for};
use crate::command::Reply;
use crate::core::outbox::{QueryId, RequestId};
use crate::core::queries::{Outcome, Purpose, QueryEvent};
use crate::error::Error;
use crate::key::Key;
use crate::node::reputation::Offence;
use crate::status::{self, Stored};

/// Who waits for a query's outcome (background queries have no one).
pub(crate) enum Caller {
    /// A store, and the key it stores under.
    Store(Key, Reply<Stored>),
    /// A fetch.
    Fetch(Key, Reply<Vec<u8>>),
    /// A `lookup` of the k closest peers.
    Peers(Reply<status::Lookup>),
}

/// The kad client's request ids of the requests in flight, mapped to the engine's.
#[derive(Default)]
pub(crate) struct InFlight {
    requests: HashMap<OutboundRequestId, RequestId>,
    callers: HashMap<QueryId, Caller>,
}

impl EventLoop {
    /// Starts a query for `key` from the closest peers of our routing table.
    pub(super) fn start_query(&mut self, key: Vec<u8>, purpose: Purpose, caller: Option<Caller>) {
        let k = self.config.replication_factor.get();
        let target = KBucketKey::new(key.clone());
        let seeds = self
            .swarm
            .behaviour_mut()
            .closest_known(&target, CANDIDATES_PER_K * k)
            .into_iter()
            .map(|p| (p, Vec::new()))
            .collect();
        let mut events = Vec::new();
        let id = self
            .queries
            .start(key, purpose, seeds, Instant::now(), &mut events);
        if let Some(caller) = caller {
            self.in_flight.callers.insert(id, caller);
        }
        self.on_query_events(events);
    }

    /// Carries out what the query engine asks.
    fn on_query_events(&mut self, events: Vec<QueryEvent>) {
        for event in events {
            match event {
                QueryEvent::Send(o) => {
                    let rid = self
                        .swarm
                        .behaviour_mut()
                        .kad_client
                        .send_request_with_addresses(&o.peer, o.request, o.addrs);
                    self.in_flight.requests.insert(rid, o.id);
                }
                QueryEvent::Done {
                    id,
                    outcome,
                    requests,
                    took,
                    ..
                } => self.query_done(id, outcome, requests, took),
                QueryEvent::CacheAt { mut record, peer } => match peer {
                    Some((peer, _)) => {
                        debug!(%peer, "caching a fetched value on the lookup path");
                        record.expires = Some(self.cache_expiry(record.expires));
                        self.swarm.behaviour_mut().kad.put_record_to(
                            record,
                            std::iter::once(peer),
                            Quorum::One,
                        );
                        self.counters.values_cached += 1;
                    }
                    None => self.cache_here(record),
                },
                QueryEvent::Lied { peer, error } => {
                    self.counters.records_refused += 1;
                    warn!(%peer, "discarded an invalid record: {error}");
                    self.offend(peer, offence_for(&error));
                }
                QueryEvent::OneoffDone { .. } => {}
            }
        }
    }

    fn query_done(
        &mut self,
        id: QueryId,
        outcome: Outcome,
        requests: usize,
        took: std::time::Duration,
    ) {
        let Some(caller) = self.in_flight.callers.remove(&id) else {
            if let Outcome::Refreshed = outcome {
                debug!(requests, "routing table refreshed");
            }
            return;
        };
        let query_timeout = self.config.timing.query_timeout;
        match (caller, outcome) {
            (Caller::Store(key, reply), Outcome::Stored { acked }) => {
                let remote = acked.len();
                debug!(%key, remote, ?took, "store finished");
                let _ = reply.send(Ok(Stored {
                    key,
                    nodes: remote + usize::from(!self.config.client_mode),
                    remote,
                }));
            }
            (Caller::Fetch(_, reply), Outcome::Found { record, .. }) => {
                let _ = reply.send(Ok(record.value));
            }
            (Caller::Fetch(key, reply), Outcome::NotFound { unanswered }) => {
                self.counters.errors += 1;
                // "Not found" only when the closest peers all answered; a closer peer that never
                // answered may hold the value (a loaded or distant node), and the caller should
                // know to try again rather than take the key as absent.
                let error = if unanswered == 0 {
                    Error::NotFound(key)
                } else {
                    debug!(%key, unanswered, "fetch ended without the value, closer peers unanswered");
                    Error::Timeout {
                        operation: "fetch",
                        after: self.config.timing.peer_timeout(),
                    }
                };
                let _ = reply.send(Err(error));
            }
            (Caller::Peers(reply), Outcome::Peers { peers }) => {
                let _ = reply.send(Ok(status::Lookup {
                    peers,
                    requests: u32::try_from(requests).unwrap_or(u32::MAX),
                    duration: took,
                }));
            }
            (Caller::Store(_, reply), _) => self.time_out(reply, "store", query_timeout),
            (Caller::Fetch(_, reply), _) => self.time_out(reply, "fetch", query_timeout),
            (Caller::Peers(reply), _) => self.time_out(reply, "lookup", query_timeout),
        }
    }

    /// Queries running (counted against [`super::MAX_PENDING_OPERATIONS`]).
    pub(super) fn running_queries(&self) -> usize {
        self.queries.len()
    }

    /// Time passed: overdue requests fail, slow fetches widen, late queries end.
    pub(super) fn tick_queries(&mut self, now: Instant) {
        let mut events = Vec::new();
        for peer in self.queries.tick(now, &mut events) {
            debug!(%peer, "kad request unanswered for the peer timeout; moving on");
        }
        self.on_query_events(events);
    }

    /// The peers of an answer that may join a lookup: not us, not blocked, not silent; with their
    /// dialable addresses (loopback ones only from a peer on this host).
    fn admissible(&self, from: &PeerId, closer: &[WirePeer]) -> Vec<WirePeer> {
        let now = Instant::now();
        let same_host = self.on_same_host(from);
        closer
            .iter()
            .filter(|p| {
                p.peer != self.local
                    && !self.reputation.is_blocked(&p.peer)
                    && !self.silence.is_silent(&p.peer, now)
            })
            .map(|p| WirePeer {
                peer: p.peer,
                addrs: vetted_addrs(p.peer, &p.addrs, same_host).collect(),
            })
            .collect()
    }

    /// A kad-client event: the answer or failure of one of our requests.
    pub(super) fn on_kad_client(
        &mut self,
        event: request_response::Event<KadRequest, KadResponse>,
    ) {
        let now = Instant::now();
        let mut events = Vec::new();
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some(id) = self.in_flight.requests.remove(&request_id) else {
                    return;
                };
                let closer = self.admissible(&peer, &response.closer);
                let dropped = response.dropped;
                let before = self.queries.ignored();
                self.queries
                    .on_response(id, response, closer, now, &mut events);
                let ignored = dropped + (self.queries.ignored() - before);
                self.counters.answer_peers_ignored += ignored as u64;
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let Some(id) = self.in_flight.requests.remove(&request_id) else {
                    return;
                };
                trace!(%peer, "kad request failed: {error}");
                if is_malformed_answer(&error) {
                    self.offend(peer, Offence::MalformedMessage);
                }
                let timed_out = matches!(error, OutboundFailure::Timeout);
                self.queries.on_failure(id, timed_out, now, &mut events);
            }
            other => trace!(?other, "kad client event"),
        }
        self.on_query_events(events);
    }
}

/// Whether an outbound failure means the peer answered bytes we could not decode.
fn is_malformed_answer(error: &OutboundFailure) -> bool {
    matches!(error, OutboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData)
}
