//! The second phase of a store or a provide: once the lookup found the k closest live peers, each
//! gets the record (PUT_VALUE) or the announcement (ADD_PROVIDER), and each that takes it is asked
//! back for it (GET_VALUE, GET_PROVIDERS). Only a peer that serves it counts: an acknowledgement
//! costs a liar nothing (and ADD_PROVIDER has none at all). A target that misses is replaced by the
//! next closest live candidate, so the phase goes on until k peers keep it or the candidates run
//! out.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Instant, SystemTime};

use dht_behaviours::kad_wire::{KadRequest, KadResponse};
use dht_behaviours::lookup::{CANDIDATES_PER_K, Candidate};
use dht_behaviours::validation::{is_namespaced, validate_at};
use dht_behaviours::validators::select;
use libp2p::kad::{KBucketKey, Record};
use libp2p::{Multiaddr, PeerId};

use super::{Outcome, Purpose, Queries, QueryEvent, QueryId, Sent};

pub(super) struct PutPhase {
    /// Puts and verifying gets in flight.
    pending: usize,
    /// Targets seen serving the record (or naming us as a provider).
    kept: Vec<PeerId>,
    /// Addresses of the targets, for the request that checks each.
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Further live candidates, closest first: one replaces each target that fails.
    spare: VecDeque<Candidate>,
    /// Targets that refused a signed record: each is asked what it holds instead.
    refused: HashSet<PeerId>,
    /// A target served a valid record better than ours.
    superseded: bool,
}

/// How one target of a put phase came out.
enum PutStep {
    /// It took the put: ask for it back.
    Acked(PeerId),
    /// It served it back: a copy.
    Kept(PeerId),
    /// It answered without it, or the put or the check failed: try the next candidate.
    Missed,
    /// It holds a valid record better than ours (a signed name's newer version): ours would be
    /// refused by every holder of that one, and must not spread beyond them.
    Superseded,
}

/// The request that puts `purpose`'s payload under `key`, and the one that checks it.
fn requests(purpose: &Purpose, key: &[u8]) -> Option<(KadRequest, KadRequest)> {
    match purpose {
        Purpose::Store { record } => Some((
            KadRequest::PutValue {
                record: record.clone(),
            },
            KadRequest::GetValue { key: key.to_vec() },
        )),
        Purpose::Provide { provider } => Some((
            KadRequest::AddProvider {
                key: key.to_vec(),
                providers: vec![provider.clone()],
            },
            KadRequest::GetProviders { key: key.to_vec() },
        )),
        _ => None,
    }
}

impl Queries {
    /// The lookup of store or provide `id` ended: the put phase starts on the k closest.
    pub(super) fn start_puts(&mut self, id: QueryId, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let Some((put, _)) = requests(&q.purpose, &q.key) else {
            return;
        };
        let k = q.lookup.k();
        let live = q.lookup.closest(CANDIDATES_PER_K * k);
        let targets = targets(&self.local, self.config.serving, &q.key, &live, k);
        let mut spare = VecDeque::new();
        let mut chosen = Vec::new();
        for c in live {
            if targets.contains(&c.peer) {
                chosen.push(c);
            } else {
                spare.push_back(c);
            }
        }
        q.put = Some(PutPhase {
            pending: chosen.len(),
            kept: Vec::new(),
            addrs: chosen.iter().map(|c| (c.peer, c.addrs.clone())).collect(),
            spare,
            refused: HashSet::new(),
            superseded: false,
        });
        if chosen.is_empty() {
            self.done(id, Outcome::Stored { kept: Vec::new() }, now, out);
            return;
        }
        for c in chosen {
            if let Some(o) = self
                .outbox
                .send(c.peer, c.addrs, put.clone(), Sent::Put(id), now)
            {
                out.push(QueryEvent::Send(o));
            }
        }
    }

    /// Sends a PUT_VALUE that belongs to no query (a hand-off, a cached copy, a correction).
    pub fn put_once(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        record: Record,
        now: Instant,
        out: &mut Vec<QueryEvent>,
    ) {
        let request = KadRequest::PutValue { record };
        if let Some(o) = self.outbox.send(peer, addrs, request, Sent::Oneoff, now) {
            out.push(QueryEvent::Send(o));
        }
    }

    /// A target took the put (`failed`: `None`) or it failed (`Some(timed_out)`). A signed
    /// record refused (not merely unanswered) is checked like one taken: the target may hold a
    /// better version, which ends the store's spread.
    pub(super) fn put_answered(
        &mut self,
        id: QueryId,
        peer: PeerId,
        failed: Option<bool>,
        now: Instant,
        out: &mut Vec<QueryEvent>,
    ) {
        let step = match self.queries.get_mut(&id) {
            _ if failed.is_none() => PutStep::Acked(peer),
            _ if failed == Some(true) => PutStep::Missed,
            Some(q) if matches!(q.purpose, Purpose::Store { .. }) && is_namespaced(&q.key) => {
                match q.put.as_mut() {
                    Some(put) if !put.refused.contains(&peer) => {
                        put.refused.insert(peer);
                        PutStep::Acked(peer)
                    }
                    _ => PutStep::Missed,
                }
            }
            _ => PutStep::Missed,
        };
        self.put_done(id, step, now, out);
    }

