//! The first set, fentry: a BPF trampoline on `tcp_set_state`, the function that makes
//! every TCP state change (and fires the state tracepoint). Needs BTF and function
//! tracing allowed (Linux 5.5+; the ring buffer makes it 5.8).
//!
//! It counts the same transitions as the tracepoint (`on_state_change`), so it agrees with
//! `ss` on when a connection is live. Hooks on `tcp_connect`, `inet_csk_accept` and
//! `tcp_close` did not: they counted a connect live from its SYN, a `shutdown(SHUT_WR)`
//! socket live until `close()`, SYN-cookie and Fast Open children only when `accept()`
//! returned, and a connection reset before `accept()` as live again when it was accepted.

use aya_ebpf::{macros::fentry, programs::FEntryContext};

use crate::{maps::config, read::read, state::on_state_change};

/// match-proto:v6.1:net/ipv4/tcp.c:void tcp_set_state(struct sock *sk, int state)
/// At entry `sk_state` still holds the old state, as the tracepoint's `oldstate` reads it.
#[fentry(function = "tcp_set_state")]
pub fn fentry_tcp_set_state(ctx: FEntryContext) -> i32 {
    let cfg = config();
    let sk: *const u8 = ctx.arg(0);
    let old: u8 = read(sk, cfg.sock.state);
    on_state_change(sk, old, ctx.arg::<u32>(1) as u8, cfg);
    0
}
