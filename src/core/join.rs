//! Joining and rejoining: the peers joined through, the rounds of bootstrap dials while the table
//! is empty ([`Bootstrapper`]), the bootstrap nodes dialed again at each refresh once joined, and
//! a rejoin as soon as the host has a new address.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::Core;
use super::context::Cx;
use super::events::Action;
use super::joining::bootstrap::{Bootstrapper, DialId};
use super::queries::Purpose;

impl Core {
    /// The bootstrap rounds: addresses, their peers, peers to rejoin through.
    pub fn bootstrap(&self) -> &Bootstrapper {
        self.joining.bootstrap()
    }

    /// How long until the next round of bootstrap dials, if one is coming (for messages).
    pub fn next_round_in(&self, now: Instant) -> Option<Duration> {
        self.joining.next_round_in(!self.routing.is_empty(), now)
    }

    /// Joins through `peers`, remembered as peers joined through, with a lookup of our own id.
    pub(super) fn join(&mut self, peers: Vec<(PeerId, Vec<Multiaddr>)>, cx: &mut Cx) {
        for (peer, addrs) in peers {
            self.seen(peer, addrs.clone(), cx);
            self.joining.joined_through(peer, addrs, cx);
        }
        let target = self.local.to_bytes();
        let id = self.start(target, Purpose::Refresh, cx);
        self.joining.started(id, cx.now);
    }

    /// We dialed `peer` at `addr` and are connected (`dial`: one of ours). A dial of a bootstrap
    /// address, ours or another's, joins through it.
    pub(super) fn connected(
        &mut self,
        peer: PeerId,
        addr: Multiaddr,
        dial: Option<DialId>,
        cx: &mut Cx,
    ) {
        if self.joining.connected(peer, &addr, dial) {
            self.join(vec![(peer, vec![addr])], cx);
        }
    }

    /// The host has a new address (an interface came up): if the node was cut off, that may be
    /// its network back; dial and rejoin now rather than at the next round or interval.
    pub(super) fn new_address(&mut self, cx: &mut Cx) {
        self.joining.retry_now(cx.now);
        if !self.routing.is_empty() {
            self.join(Vec::new(), cx);
        }
        self.joining.tick(&self.routing, cx);
    }

    /// The table emptied: ask the driver for the kad servers still connected, and dial the
    /// bootstrap and remembered peers now rather than after a back-off.
    pub(super) fn emptied(&mut self, cx: &mut Cx) {
        cx.out.push(Action::Relearn);
        self.joining.retry_now(cx.now);
        self.joining.tick(&self.routing, cx);
    }

