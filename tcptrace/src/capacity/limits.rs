//! Every limit that caps a listener's connections, and the one that binds first (issue 13).
//!
//! A refresh reads, per network namespace that holds a socket (on the walker's thread in
//! that namespace: [`NetnsReadings::read`]), `net.core.somaxconn`, sockstat, the `tcp_mem`,
//! orphan, TIME_WAIT and conntrack caps and the `TcpExt` counters of a limit hit; once per
//! refresh the box-wide ones ([`BoxReadings::read`]); per listener, from the dump, each
//! LISTEN socket's accept queue, backlog and drops; and per holding process its open fds
//! against its soft `RLIMIT_NOFILE`. [`binding`] orders them by headroom: connections the
//! listener can still take before each limit stops it.

use hashbrown::HashMap;
use std::time::Duration;

use tcptrace_json::limits::{CounterRate, Headroom, LimitName, ListenerLimits, NetnsLimits};
use tcptrace_proc::{FileTable, Pid, TcpSockstat};

use super::{rate, sides::Listener};
use crate::sockdiag::{TcpSocket, states};

/// The `TcpExt` counters that say a limit was hit, as `nstat` names them.
pub const LIMIT_COUNTERS: [&str; 8] = [
    // Accept queue full: the third ACK (or, with SYN cookies, the cookie ACK) dropped.
    "ListenOverflows",
    // Every listener drop (`tcp_listendrop`), overflows included.
    "ListenDrops",
    // SYN queue full, and SYN cookies off: the SYN dropped.
    "TCPReqQFullDrop",
    // SYN queue full: a SYN cookie sent instead.
    "TCPReqQFullDoCookies",
    "SyncookiesSent",
    "TCPMemoryPressures",
    "TCPAbortOnMemory",
    // A close that skipped TIME_WAIT because `tcp_max_tw_buckets` was reached.
    "TCPTimeWaitOverflow",
];

/// What one namespace's `/proc` says; read in a thread inside it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct NetnsReadings {
    somaxconn: Option<u64>,
    sockstat: Option<TcpSockstat>,
    max_tw_buckets: Option<u64>,
    conntrack: Option<u64>,
    conntrack_max: Option<u64>,
    counters: Vec<Option<u64>>,
}

impl NetnsReadings {
    /// [`LIMIT_COUNTERS`] as read.
    pub(super) fn counters(&self) -> Vec<Option<u64>> {
        self.counters.clone()
    }

    /// Reads the calling thread's namespace: 6 small `/proc` files.
    pub(super) fn read() -> Self {
        Self {
            somaxconn: tcptrace_proc::sysctl_u64("net/core/somaxconn"),
            sockstat: tcptrace_proc::tcp_sockstat(),
            max_tw_buckets: tcptrace_proc::sysctl_u64("net/ipv4/tcp_max_tw_buckets"),
            conntrack: tcptrace_proc::sysctl_u64("net/netfilter/nf_conntrack_count"),
            conntrack_max: tcptrace_proc::sysctl_u64("net/netfilter/nf_conntrack_max"),
            counters: tcptrace_proc::tcp_ext(&LIMIT_COUNTERS),
        }
    }
}

/// The slab caches one accepted TCP connection takes an object of each: the socket
/// (`TCP`, or `TCPv6` for an IPv6 one), its inode, its file and its dentry.
const CONNECTION_SLABS: [&str; 5] = ["TCP", "TCPv6", "sock_inode_cache", "filp", "dentry"];

/// What the box says once per refresh, for every namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct BoxReadings {
    files: Option<FileTable>,
    mem_available: Option<u64>,
    /// `net.ipv4.tcp_mem` and `tcp_max_orphans` are the box's: only the initial namespace
    /// has them in `/proc/sys` (read here in the tracer's, which should be that one).
    tcp_mem: Option<[u64; 3]>,
    max_orphans: Option<u64>,
    /// Slab bytes of one IPv4 connection (IPv6's socket object is a little larger; the
    /// IPv4 one is taken, as most connections are).
    slab_bytes: Option<u64>,
}

