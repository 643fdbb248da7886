//! Feeding mirrors: a serving node hands every record it holds to each mirror it meets, then each
//! record new here, at a steady pace ([`MirrorFeed`]). What a mirror keeps of what it is handed is
//! the admission policy's call ([`super::records`]); this is the sending side.

pub mod mirror_feed;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use dht_behaviours::mirror::MirrorRecord;
use libp2p::kad::{Record, RecordKey};
use libp2p::{Multiaddr, PeerId};

use super::config::CoreConfig;
use super::context::Cx;
use super::events::Action;
use super::records::Records;
use mirror_feed::{MIRROR_PACE, MirrorFeed, MirrorId};

/// The mirrors this node feeds and how to reach them.
#[derive(Debug)]
pub(super) struct Mirrors {
    /// This node's id: never its own mirror.
    local: PeerId,
    /// Whether this node holds records to hand (a client holds none).
    serving: bool,
    /// The mirrors the operator chose (`--mirror-peer`): only they are fed.
    chosen: HashSet<PeerId>,
    /// The life a mirror's copy of our own published record gets.
    record_ttl: Duration,
    feed: MirrorFeed,
    /// Their listen addresses (from identify), so that a mirror whose connection was closed (a
    /// missed ping) is dialed again rather than starved of records.
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    next_id: MirrorId,
    last_round: Instant,
    /// Peers that announced the protocol without being chosen.
    ignored: u64,
}

impl Mirrors {
    /// No mirror yet, at `now`, for the node `local` of `config`.
    pub(super) fn new(local: PeerId, config: &CoreConfig, now: Instant) -> Self {
        Self {
            local,
            serving: config.serving,
            chosen: config.mirror_peers.clone(),
            record_ttl: config.timing.record_ttl,
            feed: MirrorFeed::default(),
            addrs: HashMap::new(),
            next_id: 0,
            last_round: now,
            ignored: 0,
        }
    }

    /// Hand-offs to mirrors waiting or in flight.
    pub fn pending(&self) -> usize {
        self.feed.pending()
    }

    /// Hand-offs to mirrors given up (backlog full, or out of tries).
    pub fn dropped(&self) -> u64 {
        self.feed.dropped()
    }

    /// Peers that announced the mirror protocol and were not chosen, so far.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// `peer` speaks the mirror protocol: if the operator chose it as a mirror, and unless this
    /// node is a client (it holds nothing), it gets every record held in `records`. Whether it
    /// is a new mirror. Announcing the protocol alone takes no slot: anyone can announce it, and
    /// a mirror is handed the whole store.
    pub fn seen(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        records: &Records,
        now: Instant,
    ) -> bool {
        if !self.serving || peer == self.local {
            return false;
        }
        if !self.chosen.contains(&peer) {
            self.ignored += 1;
            return false;
        }
        // Identify repeats itself on every connection: the keys are collected for a new mirror
        // only, not at each identify of a known one.
        if self.feed.is_mirror(&peer) {
            self.addrs.insert(peer, addrs);
            return false;
        }
        let keys: Vec<RecordKey> = records.live(now).map(|r| r.key.clone()).collect();
        let new = self.feed.add_mirror(peer, keys);
        if self.feed.is_mirror(&peer) {
            self.addrs.insert(peer, addrs);
        }
        new
    }

    /// A mirror cannot be reached any more: nothing more goes to it.
    pub fn gone(&mut self, peer: &PeerId) {
        self.addrs.remove(peer);
        self.feed.remove_mirror(peer);
    }

    /// A record is new here (or our own went out again): queued for every mirror but its sender.
    pub fn record_added(&mut self, key: &RecordKey, from: Option<PeerId>) {
        if self.feed.has_mirrors() {
            self.feed.record_added(key, from);
        }
    }

    /// A mirror acknowledged a hand-off.
    pub fn acked(&mut self, id: MirrorId) {
        self.feed.acknowledged(&id);
    }

    /// A hand-off failed: tried again, up to its tries.
    pub fn failed(&mut self, id: MirrorId) {
        self.feed.failed(&id);
    }

