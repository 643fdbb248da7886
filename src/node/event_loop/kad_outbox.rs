//! Our kad requests on their way: at most [`MAX_KAD_REQUESTS_PER_PEER`] in flight to one peer, the
//! rest queued until a slot frees; each in-flight request remembers its query and when it went, so
//! that one unanswered for the peer timeout can be given up on.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use dht_behaviours::kad_wire::KadRequest;
use libp2p::PeerId;
use libp2p::request_response::OutboundRequestId;

/// Identifies one of our queries.
pub(crate) type QueryKey = u64;

/// Our kad requests in flight to one peer; more wait their turn. libp2p-kad serves at most 32
/// streams per connection and drops new ones beyond that.
pub const MAX_KAD_REQUESTS_PER_PEER: usize = 32;

/// What a request was sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Lookup,
    Put,
}

/// A request waiting for a free slot to its peer.
pub(super) struct Waiting {
    pub(super) id: QueryKey,
    pub(super) addrs: Vec<libp2p::Multiaddr>,
    pub(super) request: KadRequest,
    pub(super) sent: Sent,
}

/// A request in flight.
pub(super) struct InFlight {
    pub(super) id: QueryKey,
    pub(super) peer: PeerId,
    pub(super) sent: Sent,
    pub(super) since: Instant,
    /// Given up on by its query (see [`KadOutbox::overdue`]); its slot stays taken until it
    /// resolves.
    pub(super) abandoned: bool,
}

/// Our kad requests: those in flight, by request id, and those waiting for a free slot to their
/// peer (at most [`MAX_KAD_REQUESTS_PER_PEER`] in flight to each).
#[derive(Default)]
pub(crate) struct KadOutbox {
    in_flight: HashMap<OutboundRequestId, InFlight>,
    per_peer: HashMap<PeerId, usize>,
    waiting: HashMap<PeerId, VecDeque<Waiting>>,
}

impl KadOutbox {
    pub(super) fn has_room(&self, peer: &PeerId) -> bool {
        self.per_peer.get(peer).copied().unwrap_or(0) < MAX_KAD_REQUESTS_PER_PEER
    }

    pub(super) fn sent(&mut self, rid: OutboundRequestId, id: QueryKey, peer: PeerId, sent: Sent) {
        let since = Instant::now();
        let entry = InFlight {
            id,
            peer,
            sent,
            since,
            abandoned: false,
        };
        self.in_flight.insert(rid, entry);
        *self.per_peer.entry(peer).or_insert(0) += 1;
    }

    /// The request `rid` was answered or failed: its slot is free. Returns it, and whether its query
    /// had already given up on it.
    pub(super) fn resolved(&mut self, rid: &OutboundRequestId) -> Option<InFlight> {
        let done = self.in_flight.remove(rid)?;
        if let Some(n) = self.per_peer.get_mut(&done.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&done.peer);
            }
        }
        Some(done)
    }

    /// Requests unanswered for `timeout`, now given up on. The transport's own timeout starts only
    /// once a connection exists, so a dial that hangs (a peer cut off the network) would otherwise
    /// hold a lookup until its deadline.
    pub(super) fn overdue(
        &mut self,
        now: Instant,
        timeout: Duration,
    ) -> Vec<(QueryKey, PeerId, Sent)> {
        self.in_flight
            .values_mut()
            .filter(|r| !r.abandoned && now.duration_since(r.since) >= timeout)
            .map(|r| {
                r.abandoned = true;
                (r.id, r.peer, r.sent)
            })
            .collect()
    }

    /// Queues a request until a slot to `peer` frees.
    pub(super) fn wait(&mut self, peer: PeerId, waiting: Waiting) {
        self.waiting.entry(peer).or_default().push_back(waiting);
    }

    /// The next waiting request to `peer` whose query still runs.
    pub(super) fn next_for(
        &mut self,
        peer: &PeerId,
        alive: impl Fn(QueryKey) -> bool,
    ) -> Option<Waiting> {
        let queue = self.waiting.get_mut(peer)?;
        let next = std::iter::from_fn(|| queue.pop_front()).find(|w| alive(w.id));
        if queue.is_empty() {
            self.waiting.remove(peer);
        }
        next
    }
}
