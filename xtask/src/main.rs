//! `cargo xtask`: the developer and CI entry point for tcptrace.
//!
//! Every subcommand says what it does as it goes, on stderr, in lines that start with
//! `xtask:`; the programs it runs keep their own output.

/// Prints one progress line, prefixed `xtask:`, on stderr.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("xtask: {}", format_args!($($arg)*))
    };
}

mod attach;
mod bench;
mod cargo;
mod cmd;
mod dist;
mod ldd;
mod libtest;
mod report;
mod run;
mod setup;
mod test;
mod vm;

use std::{ffi::OsString, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for tcptrace: install the toolchain pieces, run the tracer, run every test tier.",
    long_about = "Developer tasks for tcptrace: install the toolchain pieces, run the tracer, run every test tier.\n\n\
Every task is idempotent: run it again and it skips what is already done. It is meant for \
Debian 12 (apt, dpkg) with rustup, run as root (installing packages and loading eBPF need it).\n\n\
Start with `cargo xtask setup`, then `cargo xtask run` to watch live connections, or \
`cargo xtask test` to run what CI runs.",
    after_help = "Examples:\n  \
cargo xtask setup                     install what is missing (apt, rust-src, bpf-linker)\n  \
cargo xtask run                       build in release mode and run `tcptrace` (its default view)\n  \
cargo xtask run -- --help             pass arguments to tcptrace\n  \
cargo xtask test                      unit + live + soak (host kernel) + VM (Debian 5.10, 6.1, 6.12) tiers\n  \
cargo xtask vm-test --paths fentry    only the fentry path, in the VM\n  \
cargo xtask dist                      release binary, completions, man pages, unit in target/dist"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing tcptrace needs; skip what is already there.
    #[command(
        long_about = "Install what building and testing tcptrace needs; skip what is already there.\n\n\
It checks, and installs only when missing:\n  \
- apt packages (one `apt-get update`, then `apt-get install -y --no-install-recommends`):\n      \
llvm-22-dev libzstd-dev zlib1g-dev   to build bpf-linker against LLVM 22\n      \
qemu-system-x86 busybox-static cpio   for the VM test tier\n      \
iproute2                              ip and ss, used by tests and copied into the VM\n  \
- rust-src for the nightly toolchain (`rustup component add rust-src --toolchain nightly`),\n    \
which `-Z build-std=core` needs to build the eBPF crate\n  \
- bpf-linker 0.13.x (`LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version 0.13.0 \
--locked --no-default-features --features llvm-22`, one to three minutes), which links the eBPF object\n\n\
Installing apt packages needs root."
    )]
    Setup(setup::SetupArgs),

    /// Set up, build tcptrace in release mode and run it with ARGS (default: none, i.e. `watch`).
    #[command(
        long_about = "Set up (see `cargo xtask setup --help`), build tcptrace in release mode \
(`cargo build --release -p tcptrace`) and run target/release/tcptrace with ARGS, replacing this \
process, so its exit code is ours.\n\n\
With no ARGS tcptrace runs its default view (`watch`). Loading eBPF needs root, or CAP_BPF and \
CAP_PERFMON."
    )]
    Run {
        /// Arguments for tcptrace; put them after `--` when they start with `-`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<OsString>,
    },

    /// Set up, then run the unit, live (host kernel), soak (host kernel) and VM (Debian 5.10, 6.1 and 6.12 kernels) tiers.
    #[command(
        long_about = "Set up (see `cargo xtask setup --help`), then run four test tiers and \
print a summary of which tiers and attach paths ran on which kernel:\n\n  \
unit  `cargo test --no-fail-fast -p tcptrace-common -p tcptrace-netns -p tcptrace-json -p tcptrace -p xtask`: pure logic, no kernel needed.\n  \
live  builds the tcptrace binary, then `cargo test --no-fail-fast -p tcptrace-tests -- --test-threads=1` on \
the host kernel, with TCPTRACE_BIN set to the binary and TCPTRACE_ATTACH=auto, then again \
with TCPTRACE_ATTACH=tracepoint-classic. Needs root. (This host cannot load fentry or \
kprobe programs; the VM tier covers them.)\n  \
soak  `cargo xtask bench --soak --minutes 2 --population 20000-60000`, with the live tier's \
build of tcptrace: `tcptrace serve` under a changing population, churn, ring overflows and \
namespaces that come and go, scraped every second; fails on RSS or drift that grows without \
a cause, on serve not answering or dying, and on a count left behind (about 2 minutes here; \
see `cargo xtask bench --help`). Needs root.\n  \
vm    `cargo xtask vm-test` on three stock Debian kernels (5.10, 6.1, 6.12) under QEMU, two VMs \
with one vCPU each side by side, on each kernel once per attach path: fentry, kprobe, tp-btf, tracepoint-classic. \
The full suite runs on 6.1's fentry and kprobe; every other pair runs the kernel-facing test \
executables (`vm::matrix::KERNEL_FACING`). A boot that hangs, panics before the tests, or never reaches /init is \
booted once more, and the summary counts it.\n\n\
Exits non-zero if any tier failed. This is what CI runs (.ci/run)."
    )]
    Test(test::TestArgs),

    /// Boot Debian's 6.1 kernel under QEMU and run the live tests once per attach path.
    #[command(
        long_about = "Boot a stock Debian 6.1 kernel under QEMU (software emulation, TCG) and \
run the live tests (package tcptrace-tests) inside it, once per attach path: fentry, kprobe, \
tp-btf, tracepoint-classic. The host kernel cannot load fentry or kprobe programs; this one can.\n\n\
Steps:\n  \
1. kernel: `apt-get download` linux-image-6.1.0-50-cloud-amd64-unsigned (or the newest \
linux-image-6.1.0-*-cloud-amd64-unsigned if that one is gone) and unpack it under target/vm/, \
once; later runs reuse it.\n  \
2. build: the tcptrace binary and the test executables \
(`cargo test -p tcptrace-tests --no-run`).\n  \
3. initramfs: busybox, the binaries, the shared libraries `ldd` names, and an /init that \
mounts proc, sysfs, devtmpfs and tracefs, loads kernel modules on demand (sock_diag's tcp_diag), \
brings lo up, raises the open-file limit and runs \
each test executable with TCPTRACE_BIN=/bin/tcptrace TCPTRACE_ATTACH=<path> --test-threads=1.\n  \
4. boot: qemu-system-x86_64 -accel tcg; the serial console is shown with a `vm: ` prefix and \
saved to target/vm/console.log; a `TCPTRACE-VM-RESULT <path> passed|failed` line per path \
decides the outcome. QEMU is killed when --timeout runs out.\n\n\
Does not need root (installing its apt packages does: see `cargo xtask setup`)."
    )]
    VmTest(vm::VmArgs),

    /// Build what to copy to a box without Rust: binary, completions, man pages, systemd unit.
    #[command(
        long_about = "Set up (see `cargo xtask setup --help`), build tcptrace in release mode and \
write target/dist/ and target/tcptrace-VERSION-ARCH-linux-gnu.tar.gz with:\n  \
tcptrace            the binary, debug info stripped (the BPF object is inside it)\n  \
completions/        tcptrace.bash, _tcptrace (zsh), tcptrace.fish\n  \
man/                tcptrace.1 and one page per command (tcptrace-serve.1, ...)\n  \
tcptrace.service    the systemd unit from contrib/ (runs `tcptrace serve`)\n  \
NEEDS               what the binary asks of the box: shared libraries (from ldd), the \
newest glibc symbol it uses (from objdump -T), the kernel\n\n\
Completions and man pages come from tcptrace's clap definition (tcptrace/examples/dist-docs.rs), \
so they cannot drift from the binary."
    )]
    Dist(dist::DistArgs),
    /// Measure tcptrace's cost under a loopback connection storm, beside tcplife, tcpstates and bpftrace; or soak it (--soak).
    #[command(long_about = BENCH_ABOUT)]
    Bench(bench::BenchArgs),
}