    /// A target that took the put answered the request that checks it. A record counts when it
    /// is served back, the same value under the same key; an announcement when the answer names
    /// this node among the providers. A record acknowledged and then not served is a lie
    /// ([`QueryEvent::Unkept`]); a provider missing is not (a full store refuses ADD_PROVIDER
    /// without a word).
    pub(super) fn verified(
        &mut self,
        id: QueryId,
        peer: PeerId,
        response: Option<KadResponse>,
        (now, wall): (Instant, SystemTime),
        out: &mut Vec<QueryEvent>,
    ) {
        let Some(q) = self.queries.get(&id) else {
            return;
        };
        let refused = q.put.as_ref().is_some_and(|p| p.refused.contains(&peer));
        let step = match (&q.purpose, response) {
            (_, None) => PutStep::Missed,
            (Purpose::Store { record }, Some(r)) => match r.record {
                Some(s) if s.key == record.key && s.value == record.value => PutStep::Kept(peer),
                // A better version of a signed record, valid: ours has lost there.
                Some(s)
                    if s.key == record.key
                        && is_namespaced(&q.key)
                        && validate_at(&q.key, &s.value, wall).is_ok()
                        && select(&q.key, &s.value, &record.value) == Ordering::Greater =>
                {
                    // This node takes the better version too, rather than serve and republish
                    // the one the network has moved past.
                    out.push(QueryEvent::Correct {
                        record: s,
                        from: peer,
                        stale: Vec::new(),
                    });
                    PutStep::Superseded
                }
                // Another value: the key's admission rules let a better one replace ours there
                // (or the peer lies); either way ours is not kept, but nothing proves a lie.
                Some(_) => PutStep::Missed,
                // Refused and holding nothing: a full store, a quota used up.
                None if refused => PutStep::Missed,
                None => {
                    out.push(QueryEvent::Unkept { peer });
                    PutStep::Missed
                }
            },
            (Purpose::Provide { provider }, Some(r)) => {
                if r.providers.iter().any(|p| p.peer == provider.peer) {
                    PutStep::Kept(peer)
                } else {
                    PutStep::Missed
                }
            }
            _ => return,
        };
        self.put_done(id, step, now, out);
    }

    /// One target of a put phase moved on: a taken put is checked, a copy seen served counts, a
    /// miss is replaced by the next live candidate; the phase ends once nothing is pending.
    fn put_done(&mut self, id: QueryId, step: PutStep, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let Some((put_request, check)) = requests(&q.purpose, &q.key) else {
            return;
        };
        let Some(put) = q.put.as_mut() else {
            return;
        };
        let (peer, addrs, request, sent) = match step {
            PutStep::Acked(peer) => {
                let addrs = put.addrs.get(&peer).cloned().unwrap_or_default();
                (peer, addrs, check, Sent::Verify(id))
            }
            PutStep::Kept(peer) => {
                put.pending = put.pending.saturating_sub(1);
                put.kept.push(peer);
                return self.put_finished(id, now, out);
            }
            PutStep::Superseded => {
                put.pending = put.pending.saturating_sub(1);
                put.superseded = true;
                put.spare.clear();
                return self.put_finished(id, now, out);
            }
            PutStep::Missed => {
                let Some(next) = put.spare.pop_front() else {
                    put.pending = put.pending.saturating_sub(1);
                    return self.put_finished(id, now, out);
                };
                put.addrs.insert(next.peer, next.addrs.clone());
                (next.peer, next.addrs, put_request, Sent::Put(id))
            }
        };
        // One request in flight replaces the one that resolved: `pending` is unchanged.
        if let Some(o) = self.outbox.send(peer, addrs, request, sent, now) {
            out.push(QueryEvent::Send(o));
        }
    }

    fn put_finished(&mut self, id: QueryId, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(put) = self.queries.get_mut(&id).and_then(|q| q.put.as_mut()) else {
            return;
        };
        if put.pending == 0 {
            let outcome = if put.kept.is_empty() && put.superseded {
                Outcome::Superseded
            } else {
                Outcome::Stored {
                    kept: std::mem::take(&mut put.kept),
                }
            };
            self.done(id, outcome, now, out);
        }
    }
}

/// The peers a record goes to: the `k` nodes closest to `key` among the live candidates and, when
/// this node serves, this node itself, which keeps its own copy and is left out.
fn targets(local: &PeerId, serving: bool, key: &[u8], live: &[Candidate], k: usize) -> Vec<PeerId> {
    let target = KBucketKey::new(key.to_vec());
    let mut all: Vec<PeerId> = live.iter().map(|c| c.peer).filter(|p| p != local).collect();
    if serving {
        all.push(*local);
    }
    all.sort_by_cached_key(|p| target.distance(&KBucketKey::from(*p)));
    all.dedup();
    all.into_iter().take(k).filter(|p| p != local).collect()
}
