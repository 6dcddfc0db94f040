//! `cargo xtask test`: the unit, live, soak and VM tiers, and a summary of what ran where.

use std::{
    env, fs,
    io::Read as _,
    path::Path,
    process::{Command, ExitCode, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;

use crate::{
    attach::AttachPath,
    bench::soak,
    cargo::{self, Profile},
    libtest::Counts,
    report::{Row, Verdict, print_rows},
    setup,
    vm::{self, VmArgs},
};

#[derive(Args, Debug)]
#[expect(clippy::struct_excessive_bools, reason = "independent command-line switches")]
pub struct TestArgs {
    /// Skip the unit tier.
    #[arg(long)]
    pub skip_unit: bool,

    /// Skip the live tier (host kernel).
    #[arg(long)]
    pub skip_live: bool,

    /// Skip the soak tier (host kernel, 2 minutes).
    #[arg(long)]
    pub skip_soak: bool,

    /// Skip the VM tier.
    #[arg(long)]
    pub skip_vm: bool,

    /// Attach paths the VM tier tests, comma-separated.
    #[arg(long, value_name = "PATHS", value_delimiter = ',', default_value = AttachPath::vm_default_list())]
    pub vm_paths: Vec<AttachPath>,

    /// Kill the VM after this many seconds. Every path runs every live test under software
    /// emulation: 220 to 310 s a path here, 1,080 s for the four.
    #[arg(long, value_name = "SECONDS", default_value_t = vm::DEFAULT_TIMEOUT_S)]
    pub vm_timeout: u64,

    /// Build the tcptrace binary and the live tests with --release for the live and VM
    /// tiers (slower to build, faster under emulation).
    #[arg(long)]
    pub release: bool,
}

pub fn test(args: &TestArgs) -> Result<ExitCode> {
    let started = Instant::now();
    setup::ensure(false)?;
    let host = format!("host {}", host_kernel());
    let profile = if args.release { Profile::Release } else { Profile::Debug };
    let mut rows = Vec::new();

    header(1, "unit", &format!("{host}: {}", unit_command()));
    if args.skip_unit {
        rows.push(skipped(&host, "unit", "-", "--skip-unit"));
    } else {
        rows.push(unit(&host));
    }

    let host_paths = AttachPath::list(&AttachPath::HOST_DEFAULT, " and ");
    header(2, "live", &format!("{host}: the live tests, attach paths {host_paths}"));
    if args.skip_live {
        rows.extend(
            AttachPath::HOST_DEFAULT.map(|p| skipped(&host, "live", p.as_str(), "--skip-live")),
        );
    } else {
        rows.extend(live(&host, profile));
    }

    header(
        3,
        "soak",
        &format!(
            "{host}: `tcptrace serve` for {} minutes under a changing load of {}-{} connections",
            soak::CI_MINUTES,
            soak::CI_POPULATION.low,
            soak::CI_POPULATION.high
        ),
    );
    if args.skip_soak {
        rows.push(skipped(&host, "soak", &soak_what(), "--skip-soak"));
    } else {
        rows.push(soak_tier(&host, profile));
    }

    header(
        4,
        "vm",
        &format!(
            "{} under QEMU, {} side by side: every attach path on each; the full suite on {} \
             of {}, the kernel-facing tests ({}) on the rest",
            vm::matrix::KERNELS.map(|k| k.name).join(", "),
            vm::matrix::SIDE_BY_SIDE,
            AttachPath::list(&vm::matrix::FULL_SUITE_PATHS, " and "),
            vm::matrix::FULL_SUITE_KERNEL,
            vm::matrix::KERNEL_FACING.join(", "),
        ),
    );
    let (vm_rows, retries) = vm_tier(args, profile);
    rows.extend(vm_rows);

    let failed = rows.iter().any(|row| !row.verdict.is_ok());
    say!(
        "==== summary: {} after {:.0} s ====",
        if failed { "FAILED" } else { "passed" },
        started.elapsed().as_secs_f64()
    );
    print_rows(&rows);
    for line in summary_lines(&rows, &retries) {
        say!("{line}");
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The VM tier's rows (every pair of the matrix) and the boots it retried.
fn vm_tier(args: &TestArgs, profile: Profile) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut retries = Vec::new();
    if args.skip_vm {
        for kernel in vm::matrix::KERNELS {
            rows.extend(
                AttachPath::VM_DEFAULT
                    .iter()
                    .map(|p| skipped(&kernel.label(), "vm", p.as_str(), "--skip-vm")),
            );
        }
    } else {
        let vm_args = VmArgs {
            paths: args.vm_paths.clone(),
            timeout: args.vm_timeout,
            release: args.release,
            ..VmArgs::default()
        };
        // Build once before the VMs start side by side, so that they do not wait on each
        // other's cargo (and a broken build is one failure, not one a kernel).
        let built = cargo::build_tcptrace(profile).and_then(|_| cargo::build_live_tests(profile));
        match built {
            Ok(_) => {
                let report = vm::matrix::run(&vm_args);
                rows.extend(report.rows);
                retries = report.retries;
            }
            Err(error) => {
                say!("vm: the VM tier could not run: {error:#}");
                for kernel in vm::matrix::KERNELS {
                    rows.extend(args.vm_paths.iter().map(|p| Row {
                        kernel: kernel.label(),
                        tier: "vm",
                        what: p.to_string(),
                        verdict: Verdict::Failed(format!("{error:#}")),
                        counts: None,
                        took: None,
                    }));
                }
            }
        }
        // Every pair of the matrix is in the summary, also those --vm-paths left out.
        for kernel in vm::matrix::KERNELS {
            for path in AttachPath::VM_DEFAULT.iter().filter(|p| !args.vm_paths.contains(p)) {
                rows.push(skipped(&kernel.label(), "vm", path.as_str(), "not in --vm-paths"));
            }
        }
    }
    (vm::matrix::in_matrix_order(rows, &AttachPath::VM_DEFAULT), retries)
}

fn header(number: u32, tier: &str, what: &str) {
    say!("==== tier {number}/4: {tier} ({what}) ====");
}

fn skipped(kernel: &str, tier: &'static str, what: &str, why: &str) -> Row {
    Row {
        kernel: kernel.to_owned(),
        tier,
        what: what.to_owned(),
        verdict: Verdict::Skipped(why.to_owned()),
        counts: None,
        took: None,
    }
}

/// `uname -r`.
fn host_kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

/// The crates whose unit tests the unit tier runs: every library and binary of the
/// workspace but the BPF programs (built for another target) and the live tests.
const UNIT_CRATES: [&str; 5] =
    ["tcptrace-common", "tcptrace-netns", "tcptrace-json", "tcptrace", "xtask"];

/// `cargo test -p tcptrace-common -p ...`, as the unit tier runs it.
pub fn unit_command() -> String {
    format!("cargo test --no-fail-fast -p {}", UNIT_CRATES.join(" -p "))
}

fn unit(host: &str) -> Row {
    let started = Instant::now();
    let mut cmd = cargo::cargo();
    // Every failing test executable is reported, not only the first.
    cmd.args(["test", "--no-fail-fast"]);
    for krate in UNIT_CRATES {
        cmd.args(["-p", krate]);
    }
    let (verdict, counts) = run_tests(&mut cmd);
    Row {
        kernel: host.to_owned(),
        tier: "unit",
        what: "-".into(),
        verdict,
        counts: Some(counts),
        took: Some(started.elapsed()),
    }
}

fn live(host: &str, profile: Profile) -> Vec<Row> {
    let row = |what: String, verdict: Verdict| Row {
        kernel: host.to_owned(),
        tier: "live",
        what,
        verdict,
        counts: None,
        took: None,
    };
    if !crate::cmd::is_root() {
        // CI runs as root: there, a skipped live tier would hide a broken set-up.
        let why = "the live tests need root".to_owned();
        let ci = env::var_os("CI").is_some_and(|v| v == "true");
        return AttachPath::HOST_DEFAULT
            .map(|p| {
                row(
                    p.to_string(),
                    if ci { Verdict::Failed(why.clone()) } else { Verdict::Skipped(why.clone()) },
                )
            })
            .into();
    }
    let tcptrace = match cargo::build_tcptrace(profile) {
        Ok(path) => path,
        Err(error) => {
            say!("live: {error:#}");
            return AttachPath::HOST_DEFAULT
                .map(|p| {
                    row(p.to_string(), Verdict::Failed(format!("building tcptrace: {error:#}")))
                })
                .into();
        }
    };
    say!("live: TCPTRACE_BIN={}", tcptrace.display());
    AttachPath::HOST_DEFAULT
        .map(|path| {
            let mut what = path.to_string();
            if path == AttachPath::Auto
                && let Some(chosen) = auto_choice(&tcptrace)
            {
                say!("live: on this kernel auto attaches via {chosen}");
                what = format!("auto({chosen})");
            }
            let started = Instant::now();
            let mut cmd = cargo::cargo();
            cmd.args(["test", "--no-fail-fast", "-p", "tcptrace-tests"]);
            if profile == Profile::Release {
                cmd.arg("--release");
            }
            cmd.args(["--", "--test-threads=1"])
                .env("TCPTRACE_BIN", &tcptrace)
                .env("TCPTRACE_ATTACH", path.as_str());
            let (verdict, counts) = run_tests(&mut cmd);
            Row { counts: Some(counts), took: Some(started.elapsed()), ..row(what, verdict) }
        })
        .into()
}

/// The soak tier's row: its length, as the summary prints it (`soak 2min passed`).
fn soak_what() -> String {
    format!("{}min", soak::CI_MINUTES)
}

/// The soak tier: `cargo xtask bench --soak` for [`soak::CI_MINUTES`] with a smaller
/// population, with the live tier's build of tcptrace.
fn soak_tier(host: &str, profile: Profile) -> Row {
    let row = |verdict: Verdict, took: Option<Duration>| Row {
        kernel: host.to_owned(),
        tier: "soak",
        what: soak_what(),
        verdict,
        counts: None,
        took,
    };
    if !crate::cmd::is_root() {
        let why = "the soak needs root".to_owned();
        let ci = env::var_os("CI").is_some_and(|v| v == "true");
        return row(if ci { Verdict::Failed(why) } else { Verdict::Skipped(why) }, None);
    }
    let started = Instant::now();
    let options =
        soak::SoakOptions { minutes: soak::CI_MINUTES, population: soak::CI_POPULATION, profile };
    let verdict = match soak::soak(&options) {
        Ok(report) => {
            say!("soak: the curve is in {}", report.curve.display());
            report.failure.map_or(Verdict::Passed, Verdict::Failed)
        }
        Err(error) => {
            say!("soak: could not run: {error:#}");
            Verdict::Failed(format!("could not run: {error:#}"))
        }
    };
    row(verdict, Some(started.elapsed()))
}

/// Runs a `cargo test` command, streaming its output; the verdict comes from its exit
/// status, the counts from the `test result:` lines.
fn run_tests(cmd: &mut Command) -> (Verdict, Counts) {
    let mut counts = Counts::default();
    let status = crate::cmd::stream(cmd, |line| {
        counts.absorb(line);
    });
    let verdict = match status {
        Ok(status) if status.success() => Verdict::Passed,
        Ok(status) => Verdict::Failed(format!("`{}` {status}", crate::cmd::display(cmd))),
        Err(error) => Verdict::Failed(format!("{error:#}")),
    };
    (verdict, counts)
}

/// Which path `auto` picks on this kernel: runs `tcptrace events --duration 1s` (bounded)
/// and reads its `attached via X` line. Best effort: `None` if it says nothing usable.
fn auto_choice(tcptrace: &Path) -> Option<String> {
    let mut child = Command::new(tcptrace)
        .args(["events", "--attach", AttachPath::Auto.as_str(), "--duration", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stderr = child.stderr.take()?;
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status: Option<ExitStatus> =
        crate::cmd::wait_bounded(&mut child, Duration::from_mins(1)).ok().flatten();
    let text = reader.join().ok()?;
    let chosen = parse_attached_via(&text);
    if chosen.is_none() {
        say!("live: could not tell which path auto picks (tcptrace events ended {status:?})");
    }
    chosen
}

/// `tcptrace: attached via tp_btf (passed over …)` → `tp-btf`, in `TCPTRACE_ATTACH` spelling.
fn parse_attached_via(stderr: &str) -> Option<String> {
    let at = stderr.find("attached via ")?;
    let name = stderr[at + "attached via ".len()..]
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .next()?;
    AttachPath::printed(name).map(|p| p.to_string())
}

/// The lines that end the run: the host's, one a VM kernel, and the VM boots retried:
/// `host 6.18.44: unit passed; live auto(tp-btf) passed; live tracepoint-classic passed`
/// `vm 6.1.0-50-cloud-amd64: fentry passed, kprobe passed, tp-btf (kernel-facing) passed, …`
/// `vm boots retried: 0`
fn summary_lines(rows: &[Row], retries: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    let host: Vec<&Row> = rows.iter().filter(|r| r.tier != "vm").collect();
    if let Some(first) = host.first() {
        let parts: Vec<String> = host
            .iter()
            .map(|r| {
                if r.what == "-" {
                    format!("{} {}", r.tier, r.verdict.word())
                } else {
                    format!("{} {} {}", r.tier, r.what, r.verdict.word())
                }
            })
            .collect();
        lines.push(format!("{}: {}", first.kernel, parts.join("; ")));
    }
    let mut kernels: Vec<&str> = Vec::new();
    for row in rows.iter().filter(|r| r.tier == "vm") {
        if !kernels.contains(&row.kernel.as_str()) {
            kernels.push(&row.kernel);
        }
    }
    for kernel in &kernels {
        let parts: Vec<String> = rows
            .iter()
            .filter(|r| r.tier == "vm" && r.kernel == *kernel)
            .map(|r| match &r.verdict {
                Verdict::Skipped(why) => format!("{} skipped ({why})", r.what),
                verdict => format!("{} {}", r.what, verdict.word()),
            })
            .collect();
        lines.push(format!("{kernel}: {}", parts.join(", ")));
    }
    if !kernels.is_empty() {
        lines.push(format!("vm boots retried: {}", retries.len()));
        lines.extend(retries.iter().map(|why| format!("  retried: {why}")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_attach_line() {
        let stderr = "tcptrace: note: mounted tracefs\ntcptrace: attached via tp_btf (passed over fentry: EPERM; kprobe: no kprobes)\n";
        assert_eq!(parse_attached_via(stderr).as_deref(), Some("tp-btf"));
        assert_eq!(
            parse_attached_via("attached via tracepoint\n").as_deref(),
            Some("tracepoint-classic")
        );
        assert_eq!(parse_attached_via("attached via fentry").as_deref(), Some("fentry"));
        assert_eq!(parse_attached_via("tcptrace: error: no attach path worked"), None);
    }

    #[test]
    fn summary_lines_read_like_the_readme() {
        let row = |kernel: &str, tier, what: &str, verdict| Row {
            kernel: kernel.into(),
            tier,
            what: what.into(),
            verdict,
            counts: None,
            took: None,
        };
        let rows = [
            row("host 6.18.44", "unit", "-", Verdict::Passed),
            row("host 6.18.44", "live", "auto(tp-btf)", Verdict::Passed),
            row("host 6.18.44", "live", "tracepoint-classic", Verdict::Failed("x".into())),
            row(
                "vm 5.10.0-32-cloud-amd64",
                "vm",
                "fentry (kernel-facing)",
                Verdict::Failed("x".into()),
            ),
            row("vm 6.1.0-50-cloud-amd64", "vm", "fentry", Verdict::Passed),
            row(
                "vm 6.1.0-50-cloud-amd64",
                "vm",
                "kprobe",
                Verdict::Skipped("not in --vm-paths".into()),
            ),
        ];
        assert_eq!(
            summary_lines(
                &rows,
                &["6.12 (Debian 13 (6.12)): second boot: /init never started".into()]
            ),
            [
                "host 6.18.44: unit passed; live auto(tp-btf) passed; live tracepoint-classic failed",
                "vm 5.10.0-32-cloud-amd64: fentry (kernel-facing) failed",
                "vm 6.1.0-50-cloud-amd64: fentry passed, kprobe skipped (not in --vm-paths)",
                "vm boots retried: 1",
                "  retried: 6.12 (Debian 13 (6.12)): second boot: /init never started",
            ]
        );
    }
}
