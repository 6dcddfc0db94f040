//! The wire format between tcptrace's BPF programs and its userspace, defined once.
//!
//! Everything here is `#[repr(C)]` plain data: the BPF side writes it into the ring buffer
//! or reads it from globals, userspace reads it back byte for byte.
#![no_std]

pub mod attach;

/// Kind of a connection event, as carried in [`Event::kind`].
pub mod kind {
    /// A client connection: `SYN_SENT -> ESTABLISHED` (its SYN-ACK came).
    pub const CONNECT: u8 = 1;
    /// A server connection: `SYN_RECV -> ESTABLISHED` (its final ACK came), or under
    /// `--pid`, `accept()` returning it in a matching process.
    pub const ACCEPT: u8 = 2;
    /// A server-side handshake completed, seen apart from its accept. The fentry and
    /// kprobe paths sent it from `inet_csk_complete_hashdance` until they hooked the state
    /// change like the others (December 2026); no program sends it now. The ledger still
    /// reads it, and `tcptrace_events_total{kind="established"}` stays in the metrics (at
    /// 0) so that a dashboard built on it keeps working.
    pub const ESTABLISHED: u8 = 4;
    /// A `connect()` failed with `EADDRNOTAVAIL`: no local port was left toward that
    /// destination (the ephemeral range is exhausted), seen as `SYN_SENT -> CLOSE` with no
    /// local port. Only the remote address and port are known.
    pub const CONNECT_FAILED: u8 = 5;
    /// The connection stopped being live: `ESTABLISHED|CLOSE_WAIT -> FIN_WAIT1|LAST_ACK|CLOSE`.
    pub const CLOSE: u8 = 3;
}

/// Address families as the kernel numbers them (`AF_INET`, `AF_INET6`).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// TCP states as the kernel numbers them (include/net/tcp_states.h): `skc_state`, the
/// tracepoint's `oldstate`/`newstate`, and sock_diag's `idiag_state` all use these.
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    /// A request socket of a listener, mid-handshake (sock_diag reports it as SYN_RECV).
    pub const NEW_SYN_RECV: u8 = 12;
}

pub const IPPROTO_TCP: u16 = 6;

/// One connection event. 88 bytes; the ring buffer adds an 8-byte header per record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: monotonic nanoseconds since boot.
    pub ts_ns: u64,
    /// Kernel address of the `struct sock`: links a close to its open while both live.
    pub sock: u64,
    /// Inode number of the socket's network namespace (`ip netns identify`, `lsns`), 0 if unknown.
    pub netns: u32,
    /// Process id (the kernel's tgid) of the task that ran the hook.
    pub tgid: u32,
    /// Thread id (the kernel's pid) of the task that ran the hook.
    pub pid: u32,
    /// Local port, host byte order.
    pub lport: u16,
    /// Remote port, host byte order.
    pub rport: u16,
    /// One of [`kind`].
    pub kind: u8,
    /// Low byte of the address family: [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    pub _pad: [u8; 6],
    /// Local address: 4 bytes used for IPv4, all 16 for IPv6 (network byte order).
    pub laddr: [u8; 16],
    /// Remote address, as `laddr`.
    pub raddr: [u8; 16],
    /// `comm` of the task that ran the hook, NUL-padded.
    pub comm: [u8; 16],
}

/// A field inside `struct sock` that may be a bitfield on older kernels (`sk_protocol` was
/// `:8` bits until 5.6): read 4 bytes at `offset`, shift right, mask.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BitField {
    pub offset: u32,
    pub shift: u32,
    pub mask: u32,
}

/// Byte offsets inside the running kernel's `struct sock` (from its BTF), so that no
/// offset is compiled in for one kernel. All zero when the kernel has no BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `__sk_common.skc_family` (u16)
    pub family: u32,
    /// `__sk_common.skc_state` (u8)
    pub state: u32,
    /// `struct inet_sock` -> `inet_sport`: local port, network order (u16). Not
    /// `skc_num`, which `inet_put_port` zeroes before the state becomes `TCP_CLOSE`
    /// (where `sock:inet_sock_set_state` fires since Linux 6.x), so a reset connection's
    /// close would carry local port 0.
    pub sport: u32,
    /// `__sk_common.skc_dport`: remote port, network order (u16)
    pub dport: u32,
    /// `__sk_common.skc_rcv_saddr` (IPv4 local address)
    pub rcv_saddr: u32,
    /// `__sk_common.skc_daddr` (IPv4 remote address)
    pub daddr: u32,
    /// `__sk_common.skc_v6_rcv_saddr` (16 bytes)
    pub v6_rcv_saddr: u32,
    /// `__sk_common.skc_v6_daddr` (16 bytes)
    pub v6_daddr: u32,
    /// `__sk_common.skc_net`: pointer to `struct net`
    pub net: u32,
    /// `struct net` -> `ns.inum` (u32)
    pub net_inum: u32,
    /// `sk_protocol`
    pub protocol: BitField,
    /// `sk_shutdown`: `SHUTDOWN_MASK` once `tcp_close` has begun. No program reads it since
    /// the function paths hook `tcp_set_state`; still filled in from BTF.
    pub shutdown: BitField,
    /// 1 when the offsets above were filled from BTF.
    pub valid: u32,
}

