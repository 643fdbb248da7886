//! Lookups that gather from every answer rather than stop at the first: the providers of a key,
//! the addresses of a peer, and the best of the valid records several holders serve (a name with
//! versions, `/ipns/`), with the holders of older versions corrected.

use std::cmp::Ordering;
use std::time::Instant;

use dht_behaviours::config::MAX_ADDRS_PER_PEER;
use dht_behaviours::kad_wire::WirePeer;
use dht_behaviours::lookup::{CANDIDATES_PER_K, PeerState};
use dht_behaviours::validators;
use libp2p::kad::Record;
use libp2p::{Multiaddr, PeerId};

use super::{Outcome, Purpose, Queries, QueryEvent, QueryId};

/// Most providers one lookup gathers (and returns), whatever is asked: a GET_PROVIDERS answer
/// carries at most [`dht_behaviours::kad_wire::MAX_PEERS_DECODED`], and a caller wanting more
/// than this many has no use for an exhaustive list.
pub const MAX_PROVIDERS_FOUND: usize = 256;

/// Valid records a resolve collects before it picks the best (go-libp2p's IPNS resolution asks
/// for 16; the closest holders of a name are enough when each correction spreads the best).
pub const RESOLVE_QUORUM: usize = 8;

/// What a gathering lookup collected so far.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    /// Providers found, each once (a provide's lookup: none).
    providers: Vec<WirePeer>,
    /// Addresses the sought peer was named with.
    addrs: Vec<Multiaddr>,
    /// The best valid record so far and who served it.
    best: Option<(Record, PeerId)>,
    /// Every holder that served a valid record, the value it served, and its addresses.
    served: Vec<(PeerId, Vec<u8>, Vec<Multiaddr>)>,
}

impl Gathered {
    /// A gathering that starts from what this node knows: its own providers of the key, or its
    /// own copy of a record.
    pub(super) fn from_purpose(purpose: &Purpose, local: PeerId) -> Self {
        let mut g = Self::default();
        match purpose {
            Purpose::Providers { known, .. } => merge_providers(&mut g.providers, known.clone()),
            Purpose::Resolve {
                held: Some(record), ..
            } => g.best = Some((record.clone(), local)),
            _ => {}
        }
        g
    }
}

/// Adds `found` to `into`, each provider once (its addresses merged), at most
/// [`MAX_PROVIDERS_FOUND`].
fn merge_providers(into: &mut Vec<WirePeer>, found: Vec<WirePeer>) {
    for p in found {
        if let Some(known) = into.iter_mut().find(|k| k.peer == p.peer) {
            merge_addrs(&mut known.addrs, p.addrs);
        } else if into.len() < MAX_PROVIDERS_FOUND {
            let mut p = p;
            p.addrs.truncate(MAX_ADDRS_PER_PEER);
            into.push(p);
        }
    }
}

/// Adds the addresses of `more` not yet in `into`, at most [`MAX_ADDRS_PER_PEER`] in all.
fn merge_addrs(into: &mut Vec<Multiaddr>, more: Vec<Multiaddr>) {
    for a in more {
        if into.len() >= MAX_ADDRS_PER_PEER {
            return;
        }
        if !into.contains(&a) {
            into.push(a);
        }
    }
}

impl Queries {
    /// Providers named in an answer to lookup `id`; it ends once it has as many as it wants.
    /// Returns whether it ended.
    pub(super) fn gather_providers(
        &mut self,
        id: QueryId,
        providers: Vec<WirePeer>,
        now: Instant,
        out: &mut Vec<QueryEvent>,
    ) -> bool {
        let Some(q) = self.queries.get_mut(&id) else {
            return true;
        };
        let Purpose::Providers { want, .. } = q.purpose else {
            return false;
        };
        merge_providers(&mut q.gathered.providers, providers);
        let want = want.min(MAX_PROVIDERS_FOUND);
        if q.gathered.providers.len() < want {
            return false;
        }
        let mut providers = std::mem::take(&mut q.gathered.providers);
        providers.truncate(want);
        self.done(id, Outcome::Providers { providers }, now, out);
        true
    }

