//! The options every tracing command shares: the attach path, the run's length and pace,
//! the ring size, and the filters, with the value parsers that check them. Each command's
//! own options are in its file; [`TraceArgs::options`] turns these into the engine's.

use std::fs;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
use tcptrace_common::{
    DEFAULT_RING_BYTES,
    attach::{REQUESTS, Request},
};

use crate::{
    engine,
    filter::{Cidr, Filter},
};

/// Options every tracing command takes.
#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Kernel attach path. `auto` tries fentry, kprobe, then the tracepoint, and says why it
    /// passed over the others.
    #[arg(long, default_value = "auto", env = "TCPTRACE_ATTACH", value_parser = attach_request())]
    pub attach: &'static Request,
    /// Stop by itself after this long (e.g. 30s, 5m); runs until Ctrl-C when not given.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How often to print (watch), refresh the metrics (serve) or check for lost events
    /// (events), e.g. 500ms, 2s.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Size of the ring buffer in bytes: a power of two multiple of the page size. Raise it
    /// if events are lost in connection storms.
    #[arg(long, default_value_t = DEFAULT_RING_BYTES, value_name = "BYTES")]
    pub ring_size: u32,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `--attach`: one of the requests of the attach-path table, with its help line.
fn attach_request() -> impl clap::builder::TypedValueParser<Value = &'static Request> {
    PossibleValuesParser::new(REQUESTS.map(|r| PossibleValue::new(r.name).help(r.help)))
        .map(|name| Request::named(&name).expect("a possible value names a request"))
}

impl TraceArgs {
    /// The engine's options: these, and the command's reconciliation pace (`0s`: only at
    /// the end). Too many values of one filter flag for the in-kernel arrays is a usage
    /// error, reported as clap reports one (exit 2).
    #[must_use]
    pub fn options(&self, reconcile_every: Duration) -> engine::Options {
        let filter = Filter::from(self.filter.clone());
        if let Err(e) = filter.to_wire() {
            clap::Error::raw(clap::error::ErrorKind::TooManyValues, format!("{e}\n")).exit();
        }
        engine::Options {
            request: self.attach,
            ring_bytes: self.ring_size,
            duration: self.duration,
            interval: self.interval,
            reconcile_every,
            reconcile_on_stop: true,
            filter,
            details: false,
        }
    }
}

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

impl From<FilterArgs> for Filter {
    fn from(a: FilterArgs) -> Self {
        let FilterArgs { port, lport, rport, addr, pid, netns, cgroup } = a;
        Self { port, lport, rport, addr, pid, netns, cgroup }
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 5m)"))
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err("the interval must be at least 10ms".into());
    }
    Ok(d)
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use clap::Parser;

    use super::*;
    use crate::conn::Conn;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        filter: FilterArgs,
    }

    fn parse(args: &[&str]) -> Result<Filter, String> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map(|c| c.filter.into())
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
        assert!(Filter::default().matches_conn(&conn(1, "[::1]:5", "[::1]:80")));
    }
}