impl BoxReadings {
    pub(super) fn read() -> Self {
        let slabs = tcptrace_proc::slab_object_sizes(&CONNECTION_SLABS);
        let slab_bytes = match slabs.as_slice() {
            [Some(tcp), _, Some(inode), Some(file), Some(dentry)] => {
                Some(tcp + inode + file + dentry)
            }
            _ => None,
        };
        Self {
            files: tcptrace_proc::file_table(),
            mem_available: tcptrace_proc::mem_available(),
            tcp_mem: tcptrace_proc::sysctl("net/ipv4/tcp_mem")
                .and_then(|v| <[u64; 3]>::try_from(v.as_slice()).ok()),
            max_orphans: tcptrace_proc::sysctl_u64("net/ipv4/tcp_max_orphans"),
            slab_bytes,
        }
    }
}

/// One namespace's limits row: its readings, the box's, the mean buffers of its live
/// `sockets`, and the counters' rates against `before` (the last refresh's totals) over
/// `over`.
pub(super) fn netns_limits(
    netns: u32,
    readings: &NetnsReadings,
    on_box: &BoxReadings,
    sockets: &[TcpSocket],
    before: Option<&Vec<Option<u64>>>,
    over: Duration,
) -> NetnsLimits {
    let (buffers, with_memory) = sockets
        .iter()
        .filter(|s| states::is_live(s.state))
        .filter_map(|s| s.memory)
        .fold((0u64, 0u64), |(sum, n), m| (sum + u64::from(m.buffer_bytes), n + 1));
    let bytes_per_connection = on_box.slab_bytes.map(|slab| slab + buffers / with_memory.max(1));
    let memory_connections = on_box
        .mem_available
        .zip(bytes_per_connection)
        .map(|(available, per)| available / per.max(1));
    let sockstat = readings.sockstat;
    let counters = LIMIT_COUNTERS
        .iter()
        .zip(&readings.counters)
        .enumerate()
        .filter_map(|(i, (name, total))| Some((i, name, (*total)?)))
        .map(|(i, name, total)| {
            let prev = before.and_then(|b| b.get(i).copied().flatten());
            let rate = prev.map_or(0.0, |prev| rate(total.saturating_sub(prev), over));
            CounterRate { name: (*name).to_owned(), total, rate }
        })
        .collect();
    NetnsLimits {
        netns,
        files: on_box.files.map(|f| f.allocated),
        file_max: on_box.files.map(|f| f.max),
        tcp_mem_pages: sockstat.map(|s| s.mem_pages),
        tcp_mem: on_box.tcp_mem,
        memory_pressure: sockstat
            .zip(on_box.tcp_mem)
            .is_some_and(|(s, [_, pressure, _])| s.mem_pages >= pressure),
        orphans: sockstat.map(|s| s.orphan),
        max_orphans: on_box.max_orphans,
        time_wait: sockstat.map(|s| s.tw),
        max_tw_buckets: readings.max_tw_buckets,
        conntrack: readings.conntrack,
        conntrack_max: readings.conntrack_max,
        mem_available: on_box.mem_available,
        bytes_per_connection,
        memory_connections,
        counters,
    }
}

/// A process's open fds below its soft `RLIMIT_NOFILE`, and that limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fds {
    pub(super) open: u64,
    pub(super) limit: u64,
}

/// The fds of each process asked for, read once per refresh however many listeners it
/// holds.
#[derive(Debug, Default)]
pub(super) struct FdReadings(HashMap<u32, Option<Fds>>);

impl FdReadings {
    pub(super) fn of(&mut self, pid: u32) -> Option<Fds> {
        *self.0.entry(pid).or_insert_with(|| {
            let pid = Pid::Id(pid);
            let limit = tcptrace_proc::nofile_soft(pid)?;
            Some(Fds { open: tcptrace_proc::open_fds_below(pid, limit)?, limit })
        })
    }
}

