//! The periodic jobs of the tick: the core's timers, deadlines, bootstrap rounds, block expiry,
//! persistence and the mirrors' feed.

use super::*;

impl EventLoop {
    pub(super) fn on_tick(&mut self) {
        let now = Instant::now();
        let command = self.config.timing.command_timeout;
        if now >= self.core.next_wakeup() {
            self.drive(Input::Tick);
        }
        for (_, (peer, reply)) in self.cmd_ops.take_expired(now) {
            self.commands_out.done(peer);
            self.send_queued_commands(peer);
            self.time_out(reply, "custom command", command);
        }
        for reply in self.commands_out.take_expired(now) {
            self.time_out(reply, "custom command", command);
        }
        for (_, (_, reply)) in self.info_ops.take_expired(now) {
            self.time_out(reply, "info", command);
        }
        for (_, reply) in self.dials.take_expired(now) {
            self.time_out(reply, "connect", command);
        }
        let joined = !self.core.routing().is_empty();
        if let Some(addrs) = self.bootstrap.due(now, joined) {
            self.dial_bootstrap(addrs);
        }
        // The bootstrap nodes that left the table are dialed again at each refresh interval (the
        // core looks them up by id; a dial also reaches one whose id we never learned).
        if joined && now.duration_since(self.last_redial) >= self.config.timing.bootstrap_interval {
            self.last_redial = now;
            let routing = self.core.routing();
            let missing = self.bootstrap.missing(|peer| routing.contains(peer));
            self.dial_bootstrap(missing);
        }
        if let Some(writer) = self.writer.as_mut() {
            let store = self.core.records_mut().store_mut();
            if let Some(flushed) = writer.tick(store, &self.local, now) {
                self.counters.count_flush(&flushed);
            }
        }
        self.feed_mirrors();
    }

    /// Dials bootstrap nodes, remembering each dial to tell its outcome.
    pub(super) fn dial_bootstrap(&mut self, addrs: Vec<Multiaddr>) {
        for addr in addrs {
            debug!(%addr, "dialing bootstrap node");
            let opts = DialOpts::from(addr.clone());
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => self.bootstrap.dialing(id, addr),
                Err(e) => warn!(%addr, "cannot dial bootstrap node: {e}"),
            }
        }
    }
}
