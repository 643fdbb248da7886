//! The handles' operations running, each by the query that runs it, and the content keys fetched
//! lately (a key fetched again is in demand, and its value is cached along the way).

use std::collections::{HashMap, HashSet};

use super::context::Cx;
use super::events::{Action, OpError, OpId};
use super::outbox::QueryId;

/// Content keys remembered to tell repeated fetches (demand) from first ones.
pub const DEMAND_TRACKED_KEYS: usize = 4096;
/// The handles' operations that may wait for a lookup at once (stores, fetches, provides,
/// searches); more are refused as busy rather than queued without bound. One answered from here
/// (a record held, a peer known) is never refused. Background work has its own bound
/// ([`super::upkeep::MAX_REPLICATION_QUERIES`], [`super::provided::MAX_REPROVIDE_QUERIES`]).
pub const MAX_OPERATIONS: usize = 4096;

/// The operations running and the keys in demand.
#[derive(Default)]
pub(super) struct Operations {
    /// Each operation, and whether it is a store (whose outcome says whether a copy is kept
    /// here too).
    running: HashMap<QueryId, (OpId, bool)>,
    demand: HashSet<Vec<u8>>,
}

impl Operations {
    /// Whether operation `op` may start a lookup: if [`MAX_OPERATIONS`] run, it ends busy.
    pub fn admit(&self, op: OpId, cx: &mut Cx) -> bool {
        let pending = self.running.len();
        if pending < MAX_OPERATIONS {
            return true;
        }
        cx.out
            .push(Action::reply(op, Err(OpError::Busy { pending })));
        false
    }

    /// Operation `op` runs as query `id`.
    pub fn started(&mut self, id: QueryId, op: OpId) {
        self.running.insert(id, (op, false));
    }

    /// Store `op` runs as query `id`.
    pub fn store_started(&mut self, id: QueryId, op: OpId) {
        self.running.insert(id, (op, true));
    }

    /// Query `id` ended: the operation it ran, if it ran one, and whether it was a store.
    pub fn ended(&mut self, id: &QueryId) -> Option<(OpId, bool)> {
        self.running.remove(id)
    }

    /// Operations running.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether `key` was fetched before (it is in demand). Bounded: everything is forgotten when
    /// [`DEMAND_TRACKED_KEYS`] are tracked.
    pub fn repeated(&mut self, key: &[u8]) -> bool {
        if self.demand.contains(key) {
            return true;
        }
        if self.demand.len() >= DEMAND_TRACKED_KEYS {
            self.demand.clear();
        }
        self.demand.insert(key.to_vec());
        false
    }

    /// Heap bytes, by its own accounting.
    pub fn heap_bytes(&self) -> usize {
        self.demand.capacity() * (std::mem::size_of::<Vec<u8>>() + 32 + 1)
            + self.running.capacity() * (std::mem::size_of::<(QueryId, (OpId, bool))>() + 1)
    }
}
