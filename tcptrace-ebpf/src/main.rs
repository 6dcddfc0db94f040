//! tcptrace's kernel side. Three sets of programs are compiled into one object; userspace
//! loads exactly one set at run time (see `tcptrace/src/backend`):
//!
//! 1. fentry/fexit: `tcp_connect`, `inet_csk_accept` (return), `tcp_close`,
//!    `inet_csk_complete_hashdance` (return) for the server-side handshake, and `tcp_done`
//!    and `tcp_disconnect` for connections that end without `close()`;
//! 2. kprobe/kretprobe on the same six functions;
//! 3. the `sock:inet_sock_set_state` tracepoint (BTF-typed `tp_btf` or classic), from
//!    which connect, accept and close are derived as state transitions.
//!
//! No `struct sock` offset is compiled in: userspace reads them from the running kernel's
//! BTF (or the tracepoint's format file) and hands them over in the `CONFIG` global.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_user, bpf_task_pt_regs,
        generated as raw,
    },
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, map, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext,
        TracePointContext,
    },
};
use core::mem::MaybeUninit;

use tcptrace_common::{
    AF_INET, AF_INET6, BitField, Cidr, Config, DEFAULT_RING_BYTES, EADDRNOTAVAIL, Event,
    FILTER_MAX, IPPROTO_TCP, kind, tcp_state,
};

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Events dropped because the ring was full, per CPU (no atomics on the hot path).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Events the filter kept out of the ring, per CPU: they cost a counter, not ring space.
#[map]
static FILTERED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Sockets whose open passed a `--pid` filter, so that their close passes too wherever it
/// runs (a reset closes in softirq, on whatever task the CPU was running). LRU: a socket
/// whose close is never seen cannot leak an entry.
#[map]
static ADMITTED: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// Who called `connect()`, per socket, from `CLOSE -> SYN_SENT` (which runs in the
/// caller's context) until `SYN_SENT -> ESTABLISHED` (which often runs in softirq context,
/// on whatever task the CPU was running). Tracepoint paths only; LRU so a socket whose
/// connect never resolves cannot leak an entry.
#[map]
static CONNECTING: LruHashMap<u64, Connector> = LruHashMap::with_max_entries(16384, 0);

#[derive(Clone, Copy)]
#[repr(C)]
struct Connector {
    tgid: u32,
    pid: u32,
    comm: [u8; 16],
}

/// Filled in by userspace at load time.
#[unsafe(no_mangle)]
static CONFIG: Config = unsafe { core::mem::zeroed() };

#[inline(always)]
fn config() -> &'static Config {
    // The value is patched into the object after compilation, so the compiler must not fold
    // the zeroes above into the code: the pointer goes through a volatile read, which makes
    // it opaque. A reference, not a copy: with the filter the struct outgrows the 512-byte
    // BPF stack.
    unsafe { &*core::ptr::read_volatile(&&raw const CONFIG) }
}

/// Kernel memory at `base + offset`, zero if unreadable.
#[inline(always)]
fn read<T: Copy>(base: *const u8, offset: u32) -> T {
    let mut value = MaybeUninit::<T>::uninit();
    read_into(value.as_mut_ptr().cast(), size_of::<T>(), base, offset);
    // The helper zeroes its destination when it fails, so the value is initialised.
    unsafe { value.assume_init() }
}

/// Copies `len` bytes of kernel memory at `base + offset` to `dst` (zeroes on failure).
/// The raw helper, not aya's typed wrapper: its `Result` of a small array compiles to
/// calls of a BPF `memset` loop, several per event.
#[inline(always)]
fn read_into(dst: *mut u8, len: usize, base: *const u8, offset: u32) {
    unsafe {
        raw::bpf_probe_read_kernel(dst.cast(), len as u32, base.add(offset as usize).cast());
    }
}

/// A `struct sock` field that is a bitfield in some kernels (see `BitField`).
#[inline(always)]
fn read_bits(sk: *const u8, field: BitField) -> u32 {
    let word: u32 = read(sk, field.offset);
    (word >> field.shift) & field.mask
}

