//! The one home of tcptrace's `/proc` reading: what the kernel says of a process (CPU time,
//! resident memory, open files against `RLIMIT_NOFILE`), of a network namespace (`sockstat`,
//! `netstat`, `/proc/sys/net`) and of the box (`meminfo`, `fs/file-nr`).
//!
//! Written by hand rather than on the `procfs` crate: tcptrace reads a dozen fields, each a
//! few lines to parse, on every capacity refresh, and the parsers here allocate only the
//! file's text. Every reader returns `None` (or an empty answer) when the file is missing or
//! not in the expected shape: the caller says "not available", never a made-up number.
//!
//! Files under `/proc/thread-self/net` and `/proc/sys/net` are those of the calling
//! thread's network namespace: call them from a thread inside the namespace to be read.

use std::fs;
use std::time::Duration;

/// Which process to read: this one (`/proc/self`) or another by pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid {
    Own,
    Id(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Self::Own => "/proc/self".to_owned(),
            Self::Id(pid) => format!("/proc/{pid}"),
        }
    }
}

// ---- processes ----

/// User plus system CPU time of a process, every thread, the exited ones included
/// (`/proc/PID/stat`, in clock ticks: 10 ms on most boxes).
#[must_use]
pub fn cpu_time(pid: Pid) -> Option<Duration> {
    let stat = fs::read_to_string(format!("{}/stat", pid.dir())).ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten()?;
    let ticks = stat_cpu_ticks(&stat)?;
    Some(Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / u64::try_from(hz).ok()?))
}

/// utime + stime of `/proc/PID/stat`, in clock ticks: its 14th and 15th fields, counted
/// after the comm in parentheses (which may hold spaces and parentheses itself).
#[must_use]
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    fields.get(11)?.parse::<u64>().ok()?.checked_add(fields.get(12)?.parse::<u64>().ok()?)
}

/// A process's resident memory (`VmRSS` of `/proc/PID/status`), in bytes.
#[must_use]
pub fn rss_bytes(pid: Pid) -> Option<u64> {
    kib_field(&fs::read_to_string(format!("{}/status", pid.dir())).ok()?, "VmRSS")
}

/// The `key:   123 kB` line of a `/proc` file (`meminfo`, `status`), in bytes. A key is the
/// whole name before the colon, not a prefix of it.
#[must_use]
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .and_then(|kb| kb.checked_mul(1024))
}

/// The number after `key:` on its line of a `/proc/PID/status` (no unit).
#[must_use]
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// The first field of `/proc/PID/task/TID/schedstat`: time on the CPU, in ns (exact, unlike
/// the tick-sampled split of `/proc/PID/stat`).
#[must_use]
pub fn schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// The open fds of a process (their numbers) and what each points at
/// (`socket:[123]`, `anon_inode:bpf-prog`, a path); none if its fds cannot be read.
pub fn fd_targets(pid: Pid) -> impl Iterator<Item = (String, String)> {
    let fds = fs::read_dir(format!("{}/fd", pid.dir())).into_iter().flatten();
    fds.filter_map(Result::ok).filter_map(|fd| {
        let target = fs::read_link(fd.path()).ok()?.to_string_lossy().into_owned();
        Some((fd.file_name().to_string_lossy().into_owned(), target))
    })
}

/// How many files a process has open (the entries of `/proc/PID/fd`): what its next
/// `accept()` is checked against `RLIMIT_NOFILE` with. Lists names only, no `readlink`, so
/// it costs about a microsecond per fd.
#[must_use]
pub fn open_fds(pid: Pid) -> Option<u64> {
    Some(fs::read_dir(format!("{}/fd", pid.dir())).ok()?.count() as u64)
}

/// How many of a process's open fds have a number below `limit`: `accept()` needs a free
/// fd number below the soft `RLIMIT_NOFILE`, so these are the ones that use up the limit
/// (an fd inherited above it, from a parent with a higher limit, takes no place under it).
#[must_use]
pub fn open_fds_below(pid: Pid, limit: u64) -> Option<u64> {
    let fds = fs::read_dir(format!("{}/fd", pid.dir())).ok()?;
    let below = fds
        .filter_map(Result::ok)
        .filter(|fd| {
            fd.file_name().to_str().and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n < limit)
        })
        .count();
    Some(below as u64)
}

