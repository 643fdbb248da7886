//! Custom commands going out: a few in flight per peer, the rest queued with their deadlines, and
//! a refusal past the queue. Opening hundreds of streams to one peer at once would only make its
//! connection shed them.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use libp2p::PeerId;

use crate::command::Reply;
use crate::error::Error;

/// Custom commands in flight to one peer.
pub const MAX_COMMANDS_IN_FLIGHT_PER_PEER: usize = 32;
/// Custom commands waiting for a slot to one peer; more are refused.
pub const MAX_QUEUED_COMMANDS_PER_PEER: usize = 1024;

type Queued = (Vec<u8>, Reply<Vec<u8>>, Instant);

#[derive(Default)]
pub(crate) struct OutboundCommands {
    in_flight: HashMap<PeerId, usize>,
    queued: HashMap<PeerId, VecDeque<Queued>>,
}

impl OutboundCommands {
    /// Queues a command; refuses it at once when the peer's queue is full.
    pub(crate) fn push(
        &mut self,
        peer: PeerId,
        payload: Vec<u8>,
        reply: Reply<Vec<u8>>,
        deadline: Instant,
    ) {
        let queue = self.queued.entry(peer).or_default();
        if queue.len() >= MAX_QUEUED_COMMANDS_PER_PEER {
            let reason =
                format!("{MAX_QUEUED_COMMANDS_PER_PEER} commands already wait for this peer");
            let _ = reply.send(Err(Error::CommandFailed { peer, reason }));
            return;
        }
        queue.push_back((payload, reply, deadline));
    }

    /// The next command to send to `peer`, if it has a free slot (the slot is taken).
    pub(crate) fn next_to_send(&mut self, peer: PeerId) -> Option<Queued> {
        let in_flight = self.in_flight.entry(peer).or_default();
        if *in_flight >= MAX_COMMANDS_IN_FLIGHT_PER_PEER {
            return None;
        }
        let queue = self.queued.get_mut(&peer)?;
        let next = queue.pop_front();
        if queue.is_empty() {
            self.queued.remove(&peer);
        }
        if next.is_some() {
            *in_flight += 1;
        } else if *in_flight == 0 {
            self.in_flight.remove(&peer);
        }
        next
    }

    /// A command to `peer` ended (answered, failed or timed out): its slot is free.
    pub(crate) fn done(&mut self, peer: PeerId) {
        if let Some(n) = self.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 && !self.queued.contains_key(&peer) {
                self.in_flight.remove(&peer);
            }
        }
    }

    /// Commands waiting for a slot, to every peer.
    pub(crate) fn queued(&self) -> usize {
        self.queued.values().map(VecDeque::len).sum()
    }

    /// Queued commands whose deadline passed before they could be sent.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<Reply<Vec<u8>>> {
        let mut expired = Vec::new();
        for queue in self.queued.values_mut() {
            while queue.front().is_some_and(|(_, _, d)| *d <= now) {
                if let Some((_, reply, _)) = queue.pop_front() {
                    expired.push(reply);
                }
            }
        }
        self.queued.retain(|_, q| !q.is_empty());
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::oneshot;

    #[test]
    fn slots_bound_what_is_in_flight_and_the_queue_is_bounded() {
        let mut out = OutboundCommands::default();
        let peer = PeerId::random();
        let later = Instant::now() + Duration::from_secs(60);
        let mut receivers = Vec::new();
        for _ in 0..(MAX_COMMANDS_IN_FLIGHT_PER_PEER + MAX_QUEUED_COMMANDS_PER_PEER + 1) {
            let (tx, rx) = oneshot::channel();
            out.push(peer, vec![], tx, later);
            receivers.push(rx);
        }
        // The one past the queue was refused at once.
        let mut last = receivers.pop().expect("receiver");
        assert!(matches!(
            last.try_recv(),
            Ok(Err(Error::CommandFailed { .. }))
        ));
        let mut sent = 0;
        while out.next_to_send(peer).is_some() {
            sent += 1;
        }
        assert_eq!(sent, MAX_COMMANDS_IN_FLIGHT_PER_PEER);
        out.done(peer);
        assert!(out.next_to_send(peer).is_some());
        assert!(out.next_to_send(peer).is_none());
    }

    #[test]
    fn queued_commands_expire() {
        let mut out = OutboundCommands::default();
        let peer = PeerId::random();
        let now = Instant::now();
        for _ in 0..MAX_COMMANDS_IN_FLIGHT_PER_PEER {
            let (tx, _rx) = oneshot::channel();
            out.push(peer, vec![], tx, now + Duration::from_secs(60));
            out.next_to_send(peer);
        }
        let (tx, _rx) = oneshot::channel();
        out.push(peer, vec![], tx, now);
        assert_eq!(out.take_expired(now).len(), 1);
    }
}
