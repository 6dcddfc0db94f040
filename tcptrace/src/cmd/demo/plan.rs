//! Sizing before anything starts: workers by RLIMIT_NOFILE, the client side's range by
//! `--connections`, and the kernel memory all of it needs against what the box has.

use anyhow::{Context as _, bail};

use crate::{capacity::DEFAULT_RANGE, load::hold::nofile_limit};

use super::{DemoArgs, FULL_SIZE, SECOND_DESTINATION_CONNECTIONS};

/// Kernel memory per loopback socket, measured on the project's test host (about 9.5 GB
/// for 2,000,000 sockets): the basis of the memory check before the ramp.
const KERNEL_BYTES_PER_SOCKET: u64 = 4_800;
/// Ports of a fresh namespace's ephemeral range: the client side's when the demo runs at
/// full size, and the most a narrowed range gets.
const DEFAULT_RANGE_PORTS: u32 = DEFAULT_RANGE.1 as u32 - DEFAULT_RANGE.0 as u32 + 1;

/// Sizes decided before anything starts.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) per_worker: u64,
    pub(super) workers: u64,
    /// Ports of the client side's range, if narrowed.
    pub(super) client_range: Option<u32>,
    pub(super) kernel_bytes: u64,
}

pub(super) fn plan(args: &DemoArgs) -> anyhow::Result<Plan> {
    let nofile = nofile_limit().context("getrlimit(RLIMIT_NOFILE)")?;
    // Two sockets per connection (both ends are on this box), plus slack for the uneven
    // spread of a SO_REUSEPORT group and the process's own files.
    let fits = nofile.saturating_sub(256) * 4 / 10;
    if fits == 0 {
        bail!("RLIMIT_NOFILE is {nofile}: too low to hold connections; raise it (ulimit -n)");
    }
    let per_worker = args.per_process.min(fits);
    let workers = args.connections.div_ceil(per_worker);
    let client_range = (args.connections < FULL_SIZE).then(|| {
        u32::try_from(args.connections / 2).unwrap_or(u32::MAX).clamp(64, DEFAULT_RANGE_PORTS)
    });
    let client_sockets = if args.server_only {
        0
    } else {
        2 * u64::from(client_range.unwrap_or(DEFAULT_RANGE_PORTS))
            + 2 * SECOND_DESTINATION_CONNECTIONS
    };
    let kernel_bytes = (2 * args.connections + client_sockets) * KERNEL_BYTES_PER_SOCKET;
    let available = mem_available()?;
    if kernel_bytes > available / 10 * 9 {
        let fits = available / 10 * 9 / KERNEL_BYTES_PER_SOCKET / 2 - client_sockets / 2;
        bail!(
            "{} connections need about {} of kernel memory ({} B per socket, two sockets per \
             connection); this box has {} available. Try --connections {}",
            args.connections,
            gib(kernel_bytes),
            KERNEL_BYTES_PER_SOCKET,
            gib(available),
            fits / 1000 * 1000
        );
    }
    Ok(Plan { per_worker, workers, client_range, kernel_bytes })
}

#[expect(clippy::cast_precision_loss, reason = "a rounded figure for people")]
pub(super) fn gib(bytes: u64) -> String {
    if bytes < 1 << 30 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
    }
}

/// The box's `MemAvailable`, in bytes.
pub(super) fn mem_available() -> anyhow::Result<u64> {
    tcptrace_proc::mem_available().context("no MemAvailable in /proc/meminfo: is /proc mounted?")
}
