//! What a query is: its purpose, how it ended, what it asks of the core, and the knobs every
//! query shares. The engine that runs them is [`super::queries`].

use std::time::Duration;

use dht_behaviours::kad_wire::WirePeer;
use dht_behaviours::validation::RecordError;
use libp2p::kad::Record;
use libp2p::{Multiaddr, PeerId};

use super::outbox::{Outgoing, QueryId};

/// What a query is for.
#[derive(Debug, Clone)]
pub enum Purpose {
    /// Put `record` on the k closest nodes (a store, a re-store or a republish).
    Store {
        /// The copy sent (with the expiry holders get).
        record: Record,
    },
    /// Announce `provider` (this node and its addresses) as a provider of the key on the k
    /// closest nodes (ADD_PROVIDER), each checked by a GET_PROVIDERS that must name it.
    Provide {
        /// This node, with the addresses it is reached at.
        provider: WirePeer,
    },
    /// The providers of the key (GET_PROVIDERS along the lookup); ends early once `want` are
    /// known.
    Providers {
        /// Providers wanted; the lookup stops once it has this many.
        want: usize,
        /// Providers this node knows already (its own store's).
        known: Vec<WirePeer>,
    },
    /// The addresses of the peer whose id is the key: from the answers that name it, and from
    /// the peer itself once reached (the lookup ends then).
    FindPeer,
    /// The best record under a key with several valid versions (`/ipns/`): the lookup asks
    /// holders until `quorum` answered with a valid record, returns the best, and corrects
    /// holders that served an older one.
    Resolve {
        /// Valid answers that end the lookup.
        quorum: usize,
        /// A copy this node holds, the one to beat.
        held: Option<Record>,
    },
    /// The value under the key; with `cache`, the lookup runs on once answered to find the closest
    /// node that lacked it (the key is in demand).
    Fetch {
        /// Run on for caching once found.
        cache: bool,
    },
    /// The k closest peers that answered.
    Peers,
    /// A lookup of this node's own id (at join and every refresh): it looks for a bucket's worth
    /// of peers, which fills the near buckets and puts this node in its neighbours' tables.
    Refresh,
    /// A lookup of a random key in one far bucket, as libp2p refreshes one: k peers found there
    /// are enough, traffic fills the rest.
    RefreshBucket,
}

/// How a query ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A store's PUT phase ended: these peers acknowledged the record and then served it back.
    Stored {
        /// The peers seen to keep the record, in the order they proved it.
        kept: Vec<PeerId>,
    },
    /// A store of a signed record ended kept nowhere: the closest holders hold a better version.
    Superseded,
    /// A fetch found the record.
    Found {
        /// The record, checked against its key.
        record: Box<Record>,
        /// Who answered with it.
        from: PeerId,
    },
    /// A fetch ended without the record; `unanswered` closer peers never answered (0: it is
    /// absent from the closest peers).
    NotFound {
        /// Closer peers that went unanswered.
        unanswered: usize,
    },
    /// The closest peers that answered.
    Peers {
        /// Closest first.
        peers: Vec<PeerId>,
    },
    /// The providers found (possibly none).
    Providers {
        /// Each provider once, with the addresses it was named with.
        providers: Vec<WirePeer>,
    },
    /// A peer's addresses (`reached`: it answered us at one of them).
    PeerFound {
        /// Its addresses.
        addrs: Vec<Multiaddr>,
        /// Whether it answered our request.
        reached: bool,
    },
    /// A refresh ended.
    Refreshed,
    /// The deadline passed.
    TimedOut,
}

/// What the queries want done.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryEvent {
    /// Send this request.
    Send(Outgoing),
    /// A query ended.
    Done {
        /// Which.
        id: QueryId,
        /// How.
        outcome: Outcome,
        /// Requests it sent.
        requests: usize,
        /// Rounds until the closest peer that answered (or held the value) was reached.
        hops: u32,
        /// How long it ran.
        took: Duration,
    },
    /// A fetch that ran on under demand found where to cache: `peer` lacked the value (`None`:
    /// every peer asked held it).
    CacheAt {
        /// The record to cache.
        record: Record,
        /// The closest peer without it, and its addresses.
        peer: Option<(PeerId, Vec<Multiaddr>)>,
    },
    /// `peer` answered with a record that is not what its key says.
    Lied {
        /// Who.
        peer: PeerId,
        /// What was wrong.
        error: RecordError,
    },
    /// `peer` acknowledged a store's PUT_VALUE and then answered a GET_VALUE for the key without
    /// the record: it claims copies it does not keep.
    Unkept {
        /// Who.
        peer: PeerId,
    },
    /// A resolve found `record` the best; these holders served an older version (or none):
    /// they get the best one.
    Correct {
        /// The best record.
        record: Record,
        /// Who served it (this node: its own copy was the best).
        from: PeerId,
        /// Who served an older one, with their addresses.
        stale: Vec<(PeerId, Vec<Multiaddr>)>,
    },
    /// A full bucket's entry is due for a liveness check ([`super::routing::BUCKET_CHECK_INTERVAL`]).
    Check {
        /// Who.
        peer: PeerId,
        /// Its addresses in the table.
        addrs: Vec<Multiaddr>,
    },
    /// A one-off PUT resolved.
    OneoffDone {
        /// To whom.
        peer: PeerId,
        /// Whether it was acknowledged.
        acked: bool,
    },
}

/// The knobs of every query.
#[derive(Debug, Clone, Copy)]
pub struct QueryConfig {
    /// Replication factor.
    pub k: usize,
    /// Peers a bucket holds: a routing refresh looks for this many, to fill the buckets.
    pub bucket_size: usize,
    /// Parallelism.
    pub alpha: usize,
    /// Deadline of a query (a store gets two: lookup, then PUTs).
    pub query_timeout: Duration,
    /// A request unanswered this long counts as failed.
    pub peer_timeout: Duration,
    /// Whether this node serves (keeps its own copy, so counts among a key's k closest).
    pub serving: bool,
}
