//! Joining and staying joined: the peers joined through, the rounds of bootstrap dials while the
//! table is empty ([`Bootstrapper`]), the bootstrap nodes dialed again at each refresh once
//! joined, the follow-up lookups after a join, and the refresh interval.

pub mod bootstrap;

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::context::Cx;
use super::events::Action;
use super::outbox::QueryId;
use super::routing::RoutingTable;
use bootstrap::{Bootstrapper, DialId};

/// Peers joined through that are remembered (the oldest are forgotten first).
pub const MAX_BOOTSTRAP_PEERS: usize = 64;
/// Lookups of our own id that follow a join, at [`JOIN_FOLLOW_UP`], then twice, four and eight
/// times that after it: nodes that join at the same moment through the same peer are not in each
/// other's answers, and would otherwise meet only at the first refresh (10 minutes by default).
pub const JOIN_FOLLOW_UPS: u32 = 4;
/// The first follow-up's delay after the join's lookup ended.
pub const JOIN_FOLLOW_UP: Duration = Duration::from_secs(1);

/// Where this node stands in joining its network, and when it next looks again.
pub(super) struct Joining {
    /// The join's lookup of our own id, while it runs.
    query: Option<QueryId>,
    /// The join's next follow-up lookup of our own id, and how many follow-ups are left.
    follow_up: (Option<Instant>, u32),
    /// The peers joined through: put back in the table at each refresh when missing, so that a
    /// node whose table lost every peer of one side (a partition, a mass failure) finds them
    /// again once they are back.
    through: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Bootstrap addresses and their rounds of dials; peers to rejoin through.
    dials: Bootstrapper,
    next_dial: DialId,
    /// When the bootstrap nodes missing from the table were last dialed.
    last_redial: Instant,
    /// When the table was last refreshed (a join counts).
    last_refresh: Instant,
    /// How often the table is refreshed and missing bootstrap nodes dialed.
    interval: Duration,
}

impl Joining {
    /// Not joined yet at `now`; refreshing every `interval` once joined.
    pub fn new(now: Instant, interval: Duration) -> Self {
        Self {
            query: None,
            follow_up: (None, 0),
            through: Vec::new(),
            dials: Bootstrapper::new(Vec::new(), now),
            next_dial: 0,
            last_redial: now,
            last_refresh: now,
            interval,
        }
    }

    /// The bootstrap rounds: addresses, their peers, peers to rejoin through.
    pub fn bootstrap(&self) -> &Bootstrapper {
        &self.dials
    }

    /// The bootstrap addresses, from now on.
    pub fn set_addrs(&mut self, addrs: Vec<Multiaddr>, now: Instant) {
        self.dials.set_addrs(addrs, now);
    }

    /// Remembers `peer` at `addrs` as a peer joined through.
    pub fn joined_through(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, cx: &mut Cx) {
        self.through.retain(|(p, _)| *p != peer);
        self.through.push((peer, addrs));
        if self.through.len() > MAX_BOOTSTRAP_PEERS {
            let extra = self.through.len() - MAX_BOOTSTRAP_PEERS;
            self.through.drain(..extra);
        }
        cx.out.push(Action::Joined { peer });
    }

    /// The join's lookup started as query `id` at `now`: it counts as a refresh, and its
    /// follow-ups are scheduled once it ends.
    pub fn started(&mut self, id: QueryId, now: Instant) {
        self.query = Some(id);
        self.follow_up = (None, JOIN_FOLLOW_UPS);
        self.last_refresh = now;
    }

    /// Query `id` ended: whether it was the join's lookup (then its first follow-up is due in
    /// [`JOIN_FOLLOW_UP`]).
    pub fn ended(&mut self, id: QueryId, now: Instant) -> bool {
        if self.query != Some(id) {
            return false;
        }
        self.query = None;
        self.schedule_follow_up(now);
        true
    }

    /// Whether a follow-up lookup is due at `now` (the one after it is then scheduled).
    pub fn follow_up_due(&mut self, now: Instant) -> bool {
        if self.follow_up.0.is_none_or(|at| now < at) {
            return false;
        }
        self.schedule_follow_up(now);
        true
    }

    /// The next follow-up, if any is left.
    fn schedule_follow_up(&mut self, now: Instant) {
        let (_, left) = self.follow_up;
        if left == 0 {
            self.follow_up = (None, 0);
            return;
        }
        let done = JOIN_FOLLOW_UPS - left;
        self.follow_up = (Some(now + JOIN_FOLLOW_UP * (1 << done)), left - 1);
    }

    /// Whether the table's refresh is due at `now` (it is then counted as done).
    pub fn refresh_due(&mut self, now: Instant) -> bool {
        if now < self.last_refresh + self.interval {
            return false;
        }
        self.last_refresh = now;
        true
    }

    /// The peers joined through that are missing from `routing`.
    pub fn missing_from(&self, routing: &RoutingTable) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.through
            .iter()
            .filter(|(p, _)| !routing.contains(p))
            .cloned()
            .collect()
    }

    /// We dialed `peer` at `addr` and are connected (`dial`: one of ours): whether to join
    /// through it (a dial of a bootstrap address, ours or another's).
    pub fn connected(&mut self, peer: PeerId, addr: &Multiaddr, dial: Option<DialId>) -> bool {
        let ours = dial.is_some_and(|d| self.dials.dial_connected(&d, peer).is_some());
        ours || self.dials.is_bootstrap(addr)
    }

    /// A dial of ours failed.
    pub fn dial_failed(&mut self, dial: &DialId, now: Instant) {
        self.dials.dial_failed(dial, now);
    }

    /// Dial now, not after the back-off (the host has a new address, or the table emptied).
    pub fn retry_now(&mut self, now: Instant) {
        self.dials.retry_now(now);
    }

    /// `peer` left the table with `addrs`: remembered to rejoin through, should we be cut off.
    pub fn left(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        self.dials.peer_left(peer, addrs);
    }

    /// A round of dials while `routing` is empty; once joined, the bootstrap nodes missing from
    /// it at each refresh interval (the refresh looks them up by id; a dial also reaches one
    /// whose id we never learned).
    pub fn tick(&mut self, routing: &RoutingTable, cx: &mut Cx) {
        let joined = !routing.is_empty();
        if let Some(addrs) = self.dials.due(cx.now, joined) {
            self.dial(addrs, cx);
        }
        if joined && cx.now >= self.last_redial + self.interval {
            self.last_redial = cx.now;
            let missing = self.dials.missing(|peer| routing.contains(peer));
            self.dial(missing, cx);
        }
    }

    /// When the join next wants the core to wake (`joined`: whether the table holds anyone).
    pub fn next_wakeup(&self, joined: bool) -> Instant {
        let refresh = self.last_refresh + self.interval;
        let mut soonest = self.follow_up.0.map_or(refresh, |f| f.min(refresh));
        if let Some(round) = self.dials.next_round(joined) {
            soonest = soonest.min(round);
        }
        if joined {
            soonest = soonest.min(self.last_redial + self.interval);
        }
        soonest
    }

    /// How long until the next round of bootstrap dials, if one is coming (for messages).
    pub fn next_round_in(&self, joined: bool, now: Instant) -> Option<Duration> {
        self.dials
            .next_round(joined)
            .map(|at| at.saturating_duration_since(now))
    }

    fn dial(&mut self, addrs: Vec<Multiaddr>, cx: &mut Cx) {
        for addr in addrs {
            let dial = self.next_dial;
            self.next_dial += 1;
            self.dials.dialing(dial, addr.clone());
            cx.out.push(Action::Dial { dial, addr });
        }
    }
}
