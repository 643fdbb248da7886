//! The handles' operations running, each by the query that runs it, and the content keys fetched
//! lately (a key fetched again is in demand, and its value is cached along the way).

use std::collections::{HashMap, HashSet};

use super::events::OpId;
use super::outbox::QueryId;

/// Content keys remembered to tell repeated fetches (demand) from first ones.
pub const DEMAND_TRACKED_KEYS: usize = 4096;

/// The operations running and the keys in demand.
#[derive(Default)]
pub(super) struct Operations {
    running: HashMap<QueryId, OpId>,
    demand: HashSet<Vec<u8>>,
}

impl Operations {
    /// Operation `op` runs as query `id`.
    pub fn started(&mut self, id: QueryId, op: OpId) {
        self.running.insert(id, op);
    }

    /// Query `id` ended: the operation it ran, if it ran one.
    pub fn ended(&mut self, id: &QueryId) -> Option<OpId> {
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
            + self.running.capacity() * (std::mem::size_of::<(QueryId, OpId)>() + 1)
    }
}
