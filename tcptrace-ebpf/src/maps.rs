//! Every map of the object and the `CONFIG` global: the names userspace looks up and
//! patches at load time, in one place, whichever programs use them.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};

use tcptrace_common::{Config, DEFAULT_RING_BYTES};

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Events dropped because the ring was full, per CPU (no atomics on the hot path).
#[map]
pub(crate) static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Events the filter kept out of the ring, per CPU: they cost a counter, not ring space.
#[map]
pub(crate) static FILTERED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Sockets whose open passed a `--pid` filter, so that their close passes too wherever it
/// runs (a reset closes in softirq, on whatever task the CPU was running). LRU: a socket
/// whose close is never seen cannot leak an entry.
#[map]
pub(crate) static ADMITTED: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// Who called `connect()`, per socket, from `CLOSE -> SYN_SENT` (which runs in the
/// caller's context) until `SYN_SENT -> ESTABLISHED` (which often runs in softirq context,
/// on whatever task the CPU was running), with `details` on. LRU so a socket whose
/// connect never resolves cannot leak an entry.
#[map]
pub(crate) static CONNECTING: LruHashMap<u64, Connector> = LruHashMap::with_max_entries(16384, 0);

#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Connector {
    pub(crate) tgid: u32,
    pub(crate) pid: u32,
    pub(crate) comm: [u8; 16],
}

/// Filled in by userspace at load time.
#[unsafe(no_mangle)]
static CONFIG: Config = unsafe { core::mem::zeroed() };

#[inline(always)]
pub(crate) fn config() -> &'static Config {
    // The value is patched into the object after compilation, so the compiler must not fold
    // the zeroes above into the code: the pointer goes through a volatile read, which makes
    // it opaque. A reference, not a copy: with the filter the struct outgrows the 512-byte
    // BPF stack.
    unsafe { &*core::ptr::read_volatile(&&raw const CONFIG) }
}