/// A listener's limits: its group's queues, the holder with the least fd room among
/// `holders`, and its namespace's box limits.
pub(super) fn listener_limits(
    listener: &Listener,
    holders: &[(u32, Fds)],
    netns: Option<(&NetnsReadings, &NetnsLimits)>,
) -> ListenerLimits {
    let queues = &listener.queues;
    let waiting: u64 = queues.iter().map(|q| u64::from(q.waiting)).sum();
    let backlog: u64 = queues.iter().map(|q| u64::from(q.backlog)).sum();
    let somaxconn = netns.and_then(|(r, _)| r.somaxconn);
    let drops = queues.iter().map(|q| q.drops.map(u64::from)).sum::<Option<u64>>();
    let tightest = holders.iter().min_by_key(|(pid, f)| (f.limit.saturating_sub(f.open), *pid));
    let mut limits = vec![Headroom {
        name: LimitName::AcceptQueue,
        value: waiting,
        // The kernel calls a queue full once it holds more than the backlog.
        limit: backlog + queues.len() as u64,
        headroom: queues
            .iter()
            .map(|q| u64::from(q.backlog + 1).saturating_sub(u64::from(q.waiting)))
            .sum(),
    }];
    if let Some((_, f)) = tightest {
        limits.push(headroom(LimitName::Fds, f.open, f.limit));
    }
    if let Some((_, box_limits)) = netns {
        if let (Some(files), Some(max)) = (box_limits.files, box_limits.file_max) {
            limits.push(headroom(LimitName::FileMax, files, max));
        }
        if let (Some(fit), Some(available)) =
            (box_limits.memory_connections, box_limits.mem_available)
        {
            limits.push(Headroom {
                name: LimitName::Memory,
                value: 0,
                limit: available,
                headroom: fit,
            });
        }
    }
    let (binding, binding_headroom) = binding(&mut limits);
    ListenerLimits {
        accept_queue: waiting,
        backlog,
        min_backlog: queues.iter().map(|q| u64::from(q.backlog)).min().unwrap_or(0),
        somaxconn,
        backlog_clamped: somaxconn
            .is_some_and(|max| queues.iter().any(|q| u64::from(q.backlog) == max)),
        drops,
        fds: tightest.map(|(_, f)| f.open),
        fd_limit: tightest.map(|(_, f)| f.limit),
        fd_pid: tightest.map(|(pid, _)| *pid),
        headroom: limits,
        binding,
        binding_headroom,
    }
}

fn headroom(name: LimitName, value: u64, limit: u64) -> Headroom {
    Headroom { name, value, limit, headroom: limit.saturating_sub(value) }
}

