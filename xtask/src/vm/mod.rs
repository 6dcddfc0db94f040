//! `cargo xtask vm-test`: the live tests on a stock Debian 6.1 kernel under QEMU, once per
//! attach path. The host kernel refuses fentry and kprobe programs; this one loads them.

mod cpio;
pub mod initramfs;
mod kernel;
pub mod matrix;
mod qemu;

pub use qemu::marker;

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Result;
use clap::Args;

use crate::{
    attach::AttachPath,
    cargo::{self, Profile},
    report::{Row, Verdict, print_rows},
    setup,
};

/// When QEMU is killed: room for the four paths (220 to 310 s each under TCG on the
/// project's 2-core host, 1,080 s in all, close to the old limit of 1,200) on a slower or
/// busier box.
pub const DEFAULT_TIMEOUT_S: u64 = 2700;

#[derive(Args, Debug, Clone)]
pub struct VmArgs {
    /// Attach paths to test, comma-separated; each is one run of every test executable
    /// with `TCPTRACE_ATTACH` set to it.
    #[arg(long, value_delimiter = ',', default_value = AttachPath::vm_default_list())]
    pub paths: Vec<AttachPath>,

    /// Kill QEMU after this many seconds (boot, every path, power-off).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT_S)]
    pub timeout: u64,

    /// Boot this Debian kernel package instead of linux-image-6.1.0-50-cloud-amd64-unsigned:
    /// e.g. linux-image-5.10.0-32-cloud-amd64-unsigned (Debian 11) or
    /// linux-image-6.12.117+deb13-cloud-amd64-unsigned (Debian 13), whose apt suites
    /// `cargo xtask setup` adds.
    #[arg(long, value_name = "PACKAGE")]
    pub kernel_package: Option<String>,

    /// Build tcptrace and the tests with --release: slower to build, faster under emulation.
    #[arg(long)]
    pub release: bool,

    /// Run only the kernel-facing test executables (see `vm::matrix::KERNEL_FACING`), as
    /// `cargo xtask test` does on every (kernel, path) pair but 6.1's fentry and kprobe.
    #[arg(long)]
    pub kernel_facing: bool,

    /// Virtual CPUs of the VM. Under software emulation two vCPUs now and then sit in a soft
    /// lockup at `asm_exc_int3` while the kernel patches its text (tracepoints switched on
    /// or off); `cargo xtask test` boots its VMs with one each, two side by side.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub smp: u32,

    /// Keep this boot's initramfs and console under target/vm/runs/NAME instead of
    /// target/vm, so that boots can run side by side (`cargo xtask test` names one a boot).
    #[arg(long, value_name = "NAME")]
    pub run_dir: Option<String>,

    /// Run `tcptrace --help` instead of the tests: checks the kernel, the initramfs and the
    /// console plumbing in about ten seconds.
    #[arg(long)]
    pub smoke: bool,

    /// Arguments for every test executable, after `--` (e.g. a test-name filter).
    #[arg(last = true, value_name = "TEST-ARGS")]
    pub test_args: Vec<String>,

    /// Run the churn benchmark instead of the tests (`cargo xtask bench --vm`).
    #[arg(skip)]
    pub bench: Option<initramfs::BenchPlan>,
}

impl Default for VmArgs {
    fn default() -> Self {
        Self {
            paths: AttachPath::VM_DEFAULT.to_vec(),
            timeout: DEFAULT_TIMEOUT_S,
            kernel_package: None,
            release: false,
            kernel_facing: false,
            smp: 1,
            run_dir: None,
            smoke: false,
            test_args: Vec::new(),
            bench: None,
        }
    }
}

