//! Queries: stores, fetches, closest-peer lookups and refreshes, each a [`Lookup`] state machine
//! with a purpose and a deadline, its requests going out through the [`Outbox`]. Pure: every call
//! takes the time, and what is to be sent or answered comes back as [`QueryEvent`]s.
//!
//! A store runs in two phases: the lookup finds the k closest live peers, then a PUT_VALUE goes to
//! each, and each peer that acknowledges is asked for the record back (GET_VALUE). Only a peer that
//! serves it counts as a copy: an acknowledgement costs a liar nothing, so it proves nothing. A
//! peer that acknowledged and then answers without the record is reported ([`QueryEvent::Unkept`]);
//! it, and any target that refuses, fails or does not serve, is replaced by the next closest live
//! candidate, so the store goes on until k peers keep the record or the candidates run out. In a
//! small network (no bucket full) a store a handle waits for puts to the k closest known at once,
//! beside the lookup, and the lookup's end only adds the closer peers it found: one round trip
//! there, two elsewhere.

mod gather;
mod put;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use dht_behaviours::kad_wire::{KadRequest, KadResponse, WirePeer};
use dht_behaviours::lookup::{
    CANDIDATES_PER_K, Candidate, LOOKUP_RESILIENCE, Lookup, LookupParams, PeerState,
};
use dht_behaviours::validation::{RecordError, validate_at};
use gather::Gathered;
pub use gather::{MAX_PROVIDERS_FOUND, RESOLVE_QUORUM};
use libp2p::kad::Record;
use libp2p::{Multiaddr, PeerId};
use put::PutPhase;

use super::outbox::{FailureKind, InFlight, Outbox, QueryId, RequestId, Sent};
pub use super::query::{Outcome, Purpose, QueryConfig, QueryEvent};

/// A fetch asks the closest peer alone first; unanswered this long, it asks alpha at once.
pub const FETCH_WIDEN_AFTER: Duration = Duration::from_millis(100);
/// A fetch whose k closest peers all answered without the value asks on until this many times k
/// of the closest have answered: under churn the closest set changes faster than copies follow
/// it (newcomers closer than the holders that no holder has met yet), and the holders sit just
/// past it. Costs a miss twice the requests; a fetch that finds the value never gets here.
pub const FETCH_DEPTH_IN_K: usize = 2;
const _: () = assert!(FETCH_DEPTH_IN_K <= CANDIDATES_PER_K);

struct Query {
    key: Vec<u8>,
    lookup: Lookup,
    purpose: Purpose,
    started: Instant,
    deadline: Instant,
    put: Option<PutPhase>,
    /// The round in which each candidate was learned (seeds: 1).
    depth: HashMap<PeerId, u32>,
    /// Found already (a fetch running on to cache).
    found: Option<Record>,
    /// Widened to alpha requests (a fetch's narrow start is over).
    widened: bool,
    /// Gone past the k closest ([`FETCH_DEPTH_IN_K`]).
    deepened: bool,
    /// What a gathering lookup (providers, a peer, the best record) collected.
    gathered: Gathered,
}

/// Every query of a node.
pub struct Queries {
    local: PeerId,
    config: QueryConfig,
    queries: BTreeMap<QueryId, Query>,
    next: QueryId,
    outbox: Outbox,
    ignored: usize,
    /// Lookup requests refused by a peer throttling us, to be sent again when its back-off
    /// ends: (when, query, peer). The lookup keeps the peer in flight meanwhile, so it waits
    /// (or goes on with others) rather than count the refusal as the peer's "no".
    deferred: Vec<(Instant, QueryId, PeerId)>,
}

impl Queries {
    /// No query yet.
    pub fn new(local: PeerId, config: QueryConfig) -> Self {
        Self {
            local,
            config,
            queries: BTreeMap::new(),
            next: 0,
            outbox: Outbox::default(),
            ignored: 0,
            deferred: Vec::new(),
        }
    }

    /// Queries running.
    pub fn len(&self) -> usize {
        self.queries.len()
    }

