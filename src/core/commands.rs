//! Custom commands: ours going out, a few in flight per peer and the rest queued with their
//! deadlines, refused past the queue (opening hundreds of streams to one peer at once would only
//! make its connection shed them); peers' coming in, handed to the application's handler while
//! fewer than [`MAX_RUNNING_HANDLERS`] run, refused otherwise. The handler itself runs in the
//! driver: it is the application's code.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use dht_behaviours::command::CommandReply;
use libp2p::{Multiaddr, PeerId};

use super::context::Cx;
use super::events::{Action, InboundId, OpError, OpId, OpOk};
use super::{Core, reply};

/// Custom commands in flight to one peer.
pub const MAX_COMMANDS_IN_FLIGHT_PER_PEER: usize = 32;
/// Custom commands waiting for a slot to one peer; more are refused.
pub const MAX_QUEUED_COMMANDS_PER_PEER: usize = 1024;
/// Peers' commands handled at once; more are refused as busy.
pub const MAX_RUNNING_HANDLERS: usize = 256;
/// A command's deadline runs this much past the transport's own request timeout, so that the
/// transport's verdict (an answer, or its timeout) normally comes first.
pub const COMMAND_DEADLINE_SLACK: Duration = Duration::from_millis(200);

pub use super::events::CommandId;

struct Queued {
    op: OpId,
    payload: Vec<u8>,
}

/// Our commands and peers' commands in progress.
#[derive(Default)]
pub(super) struct Commands {
    queued: HashMap<PeerId, VecDeque<Queued>>,
    /// Per peer, commands in flight.
    slots: HashMap<PeerId, usize>,
    in_flight: HashMap<CommandId, (OpId, PeerId)>,
    /// Operations and their deadlines; an entry whose operation ended is skipped when reached.
    deadlines: BinaryHeap<Reverse<(Instant, OpId)>>,
    /// Operations not ended yet, queued or in flight.
    open: HashMap<OpId, Option<CommandId>>,
    next_id: CommandId,
    /// Whether the application has a handler, and how many of its calls run.
    handler: bool,
    running: usize,
}

impl Core {
    /// Our commands queued or in flight.
    pub fn commands_pending(&self) -> usize {
        self.commands.open.len()
    }

    /// The application set (or removed) its handler of peers' commands.
    pub(super) fn set_handler(&mut self, present: bool) {
        self.commands.handler = present;
    }

    /// Sends `payload` to `peer`'s handler, after the commands queued before it.
    pub(super) fn command(&mut self, op: OpId, peer: PeerId, payload: Vec<u8>, cx: &mut Cx) {
        let queue = self.commands.queued.entry(peer).or_default();
        if queue.len() >= MAX_QUEUED_COMMANDS_PER_PEER {
            let reason =
                format!("{MAX_QUEUED_COMMANDS_PER_PEER} commands already wait for this peer");
            cx.out.push(reply(op, Err(OpError::CommandFailed(reason))));
            return;
        }
        let deadline = cx.now + self.config.timing.command_timeout + COMMAND_DEADLINE_SLACK;
        queue.push_back(Queued { op, payload });
        self.commands.open.insert(op, None);
        self.commands.deadlines.push(Reverse((deadline, op)));
        self.send_commands(peer, cx);
    }

    /// `peer` answered command `id`.
    pub(super) fn command_answered(&mut self, id: CommandId, answer: CommandReply, cx: &mut Cx) {
        let result = match answer {
            CommandReply::Ok(bytes) => Ok(OpOk::Command(bytes)),
            CommandReply::Refused(reason) => Err(OpError::CommandRefused(reason)),
        };
        self.command_ended(id, result, cx);
    }

    /// Command `id` failed on the way (`None`: the transport's timeout).
    pub(super) fn command_failed(&mut self, id: CommandId, reason: Option<String>, cx: &mut Cx) {
        let error = reason.map_or(OpError::Timeout, OpError::CommandFailed);
        self.command_ended(id, Err(error), cx);
    }

    fn command_ended(&mut self, id: CommandId, result: Result<OpOk, OpError>, cx: &mut Cx) {
        let Some((op, peer)) = self.commands.in_flight.remove(&id) else {
            return;
        };
        self.commands.open.remove(&op);
        cx.out.push(reply(op, result));
        self.free_slot(peer);
        self.send_commands(peer, cx);
    }