/// Sorts `limits` smallest headroom first and names the first. On a tie the order of
/// [`LimitName`] decides: a process out of fds leaves connections in its accept queue, so
/// a full queue beside a process at its fd limit is bound by the fds, not by the backlog.
pub(super) fn binding(limits: &mut [Headroom]) -> (Option<LimitName>, Option<u64>) {
    limits.sort_by_key(|l| (l.headroom, l.name));
    limits.first().map_or((None, None), |l| (Some(l.name), Some(l.headroom)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::sides::Queue;
    use std::net::Ipv4Addr;

    fn listener(queues: &[(u32, u32)]) -> Listener {
        Listener {
            key: (1, Ipv4Addr::LOCALHOST.into(), 8080),
            inodes: vec![1; queues.len()],
            live: 0,
            per_remote: HashMap::new(),
            passes: true,
            queues: queues
                .iter()
                .map(|&(waiting, backlog)| Queue { waiting, backlog, drops: Some(2) })
                .collect(),
        }
    }

    fn names(l: &ListenerLimits) -> Vec<(LimitName, u64)> {
        l.headroom.iter().map(|h| (h.name, h.headroom)).collect()
    }

    #[test]
    fn an_idle_listener_is_bound_by_its_process_fds() {
        let fds = [(10, Fds { open: 290, limit: 300 })];
        let l = listener_limits(&listener(&[(0, 16)]), &fds, None);
        assert_eq!(names(&l), [(LimitName::Fds, 10), (LimitName::AcceptQueue, 17)]);
        assert_eq!((l.binding, l.binding_headroom), (Some(LimitName::Fds), Some(10)));
        assert_eq!((l.fds, l.fd_limit, l.fd_pid), (Some(290), Some(300), Some(10)));
        assert_eq!((l.accept_queue, l.backlog, l.drops), (0, 16, Some(2)));
    }

    #[test]
    fn a_full_queue_beside_a_process_out_of_fds_is_bound_by_the_fds() {
        let fds = [(10, Fds { open: 300, limit: 300 })];
        let l = listener_limits(&listener(&[(17, 16)]), &fds, None);
        assert_eq!(names(&l), [(LimitName::Fds, 0), (LimitName::AcceptQueue, 0)]);
        assert_eq!(l.binding, Some(LimitName::Fds));
    }

    #[test]
    fn a_full_queue_of_a_process_that_does_not_accept_is_bound_by_the_queue() {
        let fds = [(10, Fds { open: 5, limit: 300 })];
        let l = listener_limits(&listener(&[(17, 16)]), &fds, None);
        assert_eq!((l.binding, l.binding_headroom), (Some(LimitName::AcceptQueue), Some(0)));
    }

    #[test]
    fn a_reuseport_group_sums_its_queues_and_the_tightest_holder_counts() {
        let fds = [(10, Fds { open: 10, limit: 1000 }), (11, Fds { open: 990, limit: 1000 })];
        let l = listener_limits(&listener(&[(3, 8), (9, 8)]), &fds, None);
        // 9 + 0 places left: the second socket is already one past its backlog.
        assert_eq!(
            l.headroom.iter().find(|h| h.name == LimitName::AcceptQueue).unwrap().headroom,
            6
        );
        assert_eq!((l.accept_queue, l.backlog, l.min_backlog, l.drops), (12, 16, 8, Some(4)));
        assert_eq!((l.fd_pid, l.binding_headroom), (Some(11), Some(6)));
    }

    #[test]
    fn box_limits_join_from_the_namespace() {
        let readings = NetnsReadings { somaxconn: Some(16), ..NetnsReadings::default() };
        let on_box = BoxReadings {
            files: Some(FileTable { allocated: 1000, max: 1003 }),
            mem_available: Some(4_000_000),
            slab_bytes: Some(3_000),
            ..BoxReadings::default()
        };
        let live = TcpSocket {
            state: crate::sockdiag::tcp_state::ESTABLISHED,
            memory: Some(crate::sockdiag::SkMemInfo { buffer_bytes: 1_000, drops: 0 }),
            ..listener_socket()
        };
        let row =
            netns_limits(1, &readings, &on_box, &[live, listener_socket()], None, Duration::ZERO);
        assert_eq!((row.bytes_per_connection, row.memory_connections), (Some(4_000), Some(1_000)));
        let l = listener_limits(&listener(&[(0, 16)]), &[], Some((&readings, &row)));
        assert!(l.backlog_clamped, "backlog 16 = somaxconn 16");
        assert_eq!(
            names(&l),
            [(LimitName::FileMax, 3), (LimitName::AcceptQueue, 17), (LimitName::Memory, 1_000)]
        );
        assert_eq!((l.fds, l.binding), (None, Some(LimitName::FileMax)));
    }

    #[test]
    fn counters_turn_into_rates_from_the_last_refresh() {
        let readings = NetnsReadings {
            counters: vec![Some(10), None, Some(0), None, None, None, None, Some(7)],
            ..NetnsReadings::default()
        };
        let before = vec![Some(4), None, Some(0), None, None, None, None, Some(7)];
        let row = netns_limits(
            1,
            &readings,
            &BoxReadings::default(),
            &[],
            Some(&before),
            Duration::from_secs(2),
        );
        let got: Vec<(&str, u64, f64)> =
            row.counters.iter().map(|c| (c.name.as_str(), c.total, c.rate)).collect();
        assert_eq!(
            got,
            [
                ("ListenOverflows", 10, 3.0),
                ("TCPReqQFullDrop", 0, 0.0),
                ("TCPTimeWaitOverflow", 7, 0.0)
            ]
        );
        assert_eq!((row.bytes_per_connection, row.memory_connections), (None, None));
    }

    fn listener_socket() -> TcpSocket {
        TcpSocket {
            conn: crate::conn::Conn::new(
                1,
                "127.0.0.1:8080".parse().unwrap(),
                "0.0.0.0:0".parse().unwrap(),
            ),
            state: crate::sockdiag::tcp_state::LISTEN,
            inode: 1,
            cgroup: 0,
            rqueue: 0,
            wqueue: 16,
            memory: None,
        }
    }
}
