//! Our kad requests on their way: at most [`MAX_KAD_REQUESTS_PER_PEER`] in flight to one peer, the
//! rest queued until a slot frees; each in-flight request remembers what it was sent for and when,
//! so that one unanswered for the peer timeout can be given up on.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use dht_behaviours::kad_wire::KadRequest;
use libp2p::{Multiaddr, PeerId};

/// Identifies one of our outbound requests (the core numbers them; the driver maps them to the
/// transport's own ids).
pub type RequestId = u64;
/// Identifies one of our queries.
pub type QueryId = u64;

/// Our kad requests in flight to one peer; more wait their turn. libp2p-kad serves at most 32
/// streams per connection and drops new ones beyond that.
pub const MAX_KAD_REQUESTS_PER_PEER: usize = 32;
// Each request in flight to a peer can have a stream of its own.
const _: () = assert!(MAX_KAD_REQUESTS_PER_PEER <= dht_behaviours::kad::MAX_OUTBOUND_KAD_STREAMS);
/// Requests waiting for a slot to one peer; beyond this the newest is dropped as failed.
pub const MAX_WAITING_PER_PEER: usize = 1024;

/// What a request was sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// A step of a query's lookup.
    Lookup(QueryId),
    /// One of a store's PUT_VALUEs.
    Put(QueryId),
    /// A store's GET_VALUE to a peer that acknowledged its PUT: does it serve the copy?
    Verify(QueryId),
    /// A PUT_VALUE of its own: a hand-off or a cached copy.
    Oneoff,
}

/// A request ready to go out.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Its id.
    pub id: RequestId,
    /// To whom.
    pub peer: PeerId,
    /// Addresses to dial if not connected.
    pub addrs: Vec<Multiaddr>,
    /// The request.
    pub request: KadRequest,
    /// Whether the answer's closer peers are of use (a check of a copy needs the record alone).
    pub closer_wanted: bool,
    /// A request of its own that rides right behind this one on the same stream, read by the
    /// peer after this one is answered: a store's check of the copy this PUT gives.
    pub then: Option<Box<Outgoing>>,
}

struct Waiting {
    addrs: Vec<Multiaddr>,
    request: KadRequest,
    sent: Sent,
    then: Option<(KadRequest, Sent)>,
}

impl Waiting {
    /// Slots to the peer it takes.
    fn slots(&self) -> usize {
        1 + usize::from(self.then.is_some())
    }
}

/// How one of our requests failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer in time: the peer may be gone.
    TimedOut,
    /// The peer ended the request's stream unanswered: it refused the request (its rate limit,
    /// a full store) and is alive.
    Refused,
    /// The stream or the connection broke, the peer could not be dialed, or it answered garbage.
    Broken,
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
pub struct InFlight {
    /// To whom.
    pub peer: PeerId,
    /// What for.
    pub sent: Sent,
    since: Instant,
    /// Given up on (see [`Outbox::overdue`]); its slot stays taken until it resolves.
    pub abandoned: bool,
}

/// Requests in flight by id, and those waiting for a free slot to their peer.
#[derive(Default)]
pub struct Outbox {
    next: RequestId,
    in_flight: HashMap<RequestId, InFlight>,
    per_peer: HashMap<PeerId, usize>,
    waiting: HashMap<PeerId, VecDeque<Waiting>>,
}

impl Outbox {
    /// Sends `request` to `peer` now if a slot is free, else queues it. Returns the request to
    /// send, if any.
    pub fn send(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: KadRequest,
        sent: Sent,
        now: Instant,
    ) -> Option<Outgoing> {
        let w = Waiting {
            addrs,
            request,
            sent,
            then: None,
        };
        self.send_waiting(peer, w, now)
    }

    /// Sends `first` with `then` right behind it on one stream, now if two slots are free, else
    /// queues both together: the peer must read `then` after `first`, never on another stream
    /// ahead of it. Returns the pair to send, if any.
    pub fn send_pair(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        (request, sent): (KadRequest, Sent),
        then: (KadRequest, Sent),
        now: Instant,
    ) -> Option<Outgoing> {
        let w = Waiting {
            addrs,
            request,
            sent,
            then: Some(then),
        };
        self.send_waiting(peer, w, now)
    }

