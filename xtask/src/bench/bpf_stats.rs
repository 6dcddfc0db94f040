//! The BPF programs' own cost: `kernel.bpf_stats_enabled` on for the benchmark, and the run
//! time and count of the programs a tracer holds.

use std::fs;

use anyhow::{Context as _, Result};

use super::proc::fd_targets;

/// Sets `kernel.bpf_stats_enabled` to 1 while it lives, and restores the old value.
pub(super) struct BpfStatsOn {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStatsOn {
    pub(super) fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS} (or pass --no-bpf-stats)"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        Ok(Self { previous: previous.trim().to_owned() })
    }
}

impl Drop for BpfStatsOn {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.previous);
    }
}

/// Run time and run count, summed over the BPF programs a process holds (fdinfo of its
/// bpf-prog fds, each program once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct BpfStats {
    pub(super) run_time_ns: u64,
    pub(super) run_cnt: u64,
    pub(super) programs: usize,
}

impl BpfStats {
    pub(super) fn of(pid: u32) -> Self {
        let mut seen = Vec::new();
        let mut stats = Self::default();
        let progs = fd_targets(pid).filter(|(_, target)| target == "anon_inode:bpf-prog");
        for (fd, _) in progs {
            let info = format!("/proc/{pid}/fdinfo/{fd}");
            if let Some(prog) = fs::read_to_string(info).ok().as_deref().and_then(parse_prog_fdinfo)
                && !seen.contains(&prog.0)
            {
                seen.push(prog.0);
                stats.run_time_ns += prog.1;
                stats.run_cnt += prog.2;
                stats.programs += 1;
            }
        }
        stats
    }

    /// What ran since `before`; `None` if the process held no program (it may have closed
    /// their fds once attached).
    pub(super) fn since(&self, before: &Self) -> Option<Self> {
        (self.programs > 0).then(|| Self {
            run_time_ns: self.run_time_ns.saturating_sub(before.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(before.run_cnt),
            programs: self.programs,
        })
    }

    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    pub(super) fn ns_per_run(&self) -> Option<f64> {
        (self.run_cnt > 0 && self.run_time_ns > 0)
            .then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

/// (prog_id, run_time_ns, run_cnt) of a bpf-prog fd's fdinfo.
fn parse_prog_fdinfo(fdinfo: &str) -> Option<(u64, u64, u64)> {
    let field = |name: &str| {
        fdinfo.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
    };
    Some((field("prog_id")?, field("run_time_ns")?, field("run_cnt")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prog_fdinfo() {
        let fdinfo = "pos:\t0\nprog_type:\t26\nprog_id:\t77\nrun_time_ns:\t5000\nrun_cnt:\t40\n";
        assert_eq!(parse_prog_fdinfo(fdinfo), Some((77, 5000, 40)));
        assert_eq!(parse_prog_fdinfo("prog_id:\t77\n"), None);
        let before = BpfStats { run_time_ns: 1000, run_cnt: 10, programs: 2 };
        let after = BpfStats { run_time_ns: 5000, run_cnt: 30, programs: 2 };
        assert_eq!(after.since(&before).and_then(|d| d.ns_per_run()), Some(200.0));
        assert_eq!(BpfStats::default().since(&before), None);
    }
}
