//! The simulated network: a core's actions become messages with a latency (lost, or dropped
//! across a partition, as the net configuration says), and delivered messages become inputs of
//! the receiving core, as the driver turns swarm events into them.

use super::*;

impl Sim {
    pub(super) fn send(&mut self, from: usize, to: usize, message: Message) {
        self.messages += 1;
        let crosses = self.nodes[from].side != self.nodes[to].side;
        let lost = self.net.loss > 0.0 && self.rng.gen_bool(self.net.loss.clamp(0.0, 1.0));
        if crosses || lost {
            // The transport's request timeout still ends the request at its sender, as
            // libp2p's request-response does: a lost message must not hold a slot forever (the
            // timeout itself is scheduled, never lost).
            let (requester, timeout) = match &message {
                Message::Request { rid, then, .. } => {
                    if let Some(then) = then {
                        let at = self.now + self.config.timing.query_timeout;
                        let message = Box::new(Message::TimedOut { rid: then.0 });
                        let (from, to) = (from, from);
                        self.schedule(at, Event::Deliver { from, to, message });
                    }
                    (from, Message::TimedOut { rid: *rid })
                }
                Message::Response { rid, .. } => (to, Message::TimedOut { rid: *rid }),
                Message::Reset { rid } => (to, Message::TimedOut { rid: *rid }),
                Message::Broadcast { hid, .. } => (
                    from,
                    Message::BroadcastAnswer {
                        hid: *hid,
                        ok: false,
                    },
                ),
                Message::BroadcastAnswer { hid, .. } => (
                    to,
                    Message::BroadcastAnswer {
                        hid: *hid,
                        ok: false,
                    },
                ),
                Message::TimedOut { .. } | Message::DialFailed { .. } => return,
            };
            let at = self.now + self.config.timing.query_timeout;
            let message = Box::new(timeout);
            let event = Event::Deliver {
                from: requester,
                to: requester,
                message,
            };
            self.schedule(at, event);
            return;
        }
        let at = self.now + self.delay();
        self.schedule(
            at,
            Event::Deliver {
                from,
                to,
                message: Box::new(message),
            },
        );
    }

