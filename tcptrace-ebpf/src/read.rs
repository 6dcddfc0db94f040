//! Reading kernel memory: `struct sock` fields at the offsets in `CONFIG`, and the
//! namespace of a socket. Every program reads through these, so
//! a failed read is zero everywhere, never an error to handle.

use aya_ebpf::helpers::generated as raw;
use core::mem::MaybeUninit;

use tcptrace_common::{BitField, Config, IPPROTO_TCP, tcp_state};

/// Kernel memory at `base + offset`, zero if unreadable.
#[inline(always)]
pub(crate) fn read<T: Copy>(base: *const u8, offset: u32) -> T {
    let mut value = MaybeUninit::<T>::uninit();
    read_into(value.as_mut_ptr().cast(), size_of::<T>(), base, offset);
    // The helper zeroes its destination when it fails, so the value is initialised.
    unsafe { value.assume_init() }
}

/// Copies `len` bytes of kernel memory at `base + offset` to `dst` (zeroes on failure).
/// The raw helper, not aya's typed wrapper: its `Result` of a small array compiles to
/// calls of a BPF `memset` loop, several per event.
#[inline(always)]
pub(crate) fn read_into(dst: *mut u8, len: usize, base: *const u8, offset: u32) {
    unsafe {
        raw::bpf_probe_read_kernel(dst.cast(), len as u32, base.add(offset as usize).cast());
    }
}

/// A `struct sock` field that is a bitfield in some kernels (see `BitField`).
#[inline(always)]
pub(crate) fn read_bits(sk: *const u8, field: BitField) -> u32 {
    let word: u32 = read(sk, field.offset);
    (word >> field.shift) & field.mask
}

/// The tracepoint also fires for other protocols (SCTP, MPTCP), and `accept()` serves them.
#[inline(always)]
pub(crate) fn is_tcp(sk: *const u8, cfg: &Config) -> bool {
    read_bits(sk, cfg.sock.protocol) as u16 == IPPROTO_TCP
}

/// Live as the ledger counts it: `ESTABLISHED` or `CLOSE_WAIT`.
#[inline(always)]
pub(crate) fn is_live(sk: *const u8, cfg: &Config) -> bool {
    let state: u8 = read(sk, cfg.sock.state);
    state == tcp_state::ESTABLISHED || state == tcp_state::CLOSE_WAIT
}

/// Inode of the socket's network namespace: `sk->__sk_common.skc_net.net->ns.inum`.
#[inline(always)]
pub(crate) fn netns_of(sk: *const u8, cfg: &Config) -> u32 {
    if cfg.sock.valid == 0 || sk.is_null() {
        return 0;
    }
    let net: u64 = read(sk, cfg.sock.net);
    if net == 0 {
        return 0;
    }
    read(net as *const u8, cfg.sock.net_inum)
}