    /// The bootstrap addresses, from now on: dialed at once if the table is empty.
    pub(super) fn set_bootstrap(&mut self, addrs: Vec<Multiaddr>, cx: &mut Cx) {
        self.joining.set_addrs(addrs, cx.now);
        self.joining.tick(&self.routing, cx);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use dht_behaviours::kad_wire::KadResponse;
    use dht_behaviours::store::StoreLimits;
    use dht_behaviours::{ProtocolConfig, Timing};
    use libp2p::multiaddr::Protocol;
    use libp2p::{Multiaddr, PeerId};

    use super::super::joining::bootstrap::{BOOTSTRAP_BACKOFF_MIN, DialId};
    use super::super::{Action, Core, CoreConfig, Input};

    fn core(now: Instant) -> Core {
        let protocol = ProtocolConfig {
            timing: Timing::fast(),
            ..ProtocolConfig::default()
        };
        Core::fresh(CoreConfig::new(&protocol, StoreLimits::default(), 5), now)
    }

    fn addr(i: u8) -> Multiaddr {
        format!("/ip4/10.0.0.{i}/tcp/4001").parse().expect("addr")
    }

    fn dials(actions: &[Action]) -> Vec<(DialId, Multiaddr)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Dial { dial, addr } => Some((*dial, addr.clone())),
                _ => None,
            })
            .collect()
    }

    /// Hands `input` to the core, answering every request it sends with no closer peers (a
    /// network of one answering peer); returns every action it took.
    fn handle(core: &mut Core, input: Input, now: Instant) -> Vec<Action> {
        let mut inputs = vec![input];
        let mut all = Vec::new();
        while let Some(input) = inputs.pop() {
            for action in core.handle(input, now) {
                if let Action::Send(o) = &action {
                    inputs.push(Input::Response {
                        id: o.id,
                        response: KadResponse {
                            kind: o.request.kind(),
                            record: None,
                            closer: Vec::new(),
                            providers: Vec::new(),
                            dropped: 0,
                        },
                        same_host: false,
                    });
                }
                all.push(action);
            }
        }
        all
    }

    /// Ticks the core at each of its wake-ups from `now` up to `until`; every dial fails. The
    /// dials, with when they were asked for.
    fn run(core: &mut Core, mut now: Instant, until: Instant) -> Vec<(Instant, Multiaddr)> {
        let mut seen = Vec::new();
        loop {
            now = core.next_wakeup().max(now);
            if now > until {
                return seen;
            }
            for (dial, addr) in dials(&handle(core, Input::Tick, now)) {
                core.handle(Input::DialFailed { dial }, now);
                seen.push((now, addr));
            }
            now += Duration::from_millis(1);
        }
    }

    /// Ticks the core at its wake-ups from `now` until it dials.
    fn next_dial(core: &mut Core, mut now: Instant) -> (Instant, DialId) {
        loop {
            now = core.next_wakeup().max(now);
            if let Some((dial, _)) = dials(&handle(core, Input::Tick, now)).first() {
                return (now, *dial);
            }
            now += Duration::from_millis(1);
        }
    }

    #[test]
    fn rounds_back_off_while_unjoined_and_a_bootstrap_dial_that_connects_joins() {
        let t = Instant::now();
        let mut core = core(t);
        let first = dials(&core.handle(
            Input::Bootstrap {
                addrs: vec![addr(1)],
            },
            t,
        ));
        assert_eq!(first.len(), 1, "the first round goes out at once");
        core.handle(Input::DialFailed { dial: first[0].0 }, t);
        let rounds = run(&mut core, t, t + Duration::from_secs(8));
        let waits: Vec<Duration> = rounds.iter().map(|(at, _)| *at - t).collect();
        assert_eq!(
            waits,
            [1, 3, 7].map(|s| BOOTSTRAP_BACKOFF_MIN * s).to_vec(),
            "rounds 1, 2 and 4 s apart"
        );

        let (now, dial) = next_dial(&mut core, t + Duration::from_secs(8));
        assert_eq!(now - t, BOOTSTRAP_BACKOFF_MIN * 15, "then 8 s");
        let peer = PeerId::random();
        let mut at = addr(1);
        at.push(Protocol::P2p(peer));
        let actions = handle(
            &mut core,
            Input::Connected {
                peer,
                addr: at,
                dial: Some(dial),
            },
            now,
        );
        assert!(actions.contains(&Action::Joined { peer }));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Send(o) if o.peer == peer)),
            "the join looks up our own id through it"
        );
        assert!(core.routing().contains(&peer));
        let later = run(&mut core, now, now + Duration::from_secs(8));
        assert!(later.is_empty(), "joined: no more rounds ({later:?})");
    }

    #[test]
    fn a_node_cut_off_dials_the_peers_that_left_its_table_by_id() {
        let t = Instant::now();
        let mut core = core(t);
        let (a, b) = (PeerId::random(), PeerId::random());
        core.handle(
            Input::Join {
                peers: vec![(a, vec![addr(1)])],
            },
            t,
        );
        core.handle(
            Input::PeerSeen {
                peer: b,
                addrs: vec![addr(2)],
                same_host: false,
            },
            t,
        );
        for peer in [a, b] {
            let actions = core.handle(Input::Unreachable { peer }, t);
            assert!(
                actions
                    .iter()
                    .any(|x| matches!(x, Action::Evicted { peer: p, .. } if *p == peer))
            );
        }
        assert!(core.routing().is_empty());
        let rounds = run(&mut core, t, t + Duration::from_secs(2));
        let first: Vec<String> = rounds
            .iter()
            .filter(|(at, _)| *at == rounds[0].0)
            .map(|(_, a)| a.to_string())
            .collect();
        assert_eq!(
            first,
            vec![
                format!("{}/p2p/{b}", addr(2)),
                format!("{}/p2p/{a}", addr(1))
            ],
            "newest first, by id"
        );
    }

    #[test]
    fn a_joined_node_dials_the_bootstrap_nodes_missing_from_its_table_at_each_refresh() {
        let t = Instant::now();
        let mut core = core(t);
        let round = dials(&core.handle(
            Input::Bootstrap {
                addrs: vec![addr(1), addr(2)],
            },
            t,
        ));
        let peer = PeerId::random();
        let mut at = addr(1);
        at.push(Protocol::P2p(peer));
        handle(
            &mut core,
            Input::Connected {
                peer,
                addr: at,
                dial: Some(round[0].0),
            },
            t,
        );
        core.handle(Input::DialFailed { dial: round[1].0 }, t);
        let interval = core.config.timing.bootstrap_interval;
        let redials = run(&mut core, t, t + interval + interval / 2);
        assert_eq!(
            redials,
            vec![(t + interval, addr(2))],
            "only the one whose peer is not in the table, once an interval"
        );

        // A new address of the host: the round is due at once, and a joined node rejoins.
        let actions = handle(&mut core, Input::NewAddress, t + interval * 2);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Send(o) if o.peer == peer))
        );
    }
}