    /// Peers named in answers beyond the k taken from each, so far.
    pub fn ignored(&self) -> usize {
        self.ignored
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// Starts a query for `key` from `seeds` (the closest peers known, with their addresses).
    /// `early`: the seeds hold the k closest peers as far as this node can tell, so a store or a
    /// provide puts to them at once, beside its lookup ([`Queries::start_early_puts`]).
    pub fn start(
        &mut self,
        key: Vec<u8>,
        purpose: Purpose,
        seeds: Vec<(PeerId, Vec<Multiaddr>)>,
        early: bool,
        now: Instant,
        out: &mut Vec<QueryEvent>,
    ) -> QueryId {
        let (k, size) = (self.config.k, self.config.bucket_size);
        let (k, narrow, resilience, phases) = match purpose {
            // The closest holder almost always answers alone; not found means all k said no.
            Purpose::Fetch { .. } => (k, true, k, 1),
            Purpose::Peers => (k, false, k, 1),
            Purpose::Refresh => (size, false, size, 1),
            Purpose::RefreshBucket => (k, false, k, 1),
            // A store's PUT_VALUEs check the k closest; the lookup only has to find them.
            Purpose::Store { .. } | Purpose::Provide { .. } => (k, false, LOOKUP_RESILIENCE, 2),
            Purpose::Providers { .. } | Purpose::FindPeer | Purpose::Resolve { .. } => {
                (k, false, k, 1)
            }
        };
        let params = LookupParams {
            k,
            alpha: self.config.alpha,
            resilience,
            narrow,
        };
        let depth = seeds.iter().map(|(p, _)| (*p, 1)).collect();
        let id = self.next;
        self.next += 1;
        let query = Query {
            gathered: Gathered::from_purpose(&purpose, self.local),
            lookup: Lookup::new(&key, seeds, params),
            key,
            purpose,
            started: now,
            deadline: now + phases * self.config.query_timeout,
            put: None,
            depth,
            found: None,
            widened: !narrow,
            deepened: false,
        };
        self.queries.insert(id, query);
        if early {
            self.start_early_puts(id, now, out);
        }
        self.drive(id, now, out);
        id
    }

    /// Sends what query `id` may send now; finishes it when its lookup is done.
    fn drive(&mut self, id: QueryId, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        if q.put.as_ref().is_some_and(|p| !p.lookup_open()) {
            return;
        }
        let request = lookup_request(q);
        let mut sends = Vec::new();
        while let Some(next) = q.lookup.next_request() {
            sends.push(next);
        }
        let finished = q.lookup.is_finished();
        for (peer, addrs) in sends {
            let sent = Sent::Lookup(id);
            if let Some(o) = self.outbox.send(peer, addrs, request.clone(), sent, now) {
                out.push(QueryEvent::Send(o));
            }
        }
        if finished {
            self.lookup_finished(id, now, out);
        }
    }

    fn done(&mut self, id: QueryId, outcome: Outcome, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(q) = self.queries.remove(&id) else {
            return;
        };
        let hops = hops(&q);
        out.push(QueryEvent::Done {
            id,
            outcome,
            requests: q.lookup.requests(),
            hops,
            took: now.saturating_duration_since(q.started),
        });
    }

    fn lookup_finished(&mut self, id: QueryId, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let k = q.lookup.k();
        match &q.purpose {
            Purpose::Store { .. } | Purpose::Provide { .. } => self.start_puts(id, now, out),
            Purpose::Fetch { .. } => {
                if let Some(record) = q.found.take() {
                    let peer = q.lookup.closest_lacking().map(|p| {
                        let addrs = q
                            .lookup
                            .closest(CANDIDATES_PER_K * k)
                            .into_iter()
                            .find(|c| c.peer == p)
                            .map(|c| c.addrs)
                            .unwrap_or_default();
                        (p, addrs)
                    });
                    self.queries.remove(&id);
                    out.push(QueryEvent::CacheAt { record, peer });
                    return;
                }
                if !q.deepened {
                    q.deepened = true;
                    q.widened = true;
                    if q.lookup.deepen(FETCH_DEPTH_IN_K * k) {
                        return self.drive(id, now, out);
                    }
                }
                let unanswered = q.lookup.unanswered_closer();
                self.done(id, Outcome::NotFound { unanswered }, now, out);
            }
            Purpose::Peers => {
                let peers = q
                    .lookup
                    .closest(k)
                    .into_iter()
                    .filter(|c| matches!(c.state, PeerState::Succeeded | PeerState::Held))
                    .map(|c| c.peer)
                    .collect();
                self.done(id, Outcome::Peers { peers }, now, out);
            }
            Purpose::Refresh | Purpose::RefreshBucket => {
                self.done(id, Outcome::Refreshed, now, out)
            }
            Purpose::Providers { .. } | Purpose::FindPeer | Purpose::Resolve { .. } => {
                self.gathered(id, now, out)
            }
        }
    }

    fn resolve(
        &mut self,
        rid: RequestId,
        now: Instant,
        out: &mut Vec<QueryEvent>,
    ) -> Option<InFlight> {
        let queries = &self.queries;
        let alive = |sent: Sent| match sent {
            Sent::Lookup(q) | Sent::Put(q) | Sent::Verify(q) => queries.contains_key(&q),
            Sent::Oneoff => true,
        };
        let (done, next) = self.outbox.resolved(rid, now, alive)?;
        if let Some(o) = next {
            out.push(QueryEvent::Send(o));
        }
        // A request its query gave up on was already counted as failed.
        (!done.abandoned).then_some(done)
    }

    /// Request `rid` was answered; `closer` are the peers of the answer the caller admits (not
    /// this node, not blocked, addresses vetted); `wall` is the wall-clock time (signed records'
    /// validity). Returns the peer that answered.
    pub fn on_response(
        &mut self,
        rid: RequestId,
        response: KadResponse,
        closer: Vec<WirePeer>,
        (now, wall): (Instant, SystemTime),
        out: &mut Vec<QueryEvent>,
    ) -> Option<PeerId> {
        let done = self.resolve(rid, now, out)?;
        let peer = done.peer;
        self.answered(done.sent, peer, response, closer, (now, wall), out);
        Some(peer)
    }

    fn answered(
        &mut self,
        sent: Sent,
        peer: PeerId,
        response: KadResponse,
        closer: Vec<WirePeer>,
        (now, wall): (Instant, SystemTime),
        out: &mut Vec<QueryEvent>,
    ) {
        let id = match sent {
            Sent::Oneoff => {
                out.push(QueryEvent::OneoffDone { peer, acked: true });
                return;
            }
            Sent::Put(id) => return self.put_answered(id, peer, None, now, out),
            Sent::Verify(id) => {
                return self.verified(id, peer, Some(response), (now, wall), out);
            }
            Sent::Lookup(id) => id,
        };
        let ended = match self.queries.get(&id).map(|q| &q.purpose) {
            None => return,
            Some(Purpose::Providers { .. }) => {
                self.gather_providers(id, response.providers.clone(), now, out)
            }
            Some(Purpose::FindPeer) => self.gather_peer(id, &peer, &closer, now, out),
            Some(_) => false,
        };
        if ended {
            return;
        }
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let wants_record = matches!(q.purpose, Purpose::Fetch { .. } | Purpose::Resolve { .. });
        let Some(record) = response.record.filter(|_| wants_record) else {
            let d = q.depth.get(&peer).copied().unwrap_or(1);
            for p in &closer {
                q.depth.entry(p.peer).or_insert(d + 1);
            }
            let before = q.lookup.ignored();
            q.lookup.on_answer(&peer, closer);
            self.ignored += q.lookup.ignored() - before;
            return self.drive(id, now, out);
        };
        self.record_answered(id, peer, record, closer, (now, wall), out);
    }

    /// `peer` answered lookup `id` of a fetch or a resolve with `record` (and `closer` peers):
    /// checked (a false one is a lie), gathered (a resolve) or the fetch's answer.
    fn record_answered(
        &mut self,
        id: QueryId,
        peer: PeerId,
        record: Record,
        closer: Vec<WirePeer>,
        (now, wall): (Instant, SystemTime),
        out: &mut Vec<QueryEvent>,
    ) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        // Every answer is checked, also after the fetch was answered (a lookup running on for
        // caching): that is how liars are caught.
        let valid = if record.key.as_ref() == q.key.as_slice() {
            validate_at(&q.key, &record.value, wall)
        } else {
            Err(RecordError::KeyMismatch)
        };
        if let Err(error) = valid {
            q.lookup.on_failure(&peer);
            out.push(QueryEvent::Lied { peer, error });
            return self.drive(id, now, out);
        }
        if matches!(q.purpose, Purpose::Resolve { .. }) {
            // A holder's closer peers are followed too: nearer holders may have a newer version.
            q.lookup.on_found_naming(&peer, closer);
        } else {
            q.lookup.on_found(&peer);
        }
        if matches!(q.purpose, Purpose::Resolve { .. }) {
            if !self.gather_record(id, peer, record, now, out) {
                self.drive(id, now, out);
            }
            return;
        }
        if q.found.is_some() {
            return self.drive(id, now, out);
        }
        let cache = matches!(q.purpose, Purpose::Fetch { cache: true });
        let hops = q.depth.get(&peer).copied().unwrap_or(1);
        let event = QueryEvent::Done {
            id,
            outcome: Outcome::Found {
                record: Box::new(record.clone()),
                from: peer,
            },
            requests: q.lookup.requests(),
            hops,
            took: now.saturating_duration_since(q.started),
        };
        out.push(event);
        if cache {
            q.found = Some(record);
            self.drive(id, now, out);
        } else {
            self.queries.remove(&id);
        }
    }