/// Byte offsets of the fields of the classic `sock:inet_sock_set_state` tracepoint record,
/// read from its tracefs `format` file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub protocol: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
}

/// Everything userspace tells the programs at load time, in the one global `CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub sock: SockOffsets,
    pub tracepoint: TracepointOffsets,
    pub cgroup: CgroupOffsets,
    /// Which connections to report; the rest are only counted (`FILTERED`).
    pub filter: Filter,
    pub accept: AcceptOffsets,
    /// 1: events say when (`ts_ns`) and who (`comm`, and for a connect the process that
    /// called `connect()`), for the events view and `--pid`. 0: counting alone, which
    /// needs none of it and saves a clock read and a `comm` copy per event, and (a connect
    /// completes in softirq, on whatever task ran) a map insert and delete per connection
    /// that remembers the caller from `SYN_SENT` on.
    pub details: u32,
}

/// Where the socket that `accept()` returned is, from the task that called it:
/// `current->files->fdt->fd[ret]->private_data` (a `struct socket`) `->sk`. Read at
/// `syscalls:sys_exit_accept[4]` for `--pid` on every path: a server connection's state
/// changes never run in the accepting process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptOffsets {
    /// `struct task_struct` -> `files` (pointer)
    pub task_files: u32,
    /// `struct files_struct` -> `fdt` (pointer)
    pub files_fdt: u32,
    /// `struct fdtable` -> `max_fds` (u32)
    pub fdt_max_fds: u32,
    /// `struct fdtable` -> `fd` (pointer to an array of `struct file *`)
    pub fdt_fd: u32,
    /// `struct file` -> `private_data` (a socket file's `struct socket *`)
    pub file_private_data: u32,
    /// `struct socket` -> `sk`
    pub socket_sk: u32,
    /// `syscalls:sys_exit_accept4` (from its tracefs format): the return value.
    pub ret: u32,
    /// 1 when the offsets above were filled from BTF.
    pub valid: u32,
}

/// Where a socket's cgroup v2 id is: `sk->sk_cgrp_data.cgroup->kn->id` (the id that
/// `INET_DIAG_CGROUP_ID` reports and the inode number of the cgroup directory).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupOffsets {
    /// `struct sock` -> `sk_cgrp_data.cgroup` (pointer)
    pub sock_cgroup: u32,
    /// `struct cgroup` -> `kn` (pointer)
    pub cgroup_kn: u32,
    /// `struct kernfs_node` -> `id` (u64)
    pub kn_id: u32,
    /// 1 when the offsets above were filled from BTF.
    pub valid: u32,
}

/// Values per kind of filter: the in-kernel filter is fixed-size arrays, looped over.
pub const FILTER_MAX: usize = 8;

/// A CIDR as two 64-bit halves of an IPv6 address, IPv4 as `::ffff:a.b.c.d` with the prefix
/// plus 96, so one comparison covers both families and IPv4-mapped peers. `addr` is already
/// masked; the halves are the address bytes read in native order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cidr {
    pub addr: [u64; 2],
    pub mask: [u64; 2],
}

/// What `--port`, `--lport`, `--rport`, `--addr`, `--pid`, `--netns` and `--cgroup` ask for.
/// Values of one kind are ORed, kinds are ANDed; a kind with count 0 matches everything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Either end's port.
    pub ports: [u16; FILTER_MAX],
    pub lports: [u16; FILTER_MAX],
    pub rports: [u16; FILTER_MAX],
    pub n_ports: u32,
    pub n_lports: u32,
    pub n_rports: u32,
    pub n_addrs: u32,
    /// The remote address.
    pub addrs: [Cidr; FILTER_MAX],
    /// Process ids (tgid) of the task that owns the socket.
    pub pids: [u32; FILTER_MAX],
    /// Network namespace inodes.
    pub netns: [u32; FILTER_MAX],
    pub n_pids: u32,
    pub n_netns: u32,
    pub n_cgroups: u32,
    pub _pad: u32,
    /// cgroup v2 ids of the socket.
    pub cgroups: [u64; FILTER_MAX],
}

impl Filter {
    /// True when no filter is set: every connection is reported.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.n_ports == 0
            && self.n_lports == 0
            && self.n_rports == 0
            && self.n_addrs == 0
            && self.n_pids == 0
            && self.n_netns == 0
            && self.n_cgroups == 0
    }
}

/// Default size of the `EVENTS` ring buffer, in bytes: 4 MiB holds ~47,000 events, about
/// 10 ms of the densest churn the benchmark box sustains, between two drains. Userspace may
/// change it before load (`--ring-size`).
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// Names of the maps and the global, shared by both sides.
pub const EVENTS_MAP: &str = "EVENTS";
pub const LOST_MAP: &str = "LOST";
/// Events the filter kept out of the ring, per CPU.
pub const FILTERED_MAP: &str = "FILTERED";
pub const CONFIG_GLOBAL: &str = "CONFIG";

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays with explicit padding.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Config {}
}
