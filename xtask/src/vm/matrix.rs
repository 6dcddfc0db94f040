//! The VM tier of `cargo xtask test`: three stock Debian kernels, every attach path on each,
//! split into boots that run two side by side on the project's 2-core machine.

use std::{
    sync::{Mutex, PoisonError},
    thread,
};

use tcptrace_common::attach::Path;

use super::{VmArgs, VmReport};
use crate::{
    attach::AttachPath,
    report::{Row, Verdict},
};

/// A kernel of the matrix: a Debian cloud kernel package whose apt suite `cargo xtask setup`
/// adds (see ../shared/PLATFORM.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatrixKernel {
    /// How the summary names it before it booted: `Debian 11 (5.10)`.
    pub name: &'static str,
    pub package: &'static str,
}

impl MatrixKernel {
    /// What the summary calls it: `vm 5.10.0-32-cloud-amd64`, as `uname -r` will say in the
    /// VM (Debian names the package after the release).
    pub fn label(&self) -> String {
        let release = self.package.trim_start_matches("linux-image-").trim_end_matches("-unsigned");
        format!("vm {release}")
    }
}

/// The kernels the VM tier boots, oldest first. [`FULL_SUITE_KERNEL`] is the one that runs
/// every test executable.
pub const KERNELS: [MatrixKernel; 3] = [
    MatrixKernel {
        name: "Debian 11 (5.10)",
        package: "linux-image-5.10.0-32-cloud-amd64-unsigned",
    },
    MatrixKernel { name: "Debian 12 (6.1)", package: super::kernel::PINNED },
    MatrixKernel {
        name: "Debian 13 (6.12)",
        package: "linux-image-6.12.117+deb13-cloud-amd64-unsigned",
    },
];

/// The kernel that runs the full suite on the function-hook paths: the one the VM tier was
/// first checked against.
pub const FULL_SUITE_KERNEL: &str = super::kernel::PINNED;

/// The paths that run the full suite on [`FULL_SUITE_KERNEL`]. The host's live tier already
/// runs the full suite on both tracepoint paths (auto picks tp-btf there), so in the VMs only
/// the function-hook paths, which the host cannot load, need it.
pub const FULL_SUITE_PATHS: [AttachPath; 2] =
    [AttachPath::Only(Path::Fentry), AttachPath::Only(Path::Kprobe)];

/// The kernel-facing test executables: what every other (kernel, path) pair runs. These are
/// the tests whose outcome depends on which hook saw a socket change state and when (events,
/// counts, the moments a connection starts and stops being live). The other executables test
/// tcptrace's own output, flags and serving on top of those events, which does not change
/// with the kernel once the events are right; running them on every pair would cost about
/// 6 minutes of emulation a pair and break CI's 45 minutes. `capacity` is here for its
/// failed connects: a `SYN_SENT -> CLOSE` counts as the range running out only when the
/// socket has no local port yet, read at the kernel's own offset (14 s on 6.1). `filter` is
/// kernel-facing too (`--pid` reads `accept()`'s socket through task and file offsets,
/// `--cgroup` reads `sk_cgrp_data`, whose shape changed in 5.15), but it is not in this set
/// yet: it adds about 5 minutes to CI, which has not been measured whole with it.
pub const KERNEL_FACING: [&str; 3] = ["test/live", "test/lifecycle", "test/capacity"];

/// Which test executables a boot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Suite {
    Full,
    KernelFacing,
}

impl Suite {
    /// How the summary marks a pair that ran the subset.
    pub fn note(self) -> Option<&'static str> {
        match self {
            Self::Full => None,
            Self::KernelFacing => Some("kernel-facing"),
        }
    }
}

/// One boot of the matrix: a kernel, the paths it runs, the suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub kernel: MatrixKernel,
    pub paths: Vec<AttachPath>,
    pub suite: Suite,
}

impl Leg {
    /// A directory name for its initramfs and console log, unique in the plan.
    pub fn dir_name(&self) -> String {
        let suite = match self.suite {
            Suite::Full => "full",
            Suite::KernelFacing => "kernel-facing",
        };
        format!("{}-{suite}", self.kernel.package)
    }
}

