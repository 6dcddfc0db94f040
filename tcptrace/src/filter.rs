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

use std::collections::HashSet;
use std::fs;
use std::net::IpAddr;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::str::FromStr;

use clap::Args;
use tcptrace_common::{self as wire, FILTER_MAX};

use crate::{
    conn::{Conn, canonical_ip},
    seed,
};

/// The filter flags, shared by every tracing command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
#[command(next_help_heading = "Filters (in the kernel; repeat a flag to OR, combine flags to AND)")]
pub struct FilterArgs {
    /// Only connections with this port at either end.
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub port: Vec<u16>,
    /// Only connections with this local port.
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub lport: Vec<u16>,
    /// Only connections with this remote port.
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub rport: Vec<u16>,
    /// Only connections whose remote address is in this CIDR (10.0.0.0/8, ::1, fd00::/8; a
    /// bare address is one host). IPv4 CIDRs also match IPv4-mapped IPv6 peers.
    #[arg(long, value_name = "CIDR", value_parser = Cidr::from_str)]
    pub addr: Vec<Cidr>,
    /// Only connections owned by this process: the one that called connect() or accept().
    #[arg(long, value_name = "PID", value_parser = parse_pid)]
    pub pid: Vec<u32>,
    /// Only connections in this network namespace: its inode (as `lsns -t net` prints it)
    /// or a path (/run/netns/NAME, /proc/PID/ns/net).
    #[arg(long, value_name = "INODE|PATH", value_parser = parse_netns)]
    pub netns: Vec<u32>,
    /// Only connections whose socket belongs to this cgroup v2 directory (exactly, not its
    /// children), e.g. /sys/fs/cgroup/system.slice/nginx.service.
    #[arg(long, value_name = "PATH", value_parser = parse_cgroup)]
    pub cgroup: Vec<u64>,
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

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(u16::try_from(p).expect("in range")),
        Ok(_) => Err("a port must be 1 to 65535".into()),
        Err(_) => Err("not a port number (1 to 65535)".into()),
    }
}

fn parse_pid(s: &str) -> Result<u32, String> {
    let pid: u32 = s.parse().ok().filter(|&p| p > 0).ok_or("not a process id")?;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!("no process {pid} is running"));
    }
    Ok(pid)
}

/// `CLONE_NEWNET`, as `NS_GET_NSTYPE` answers for a network namespace.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

fn parse_netns(s: &str) -> Result<u32, String> {
    if let Ok(inode) = s.parse::<u32>() {
        return if inode == 0 { Err("0 is not a namespace inode".into()) } else { Ok(inode) };
    }
    let file = fs::File::open(s).map_err(|e| {
        format!("cannot open {s}: {e} (give an inode number, /run/netns/NAME or /proc/PID/ns/net)")
    })?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the file's namespace type.
    let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if nstype != libc::CLONE_NEWNET {
        return Err(format!(
            "{s} is not a network namespace (give an inode number, /run/netns/NAME or /proc/PID/ns/net)"
        ));
    }
    let meta = file.metadata().map_err(|e| format!("cannot stat {s}: {e}"))?;
    u32::try_from(meta.ino()).map_err(|_| format!("{s}: namespace inode exceeds 32 bits"))
}

/// A cgroup v2 directory's inode number is its cgroup id (kernfs uses the id as inode).
fn parse_cgroup(s: &str) -> Result<u64, String> {
    let meta = fs::metadata(s).map_err(|e| format!("cannot read {s}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("{s} is not a directory (give a cgroup v2 directory)"));
    }
    let fs = nix::sys::statfs::statfs(s).map_err(|e| format!("cannot statfs {s}: {e}"))?;
    if fs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        return Err(format!(
            "{s} is not in a cgroup v2 hierarchy (find it with `mount -t cgroup2`)"
        ));
    }
    Ok(meta.ino())
}

