//! What a run cost in processes, read from /proc: a tracer's wake-ups and CPU time, and
//! the kernel's softirq threads' CPU time; a process's resident memory and lifetime CPU
//! time (the soak's curve); and what a process's fds point at (its BPF programs and
//! attachments). The parsing is tcptrace-proc's, the one home of `/proc` reading.

use std::{fs, time::Duration};

use tcptrace_proc::{Pid, schedstat_ns, status_field};

/// The CPU time of the kernel's softirq threads (ksoftirqd/N), from their schedstat.
pub(super) fn softirq_threads_cpu() -> Duration {
    let Ok(procs) = fs::read_dir("/proc") else { return Duration::ZERO };
    let ns = procs
        .filter_map(Result::ok)
        .filter(|p| {
            fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .filter_map(|p| fs::read_to_string(p.path().join("schedstat")).ok())
        .filter_map(|s| schedstat_ns(&s))
        .sum();
    Duration::from_nanos(ns)
}

/// Counters of a process, summed over its threads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ProcSample {
    pub(super) voluntary_switches: u64,
    /// Time on the CPU, in ns.
    pub(super) cpu_ns: u64,
}

impl ProcSample {
    /// Voluntary context switches are the wake-ups after blocking (in epoll or poll):
    /// an upper bound on the consumer's wake-ups, which also counts its own timers.
    pub(super) fn read(pid: u32) -> Option<Self> {
        let mut sample = Self { voluntary_switches: 0, cpu_ns: 0 };
        for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let dir = task.ok()?.path();
            let status = fs::read_to_string(dir.join("status")).ok()?;
            // The wake-ups after blocking (in epoll or poll).
            sample.voluntary_switches += status_field(&status, "voluntary_ctxt_switches")?;
            let schedstat = fs::read_to_string(dir.join("schedstat")).ok()?;
            sample.cpu_ns += schedstat_ns(&schedstat)?;
        }
        Some(sample)
    }

    /// Wake-ups a second and CPU share since `before`, over `wall` seconds.
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    pub(super) fn since(&self, before: &Self, wall: f64) -> (f64, f64) {
        let switches = self.voluntary_switches.saturating_sub(before.voluntary_switches) as f64;
        let ns = self.cpu_ns.saturating_sub(before.cpu_ns) as f64;
        (switches / wall, ns / 1e9 / wall)
    }
}

/// A process's resident memory and the CPU time it has used since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Usage {
    pub(super) rss_bytes: u64,
    /// User + system time, every thread, the exited ones included (`/proc/PID/stat`, in
    /// clock ticks: 10 ms here). [`ProcSample`]'s per-thread schedstat sum is exact but
    /// loses the time of threads that have exited, and tcptrace runs each foreign
    /// namespace's sock_diag dump in a short-lived thread.
    pub(super) cpu: Duration,
}

impl Usage {
    pub(super) fn read(pid: u32) -> Option<Self> {
        let pid = Pid::Id(pid);
        Some(Self { rss_bytes: tcptrace_proc::rss_bytes(pid)?, cpu: tcptrace_proc::cpu_time(pid)? })
    }
}

/// The open fds of process `pid` (their numbers) and what each points at
/// (`anon_inode:bpf-prog`, a path); none if its fds cannot be read.
pub(super) fn fd_targets(pid: u32) -> impl Iterator<Item = (String, String)> {
    tcptrace_proc::fd_targets(Pid::Id(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_since() {
        let a = ProcSample { voluntary_switches: 100, cpu_ns: 100_000_000 };
        let b = ProcSample { voluntary_switches: 300, cpu_ns: 600_000_000 };
        let (w, c) = b.since(&a, 2.0);
        assert!((w - 100.0).abs() < 1e-9 && (c - 0.25).abs() < 1e-9);
        let own = Usage::read(std::process::id()).unwrap();
        assert!(own.rss_bytes > 0);
    }

    #[test]
    fn lists_what_the_fds_point_at() {
        let exe = std::env::current_exe().unwrap();
        let file = fs::File::open(&exe).unwrap();
        let targets: Vec<_> = fd_targets(std::process::id()).collect();
        assert!(targets.iter().any(|(_, t)| *t == exe.to_string_lossy()), "{targets:?}");
        assert!(targets.iter().all(|(fd, _)| fd.parse::<u32>().is_ok()), "{targets:?}");
        drop(file);
    }
}