/// The tracepoint also fires for other protocols (SCTP, MPTCP), and `accept()` serves them.
#[inline(always)]
fn is_tcp(sk: *const u8, cfg: &Config) -> bool {
    read_bits(sk, cfg.sock.protocol) as u16 == IPPROTO_TCP
}

/// Live as the ledger counts it: `ESTABLISHED` or `CLOSE_WAIT`.
#[inline(always)]
fn is_live(sk: *const u8, cfg: &Config) -> bool {
    let state: u8 = read(sk, cfg.sock.state);
    state == tcp_state::ESTABLISHED || state == tcp_state::CLOSE_WAIT
}

/// Inode of the socket's network namespace: `sk->__sk_common.skc_net.net->ns.inum`.
#[inline(always)]
fn netns_of(sk: *const u8, cfg: &Config) -> u32 {
    // A failed connect has no socket; its namespace comes from the task instead.
    if cfg.sock.valid == 0 || sk.is_null() {
        return 0;
    }
    let net: u64 = read(sk, cfg.sock.net);
    if net == 0 {
        return 0;
    }
    read(net as *const u8, cfg.sock.net_inum)
}

/// Builds an event in `slot`: which socket and who ran the hook (when, and its `comm`,
/// with `details`); the caller fills in the 4-tuple. In place and zeroed in eight-byte
/// words: LLVM turns a zero initialiser of the event's odd-sized runs of zero fields, or
/// a copy of a zeroed event, into a call of a BPF `memset` that writes byte by byte, and
/// volatile stores cannot be merged into one.
#[inline(always)]
fn new_event<'a>(
    slot: &'a mut MaybeUninit<Event>,
    kind: u8,
    sk: *const u8,
    cfg: &Config,
) -> &'a mut Event {
    const WORDS: usize = size_of::<Event>() / 8;
    const _: () = assert!(size_of::<Event>().is_multiple_of(8) && align_of::<Event>() == 8);
    let words = slot.as_mut_ptr().cast::<u64>();
    for i in 0..WORDS {
        unsafe { words.add(i).write_volatile(0) };
    }
    // Every byte is written above, and every field of `Event` is valid as zero.
    let ev = unsafe { slot.assume_init_mut() };
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.sock = sk as u64;
    ev.netns = netns_of(sk, cfg);
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.pid = pid_tgid as u32;
    ev.kind = kind;
    if cfg.details != 0 {
        ev.ts_ns = unsafe { bpf_ktime_get_ns() };
        unsafe { raw::bpf_get_current_comm(ev.comm.as_mut_ptr().cast(), 16) };
    }
    ev
}

/// Reads the 4-tuple of a socket into `ev`. Returns false for sockets that are not IPv4 or
/// IPv6, or that have no peer (listeners).
#[inline(always)]
fn fill_tuple_from_sock(ev: &mut Event, sk: *const u8, cfg: &Config) -> bool {
    let family: u16 = read(sk, cfg.sock.family);
    ev.family = family as u8;
    ev.lport = u16::from_be(read(sk, cfg.sock.sport));
    ev.rport = u16::from_be(read(sk, cfg.sock.dport));
    let (l, r) = (ev.laddr.as_mut_ptr(), ev.raddr.as_mut_ptr());
    if family == AF_INET {
        read_into(l, 4, sk, cfg.sock.rcv_saddr);
        read_into(r, 4, sk, cfg.sock.daddr);
    } else if family == AF_INET6 {
        read_into(l, 16, sk, cfg.sock.v6_rcv_saddr);
        read_into(r, 16, sk, cfg.sock.v6_daddr);
    } else {
        return false;
    }
    ev.rport != 0
}

/// Sends one event. With flags 0 the kernel wakes the reader only when the ring was empty
/// (the reader had caught up); the reader then lets a batch gather before it drains
/// (`tcptrace/src/consumer.rs`), so a connection storm wakes it about a hundred times a
/// second. Asking the ring how full it is on every event instead (`BPF_RB_AVAIL_DATA`)
/// cost ~270 ns an event: it reads positions that every CPU and the reader write.
#[inline(always)]
fn submit(ev: &Event) {
    if EVENTS.output::<Event>(ev, 0).is_err()
        && let Some(lost) = LOST.get_ptr_mut(0)
    {
        unsafe { *lost += 1 };
    }
}