    /// A round of hand-offs, if one is due: each record read from `records` as it is now.
    pub fn feed(&mut self, records: &Records, cx: &mut Cx) {
        if self.next_round().is_none_or(|at| cx.now < at) {
            return;
        }
        self.last_round = cx.now;
        for handoff in self.feed.due() {
            let Some(record) = records
                .get(&handoff.key, cx.now)
                .map(|r| mirror_copy(r, cx.now, self.record_ttl))
            else {
                continue;
            };
            let id = self.next_id;
            self.next_id += 1;
            let peer = handoff.peer;
            self.feed.sent(id, handoff);
            cx.out.push(Action::Mirror {
                id,
                peer,
                addrs: self.addrs.get(&peer).cloned().unwrap_or_default(),
                record,
            });
        }
    }

    /// When the next round of hand-offs is due, if one has anything to send.
    pub fn next_round(&self) -> Option<Instant> {
        if !self.feed.has_due() {
            return None;
        }
        Some(self.last_round + MIRROR_PACE)
    }
}

/// A record as a mirror receives it: with the time it has left (our own published copy has no
/// expiry; the mirror's copy gets the TTL, as any holder's).
fn mirror_copy(record: &Record, now: Instant, ttl: Duration) -> MirrorRecord {
    MirrorRecord {
        key: record.key.to_vec(),
        value: record.value.clone(),
        expires_in: record
            .expires
            .map_or(ttl, |at| at.saturating_duration_since(now)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use dht_behaviours::store::StoreLimits;
    use dht_behaviours::validation::content_key;
    use dht_behaviours::{ProtocolConfig, Timing};
    use libp2p::PeerId;
    use libp2p::kad::{Record, RecordKey};

    use super::super::{Action, Core, CoreConfig, Input};
    use super::mirror_feed::{MIRROR_ATTEMPTS, MIRROR_IN_FLIGHT, MIRROR_PACE, MirrorId};
    use dht_behaviours::kad_wire::KadRequest;
    use dht_behaviours::mirror::MirrorRecord;

    /// A core feeding `mirrors` (the operator's choice).
    fn core_with(now: Instant, client: bool, mirrors: &[PeerId]) -> Core {
        let protocol = ProtocolConfig {
            timing: Timing::fast(),
            client_mode: client,
            ..ProtocolConfig::default()
        };
        let mut config = CoreConfig::new(&protocol, StoreLimits::default(), 9);
        config.mirror_peers = mirrors.iter().copied().collect();
        Core::fresh(config, now)
    }

    fn record(i: u32) -> Record {
        let value = i.to_be_bytes().to_vec();
        Record::new(RecordKey::new(&content_key(&value)), value)
    }

    /// A peer's PUT of `record`.
    fn put(core: &mut Core, from: PeerId, id: u64, record: Record, now: Instant) {
        core.handle(
            Input::Request {
                peer: from,
                id,
                request: KadRequest::PutValue { record },
                serving: false,
                host: None,
                same_host: false,
            },
            now,
        );
    }

    fn handoffs(actions: &[Action]) -> Vec<(MirrorId, PeerId, Vec<u8>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Mirror {
                    id, peer, record, ..
                } => Some((*id, *peer, record.key.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_mirror_met_is_sent_every_record_held_paced_and_windowed() {
        let t = Instant::now();
        let mirror = PeerId::random();
        let mut core = core_with(t, false, &[mirror]);
        let writer = PeerId::random();
        let held = MIRROR_IN_FLIGHT + 8;
        for i in 0..held as u32 {
            put(&mut core, writer, u64::from(i), record(i), t);
        }
        let found = core.handle(
            Input::MirrorSeen {
                peer: mirror,
                addrs: Vec::new(),
                same_host: false,
            },
            t,
        );
        assert!(found.contains(&Action::MirrorFound { peer: mirror }));
        assert_eq!(core.mirror_pending(), held);

        let at = core.next_wakeup();
        assert!(at <= t + MIRROR_PACE, "a round is due within the pace");
        let first = handoffs(&core.handle(Input::Tick, at));
        assert_eq!(first.len(), MIRROR_IN_FLIGHT, "no more than the window");
        assert!(first.iter().all(|(_, p, _)| *p == mirror));
        assert!(handoffs(&core.handle(Input::Tick, at + MIRROR_PACE)).is_empty());

        // Two acknowledged, one failed: three places free, and the failed one is tried again
        // once the others went.
        core.handle(Input::MirrorAcked { id: first[0].0 }, at);
        core.handle(Input::MirrorAcked { id: first[1].0 }, at);
        core.handle(Input::MirrorFailed { id: first[2].0 }, at);
        let next = handoffs(&core.handle(Input::Tick, at + 2 * MIRROR_PACE));
        assert_eq!(next.len(), 3);
        assert_eq!(core.mirror_pending(), held - 2);
        let mut sent: Vec<Vec<u8>> = first.iter().chain(&next).map(|h| h.2.clone()).collect();
        let mut waiting: Vec<MirrorId> = first[3..].iter().chain(&next).map(|h| h.0).collect();
        let mut now = at + 2 * MIRROR_PACE;
        while core.mirror_pending() > 0 {
            for id in waiting.drain(..) {
                core.handle(Input::MirrorAcked { id }, now);
            }
            now += MIRROR_PACE;
            let round = handoffs(&core.handle(Input::Tick, now));
            sent.extend(round.iter().map(|h| h.2.clone()));
            waiting.extend(round.iter().map(|h| h.0));
        }
        assert_eq!(
            sent.len(),
            held + 1,
            "each record once, the failed one twice"
        );
        sent.sort();
        sent.dedup();
        assert_eq!(sent.len(), held);
    }

    #[test]
    fn new_records_follow_not_back_to_their_sender_and_a_dead_mirror_is_dropped() {
        let t = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut core = core_with(t, false, &[a, b]);
        for m in [a, b] {
            core.handle(
                Input::MirrorSeen {
                    peer: m,
                    addrs: Vec::new(),
                    same_host: false,
                },
                t,
            );
        }
        put(&mut core, a, 1, record(1), t);
        let round = handoffs(&core.handle(Input::Tick, t + MIRROR_PACE));
        assert_eq!(round.len(), 1);
        assert_eq!(round[0].1, b, "not sent back to the mirror it came from");

        // One hand-off fails every try: given up, counted.
        let mut id = round[0].0;
        let mut now = t + MIRROR_PACE;
        for _ in 1..MIRROR_ATTEMPTS {
            core.handle(Input::MirrorFailed { id }, now);
            now += MIRROR_PACE;
            id = handoffs(&core.handle(Input::Tick, now))[0].0;
        }
        core.handle(Input::MirrorFailed { id }, now);
        assert_eq!((core.mirror_pending(), core.mirror_dropped()), (0, 1));

        core.handle(
            Input::Undialable {
                peer: b,
                wrong_peer: false,
            },
            now,
        );
        put(&mut core, a, 2, record(2), now);
        let later = handoffs(&core.handle(Input::Tick, now + Duration::from_secs(1)));
        assert!(
            later.is_empty(),
            "nothing goes to a mirror that cannot be dialed"
        );
    }

    #[test]
    fn a_client_feeds_no_mirror() {
        let t = Instant::now();
        let mirror = PeerId::random();
        let mut core = core_with(t, true, &[mirror]);
        let found = core.handle(
            Input::MirrorSeen {
                peer: mirror,
                addrs: Vec::new(),
                same_host: false,
            },
            t,
        );
        assert!(found.is_empty());
        assert_eq!(core.mirror_pending(), 0);
    }

    /// Announcing the mirror protocol takes no slot: only the operator's mirrors are fed, and a
    /// chosen mirror that goes silent or misbehaves stops being fed (failed on the old code,
    /// where any announcer got the whole store, up to 8 of them).
    #[test]
    fn only_the_operators_mirrors_are_fed_and_a_silent_or_blocked_one_is_dropped() {
        let t = Instant::now();
        let chosen = PeerId::random();
        let mut core = core_with(t, false, &[chosen]);
        put(&mut core, PeerId::random(), 1, record(1), t);
        let squatters: Vec<PeerId> = (0..16).map(|_| PeerId::random()).collect();
        for peer in squatters.iter().chain([&chosen]) {
            core.handle(
                Input::MirrorSeen {
                    peer: *peer,
                    addrs: Vec::new(),
                    same_host: false,
                },
                t,
            );
        }
        let round = handoffs(&core.handle(Input::Tick, t + MIRROR_PACE));
        assert_eq!(round.len(), 1);
        assert_eq!(round[0].1, chosen, "only the chosen mirror");
        assert_eq!(core.stats().mirrors_ignored, 16);
        core.handle(Input::MirrorAcked { id: round[0].0 }, t + MIRROR_PACE);

        // Silent: no more records for it.
        core.handle(Input::Silent { peer: chosen }, t + MIRROR_PACE);
        put(&mut core, PeerId::random(), 2, record(2), t + MIRROR_PACE);
        let now = t + Duration::from_secs(1);
        assert!(handoffs(&core.handle(Input::Tick, now)).is_empty());
        // Back (identify again): fed again, the whole store.
        core.handle(
            Input::MirrorSeen {
                peer: chosen,
                addrs: Vec::new(),
                same_host: false,
            },
            now,
        );
        assert_eq!(core.mirror_pending(), 2);
        // Blocked by the operator: dropped.
        core.handle(Input::Block { peer: chosen }, now);
        assert_eq!(core.mirror_pending(), 0);
    }

    #[test]
    fn a_mirror_takes_pushes_from_its_named_feeders_only_and_shares_apply_to_kad_puts() {
        // Failed before: a mirror took anyone's pushes and anyone's PUTs outside every share.
        let now = Instant::now();
        let protocol = ProtocolConfig {
            timing: Timing::fast(),
            mirror: true,
            ..ProtocolConfig::default()
        };
        let limits = StoreLimits {
            max_records: 64,
            max_bytes: 1 << 20,
        };
        let (feeder, stranger) = (PeerId::random(), PeerId::random());
        let mut config = CoreConfig::new(&protocol, limits, 9);
        config.mirror_feeders = [feeder].into_iter().collect();
        let mut core = Core::fresh(config, now);
        let push = |core: &mut Core, peer, id, record: Record| {
            let record = MirrorRecord {
                key: record.key.to_vec(),
                value: record.value,
                expires_in: Duration::from_secs(3600),
            };
            let actions = core.handle(Input::Mirror { peer, id, record }, now);
            actions.iter().find_map(|a| match a {
                Action::AnswerMirror { kept, .. } => Some(*kept),
                _ => None,
            })
        };
        assert_eq!(push(&mut core, stranger, 1, record(1)), Some(false));
        assert!(core.records().get(&record(1).key, now).is_none());
        assert_eq!(core.stats().mirror_pushes_refused, 1);
        // The feeder is kept past a peer's share (an eighth: 8 records), acknowledged each time.
        for i in 0..40 {
            assert_eq!(
                push(&mut core, feeder, 10 + u64::from(i), record(100 + i)),
                Some(true)
            );
        }
        assert_eq!(core.records().len(), 40);
        // A stranger's kad PUTs meet the shares like at any node.
        let mut acked = 0;
        for i in 0..20u32 {
            let request = Input::Request {
                peer: stranger,
                id: 100 + u64::from(i),
                request: KadRequest::PutValue {
                    record: record(200 + i),
                },
                serving: false,
                host: None,
                same_host: false,
            };
            acked += core
                .handle(request, now)
                .iter()
                .filter(|a| {
                    matches!(
                        a,
                        Action::Answer {
                            response: Some(_),
                            ..
                        }
                    )
                })
                .count();
        }
        assert_eq!(acked, 64 / 8);
    }

    /// A mirror's copy lives no longer than the feeder's copy has left, nor than the TTL however
    /// long the feeder says; and a later push never shortens the copy held.
    #[test]
    fn a_pushed_copy_lives_no_longer_than_the_senders_nor_than_the_ttl() {
        let now = Instant::now();
        let protocol = ProtocolConfig {
            timing: Timing::fast(),
            mirror: true,
            ..ProtocolConfig::default()
        };
        let ttl = protocol.timing.record_ttl;
        let feeder = PeerId::random();
        let mut config = CoreConfig::new(&protocol, StoreLimits::default(), 9);
        config.mirror_feeders = [feeder].into_iter().collect();
        let mut core = Core::fresh(config, now);
        let mut push = |id, record: &Record, expires_in| {
            let record = MirrorRecord {
                key: record.key.to_vec(),
                value: record.value.clone(),
                expires_in,
            };
            core.handle(
                Input::Mirror {
                    peer: feeder,
                    id,
                    record,
                },
                now,
            );
        };
        let (long, short) = (record(1), record(2));
        push(1, &long, ttl * 100);
        push(2, &short, ttl / 4);
        push(3, &short, ttl / 8);
        let expiry = |r: &Record| core.records().get(&r.key, now).and_then(|r| r.expires);
        assert_eq!(expiry(&long), Some(now + ttl));
        assert_eq!(expiry(&short), Some(now + ttl / 4));
    }
}
