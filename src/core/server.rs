//! Answers to inbound Kademlia requests, from this node's own routing table and store. A
//! PUT_VALUE is acknowledged (its record echoed, as the kad protocol has it) only when admission
//! kept the record, so a peer's count of acknowledgements is a count of copies really held.
//! Provider records are kept in a bounded store that refuses rather than evicts (a peer announces
//! only itself).

use std::time::Instant;

use dht_behaviours::config::MAX_ADDRS_PER_PEER;
use dht_behaviours::kad_wire::{KadRequest, KadResponse, MessageKind, WirePeer};
use dht_behaviours::point;
use libp2p::PeerId;
use libp2p::kad::{KBucketKey, RecordKey};

use super::Core;
use super::budget::{From, host_key};
use super::context::Cx;
use super::events::{Action, InboundId};
use super::records::{Admitted, Records, Refusal, Sender, Source};
use super::routing::RoutingTable;
use super::vetting::vetted_providers;

/// What serving one request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Served {
    /// Answer with this.
    Answer(KadResponse),
    /// A PUT_VALUE kept (or already held): answer with the echo.
    Kept(Admitted, KadResponse),
    /// A PUT_VALUE refused: no acknowledgement goes back.
    Refused(Refusal),
    /// A request that takes no answer (ADD_PROVIDER), with the providers kept.
    Silent(usize),
}

/// The `k` peers of `table` closest to `key`, the requester left out.
fn closer(table: &RoutingTable, key: &[u8], requester: &PeerId, k: usize) -> Vec<WirePeer> {
    table
        .closest_to(point::of_key(key), k + 1)
        .into_iter()
        .filter(|e| e.peer() != requester)
        .take(k)
        .map(|e| WirePeer {
            peer: *e.peer(),
            addrs: e.addrs.clone(),
        })
        .collect()
}