#[inline(always)]
fn emit_from_sock(kind: u8, sk: *const u8) {
    if sk.is_null() {
        return;
    }
    let cfg = config();
    let mut slot = MaybeUninit::uninit();
    let ev = new_event(&mut slot, kind, sk, cfg);
    // The server-side handshake completes in softirq: no process owns the socket until
    // accept() takes it (and then the accept event carries the owner).
    let owner = if kind == kind::ESTABLISHED { Owner::Unknown } else { Owner::Current };
    if fill_tuple_from_sock(ev, sk, cfg) && admit(ev, sk, owner, cfg) {
        submit(ev);
    }
}

/// `tcp_close` runs when the application closes the socket. Listeners have no peer and are
/// skipped by `fill_tuple_from_sock`; every other state is reported (a failed connect is in
/// CLOSE by now, and was counted at `tcp_connect`), and the ledger ignores closes of
/// sockets it no longer counts. A connection whose end `emit_abort` reported is reported
/// again here: harmless unless its 4-tuple was reused by a new connection in between.
#[inline(always)]
fn emit_close(sk: *const u8) {
    emit_from_sock(kind::CLOSE, sk);
}

/// `tcp_done` and `tcp_disconnect` end a connection that the application still holds: a
/// reset or a timeout (`tcp_done`), `connect(AF_UNSPEC)`, or a listener closing with the
/// connection still in its accept queue (`tcp_disconnect`, then the kernel frees it
/// without `tcp_close`). A close is emitted only if the connection was live until now and
/// `tcp_close` has not begun (it sets `sk_shutdown` to `SHUTDOWN_MASK` first, and with
/// `SO_LINGER` 0 calls `tcp_disconnect` itself); their other calls come after the
/// application's close, which was reported then.
#[inline(always)]
fn emit_abort(sk: *const u8) {
    if sk.is_null() {
        return;
    }
    let cfg = config();
    const SHUTDOWN_MASK: u32 = 3;
    if is_live(sk, cfg) && read_bits(sk, cfg.sock.shutdown) != SHUTDOWN_MASK {
        emit_close(sk);
    }
}

// ---- 1. fentry / fexit ----------------------------------------------------------------

/// match-proto:v6.1:net/ipv4/tcp_output.c:int tcp_connect(struct sock *sk)
/// Runs once the local port is chosen and the SYN is about to leave.
#[fentry(function = "tcp_connect")]
pub fn fentry_tcp_connect(ctx: FEntryContext) -> i32 {
    emit_from_sock(kind::CONNECT, ctx.arg::<*const u8>(0));
    0
}

/// match-proto:v6.1:net/ipv4/inet_connection_sock.c:struct sock *inet_csk_accept(struct sock *sk, int flags, int *err, bool kern)
/// match-proto:v6.10:net/ipv4/inet_connection_sock.c:struct sock *inet_csk_accept(struct sock *sk, struct proto_accept_arg *arg)
/// The argument count changed in 6.10, so the return value is read with
/// `bpf_get_func_ret` (Linux 5.17+), which finds it whatever the count. Reading it at an
/// index taken from BTF does not work: LLVM folds the per-index branches into one load at
/// a variable context offset, which the verifier rejects.
#[fexit(function = "inet_csk_accept")]
pub fn fexit_inet_csk_accept(ctx: FExitContext) -> i32 {
    if !accepts_from_syscalls(config())
        && let Ok(sk) = ctx.ret::<*const u8>()
    {
        emit_from_sock(kind::ACCEPT, sk);
    }
    0
}

/// match-proto:v6.1:net/ipv4/inet_connection_sock.c:struct sock *inet_csk_complete_hashdance(struct sock *sk, struct sock *child, struct request_sock *req, bool own_req)
/// The final ACK of a server-side handshake: returns the child socket once it is in the
/// accept queue, NULL if another CPU won the race or the listener is closing.
#[fexit(function = "inet_csk_complete_hashdance")]
pub fn fexit_inet_csk_complete_hashdance(ctx: FExitContext) -> i32 {
    if let Ok(child) = ctx.ret::<*const u8>() {
        emit_from_sock(kind::ESTABLISHED, child);
    }
    0
}

