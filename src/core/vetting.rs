//! The addresses a peer gives, its own or other peers' in an answer, as this node keeps them:
//! dialable ones only, loopback ones only from a peer on this host (whose loopback is ours), at
//! most [`MAX_ADDRS_PER_PEER`] a peer, each ending in its `/p2p/<id>` once; providers' kept bare,
//! their id beside them, as other implementations expect. Whether a peer is on this host is a
//! fact of its connection, which the driver gives with the input.

use dht_behaviours::behaviour::vetted_addrs;
use dht_behaviours::kad_wire::WirePeer;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

#[cfg(doc)]
use dht_behaviours::config::MAX_ADDRS_PER_PEER;

/// `peer`'s addresses `addrs`, vetted (`same_host`: the peer that gave them is on this host).
pub fn vetted(peer: PeerId, addrs: &[Multiaddr], same_host: bool) -> Vec<Multiaddr> {
    vetted_addrs(peer, addrs, same_host).collect()
}

/// The peers an answer names, each with its addresses vetted.
pub fn vetted_peers(peers: Vec<WirePeer>, same_host: bool) -> Vec<WirePeer> {
    peers
        .into_iter()
        .map(|p| WirePeer {
            addrs: vetted(p.peer, &p.addrs, same_host),
            peer: p.peer,
        })
        .collect()
}

/// Providers (announced, or named in an answer) with their addresses vetted, kept bare.
pub fn vetted_providers(providers: Vec<WirePeer>, same_host: bool) -> Vec<WirePeer> {
    vetted_peers(providers, same_host)
        .into_iter()
        .map(|mut p| {
            p.addrs = p.addrs.iter().map(without_p2p).collect();
            p
        })
        .collect()
}

/// `addr` without its `/p2p/<id>` part.
pub fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use dht_behaviours::kad_wire::{KadResponse, MessageKind};

    use super::super::throttle_tests::core_with_peers;
    use super::super::{Action, Input};
    use super::*;

    /// The core vets the peers an answer names: a far peer's answer loses their loopback
    /// addresses, an answer from this host keeps them. (Failed before: the driver vetted, and
    /// the core took any address it was given.)
    #[test]
    fn an_answer_from_afar_loses_the_loopback_addresses_it_names() {
        for same_host in [false, true] {
            let now = Instant::now();
            let (mut core, _) = core_with_peers(3, now);
            let named = PeerId::random();
            // The lookup is for the named peer's own id: it is the closest candidate, asked next.
            let lookup = Input::Closest {
                op: 1,
                key: named.to_bytes(),
            };
            let sent = core.handle(lookup, now);
            let first = sent
                .iter()
                .find_map(|a| match a {
                    Action::Send(o) => Some(o.id),
                    _ => None,
                })
                .expect("the lookup asks a peer");
            let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/4100".parse().expect("addr");
            let public: Multiaddr = "/ip4/203.0.113.9/tcp/4100".parse().expect("addr");
            let mut response = KadResponse::to(MessageKind::FindNode);
            response.closer = vec![WirePeer {
                peer: named,
                addrs: vec![loopback, public],
            }];
            let input = Input::Response {
                id: first,
                response,
                same_host,
            };
            let next = core.handle(input, now);
            let addrs = next
                .iter()
                .find_map(|a| match a {
                    Action::Send(o) if o.peer == named => Some(o.addrs.clone()),
                    _ => None,
                })
                .expect("the named peer is asked next");
            let expected = if same_host { 2 } else { 1 };
            assert_eq!(addrs.len(), expected, "same host: {same_host}: {addrs:?}");
            assert!(addrs.iter().any(|a| a.to_string().contains("203.0.113.9")));
        }
    }

    #[test]
    fn loopback_addresses_are_kept_only_from_a_peer_on_this_host() {
        let peer = PeerId::random();
        let addrs: Vec<Multiaddr> = ["/ip4/127.0.0.1/tcp/4001", "/ip4/203.0.113.5/tcp/4001"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        let far = vetted(peer, &addrs, false);
        assert_eq!(far.len(), 1);
        assert!(
            far[0]
                .to_string()
                .starts_with("/ip4/203.0.113.5/tcp/4001/p2p/")
        );
        assert_eq!(vetted(peer, &addrs, true).len(), 2);
        let providers = vetted_providers(
            vec![WirePeer {
                peer,
                addrs: addrs.clone(),
            }],
            false,
        );
        assert_eq!(
            providers[0].addrs,
            vec![addrs[1].clone()],
            "bare, as announced"
        );
    }
}
