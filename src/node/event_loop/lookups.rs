//! Stores, fetches, `lookup` and own-record replication: each is a [`Lookup`] state machine driven
//! here, its requests sent through the kad client (`/ipfs/kad/1.0.0`, answered by any libp2p kad
//! server). Every query has a deadline; every request resolves (answer or failure) and is then
//! forgotten.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dht_behaviours::behaviour::vetted_addrs;
use dht_behaviours::kad_wire::{KadRequest, KadResponse, WirePeer};
use dht_behaviours::lookup::{
    CANDIDATES_PER_K, Candidate, LOOKUP_RESILIENCE, Lookup, LookupParams, PeerState,
};
use dht_behaviours::validation::validate_record;
use libp2p::PeerId;
use libp2p::kad::{KBucketKey, Quorum, Record};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId};
use tracing::{debug, trace, warn};

pub(crate) use super::kad_outbox::QueryKey;
use super::kad_outbox::{Sent, Waiting};
use super::{EventLoop, TICK, offence_for, replication_targets};
use crate::command::Reply;
use crate::error::Error;
use crate::key::Key;
use crate::node::reputation::Offence;
use crate::status::{self, Stored};

/// A fetch asks the closest peer alone first; unanswered this long, it asks alpha at once.
pub const FETCH_WIDEN_AFTER: Duration = Duration::from_millis(100);
/// What a query is for.
pub(crate) enum Purpose {
    /// Store a record on the k closest nodes; without a reply, a replication round's re-store.
    Store {
        record: Record,
        reply: Option<Reply<Stored>>,
    },
    /// Fetch the value under a key.
    Fetch { key: Key, reply: Reply<Vec<u8>> },
    /// A fetch already answered, run on under demand to find where to cache the value.
    Cache { record: Record },
    /// The k closest peers to a key.
    Peers { reply: Reply<status::Lookup> },
    /// A routing-table refresh: the peers it meets join the table as they connect.
    Refresh,
}

/// The PUT_VALUE phase of a store.
struct PutPhase {
    pending: usize,
    acked: usize,
    /// Further live candidates, closest first: one replaces each target that fails.
    spare: VecDeque<Candidate>,
}

/// One query in flight.
pub(crate) struct Query {
    key: Vec<u8>,
    lookup: Lookup,
    purpose: Purpose,
    started: Instant,
    put: Option<PutPhase>,
}

impl EventLoop {
    /// Starts a query for `key` from the closest peers of our routing table, with the query
    /// deadline, and sends its first requests.
    pub(super) fn start_query(&mut self, key: Vec<u8>, purpose: Purpose) -> QueryKey {
        let k = self.config.replication_factor.get();
        let (narrow, resilience) = match purpose {
            // The closest holder almost always answers alone; not found means all k said no.
            Purpose::Fetch { .. } | Purpose::Cache { .. } => (true, k),
            // Users asking for the k closest get k peers that answered.
            Purpose::Peers { .. } | Purpose::Refresh => (false, k),
            // A store's PUT_VALUEs check the k closest; the lookup only has to find them.
            Purpose::Store { .. } => (false, LOOKUP_RESILIENCE),
        };
        let target = KBucketKey::new(key.clone());
        let seeds: Vec<(PeerId, Vec<_>)> = self
            .swarm
            .behaviour_mut()
            .closest_known(&target, CANDIDATES_PER_K * k)
            .into_iter()
            .map(|p| (p, Vec::new()))
            .collect();
        let params = LookupParams {
            k,
            alpha: self.config.parallelism.get(),
            resilience,
            narrow,
        };
        let id = self.next_query;
        self.next_query += 1;
        let query = Query {
            lookup: Lookup::new(&key, seeds, params),
            key,
            purpose,
            started: Instant::now(),
            put: None,
        };
        // A store has two phases, the lookup and the PUTs, each given a query timeout.
        let phases = if matches!(query.purpose, Purpose::Store { .. }) {
            2
        } else {
            1
        };
        let deadline = Instant::now() + phases * self.config.timing.query_timeout + TICK;
        self.queries.insert(id, deadline, query);
        self.drive(id);
        id
    }