/// match-proto:v6.1:net/ipv4/tcp.c:void tcp_close(struct sock *sk, long timeout)
#[fentry(function = "tcp_close")]
pub fn fentry_tcp_close(ctx: FEntryContext) -> i32 {
    emit_close(ctx.arg::<*const u8>(0));
    0
}

/// match-proto:v6.1:net/ipv4/tcp.c:void tcp_done(struct sock *sk)
#[fentry(function = "tcp_done")]
pub fn fentry_tcp_done(ctx: FEntryContext) -> i32 {
    emit_abort(ctx.arg::<*const u8>(0));
    0
}

/// match-proto:v6.1:net/ipv4/tcp.c:int tcp_disconnect(struct sock *sk, int flags)
#[fentry(function = "tcp_disconnect")]
pub fn fentry_tcp_disconnect(ctx: FEntryContext) -> i32 {
    emit_abort(ctx.arg::<*const u8>(0));
    0
}

// ---- 2. kprobe / kretprobe -------------------------------------------------------------

#[kprobe]
pub fn kprobe_tcp_connect(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(0) {
        emit_from_sock(kind::CONNECT, sk);
    }
    0
}

#[kretprobe]
pub fn kretprobe_inet_csk_accept(ctx: RetProbeContext) -> u32 {
    if !accepts_from_syscalls(config()) {
        emit_from_sock(kind::ACCEPT, ctx.ret::<*const u8>());
    }
    0
}

#[kretprobe]
pub fn kretprobe_inet_csk_complete_hashdance(ctx: RetProbeContext) -> u32 {
    emit_from_sock(kind::ESTABLISHED, ctx.ret::<*const u8>());
    0
}

#[kprobe]
pub fn kprobe_tcp_close(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(0) {
        emit_close(sk);
    }
    0
}

#[kprobe]
pub fn kprobe_tcp_done(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(0) {
        emit_abort(sk);
    }
    0
}

#[kprobe]
pub fn kprobe_tcp_disconnect(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(0) {
        emit_abort(sk);
    }
    0
}

// ---- 3. sock:inet_sock_set_state -------------------------------------------------------

/// Maps a state transition to the event it means, or 0 for transitions that change
/// nothing about liveness. Live = handshake completed and not yet closed locally, i.e. the
/// `ss` states ESTABLISHED and CLOSE_WAIT.
///
/// A connect whose port allocation fails (`EADDRNOTAVAIL`: the ephemeral range ran out)
/// goes `SYN_SENT` -> `CLOSE` before it has a local port: `tcp_v4_connect` and
/// `tcp_v6_connect` enter `SYN_SENT`, then `inet_hash_connect` finds no port and they
/// `goto failure`, which closes the socket. The callers check the local port before they
/// build the event: a `SYN_SENT` -> `CLOSE` with a port is a connect that got its port and
/// failed later (refused, timed out, reset), not the range running out. Only the
/// tracepoint paths run this, and that is how they count failed connects: watching
/// `connect()` return instead takes a syscall tracepoint, which sends every system call
/// of every task on the box through the kernel's slow syscall path (about 35 ns more
/// each, measured here).
#[inline(always)]
fn kind_of_transition(old: u8, new: u8) -> u8 {
    if old == tcp_state::SYN_SENT && new == tcp_state::CLOSE {
        return kind::CONNECT_FAILED;
    }
    if new == tcp_state::ESTABLISHED {
        if old == tcp_state::SYN_SENT {
            return kind::CONNECT;
        }
        if old == tcp_state::SYN_RECV {
            return kind::ACCEPT;
        }
        return 0;
    }
    let was_live = old == tcp_state::ESTABLISHED || old == tcp_state::CLOSE_WAIT;
    let now_gone =
        new == tcp_state::FIN_WAIT1 || new == tcp_state::LAST_ACK || new == tcp_state::CLOSE;
    if was_live && now_gone { kind::CLOSE } else { 0 }
}

/// Whether a transition matters to `track_connecting`: only with `details` on.
#[inline(always)]
fn tracks_connecting(old: u8, new: u8, cfg: &Config) -> bool {
    cfg.details != 0 && (new == tcp_state::SYN_SENT || old == tcp_state::SYN_SENT)
}

