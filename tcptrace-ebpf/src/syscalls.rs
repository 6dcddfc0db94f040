//! The `syscalls:` tracepoints: accepts under `--pid` on every path. They need the system
//! call's view (its return value and the calling task), which the state change does not
//! have.

use aya_ebpf::{helpers::bpf_get_current_task, macros::tracepoint, programs::TracePointContext};

use tcptrace_common::{Config, kind};

use crate::{
    event::emit_from_sock,
    maps::config,
    read::{is_live, is_tcp, read},
};

// ---- accepts under --pid (every path) -------------------------------------------------

/// `--pid` needs the accepting process, and a server connection becomes established in
/// softirq, before any process holds it (the state change's task is whatever the CPU was
/// running, so `admit` keeps it out). Userspace attaches these two under `--pid` on every
/// path: when `accept()` returns in a matching process, the connection is admitted and
/// counted from then.
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

/// The return value in a `syscalls:sys_exit_*` record: `ret`, at the offset every such
/// record shares (read from `sys_exit_accept4`'s tracefs format).
#[inline(always)]
fn syscall_ret(ctx: &TracePointContext, cfg: &Config) -> Option<i64> {
    unsafe { ctx.read_at::<i64>(cfg.accept.ret as usize) }.ok()
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