/// A process's soft `RLIMIT_NOFILE` (`Max open files` of `/proc/PID/limits`): the most fds
/// it may hold; `accept()` fails with `EMFILE` past it. `None` for "unlimited" or unknown.
#[must_use]
pub fn nofile_soft(pid: Pid) -> Option<u64> {
    soft_limit(&fs::read_to_string(format!("{}/limits", pid.dir())).ok()?, "Max open files")
}

/// The soft value of the `name` line of a `/proc/PID/limits` text.
#[must_use]
pub fn soft_limit(limits: &str, name: &str) -> Option<u64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(name))?;
    // A name is followed by spaces, not by more of a longer name.
    if !rest.starts_with(' ') {
        return None;
    }
    rest.split_whitespace().next()?.parse().ok()
}

// ---- the box ----

/// `MemAvailable` of `/proc/meminfo`, in bytes: what the kernel estimates it can give
/// without swapping.
#[must_use]
pub fn mem_available() -> Option<u64> {
    kib_field(&fs::read_to_string("/proc/meminfo").ok()?, "MemAvailable")
}

/// The box's open-file table (`/proc/sys/fs/file-nr`): allocated handles and the cap
/// (`fs/file-max`). Every socket is one; past the cap any `accept()` fails with `ENFILE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileTable {
    pub allocated: u64,
    pub max: u64,
}

#[must_use]
pub fn file_table() -> Option<FileTable> {
    parse_file_nr(&fs::read_to_string("/proc/sys/fs/file-nr").ok()?)
}

/// `allocated  unused(always 0 since 2.6)  max`.
#[must_use]
pub fn parse_file_nr(text: &str) -> Option<FileTable> {
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    let allocated = words.next()?.ok()?;
    let _unused = words.next()?.ok()?;
    Some(FileTable { allocated, max: words.next()?.ok()? })
}

/// The numbers of a `/proc/sys` file (`tcp_mem` holds three, most hold one); `None` if it is
/// missing (a module not loaded, an old kernel) or not numbers.
#[must_use]
pub fn sysctl(name: &str) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/sys/{name}")).ok()?;
    let numbers: Option<Vec<u64>> = text.split_whitespace().map(|w| w.parse().ok()).collect();
    numbers.filter(|n| !n.is_empty())
}

/// The one number of a `/proc/sys` file.
#[must_use]
pub fn sysctl_u64(name: &str) -> Option<u64> {
    sysctl(name)?.first().copied()
}

/// The object sizes of the slab caches `names` (`/proc/slabinfo`, root only), in the order
/// asked; `None` for a cache that is not there (merged into another, or no slabinfo).
#[must_use]
pub fn slab_object_sizes(names: &[&str]) -> Vec<Option<u64>> {
    let text = fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    names.iter().map(|name| slab_object_size(&text, name)).collect()
}

/// `name active_objs num_objs objsize ...`: the objsize of the line of cache `name`.
#[must_use]
pub fn slab_object_size(slabinfo: &str, name: &str) -> Option<u64> {
    let mut words = slabinfo
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut words| (words.next() == Some(name)).then_some(words))?;
    words.nth(2)?.parse().ok()
}

// ---- a network namespace ----

/// The `TCP:` line of the calling thread's namespace's `sockstat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSockstat {
    /// Sockets in the hash tables (listening or connected; not `TIME_WAIT`).
    pub inuse: u64,
    /// Sockets no process holds any more, still sending (after `close()` with data left).
    pub orphan: u64,
    /// Timewait sockets, both families.
    pub tw: u64,
    /// Every TCP socket allocated, both families.
    pub alloc: u64,
    /// Pages of memory TCP buffers hold, box-wide (`tcp_memory_allocated`), against
    /// `net.ipv4.tcp_mem`.
    pub mem_pages: u64,
}

/// The calling thread's namespace's `TCP:` sockstat line; `None` if unreadable.
#[must_use]
pub fn tcp_sockstat() -> Option<TcpSockstat> {
    let text = fs::read_to_string("/proc/thread-self/net/sockstat").ok()?;
    let field = |name| sockstat_field(&text, "TCP:", name);
    Some(TcpSockstat {
        inuse: field("inuse")?,
        orphan: field("orphan")?,
        tw: field("tw")?,
        alloc: field("alloc")?,
        mem_pages: field("mem")?,
    })
}

/// The number after `field` on the `key` line of a sockstat file.
#[must_use]
pub fn sockstat_field(text: &str, key: &str, field: &str) -> Option<u64> {
    let mut words = text.lines().find(|line| line.starts_with(key))?.split_whitespace();
    words.find(|&word| word == field)?;
    words.next()?.parse().ok()
}