    fn free_slot(&mut self, peer: PeerId) {
        if let Some(n) = self.commands.slots.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.commands.slots.remove(&peer);
            }
        }
    }

    /// Sends what is queued for `peer` while it has free slots.
    fn send_commands(&mut self, peer: PeerId, cx: &mut Cx) {
        let addrs: Vec<Multiaddr> = self
            .routing
            .get(&peer)
            .map(|e| e.addrs.clone())
            .unwrap_or_default();
        let commands = &mut self.commands;
        loop {
            let slots = commands.slots.entry(peer).or_default();
            if *slots >= MAX_COMMANDS_IN_FLIGHT_PER_PEER {
                break;
            }
            let Some(queue) = commands.queued.get_mut(&peer) else {
                break;
            };
            let Some(next) = queue.pop_front() else {
                commands.queued.remove(&peer);
                break;
            };
            *slots += 1;
            let id = commands.next_id;
            commands.next_id += 1;
            commands.in_flight.insert(id, (next.op, peer));
            commands.open.insert(next.op, Some(id));
            cx.out.push(Action::SendCommand {
                id,
                peer,
                addrs: addrs.clone(),
                payload: next.payload,
            });
        }
        if commands.slots.get(&peer) == Some(&0) {
            commands.slots.remove(&peer);
        }
        if commands.queued.get(&peer).is_some_and(VecDeque::is_empty) {
            commands.queued.remove(&peer);
        }
    }

    /// Ends the commands whose deadline passed, queued or in flight.
    pub(super) fn expire_commands(&mut self, cx: &mut Cx) {
        while let Some(Reverse((at, op))) = self.commands.deadlines.peek().copied() {
            if at > cx.now {
                break;
            }
            self.commands.deadlines.pop();
            let Some(sent) = self.commands.open.remove(&op) else {
                continue;
            };
            cx.out.push(reply(op, Err(OpError::Timeout)));
            match sent {
                Some(id) => {
                    if let Some((_, peer)) = self.commands.in_flight.remove(&id) {
                        self.free_slot(peer);
                        self.send_commands(peer, cx);
                    }
                }
                None => {
                    for queue in self.commands.queued.values_mut() {
                        queue.retain(|q| q.op != op);
                    }
                    self.commands.queued.retain(|_, q| !q.is_empty());
                }
            }
        }
    }

    /// When the next command deadline falls.
    pub(super) fn next_command_deadline(&self) -> Option<Instant> {
        self.commands.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// `peer` sent us a command (inbound request `id`): to the handler, or refused.
    pub(super) fn command_received(
        &mut self,
        peer: PeerId,
        id: InboundId,
        payload: Vec<u8>,
        cx: &mut Cx,
    ) {
        let refusal = if self.is_blocked(&peer) {
            Some("blocked")
        } else if !self.commands.handler {
            Some("no command handler registered")
        } else if self.commands.running >= MAX_RUNNING_HANDLERS {
            Some("busy: too many commands in progress")
        } else {
            None
        };
        if let Some(reason) = refusal {
            cx.out.push(Action::AnswerCommand {
                id,
                reply: CommandReply::Refused(reason.to_owned()),
            });
            return;
        }
        self.commands.running += 1;
        cx.out.push(Action::RunHandler { id, peer, payload });
    }

    /// The handler answered inbound command `id`.
    pub(super) fn handler_done(&mut self, id: InboundId, answer: CommandReply, cx: &mut Cx) {
        self.commands.running = self.commands.running.saturating_sub(1);
        cx.out.push(Action::AnswerCommand { id, reply: answer });
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use dht_behaviours::command::CommandReply;
    use dht_behaviours::store::StoreLimits;
    use dht_behaviours::{ProtocolConfig, Timing};
    use libp2p::PeerId;

    use super::*;
    use crate::core::{CoreConfig, Input};

    fn core(now: Instant) -> Core {
        let protocol = ProtocolConfig {
            timing: Timing::fast(),
            ..ProtocolConfig::default()
        };
        Core::fresh(CoreConfig::new(&protocol, StoreLimits::default(), 1), now)
    }

    fn sent(actions: &[Action]) -> Vec<CommandId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendCommand { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn replies(actions: &[Action]) -> Vec<(OpId, Result<OpOk, OpError>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply { op, result, .. } => Some((*op, result.clone())),
                _ => None,
            })
            .collect()
    }

    fn command(core: &mut Core, op: OpId, peer: PeerId, now: Instant) -> Vec<Action> {
        core.handle(
            Input::Command {
                op,
                peer,
                payload: vec![op as u8],
            },
            now,
        )
    }

    #[test]
    fn a_few_in_flight_per_peer_the_rest_queued_and_a_bounded_queue() {
        let t = Instant::now();
        let mut core = core(t);
        let (peer, other) = (PeerId::random(), PeerId::random());
        let total = MAX_COMMANDS_IN_FLIGHT_PER_PEER + MAX_QUEUED_COMMANDS_PER_PEER;
        let mut ids = Vec::new();
        for op in 0..total as u64 {
            ids.extend(sent(&command(&mut core, op, peer, t)));
        }
        assert_eq!(ids.len(), MAX_COMMANDS_IN_FLIGHT_PER_PEER);
        let refused = command(&mut core, total as u64, peer, t);
        assert!(matches!(
            replies(&refused)[..],
            [(_, Err(OpError::CommandFailed(_)))]
        ));
        assert_eq!(
            sent(&command(&mut core, 9_999, other, t)).len(),
            1,
            "per peer"
        );

        // An answer frees a slot: the next queued goes out, and the answer reaches its caller.
        let answer = CommandReply::Ok(b"pong".to_vec());
        let actions = core.handle(
            Input::CommandAnswered {
                id: ids[0],
                reply: answer,
            },
            t,
        );
        assert_eq!(sent(&actions).len(), 1);
        assert_eq!(
            replies(&actions),
            vec![(0, Ok(OpOk::Command(b"pong".to_vec())))]
        );
        let refusal = CommandReply::Refused("no".to_owned());
        let actions = core.handle(
            Input::CommandAnswered {
                id: ids[1],
                reply: refusal,
            },
            t,
        );
        assert_eq!(
            replies(&actions),
            vec![(1, Err(OpError::CommandRefused("no".to_owned())))]
        );
        assert_eq!(core.commands_pending(), total - 2 + 1);
    }

    #[test]
    fn deadlines_end_queued_and_sent_commands_once() {
        let t = Instant::now();
        let mut core = core(t);
        let peer = PeerId::random();
        let mut ids = Vec::new();
        for op in 0..(MAX_COMMANDS_IN_FLIGHT_PER_PEER + 1) as u64 {
            ids.extend(sent(&command(&mut core, op, peer, t)));
        }
        let deadline = t + Timing::fast().command_timeout + COMMAND_DEADLINE_SLACK;
        assert!(
            core.next_wakeup() <= deadline,
            "the core wakes for the deadline"
        );
        let early = core.handle(Input::Tick, deadline - Duration::from_millis(1));
        assert!(replies(&early).is_empty());
        let late = core.handle(Input::Tick, deadline);
        let ended = replies(&late);
        assert_eq!(ended.len(), MAX_COMMANDS_IN_FLIGHT_PER_PEER + 1);
        assert!(ended.iter().all(|(_, r)| *r == Err(OpError::Timeout)));
        assert_eq!(core.commands_pending(), 0);
        // A late answer to an ended command reaches no one.
        let actions = core.handle(
            Input::CommandAnswered {
                id: ids[0],
                reply: CommandReply::Ok(Vec::new()),
            },
            deadline,
        );
        assert!(replies(&actions).is_empty());
    }

    #[test]
    fn peers_commands_go_to_the_handler_while_few_run() {
        let t = Instant::now();
        let mut core = core(t);
        let peer = PeerId::random();
        let received = |core: &mut Core, id| {
            core.handle(
                Input::CommandReceived {
                    peer,
                    id,
                    payload: b"ping".to_vec(),
                },
                t,
            )
        };
        let refused = |actions: &[Action]| {
            actions.iter().find_map(|a| match a {
                Action::AnswerCommand {
                    reply: CommandReply::Refused(reason),
                    ..
                } => Some(reason.clone()),
                _ => None,
            })
        };
        let runs = |actions: &[Action]| {
            actions
                .iter()
                .filter(|a| matches!(a, Action::RunHandler { .. }))
                .count()
        };
        assert_eq!(
            refused(&received(&mut core, 0)).as_deref(),
            Some("no command handler registered")
        );
        core.handle(Input::SetHandler { present: true }, t);
        for id in 1..=MAX_RUNNING_HANDLERS as u64 {
            assert_eq!(runs(&received(&mut core, id)), 1);
        }
        let busy = received(&mut core, 1_000);
        assert!(refused(&busy).is_some_and(|r| r.starts_with("busy")));
        let done = core.handle(
            Input::HandlerDone {
                id: 1,
                reply: CommandReply::Ok(b"pong".to_vec()),
            },
            t,
        );
        assert!(done.contains(&Action::AnswerCommand {
            id: 1,
            reply: CommandReply::Ok(b"pong".to_vec())
        }));
        assert_eq!(runs(&received(&mut core, 1_001)), 1, "a slot was freed");
    }
}
