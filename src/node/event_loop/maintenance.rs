//! The periodic jobs of the tick: the core's timer, deadlines, persistence and the mirrors' feed;
//! and the core's dials.

use super::*;

impl EventLoop {
    pub(super) fn on_tick(&mut self) {
        let now = Instant::now();
        let command = self.config.timing.command_timeout;
        if now >= self.core.next_wakeup() {
            self.drive(Input::Tick);
        }
        for (_, (_, reply)) in self.wires.info_ops.take_expired(now) {
            self.time_out(reply, "info", command);
        }
        for (_, reply) in self.wires.dials.take_expired(now) {
            self.time_out(reply, "connect", command);
        }
        if let Some(suppressed) = self.peer_warnings.roll(now) {
            warn!(
                suppressed,
                "more warnings about peers in the last minute (refused records, lies, blocks) \
                 than are written; the status counters count them all"
            );
        }
        if let Some(writer) = self.writer.as_mut() {
            let store = self.core.records_mut();
            if let Some(flushed) = writer.tick(store, &self.local, now) {
                self.counters.count_flush(&flushed);
            }
        }
    }

    /// Carries out one of the core's dials (a bootstrap node, a peer to rejoin through).
    pub(super) fn dial(&mut self, dial: DialId, addr: Multiaddr) {
        debug!(%addr, "dialing to join");
        let opts = DialOpts::from(addr.clone());
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.wires.core_dials.insert(id, (dial, addr));
            }
            Err(e) => {
                warn!(%addr, "cannot dial: {e}");
                self.drive(Input::DialFailed { dial });
            }
        }
    }
}