    /// The peer of request `rid` if it is a lookup's, in flight.
    pub fn lookup_peer(&self, rid: RequestId) -> Option<PeerId> {
        self.outbox
            .get(rid)
            .filter(|r| matches!(r.sent, Sent::Lookup(_)))
            .map(|r| r.peer)
    }

    /// Lookup request `rid` was refused by a peer throttling us. A search for a value or
    /// providers asks it again at `retry_at`, its place in the lookup kept; any other lookup
    /// goes on without it.
    pub fn defer(
        &mut self,
        rid: RequestId,
        retry_at: Instant,
        now: Instant,
        out: &mut Vec<QueryEvent>,
    ) {
        let Some(done) = self.resolve(rid, now, out) else {
            return;
        };
        let Sent::Lookup(id) = done.sent else {
            return;
        };
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        // Only a search for a value or providers waits for a busy peer (it may be the one that
        // holds it; a busy network slows such a reader down rather than answer "not found"),
        // asking again at most the shortest back-off on, until its deadline; a lookup for peers
        // goes on without it.
        let searching = matches!(
            q.purpose,
            Purpose::Fetch { .. } | Purpose::Resolve { .. } | Purpose::Providers { .. }
        );
        if !searching || retry_at >= q.deadline {
            q.lookup.on_timeout(&done.peer);
        } else if q.lookup.on_refused(&done.peer) {
            self.deferred.push((retry_at, id, done.peer));
        }
        self.drive(id, now, out);
    }

