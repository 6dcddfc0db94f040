//! The first set, fentry/fexit: BPF trampolines on the six TCP functions (needs BTF and
//! function tracing allowed; Linux 5.17+). The cheapest, so `--attach auto` tries it first.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use tcptrace_common::kind;

use crate::{
    event::{emit_abort, emit_close, emit_from_sock},
    maps::config,
    syscalls::accepts_from_syscalls,
};

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
