//! The state changes every path counts: connect, accept, close and failed connects
//! derived from TCP state transitions, and the connecting task carried from `SYN_SENT` to
//! `ESTABLISHED`; with the `sock:inet_sock_set_state` tracepoint (BTF-typed `tp_btf` or
//! classic). The fentry and kprobe programs on `tcp_set_state` call `on_state_change` too.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, generated as raw},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use core::mem::MaybeUninit;

use tcptrace_common::{AF_INET, AF_INET6, Config, Event, IPPROTO_TCP, kind, tcp_state};

use crate::{
    event::{fill_tuple_from_sock, new_event, submit},
    filter::{Owner, admit},
    maps::{CONNECTING, Connector, config},
    read::{is_tcp, read, read_into},
};

/// Maps a state transition to the event it means, or 0 for transitions that change
/// nothing about liveness: the one rule of what "live" is. Live = handshake completed and
/// not yet closed locally, i.e. the `ss` states ESTABLISHED and CLOSE_WAIT. So a connect is
/// live from its SYN-ACK, not its SYN; a `shutdown(SHUT_WR)` (`FIN_WAIT1`) ends it; a
/// server connection is live from its final ACK however its child was made (SYN cookie,
/// Fast Open) and whether or not `accept()` ever takes it; one reset before `accept()`
/// goes `ESTABLISHED -> CLOSE` and is never opened again.
///
/// A connect whose port allocation fails (`EADDRNOTAVAIL`: the ephemeral range ran out)
/// goes `SYN_SENT` -> `CLOSE` before it has a local port: `tcp_v4_connect` and
/// `tcp_v6_connect` enter `SYN_SENT`, then `inet_hash_connect` finds no port and they
/// `goto failure`, which closes the socket. The callers check the local port before they
/// build the event: a `SYN_SENT` -> `CLOSE` with a port is a connect that got its port and
/// failed later (refused, timed out, reset), not the range running out. Every path counts
/// failed connects this way: watching `connect()` return instead takes a syscall
/// tracepoint, which sends every system call of every task on the box through the
/// kernel's slow syscall path (about 35 ns more each, measured here).
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
/// the event's task is the socket's owner: a close does (a reset closes in softirq, but
/// `pid_admits` passes a close of an admitted socket wherever it runs); an accepted
/// connection becomes established in softirq, before any accept(), and does not.
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

/// One TCP state change, whichever hook saw it: the tracepoint in `tcp_set_state` (tp_btf
/// and classic), or `tcp_set_state` itself (fentry and kprobe). Every path counts the same
/// transitions, so every path agrees with `ss` on when a connection starts and stops
/// being live.
#[inline(always)]
pub(crate) fn on_state_change(sk: *const u8, old: u8, new: u8, cfg: &Config) {
    // Most transitions change nothing we count: decided from the two states alone,
    // before any further read of the socket.
    let kind = kind_of_transition(old, new);
    if (kind == 0 && !tracks_connecting(old, new, cfg)) || sk.is_null() {
        return;
    }
    if !is_tcp(sk, cfg) || track_connecting(sk as u64, old, new, cfg) || kind == 0 {
        return;
    }
    if kind == kind::CONNECT_FAILED && read::<u16>(sk, cfg.sock.sport) != 0 {
        return; // it had a port: see `kind_of_transition`
    }
    let mut slot = MaybeUninit::uninit();
    let ev = new_event(&mut slot, kind, sk, cfg);
    if fill_tuple_from_sock(ev, sk, cfg) {
        let owner = attribute_connect(ev, cfg);
        if admit(ev, sk, owner, cfg) {
            submit(ev);
        }
    }
}

/// match-proto:v6.1:include/trace/events/sock.h:TRACE_EVENT(inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tp_btf_inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    // The kernel passes `int`s; every TCP state fits the low byte (`skc_state` is a u8).
    let (old, new) = (ctx.arg::<u32>(1) as u8, ctx.arg::<u32>(2) as u8);
    on_state_change(ctx.arg(0), old, new, config());
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