impl FilterArgs {
    /// Whether nothing is filtered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The filter as the programs read it; more values of one flag than the in-kernel
    /// arrays hold is a usage error.
    pub fn to_wire(&self) -> Result<wire::Filter, clap::Error> {
        fn fill<T: Copy, W: Copy + Default>(
            flag: &str,
            values: &[T],
            slots: &mut [W; FILTER_MAX],
            convert: impl Fn(T) -> W,
        ) -> Result<u32, clap::Error> {
            if values.len() > FILTER_MAX {
                return Err(clap::Error::raw(
                    clap::error::ErrorKind::TooManyValues,
                    format!(
                        "--{flag} was given {} times; the in-kernel filter holds at most {FILTER_MAX}: use a CIDR or split the run\n",
                        values.len()
                    ),
                ));
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

    /// The kernel's live connections that pass the filter, in every network namespace: what
    /// the ledger is seeded with and reconciled against.
    pub fn snapshot(&self) -> anyhow::Result<seed::Snapshot> {
        if self.pid.is_empty() && self.cgroup.is_empty() {
            let mut snapshot = seed::snapshot()?;
            if !self.is_empty() {
                snapshot.conns.retain(|c| self.matches_conn(c));
            }
            return Ok(snapshot);
        }
        // Taken before the dump: a socket opened in between has its own event.
        let held = self.held_sockets();
        let found = seed::in_every_netns(seed::dump_live)?;
        let namespaces = found.results.iter().map(|&(netns, _)| netns).collect();
        let conns = found
            .results
            .into_iter()
            .flat_map(|(_, sockets)| sockets)
            .filter(|s| self.matches_socket(s, &held))
            .map(|s| s.conn)
            .collect();
        Ok(seed::Snapshot { conns, namespaces, skipped: found.skipped })
    }

    /// The socket inodes the `--pid` processes hold open, for [`matches_socket`]; empty
    /// (and not looked up) without `--pid`.
    ///
    /// [`matches_socket`]: Self::matches_socket
    #[must_use]
    pub fn held_sockets(&self) -> HashSet<u32> {
        socket_inodes_of(&self.pid)
    }

    /// Whether a socket of a sock_diag dump passes every filter; `held` is
    /// [`held_sockets`](Self::held_sockets). A listener's remote end is `0.0.0.0:0`, so
    /// `--rport` and `--addr` never pass one.
    #[must_use]
    pub fn matches_socket(&self, s: &seed::TcpSocket, held: &HashSet<u32>) -> bool {
        self.matches_conn(&s.conn)
            && (self.cgroup.is_empty() || self.cgroup.contains(&s.cgroup))
            && (self.pid.is_empty() || held.contains(&s.inode))
    }
}

/// The socket inodes the processes `pids` hold open (`/proc/PID/fd/N -> socket:[INODE]`).
fn socket_inodes_of(pids: &[u32]) -> HashSet<u32> {
    let mut inodes = HashSet::new();
    for pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else { continue };
            let inode: Option<u32> = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok());
            inodes.extend(inode);
        }
    }
    inodes
}

