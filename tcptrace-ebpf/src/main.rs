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
//!
//! The modules follow an event's way out: `read` (kernel memory at the `CONFIG` offsets),
//! `event` (building one, `submit`), `filter` (`admit`, before the ring is touched), with
//! `maps` holding every map and `CONFIG`. The programs are one module per set: `fentry`,
//! `kprobe`, `state` (the tracepoint in both forms), and `syscalls` for the `syscalls:`
//! tracepoints that go with them (failed connects on the first two sets, accepts under
//! `--pid` on all). Program function names are what userspace loads them by (the table of
//! attach paths in `tcptrace-common/src/attach.rs`), so they stay as they are. Every
//! helper is `#[inline(always)]` and is inlined into each program that calls it: whether
//! the verifier accepts a program depends on that inlining.
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
