//! The second phase of a store or a provide: once the lookup found the k closest live peers, each
//! gets the record (PUT_VALUE) or the announcement (ADD_PROVIDER) and, right behind it on the same
//! stream, the request that asks it back (GET_VALUE, GET_PROVIDERS), which the peer reads once it
//! has taken the first. Only a peer that serves it counts: an acknowledgement costs a liar
//! nothing (and ADD_PROVIDER has none at all). A target that misses is replaced by the next
//! closest live candidate, so the phase goes on until k peers keep it or the candidates run out.
//!
//! The check rides with its PUT rather than after its acknowledgement: one round trip and one
//! wake-up of the target instead of two, and it proves as much, since the peer reads it only
//! after answering the PUT (a Sybil that acknowledges and drops still serves nothing). The two
//! answers are taken in whichever order they come.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::time::{Instant, SystemTime};

use dht_behaviours::kad_wire::{KadRequest, KadResponse};
use dht_behaviours::lookup::{CANDIDATES_PER_K, Candidate};
use dht_behaviours::validation::{is_namespaced, validate_at};
use dht_behaviours::validators::select;
use libp2p::kad::{KBucketKey, Record};
use libp2p::{Multiaddr, PeerId};

use super::{Outcome, Purpose, Queries, QueryEvent, QueryId, Sent};

pub(super) struct PutPhase {
    /// Targets not yet settled.
    pending: usize,
    /// Targets seen serving the record (or naming us as a provider).
    kept: Vec<PeerId>,
    /// Each unsettled target's answers so far.
    targets: HashMap<PeerId, Target>,
    /// Further live candidates, closest first: one replaces each target that fails.
    spare: VecDeque<Candidate>,
    /// A target served a valid record better than ours.
    superseded: bool,
    /// Started early, beside a lookup still running: targets that miss are not replaced yet and
    /// the phase does not end; the lookup's end settles who the k closest are.
    open: bool,
    /// Targets settled without a copy while the lookup ran.
    missed: Vec<PeerId>,
    /// Targets put to early that the lookup found beyond the k closest: awaited and counted if
    /// they serve the copy, not replaced if they miss.
    beyond: Vec<PeerId>,
}

impl PutPhase {
    /// Whether the lookup beside it still runs.
    pub(super) fn lookup_open(&self) -> bool {
        self.open
    }
}

/// One target's two answers, as they come.
#[derive(Default)]
struct Target {
    put: Option<PutAnswer>,
    check: Option<Seen>,
}

/// How a target answered the put.
#[derive(Clone, Copy)]
enum PutAnswer {
    Taken,
    /// Refused (not merely unanswered): a signed record's target may hold a better version.
    Refused,
    TimedOut,
}

/// What the check found at a target.
enum Seen {
    /// Our record (or this node among the providers).
    Ours,
    /// A valid version of a signed record better than ours.
    Better(Record),
    /// Another value, or the providers without us: ours is not kept, and nothing proves a lie.
    Other,
    /// Nothing under the key.
    Nothing,
    /// The check failed.
    Failed,
}

/// How one target of a put phase came out.
enum PutStep {
    /// It served it back: a copy.
    Kept(PeerId),
    /// It answered without it, or the put or the check failed: try the next candidate.
    Missed(PeerId),
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
    /// Store or provide `id` starts with the k closest peers this node knows as its targets
    /// (its table holds all of them, as far as it can tell): each gets its pair now, while the
    /// lookup confirms them. go-libp2p-kad-dht's "optimistic provide" makes the same bet on an
    /// estimate of the network's size; ours rests on the table's buckets having room.
    pub(super) fn start_early_puts(
        &mut self,
        id: QueryId,
        now: Instant,
        out: &mut Vec<QueryEvent>,
    ) {
        self.begin_puts(id, true, now, out);
    }

    /// The lookup of store or provide `id` ended: the put phase starts on the k closest, or the
    /// one started early is settled against them.
    pub(super) fn start_puts(&mut self, id: QueryId, now: Instant, out: &mut Vec<QueryEvent>) {
        let early = self.queries.get(&id).and_then(|q| q.put.as_ref());
        if early.is_some_and(|p| p.open) {
            return self.close_early_puts(id, now, out);
        }
        self.begin_puts(id, false, now, out);
    }