/// `INET_DIAG_CGROUP_ID` (attribute 21, a u64) from the attributes of one sock_diag
/// record; 0 when absent (kernels before 5.9, or without `CONFIG_SOCK_CGROUP_DATA`).
#[must_use]
pub fn cgroup_id_attr(mut attrs: &[u8]) -> u64 {
    const INET_DIAG_CGROUP_ID: u16 = 21;
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        if kind == INET_DIAG_CGROUP_ID && len >= 12 {
            return u64::from_ne_bytes(attrs[4..12].try_into().expect("8 bytes"));
        }
        attrs = attrs.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    0
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        filter: FilterArgs,
    }

    fn parse(args: &[&str]) -> Result<FilterArgs, String> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map(|c| c.filter)
            .map_err(|e| e.to_string())
    }

    fn conn(netns: u32, local: &str, remote: &str) -> Conn {
        Conn::new(netns, local.parse().unwrap(), remote.parse().unwrap())
    }

    #[test]
    fn ports_are_checked() {
        assert_eq!(parse(&["--port", "80", "--port", "443"]).unwrap().port, [80, 443]);
        for bad in ["0", "65536", "99999", "http"] {
            let err = parse(&["--lport", bad]).unwrap_err();
            assert!(err.contains("--lport") && err.contains("1 to 65535"), "{err}");
        }
    }

    #[test]
    fn cidrs_parse_and_match_both_families() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped peer");
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let host: Cidr = "::1".parse().unwrap();
        assert_eq!(host.prefix, 128);
        assert!(host.contains("::1".parse().unwrap()) && !host.contains("::2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0/8", "host", "10.0.0.0/x"] {
            let err = parse(&["--addr", bad]).unwrap_err();
            assert!(err.contains("--addr") && err.contains("CIDR"), "{bad}: {err}");
        }
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
    fn netns_takes_an_inode_or_a_namespace_file() {
        assert_eq!(parse(&["--netns", "4026531840"]).unwrap().netns, [4_026_531_840]);
        let own = fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(u64::from(parse(&["--netns", "/proc/self/ns/net"]).unwrap().netns[0]), own);
        let err = parse(&["--netns", "/run/netns/no-such-namespace"]).unwrap_err();
        assert!(err.contains("cannot open"), "{err}");
        let err = parse(&["--netns", "/proc/self/ns/uts"]).unwrap_err();
        assert!(err.contains("not a network namespace"), "{err}");
        assert!(parse(&["--netns", "0"]).is_err());
    }

    #[test]
    fn cgroup_must_be_a_cgroup2_directory() {
        let err = parse(&["--cgroup", "/no/such/cgroup"]).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        let err = parse(&["--cgroup", "/proc/self/fd"]).unwrap_err();
        assert!(err.contains("cgroup v2"), "{err}");
    }

    #[test]
    fn pid_must_be_running() {
        let me = std::process::id();
        assert_eq!(parse(&["--pid", &me.to_string()]).unwrap().pid, [me]);
        assert!(parse(&["--pid", "0"]).unwrap_err().contains("not a process id"));
        let err = parse(&["--pid", "4194304"]).unwrap_err();
        assert!(err.contains("no process"), "{err}");
    }

    #[test]
    fn too_many_values_for_the_kernel_arrays() {
        let many: Vec<String> = (1..=9).flat_map(|p| ["--rport".into(), p.to_string()]).collect();
        let args: Vec<&str> = many.iter().map(String::as_str).collect();
        let err = parse(&args).unwrap().to_wire().unwrap_err().to_string();
        assert!(err.contains("--rport was given 9 times"), "{err}");
        let f = parse(&args[..16]).unwrap().to_wire().unwrap();
        assert_eq!((f.n_rports, f.rports[7]), (8, 8));
    }

    #[test]
    fn one_kind_ors_kinds_and() {
        let f = parse(&["--port", "80", "--port", "443", "--addr", "10.0.0.0/8"]).unwrap();
        assert!(f.matches_conn(&conn(1, "10.0.0.1:80", "10.9.9.9:40000")));
        assert!(f.matches_conn(&conn(1, "10.0.0.1:40000", "10.9.9.9:443")), "either end");
        assert!(!f.matches_conn(&conn(1, "10.0.0.1:22", "10.9.9.9:40000")));
        assert!(!f.matches_conn(&conn(1, "10.0.0.1:80", "192.0.2.1:40000")), "remote only");
        let f = parse(&["--lport", "80", "--netns", "7"]).unwrap();
        assert!(f.matches_conn(&conn(7, "[::1]:80", "[::1]:5")));
        assert!(!f.matches_conn(&conn(8, "[::1]:80", "[::1]:5")));
        assert!(!f.matches_conn(&conn(7, "[::1]:5", "[::1]:80")), "--lport is local only");
        assert!(FilterArgs::default().matches_conn(&conn(1, "[::1]:5", "[::1]:80")));
    }

    #[test]
    fn cgroup_id_attribute_is_found_among_others() {
        let mut attrs = Vec::new();
        // INET_DIAG_MARK (15): u32, then INET_DIAG_CGROUP_ID (21): u64.
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&15u16.to_ne_bytes());
        attrs.extend_from_slice(&7u32.to_ne_bytes());
        attrs.extend_from_slice(&12u16.to_ne_bytes());
        attrs.extend_from_slice(&21u16.to_ne_bytes());
        attrs.extend_from_slice(&4242u64.to_ne_bytes());
        assert_eq!(cgroup_id_attr(&attrs), 4242);
        assert_eq!(cgroup_id_attr(&attrs[..8]), 0);
        assert_eq!(cgroup_id_attr(&[1, 0]), 0);
    }
}