/// The counters `names` of the `TcpExt:` lines of the calling thread's namespace's
/// `/proc/net/netstat` (what `nstat` reads), in the order asked; `None` for a counter this
/// kernel does not have.
#[must_use]
pub fn tcp_ext(names: &[&str]) -> Vec<Option<u64>> {
    let text = fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
    names.iter().map(|name| netstat_field(&text, "TcpExt:", name)).collect()
}

/// A counter of a netstat-shaped text: a line of names after `key`, then a line of values.
#[must_use]
pub fn netstat_field(text: &str, key: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(key));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let at = names.split_whitespace().position(|n| n == name);
        if let Some(at) = at {
            return values.split_whitespace().nth(at)?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_kib_field_in_bytes() {
        let meminfo = "MemTotal:       16303428 kB\nMemFree:         1214336 kB\n\
                       MemAvailable:   10526560 kB\n";
        assert_eq!(kib_field(meminfo, "MemAvailable"), Some(10_526_560 * 1024));
        let status = "Name:\ttcptrace\nVmPeak:\t  170000 kB\nVmRSS:\t  161324 kB\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(161_324 * 1024));
        assert_eq!(kib_field("MemFree: 12 kB\n", "MemAvailable"), None);
        assert_eq!(kib_field("VmRSSx: 12 kB\n", "VmRSS"), None);
        assert_eq!(kib_field("VmRSS: lots\n", "VmRSS"), None);
    }

    #[test]
    fn parses_stat_status_and_schedstat() {
        let stat = "4242 (tcp (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 9 0\n";
        assert_eq!(stat_cpu_ticks(stat), Some(325));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1"), None);
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t42\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_field(status, "voluntary_ctxt_switches"), Some(42));
        assert_eq!(schedstat_ns("123456789 2000 31\n"), Some(123_456_789));
        assert_eq!(schedstat_ns(""), None);
        assert!(rss_bytes(Pid::Own).unwrap() > 0);
        assert!(cpu_time(Pid::Id(std::process::id())).is_some());
    }

    #[test]
    fn reads_the_soft_nofile_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            300                  20000                files     \n\
                      Max open filesx           1                    1                    files     \n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(300));
        assert_eq!(soft_limit(limits, "Max cpu time"), None, "unlimited is no number");
        assert_eq!(soft_limit(limits, "Max locked memory"), None);
        let own = nofile_soft(Pid::Own).unwrap();
        let fds = open_fds(Pid::Own).unwrap();
        assert!(fds > 0 && fds <= own, "{fds} of {own}");
    }

    #[test]
    fn parses_file_nr_and_sockstat() {
        assert_eq!(
            parse_file_nr("2208\t0\t9223372036854775807\n"),
            Some(FileTable { allocated: 2208, max: 9_223_372_036_854_775_807 })
        );
        assert_eq!(parse_file_nr("2208 0\n"), None);
        let v4 = "sockets: used 140\nTCP: inuse 3 orphan 0 tw 18350 alloc 5 mem 1\n";
        assert_eq!(sockstat_field(v4, "TCP:", "tw"), Some(18_350));
        assert_eq!(sockstat_field(v4, "TCP6:", "inuse"), None);
        assert!(tcp_sockstat().is_some());
    }

    #[test]
    fn finds_slab_object_sizes() {
        let text = "slabinfo - version: 2.1\n\
                    TCPv6                 91    143   2496   13    8 : tunables 0 0 0\n\
                    TCP                   92    143   2368   13    8 : tunables 0 0 0\n";
        assert_eq!(slab_object_size(text, "TCP"), Some(2368));
        assert_eq!(slab_object_size(text, "TCPv6"), Some(2496));
        assert_eq!(slab_object_size(text, "filp"), None);
    }

    #[test]
    fn finds_netstat_counters_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                    TcpExt: 3 17 18\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(netstat_field(text, "TcpExt:", "ListenOverflows"), Some(17));
        assert_eq!(netstat_field(text, "TcpExt:", "ListenDrops"), Some(18));
        assert_eq!(netstat_field(text, "TcpExt:", "InNoRoutes"), None);
        assert_eq!(netstat_field(text, "IpExt:", "InNoRoutes"), Some(0));
        assert_eq!(tcp_ext(&["ListenDrops", "NoSuchCounter"])[1], None);
        assert!(tcp_ext(&["ListenDrops"])[0].is_some());
    }
}