    fn begin_puts(&mut self, id: QueryId, open: bool, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let Some((put, check)) = requests(&q.purpose, &q.key) else {
            return;
        };
        let k = q.lookup.k();
        let live = q.lookup.closest(CANDIDATES_PER_K * k);
        let targets = targets(&self.local, self.config.serving, &q.key, &live, k);
        if targets.is_empty() {
            if !open {
                self.done(id, Outcome::Stored { kept: Vec::new() }, now, out);
            }
            return;
        }
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
            targets: chosen.iter().map(|c| (c.peer, Target::default())).collect(),
            spare,
            superseded: false,
            open,
            missed: Vec::new(),
            beyond: Vec::new(),
        });
        for c in chosen {
            let pair = (put.clone(), Sent::Put(id));
            let check = (check.clone(), Sent::Verify(id));
            if let Some(o) = self.outbox.send_pair(c.peer, c.addrs, pair, check, now) {
                out.push(QueryEvent::Send(o));
            }
        }
    }

    /// The lookup beside an early put phase ended: the k closest it found that were not asked yet
    /// get their pair now, and those that missed are replaced from the spare candidates. Every
    /// target already asked is still awaited and counts if it serves the copy, also one the
    /// lookup found beyond the k closest: the count stays the number of copies served back.
    fn close_early_puts(&mut self, id: QueryId, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let Some((put, check)) = requests(&q.purpose, &q.key) else {
            return;
        };
        let Some(early) = q.put.take() else {
            return;
        };
        let k = q.lookup.k();
        let live = q.lookup.closest(CANDIDATES_PER_K * k);
        let chosen = targets(&self.local, self.config.serving, &q.key, &live, k);
        let (kept, mut targets) = (early.kept, early.targets);
        let (mut fresh, mut spare, mut replace) = (Vec::new(), VecDeque::new(), 0);
        for c in live {
            let tried = kept.contains(&c.peer)
                || early.missed.contains(&c.peer)
                || targets.contains_key(&c.peer);
            if !chosen.contains(&c.peer) {
                if !tried {
                    spare.push_back(c);
                }
            } else if early.missed.contains(&c.peer) {
                replace += 1;
            } else if !tried {
                fresh.push(c);
            }
        }
        if early.superseded {
            // Ours must not spread past the holders of the better version.
            (fresh, spare, replace) = (Vec::new(), VecDeque::new(), 0);
        }
        let beyond = targets
            .keys()
            .filter(|p| !chosen.contains(p))
            .copied()
            .collect();
        fresh.extend(std::iter::from_fn(|| spare.pop_front()).take(replace));
        targets.extend(fresh.iter().map(|c| (c.peer, Target::default())));
        q.put = Some(PutPhase {
            pending: targets.len(),
            kept,
            targets,
            spare,
            superseded: early.superseded,
            open: false,
            missed: Vec::new(),
            beyond,
        });
        for c in fresh {
            let pair = (put.clone(), Sent::Put(id));
            let check = (check.clone(), Sent::Verify(id));
            if let Some(o) = self.outbox.send_pair(c.peer, c.addrs, pair, check, now) {
                out.push(QueryEvent::Send(o));
            }
        }
        self.put_finished(id, now, out);
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

    /// A target took the put (`failed`: `None`) or it failed (`Some(timed_out)`).
    pub(super) fn put_answered(
        &mut self,
        id: QueryId,
        peer: PeerId,
        failed: Option<bool>,
        now: Instant,
        out: &mut Vec<QueryEvent>,
    ) {
        let answer = match failed {
            None => PutAnswer::Taken,
            Some(true) => PutAnswer::TimedOut,
            Some(false) => PutAnswer::Refused,
        };
        let Some(target) = self.target(id, peer) else {
            return;
        };
        target.put.get_or_insert(answer);
        self.settle(id, peer, now, out);
    }

    /// A target answered the request that checks its copy (`None`: the check failed). A record
    /// is seen when it is served back, the same value under the same key; an announcement when
    /// the answer names this node among the providers.
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
        let seen = match (&q.purpose, response) {
            (_, None) => Seen::Failed,
            (Purpose::Store { record }, Some(r)) => match r.record {
                Some(s) if s.key == record.key && s.value == record.value => Seen::Ours,
                Some(s)
                    if s.key == record.key
                        && is_namespaced(&q.key)
                        && validate_at(&q.key, &s.value, wall).is_ok()
                        && select(&q.key, &s.value, &record.value) == Ordering::Greater =>
                {
                    Seen::Better(s)
                }
                // Another value: the key's admission rules let a better one replace ours there
                // (or the peer lies); either way ours is not kept, but nothing proves a lie.
                Some(_) => Seen::Other,
                None => Seen::Nothing,
            },
            // A provider missing is no lie: a full store refuses ADD_PROVIDER without a word.
            (Purpose::Provide { provider }, Some(r)) => {
                if r.providers.iter().any(|p| p.peer == provider.peer) {
                    Seen::Ours
                } else {
                    Seen::Other
                }
            }
            _ => return,
        };
        let Some(target) = self.target(id, peer) else {
            return;
        };
        target.check.get_or_insert(seen);
        self.settle(id, peer, now, out);
    }

    /// Target `peer` of query `id`'s put phase, while unsettled.
    fn target(&mut self, id: QueryId, peer: PeerId) -> Option<&mut Target> {
        self.queries
            .get_mut(&id)?
            .put
            .as_mut()?
            .targets
            .get_mut(&peer)
    }

    /// Once both of a target's answers are in, it settles. A record acknowledged and then not
    /// served is a lie ([`QueryEvent::Unkept`]); a valid better version served ends the spread
    /// of ours, and this node takes it too.
    fn settle(&mut self, id: QueryId, peer: PeerId, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(put) = self.queries.get_mut(&id).and_then(|q| q.put.as_mut()) else {
            return;
        };
        let both = put
            .targets
            .get(&peer)
            .is_some_and(|t| t.put.is_some() && t.check.is_some());
        if !both {
            return;
        }
        let Some(Target {
            put: Some(answer),
            check: Some(seen),
        }) = put.targets.remove(&peer)
        else {
            return;
        };
        let step = match (answer, seen) {
            (_, Seen::Failed) | (PutAnswer::TimedOut, _) => PutStep::Missed(peer),
            (_, Seen::Ours) => PutStep::Kept(peer),
            (_, Seen::Better(record)) => {
                // This node takes the better version too, rather than serve and republish the
                // one the network has moved past.
                out.push(QueryEvent::Correct {
                    record,
                    from: peer,
                    stale: Vec::new(),
                });
                PutStep::Superseded
            }
            (_, Seen::Other) | (PutAnswer::Refused, Seen::Nothing) => PutStep::Missed(peer),
            (PutAnswer::Taken, Seen::Nothing) => {
                out.push(QueryEvent::Unkept { peer });
                PutStep::Missed(peer)
            }
        };
        self.put_done(id, step, now, out);
    }

    /// One target of a put phase settled: a copy seen served counts, a miss is replaced by the
    /// next live candidate; the phase ends once no target is pending.
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
        let next = match step {
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
            PutStep::Missed(peer) if put.open => {
                put.pending = put.pending.saturating_sub(1);
                put.missed.push(peer);
                return;
            }
            PutStep::Missed(peer) if put.beyond.contains(&peer) => {
                put.pending = put.pending.saturating_sub(1);
                return self.put_finished(id, now, out);
            }
            PutStep::Missed(_) => {
                let Some(next) = put.spare.pop_front() else {
                    put.pending = put.pending.saturating_sub(1);
                    return self.put_finished(id, now, out);
                };
                put.targets.insert(next.peer, Target::default());
                next
            }
        };
        // A new target replaces the one that missed: `pending` is unchanged.
        let pair = (put_request, Sent::Put(id));
        let check = (check, Sent::Verify(id));
        if let Some(o) = self
            .outbox
            .send_pair(next.peer, next.addrs, pair, check, now)
        {
            out.push(QueryEvent::Send(o));
        }
    }

    fn put_finished(&mut self, id: QueryId, now: Instant, out: &mut Vec<QueryEvent>) {
        let Some(put) = self.queries.get_mut(&id).and_then(|q| q.put.as_mut()) else {
            return;
        };
        if put.pending == 0 && !put.open {
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
