//! Which connections to report: `--port`, `--lport`, `--rport`, `--addr`, `--pid`,
//! `--netns`, `--cgroup`.
//!
//! The filter runs twice, with the same meaning: in the BPF programs, before an event is
//! written to the ring (so a filtered-out connection costs no ring space, only a per-CPU
//! counter, `filtered`), and here over the sock_diag snapshots that seed and reconcile the
//! ledger (so a filtered run starts exact and its drift stays 0).
//!
//! Values of one flag are ORed, different flags are ANDed. `--port` matches either end,
//! `--addr` the remote end. `--pid` matches the process that owns the socket: the one that
//! called `connect()` or `accept()` (in the kernel) or holds the socket open (in
//! `/proc/PID/fd`, for sock_diag). `--cgroup` matches the cgroup v2 the socket belongs to:
//! where it was created (an accepted socket inherits its listener's), as the kernel records
//! it in the socket and sock_diag reports it.

use std::net::IpAddr;
use std::str::FromStr;

use tcptrace_common::{self as wire, FILTER_MAX};

use crate::conn::{Conn, canonical_ip};

/// What to report: each list empty means "any". The command line's `--port`, `--lport`,
/// `--rport`, `--addr`, `--pid`, `--netns` and `--cgroup` fill it (`cmd::args`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Either end's port.
    pub port: Vec<u16>,
    pub lport: Vec<u16>,
    pub rport: Vec<u16>,
    /// The remote address.
    pub addr: Vec<Cidr>,
    /// The process (tgid) that owns the socket.
    pub pid: Vec<u32>,
    /// Network namespace inodes.
    pub netns: Vec<u32>,
    /// cgroup v2 ids (the cgroup directory's inode).
    pub cgroup: Vec<u64>,
}

/// A filter with more values of one kind than the in-kernel arrays hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--{flag} was given {given} times; the in-kernel filter holds at most {FILTER_MAX}: use a CIDR or split the run"
)]
pub struct TooManyValues {
    pub flag: &'static str,
    pub given: usize,
}

/// An address prefix, IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("{why} in {s:?} (expected a CIDR like 10.0.0.0/8 or fd00::/8)");
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (s, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| bad(&format!("prefix length must be 0 to {max}")))?,
        };
        Ok(Self { ip, prefix })
    }
}

impl Cidr {
    /// As the programs compare it: IPv6 halves, IPv4 as `::ffff:a.b.c.d`/(prefix + 96).
    fn to_wire(self) -> wire::Cidr {
        let (v6, prefix) = match self.ip {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped(), u32::from(self.prefix) + 96),
            IpAddr::V6(v6) => (v6, u32::from(self.prefix)),
        };
        let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0).to_be_bytes();
        let addr = v6.octets();
        let half = |b: &[u8; 16], i: usize| {
            u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        };
        let mask = [half(&mask, 0), half(&mask, 1)];
        wire::Cidr { addr: [half(&addr, 0) & mask[0], half(&addr, 1) & mask[1]], mask }
    }

    /// Whether `ip` is inside; IPv4-mapped IPv6 addresses count as IPv4 (as in the kernel).
    #[must_use]
    pub fn contains(self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match canonical_ip(ip) {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let prefix = u32::from(self.prefix) + if self.ip.is_ipv4() { 96 } else { 0 };
        let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
        bits(ip) & mask == bits(self.ip) & mask
    }
}

