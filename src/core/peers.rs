//! What the core does as peers' standing changes: offences and blocks, silences, peers found
//! unreachable, our requests that failed (a refusal backs off, a timeout counts toward eviction),
//! and a table that emptied. The books themselves are [`super::standing`]; the core keeps them,
//! so that the simulator runs the same policy as the node: a blocked or silent peer never enters
//! the routing table, is never handed to a lookup, and a blocked peer's requests go unanswered
//! here whatever the transport does.

use std::time::{Duration, Instant};

use dht_behaviours::config::MAX_ADDRS_PER_PEER;
use dht_behaviours::kad_wire::{KadResponse, WirePeer};
use dht_behaviours::validation::RecordError;
use libp2p::PeerId;

use super::context::Cx;
use super::events::Action;
use super::outbox::{FailureKind, RequestId};
use super::standing::offence_for;
use super::standing::reputation::{BlockReason, Offence};
use super::standing::throttle::THROTTLE_BACKOFF_MIN;
use super::vetting::{vetted_peers, vetted_providers};
use super::{Core, Refusal};

impl Core {
    /// Whether `peer` is blocked.
    pub fn is_blocked(&self, peer: &PeerId) -> bool {
        self.standing.reputation.is_blocked(peer)
    }

    /// Whether `peer` is held out as silent at `now`.
    pub fn is_silent(&self, peer: &PeerId, now: Instant) -> bool {
        self.standing.silence.is_silent(peer, now)
    }

    /// The blocked peers, and for how long each still is (`None`: until unblocked).
    pub fn blocked(&self, now: Instant) -> Vec<(PeerId, Option<Duration>)> {
        let mut list: Vec<_> = self
            .standing
            .reputation
            .blocked()
            .map(|(peer, reason)| {
                let left = match reason {
                    BlockReason::Manual => None,
                    BlockReason::Misbehaved { until } => Some(until.saturating_duration_since(now)),
                };
                (*peer, left)
            })
            .collect();
        list.sort_by_key(|(peer, _)| *peer);
        list
    }

    /// `peer` did something wrong; one offence too many blocks it.
    pub(super) fn offend(&mut self, peer: PeerId, offence: Offence, cx: &mut Cx) {
        if self.standing.reputation.offend(peer, offence, cx.now) {
            self.stats.blocked += 1;
            self.enforce_block(peer, Some(offence), cx);
        }
    }

    /// The operator blocks `peer`, with no end.
    pub(super) fn block(&mut self, peer: PeerId, cx: &mut Cx) {
        self.standing.reputation.block(peer);
        self.enforce_block(peer, None, cx);
    }

    /// The operator lifts a block.
    pub(super) fn unblock(&mut self, peer: PeerId, cx: &mut Cx) {
        if self.standing.reputation.unblock(&peer) {
            cx.out.push(Action::Unblock { peer });
        }
    }

    fn enforce_block(&mut self, peer: PeerId, offence: Option<Offence>, cx: &mut Cx) {
        // Not remembered for a rejoin: a blocked peer is not one to come back to.
        self.routing.remove(&peer);
        self.mirrors.gone(&peer);
        cx.out.push(Action::Block { peer, offence });
    }

    /// A record `peer` sent was refused: an invalid one is an offence.
    pub(super) fn refused(&mut self, peer: PeerId, refusal: Refusal, cx: &mut Cx) {
        self.stats.puts_refused += 1;
        let offence = match &refusal {
            Refusal::Invalid(error) => Some(offence_for(error)),
            _ => None,
        };
        cx.out.push(Action::Refused { peer, refusal });
        if let Some(offence) = offence {
            self.offend(peer, offence, cx);
        }
    }

    /// `peer` answered with a false record.
    pub(super) fn lied(&mut self, peer: PeerId, error: RecordError, cx: &mut Cx) {
        self.stats.lies += 1;
        let offence = offence_for(&error);
        cx.out.push(Action::Lied { peer, error });
        self.offend(peer, offence, cx);
    }

