//! Provider records and peer routing as this node uses them: `provide` announces this node on the
//! k closest nodes of a key and re-announces it every provide interval; `providers` gathers the
//! providers of a key; `find_peer` finds a peer's addresses. What peers announce to us is served in
//! [`super::server`]; the queries that run these are in [`super::queries`].

use std::time::Instant;

use dht_behaviours::kad_wire::WirePeer;
use libp2p::PeerId;
use libp2p::kad::RecordKey;

use super::Core;
use super::context::Cx;
use super::events::{Action, OpError, OpId, OpOk};
use super::queries::{MAX_PROVIDERS_FOUND, Purpose};

impl Core {
    pub(super) fn provide(&mut self, op: OpId, key: Vec<u8>, cx: &mut Cx) {
        if !self.ops.admit(op, cx) {
            return;
        }
        let record_key = RecordKey::new(&key);
        if let Err(why) = self.provided.add(record_key.clone(), cx.now) {
            cx.out
                .push(Action::reply(op, Err(OpError::ProvideRefused(why))));
            return;
        }
        self.provide_here(record_key, cx.now);
        if self.routing.is_empty() {
            cx.out.push(Action::reply(op, Err(OpError::NoPeers)));
            return;
        }
        let id = self.start_awaited(key, self.provide_purpose(), cx);
        self.ops.started(id, op);
    }

    /// A serving node lists itself in its own store, so it answers for the key too.
    fn provide_here(&mut self, key: RecordKey, now: Instant) {
        if self.config.serving {
            let addrs = self.provided.addrs().to_vec();
            if let Err(e) = self.records.add_provider(key, self.local, addrs, None, now) {
                tracing::debug!(error = %e, "own provider record not kept here");
            }
        }
    }

    fn provide_purpose(&self) -> Purpose {
        Purpose::Provide {
            provider: self.provided.provider(self.local),
        }
    }

    pub(super) fn find_providers(&mut self, op: OpId, key: Vec<u8>, want: usize, cx: &mut Cx) {
        let want = want.clamp(1, MAX_PROVIDERS_FOUND);
        let known: Vec<WirePeer> = self
            .records
            .providers(&RecordKey::new(&key), cx.now)
            .map(|p| WirePeer {
                peer: p.provider,
                addrs: p.addresses,
            })
            .take(want)
            .collect();
        if known.len() >= want || self.routing.is_empty() {
            let result = if known.is_empty() && self.routing.is_empty() {
                Err(OpError::NoPeers)
            } else {
                Ok(OpOk::Providers(known))
            };
            cx.out.push(Action::reply(op, result));
            return;
        }
        if !self.ops.admit(op, cx) {
            return;
        }
        let id = self.start(key, Purpose::Providers { want, known }, cx);
        self.ops.started(id, op);
    }

    pub(super) fn find_peer(&mut self, op: OpId, peer: PeerId, cx: &mut Cx) {
        // This node, or a peer of the table, which answered this node lately at these addresses.
        let known = if peer == self.local {
            Some(self.provided.addrs().to_vec())
        } else {
            self.routing
                .get(&peer)
                .map(|e| e.addrs.clone())
                .filter(|a| !a.is_empty())
        };
        if let Some(addrs) = known {
            let found = OpOk::PeerAddrs {
                addrs,
                reached: true,
            };
            cx.out.push(Action::reply(op, Ok(found)));
            return;
        }
        if self.routing.is_empty() {
            cx.out.push(Action::reply(op, Err(OpError::NoPeers)));
            return;
        }
        if !self.ops.admit(op, cx) {
            return;
        }
        let id = self.start(peer.to_bytes(), Purpose::FindPeer, cx);
        self.ops.started(id, op);
    }

    /// Re-announces the keys whose announcement is a provide interval old, a few at a time; after
    /// a restart, first takes in the keys this node's store lists it as providing.
    pub(super) fn reprovide(&mut self, cx: &mut Cx) {
        let (records, local) = (&self.records, self.local);
        let joined = !self.routing.is_empty();
        let due = self
            .provided
            .due(cx.now, joined, || records.provided_by(&local));
        for key in due {
            self.provide_here(key.clone(), cx.now);
            let id = self.start(key.to_vec(), self.provide_purpose(), cx);
            self.provided.announcing(id);
        }
    }
}