/// Remembers the connecting task at `SYN_SENT`; forgets it when the connect fails.
/// Returns true when the transition needs no further handling (the remembering).
#[inline(always)]
fn track_connecting(sk: u64, old: u8, new: u8, cfg: &Config) -> bool {
    if !tracks_connecting(old, new, cfg) {
        return false;
    }
    if new == tcp_state::SYN_SENT {
        let pid_tgid = bpf_get_current_pid_tgid();
        let mut owner =
            Connector { tgid: (pid_tgid >> 32) as u32, pid: pid_tgid as u32, comm: [0; 16] };
        unsafe { raw::bpf_get_current_comm(owner.comm.as_mut_ptr().cast(), 16) };
        let _ = CONNECTING.insert(&sk, &owner, 0);
        return true;
    }
    if old == tcp_state::SYN_SENT && new != tcp_state::ESTABLISHED {
        let _ = CONNECTING.remove(&sk);
    }
    false
}

/// Attributes a completed connect to the task that called `connect()`, and says whether
/// the event's task is the socket's owner. Only closes run in the owner's context on this
/// path: accepted connections become established in softirq, before any accept().
#[inline(always)]
fn attribute_connect(ev: &mut Event, cfg: &Config) -> Owner {
    // A failed connect closes in `connect()` itself.
    if ev.kind == kind::CLOSE || ev.kind == kind::CONNECT_FAILED {
        return Owner::Current;
    }
    if ev.kind != kind::CONNECT || cfg.details == 0 {
        return Owner::Unknown;
    }
    if let Some(owner) = unsafe { CONNECTING.get(&ev.sock) } {
        ev.tgid = owner.tgid;
        ev.pid = owner.pid;
        ev.comm = owner.comm;
        let _ = CONNECTING.remove(&ev.sock);
        return Owner::Current;
    }
    Owner::Unknown
}

/// match-proto:v6.1:include/trace/events/sock.h:TRACE_EVENT(inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tp_btf_inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    // The kernel passes `int`s; every TCP state fits the low byte (`skc_state` is a u8).
    let (old, new) = (ctx.arg::<u32>(1) as u8, ctx.arg::<u32>(2) as u8);
    let cfg = config();
    // Most transitions change nothing we count: decided from the two states alone,
    // before any read of the socket.
    let kind = kind_of_transition(old, new);
    if (kind == 0 && !tracks_connecting(old, new, cfg)) || sk.is_null() {
        return 0;
    }
    if !is_tcp(sk, cfg) || track_connecting(sk as u64, old, new, cfg) || kind == 0 {
        return 0;
    }
    if kind == kind::CONNECT_FAILED && read::<u16>(sk, cfg.sock.sport) != 0 {
        return 0; // it had a port: see `kind_of_transition`
    }
    let mut slot = MaybeUninit::uninit();
    let ev = new_event(&mut slot, kind, sk, cfg);
    if fill_tuple_from_sock(ev, sk, cfg) {
        let owner = attribute_connect(ev, cfg);
        if admit(ev, sk, owner, cfg) {
            submit(ev);
        }
    }
    0
}

/// The classic tracepoint: fields at offsets read from
/// /sys/kernel/tracing/events/sock/inet_sock_set_state/format.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn tracepoint_inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let tp = cfg.tracepoint;
    let record = ctx.as_ptr() as *const u8;
    let (old, new, protocol) = (
        read::<u32>(record, tp.oldstate) as u8,
        read::<u32>(record, tp.newstate) as u8,
        read::<u16>(record, tp.protocol),
    );
    let kind = kind_of_transition(old, new);
    if (kind == 0 && !tracks_connecting(old, new, cfg)) || protocol != IPPROTO_TCP {
        return 0;
    }
    let sk = read::<u64>(record, tp.skaddr) as *const u8;
    if track_connecting(sk as u64, old, new, cfg) || kind == 0 {
        return 0;
    }
    if kind == kind::CONNECT_FAILED && read::<u16>(record, tp.sport) != 0 {
        return 0; // it had a port: see `kind_of_transition`
    }
    let mut slot = MaybeUninit::uninit();
    let ev = new_event(&mut slot, kind, sk, cfg);
    let family: u16 = read(record, tp.family);
    ev.family = family as u8;
    ev.lport = read(record, tp.sport);
    ev.rport = read(record, tp.dport);
    let (l, r) = (ev.laddr.as_mut_ptr(), ev.raddr.as_mut_ptr());
    if family == AF_INET {
        read_into(l, 4, record, tp.saddr);
        read_into(r, 4, record, tp.daddr);
    } else if family == AF_INET6 {
        read_into(l, 16, record, tp.saddr_v6);
        read_into(r, 16, record, tp.daddr_v6);
    } else {
        return 0;
    }
    let owner = attribute_connect(ev, cfg);
    if admit(ev, sk, owner, cfg) {
        submit(ev);
    }
    0
}

