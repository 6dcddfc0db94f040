//! What a run cost in processes, read from /proc: a tracer's wake-ups and CPU time, and
//! the kernel's softirq threads' CPU time; a process's resident memory and lifetime CPU
//! time (the soak's curve); and what a process's fds point at (its BPF programs and
//! attachments).

use std::{fs, time::Duration};

/// The CPU time of the kernel's softirq threads (ksoftirqd/N), from their schedstat.
pub(super) fn softirq_threads_cpu() -> Duration {
    let Ok(procs) = fs::read_dir("/proc") else { return Duration::ZERO };
    let ns = procs
        .filter_map(Result::ok)
        .filter(|p| {
            fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .filter_map(|p| fs::read_to_string(p.path().join("schedstat")).ok())
        .filter_map(|s| parse_schedstat_ns(&s))
        .sum();
    Duration::from_nanos(ns)
}

/// The first field of /proc/PID/task/TID/schedstat: time on the CPU, in ns (exact, unlike
/// the tick-sampled split of /proc/PID/stat).
fn parse_schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
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
            sample.voluntary_switches += parse_voluntary_switches(&status)?;
            let schedstat = fs::read_to_string(dir.join("schedstat")).ok()?;
            sample.cpu_ns += parse_schedstat_ns(&schedstat)?;
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
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten()?;
        let ticks = parse_stat_cpu_ticks(&stat)?;
        Some(Self {
            rss_bytes: parse_vm_rss_kib(&status)? * 1024,
            cpu: Duration::from_nanos(
                ticks.saturating_mul(1_000_000_000) / u64::try_from(hz).ok()?,
            ),
        })
    }
}

/// utime + stime of `/proc/PID/stat`, in clock ticks: its 14th and 15th fields, counted
/// after the comm in parentheses (which may hold spaces and parentheses itself).
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The open fds of process `pid` (their numbers) and what each points at
/// (`anon_inode:bpf-prog`, a path); none if its fds cannot be read.
pub(super) fn fd_targets(pid: u32) -> impl Iterator<Item = (String, String)> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten();
    fds.filter_map(Result::ok).filter_map(|fd| {
        let target = fs::read_link(fd.path()).ok()?.to_string_lossy().into_owned();
        Some((fd.file_name().to_string_lossy().into_owned(), target))
    })
}

fn parse_voluntary_switches(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t42\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(parse_voluntary_switches(status), Some(42));
        assert_eq!(parse_schedstat_ns("123456789 2000 31\n"), Some(123_456_789));
        assert_eq!(parse_schedstat_ns(""), None);
        let a = ProcSample { voluntary_switches: 100, cpu_ns: 100_000_000 };
        let b = ProcSample { voluntary_switches: 300, cpu_ns: 600_000_000 };
        let (w, c) = b.since(&a, 2.0);
        assert!((w - 100.0).abs() < 1e-9 && (c - 0.25).abs() < 1e-9);
    }

    #[test]
    fn parses_memory_and_lifetime_cpu() {
        let stat = "4242 (tcp (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 9 0\n";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
        let status = "Name:\ttcptrace\nVmHWM:\t  170000 kB\nVmRSS:\t  161324 kB\n";
        assert_eq!(parse_vm_rss_kib(status), Some(161_324));
        assert_eq!(parse_vm_rss_kib("VmRSSx:\t12 kB\n"), None);
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
