//! The second set, kprobe/kretprobe on the same six functions as `fentry` (needs
//! `CONFIG_KPROBES`): for kernels that refuse trampolines.

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use tcptrace_common::kind;

use crate::{
    event::{emit_abort, emit_close, emit_from_sock},
    maps::config,
    syscalls::accepts_from_syscalls,
};

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
