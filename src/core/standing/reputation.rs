//! Who misbehaved: offences per peer, and who is blocked until when. Pure bookkeeping; the core
//! acts on its verdicts (the peer leaves the routing table, the driver disconnects and refuses it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Offence points at which a peer is blocked.
pub const BLOCK_THRESHOLD: u32 = 10;
/// How long an automatic block lasts.
pub const BLOCK_DURATION: Duration = Duration::from_secs(600);
/// Offence points are forgotten this long after a peer's last offence.
pub const OFFENCE_MEMORY: Duration = Duration::from_secs(3600);
/// Peers whose offences are tracked at most (the oldest are forgotten first).
pub const MAX_TRACKED_PEERS: usize = 10_000;

/// What a peer did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    /// A record whose value does not hash to its content key: provable, so it blocks at once.
    ForgedContent,
    /// A record over a size limit, or with an empty key.
    InvalidRecord,
    /// A broadcast its origin did not sign: provable (honest nodes forward only what they
    /// verified), so it blocks at once.
    ForgedBroadcast,
    /// A PUT acknowledged and the record not served when asked for it at once: a claimed copy
    /// that is not kept. Two within [`OFFENCE_MEMORY`] block the peer.
    Unkept,
    /// A frame our codecs could not decode.
    MalformedMessage,
    /// A ping that timed out: once is a bad link; ten within [`OFFENCE_MEMORY`] make a peer that takes
    /// streams and does not answer, to be pushed out.
    Unanswered,
}

impl Offence {
    /// Points this offence costs.
    pub fn points(self) -> u32 {
        match self {
            Offence::ForgedContent | Offence::ForgedBroadcast => BLOCK_THRESHOLD,
            Offence::Unkept => 5,
            Offence::InvalidRecord => 3,
            Offence::MalformedMessage => 2,
            Offence::Unanswered => 1,
        }
    }
}

/// Why a peer is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// Blocked by the operator (`--block`, console, API); no end.
    Manual,
    /// Blocked for misbehaving, until the given time.
    Misbehaved { until: Instant },
}

#[derive(Debug, Default)]
pub struct Reputation {
    offences: HashMap<PeerId, (u32, Instant)>,
    blocked: HashMap<PeerId, BlockReason>,
}

impl Reputation {
    /// Records an offence; returns `true` when the peer is now to be blocked.
    pub fn offend(&mut self, peer: PeerId, offence: Offence, now: Instant) -> bool {
        if self.blocked.contains_key(&peer) {
            return false;
        }
        if self.offences.len() >= MAX_TRACKED_PEERS && !self.offences.contains_key(&peer) {
            self.forget_oldest();
        }
        let entry = self.offences.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) > OFFENCE_MEMORY {
            entry.0 = 0;
        }
        entry.0 += offence.points();
        entry.1 = now;
        if entry.0 >= BLOCK_THRESHOLD {
            self.offences.remove(&peer);
            self.blocked.insert(
                peer,
                BlockReason::Misbehaved {
                    until: now + BLOCK_DURATION,
                },
            );
            return true;
        }
        false
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self
            .offences
            .iter()
            .min_by_key(|(_, (_, at))| *at)
            .map(|(p, _)| *p)
        {
            self.offences.remove(&oldest);
        }
    }

    pub fn block(&mut self, peer: PeerId) {
        self.offences.remove(&peer);
        self.blocked.insert(peer, BlockReason::Manual);
    }

    /// Lifts a block; `true` if the peer was blocked.
    pub fn unblock(&mut self, peer: &PeerId) -> bool {
        self.blocked.remove(peer).is_some()
    }

    /// Automatic blocks that have run out, now lifted.
    pub fn expired(&mut self, now: Instant) -> Vec<PeerId> {
        let done: Vec<PeerId> = self
            .blocked
            .iter()
            .filter(|(_, r)| matches!(r, BlockReason::Misbehaved { until } if *until <= now))
            .map(|(p, _)| *p)
            .collect();
        for p in &done {
            self.blocked.remove(p);
        }
        done
    }

    /// Whether `peer` is blocked now.
    pub fn is_blocked(&self, peer: &PeerId) -> bool {
        self.blocked.contains_key(peer)
    }

    pub fn blocked(&self) -> impl Iterator<Item = (&PeerId, &BlockReason)> {
        self.blocked.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_content_blocks_at_once_and_small_offences_add_up() {
        let mut r = Reputation::default();
        let now = Instant::now();
        let liar = PeerId::random();
        assert!(r.offend(liar, Offence::ForgedContent, now));
        assert!(
            !r.offend(liar, Offence::ForgedContent, now),
            "already blocked"
        );
        let sloppy = PeerId::random();
        let mut blocked = false;
        for _ in 0..5 {
            blocked = r.offend(sloppy, Offence::MalformedMessage, now);
        }
        assert!(blocked);
    }

    #[test]
    fn a_peer_that_never_answers_is_blocked_on_the_tenth_timeout() {
        let mut r = Reputation::default();
        let now = Instant::now();
        let silent = PeerId::random();
        let verdicts: Vec<bool> = (0..10)
            .map(|i| r.offend(silent, Offence::Unanswered, now + Duration::from_secs(i)))
            .collect();
        assert_eq!(verdicts.iter().filter(|b| **b).count(), 1);
        assert_eq!(verdicts.last(), Some(&true));
    }

    #[test]
    fn offences_are_forgotten_and_blocks_run_out() {
        let mut r = Reputation::default();
        let t = Instant::now();
        let p = PeerId::random();
        for _ in 0..3 {
            r.offend(p, Offence::InvalidRecord, t);
        }
        assert!(!r.offend(
            p,
            Offence::InvalidRecord,
            t + OFFENCE_MEMORY + Duration::from_secs(1)
        ));
        assert!(r.offend(p, Offence::ForgedContent, t));
        assert!(
            r.expired(t + BLOCK_DURATION - Duration::from_secs(1))
                .is_empty()
        );
        assert_eq!(r.expired(t + BLOCK_DURATION), vec![p]);
        r.block(p);
        assert!(
            r.expired(t + 10 * BLOCK_DURATION).is_empty(),
            "manual blocks never run out"
        );
        assert!(r.unblock(&p));
    }

    #[test]
    fn tracking_is_bounded() {
        let mut r = Reputation::default();
        let t = Instant::now();
        for i in 0..(MAX_TRACKED_PEERS + 10) {
            r.offend(
                PeerId::random(),
                Offence::MalformedMessage,
                t + Duration::from_millis(i as u64),
            );
        }
        assert!(r.offences.len() <= MAX_TRACKED_PEERS);
    }
}