/// The boots that cover every kernel of [`KERNELS`] on each of `paths`, longest first (the
/// full suite), so that the other boots run beside it.
pub fn plan(paths: &[AttachPath]) -> Vec<Leg> {
    let mut full = Vec::new();
    let mut rest = Vec::new();
    for kernel in KERNELS {
        let (on_full, on_subset): (Vec<AttachPath>, Vec<AttachPath>) = paths
            .iter()
            .partition(|p| kernel.package == FULL_SUITE_KERNEL && FULL_SUITE_PATHS.contains(p));
        if !on_full.is_empty() {
            full.push(Leg { kernel, paths: on_full, suite: Suite::Full });
        }
        if !on_subset.is_empty() {
            rest.push(Leg { kernel, paths: on_subset, suite: Suite::KernelFacing });
        }
    }
    // The 6.1 subset first among the rest: the newest kernels' boots are the likelier to
    // need a retry, and a retry late in the run is what overruns.
    rest.sort_by_key(|leg| leg.kernel.package != FULL_SUITE_KERNEL);
    full.extend(rest);
    full
}

/// How many VMs run at once: one per core of the project's 2-core machine, each with one
/// vCPU.
pub const SIDE_BY_SIDE: usize = 2;

/// What the matrix gave: a row per (kernel, path) and the boots that were retried.
pub struct MatrixReport {
    pub rows: Vec<Row>,
    /// One line per retried boot: which kernel and why.
    pub retries: Vec<String>,
}

/// Runs every leg of [`plan`] for `base.paths`, [`SIDE_BY_SIDE`] at a time, each with its own
/// initramfs and console log. The caller has built tcptrace and the tests: the legs only
/// rebuild nothing.
pub fn run(base: &VmArgs) -> MatrixReport {
    let legs = plan(&base.paths);
    fetch_kernels(&legs);
    let queue = Mutex::new(legs.iter().enumerate());
    let done: Mutex<Vec<(usize, MatrixReport)>> = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..SIDE_BY_SIDE.min(legs.len()) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
                    let Some((index, leg)) = next else { break };
                    let outcome = run_leg(base, leg);
                    done.lock().unwrap_or_else(PoisonError::into_inner).push((index, outcome));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.sort_by_key(|(index, ..)| *index);
    let mut report = MatrixReport { rows: Vec::new(), retries: Vec::new() };
    for (_, leg) in done {
        report.rows.extend(leg.rows);
        report.retries.extend(leg.retries);
    }
    report.rows = in_matrix_order(report.rows, &base.paths);
    report
}

/// Downloads and unpacks every kernel of the plan, one at a time, before any boot: two legs
/// share a kernel (6.1's full suite and its subset), and two fetches of one package side by
/// side unpack into the same directory (on a fresh clone that failed `dpkg-deb -x`). A
/// kernel that cannot be fetched here is fetched again, and reported, by its legs.
fn fetch_kernels(legs: &[Leg]) {
    let Ok(target) = crate::cargo::target_dir() else { return };
    let mut fetched = Vec::new();
    for leg in legs {
        if fetched.contains(&leg.kernel.package) {
            continue;
        }
        fetched.push(leg.kernel.package);
        if let Err(error) = super::kernel::fetch(&target.join("vm"), Some(leg.kernel.package)) {
            say!("vm: {} could not be fetched yet: {error:#}", leg.kernel.name);
        }
    }
}

fn run_leg(base: &VmArgs, leg: &Leg) -> MatrixReport {
    let args = VmArgs {
        paths: leg.paths.clone(),
        kernel_package: Some(leg.kernel.package.to_owned()),
        kernel_facing: leg.suite == Suite::KernelFacing,
        smp: 1,
        run_dir: Some(leg.dir_name()),
        ..base.clone()
    };
    match super::run(&args) {
        Ok(report) => {
            let retries = retries_of(&report, leg);
            let rows = report.rows.into_iter().map(|row| marked(row, leg.suite)).collect();
            MatrixReport { rows, retries }
        }
        Err(error) => {
            say!("vm: {} could not run: {error:#}", leg.kernel.name);
            let rows = leg
                .paths
                .iter()
                .map(|path| Row {
                    kernel: leg.kernel.label(),
                    tier: "vm",
                    what: path.to_string(),
                    verdict: Verdict::Failed(format!("{error:#}")),
                    counts: None,
                    took: None,
                })
                .map(|row| marked(row, leg.suite))
                .collect();
            MatrixReport { rows, retries: Vec::new() }
        }
    }
}

fn retries_of(report: &VmReport, leg: &Leg) -> Vec<String> {
    report
        .retried
        .iter()
        .map(|why| format!("{} ({}): {why}", report.kernel, leg.kernel.name))
        .collect()
}

/// `tp-btf` → `tp-btf (kernel-facing)` for a pair that ran the subset.
fn marked(mut row: Row, suite: Suite) -> Row {
    if let Some(note) = suite.note() {
        row.what = format!("{} ({note})", row.what);
    }
    row
}