impl Filter {
    /// Whether nothing is filtered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The filter as the programs read it; more values of one flag than the in-kernel
    /// arrays hold is a usage error.
    pub fn to_wire(&self) -> Result<wire::Filter, TooManyValues> {
        fn fill<T: Copy, W: Copy + Default>(
            flag: &'static str,
            values: &[T],
            slots: &mut [W; FILTER_MAX],
            convert: impl Fn(T) -> W,
        ) -> Result<u32, TooManyValues> {
            if values.len() > FILTER_MAX {
                return Err(TooManyValues { flag, given: values.len() });
            }
            for (slot, &v) in slots.iter_mut().zip(values) {
                *slot = convert(v);
            }
            Ok(u32::try_from(values.len()).expect("at most FILTER_MAX"))
        }
        let mut f = wire::Filter::default();
        f.n_ports = fill("port", &self.port, &mut f.ports, |p| p)?;
        f.n_lports = fill("lport", &self.lport, &mut f.lports, |p| p)?;
        f.n_rports = fill("rport", &self.rport, &mut f.rports, |p| p)?;
        f.n_addrs = fill("addr", &self.addr, &mut f.addrs, Cidr::to_wire)?;
        f.n_pids = fill("pid", &self.pid, &mut f.pids, |p| p)?;
        f.n_netns = fill("netns", &self.netns, &mut f.netns, |n| n)?;
        f.n_cgroups = fill("cgroup", &self.cgroup, &mut f.cgroups, |c| c)?;
        Ok(f)
    }

    /// The filters that need only the connection's 4-tuple and namespace.
    #[must_use]
    pub fn matches_conn(&self, c: &Conn) -> bool {
        let (l, r) = (c.local.port(), c.remote.port());
        (self.port.is_empty() || self.port.iter().any(|&p| p == l || p == r))
            && (self.lport.is_empty() || self.lport.contains(&l))
            && (self.rport.is_empty() || self.rport.contains(&r))
            && (self.addr.is_empty() || self.addr.iter().any(|a| a.contains(c.remote.ip())))
            && (self.netns.is_empty() || self.netns.contains(&c.netns))
    }

    /// Whether a socket of a sock_diag dump passes every filter: its connection, its
    /// cgroup id, and for `--pid` whether one of those processes holds it (`held`, asked
    /// only then). A listener's remote end is `0.0.0.0:0`, so `--rport` and `--addr` never
    /// pass one.
    #[must_use]
    pub fn matches_socket(&self, conn: &Conn, cgroup: u64, held: impl FnOnce() -> bool) -> bool {
        self.matches_conn(conn)
            && (self.cgroup.is_empty() || self.cgroup.contains(&cgroup))
            && (self.pid.is_empty() || held())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(netns: u32, local: &str, remote: &str) -> Conn {
        Conn::new(netns, local.parse().unwrap(), remote.parse().unwrap())
    }

    #[test]
    fn wire_cidr_is_masked_in_mapped_form() {
        let w = "127.0.0.0/8".parse::<Cidr>().unwrap().to_wire();
        let want_mask = (u128::MAX << 24).to_be_bytes();
        assert_eq!(w.mask[0], u64::from_ne_bytes(want_mask[..8].try_into().unwrap()));
        assert_eq!(w.mask[1], u64::from_ne_bytes(want_mask[8..].try_into().unwrap()));
        let addr = std::net::Ipv4Addr::new(127, 0, 0, 0).to_ipv6_mapped().octets();
        assert_eq!(w.addr[1], u64::from_ne_bytes(addr[8..].try_into().unwrap()));
        let w = "::/0".parse::<Cidr>().unwrap().to_wire();
        assert_eq!((w.mask, w.addr), ([0, 0], [0, 0]));
    }

    #[test]
    fn a_socket_passes_on_its_cgroup_and_its_holder() {
        let c = conn(1, "10.0.0.1:80", "10.9.9.9:40000");
        let f = Filter { cgroup: vec![42], pid: vec![7], ..Filter::default() };
        assert!(f.matches_socket(&c, 42, || true));
        assert!(!f.matches_socket(&c, 41, || true), "another cgroup");
        assert!(!f.matches_socket(&c, 42, || false), "held by none of the pids");
        let mut asked = false;
        assert!(Filter::default().matches_socket(&c, 0, || {
            asked = true;
            false
        }));
        assert!(!asked, "without --pid nobody's sockets are looked up");
    }
}