    /// Sends the deferred lookup requests that are due.
    fn retry_deferred(&mut self, now: Instant, out: &mut Vec<QueryEvent>) {
        if self.deferred.iter().all(|(at, _, _)| *at > now) {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) =
            self.deferred.drain(..).partition(|(at, _, _)| *at <= now);
        self.deferred = later;
        for (_, id, peer) in due {
            let Some(q) = self.queries.get_mut(&id) else {
                continue;
            };
            if !q.lookup.on_retry(&peer) {
                continue;
            }
            let request = lookup_request(q);
            if let Some(o) = self
                .outbox
                .send(peer, Vec::new(), request, Sent::Lookup(id), now)
            {
                out.push(QueryEvent::Send(o));
            }
        }
    }

    /// Request `rid` failed as `kind` says. Returns its peer and whether it was a lookup's
    /// request, for the caller to judge the peer by.
    pub fn on_failure(
        &mut self,
        rid: RequestId,
        kind: FailureKind,
        now: Instant,
        out: &mut Vec<QueryEvent>,
    ) -> Option<(PeerId, bool)> {
        let done = self.resolve(rid, now, out)?;
        let lookup = matches!(done.sent, Sent::Lookup(_));
        self.failed(done, kind == FailureKind::TimedOut, now, out);
        Some((done.peer, lookup))
    }