/// Serves `request` from `peer` at `now`.
/// `k` is the number of closer peers an answer names; `replication` the replication factor,
/// which tells a fellow holder's PUT (see [`Sender::holder`]).
pub fn serve(
    table: &RoutingTable,
    records: &mut Records,
    from: &From,
    request: KadRequest,
    (k, replication): (usize, usize),
    now: Instant,
) -> Served {
    let peer = from.peer;
    match request {
        KadRequest::FindNode { key } => Served::Answer(KadResponse {
            closer: closer(table, &key, &peer, k),
            ..KadResponse::to(MessageKind::FindNode)
        }),
        KadRequest::GetValue { key } => {
            // The record if held, and the closer peers either way, as every kad server answers.
            let record = records.get(&RecordKey::new(&key), now).cloned();
            Served::Answer(KadResponse {
                record,
                closer: closer(table, &key, &peer, k),
                ..KadResponse::to(MessageKind::GetValue)
            })
        }
        KadRequest::PutValue { record } => {
            let echo = record.clone();
            let sender = Sender {
                host: from.host.map(host_key),
                holder: table.both_among_closest(
                    &KBucketKey::new(record.key.to_vec()),
                    &peer,
                    replication,
                ),
            };
            match records.admit_from(Source::Peer(peer), sender, record, now) {
                Ok(admitted) => Served::Kept(
                    admitted,
                    KadResponse {
                        record: Some(echo),
                        ..KadResponse::to(MessageKind::PutValue)
                    },
                ),
                Err(refusal) => Served::Refused(refusal),
            }
        }
        KadRequest::GetProviders { key } => {
            let providers = records
                .providers(&RecordKey::new(&key), now)
                .map(|p| WirePeer {
                    peer: p.provider,
                    addrs: p.addresses,
                })
                .collect();
            Served::Answer(KadResponse {
                providers,
                closer: closer(table, &key, &peer, k),
                ..KadResponse::to(MessageKind::GetProviders)
            })
        }
        KadRequest::AddProvider { key, providers } => {
            let key = RecordKey::new(&key);
            let mut kept = 0;
            // A peer may announce itself only. A refusal (a full key or store) is not counted:
            // the store never evicts another provider to make room.
            let own: Vec<WirePeer> = providers.into_iter().filter(|p| p.peer == peer).collect();
            for mut p in vetted_providers(own, from.same_host) {
                p.addrs.truncate(MAX_ADDRS_PER_PEER);
                if records
                    .add_provider(key.clone(), p.peer, p.addrs, from.host.map(host_key), now)
                    .is_ok()
                {
                    kept += 1;
                }
            }
            Served::Silent(kept)
        }
        KadRequest::Ping => Served::Answer(KadResponse::to(MessageKind::Ping)),
    }
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn serve(
        &mut self,
        from: From,
        id: InboundId,
        request: KadRequest,
        serving: bool,
        cx: &mut Cx,
    ) {
        let peer = from.peer;
        // A blocked peer's requests go unanswered, whatever reached us (the transport refuses
        // its connections too, but one may have been open when it was blocked).
        if !self.config.serving || self.is_blocked(&peer) {
            cx.out.push(Action::Answer { id, response: None });
            return;
        }
        // Each peer gets its share of this node, not the node: beyond its rate its requests are
        // refused (the stream reset), at the cost of a map lookup.
        // And each host its share, however many identities it runs: the host's budget is
        // charged only for requests within their peer's.
        if !self.budget.take(&from, cx.now) {
            self.stats.throttled += 1;
            cx.out.push(Action::Answer { id, response: None });
            return;
        }
        self.stats.served += 1;
        // As go-libp2p-kad-dht answers: a bucket's worth of closer peers, whatever the replication
        // factor, so that a small k does not starve the asker's routing table.
        let k = self.config.bucket_size();
        let sizes = (k, self.config.k);
        let served = serve(
            &self.routing,
            &mut self.records,
            &from,
            request,
            sizes,
            cx.now,
        );
        let response = match served {
            Served::Answer(r) => Some(r),
            Served::Kept(admitted, r) => {
                self.stats.puts_kept += 1;
                if admitted == Admitted::New
                    && let Some(record) = &r.record
                {
                    cx.kept.push((record.key.clone(), Some(peer)));
                }
                Some(r)
            }
            Served::Refused(refusal) => {
                self.refused(peer, refusal, cx);
                None
            }
            Served::Silent(_) => None,
        };
        cx.out.push(Action::Answer { id, response });
        if serving {
            self.seen(peer, Vec::new(), cx);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    use dht_behaviours::ProtocolConfig;
    use dht_behaviours::store::StoreLimits;

    use super::*;
    use crate::core::budget::{SERVE_BURST_PER_HOST, SERVE_RATE_PER_HOST};
    use crate::core::{CoreConfig, Input};

    /// Inbound requests answered among `actions`.
    pub(in crate::core) fn answered(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Answer {
                        response: Some(_),
                        ..
                    }
                )
            })
            .count()
    }

    #[test]
    fn a_host_running_many_identities_gets_four_peers_worth_and_other_hosts_are_served() {
        let t0 = Instant::now();
        let config = CoreConfig::new(&ProtocolConfig::default(), StoreLimits::default(), 7);
        let mut core = Core::fresh(config, t0);
        let crowd_host = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
        let other_host = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)));
        // Sixteen identities behind one address (the most connections one IP may hold), each
        // within its own peer budget: together four times a peer's rate.
        let crowd: Vec<PeerId> = (0..16).map(|_| PeerId::random()).collect();
        let honest = PeerId::random();
        let local = PeerId::random();
        let request = |i: u64| KadRequest::FindNode {
            key: i.to_be_bytes().to_vec(),
        };
        let (mut crowd_answered, mut honest_answered, mut local_answered) = (0, 0, 0);
        let mut id = 0;
        for tick in 0..1_000u64 {
            let at = t0 + Duration::from_millis(tick); // one second
            for peer in &crowd {
                // 3 a millisecond each: 3,000 a second, over a peer's 2,000 sustained but
                // within its burst of 4,000 for this second.
                for _ in 0..3 {
                    id += 1;
                    let input = Input::Request {
                        peer: *peer,
                        id,
                        request: request(id),
                        serving: true,
                        host: crowd_host,
                        same_host: false,
                    };
                    crowd_answered += answered(&core.handle(input, at));
                }
            }
            if tick % 10 == 0 {
                for (peer, host, count) in [
                    (honest, other_host, &mut honest_answered),
                    // A peer on loopback in a local network has no host budget.
                    (local, None, &mut local_answered),
                ] {
                    id += 1;
                    let input = Input::Request {
                        peer,
                        id,
                        request: request(id),
                        serving: true,
                        host,
                        same_host: false,
                    };
                    *count += answered(&core.handle(input, at));
                }
            }
        }
        let share = (SERVE_BURST_PER_HOST + SERVE_RATE_PER_HOST) as usize;
        assert!(
            crowd_answered <= share,
            "{crowd_answered} of 48,000 answered; the host's share is {share}"
        );
        assert!(crowd_answered >= SERVE_BURST_PER_HOST as usize);
        assert_eq!(honest_answered, 100, "another host is served in full");
        assert_eq!(local_answered, 100, "loopback peers are not pooled");
    }
}
