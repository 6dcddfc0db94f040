//! Building an event and sending it to the ring: from a state change (`state`), or from a
//! socket the current task holds (the accepts under `--pid`).

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated as raw};
use core::mem::MaybeUninit;

use tcptrace_common::{AF_INET, AF_INET6, Config, Event};

use crate::{
    filter::{Owner, admit},
    maps::{EVENTS, LOST, config},
    read::{netns_of, read, read_into},
};

/// Builds an event in `slot`: which socket and who ran the hook (when, and its `comm`,
/// with `details`); the caller fills in the 4-tuple. In place and zeroed in eight-byte
/// words: LLVM turns a zero initialiser of the event's odd-sized runs of zero fields, or
/// a copy of a zeroed event, into a call of a BPF `memset` that writes byte by byte, and
/// volatile stores cannot be merged into one.
#[inline(always)]
pub(crate) fn new_event<'a>(
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
pub(crate) fn fill_tuple_from_sock(ev: &mut Event, sk: *const u8, cfg: &Config) -> bool {
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
pub(crate) fn submit(ev: &Event) {
    if EVENTS.output::<Event>(ev, 0).is_err()
        && let Some(lost) = LOST.get_ptr_mut(0)
    {
        unsafe { *lost += 1 };
    }
}

/// An event for a socket that the current task holds (the accept under `--pid`).
#[inline(always)]
pub(crate) fn emit_from_sock(kind: u8, sk: *const u8) {
    if sk.is_null() {
        return;
    }
    let cfg = config();
    let mut slot = MaybeUninit::uninit();
    let ev = new_event(&mut slot, kind, sk, cfg);
    if fill_tuple_from_sock(ev, sk, cfg) && admit(ev, sk, Owner::Current, cfg) {
        submit(ev);
    }
}