    /// `peer` acknowledged a store's record and did not serve it back.
    pub(super) fn unkept(&mut self, peer: PeerId, cx: &mut Cx) {
        self.stats.unkept += 1;
        self.offend(peer, Offence::Unkept, cx);
    }

    /// `peer` took a request (a ping) and did not answer: it is held out for a while, each
    /// silence longer than the last, and leaves the table. One silence is counted once, however
    /// many of its connections time out.
    pub(super) fn silent(&mut self, peer: PeerId, cx: &mut Cx) {
        if let Some(held) = self.standing.silence.silenced(peer, cx.now) {
            cx.out.push(Action::HeldOut { peer, held });
            self.offend(peer, Offence::Unanswered, cx);
        }
        self.unreachable(&peer, cx);
        // Fed again when identify names it again.
        self.mirrors.gone(&peer);
    }

    /// `peer` cannot be reached (a failed dial, a broken connection): it leaves the table and is
    /// remembered for a rejoin.
    pub(super) fn unreachable(&mut self, peer: &PeerId, cx: &mut Cx) {
        if let Some(entry) = self.routing.remove(peer) {
            self.stats.evicted += 1;
            self.joining.left(*entry.peer(), &entry.addrs);
            cx.out.push(Action::Evicted {
                peer: *entry.peer(),
                addrs: entry.addrs,
            });
        }
    }

    /// Blocks that ran out at `now`, lifted.
    pub(super) fn standing_tick(&mut self, cx: &mut Cx) {
        for peer in self.standing.reputation.expired(cx.now) {
            cx.out.push(Action::Unblock { peer });
        }
    }

    /// One of our requests failed in the way `kind` says.
    pub(super) fn request_failed(&mut self, id: RequestId, kind: FailureKind, cx: &mut Cx) {
        // A refused lookup request is the peer's rate limit speaking: back off from it and ask
        // it again when the back-off ends, its place in the lookup kept.
        if kind == FailureKind::Refused
            && let Some(peer) = self.queries.lookup_peer(id)
        {
            // A search asks again at most the shortest back-off on: its reader waits, and a
            // peer's long back-off is for new lookups' first choices.
            let retry_at = self
                .standing
                .throttled
                .refused(peer, cx.now)
                .min(cx.now + THROTTLE_BACKOFF_MIN);
            self.queries.defer(id, retry_at, cx.now, &mut cx.events);
            return;
        }
        let Some((peer, lookup)) = self.queries.on_failure(id, kind, cx.now, &mut cx.events) else {
            return;
        };
        match kind {
            // A refused PUT_VALUE (a full store, a quota used up) says nothing of the peer.
            FailureKind::Refused => {}
            FailureKind::TimedOut => self.failed(&peer, cx),
            FailureKind::Broken if lookup => self.failed(&peer, cx),
            FailureKind::Broken => {}
        }
    }

    /// `peer` could not be dialed: it leaves the table (at once if it is not the peer its
    /// address named), and its mirror feed stops.
    pub(super) fn undialable(&mut self, peer: PeerId, wrong_peer: bool, cx: &mut Cx) {
        if wrong_peer {
            self.routing.remove(&peer);
        } else {
            self.unreachable(&peer, cx);
        }
        self.mirrors.gone(&peer);
    }

    /// Our last connection to `peer` closed: if it is in the table, see whether it is still
    /// there.
    pub(super) fn connection_lost(&mut self, peer: PeerId, cx: &mut Cx) {
        if !self.is_blocked(&peer)
            && let Some(entry) = self.routing.get(&peer)
        {
            cx.out.push(Action::CheckPeer {
                peer,
                addrs: entry.addrs.clone(),
            });
        }
    }