// ---- failed connects (fentry and kprobe paths) ----------------------------------------

/// `EADDRNOTAVAIL` comes from the port allocation inside `connect()`, before `tcp_connect`
/// runs, so on the paths that hook TCP functions the failure is only visible at the
/// syscall's return (the tracepoint paths see it as a state change: `kind_of_transition`).
/// On the fentry path the destination is read there from `connect()`'s own arguments,
/// still in the task's saved registers (BTF, Linux 5.15+, x86-64): a successful connect
/// costs this one comparison, no map and no entry hook. On the kprobe path, the one for
/// older kernels, and wherever this one does not load, `sys_enter_connect` and
/// `sys_exit_connect_saved` below do it.
#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if syscall_ret(&ctx, cfg) == Some(EADDRNOTAVAIL) {
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
        let addr: u64 = read(regs, cfg.connect.regs_uservaddr);
        emit_connect_failed(addr as *const u8, cfg);
    }
    0
}

/// The `struct sockaddr` a thread passed to `connect()`, from syscall entry to exit
/// (kernels without BTF only).
#[map]
static CONNECT_ADDRS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// match-proto:v6.1:net/socket.c:SYSCALL_DEFINE3(connect, int fd, struct sockaddr __user *uservaddr, int addrlen)
#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if let Ok(addr) = unsafe { ctx.read_at::<u64>(cfg.connect.uservaddr as usize) } {
        let _ = CONNECT_ADDRS.insert(&bpf_get_current_pid_tgid(), &addr, 0);
    }
    0
}

/// `sys_exit_connect` for kernels without BTF: the address saved at entry.
#[tracepoint]
pub fn sys_exit_connect_saved(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let key = bpf_get_current_pid_tgid();
    let Some(&addr) = (unsafe { CONNECT_ADDRS.get(&key) }) else { return 0 };
    let _ = CONNECT_ADDRS.remove(&key);
    if syscall_ret(&ctx, cfg) == Some(EADDRNOTAVAIL) {
        emit_connect_failed(addr as *const u8, cfg);
    }
    0
}

/// The return value in a `syscalls:sys_exit_*` record: `ret`, at the offset every such
/// record shares with `sys_exit_connect`'s (read from its tracefs format).
#[inline(always)]
fn syscall_ret(ctx: &TracePointContext, cfg: &Config) -> Option<i64> {
    unsafe { ctx.read_at::<i64>(cfg.connect.ret as usize) }.ok()
}

/// A `CONNECT_FAILED` event for the destination at user address `addr`.
#[inline(always)]
fn emit_connect_failed(addr: *const u8, cfg: &Config) {
    let mut slot = MaybeUninit::uninit();
    let ev = new_event(&mut slot, kind::CONNECT_FAILED, core::ptr::null(), cfg);
    ev.netns = current_netns(cfg);
    // struct sockaddr_in / sockaddr_in6: family, then the port in network order, then the
    // address (after the 4-byte flow info for IPv6).
    let family = unsafe { bpf_probe_read_user(addr.cast::<u16>()) }.unwrap_or(0);
    let port = unsafe { bpf_probe_read_user(addr.add(2).cast::<u16>()) }.unwrap_or(0);
    ev.family = family as u8;
    ev.rport = u16::from_be(port);
    if family == AF_INET {
        let r = unsafe { bpf_probe_read_user(addr.add(4).cast::<[u8; 4]>()) }.unwrap_or([0; 4]);
        ev.raddr[..4].copy_from_slice(&r);
    } else if family == AF_INET6 {
        ev.raddr =
            unsafe { bpf_probe_read_user(addr.add(8).cast::<[u8; 16]>()) }.unwrap_or([0; 16]);
    } else {
        return;
    }
    if admit(ev, core::ptr::null(), Owner::Current, cfg) {
        submit(ev);
    }
}

