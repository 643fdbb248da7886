//! Our own request-response protocols: custom commands, broadcast hand-offs and node info.

use super::*;
use crate::options::EVENT_PAYLOAD_PREVIEW;

impl EventLoop {
    pub(super) fn on_command_protocol(
        &mut self,
        event: request_response::Event<Vec<u8>, CommandReply>,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let shown = request.len().min(EVENT_PAYLOAD_PREVIEW);
                    self.emit(Event::CommandReceived {
                        peer,
                        payload: request[..shown].to_vec(),
                        len: request.len(),
                    });
                    let id = self.wires.command_inbound.insert(channel);
                    self.drive(Input::CommandReceived {
                        peer,
                        id,
                        payload: request,
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(id) = self.wires.command_requests.remove(&request_id) {
                        self.drive(Input::CommandAnswered {
                            id,
                            reply: response,
                        });
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(id) = self.wires.command_requests.remove(&request_id) {
                    let reason = match error {
                        request_response::OutboundFailure::Timeout => None,
                        other => Some(other.to_string()),
                    };
                    self.drive(Input::CommandFailed { id, reason });
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, "inbound custom command failed: {error}");
                if is_malformed(&error) {
                    self.offend(peer, Offence::MalformedMessage);
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Runs the application's handler on a peer's command, off the loop (the core counted it
    /// against [`MAX_RUNNING_HANDLERS`]).
    pub(super) fn run_handler(&mut self, id: InboundId, peer: PeerId, payload: Vec<u8>) {
        let Some(handler) = self.handler.app.clone() else {
            let reply = CommandReply::Refused("no command handler registered".to_owned());
            self.drive(Input::HandlerDone { id, reply });
            return;
        };
        let done = self.handler.done_tx.clone();
        let timeout = self.config.timing.command_timeout;
        tokio::spawn(run_handler(handler, peer, payload, id, done, timeout));
    }

    pub(super) fn on_broadcast(
        &mut self,
        event: request_response::Event<
            dht_behaviours::broadcast::BroadcastMessage,
            dht_behaviours::broadcast::Ack,
        >,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let id = self.wires.broadcast_inbound.insert(channel);
                    self.drive(Input::BroadcastReceived {
                        peer,
                        id,
                        message: request,
                    });
                    // The core answers at once.
                    self.wires.broadcast_inbound.remove(&id);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(id) = self.wires.broadcast_requests.remove(&request_id) {
                        // Busy: over our rate with that peer; another of its bucket is tried.
                        if response == dht_behaviours::broadcast::Ack::Busy {
                            self.drive(Input::BroadcastFailed { id });
                        } else {
                            self.drive(Input::BroadcastAnswered { id });
                        }
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, "broadcast hand-off failed: {error}");
                if let Some(id) = self.wires.broadcast_requests.remove(&request_id) {
                    self.drive(Input::BroadcastFailed { id });
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, "inbound broadcast failed: {error}");
                if is_malformed(&error) {
                    self.offend(peer, Offence::MalformedMessage);
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn on_info(&mut self, event: request_response::Event<(), NodeInfo>) {
        match event {
            request_response::Event::Message { message, .. } => match message {
                request_response::Message::Request { channel, .. } => {
                    let info = self.node_info();
                    if self
                        .swarm
                        .behaviour_mut()
                        .info
                        .send_response(channel, info)
                        .is_err()
                    {
                        debug!("info answer not sent: the requester is gone");
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some((_, (_, reply))) = self.wires.info_ops.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, (_, reply))) = self.wires.info_ops.remove(&request_id) {
                    let _ = reply.send(Err(Error::CommandFailed {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            other => trace!(?other, "info event"),
        }
    }

    pub(super) fn node_info(&mut self) -> NodeInfo {
        let status = self.status();
        NodeInfo {
            peer_id: status.peer_id.to_string(),
            agent_version: self.config.agent_version.clone(),
            listen_addrs: status
                .listen_addrs
                .iter()
                .map(ToString::to_string)
                .collect(),
            connected_peers: status.connected_peers,
            routing_table: self
                .routing_table()
                .into_iter()
                .map(|e| RoutingPeer {
                    peer: e.peer.to_string(),
                    bucket: e.bucket,
                })
                .collect(),
            stored_keys: status.stored_keys,
            stored_bytes: status.stored_bytes,
            uptime_secs: status.uptime.as_secs(),
            joining: self.core.next_round_in(Instant::now()).is_some(),
        }
    }
}

async fn run_handler(
    handler: CommandHandler,
    peer: PeerId,
    payload: Vec<u8>,
    id: InboundId,
    done: mpsc::Sender<HandlerDone>,
    timeout: Duration,
) {
    let reply = match tokio::time::timeout(timeout, handler(peer, payload)).await {
        Ok(Ok(bytes)) if bytes.len() <= MAX_COMMAND_REPLY => CommandReply::Ok(bytes),
        Ok(Ok(bytes)) => CommandReply::Refused(format!(
            "reply of {} bytes exceeds the limit of {MAX_COMMAND_REPLY}",
            bytes.len()
        )),
        Ok(Err(reason)) => CommandReply::Refused(reason),
        Err(_) => CommandReply::Refused("the handler timed out".to_owned()),
    };
    // The loop is gone only when the node stops; then nobody needs the reply.
    let _ = done.send((id, reply)).await;
}
