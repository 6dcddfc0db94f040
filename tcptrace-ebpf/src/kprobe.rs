//! The second set, a kprobe on `tcp_set_state` (needs `CONFIG_KPROBES`): the fentry
//! program for kernels that refuse trampolines.

use aya_ebpf::{macros::kprobe, programs::ProbeContext};

use crate::{maps::config, read::read, state::on_state_change};

#[kprobe]
pub fn kprobe_tcp_set_state(ctx: ProbeContext) -> u32 {
    let cfg = config();
    if let (Some(sk), Some(new)) = (ctx.arg::<*const u8>(0), ctx.arg::<u32>(1)) {
        let old: u8 = read(sk, cfg.sock.state);
        on_state_change(sk, old, new as u8, cfg);
    }
    0
}