pub fn vm_test(args: &VmArgs) -> Result<ExitCode> {
    setup::ensure(false)?;
    let report = run(args)?;
    print_rows(&report.rows);
    say!("{}", report.line());
    Ok(if report.rows.iter().all(|row| row.verdict.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The outcome of one VM boot: one row per attach path.
pub struct VmReport {
    /// e.g. `6.1.0-50-cloud-amd64 (Debian 6.1.176-1)`.
    pub kernel: String,
    pub rows: Vec<Row>,
    /// The console of the boot that gave the last results.
    pub log: PathBuf,
    /// Why a boot was retried, one entry per retry (at most one).
    pub retried: Vec<String>,
}

impl VmReport {
    /// `vm 6.1.0-50-cloud-amd64: fentry passed, kprobe passed, ...`
    pub fn line(&self) -> String {
        let paths: Vec<String> =
            self.rows.iter().map(|r| format!("{} {}", r.what, r.verdict.word())).collect();
        format!("vm {}: {}", self.kernel, paths.join(", "))
    }
}

/// Fetches the kernel, builds, boots, and reads the verdict of each path. Errors are
/// failures before the boot (download, build); a failed path is a row, not an error.
pub fn run(args: &VmArgs) -> Result<VmReport> {
    let target = cargo::target_dir()?;
    let kernels_dir = target.join("vm");
    let vm_dir = args
        .run_dir
        .as_ref()
        .map_or_else(|| kernels_dir.clone(), |name| kernels_dir.join("runs").join(name));
    std::fs::create_dir_all(&vm_dir)?;
    say!("vm: step 1/4: the kernel");
    let kernel = kernel::fetch(&kernels_dir, args.kernel_package.as_deref())?;
    say!("vm: step 2/4: building tcptrace and the test executables");
    let profile = if args.release { Profile::Release } else { Profile::Debug };
    let tcptrace = cargo::build_tcptrace(profile)?;
    let runs_tests = !args.smoke && args.bench.is_none();
    let mut tests = if runs_tests { cargo::build_live_tests(profile)? } else { Vec::new() };
    if runs_tests && tests.is_empty() {
        anyhow::bail!("`cargo test -p tcptrace-tests --no-run` built no test executable");
    }
    if args.kernel_facing {
        tests = kernel_facing(tests)?;
    }
    for test in &tests {
        say!("vm: test executable {} = {}", test.name, test.path.display());
    }
    say!("vm: step 3/4: the initramfs");
    let workload = if let Some(plan) = args.bench {
        initramfs::Workload::Bench(plan)
    } else if args.smoke {
        initramfs::Workload::Smoke
    } else {
        initramfs::Workload::Tests { tests: &tests, args: &args.test_args }
    };
    let initrd = initramfs::build(&vm_dir, &kernel, &tcptrace, &workload)?;

    let log = vm_dir.join("console.log");
    let boot_args = |paths: &[&str]| {
        // Each test executable may use its share of the whole budget, so one that hangs
        // leaves time for the other paths.
        let per_executable = (args.timeout / paths.len().max(1) as u64).max(60);
        format!("tcptrace.paths={} tcptrace.timeout={per_executable}", paths.join(","))
    };
    let mut pending: Vec<&str> = args.paths.iter().map(|p| p.as_str()).collect();
    let mut reports: BTreeMap<&str, (qemu::PathReport, Option<String>)> = BTreeMap::new();
    // Set when the first boot hung or died: why the second one ran.
    let mut second_boot: Option<String> = None;
    let tag = if args.run_dir.is_some() { format!("[{}]", kernel.release) } else { String::new() };
    let mut console;
    loop {
        say!(
            "vm: step 4/4: booting {} ({} {}) for {}",
            kernel.release,
            kernel.package,
            kernel.version,
            pending.join(", ")
        );
        console = qemu::boot(&qemu::Boot {
            vmlinuz: &kernel.vmlinuz,
            initrd: &initrd,
            append: boot_args(&pending),
            timeout: Duration::from_secs(args.timeout),
            log: &log,
            smp: args.smp,
            tag: tag.clone(),
        })?;
        if let Some(started) = console.init_started {
            say!("vm: /init started {:.1} s after QEMU did", started.as_secs_f64());
        }
        for warning in &console.warnings {
            say!("vm: warning from the VM: {warning}");
        }
        let hung_in = console.hung.as_ref().map(|hang| (console.current.clone(), hang.clone()));
        for path in &pending {
            if let Some(report) = console.paths.get(*path)
                && report.result.is_some()
            {
                reports.insert(path, (report.clone(), second_boot.clone()));
            }
        }
        pending.retain(|path| !reports.contains_key(path));
        // A guest kernel that stops scheduling (a soft lockup under software emulation) is
        // the VM's failure, not a verdict on the path it interrupted: boot once more for
        // the paths without a result, and say so in the summary. A second hang fails them.
        let why = retry_reason(&console, hung_in);
        match why {
            Some((note, said)) if second_boot.is_none() && !pending.is_empty() => {
                say!(
                    "vm{tag}: the guest kernel {said}; its console is above and in {}. Booting a \
                     fresh VM once for: {}",
                    log.display(),
                    pending.join(", ")
                );
                second_boot = Some(format!("second boot: {note}"));
                // Keep the first boot's console next to the second's.
                let _ = std::fs::copy(&log, vm_dir.join("console-retried.log"));
            }
            _ => break,
        }
    }

    let release = console.kernel_release.clone().unwrap_or_else(|| kernel.release.clone());
    let label = format!("{release} (Debian {})", kernel.version);
    let rows = rows(args, &reports, &console, &release, &log);
    Ok(VmReport { kernel: label, rows, log, retried: second_boot.into_iter().collect() })
}

/// The test executables of [`matrix::KERNEL_FACING`] among `tests`; warns of each one
/// that was not built.
fn kernel_facing(mut tests: Vec<cargo::TestExe>) -> Result<Vec<cargo::TestExe>> {
    tests.retain(|t| matrix::KERNEL_FACING.contains(&t.name.as_str()));
    for name in matrix::KERNEL_FACING {
        if !tests.iter().any(|t| t.name == name) {
            say!("vm: warning: the kernel-facing test executable {name} was not built");
        }
    }
    if tests.is_empty() {
        anyhow::bail!(
            "none of the kernel-facing test executables ({}) was built",
            matrix::KERNEL_FACING.join(", ")
        );
    }
    Ok(tests)
}

/// Why a boot gave no result for reasons of the emulator, not of tcptrace: a hang (a soft
/// lockup, with the path it interrupted), a panic before any path began (an `int3` Oops
/// while the kernel patches its text), or a kernel that never reached /init. As (a note for
/// the summary, what the log says). A timeout is not one: a test that runs too long is the
/// test's. Nor is a panic once a path has begun: tcptrace's programs were loaded by then,
/// so that panic may be theirs, and a second boot that passed would hide it.
fn retry_reason(
    console: &qemu::Console,
    hung_in: Option<(Option<String>, String)>,
) -> Option<(String, String)> {
    if let Some((path, hang)) = hung_in {
        let path = path.unwrap_or_else(|| "-".into());
        return Some((
            format!("the first hung during {path}"),
            format!("hung during path {path} ({hang})"),
        ));
    }
    let died = match (&console.panic, &console.kernel_release) {
        (Some(_), _) if !console.paths.is_empty() => return None,
        (Some(panic), _) => format!("panicked before the tests ({panic})"),
        (None, None) if !console.timed_out => "never started /init".to_owned(),
        _ => return None,
    };
    Some((format!("the first {died}"), died))
}

/// One row per requested path, from the boot that gave it a result.
fn rows(
    args: &VmArgs,
    reports: &BTreeMap<&str, (qemu::PathReport, Option<String>)>,
    console: &qemu::Console,
    release: &str,
    log: &std::path::Path,
) -> Vec<Row> {
    args.paths
        .iter()
        .map(|path| {
            let report = reports.get(path.as_str());
            let verdict = match report.and_then(|(r, _)| r.result.as_deref()) {
                Some("passed") => Verdict::Passed,
                Some(other) => {
                    Verdict::Failed(format!("the VM reported `{other}`; see {}", log.display()))
                }
                None => Verdict::Failed(missing_reason(console)),
            };
            let what = match report {
                Some((_, Some(retried))) => format!("{path} ({retried})"),
                _ => path.to_string(),
            };
            Row {
                kernel: format!("vm {release}"),
                tier: "vm",
                what,
                verdict,
                counts: (!args.smoke).then(|| report.map(|(r, _)| r.counts).unwrap_or_default()),
                took: report.and_then(|(r, _)| r.took),
            }
        })
        .collect()
}

fn missing_reason(console: &qemu::Console) -> String {
    let status = console.qemu_status.as_deref().unwrap_or("unknown status");
    if let Some(hang) = &console.hung {
        format!("no result: the guest kernel hung ({hang}); see the stack traces in the console")
    } else if console.timed_out {
        "no result: the VM timed out (see --timeout)".into()
    } else if let Some(panic) = &console.panic {
        format!("no result: {panic}")
    } else if console.kernel_release.is_none() {
        format!("no result: /init never started (QEMU {status})")
    } else {
        format!("no result marker (QEMU {status})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(lines: &[&str]) -> qemu::Console {
        let mut c = qemu::Console::default();
        for line in lines {
            c.feed(line, std::time::Duration::ZERO);
        }
        c
    }

    #[test]
    fn a_panic_before_the_tests_is_retried_and_one_during_them_is_not() {
        let panic = "Kernel panic - not syncing: Fatal exception in interrupt";
        let early = console(&["TCPTRACE-VM-KERNEL 6.12.117", panic]);
        assert!(retry_reason(&early, None).is_some_and(|(note, _)| note.contains("panicked")));
        let during = console(&["TCPTRACE-VM-KERNEL 6.12.117", "TCPTRACE-VM-BEGIN fentry", panic]);
        assert_eq!(retry_reason(&during, None), None);
        let never = console(&[]);
        assert!(retry_reason(&never, None).is_some_and(|(_, why)| why.contains("/init")));
        let hung = retry_reason(&during, Some((Some("kprobe".into()), "soft lockup".into())));
        assert!(hung.is_some_and(|(note, _)| note.contains("kprobe")));
    }
}
