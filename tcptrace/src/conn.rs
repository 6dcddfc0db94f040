//! A live TCP connection as the ledger keys it: its 4-tuple inside one network namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One established TCP connection seen from this host: the kernel keeps at most one live
/// socket per 4-tuple in a network namespace, so this is a unique key. Both ends of a
/// loopback connection are on this host and appear as two `Conn`s with local and remote
/// swapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conn {
    /// Inode number of the network namespace; [`NETNS_UNKNOWN`] when the programs could not
    /// read it.
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// The namespace events carry when the programs cannot read namespace ids (no kernel
/// BTF): every namespace is then one to the hooks. The sock_diag side keys its connections
/// the same way to match them ([`Conn::as_events_key_them`]), and a lookup by an event's
/// namespace matches any namespace.
pub const NETNS_UNKNOWN: u32 = 0;

/// A namespace as the hooks' events name it: itself, or [`NETNS_UNKNOWN`] when they cannot
/// read namespace ids.
#[must_use]
pub fn events_netns(netns: u32, knows_netns: bool) -> u32 {
    if knows_netns { netns } else { NETNS_UNKNOWN }
}

/// What events counted for a connection in `netns`: under its own id, plus under
/// [`NETNS_UNKNOWN`], since an event without a namespace id may be from any namespace.
#[must_use]
pub fn counted_in(netns: u32, count: impl Fn(u32) -> u64) -> u64 {
    let unknown = if netns == NETNS_UNKNOWN { 0 } else { count(NETNS_UNKNOWN) };
    count(netns) + unknown
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, an IPv4 peer on a dual-stack socket) are
/// reported as the IPv4 address they carry, as `ss` users expect.
#[must_use]
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Builds an address from the kernel's 16-byte field: the first 4 bytes for IPv4.
#[must_use]
pub fn ip_from_bytes(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == tcptrace_common::AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        canonical_ip(IpAddr::V6(Ipv6Addr::from(*bytes)))
    }
}

impl Conn {
    #[must_use]
    pub fn new(netns: u32, local: SocketAddr, remote: SocketAddr) -> Self {
        Self {
            netns,
            local: SocketAddr::new(canonical_ip(local.ip()), local.port()),
            remote: SocketAddr::new(canonical_ip(remote.ip()), remote.port()),
        }
    }

    /// The connection as the hooks' events name it: its own namespace, or
    /// [`NETNS_UNKNOWN`] when they cannot read namespace ids.
    #[must_use]
    pub fn as_events_key_them(self, knows_netns: bool) -> Self {
        Self { netns: events_netns(self.netns, knows_netns), ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv6_is_reported_as_ipv4() {
        let mapped: IpAddr = "::ffff:127.0.0.5".parse().unwrap();
        assert_eq!(canonical_ip(mapped), "127.0.0.5".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(canonical_ip(v6), v6);
    }

    #[test]
    fn kernel_bytes_decode_per_family() {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[127, 0, 0, 9]);
        assert_eq!(ip_from_bytes(2, &b), "127.0.0.9".parse::<IpAddr>().unwrap());
        let v6: Ipv6Addr = "::1".parse().unwrap();
        assert_eq!(ip_from_bytes(10, &v6.octets()), IpAddr::V6(v6));
    }
}
