//! Address groups: the network one operator is likely to control, for bounds on how many peers of
//! one network a routing table or a lookup takes (as go-libp2p-kad-dht's diversity filter does).
//!
//! A peer's group is the network of the first public IP address it listens on: the /16 of an
//! IPv4 address, the /32 of an IPv6 one. Peers with no public address (loopback, private,
//! link-local, shared CGNAT ranges, DNS names, or none known) are in no group and never bounded,
//! so a local network on 127.0.0.1 or a LAN keeps working.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// A network that one operator is likely to control: an IPv4 /16 or an IPv6 /32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// The first two octets of an IPv4 address.
    V4([u8; 2]),
    /// The first four octets of an IPv6 address.
    V6([u8; 4]),
}

fn public_v4(ip: &Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    // 100.64.0.0/10: carrier-grade NAT, many unrelated users behind few addresses.
    let shared = a == 100 && (64..128).contains(&b);
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || shared)
}

fn public_v6(ip: &Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || unique_local || link_local)
}

/// The group of an IP address, or `None` when it is not public.
pub fn group_of_ip(ip: IpAddr) -> Option<Group> {
    match ip {
        IpAddr::V4(v4) if public_v4(&v4) => {
            let [a, b, ..] = v4.octets();
            Some(Group::V4([a, b]))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return group_of_ip(IpAddr::V4(v4));
            }
            if !public_v6(&v6) {
                return None;
            }
            let o = v6.octets();
            Some(Group::V6([o[0], o[1], o[2], o[3]]))
        }
        IpAddr::V4(_) => None,
    }
}

/// The group of the first public IP address among `addrs`.
pub fn group_of(addrs: &[Multiaddr]) -> Option<Group> {
    addrs.iter().find_map(|a| {
        a.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => group_of_ip(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => group_of_ip(IpAddr::V6(ip)),
            _ => None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Vec<Multiaddr> {
        vec![s.parse().expect("multiaddr")]
    }

    #[test]
    fn public_addresses_are_grouped_by_network_and_local_ones_not_at_all() {
        assert_eq!(
            group_of(&addr("/ip4/203.0.113.7/tcp/1")),
            None,
            "documentation range"
        );
        assert_eq!(
            group_of(&addr("/ip4/8.8.4.4/tcp/1")),
            group_of(&addr("/ip4/8.8.200.1/tcp/2"))
        );
        assert_ne!(
            group_of(&addr("/ip4/8.8.4.4/tcp/1")),
            group_of(&addr("/ip4/8.9.4.4/tcp/1"))
        );
        assert_eq!(
            group_of(&addr("/ip6/2a01:4f8:1::1/tcp/1")),
            Some(Group::V6([0x2a, 0x01, 0x04, 0xf8]))
        );
        for local in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/192.168.1.1/tcp/1",
            "/ip4/172.20.0.2/tcp/1",
            "/ip4/169.254.0.1/tcp/1",
            "/ip4/100.64.1.1/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/dns4/example.com/tcp/1",
        ] {
            assert_eq!(group_of(&addr(local)), None, "{local}");
        }
        // The first public address decides.
        let mixed = vec![
            "/ip4/127.0.0.1/tcp/1".parse().expect("addr"),
            "/ip4/8.8.4.4/tcp/1".parse().expect("addr"),
        ];
        assert_eq!(group_of(&mixed), Some(Group::V4([8, 8])));
        assert_eq!(group_of(&[]), None);
    }
}