// ---- accepts under --pid (every path) -------------------------------------------------

/// `--pid` needs the accepting process. On the tracepoint paths a server connection
/// becomes established in softirq, before any process holds it; on the others the return
/// of an `accept()` that was already blocked when tcptrace attached is not seen (a
/// trampoline or kretprobe only catches calls made after it). Userspace attaches these two
/// under `--pid` on every path: when `accept()` returns in a matching process, the
/// connection is admitted and counted from then, and `inet_csk_accept` stays quiet.
#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    emit_accepted(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    emit_accepted(&ctx);
    0
}

/// Whether accept events come from `sys_exit_accept[4]` (under `--pid`, with the offsets).
#[inline(always)]
fn accepts_from_syscalls(cfg: &Config) -> bool {
    cfg.accept.valid != 0 && cfg.sock.valid != 0 && cfg.filter.n_pids > 0
}

/// The new file descriptor (`syscall_ret`) to its socket, through the calling task's file
/// table.
#[inline(always)]
fn emit_accepted(ctx: &TracePointContext) {
    let cfg = config();
    if !accepts_from_syscalls(cfg) {
        return;
    }
    let o = &cfg.accept;
    let Some(fd) = syscall_ret(ctx, cfg) else { return };
    if fd < 0 {
        return;
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let files: u64 = read(task, o.task_files);
    if files == 0 {
        return;
    }
    let fdt: u64 = read(files as *const u8, o.files_fdt);
    if fdt == 0 {
        return;
    }
    let max_fds: u32 = read(fdt as *const u8, o.fdt_max_fds);
    if fd as u64 >= u64::from(max_fds) {
        return;
    }
    let fds: u64 = read(fdt as *const u8, o.fdt_fd);
    if fds == 0 {
        return;
    }
    let file: u64 = read((fds + fd as u64 * 8) as *const u8, 0);
    if file == 0 {
        return;
    }
    let socket: u64 = read(file as *const u8, o.file_private_data);
    if socket == 0 {
        return;
    }
    let sk: u64 = read(socket as *const u8, o.socket_sk);
    if sk == 0 {
        return;
    }
    // A connection reset while it waited in the queue comes out of accept() closed: no
    // close would follow its accept on the tracepoint paths.
    let sk = sk as *const u8;
    if is_tcp(sk, cfg) && is_live(sk, cfg) {
        emit_from_sock(kind::ACCEPT, sk);
    }
}

/// Inode of the current task's network namespace: `current->nsproxy->net_ns->ns.inum`.
#[inline(always)]
fn current_netns(cfg: &Config) -> u32 {
    if cfg.connect.task_nsproxy == 0 || cfg.sock.valid == 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let nsproxy: u64 = read(task, cfg.connect.task_nsproxy);
    if nsproxy == 0 {
        return 0;
    }
    let net: u64 = read(nsproxy as *const u8, cfg.connect.nsproxy_net_ns);
    if net == 0 {
        return 0;
    }
    read(net as *const u8, cfg.sock.net_inum)
}

// ---- filters (--port, --addr, --pid, --netns, --cgroup) ---------------------------------

/// Whether the task running the hook owns the event's socket: true in process context
/// (connect, accept, close), false in softirq where the CPU runs an unrelated task.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    Current,
    Unknown,
}

/// Decides whether `ev` goes to the ring; counts it in `FILTERED` when it does not. Runs
/// before the ring is touched, so a filtered-out event costs no ring space.
#[inline(always)]
fn admit(ev: &Event, sk: *const u8, owner: Owner, cfg: &Config) -> bool {
    let f = &cfg.filter;
    let pass = any_port(&f.ports, f.n_ports, ev.lport, ev.rport)
        && any_port(&f.lports, f.n_lports, ev.lport, ev.lport)
        && any_port(&f.rports, f.n_rports, ev.rport, ev.rport)
        && any_addr(&f.addrs, f.n_addrs, ev)
        && any_u32(&f.netns, f.n_netns, ev.netns)
        && any_cgroup(sk, cfg)
        && pid_admits(ev, owner, cfg);
    if !pass && let Some(filtered) = FILTERED.get_ptr_mut(0) {
        unsafe { *filtered += 1 };
    }
    pass
}