    fn send_waiting(&mut self, peer: PeerId, w: Waiting, now: Instant) -> Option<Outgoing> {
        let busy = self.per_peer.get(&peer).copied().unwrap_or(0);
        if busy + w.slots() > MAX_KAD_REQUESTS_PER_PEER {
            let queue = self.waiting.entry(peer).or_default();
            if queue.len() < MAX_WAITING_PER_PEER {
                queue.push_back(w);
            }
            return None;
        }
        Some(self.start(peer, w, now))
    }

    fn start(&mut self, peer: PeerId, w: Waiting, now: Instant) -> Outgoing {
        let mut first = self.start_one(peer, w.addrs, w.request, w.sent, now);
        first.then = w
            .then
            .map(|(request, sent)| Box::new(self.start_one(peer, Vec::new(), request, sent, now)));
        first
    }

    fn start_one(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: KadRequest,
        sent: Sent,
        now: Instant,
    ) -> Outgoing {
        let id = self.next;
        self.next += 1;
        let entry = InFlight {
            peer,
            sent,
            since: now,
            abandoned: false,
        };
        self.in_flight.insert(id, entry);
        *self.per_peer.entry(peer).or_insert(0) += 1;
        Outgoing {
            id,
            peer,
            addrs,
            request,
            closer_wanted: !matches!(sent, Sent::Verify(_)),
            then: None,
        }
    }

    /// Request `id` was answered or failed: its slot goes to the next waiting request to the peer
    /// whose query still runs (`alive`). Returns the request, and the one to send now, if any.
    pub fn resolved(
        &mut self,
        id: RequestId,
        now: Instant,
        alive: impl Fn(Sent) -> bool,
    ) -> Option<(InFlight, Option<Outgoing>)> {
        let done = self.in_flight.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&done.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&done.peer);
            }
        }
        let mut next = None;
        let busy = self.per_peer.get(&done.peer).copied().unwrap_or(0);
        if let Some(queue) = self.waiting.get_mut(&done.peer) {
            // The first whose query still runs, once it fits (a pair waits for two free slots;
            // a request in flight to the peer frees the next).
            while queue.front().is_some_and(|w| !alive(w.sent)) {
                queue.pop_front();
            }
            let found = queue
                .front()
                .is_some_and(|w| busy + w.slots() <= MAX_KAD_REQUESTS_PER_PEER)
                .then(|| queue.pop_front())
                .flatten();
            if queue.is_empty() {
                self.waiting.remove(&done.peer);
            }
            if let Some(w) = found {
                next = Some(self.start(done.peer, w, now));
            }
        }
        if self.in_flight.is_empty() {
            // Maps keep their largest capacity; an idle node should not keep its busiest moment's.
            self.in_flight = HashMap::new();
            self.per_peer = HashMap::new();
            self.waiting = HashMap::new();
        }
        Some((done, next))
    }

    /// Requests unanswered for `timeout`, now given up on. The transport's own timeout starts only
    /// once a connection exists, so a dial that hangs (a peer cut off the network) would otherwise
    /// hold a lookup until its deadline.
    pub fn overdue(&mut self, now: Instant, timeout: Duration) -> Vec<InFlight> {
        let mut late: Vec<(RequestId, InFlight)> = self
            .in_flight
            .iter_mut()
            .filter(|(_, r)| !r.abandoned && now.duration_since(r.since) >= timeout)
            .map(|(id, r)| {
                r.abandoned = true;
                (*id, *r)
            })
            .collect();
        // Map order is not deterministic; request ids are.
        late.sort_unstable_by_key(|(id, _)| *id);
        late.into_iter().map(|(_, r)| r).collect()
    }

    /// The earliest moment a request in flight becomes overdue.
    /// Request `id`, while in flight and not given up on.
    pub fn get(&self, id: RequestId) -> Option<&InFlight> {
        self.in_flight.get(&id).filter(|r| !r.abandoned)
    }

    pub fn next_overdue(&self, timeout: Duration) -> Option<Instant> {
        self.in_flight
            .values()
            .filter(|r| !r.abandoned)
            .map(|r| r.since + timeout)
            .min()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Heap bytes held (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        self.in_flight.capacity() * (std::mem::size_of::<(RequestId, InFlight)>() + 1)
            + self.per_peer.capacity() * (std::mem::size_of::<(PeerId, usize)>() + 1)
            + self.waiting.capacity() * (std::mem::size_of::<(PeerId, VecDeque<()>)>() + 1)
    }
}
