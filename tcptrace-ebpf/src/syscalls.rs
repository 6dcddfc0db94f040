//! The `syscalls:` tracepoints: failed connects on the paths that hook TCP functions, and
//! accepts under `--pid` on every path. Both need the system call's view (its return
//! value, its arguments, the calling task), which the TCP hooks do not have.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_task_btf,
        bpf_probe_read_user, bpf_task_pt_regs,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use core::mem::MaybeUninit;

use tcptrace_common::{AF_INET, AF_INET6, Config, EADDRNOTAVAIL, kind};

use crate::{
    event::{emit_from_sock, new_event, submit},
    filter::{Owner, admit},
    maps::{CONNECT_ADDRS, config},
    read::{current_netns, is_live, is_tcp, read},
};

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
pub(crate) fn accepts_from_syscalls(cfg: &Config) -> bool {
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