#[inline(always)]
fn any_port(values: &[u16; FILTER_MAX], n: u32, a: u16, b: u16) -> bool {
    if n == 0 {
        return true;
    }
    let mut i = 0;
    while i < FILTER_MAX && (i as u32) < n {
        if values[i] == a || values[i] == b {
            return true;
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn any_u32(values: &[u32; FILTER_MAX], n: u32, v: u32) -> bool {
    if n == 0 {
        return true;
    }
    let mut i = 0;
    while i < FILTER_MAX && (i as u32) < n {
        if values[i] == v {
            return true;
        }
        i += 1;
    }
    false
}

/// The remote address, as two halves of an IPv6 address (IPv4 as `::ffff:a.b.c.d`).
#[inline(always)]
fn remote_halves(ev: &Event) -> [u64; 2] {
    let mut v6 = ev.raddr;
    if u16::from(ev.family) == AF_INET {
        v6 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v6[0], v6[1], v6[2], v6[3]];
    }
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&v6[..8]);
    lo.copy_from_slice(&v6[8..]);
    [u64::from_ne_bytes(hi), u64::from_ne_bytes(lo)]
}

#[inline(always)]
fn any_addr(values: &[Cidr; FILTER_MAX], n: u32, ev: &Event) -> bool {
    if n == 0 {
        return true;
    }
    let r = remote_halves(ev);
    let mut i = 0;
    while i < FILTER_MAX && (i as u32) < n {
        let c = &values[i];
        if r[0] & c.mask[0] == c.addr[0] && r[1] & c.mask[1] == c.addr[1] {
            return true;
        }
        i += 1;
    }
    false
}

/// The socket's cgroup (where the socket was created; an accepted socket inherits its
/// listener's), readable in softirq too. A failed connect has no socket: the caller's.
#[inline(always)]
fn any_cgroup(sk: *const u8, cfg: &Config) -> bool {
    let f = &cfg.filter;
    if f.n_cgroups == 0 {
        return true;
    }
    let id = if sk.is_null() { unsafe { bpf_get_current_cgroup_id() } } else { cgroup_of(sk, cfg) };
    let mut i = 0;
    while i < FILTER_MAX && (i as u32) < f.n_cgroups {
        if f.cgroups[i] == id {
            return true;
        }
        i += 1;
    }
    false
}

/// `sk->sk_cgrp_data.cgroup->kn->id`, 0 when unknown.
#[inline(always)]
fn cgroup_of(sk: *const u8, cfg: &Config) -> u64 {
    let c = cfg.cgroup;
    if c.valid == 0 {
        return 0;
    }
    let cgroup: u64 = read(sk, c.sock_cgroup);
    if cgroup == 0 {
        return 0;
    }
    let kn: u64 = read(cgroup as *const u8, c.cgroup_kn);
    if kn == 0 {
        return 0;
    }
    read(kn as *const u8, c.kn_id)
}

/// `--pid`: an open passes when its owner is known and matches, and is remembered so that
/// its close passes wherever that runs; a close also passes when the closing task matches
/// (connections that were open before tcptrace started).
#[inline(always)]
fn pid_admits(ev: &Event, owner: Owner, cfg: &Config) -> bool {
    let f = &cfg.filter;
    if f.n_pids == 0 {
        return true;
    }
    let matches = owner == Owner::Current && any_u32(&f.pids, f.n_pids, ev.tgid);
    if ev.kind == kind::CLOSE {
        let admitted = unsafe { ADMITTED.get(&ev.sock) }.is_some();
        if admitted {
            let _ = ADMITTED.remove(&ev.sock);
        }
        return admitted || matches;
    }
    if matches && ev.kind != kind::CONNECT_FAILED {
        let _ = ADMITTED.insert(&ev.sock, &1, 0);
    }
    matches
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
