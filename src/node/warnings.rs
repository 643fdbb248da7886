//! Warnings about peers, rate-limited and summarised: a flood of invalid records from many
//! identities once wrote 35,917-40,871 WARN lines per flood. At most
//! [`PEER_WARNINGS_PER_MINUTE`] are written in a minute; the rest are counted and summarised in
//! one line when the minute ends (the status counters keep the full count).

use std::time::{Duration, Instant};

/// Warnings about peers written per minute at most.
pub const PEER_WARNINGS_PER_MINUTE: u32 = 20;
/// The window the bound applies to.
const WINDOW: Duration = Duration::from_secs(60);

/// Counts warnings about peers in the current minute.
#[derive(Debug)]
pub struct PeerWarnings {
    since: Instant,
    written: u32,
    suppressed: u64,
}

impl PeerWarnings {
    /// A fresh minute starting at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            since: now,
            written: 0,
            suppressed: 0,
        }
    }

    /// Whether one more warning may be written at `now` (if not, it is counted).
    pub fn allow(&mut self, now: Instant) -> bool {
        self.roll(now);
        if self.written < PEER_WARNINGS_PER_MINUTE {
            self.written += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Ends the minute if it is over: how many warnings it suppressed, for the summary line.
    pub fn roll(&mut self, now: Instant) -> Option<u64> {
        if now.saturating_duration_since(self.since) < WINDOW {
            return None;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        self.since = now;
        self.written = 0;
        (suppressed > 0).then_some(suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_writes_its_share_and_counts_the_rest() {
        let t = Instant::now();
        let mut w = PeerWarnings::new(t);
        let written = (0..1000).filter(|_| w.allow(t)).count();
        assert_eq!(written, PEER_WARNINGS_PER_MINUTE as usize);
        assert_eq!(
            w.roll(t + Duration::from_secs(30)),
            None,
            "the minute is not over"
        );
        let later = t + WINDOW;
        assert_eq!(
            w.roll(later),
            Some(1000 - u64::from(PEER_WARNINGS_PER_MINUTE))
        );
        assert!(w.allow(later), "a new minute");
        assert_eq!(w.roll(later + WINDOW), None, "nothing suppressed in it");
    }
}
