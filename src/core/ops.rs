//! The handles' operations: a store (kept here first when serving, then put on the k closest),
//! a fetch (answered from here when held, else looked up; a content key fetched again is in
//! demand, and its value is cached along the way). Lookups of the closest peers start in
//! [`Core::handle`].

use std::time::Instant;

use dht_behaviours::validation::is_content_key;
use libp2p::kad::{Record, RecordKey};

use super::events::{Action, OpError, OpId, OpOk};
use super::queries::{Purpose, QueryEvent};
use super::records::Source;
use super::{Core, DEMAND_TRACKED_KEYS, reply};

impl Core {
    pub(super) fn store(
        &mut self,
        op: OpId,
        key: Vec<u8>,
        value: Vec<u8>,
        now: Instant,
        out: &mut Vec<Action>,
        events: &mut Vec<QueryEvent>,
    ) {
        let mut record = Record::new(RecordKey::new(&key), value);
        if self.config.serving {
            if let Err(refusal) = self.records.admit(Source::Own, record.clone(), now) {
                out.push(reply(op, Err(OpError::Refused(refusal))));
                return;
            }
            self.kept.push((record.key.clone(), None));
        }
        record.publisher = Some(self.local);
        record.expires = Some(now + self.config.timing.record_ttl);
        let id = self.start(key, Purpose::Store { record }, now, events);
        self.ops.insert(id, op);
    }

    pub(super) fn fetch(
        &mut self,
        op: OpId,
        key: Vec<u8>,
        now: Instant,
        out: &mut Vec<Action>,
        events: &mut Vec<QueryEvent>,
    ) {
        if let Some(r) = self.records.get(&RecordKey::new(&key), now) {
            out.push(reply(op, Ok(OpOk::Value(r.value.clone()))));
            return;
        }
        if self.routing.is_empty() {
            out.push(reply(op, Err(OpError::NoPeers)));
            return;
        }
        // Content never changes, so its copies can be spread safely; a free key's cannot.
        let cache = is_content_key(&key) && self.repeated(&key);
        let id = self.start(key, Purpose::Fetch { cache }, now, events);
        self.ops.insert(id, op);
    }

    /// Whether `key` was fetched before (it is in demand). Bounded: everything is forgotten when
    /// [`DEMAND_TRACKED_KEYS`] are tracked.
    fn repeated(&mut self, key: &[u8]) -> bool {
        if self.demand.contains(key) {
            return true;
        }
        if self.demand.len() >= DEMAND_TRACKED_KEYS {
            self.demand.clear();
        }
        self.demand.insert(key.to_vec());
        false
    }
}