    fn failed(&mut self, done: InFlight, timed_out: bool, now: Instant, out: &mut Vec<QueryEvent>) {
        let peer = done.peer;
        match done.sent {
            Sent::Oneoff => out.push(QueryEvent::OneoffDone { peer, acked: false }),
            Sent::Put(id) => self.put_answered(id, peer, Some(timed_out), now, out),
            Sent::Verify(id) => {
                let wall = SystemTime::UNIX_EPOCH;
                self.verified(id, peer, None, (now, wall), out)
            }
            Sent::Lookup(id) => {
                if let Some(q) = self.queries.get_mut(&id) {
                    if timed_out {
                        q.lookup.on_timeout(&peer);
                    } else {
                        q.lookup.on_failure(&peer);
                    }
                }
                self.drive(id, now, out);
            }
        }
    }

    /// Time passed: overdue requests count as failed (returned, for the routing table), slow
    /// fetches widen, queries past their deadline end.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<QueryEvent>) -> Vec<PeerId> {
        self.retry_deferred(now, out);
        let mut failed = Vec::new();
        for late in self.outbox.overdue(now, self.config.peer_timeout) {
            failed.push(late.peer);
            self.failed(late, true, now, out);
        }
        let slow: Vec<QueryId> = self
            .queries
            .iter_mut()
            .filter(|(_, q)| {
                !q.widened && now.saturating_duration_since(q.started) >= FETCH_WIDEN_AFTER
            })
            .map(|(id, q)| {
                q.widened = true;
                q.lookup.widen();
                *id
            })
            .collect();
        for id in slow {
            self.drive(id, now, out);
        }
        let expired: Vec<QueryId> = self
            .queries
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(q) = self.queries.get(&id) else {
                continue;
            };
            if q.found.is_some() {
                self.queries.remove(&id);
            } else if matches!(
                q.purpose,
                Purpose::Providers { .. } | Purpose::FindPeer | Purpose::Resolve { .. }
            ) {
                // What was gathered by the deadline is the answer (the best record, the
                // providers, the addresses heard), not a timeout.
                self.gathered(id, now, out);
            } else {
                self.done(id, Outcome::TimedOut, now, out);
            }
        }
        failed
    }

    /// When [`Queries::tick`] has something to do next.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let overdue = self.outbox.next_overdue(self.config.peer_timeout);
        let deadline = self.queries.values().map(|q| q.deadline).min();
        let widen = self
            .queries
            .values()
            .filter(|q| !q.widened)
            .map(|q| q.started + FETCH_WIDEN_AFTER)
            .min();
        let deferred = self.deferred.iter().map(|(at, _, _)| *at).min();
        [overdue, deadline, widen, deferred]
            .into_iter()
            .flatten()
            .min()
    }

    /// Heap bytes held by queries and the outbox (for memory reports; a lookup's candidates are
    /// estimated from their number).
    pub fn heap_bytes(&self) -> usize {
        let per_query = std::mem::size_of::<Query>()
            + CANDIDATES_PER_K * self.config.bucket_size * (std::mem::size_of::<Candidate>() + 48);
        self.queries.len() * per_query + self.outbox.heap_bytes()
    }
}

/// Rounds until the closest peer that answered was reached.
fn hops(q: &Query) -> u32 {
    q.lookup
        .closest(q.lookup.k())
        .into_iter()
        .find(|c| matches!(c.state, PeerState::Succeeded | PeerState::Held))
        .and_then(|c| q.depth.get(&c.peer).copied())
        .unwrap_or(0)
}

/// The request a lookup of `q` sends each peer.
fn lookup_request(q: &Query) -> KadRequest {
    let key = q.key.clone();
    match q.purpose {
        Purpose::Store { .. }
        | Purpose::Provide { .. }
        | Purpose::FindPeer
        | Purpose::Peers
        | Purpose::Refresh
        | Purpose::RefreshBucket => KadRequest::FindNode { key },
        Purpose::Fetch { .. } | Purpose::Resolve { .. } => KadRequest::GetValue { key },
        Purpose::Providers { .. } => KadRequest::GetProviders { key },
    }
}
