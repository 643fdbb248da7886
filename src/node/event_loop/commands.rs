//! Commands from the handles: each starts an operation or answers from local state.

use super::*;

impl EventLoop {
    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Store { key, value, reply } => self.start_store(key, value, reply),
            Command::Fetch { key, reply } => self.start_fetch(key, reply),
            Command::Lookup { key, reply } => {
                let key = key.as_bytes().to_vec();
                self.start_op(Caller::Peers(reply), |op| Input::Closest { op, key });
            }
            Command::Provide { key, reply } => {
                let bytes = key.as_bytes().to_vec();
                self.start_op(Caller::Provide(key, reply), |op| Input::Provide {
                    op,
                    key: bytes,
                });
            }
            Command::Providers { key, count, reply } => {
                let key = key.as_bytes().to_vec();
                self.start_op(Caller::Providers(reply), |op| Input::Providers {
                    op,
                    key,
                    want: count,
                });
            }
            Command::FindPeer { peer, reply } => {
                self.start_op(Caller::FindPeer(peer, reply), |op| Input::FindPeer {
                    op,
                    peer,
                });
            }
            Command::CustomCmd {
                peer,
                payload,
                reply,
            } => {
                self.counters.commands_sent += 1;
                self.start_op(Caller::Command(peer, reply), |op| Input::Command {
                    op,
                    peer,
                    payload,
                });
            }
            Command::SetCommandHandler { handler, reply } => {
                self.handler.app = handler;
                let present = self.handler.app.is_some();
                self.drive(Input::SetHandler { present });
                let _ = reply.send(Ok(()));
            }
            Command::Broadcast { payload, reply } => {
                self.counters.broadcasts_sent += 1;
                self.start_op(Caller::Broadcast(reply), |op| Input::Broadcast {
                    op,
                    payload,
                });
            }
            local @ (Command::Status { .. }
            | Command::RoutingTable { .. }
            | Command::ConnectedPeers { .. }
            | Command::LocalRecords { .. }
            | Command::RemoteInfo { .. }
            | Command::Block { .. }
            | Command::Unblock { .. }
            | Command::Blocked { .. }
            | Command::Connect { .. }
            | Command::Stop { .. }) => self.on_local_command(local),
        }
    }

    /// The commands that start no operation of the core: answered from local state, or by the
    /// driver's own requests (dials, node info).
    fn on_local_command(&mut self, command: Command) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(Ok(self.status()));
            }
            Command::RoutingTable { reply } => {
                let _ = reply.send(Ok(self.routing_table()));
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(Ok(self.connected_peers()));
            }
            Command::LocalRecords { reply } => {
                let _ = reply.send(Ok(self.local_records()));
            }
            Command::RemoteInfo { peer, reply } => self.remote_info(peer, reply),
            Command::Block { peer, reply } => {
                self.drive(Input::Block { peer });
                let _ = reply.send(Ok(()));
            }
            Command::Unblock { peer, reply } => {
                let was = self.core.is_blocked(&peer);
                self.drive(Input::Unblock { peer });
                let _ = reply.send(Ok(was));
            }
            Command::Blocked { reply } => {
                let list = self
                    .core
                    .blocked(Instant::now())
                    .into_iter()
                    .map(|(peer, remaining)| BlockedPeer { peer, remaining })
                    .collect();
                let _ = reply.send(Ok(list));
            }
            Command::Connect { addr, reply } => self.connect(addr, reply),
            // Handled in `run`; kept total for the compiler.
            Command::Stop { reply } => {
                let _ = reply.send(Ok(()));
            }
            // The operations: `on_command` starts them and sends only the rest here.
            _ => {}
        }
    }

    fn connected_peers(&self) -> Vec<PeerEntry> {
        self.net
            .connections
            .iter()
            .map(|(peer, conns)| PeerEntry {
                peer: *peer,
                addrs: conns.iter().map(|(_, a)| a.clone()).collect(),
            })
            .collect()
    }

    fn remote_info(&mut self, peer: PeerId, reply: Reply<NodeInfo>) {
        let Some(reply) = self.admit(reply) else {
            return;
        };
        let addrs = self.addrs_of(&peer);
        let id = self
            .swarm
            .behaviour_mut()
            .info
            .send_request_with_addresses(&peer, (), addrs);
        let deadline = self.deadline(self.config.timing.command_timeout + TICK);
        self.wires.info_ops.insert(id, deadline, (peer, reply));
    }

    fn connect(&mut self, addr: Multiaddr, reply: Reply<PeerId>) {
        let Some(reply) = self.admit(reply) else {
            return;
        };
        let opts = DialOpts::from(addr.clone());
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                let deadline = self.deadline(self.config.timing.command_timeout);
                self.wires.dials.insert(id, deadline, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Dial {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                }));
            }
        }
    }

    /// `reply` back when one more dial or info request may start; otherwise it is answered with
    /// [`Error::Busy`]: each holds a reply until its deadline, so their number is bounded (the
    /// core bounds its own operations, [`crate::core::MAX_OPERATIONS`]).
    pub(super) fn admit<T>(&mut self, reply: Reply<T>) -> Option<Reply<T>> {
        let pending = self.wires.dials.len() + self.wires.info_ops.len();
        if pending < MAX_PENDING_REQUESTS {
            return Some(reply);
        }
        self.counters.errors += 1;
        let _ = reply.send(Err(Error::Busy { pending }));
        None
    }

    pub(super) fn start_store(&mut self, key: Key, value: Vec<u8>, reply: Reply<Stored>) {
        // Only handles send stores, and they validated the record before any traffic. The core
        // keeps this node's own copy (a serving node's, without expiry) and stores it on the k
        // closest nodes; copies elsewhere get the TTL.
        self.counters.stores_issued += 1;
        let bytes = key.as_bytes().to_vec();
        self.start_op(Caller::Store(key, reply), |op| Input::Store {
            op,
            key: bytes,
            value,
        });
    }

    pub(super) fn start_fetch(&mut self, key: Key, reply: Reply<Vec<u8>>) {
        self.counters.fetches_issued += 1;
        let bytes = key.as_bytes().to_vec();
        self.start_op(Caller::Fetch(key, reply), |op| Input::Fetch {
            op,
            key: bytes,
        });
    }

    pub(super) fn status(&mut self) -> NodeStatus {
        let local = self.local;
        let routing_table_size = self.core.routing().len();
        let records = self.core.records();
        let stats = self.core.stats();
        let mut counters = self.counters.clone();
        counters.records_handed_off = stats.handed_off;
        counters.values_cached = stats.cached;
        counters.requests_throttled = stats.throttled;
        counters.broadcasts_refused = stats.broadcasts_refused;
        counters.mirrors_ignored = stats.mirrors_ignored;
        counters.mirror_pushes_refused = stats.mirror_pushes_refused;
        counters.signatures_checked = self.core.records().verifications();
        NodeStatus {
            peer_id: local,
            listen_addrs: self
                .net
                .listen_addrs
                .iter()
                .map(|a| with_peer(a, local))
                .collect(),
            connected_peers: self.net.connections.len(),
            routing_table_size,
            stored_keys: records.len(),
            stored_bytes: records.bytes(),
            pending_operations: self.running_queries()
                + self.core.commands_pending()
                + self.wires.info_ops.len()
                + self.wires.dials.len()
                + self.core.broadcasts_in_flight()
                + self.core.mirror_pending(),
            uptime: self.started.elapsed(),
            counters,
            bytes_in: self.bandwidth.inbound(),
            bytes_out: self.bandwidth.outbound(),
            database: self.writer.as_ref().map(|w| w.path().to_path_buf()),
            mirror: self.config.mirror,
        }
    }

    pub(super) fn routing_table(&self) -> Vec<RoutingEntry> {
        let mut entries: Vec<RoutingEntry> = self
            .core
            .routing()
            .entries()
            .map(|e| RoutingEntry {
                bucket: DhtBehaviour::bucket_index(&self.local, e.peer()).unwrap_or(0),
                peer: *e.peer(),
                addrs: e.addrs.clone(),
            })
            .collect();
        entries.sort_by_key(|e| (e.bucket, e.peer));
        entries
    }

    /// The addresses the routing table has for `peer`, for a request to it when not connected.
    pub(super) fn addrs_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.core
            .routing()
            .get(peer)
            .map(|e| e.addrs.clone())
            .unwrap_or_default()
    }

    pub(super) fn local_records(&mut self) -> Vec<LocalRecord> {
        let local = self.local;
        let now = Instant::now();
        let mut records: Vec<LocalRecord> = self
            .core
            .records()
            .live(now)
            .map(|r| LocalRecord {
                key: Key::from_record_key(&r.key),
                size: r.value.len(),
                preview: r.value.iter().take(PREVIEW_LEN).copied().collect(),
                published_here: r.publisher == Some(local),
                expires_in: r.expires.map(|e| e.saturating_duration_since(now)),
            })
            .collect();
        records.sort_by(|a, b| a.key.cmp(&b.key));
        records
    }
}