    /// A peer answered our request `id` (`same_host`: from this host): the answer goes to its
    /// query, the peers it names (their addresses vetted, the inadmissible left out) become
    /// candidates, and the peer counts as heard from.
    pub(super) fn response(
        &mut self,
        id: RequestId,
        mut response: KadResponse,
        same_host: bool,
        cx: &mut Cx,
    ) {
        response.providers = vetted_providers(std::mem::take(&mut response.providers), same_host);
        response.closer = vetted_peers(std::mem::take(&mut response.closer), same_host);
        let mut closer: Vec<WirePeer> = response
            .closer
            .iter()
            .cloned()
            .map(|mut p| {
                p.addrs.truncate(MAX_ADDRS_PER_PEER);
                p
            })
            .collect();
        self.standing.admit_closer(&self.local, &mut closer, cx.now);
        if let Some(peer) = self.queries.on_response(
            id,
            response,
            closer,
            (cx.now, self.records.wall(cx.now)),
            &mut cx.events,
        ) {
            self.standing.throttled.answered(&peer);
            self.seen(peer, Vec::new(), cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind, WirePeer};
    use dht_behaviours::store::StoreLimits;
    use dht_behaviours::validation::content_key;
    use dht_behaviours::{ProtocolConfig, Timing};
    use libp2p::kad::{Record, RecordKey};
    use libp2p::{Multiaddr, PeerId};

    use super::super::standing::reputation::{BLOCK_DURATION, Offence};
    use super::super::standing::silence::SILENT_QUARANTINE_FIRST;
    use super::super::{Action, Core, CoreConfig, Input};

    fn core(now: Instant) -> Core {
        let protocol = ProtocolConfig {
            timing: Timing::fast(),
            ..ProtocolConfig::default()
        };
        Core::fresh(CoreConfig::new(&protocol, StoreLimits::default(), 3), now)
    }

    fn addr(i: u16) -> Vec<Multiaddr> {
        vec![format!("/ip4/10.0.0.1/tcp/{i}").parse().expect("addr")]
    }

    fn seen(core: &mut Core, peer: PeerId, now: Instant) {
        core.handle(
            Input::PeerSeen {
                peer,
                addrs: addr(1),
                same_host: false,
            },
            now,
        );
    }

    fn put(peer: PeerId, id: u64, record: Record) -> Input {
        Input::Request {
            peer,
            id,
            request: KadRequest::PutValue { record },
            serving: true,
            host: None,
            same_host: false,
        }
    }

    fn blocks(actions: &[Action]) -> Vec<(PeerId, Option<Offence>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Block { peer, offence } => Some((*peer, *offence)),
                _ => None,
            })
            .collect()
    }

