//! tcptrace's kernel side. Every attach path hooks the same thing, the TCP state change,
//! and derives connect, accept, close and failed connects from its transitions in one
//! place (`state::on_state_change`), so that every path agrees with `ss` on when a
//! connection is live. Userspace loads exactly one of the programs that see it:
//!
//! 1. fentry on `tcp_set_state`, the function that makes the change;
//! 2. a kprobe on it, where trampolines are refused;
//! 3. the `sock:inet_sock_set_state` tracepoint it fires (BTF-typed `tp_btf` or classic).
//!
//! No `struct sock` offset is compiled in: userspace reads them from the running kernel's
//! BTF (or the tracepoint's format file) and hands them over in the `CONFIG` global.
//!
//! The modules follow an event's way out: `read` (kernel memory at the `CONFIG` offsets),
//! `event` (building one, `submit`), `filter` (`admit`, before the ring is touched), with
//! `maps` holding every map and `CONFIG`. The programs are one module per hook kind:
//! `fentry`, `kprobe`, `state` (the tracepoint in both forms, and the transition rule),
//! and `syscalls` for the `syscalls:` tracepoints under `--pid` (accepts, on every path).
//! Program function names are what userspace loads them by (the table of attach paths in
//! `tcptrace-common/src/attach.rs`), so they stay as they are. Every helper is
//! `#[inline(always)]` and is inlined into each program that calls it: whether the
//! verifier accepts a program depends on that inlining.
#![no_std]
#![no_main]

mod event;
mod fentry;
mod filter;
mod kprobe;
mod maps;
mod read;
mod state;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
