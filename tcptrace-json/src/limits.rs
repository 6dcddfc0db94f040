//! The limits that cap connections (issue 13): per listener, how many more connections each
//! limit lets it take and which one runs out first; per network namespace, the kernel's own
//! caps and the counters that say one was hit.

use serde::{Deserialize, Serialize};

/// A limit that can stop a listener from taking more connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitName {
    /// The soft `RLIMIT_NOFILE` of a process holding the listener: past it `accept()` fails
    /// with `EMFILE` and connections wait in the accept queue until it is full.
    Fds,
    /// The box's open-file table, `fs/file-max` (every socket is a file): `ENFILE`.
    FileMax,
    /// `MemAvailable` over the kernel memory one connection costs on this box.
    Memory,
    /// The listener's accept queue: the kernel drops a handshake's last ACK (or the SYN)
    /// once it holds backlog + 1 connections that no `accept()` took.
    AcceptQueue,
}

impl LimitName {
    /// As written in JSON, the table and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fds => "fds",
            Self::FileMax => "file_max",
            Self::Memory => "memory",
            Self::AcceptQueue => "accept_queue",
        }
    }
}

/// One limit: what is used of it, its cap, and how many more connections fit before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headroom {
    pub name: LimitName,
    pub value: u64,
    pub limit: u64,
    /// More connections the listener can take before this limit stops it.
    pub headroom: u64,
}

/// A listener's limits, from the same refresh as the rest of its row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerLimits {
    /// Connections waiting for `accept()`, summed over the `SO_REUSEPORT` group's sockets
    /// (sock_diag `idiag_rqueue` of each LISTEN socket: `ss -lnt` Recv-Q).
    pub accept_queue: u64,
    /// The backlog, summed over the group (`idiag_wqueue`: `ss -lnt` Send-Q). A socket's
    /// queue holds at most its backlog + 1.
    pub backlog: u64,
    /// The smallest backlog of the group: the kernel hashes each SYN to one member, so the
    /// member with the shortest queue (or the slowest process) overflows first.
    pub min_backlog: u64,
    /// `net.core.somaxconn` of the namespace now: `listen()` clamps its backlog to it.
    pub somaxconn: Option<u64>,
    /// A socket's backlog equals `somaxconn`: `listen()` may have asked for more (the clamp
    /// applies at that call only, so a raised `somaxconn` needs a new `listen()`).
    pub backlog_clamped: bool,
    /// Drops of the group since its sockets were made (`SK_MEMINFO_DROPS` of each LISTEN
    /// socket: `ss -ltm` `d`): every SYN or third ACK the kernel dropped for a full accept or
    /// SYN queue, or a child socket that could not be made. `None` if the kernel sent no
    /// meminfo.
    pub drops: Option<u64>,
    /// Open fds numbered below the soft `RLIMIT_NOFILE` (`/proc/PID/fd`,
    /// `/proc/PID/limits`: `accept()` needs a free number below it, and an fd inherited
    /// above it takes no place) of the holding process with the least room, that limit and
    /// that pid; `None` when no holder is known (a pid scan not done yet, or a process we
    /// may not look into).
    pub fds: Option<u64>,
    pub fd_limit: Option<u64>,
    pub fd_pid: Option<u32>,
    /// Every limit that could be read, smallest headroom first.
    pub headroom: Vec<Headroom>,
    /// The limit that runs out first (the first of `headroom`). On a tie the queue loses:
    /// a queue that fills because its process cannot accept is bound by that process.
    pub binding: Option<LimitName>,
    pub binding_headroom: Option<u64>,
}

/// A kernel counter that says a limit was hit (`/proc/net/netstat` `TcpExt:`), in total and
/// per second since the previous refresh.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CounterRate {
    pub name: String,
    pub total: u64,
    pub rate: f64,
}

/// The kernel's caps in one network namespace, with the box-wide ones it shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetnsLimits {
    pub netns: u32,
    /// `fs/file-nr`'s allocated file handles against `fs/file-max` (box-wide).
    pub files: Option<u64>,
    pub file_max: Option<u64>,
    /// sockstat `TCP: mem` (pages, box-wide) against `net.ipv4.tcp_mem` (min, pressure,
    /// max); past pressure the kernel shrinks buffers, past max it drops and aborts.
    pub tcp_mem_pages: Option<u64>,
    pub tcp_mem: Option<[u64; 3]>,
    /// `tcp_mem_pages` is at or past the pressure threshold.
    pub memory_pressure: bool,
    /// sockstat `orphan` against `net.ipv4.tcp_max_orphans` (box-wide, as is `tcp_mem`:
    /// only the initial namespace has either in `/proc/sys`). The kernel counts an orphan
    /// that retransmits as several against this cap (`tcp_out_of_resources` shifts it), so
    /// the cap can bind earlier than these numbers say.
    pub orphans: Option<u64>,
    pub max_orphans: Option<u64>,
    /// sockstat `tw` against `net.ipv4.tcp_max_tw_buckets`: past it, closes skip TIME_WAIT
    /// (`TCPTimeWaitOverflow` counts them).
    pub time_wait: Option<u64>,
    pub max_tw_buckets: Option<u64>,
    /// `nf_conntrack_count` against `nf_conntrack_max`; `None` where nf_conntrack is not
    /// loaded.
    pub conntrack: Option<u64>,
    pub conntrack_max: Option<u64>,
    /// `MemAvailable` (box-wide), bytes.
    pub mem_available: Option<u64>,
    /// Kernel memory one accepted connection costs here: the slab objects of a TCP socket,
    /// its inode, file and dentry (`/proc/slabinfo`) plus the mean buffers of this
    /// namespace's live sockets (`SKMEMINFO`); `None` without slabinfo.
    pub bytes_per_connection: Option<u64>,
    /// `mem_available` / `bytes_per_connection`: connections that fit in memory.
    pub memory_connections: Option<u64>,
    /// The `TcpExt` counters of a limit hit, for those this kernel has.
    pub counters: Vec<CounterRate>,
}
