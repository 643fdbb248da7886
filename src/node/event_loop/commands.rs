//! Commands from the handles: each starts an operation or answers from local state.

use super::*;

impl EventLoop {
    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Store { key, value, reply } => self.start_store(key, value, reply),
            Command::Fetch { key, reply } => self.start_fetch(key, reply),
            Command::Lookup { key, reply } => {
                let Some(reply) = self.admit(reply) else {
                    return;
                };
                let caller = Some(Caller::Peers(reply));
                self.start_query(key.as_bytes().to_vec(), Purpose::Peers, caller);
            }
            Command::CustomCmd {
                peer,
                payload,
                reply,
            } => {
                self.counters.commands_sent += 1;
                let deadline = self.deadline(self.config.timing.command_timeout + TICK);
                self.commands_out.push(peer, payload, reply, deadline);
                self.send_queued_commands(peer);
            }
            Command::SetCommandHandler { handler, reply } => {
                self.handler = handler;
                let _ = reply.send(Ok(()));
            }
            Command::Broadcast { payload, reply } => {
                self.counters.broadcasts_sent += 1;
                let message = self.broadcaster.originate(payload, Instant::now());
                let sent = self.hand_off(&message, 0, FULL_HEIGHT);
                let _ = reply.send(Ok(sent));
            }
            Command::Status { reply } => {
                let _ = reply.send(Ok(self.status()));
            }
            Command::RoutingTable { reply } => {
                let _ = reply.send(Ok(self.routing_table()));
            }
            Command::ConnectedPeers { reply } => {
                let peers = self
                    .connections
                    .iter()
                    .map(|(peer, conns)| PeerEntry {
                        peer: *peer,
                        addrs: conns.iter().map(|(_, a)| a.clone()).collect(),
                    })
                    .collect();
                let _ = reply.send(Ok(peers));
            }
            Command::LocalRecords { reply } => {
                let _ = reply.send(Ok(self.local_records()));
            }
            Command::RemoteInfo { peer, reply } => {
                let Some(reply) = self.admit(reply) else {
                    return;
                };
                let id = self.swarm.behaviour_mut().info.send_request(&peer, ());
                let deadline = self.deadline(self.config.timing.command_timeout + TICK);
                self.info_ops.insert(id, deadline, (peer, reply));
            }
            Command::Block { peer, reply } => {
                info!(%peer, "blocked by the operator");
                self.reputation.block(peer);
                self.enforce_block(peer);
                let _ = reply.send(Ok(()));
            }
            Command::Unblock { peer, reply } => {
                let was = self.reputation.unblock(&peer);
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                let _ = reply.send(Ok(was));
            }
            Command::Blocked { reply } => {
                let now = Instant::now();
                let mut list: Vec<BlockedPeer> = self
                    .reputation
                    .blocked()
                    .map(|(peer, reason)| BlockedPeer {
                        peer: *peer,
                        remaining: match reason {
                            BlockReason::Manual => None,
                            BlockReason::Misbehaved { until } => {
                                Some(until.saturating_duration_since(now))
                            }
                        },
                    })
                    .collect();
                list.sort_by_key(|b| b.peer);
                let _ = reply.send(Ok(list));
            }
            Command::Connect { addr, reply } => {
                let Some(reply) = self.admit(reply) else {
                    return;
                };
                let opts = DialOpts::from(addr.clone());
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        let deadline = self.deadline(self.config.timing.command_timeout);
                        self.dials.insert(id, deadline, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dial {
                            addr: addr.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Stop { reply } => {
                // Handled in `run`; kept total for the compiler.
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// `reply` back when one more network operation may start; otherwise it is answered with
    /// [`Error::Busy`]: every pending operation holds a query and a reply until its deadline, so their
    /// number is bounded.
    pub(super) fn admit<T>(&mut self, reply: Reply<T>) -> Option<Reply<T>> {
        let pending = self.running_queries() + self.dials.len() + self.info_ops.len();
        if pending < MAX_PENDING_OPERATIONS {
            return Some(reply);
        }
        self.counters.errors += 1;
        let _ = reply.send(Err(Error::Busy { pending }));
        None
    }

    pub(super) fn start_store(&mut self, key: Key, value: Vec<u8>, reply: Reply<Stored>) {
        // Only handles send stores, and they validated the record before any traffic.
        self.counters.stores_issued += 1;
        let Some(reply) = self.admit(reply) else {
            return;
        };
        let mut record = Record::new(key.to_record_key(), value);
        record.publisher = Some(self.local);
        // The publisher's own copy lives as long as the node; copies elsewhere get the TTL.
        // A client serves nobody, so it keeps no copy.
        let serving = !self.config.client_mode;
        let kad = &mut self.swarm.behaviour_mut().kad;
        if serving && let Err(e) = kad.store_mut().put(record.clone()) {
            self.counters.errors += 1;
            let _ = reply.send(Err(Error::StoreFull(e.to_string())));
            return;
        }
        record.expires = Some(Instant::now() + self.config.timing.record_ttl);
        self.mirror_feed.record_added(&record.key, None);
        let target = key.as_bytes().to_vec();
        let caller = Some(Caller::Store(key, reply));
        self.start_query(target, Purpose::Store { record }, caller);
    }

    pub(super) fn start_fetch(&mut self, key: Key, reply: Reply<Vec<u8>>) {
        self.counters.fetches_issued += 1;
        let record_key = key.to_record_key();
        let kad = &mut self.swarm.behaviour_mut().kad;
        // The store returns only living records (it hides them a margin before their expiry).
        if let Some(r) = kad.store_mut().get(&record_key)
            && validate_record(key.as_bytes(), &r.value).is_ok()
        {
            let _ = reply.send(Ok(r.value.clone()));
            return;
        }
        if kad.kbuckets().next().is_none() {
            self.counters.errors += 1;
            let _ = reply.send(Err(Error::NoPeers));
            return;
        }
        let Some(reply) = self.admit(reply) else {
            return;
        };
        // Content never changes, so copies can be spread safely: a key fetched again (in demand)
        // runs on once found, to find the closest node that lacked it and cache it there.
        let cache = key.is_content() && self.demand.repeated(&key);
        let target = key.as_bytes().to_vec();
        let caller = Some(Caller::Fetch(key, reply));
        self.start_query(target, Purpose::Fetch { cache }, caller);
    }

    /// Hands `message` to peers of our buckets `from..to`; returns how many hand-offs were sent.
    pub(super) fn hand_off(
        &mut self,
        message: &dht_behaviours::broadcast::BroadcastMessage,
        from: u16,
        to: u16,
    ) -> usize {
        let behaviour = self.swarm.behaviour_mut();
        let buckets = behaviour.buckets();
        let plan = self.broadcaster.plan(message, &buckets, from, to);
        let sent = plan.len();
        for (peer, msg) in plan {
            let id = behaviour.broadcast.send_request(&peer, msg.clone());
            self.broadcaster.sent(
                id,
                Handoff {
                    message: msg,
                    tried: vec![peer],
                },
            );
        }
        sent
    }

    pub(super) fn status(&mut self) -> NodeStatus {
        let local = self.local;
        let kad = &mut self.swarm.behaviour_mut().kad;
        let routing_table_size = kad.kbuckets().map(|b| b.num_entries()).sum();
        let store = kad.store_mut();
        NodeStatus {
            peer_id: local,
            listen_addrs: self
                .listen_addrs
                .iter()
                .map(|a| with_peer(a, local))
                .collect(),
            connected_peers: self.connections.len(),
            routing_table_size,
            stored_keys: store.len(),
            stored_bytes: store.bytes(),
            pending_operations: self.running_queries()
                + self.cmd_ops.len()
                + self.commands_out.queued()
                + self.info_ops.len()
                + self.dials.len()
                + self.broadcaster.in_flight()
                + self.mirror_feed.pending(),
            uptime: self.started.elapsed(),
            counters: self.counters.clone(),
            bytes_in: self.bandwidth.inbound(),
            bytes_out: self.bandwidth.outbound(),
            database: self.writer.as_ref().map(|w| w.path().to_path_buf()),
            mirror: self.config.mirror,
        }
    }

    pub(super) fn routing_table(&mut self) -> Vec<RoutingEntry> {
        let mut entries = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            let index = bucket.range().0.ilog2().unwrap_or(0);
            for entry in bucket.iter() {
                entries.push(RoutingEntry {
                    bucket: index,
                    peer: *entry.node.key.preimage(),
                    addrs: entry.node.value.iter().cloned().collect(),
                });
            }
        }
        entries.sort_by_key(|e| (e.bucket, e.peer));
        entries
    }

    pub(super) fn local_records(&mut self) -> Vec<LocalRecord> {
        let local = self.local;
        let now = Instant::now();
        let mut records: Vec<LocalRecord> = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .records()
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