    fn unblocks(actions: &[Action]) -> Vec<PeerId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Unblock { peer } => Some(*peer),
                _ => None,
            })
            .collect()
    }

    fn held(actions: &[Action]) -> Option<Duration> {
        actions.iter().find_map(|a| match a {
            Action::HeldOut { held, .. } => Some(*held),
            _ => None,
        })
    }

    #[test]
    fn a_forged_record_blocks_its_sender_at_once_and_keeps_it_out() {
        let now = Instant::now();
        let mut core = core(now);
        let forger = PeerId::random();
        seen(&mut core, forger, now);
        assert!(core.routing().contains(&forger));
        let forged = Record::new(RecordKey::new(&content_key(b"other")), b"value".to_vec());
        let actions = core.handle(put(forger, 1, forged), now);
        assert_eq!(
            blocks(&actions),
            vec![(forger, Some(Offence::ForgedContent))]
        );
        assert!(
            !core.routing().contains(&forger),
            "a blocked peer leaves the table"
        );
        assert_eq!(core.stats().blocked, 1);

        // Its valid records go unanswered and unkept, and it cannot come back.
        let value = b"good".to_vec();
        let good = Record::new(RecordKey::new(&content_key(&value)), value);
        let actions = core.handle(put(forger, 2, good.clone()), now);
        assert!(actions.contains(&Action::Answer {
            id: 2,
            response: None
        }));
        assert!(core.records().get(&good.key, now).is_none());
        seen(&mut core, forger, now);
        assert!(!core.routing().contains(&forger));

        // Named as a closer peer in an answer, it is not asked.
        let honest = PeerId::random();
        seen(&mut core, honest, now);
        let sent = core.handle(
            Input::Fetch {
                op: 1,
                key: content_key(b"missing").to_vec(),
            },
            now,
        );
        let Some(Action::Send(o)) = sent.iter().find(|a| matches!(a, Action::Send(_))) else {
            panic!("a fetch asks the known peer");
        };
        let before = core.ignored();
        let response = KadResponse {
            kind: MessageKind::GetValue,
            record: None,
            closer: vec![WirePeer {
                peer: forger,
                addrs: addr(2),
            }],
            providers: Vec::new(),
            dropped: 0,
        };
        let actions = core.handle(
            Input::Response {
                id: o.id,
                response,
                same_host: false,
            },
            now,
        );
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Send(o) if o.peer == forger)),
            "a blocked peer is never asked"
        );
        assert_eq!(core.ignored(), before + 1);
    }

    #[test]
    fn small_offences_add_up_to_a_block_that_runs_out_and_an_operators_block_does_not() {
        let now = Instant::now();
        let mut core = core(now);
        let sloppy = PeerId::random();
        let offend = |core: &mut Core| {
            core.handle(
                Input::Offence {
                    peer: sloppy,
                    offence: Offence::MalformedMessage,
                },
                now,
            )
        };
        let threshold = super::super::standing::reputation::BLOCK_THRESHOLD
            / Offence::MalformedMessage.points();
        for _ in 1..threshold {
            assert!(blocks(&offend(&mut core)).is_empty());
        }
        assert_eq!(
            blocks(&offend(&mut core)),
            vec![(sloppy, Some(Offence::MalformedMessage))]
        );
        assert_eq!(core.blocked(now), vec![(sloppy, Some(BLOCK_DURATION))]);

        let chosen = PeerId::random();
        let actions = core.handle(Input::Block { peer: chosen }, now);
        assert_eq!(blocks(&actions), vec![(chosen, None)]);
        let early = core.handle(Input::Tick, now + BLOCK_DURATION - Duration::from_secs(1));
        assert!(unblocks(&early).is_empty());
        let late = core.handle(Input::Tick, now + BLOCK_DURATION);
        assert_eq!(unblocks(&late), vec![sloppy], "the operator's block stays");
        assert!(core.is_blocked(&chosen) && !core.is_blocked(&sloppy));
        let lifted = core.handle(Input::Unblock { peer: chosen }, now);
        assert_eq!(unblocks(&lifted), vec![chosen]);
        assert!(unblocks(&core.handle(Input::Unblock { peer: chosen }, now)).is_empty());
    }

    #[test]
    fn a_silent_peer_is_held_out_until_heard_from_and_longer_each_time() {
        let t0 = Instant::now();
        let mut core = core(t0);
        let quiet = PeerId::random();
        seen(&mut core, quiet, t0);
        let actions = core.handle(Input::Silent { peer: quiet }, t0);
        assert_eq!(held(&actions), Some(SILENT_QUARANTINE_FIRST));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Evicted { peer, .. } if *peer == quiet)),
            "evicted, remembered for a rejoin"
        );
        // Another connection timing out in the same silence counts nothing more.
        assert_eq!(held(&core.handle(Input::Silent { peer: quiet }, t0)), None);
        seen(&mut core, quiet, t0 + SILENT_QUARANTINE_FIRST / 2);
        assert!(!core.routing().contains(&quiet), "held out");

        let t1 = t0 + SILENT_QUARANTINE_FIRST;
        seen(&mut core, quiet, t1);
        assert!(
            core.routing().contains(&quiet),
            "back once the quarantine ran out"
        );
        let actions = core.handle(Input::Silent { peer: quiet }, t1);
        assert_eq!(held(&actions), Some(2 * SILENT_QUARANTINE_FIRST));

        // Heard from (a ping answered): back at once.
        core.handle(Input::Heard { peer: quiet }, t1);
        seen(&mut core, quiet, t1);
        assert!(core.routing().contains(&quiet));
        assert!(!core.is_blocked(&quiet), "two silences are no block");
    }
}