const BENCH_ABOUT: &str = "Measure what tcptrace costs under a loopback connection storm, beside \
the tools users would otherwise run, and print a Markdown table of medians and ratios (what \
BENCHMARKS.md keeps).\n\n\
Builds tcptrace in release mode; installs the peers if missing (apt: libbpf-tools for tcplife \
and tcpstates, bpftrace); then, for several rounds, runs `tcptrace load churn` once with no \
tracer and once under each of: tcptrace (attach auto, tracepoint-classic, and auto with no \
snapshot during the run, which isolates the event path), tcplife, tcpstates, and a bpftrace \
script counting live connections per local port. The order rotates every round. Per run it \
records the churn rate, the tracer's voluntary context switches a second (its wake-ups) and \
CPU share, and for tcptrace its events per connection, lost and drift from its last line.\n\n\
Not part of `cargo xtask test`: a benchmark is not a timed test. Needs root. About \
rounds x 7 x (seconds + 3) s in all, more when tcptrace's start-up snapshot is slow.\n\n\
Instead of that: --scale (the demo at a million connections), --vm (the churn on every attach \
path in a VM), --soak (`tcptrace serve` for an hour under a changing load, failing on growth \
without a cause; `cargo xtask test` runs a 2-minute version).";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::setup(&args).map(|()| ExitCode::SUCCESS),
        Command::Run { args } => run::run(&args),
        Command::Test(args) => test::test(&args),
        Command::VmTest(args) => vm::vm_test(&args),
        Command::Dist(args) => dist::dist(&args),
        Command::Bench(args) => bench::bench(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            say!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;
    use tcptrace_common::attach::Path;

    use super::*;
    use crate::attach::AttachPath::{self, Only};

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_passes_hyphenated_args_through() {
        let cli = Cli::try_parse_from(["cargo xtask", "run", "--", "--json", "-p", "80"]).unwrap();
        let Command::Run { args } = cli.command else { panic!("not run") };
        assert_eq!(args, ["--json", "-p", "80"]);
        let cli = Cli::try_parse_from(["cargo xtask", "run", "watch", "--json"]).unwrap();
        let Command::Run { args } = cli.command else { panic!("not run") };
        assert_eq!(args, ["watch", "--json"]);
    }

    #[test]
    fn vm_paths_are_comma_separated() {
        let cli =
            Cli::try_parse_from(["cargo xtask", "vm-test", "--paths", "fentry,kprobe"]).unwrap();
        let Command::VmTest(args) = cli.command else { panic!("not vm-test") };
        assert_eq!(args.paths, [Only(Path::Fentry), Only(Path::Kprobe)]);
    }

    /// The long help spells out what the tiers run; it must say what they do run.
    #[test]
    fn help_names_what_the_tiers_run() {
        let cli = Cli::command();
        let about = |name: &str| {
            cli.find_subcommand(name).and_then(|c| c.get_long_about()).unwrap().to_string()
        };
        let (test, vm_test) = (about("test"), about("vm-test"));
        assert!(test.contains(&format!("`{}`", test::unit_command())), "{test}");
        for path in AttachPath::HOST_DEFAULT {
            assert!(test.contains(&format!("TCPTRACE_ATTACH={path}")), "{test}");
        }
        let vm_paths =
            format!("per attach path: {}.", AttachPath::list(&AttachPath::VM_DEFAULT, ", "));
        assert!(test.contains(&vm_paths), "{test}");
        assert!(vm_test.contains(&vm_paths), "{vm_test}");
        let soak = format!(
            "`cargo xtask bench --soak --minutes {} --population {}`",
            bench::soak::CI_MINUTES,
            bench::soak::CI_POPULATION
        );
        assert!(test.contains(&soak), "{test}");
    }
}