    /// An answer to find-peer lookup `id` from `peer`, naming `closer`: the sought peer's
    /// addresses are kept; when the sought peer answered itself, the lookup ends. Returns whether
    /// it ended.
    pub(super) fn gather_peer(
        &mut self,
        id: QueryId,
        peer: &PeerId,
        closer: &[WirePeer],
        now: Instant,
        out: &mut Vec<QueryEvent>,
    ) -> bool {
        let Some(q) = self.queries.get_mut(&id) else {
            return true;
        };
        let Ok(sought) = PeerId::from_bytes(&q.key) else {
            return false;
        };
        for p in closer.iter().filter(|p| p.peer == sought) {
            merge_addrs(&mut q.gathered.addrs, p.addrs.clone());
        }
        if *peer != sought {
            return false;
        }
        // Reached: the addresses it was asked at come first.
        let mut addrs = q
            .lookup
            .closest(CANDIDATES_PER_K * q.lookup.k())
            .into_iter()
            .find(|c| c.peer == sought)
            .map(|c| c.addrs)
            .unwrap_or_default();
        merge_addrs(&mut addrs, std::mem::take(&mut q.gathered.addrs));
        self.done(
            id,
            Outcome::PeerFound {
                addrs,
                reached: true,
            },
            now,
            out,
        );
        true
    }

    /// A valid `record` served by `peer` for resolve `id`: kept if it is the best so far; once
    /// `quorum` holders answered, the lookup ends. Returns whether it ended.
    pub(super) fn gather_record(
        &mut self,
        id: QueryId,
        peer: PeerId,
        record: Record,
        now: Instant,
        out: &mut Vec<QueryEvent>,
    ) -> bool {
        let Some(q) = self.queries.get_mut(&id) else {
            return true;
        };
        let Purpose::Resolve { quorum, .. } = q.purpose else {
            return false;
        };
        let addrs = q
            .lookup
            .closest(CANDIDATES_PER_K * q.lookup.k())
            .into_iter()
            .find(|c| c.peer == peer)
            .map(|c| c.addrs)
            .unwrap_or_default();
        q.gathered.served.push((peer, record.value.clone(), addrs));
        let better = match &q.gathered.best {
            None => true,
            Some((best, _)) => {
                validators::select(&q.key, &record.value, &best.value) == Ordering::Greater
            }
        };
        if better {
            q.gathered.best = Some((record, peer));
        }
        if q.gathered.served.len() < quorum {
            return false;
        }
        self.resolved(id, now, out);
        true
    }

    /// The lookup of gathering query `id` ended: what it gathered is its outcome.
    pub(super) fn gathered(&mut self, id: QueryId, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        match q.purpose {
            Purpose::Providers { .. } => {
                let providers = std::mem::take(&mut q.gathered.providers);
                self.done(id, Outcome::Providers { providers }, now, out);
            }
            Purpose::FindPeer => {
                let sought = PeerId::from_bytes(&q.key).ok();
                let reached = q
                    .lookup
                    .closest(CANDIDATES_PER_K * q.lookup.k())
                    .into_iter()
                    .find(|c| Some(c.peer) == sought);
                let (mut addrs, reached) = match reached {
                    Some(c) => (c.addrs, matches!(c.state, PeerState::Succeeded)),
                    None => (Vec::new(), false),
                };
                merge_addrs(&mut addrs, std::mem::take(&mut q.gathered.addrs));
                let outcome = if addrs.is_empty() && !reached {
                    Outcome::NotFound {
                        unanswered: q.lookup.unanswered_closer(),
                    }
                } else {
                    Outcome::PeerFound { addrs, reached }
                };
                self.done(id, outcome, now, out);
            }
            Purpose::Resolve { .. } => self.resolved(id, now, out),
            _ => {}
        }
    }

    /// Resolve `id` is over: the best record is the outcome, and every holder that served an
    /// older version is sent the best.
    fn resolved(&mut self, id: QueryId, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let Some((record, from)) = q.gathered.best.take() else {
            let unanswered = q.lookup.unanswered_closer();
            self.done(id, Outcome::NotFound { unanswered }, now, out);
            return;
        };
        let stale: Vec<(PeerId, Vec<Multiaddr>)> = std::mem::take(&mut q.gathered.served)
            .into_iter()
            .filter(|(_, value, _)| *value != record.value)
            .map(|(peer, _, addrs)| (peer, addrs))
            .collect();
        self.done(
            id,
            Outcome::Found {
                record: Box::new(record.clone()),
                from,
            },
            now,
            out,
        );
        out.push(QueryEvent::Correct {
            record,
            from,
            stale,
        });
    }
}
