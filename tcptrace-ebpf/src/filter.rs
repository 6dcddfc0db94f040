//! The in-kernel filter (`--port`, `--addr`, `--pid`, `--netns`, `--cgroup`): `admit`
//! decides, before the ring is touched, whether an event is sent.

use tcptrace_common::{AF_INET, Cidr, Config, Event, FILTER_MAX, kind};

use crate::{
    maps::{ADMITTED, FILTERED},
    read::read,
};

/// Whether the task running the hook owns the event's socket: true in process context
/// (connect, accept, close), false in softirq where the CPU runs an unrelated task.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Current,
    Unknown,
}

/// Decides whether `ev` goes to the ring; counts it in `FILTERED` when it does not. Runs
/// before the ring is touched, so a filtered-out event costs no ring space.
#[inline(always)]
pub(crate) fn admit(ev: &Event, sk: *const u8, owner: Owner, cfg: &Config) -> bool {
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
/// listener's), readable in softirq too.
#[inline(always)]
fn any_cgroup(sk: *const u8, cfg: &Config) -> bool {
    let f = &cfg.filter;
    if f.n_cgroups == 0 {
        return true;
    }
    let id = cgroup_of(sk, cfg);
    let mut i = 0;
    while i < FILTER_MAX && (i as u32) < f.n_cgroups {
        if f.cgroups[i] == id {
            return true;
        }
        i += 1;
    }
    false
}

/// `sk->sk_cgrp_data.cgroup->kn->id`, 0 when unknown. Before Linux 5.15 the pointer's
/// low bits set mean the word holds net_cls/net_prio data instead, and the kernel then
/// takes the root cgroup: unknown here.
#[inline(always)]
fn cgroup_of(sk: *const u8, cfg: &Config) -> u64 {
    let c = cfg.cgroup;
    if c.valid == 0 {
        return 0;
    }
    let cgroup: u64 = read(sk, c.sock_cgroup);
    if cgroup == 0 || cgroup & 3 != 0 {
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
