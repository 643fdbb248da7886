//! Provider records and peer routing as this node uses them: `provide` announces this node on the
//! k closest nodes of a key and re-announces it every provide interval; `providers` gathers the
//! providers of a key; `find_peer` finds a peer's addresses. What peers announce to us is served in
//! [`super::server`]; the queries that run these are in [`super::queries`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dht_behaviours::config::{MAX_ADDRS_PER_PEER, PROVIDE_CHECKS_PER_INTERVAL};
use dht_behaviours::kad_wire::WirePeer;
use libp2p::kad::RecordKey;
use libp2p::{Multiaddr, PeerId};

use super::Core;
use super::context::Cx;
use super::events::{Action, OpError, OpId, OpOk};
use super::queries::{MAX_PROVIDERS_FOUND, Purpose};

/// Keys this node provides at most (each is re-announced every provide interval, k ADD_PROVIDERs
/// and k checks apiece).
pub const MAX_PROVIDED_KEYS: usize = 16_384;
/// Re-announcements running at once; the rest wait for the next maintenance round.
pub const MAX_REPROVIDE_QUERIES: usize = 8;
/// How often the provided keys are checked for a re-announcement due, per provide interval.
pub const REPROVIDE_CHECKS_PER_INTERVAL: u32 = PROVIDE_CHECKS_PER_INTERVAL;
/// A check that found no peer to announce to is tried again this soon.
pub const REPROVIDE_RETRY: Duration = Duration::from_secs(10);

/// The keys this node provides and when each was last announced.
#[derive(Debug, Default)]
pub struct Provided {
    keys: HashMap<RecordKey, Instant>,
    /// The addresses announced with this node.
    addrs: Vec<Multiaddr>,
    /// Whether the keys of this node found in its store (a restart) were taken in.
    resumed: bool,
    /// When the keys were last checked.
    last_check: Option<Instant>,
    /// The last check left due keys for want of room: the next comes as soon as a
    /// re-announcement ends.
    backlog: bool,
}

impl Provided {
    /// Keys provided.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Core {
    pub(super) fn provide(&mut self, op: OpId, key: Vec<u8>, cx: &mut Cx) {
        let record_key = RecordKey::new(&key);
        if !self.provided.keys.contains_key(&record_key)
            && self.provided.keys.len() >= MAX_PROVIDED_KEYS
        {
            let why = format!("this node provides {MAX_PROVIDED_KEYS} keys already");
            cx.out
                .push(Action::reply(op, Err(OpError::ProvideRefused(why))));
            return;
        }
        self.provided.keys.insert(record_key.clone(), cx.now);
        self.provide_here(record_key, cx.now);
        if self.routing.is_empty() {
            cx.out.push(Action::reply(op, Err(OpError::NoPeers)));
            return;
        }
        let id = self.start_awaited(key, self.provide_purpose(), cx);
        self.ops.insert(id, op);
    }

    /// A serving node lists itself in its own store, so it answers for the key too.
    fn provide_here(&mut self, key: RecordKey, now: Instant) {
        if self.config.serving {
            let addrs = self.provided.addrs.clone();
            if let Err(e) = self.records.add_provider(key, self.local, addrs, None, now) {
                tracing::debug!(error = %e, "own provider record not kept here");
            }
        }
    }

    fn provide_purpose(&self) -> Purpose {
        Purpose::Provide {
            provider: WirePeer {
                peer: self.local,
                addrs: self.provided.addrs.clone(),
            },
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
        let id = self.start(key, Purpose::Providers { want, known }, cx);
        self.ops.insert(id, op);
    }

    pub(super) fn find_peer(&mut self, op: OpId, peer: PeerId, cx: &mut Cx) {
        // This node, or a peer of the table, which answered this node lately at these addresses.
        let known = if peer == self.local {
            Some(self.provided.addrs.clone())
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
        let id = self.start(peer.to_bytes(), Purpose::FindPeer, cx);
        self.ops.insert(id, op);
    }

    /// The addresses this node is reached at (the driver's, best first: confirmed external ones,
    /// then public listen addresses, then the rest); announced with every provider record.
    pub(super) fn set_own_addrs(&mut self, mut addrs: Vec<Multiaddr>) {
        addrs.truncate(MAX_ADDRS_PER_PEER);
        self.provided.addrs = addrs;
    }

    /// When the provided keys are next checked for a re-announcement.
    pub(super) fn next_reprovide(&self) -> Option<Instant> {
        if self.provided.keys.is_empty() && self.provided.resumed {
            return None;
        }
        if self.provided.backlog && self.reproviding.len() < MAX_REPROVIDE_QUERIES {
            return self.provided.last_check;
        }
        let every = self.config.timing.provide_interval / REPROVIDE_CHECKS_PER_INTERVAL;
        // The first check comes a moment after the start, once the node has had a chance to join.
        let first = self.clock.now + REPROVIDE_RETRY.min(every);
        Some(self.provided.last_check.map_or(first, |t| t + every))
    }

    /// Re-announces the keys whose announcement is a provide interval old, a few at a time; after
    /// a restart, first takes in the keys this node's store lists it as providing.
    pub(super) fn reprovide(&mut self, cx: &mut Cx) {
        if self.next_reprovide().is_none_or(|at| cx.now < at) {
            return;
        }
        self.provided.last_check = Some(cx.now);
        self.provided.backlog = false;
        if self.routing.is_empty() {
            let every = self.config.timing.provide_interval / REPROVIDE_CHECKS_PER_INTERVAL;
            let retry = REPROVIDE_RETRY.min(every);
            self.provided.last_check = Some(cx.now.checked_sub(every - retry).unwrap_or(cx.now));
            return;
        }
        if !self.provided.resumed {
            self.provided.resumed = true;
            let interval = self.config.timing.provide_interval;
            let due = cx.now.checked_sub(interval).unwrap_or(cx.now);
            for key in self.records.provided_by(&self.local) {
                if self.provided.keys.len() >= MAX_PROVIDED_KEYS {
                    break;
                }
                self.provided.keys.entry(key).or_insert(due);
            }
        }
        let interval = self.config.timing.provide_interval;
        let room = MAX_REPROVIDE_QUERIES.saturating_sub(self.reproviding.len());
        // The longest unannounced first: they are the nearest to expiring on their holders.
        let mut due: Vec<(Instant, RecordKey)> = self
            .provided
            .keys
            .iter()
            .filter(|(_, last)| cx.now.saturating_duration_since(**last) >= interval)
            .map(|(k, last)| (*last, k.clone()))
            .collect();
        due.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_ref().cmp(b.1.as_ref())));
        self.provided.backlog = due.len() > room;
        let due: Vec<RecordKey> = due.into_iter().take(room).map(|(_, k)| k).collect();
        for key in due {
            self.provided.keys.insert(key.clone(), cx.now);
            self.provide_here(key.clone(), cx.now);
            let id = self.start(key.to_vec(), self.provide_purpose(), cx);
            self.reproviding.insert(id);
        }
    }
}
