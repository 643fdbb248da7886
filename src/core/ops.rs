//! The handles' operations: a store (kept here first when serving, then put on the k closest),
//! a fetch (answered from here when held, else looked up; a content key fetched again is in
//! demand, and its value is cached along the way). Lookups of the closest peers start in
//! [`Core::handle`].

use dht_behaviours::validation::is_content_key;
use dht_behaviours::validators::Namespace;
use libp2p::kad::{Record, RecordKey};
use libp2p::{Multiaddr, PeerId};

use super::Core;
use super::context::Cx;
use super::events::{Action, OpError, OpId, OpOk};
use super::outbox::QueryId;
use super::queries::{Purpose, RESOLVE_QUORUM};
use super::records::Source;

impl Core {
    /// Starts a query a handle waits for. A store or a provide by a node of a small network
    /// (its table knows k peers and no bucket is full: it kept every peer it heard of) puts to
    /// the k closest it knows while its lookup confirms them: one round trip, not two.
    /// Background stores do not: they gain no time anyone waits for, and a guess the lookup
    /// corrects costs messages.
    pub(super) fn start_awaited(&mut self, key: Vec<u8>, purpose: Purpose, cx: &mut Cx) -> QueryId {
        let early = matches!(purpose, Purpose::Store { .. } | Purpose::Provide { .. })
            && self.routing.len() >= self.config.k
            && self.routing.is_unsaturated();
        self.start_query(key, purpose, early, cx)
    }

    pub(super) fn store(&mut self, op: OpId, key: Vec<u8>, value: Vec<u8>, cx: &mut Cx) {
        if !self.ops.admit(op, cx) {
            return;
        }
        let mut record = Record::new(RecordKey::new(&key), value);
        if self.config.serving {
            if let Err(refusal) = self.records.admit(Source::Own, record.clone(), cx.now) {
                cx.out
                    .push(Action::reply(op, Err(OpError::Refused(refusal))));
                return;
            }
            cx.kept.push((record.key.clone(), None));
        }
        record.publisher = Some(self.local);
        record.expires = Some(cx.now + self.config.timing.record_ttl);
        let id = self.start_awaited(key, Purpose::Store { record }, cx);
        self.ops.store_started(id, op);
    }

    pub(super) fn fetch(&mut self, op: OpId, key: Vec<u8>, cx: &mut Cx) {
        let held = self.records.get(&RecordKey::new(&key), cx.now).cloned();
        if matches!(Namespace::of(&key), Some((Namespace::Ipns, _))) && !self.routing.is_empty() {
            // A name has versions: its holders are asked for theirs even when one is held here.
            let purpose = Purpose::Resolve {
                quorum: RESOLVE_QUORUM,
                held,
            };
            if !self.ops.admit(op, cx) {
                return;
            }
            let id = self.start(key, purpose, cx);
            self.ops.started(id, op);
            return;
        }
        if let Some(r) = held {
            cx.out.push(Action::reply(op, Ok(OpOk::Value(r.value))));
            return;
        }
        if self.routing.is_empty() {
            cx.out.push(Action::reply(op, Err(OpError::NoPeers)));
            return;
        }
        if !self.ops.admit(op, cx) {
            return;
        }
        // Content never changes, so its copies can be spread safely; a free key's cannot.
        let cache = is_content_key(&key) && self.ops.repeated(&key);
        let id = self.start(key, Purpose::Fetch { cache }, cx);
        self.ops.started(id, op);
    }

    /// A resolve found `record` (served by `from`) the best version of its name: the holders that
    /// served an older one get it, and so does this node's store when it held an older one.
    pub(super) fn correct(
        &mut self,
        mut record: Record,
        from: PeerId,
        stale: Vec<(PeerId, Vec<Multiaddr>)>,
        cx: &mut Cx,
    ) {
        record.publisher = None;
        record.expires = Some(cx.now + self.config.timing.record_ttl);
        if from != self.local && self.config.serving {
            let held = self
                .records
                .get(&record.key, cx.now)
                .map(|r| r.value.clone());
            if held.is_some_and(|v| v != record.value) {
                // The store's own rules decide (a better record replaces a worse one).
                let _ = self
                    .records
                    .admit(Source::Peer(from), record.clone(), cx.now);
            }
        }
        for (peer, addrs) in stale {
            if peer != self.local {
                self.stats.corrected += 1;
                self.queries
                    .put_once(peer, addrs, record.clone(), cx.now, &mut cx.events);
            }
        }
    }

    /// The k closest peers to `key`, looked up.
    pub(super) fn closest(&mut self, op: OpId, key: Vec<u8>, cx: &mut Cx) {
        if self.routing.is_empty() {
            cx.out.push(Action::reply(op, Err(OpError::NoPeers)));
            return;
        }
        if !self.ops.admit(op, cx) {
            return;
        }
        let id = self.start(key, Purpose::Peers, cx);
        self.ops.started(id, op);
    }
}
