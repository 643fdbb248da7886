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
use super::routing::RoutingTable;

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
    /// How long one of ours may take, queue and transport together.
    timeout: Duration,
}

impl Commands {
    /// No commands yet; ours end after `command_timeout` (plus [`COMMAND_DEADLINE_SLACK`]).
    pub fn new(command_timeout: Duration) -> Self {
        Self {
            queued: HashMap::new(),
            slots: HashMap::new(),
            in_flight: HashMap::new(),
            deadlines: BinaryHeap::new(),
            open: HashMap::new(),
            next_id: 0,
            handler: false,
            running: 0,
            timeout: command_timeout + COMMAND_DEADLINE_SLACK,
        }
    }

    /// Our commands queued or in flight.
    pub fn pending(&self) -> usize {
        self.open.len()
    }

    /// The application set (or removed) its handler of peers' commands.
    pub fn set_handler(&mut self, present: bool) {
        self.handler = present;
    }

    /// Sends `payload` to `peer`'s handler (at its addresses in `routing`), after the commands
    /// queued before it.
    pub fn send(
        &mut self,
        op: OpId,
        peer: PeerId,
        payload: Vec<u8>,
        routing: &RoutingTable,
        cx: &mut Cx,
    ) {
        let queue = self.queued.entry(peer).or_default();
        if queue.len() >= MAX_QUEUED_COMMANDS_PER_PEER {
            let reason =
                format!("{MAX_QUEUED_COMMANDS_PER_PEER} commands already wait for this peer");
            cx.out
                .push(Action::reply(op, Err(OpError::CommandFailed(reason))));
            return;
        }
        queue.push_back(Queued { op, payload });
        self.open.insert(op, None);
        self.deadlines.push(Reverse((cx.now + self.timeout, op)));
        self.send_queued(peer, routing, cx);
    }

    /// `peer` answered command `id`.
    pub fn answered(
        &mut self,
        id: CommandId,
        answer: CommandReply,
        routing: &RoutingTable,
        cx: &mut Cx,
    ) {
        let result = match answer {
            CommandReply::Ok(bytes) => Ok(OpOk::Command(bytes)),
            CommandReply::Refused(reason) => Err(OpError::CommandRefused(reason)),
        };
        self.ended(id, result, routing, cx);
    }

    /// Command `id` failed on the way (`None`: the transport's timeout).
    pub fn failed(
        &mut self,
        id: CommandId,
        reason: Option<String>,
        routing: &RoutingTable,
        cx: &mut Cx,
    ) {
        let error = reason.map_or(OpError::Timeout, OpError::CommandFailed);
        self.ended(id, Err(error), routing, cx);
    }

    fn ended(
        &mut self,
        id: CommandId,
        result: Result<OpOk, OpError>,
        routing: &RoutingTable,
        cx: &mut Cx,
    ) {
        let Some((op, peer)) = self.in_flight.remove(&id) else {
            return;
        };
        self.open.remove(&op);
        cx.out.push(Action::reply(op, result));
        self.free_slot(peer);
        self.send_queued(peer, routing, cx);
    }

    fn free_slot(&mut self, peer: PeerId) {
        if let Some(n) = self.slots.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.slots.remove(&peer);
            }
        }
    }

    /// Sends what is queued for `peer` while it has free slots.
    fn send_queued(&mut self, peer: PeerId, routing: &RoutingTable, cx: &mut Cx) {
        let addrs: Vec<Multiaddr> = routing
            .get(&peer)
            .map(|e| e.addrs.clone())
            .unwrap_or_default();
        loop {
            let slots = self.slots.entry(peer).or_default();
            if *slots >= MAX_COMMANDS_IN_FLIGHT_PER_PEER {
                break;
            }
            let Some(queue) = self.queued.get_mut(&peer) else {
                break;
            };
            let Some(next) = queue.pop_front() else {
                self.queued.remove(&peer);
                break;
            };
            *slots += 1;
            let id = self.next_id;
            self.next_id += 1;
            self.in_flight.insert(id, (next.op, peer));
            self.open.insert(next.op, Some(id));
            cx.out.push(Action::SendCommand {
                id,
                peer,
                addrs: addrs.clone(),
                payload: next.payload,
            });
        }
        if self.slots.get(&peer) == Some(&0) {
            self.slots.remove(&peer);
        }
        if self.queued.get(&peer).is_some_and(VecDeque::is_empty) {
            self.queued.remove(&peer);
        }
    }

    /// Ends the commands whose deadline passed, queued or in flight.
    pub fn expire(&mut self, routing: &RoutingTable, cx: &mut Cx) {
        while let Some(Reverse((at, op))) = self.deadlines.peek().copied() {
            if at > cx.now {
                break;
            }
            self.deadlines.pop();
            let Some(sent) = self.open.remove(&op) else {
                continue;
            };
            cx.out.push(Action::reply(op, Err(OpError::Timeout)));
            match sent {
                Some(id) => {
                    if let Some((_, peer)) = self.in_flight.remove(&id) {
                        self.free_slot(peer);
                        self.send_queued(peer, routing, cx);
                    }
                }
                None => {
                    for queue in self.queued.values_mut() {
                        queue.retain(|q| q.op != op);
                    }
                    self.queued.retain(|_, q| !q.is_empty());
                }
            }
        }
    }

    /// When the next command deadline falls.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// `peer` (`blocked` or not) sent us a command (inbound request `id`): to the handler, or
    /// refused.
    pub fn received(
        &mut self,
        peer: PeerId,
        blocked: bool,
        id: InboundId,
        payload: Vec<u8>,
        cx: &mut Cx,
    ) {
        let refusal = if blocked {
            Some("blocked")
        } else if !self.handler {
            Some("no command handler registered")
        } else if self.running >= MAX_RUNNING_HANDLERS {
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
        self.running += 1;
        cx.out.push(Action::RunHandler { id, peer, payload });
    }

    /// The handler answered inbound command `id`.
    pub fn handler_done(&mut self, id: InboundId, answer: CommandReply, cx: &mut Cx) {
        self.running = self.running.saturating_sub(1);
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
    use crate::core::{Core, CoreConfig, Input};

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
