//! Peers that stopped answering. A peer whose ping goes unanswered leaves the routing table; but
//! other nodes still name it in their lookup answers, and kad would take it back as soon as a
//! stream to it opens, although it answers nothing. So it stays out until it is heard from again
//! (a ping answered, identify received) or its quarantine runs out.
//!
//! An unanswered ping cannot tell a silent peer from a network cut: both sides of a partition see
//! each other's pings time out. So the first quarantine is short, and healed partitions merge
//! within seconds; each further silence of the same peer doubles it, so a peer that keeps taking
//! streams and never answering is asked less and less often.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// The first quarantine of a peer that failed to answer.
pub const SILENT_QUARANTINE_FIRST: Duration = Duration::from_secs(10);
/// The longest quarantine, reached after repeated silences.
pub const SILENT_QUARANTINE_MAX: Duration = Duration::from_secs(600);
/// A peer's silences are forgotten this long after its last one.
pub const SILENT_MEMORY: Duration = Duration::from_secs(3600);
/// Silent peers remembered at most; when full, the one silent longest ago is forgotten.
pub const MAX_SILENT_PEERS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Quarantine {
    /// Held out until then.
    until: Instant,
    /// When it last failed to answer.
    last: Instant,
    /// Silences since it was last forgotten.
    strikes: u32,
}

/// The quarantine of silent peers.
#[derive(Debug, Default)]
pub struct Silence {
    peers: HashMap<PeerId, Quarantine>,
}

impl Silence {
    /// `peer` failed to answer at `now`: it is held out, for twice as long as the last time if
    /// that was within [`SILENT_MEMORY`]. Returns how long; `None` if it is held out already (each
    /// of its connections times out on its own: one cut must not count as several silences).
    pub fn silenced(&mut self, peer: PeerId, now: Instant) -> Option<Duration> {
        if self.is_silent(&peer, now) {
            return None;
        }
        if self.peers.len() >= MAX_SILENT_PEERS && !self.peers.contains_key(&peer) {
            self.sweep(now);
            if self.peers.len() >= MAX_SILENT_PEERS
                && let Some(oldest) = self
                    .peers
                    .iter()
                    .min_by_key(|(_, q)| q.last)
                    .map(|(p, _)| *p)
            {
                self.peers.remove(&oldest);
            }
        }
        let strikes = self
            .peers
            .get(&peer)
            .filter(|q| now.saturating_duration_since(q.last) < SILENT_MEMORY)
            .map_or(0, |q| q.strikes);
        let held = quarantine_after(strikes);
        self.peers.insert(
            peer,
            Quarantine {
                until: now + held,
                last: now,
                strikes: strikes.saturating_add(1),
            },
        );
        Some(held)
    }

    /// `peer` answered at `now`: it is no longer held out (its strikes are kept, so that a peer
    /// answering only some protocols is still held out longer each time). Whether it was.
    pub fn heard_from(&mut self, peer: &PeerId, now: Instant) -> bool {
        match self.peers.get_mut(peer) {
            Some(q) if q.until > now => {
                q.until = now;
                true
            }
            _ => false,
        }
    }

    /// Whether `peer` is held out at `now`.
    pub fn is_silent(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers.get(peer).is_some_and(|q| q.until > now)
    }

    /// Forgets peers whose last silence is older than [`SILENT_MEMORY`].
    pub fn sweep(&mut self, now: Instant) {
        self.peers
            .retain(|_, q| now.saturating_duration_since(q.last) < SILENT_MEMORY);
    }

    /// Peers remembered, held out or not.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// The quarantine after `strikes` earlier silences: the first one doubled that many times, capped.
fn quarantine_after(strikes: u32) -> Duration {
    let factor = 1u32.checked_shl(strikes).unwrap_or(u32::MAX);
    SILENT_QUARANTINE_FIRST
        .saturating_mul(factor)
        .min(SILENT_QUARANTINE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_ends_when_heard_from_or_run_out() {
        let mut s = Silence::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        assert_eq!(s.silenced(a, now), Some(SILENT_QUARANTINE_FIRST));
        s.silenced(b, now);
        assert_eq!(
            s.silenced(b, now),
            None,
            "held out already: no second strike"
        );
        assert!(s.is_silent(&a, now));
        assert!(s.heard_from(&a, now));
        assert!(!s.is_silent(&a, now));
        assert!(!s.heard_from(&a, now), "no longer held out");
        assert!(s.is_silent(&b, now + SILENT_QUARANTINE_FIRST / 2));
        assert!(!s.is_silent(&b, now + SILENT_QUARANTINE_FIRST));
    }

    #[test]
    fn repeated_silences_double_the_quarantine_up_to_the_cap() {
        let mut s = Silence::default();
        let p = PeerId::random();
        let mut now = Instant::now();
        let mut expected = SILENT_QUARANTINE_FIRST;
        for _ in 0..12 {
            let held = s.silenced(p, now).expect("not held out");
            assert_eq!(held, expected);
            // Answering in between does not wipe the record: a peer that answers pings on a new
            // connection and goes silent again is still held out longer.
            s.heard_from(&p, now);
            now += held;
            expected = (expected * 2).min(SILENT_QUARANTINE_MAX);
        }
        assert_eq!(s.silenced(p, now), Some(SILENT_QUARANTINE_MAX));
        // Silent again long after its last silence: back to the first quarantine.
        let later = now + SILENT_MEMORY;
        assert_eq!(s.silenced(p, later), Some(SILENT_QUARANTINE_FIRST));
    }

    #[test]
    fn forgotten_after_the_memory_runs_out() {
        let mut s = Silence::default();
        let now = Instant::now();
        s.silenced(PeerId::random(), now);
        s.sweep(now + SILENT_MEMORY / 2);
        assert_eq!(s.len(), 1);
        s.sweep(now + SILENT_MEMORY);
        assert!(s.is_empty());
    }

    #[test]
    fn bounded() {
        let mut s = Silence::default();
        let now = Instant::now();
        let first = PeerId::random();
        s.silenced(first, now);
        for i in 0..MAX_SILENT_PEERS {
            s.silenced(PeerId::random(), now + Duration::from_millis(i as u64 + 1));
        }
        assert_eq!(s.len(), MAX_SILENT_PEERS);
        assert!(!s.is_silent(&first, now), "the oldest went first");
    }
}