/// The rows by kernel (oldest first), then path in `paths` order.
pub fn in_matrix_order(rows: Vec<Row>, paths: &[AttachPath]) -> Vec<Row> {
    let mut keyed: Vec<(usize, usize, Row)> = rows
        .into_iter()
        .map(|row| {
            let kernel =
                KERNELS.iter().position(|k| row.kernel == k.label()).unwrap_or(KERNELS.len());
            let path = paths
                .iter()
                .position(|p| row.what.split(' ').next() == Some(p.as_str()))
                .unwrap_or(paths.len());
            (kernel, path, row)
        })
        .collect();
    keyed.sort_by_key(|(kernel, path, _)| (*kernel, *path));
    keyed.into_iter().map(|(.., row)| row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FENTRY: AttachPath = AttachPath::Only(Path::Fentry);
    const KPROBE: AttachPath = AttachPath::Only(Path::Kprobe);
    const TP_BTF: AttachPath = AttachPath::Only(Path::TpBtf);
    const TRACEPOINT: AttachPath = AttachPath::Only(Path::Tracepoint);

    #[test]
    fn every_pair_runs_once_and_the_full_suite_once_per_function_path() {
        let legs = plan(&AttachPath::VM_DEFAULT);
        let mut pairs: Vec<(&str, AttachPath, Suite)> = legs
            .iter()
            .flat_map(|leg| leg.paths.iter().map(move |p| (leg.kernel.package, *p, leg.suite)))
            .collect();
        assert_eq!(pairs.len(), KERNELS.len() * AttachPath::VM_DEFAULT.len());
        pairs.sort();
        pairs.dedup_by_key(|(k, p, _)| (*k, *p));
        assert_eq!(pairs.len(), KERNELS.len() * AttachPath::VM_DEFAULT.len(), "a pair ran twice");
        let full: Vec<_> = legs.iter().filter(|l| l.suite == Suite::Full).collect();
        assert_eq!(full.len(), 1);
        assert_eq!(
            (full[0].kernel.package, &full[0].paths[..]),
            (FULL_SUITE_KERNEL, &[FENTRY, KPROBE][..])
        );
        // The longest boot first, so the others run beside it.
        assert_eq!(legs[0].suite, Suite::Full);
        assert_eq!(legs[1].paths, [TP_BTF, TRACEPOINT]);
        let dirs: Vec<String> = legs.iter().map(Leg::dir_name).collect();
        assert!(dirs.iter().all(|d| dirs.iter().filter(|e| *e == d).count() == 1), "{dirs:?}");
    }

    #[test]
    fn a_narrower_path_list_narrows_every_kernel() {
        let legs = plan(&[TP_BTF]);
        assert_eq!(legs.len(), KERNELS.len());
        assert!(legs.iter().all(|l| l.suite == Suite::KernelFacing && l.paths == [TP_BTF]));
        let legs = plan(&[KPROBE]);
        assert_eq!(legs[0], Leg { kernel: KERNELS[1], paths: vec![KPROBE], suite: Suite::Full });
        assert_eq!(legs.len(), 3);
    }

    #[test]
    fn rows_come_back_by_kernel_then_path() {
        let row = |kernel: &str, what: &str| Row {
            kernel: kernel.into(),
            tier: "vm",
            what: what.into(),
            verdict: Verdict::Passed,
            counts: None,
            took: None,
        };
        let rows = vec![
            row("vm 6.1.0-50-cloud-amd64", "fentry"),
            row("vm 6.12.117+deb13-cloud-amd64", "kprobe (kernel-facing)"),
            row("vm 6.1.0-50-cloud-amd64", "tp-btf (kernel-facing)"),
            row("vm 5.10.0-32-cloud-amd64", "kprobe (kernel-facing)"),
            row("vm 6.12.117+deb13-cloud-amd64", "fentry (kernel-facing)"),
        ];
        let order: Vec<(String, String)> = in_matrix_order(rows, &AttachPath::VM_DEFAULT)
            .into_iter()
            .map(|r| (r.kernel, r.what))
            .collect();
        let order: Vec<(&str, &str)> =
            order.iter().map(|(k, w)| (k.as_str(), w.as_str())).collect();
        assert_eq!(
            order,
            [
                ("vm 5.10.0-32-cloud-amd64", "kprobe (kernel-facing)"),
                ("vm 6.1.0-50-cloud-amd64", "fentry"),
                ("vm 6.1.0-50-cloud-amd64", "tp-btf (kernel-facing)"),
                ("vm 6.12.117+deb13-cloud-amd64", "fentry (kernel-facing)"),
                ("vm 6.12.117+deb13-cloud-amd64", "kprobe (kernel-facing)"),
            ]
        );
    }
}