    fn delay(&mut self) -> Duration {
        let mean = self.net.latency.as_micros() as u64;
        let jitter = if mean > 0 {
            self.rng.gen_range(0..=mean)
        } else {
            0
        };
        Duration::from_micros(mean / 2 + jitter)
    }
    pub(super) fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(o) => {
                    let Some(&to) = self.index.get(&o.peer) else {
                        continue;
                    };
                    let message = Message::Request {
                        rid: o.id,
                        request: o.request,
                        then: o.then.map(|t| Box::new((t.id, t.request))),
                    };
                    self.send(i, to, message);
                }
                Action::Answer { id, response } => {
                    if let Some((to, rid)) = self.inbound.remove(&id) {
                        self.send(i, to, Message::Response { rid, response });
                    }
                }
                Action::Reply { op, result, report } => {
                    self.results.insert(op, (result, report));
                }
                Action::Broadcast {
                    id, peer, message, ..
                } => {
                    let Some(&to) = self.index.get(&peer) else {
                        continue;
                    };
                    self.handoffs += 1;
                    self.send(i, to, Message::Broadcast { hid: id, message });
                }
                Action::AnswerBroadcast { id, ack } => {
                    if let Some((to, hid)) = self.inbound_broadcasts.remove(&id) {
                        // Busy is retried with another peer, as a failure is.
                        let ok = ack.is_some_and(|a| a != Ack::Busy);
                        self.send(i, to, Message::BroadcastAnswer { hid, ok });
                    }
                }
                Action::Deliver { origin, payload } => self.delivered.push((i, origin, payload)),
                // The core itself refuses a blocked peer's requests and keeps it out of its
                // table and lookups: the transport's refusal adds nothing to simulate.
                // Simulated nodes are no mirrors.
                Action::AnswerMirror { .. } => {}
                Action::Lied { .. }
                | Action::Refused { .. }
                | Action::Mirror { .. }
                | Action::MirrorFound { .. }
                | Action::Evicted { .. }
                | Action::HeldOut { .. }
                | Action::Block { .. }
                | Action::Unblock { .. }
                | Action::Joined { .. } => {}
                // The simulator runs no application: no custom commands.
                Action::SendCommand { .. }
                | Action::RunHandler { .. }
                | Action::AnswerCommand { .. } => {}
                // Never asked for: simulated nodes join by id (`Input::Join`), and are given no
                // bootstrap addresses.
                Action::Dial { .. } => {}
                // The simulator models no connections apart from the table's.
                Action::Relearn => {}
                // A dial to a node that left is refused a round trip later (its host resets
                // it), one across a partition times out; one to a live node succeeds, which
                // changes nothing here.
                Action::CheckPeer { peer, .. } => {
                    let Some(&to) = self.index.get(&peer) else {
                        continue;
                    };
                    let at = if !self.nodes[to].alive {
                        self.now + self.delay() * 2
                    } else if self.nodes[to].side != self.nodes[i].side {
                        self.now + self.config.timing.query_timeout
                    } else {
                        continue;
                    };
                    let message = Box::new(Message::DialFailed { peer });
                    self.schedule(
                        at,
                        Event::Deliver {
                            from: to,
                            to: i,
                            message,
                        },
                    );
                }
            }
        }
        self.rewake(i);
    }

    /// Request `rid` from node `from` reaches node `to`.
    fn request_arrived(&mut self, from: usize, to: usize, rid: RequestId, request: KadRequest) {
        if !self.nodes[to].alive {
            // A dead node's host resets the connection.
            self.send(to, from, Message::Reset { rid });
            return;
        }
        if self.nodes[to].hollow {
            let response = Some(hollow_answer(request));
            self.send(to, from, Message::Response { rid, response });
            return;
        }
        // ADD_PROVIDER has no answer: the sender's stream ends once the request is
        // written, as the real codec's does; the receiver's silence is not a failure.
        let silent = matches!(request, KadRequest::AddProvider { .. });
        if silent {
            let response = Some(KadResponse::to(MessageKind::AddProvider));
            self.send(to, from, Message::Response { rid, response });
        }
        self.next_inbound += 1;
        let id = self.next_inbound;
        if !silent {
            self.inbound.insert(id, (from, rid));
        }
        let peer = self.peer(from);
        let input = Input::Request {
            peer,
            id,
            request,
            serving: true,
            host: Some(self.nodes[from].host),
            same_host: false,
        };
        self.input(to, input);
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }
    pub(super) fn dispatch(&mut self, event: Event) {
        match event {
            Event::Wake { node } => {
                let due = self.nodes[node].wake.is_some_and(|w| w <= self.instant());
                if !due {
                    return;
                }
                self.nodes[node].wake = None;
                if self.nodes[node].alive {
                    self.input(node, Input::Tick);
                }
            }
            Event::Deliver { from, to, message } => match *message {
                Message::Request { rid, request, then } => {
                    self.request_arrived(from, to, rid, request);
                    // The request behind it on the same stream, read once the first is answered.
                    if let Some(then) = then {
                        let (rid, request) = *then;
                        self.request_arrived(from, to, rid, request);
                    }
                }
                Message::Broadcast { hid, message } => {
                    if !self.nodes[to].alive {
                        self.send(to, from, Message::BroadcastAnswer { hid, ok: false });
                        return;
                    }
                    self.next_inbound += 1;
                    let id = self.next_inbound;
                    self.inbound_broadcasts.insert(id, (from, hid));
                    let peer = self.peer(from);
                    self.input(to, Input::BroadcastReceived { peer, id, message });
                }
                Message::BroadcastAnswer { hid, ok } => {
                    let input = if ok {
                        Input::BroadcastAnswered { id: hid }
                    } else {
                        Input::BroadcastFailed { id: hid }
                    };
                    self.input(to, input);
                }
                Message::DialFailed { peer } => {
                    let input = Input::Undialable {
                        peer,
                        wrong_peer: false,
                    };
                    self.input(to, input);
                }
                Message::Reset { rid } => {
                    let kind = FailureKind::Broken;
                    self.input(to, Input::Failure { id: rid, kind });
                }
                Message::TimedOut { rid } => {
                    let input = Input::Failure {
                        id: rid,
                        kind: FailureKind::TimedOut,
                    };
                    self.input(to, input);
                }
                Message::Response { rid, response } => {
                    let input = match response {
                        Some(response) => Input::Response {
                            id: rid,
                            response,
                            same_host: false,
                        },
                        None => Input::Failure {
                            id: rid,
                            kind: FailureKind::Refused,
                        },
                    };
                    self.input(to, input);
                }
            },
        }
    }
}
