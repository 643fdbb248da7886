//! Address diversity: how many peers of one network a routing table takes, as
//! go-libp2p-kad-dht's diversity filter bounds them. A hundred identities minted behind one
//! address cost their owner nothing; without a bound they can fill every bucket they fall in and
//! be most of the k closest to any key, then acknowledge stores and keep nothing.
//!
//! A peer's group is the network of the first public IP address it listens on: the /16 of an
//! IPv4 address, the /32 of an IPv6 one. Peers with no public address (loopback, private,
//! link-local, shared CGNAT ranges, DNS names, or none known, as in the simulator) are in no group
//! and not bounded, so a local network on 127.0.0.1 or a LAN keeps working.

use std::collections::HashMap;

pub use dht_behaviours::diversity::{Group, group_of, group_of_ip};

/// Peers of one address group in one bucket at most.
pub const MAX_GROUP_PER_BUCKET: usize = 2;
/// Peers of one address group in the whole table at most.
pub const MAX_GROUP_PER_TABLE: usize = 10;

/// How many peers of each group a table holds.
#[derive(Debug, Default)]
pub struct GroupCounts(HashMap<Group, usize>);

impl GroupCounts {
    /// Peers of `group` in the table.
    pub fn get(&self, group: &Group) -> usize {
        self.0.get(group).copied().unwrap_or(0)
    }

    /// One more peer of `group`.
    pub fn add(&mut self, group: Option<Group>) {
        if let Some(g) = group {
            *self.0.entry(g).or_insert(0) += 1;
        }
    }

    /// One peer of `group` fewer.
    pub fn remove(&mut self, group: Option<Group>) {
        if let Some(g) = group
            && let Some(n) = self.0.get_mut(&g)
        {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&g);
            }
        }
    }

    /// Heap bytes held, for memory reports.
    pub fn heap_bytes(&self) -> usize {
        self.0.capacity() * (std::mem::size_of::<Group>() + std::mem::size_of::<usize>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_up_and_down() {
        let mut c = GroupCounts::default();
        let g = Some(Group::V4([1, 2]));
        c.add(g);
        c.add(g);
        c.add(None);
        assert_eq!(c.get(&Group::V4([1, 2])), 2);
        c.remove(g);
        c.remove(g);
        c.remove(g);
        assert_eq!(c.get(&Group::V4([1, 2])), 0);
    }
}