    /// Sends what the query may send now; finishes it when its lookup is done.
    fn drive(&mut self, id: QueryKey) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        if q.put.is_some() {
            return;
        }
        let request = match q.purpose {
            Purpose::Store { .. } | Purpose::Peers { .. } | Purpose::Refresh => {
                KadRequest::FindNode { key: q.key.clone() }
            }
            Purpose::Fetch { .. } | Purpose::Cache { .. } => {
                KadRequest::GetValue { key: q.key.clone() }
            }
        };
        let mut sends = Vec::new();
        while let Some(next) = q.lookup.next_request() {
            sends.push(next);
        }
        let finished = q.lookup.is_finished();
        for (peer, addrs) in sends {
            self.send_kad(id, peer, addrs, request.clone(), Sent::Lookup);
        }
        if finished {
            self.lookup_finished(id);
        }
    }

    fn send_kad(
        &mut self,
        id: QueryKey,
        peer: PeerId,
        addrs: Vec<libp2p::Multiaddr>,
        request: KadRequest,
        sent: Sent,
    ) {
        if !self.kad_outbox.has_room(&peer) {
            let waiting = Waiting {
                id,
                addrs,
                request,
                sent,
            };
            self.kad_outbox.wait(peer, waiting);
            return;
        }
        let rid = self
            .swarm
            .behaviour_mut()
            .kad_client
            .send_request_with_addresses(&peer, request, addrs);
        self.kad_outbox.sent(rid, id, peer, sent);
    }

    /// Request `rid` was answered or failed: its slot to the peer goes to the next request waiting
    /// for it, if any. Returns the query it was sent for.
    fn request_resolved(&mut self, rid: &OutboundRequestId) -> Option<(QueryKey, Sent)> {
        let done = self.kad_outbox.resolved(rid)?;
        let queries = &self.queries;
        if let Some(w) = self
            .kad_outbox
            .next_for(&done.peer, |q| queries.contains(&q))
        {
            self.send_kad(w.id, done.peer, w.addrs, w.request, w.sent);
        }
        // A request its query gave up on was already counted as failed.
        (!done.abandoned).then_some((done.id, done.sent))
    }

    /// A request failed (`timed_out`: went unanswered for the peer timeout): a lookup moves on, a
    /// store tries the next peer.
    fn request_failed(&mut self, id: QueryKey, peer: PeerId, sent: Sent, timed_out: bool) {
        match sent {
            Sent::Put => self.on_put_done(id, false),
            Sent::Lookup => {
                if let Some(q) = self.queries.get_mut(&id) {
                    if timed_out {
                        q.lookup.on_timeout(&peer);
                    } else {
                        q.lookup.on_failure(&peer);
                    }
                }
                self.drive(id);
            }
        }
    }

    /// Requests unanswered for the peer timeout count as failed; their queries move on.
    pub(super) fn give_up_overdue_requests(&mut self, now: Instant) {
        let timeout = self.config.timing.peer_timeout();
        for (id, peer, sent) in self.kad_outbox.overdue(now, timeout) {
            debug!(%peer, "kad request unanswered for {timeout:?}; moving on");
            self.request_failed(id, peer, sent, true);
        }
    }

    /// The lookup is done: a store starts putting, a fetch found nothing, a `lookup` answers.
    fn lookup_finished(&mut self, id: QueryKey) {
        let Some((deadline, mut q)) = self.queries.remove(&id) else {
            return;
        };
        let k = q.lookup.k();
        match q.purpose {
            Purpose::Store { ref record, .. } => {
                let live = q.lookup.closest(CANDIDATES_PER_K * k);
                let serving = !self.config.client_mode;
                let targets = replication_targets(
                    &self.local,
                    serving,
                    &q.key,
                    live.iter().map(|c| c.peer),
                    k,
                );
                let mut spare: VecDeque<Candidate> = VecDeque::new();
                let mut chosen = Vec::new();
                for c in live {
                    if targets.contains(&c.peer) {
                        chosen.push(c);
                    } else {
                        spare.push_back(c);
                    }
                }
                let record = record.clone();
                trace!(requests = q.lookup.requests(), took = ?q.started.elapsed(), targets = chosen.len(), "store lookup done; putting");
                q.put = Some(PutPhase {
                    pending: chosen.len(),
                    acked: 0,
                    spare,
                });
                self.queries.insert(id, deadline, q);
                if chosen.is_empty() {
                    self.store_finished(id);
                }
                for c in chosen {
                    let request = KadRequest::PutValue {
                        record: record.clone(),
                    };
                    self.send_kad(id, c.peer, c.addrs, request, Sent::Put);
                }
            }
            Purpose::Fetch { key, reply } => {
                self.counters.errors += 1;
                // "Not found" only when the closest peers all answered; a closer peer that never
                // answered may hold the value (a loaded or distant node), and the caller should
                // know to try again rather than take the key as absent.
                let unanswered = q.lookup.unanswered_closer();
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
            Purpose::Cache { mut record } => {
                // The closest node the lookup saw without the value; when every node it asked held
                // it, this node is that node.
                if let Some(peer) = q.lookup.closest_lacking() {
                    debug!(%peer, "caching a fetched value on the lookup path");
                    record.expires = Some(self.cache_expiry(record.expires));
                    self.swarm.behaviour_mut().kad.put_record_to(
                        record,
                        std::iter::once(peer),
                        Quorum::One,
                    );
                    self.counters.values_cached += 1;
                } else {
                    self.cache_here(record);
                }
            }
            Purpose::Refresh => debug!(requests = q.lookup.requests(), "routing table refreshed"),
            Purpose::Peers { reply } => {
                let peers = q
                    .lookup
                    .closest(k)
                    .into_iter()
                    .filter(|c| matches!(c.state, PeerState::Succeeded | PeerState::Held))
                    .map(|c| c.peer)
                    .collect();
                let _ = reply.send(Ok(status::Lookup {
                    peers,
                    requests: u32::try_from(q.lookup.requests()).unwrap_or(u32::MAX),
                    duration: q.started.elapsed(),
                }));
            }
        }
    }

    /// One PUT_VALUE of a store resolved: a failed target is replaced by the next live candidate;
    /// the store answers once none is pending.
    fn on_put_done(&mut self, id: QueryKey, acked: bool) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let Some(put) = q.put.as_mut() else {
            return;
        };
        put.pending = put.pending.saturating_sub(1);
        if acked {
            put.acked += 1;
        } else if let (Some(next), Purpose::Store { record, .. }) =
            (put.spare.pop_front(), &q.purpose)
        {
            put.pending += 1;
            let request = KadRequest::PutValue {
                record: record.clone(),
            };
            self.send_kad(id, next.peer, next.addrs, request, Sent::Put);
            return;
        }
        if put.pending == 0 {
            self.store_finished(id);
        }
    }

    fn store_finished(&mut self, id: QueryKey) {
        let Some((_, q)) = self.queries.remove(&id) else {
            return;
        };
        let remote = q.put.map_or(0, |p| p.acked);
        if let Purpose::Store {
            reply: Some(reply),
            record,
        } = q.purpose
        {
            let key = Key::from_record_key(&record.key);
            debug!(%key, remote, took = ?q.started.elapsed(), "store finished");
            let _ = reply.send(Ok(Stored {
                key,
                nodes: remote + usize::from(!self.config.client_mode),
                remote,
            }));
        }
    }

    /// The peers of an answer that may join a lookup: not us, not blocked, not silent; with their
    /// dialable addresses (loopback ones only from a peer on this host).
    fn admissible(&self, from: &PeerId, closer: Vec<WirePeer>) -> Vec<WirePeer> {
        let now = Instant::now();
        let same_host = self.on_same_host(from);
        closer
            .into_iter()
            .filter(|p| {
                p.peer != self.local
                    && !self.reputation.is_blocked(&p.peer)
                    && !self.silence.is_silent(&p.peer, now)
            })
            .map(|mut p| {
                p.addrs = vetted_addrs(p.peer, &p.addrs, same_host).collect();
                p
            })
            .collect()
    }

    /// A kad-client event: the answer or failure of one of our requests.
    pub(super) fn on_kad_client(
        &mut self,
        event: request_response::Event<KadRequest, KadResponse>,
    ) {
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
                let Some((id, sent)) = self.request_resolved(&request_id) else {
                    return;
                };
                match sent {
                    Sent::Put => self.on_put_done(id, true),
                    Sent::Lookup => self.on_lookup_answer(id, peer, response),
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let Some((id, sent)) = self.request_resolved(&request_id) else {
                    return;
                };
                trace!(%peer, "kad request failed: {error}");
                if is_malformed_answer(&error) {
                    self.offend(peer, Offence::MalformedMessage);
                }
                let timed_out = matches!(error, OutboundFailure::Timeout);
                self.request_failed(id, peer, sent, timed_out);
            }
            other => trace!(?other, "kad client event"),
        }
    }

    fn on_lookup_answer(&mut self, id: QueryKey, peer: PeerId, response: KadResponse) {
        let closer = self.admissible(&peer, response.closer);
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let wants_record = matches!(q.purpose, Purpose::Fetch { .. } | Purpose::Cache { .. });
        let Some(record) = response.record.filter(|_| wants_record) else {
            let before = q.lookup.ignored();
            q.lookup.on_answer(&peer, closer);
            let ignored = q.lookup.ignored() - before + response.dropped;
            self.counters.answer_peers_ignored += ignored as u64;
            self.drive(id);
            return;
        };
        // Every answer is checked, also after the fetch was answered (a lookup running on for
        // caching): that is how liars are caught.
        let valid = if record.key.as_ref() == q.key.as_slice() {
            validate_record(&q.key, &record.value).map_err(|e| (e.to_string(), offence_for(&e)))
        } else {
            Err((
                "a record under another key".to_owned(),
                Offence::InvalidRecord,
            ))
        };
        if let Err((why, offence)) = valid {
            q.lookup.on_failure(&peer);
            self.counters.records_refused += 1;
            warn!(%peer, "discarded an invalid record: {why}");
            self.offend(peer, offence);
            self.drive(id);
            return;
        }
        q.lookup.on_found(&peer);
        if !matches!(q.purpose, Purpose::Fetch { .. }) {
            self.drive(id);
            return;
        }
        let Some((deadline, mut q)) = self.queries.remove(&id) else {
            return;
        };
        let Purpose::Fetch { key, reply } = q.purpose else {
            return;
        };
        let _ = reply.send(Ok(record.value.clone()));
        // Content never changes, so copies can be spread safely. Under demand (a key fetched
        // again), the lookup runs on to find the closest node that lacked the value.
        if key.is_content() && self.demand.repeated(&key) {
            debug!(%key, "fetch answered; the lookup runs on to find where to cache");
            q.purpose = Purpose::Cache { record };
            self.queries.insert(id, deadline, q);
            self.drive(id);
        }
    }

    /// Fetches that asked one peer and heard nothing for [`FETCH_WIDEN_AFTER`] ask alpha peers.
    pub(super) fn widen_slow_fetches(&mut self, now: Instant) {
        let slow: Vec<QueryKey> = self
            .queries
            .iter_mut()
            .filter(|(_, q)| {
                matches!(q.purpose, Purpose::Fetch { .. })
                    && q.lookup.in_flight() > 0
                    && now.duration_since(q.started) >= FETCH_WIDEN_AFTER
            })
            .map(|(id, q)| {
                q.lookup.widen();
                *id
            })
            .collect();
        for id in slow {
            self.drive(id);
        }
    }

    /// Queries past their deadline: their callers get a timeout.
    pub(super) fn expire_queries(&mut self, now: Instant) {
        let after = self.config.timing.query_timeout;
        for (_, q) in self.queries.take_expired(now) {
            match q.purpose {
                Purpose::Store {
                    reply: Some(reply), ..
                } => self.time_out(reply, "store", after),
                Purpose::Fetch { reply, .. } => self.time_out(reply, "fetch", after),
                Purpose::Peers { reply } => self.time_out(reply, "lookup", after),
                Purpose::Store { reply: None, .. } | Purpose::Cache { .. } | Purpose::Refresh => {}
            }
        }
    }
}

/// Whether an outbound failure means the peer answered bytes we could not decode.
fn is_malformed_answer(error: &OutboundFailure) -> bool {
    matches!(error, OutboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData)
}
