//! Booting the VM under QEMU (software emulation) and reading its serial console.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{cmd, libtest::Counts};

pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    /// Added to the kernel command line.
    pub append: String,
    pub timeout: Duration,
    pub log: &'a Path,
    /// Virtual CPUs. One removes the TCG `int3` soft lockups of two (see [`super::VmArgs`]).
    pub smp: u32,
    /// Put after `vm` on each console line on stderr (`vm[5.10.0-32-cloud-amd64]: ...`) when
    /// VMs run side by side; empty otherwise.
    pub tag: String,
}

/// Boots, streams the console (prefixed `vm: `) to stderr and to `boot.log`, and returns
/// what the console said. Kills QEMU when `boot.timeout` runs out.
pub fn boot(boot: &Boot<'_>) -> Result<Console> {
    let mut qemu = Command::new("qemu-system-x86_64");
    // Nested KVM is broken on the project's machines: TCG only (see ../shared/PLATFORM.md).
    qemu.args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", &boot.smp.to_string()])
        // No network card: the tests use loopback only, and its boot ROM costs time.
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(boot.vmlinuz)
        .arg("-initrd")
        .arg(boot.initrd)
        .arg("-append")
        // `quiet` keeps the boot short on the slow serial console; `loglevel=5` still shows
        // warnings and the stack traces the kernel prints with them (a soft lockup's trace is
        // what tells a kernel hang apart from a slow test).
        .arg(format!(
            "console=ttyS0 quiet loglevel=5 softlockup_all_cpu_backtrace=1 panic=-1 {}",
            boot.append
        ));
    say!("running: {}", cmd::display(&qemu));
    say!(
        "vm: the console follows (also in {}); QEMU is killed after {} s",
        boot.log.display(),
        boot.timeout.as_secs()
    );
    let mut child =
        qemu.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context(
            "cannot start qemu-system-x86_64: `cargo xtask setup` installs qemu-system-x86",
        )?;
    let (lines, received) = mpsc::channel();
    let readers = [
        forward(child.stdout.take().expect("piped"), "vm", lines.clone()),
        forward(child.stderr.take().expect("piped"), "qemu", lines),
    ];
    let mut log =
        File::create(boot.log).with_context(|| format!("creating {}", boot.log.display()))?;
    let started = Instant::now();
    let deadline = started + boot.timeout;
    let mut console = Console::default();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            say!(
                "vm: timed out after {} s; killing QEMU (pid {})",
                boot.timeout.as_secs(),
                child.id()
            );
            console.timed_out = true;
            // Our own child, by its handle. Its pipes close and the readers finish.
            let _ = child.kill();
            break;
        }
        match received.recv_timeout(left) {
            Ok((source, line)) => {
                eprintln!("{source}{}: {line}", boot.tag);
                writeln!(log, "{source}: {line}")?;
                if source == "vm" {
                    console.feed(&line, started.elapsed());
                    if let Some(hang) = &console.hung {
                        say!("vm: the guest kernel is hung ({hang}); killing QEMU");
                        let _ = child.kill();
                        break;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().context("waiting for QEMU")?;
    for reader in readers {
        let _ = reader.join();
    }
    console.elapsed = started.elapsed();
    console.qemu_status = Some(status.to_string());
    say!("vm: QEMU exited ({status}) after {:.1} s", console.elapsed.as_secs_f64());
    Ok(console)
}

/// Sends each line of `stream` (terminal escapes removed) down `lines`.
fn forward(
    stream: impl Read + Send + 'static,
    source: &'static str,
    lines: mpsc::Sender<(&'static str, String)>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = printable(&String::from_utf8_lossy(&buf));
            buf.clear();
            if lines.send((source, line)).is_err() {
                break;
            }
        }
    })
}

/// The line without terminal control: `SeaBIOS` clears the screen and turns off line
/// wrapping, which would garble the developer's terminal.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters and intermediates, then one final byte in @..=~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// What the console said, from the `TCPTRACE-VM-*` lines /init prints.
#[derive(Debug, Default)]
pub struct Console {
    /// `uname -r` inside the VM.
    pub kernel_release: Option<String>,
    /// When /init started, since QEMU started.
    pub init_started: Option<Duration>,
    pub paths: BTreeMap<String, PathReport>,
    pub done: bool,
    pub timed_out: bool,
    pub panic: Option<String>,
    /// A soft lockup that lasted [`HUNG_AFTER_S`]: the kernel line that said so.
    pub hung: Option<String>,
    pub warnings: Vec<String>,
    pub elapsed: Duration,
    pub qemu_status: Option<String>,
    /// The path running now (between its BEGIN and RESULT markers).
    pub current: Option<String>,
}

/// How long a CPU may be stuck in the kernel before the guest counts as hung. The kernel
/// reports a soft lockup after 20 s; under emulation on a busy host a vCPU can lag that
/// long and recover, while a real hang goes on (the one seen in CI lasted 25 minutes).
pub const HUNG_AFTER_S: u64 = 120;

#[derive(Debug, Default, Clone)]
pub struct PathReport {
    /// `passed` or `failed`, from the marker line; `None` if it never came.
    pub result: Option<String>,
    pub counts: Counts,
    pub began: Duration,
    pub took: Option<Duration>,
}

impl Console {
    pub fn feed(&mut self, line: &str, at: Duration) {
        if let Some(release) = marker(line, "TCPTRACE-VM-KERNEL") {
            self.kernel_release = Some(release.to_owned());
            self.init_started = Some(at);
        } else if let Some(path) = marker(line, "TCPTRACE-VM-BEGIN") {
            self.paths.insert(path.to_owned(), PathReport { began: at, ..PathReport::default() });
            self.current = Some(path.to_owned());
        } else if let Some(rest) = marker(line, "TCPTRACE-VM-RESULT") {
            let mut words = rest.split_whitespace();
            if let (Some(path), Some(result)) = (words.next(), words.next()) {
                let report = self.paths.entry(path.to_owned()).or_default();
                report.result = Some(result.to_owned());
                report.took = Some(at.saturating_sub(report.began));
            }
            self.current = None;
        } else if marker(line, "TCPTRACE-VM-DONE").is_some() {
            self.done = true;
        } else if let Some(warning) = marker(line, "TCPTRACE-VM-WARNING") {
            self.warnings.push(warning.to_owned());
        } else if let Some(stuck) = soft_lockup_seconds(line) {
            if stuck >= HUNG_AFTER_S {
                self.hung.get_or_insert_with(|| line.trim().to_owned());
            }
        } else if line.contains("Kernel panic") {
            self.panic.get_or_insert_with(|| line.trim().to_owned());
        } else if let Some(current) = &self.current
            && let Some(report) = self.paths.get_mut(current)
        {
            report.counts.absorb(line);
        }
    }
}

/// N from the kernel's `watchdog: BUG: soft lockup - CPU#0 stuck for Ns! [comm:pid]`.
fn soft_lockup_seconds(line: &str) -> Option<u64> {
    let rest = &line[line.find("soft lockup - CPU#")?..];
    let after = &rest[rest.find("stuck for ")? + "stuck for ".len()..];
    after[..after.find("s!")?].parse().ok()
}

/// The rest of the line after `name ` if the line carries that marker (anywhere: a kernel
/// message may have been printed on the same line first).
pub fn marker<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(name)?;
    let rest = &line[at + name.len()..];
    if rest.is_empty() { Some("") } else { rest.strip_prefix(' ').map(str::trim) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_markers() {
        let mut console = Console::default();
        let s = Duration::from_secs;
        for (at, line) in [
            (1, "SeaBIOS (version 1.16.2-debian-1.16.2-1)"),
            (3, "TCPTRACE-VM-KERNEL 6.1.0-50-cloud-amd64"),
            (3, "TCPTRACE-VM-BEGIN fentry"),
            (
                4,
                "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s",
            ),
            (9, "[   12.3] some kernel line TCPTRACE-VM-RESULT fentry passed"),
            (9, "TCPTRACE-VM-BEGIN kprobe"),
            (
                9,
                "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s",
            ),
            (20, "TCPTRACE-VM-RESULT kprobe failed"),
            (20, "TCPTRACE-VM-DONE"),
        ] {
            console.feed(line, s(at));
        }
        assert_eq!(console.kernel_release.as_deref(), Some("6.1.0-50-cloud-amd64"));
        assert_eq!(console.init_started, Some(s(3)));
        assert!(console.done);
        let fentry = &console.paths["fentry"];
        assert_eq!(
            (fentry.result.as_deref(), fentry.counts.passed, fentry.took),
            (Some("passed"), 4, Some(s(6)))
        );
        let kprobe = &console.paths["kprobe"];
        assert_eq!((kprobe.result.as_deref(), kprobe.counts.failed), (Some("failed"), 1));
        assert!(!console.paths.contains_key("tp-btf"));
    }

    #[test]
    fn a_long_soft_lockup_is_a_hang() {
        let mut console = Console::default();
        let lockup = |n: u64| {
            format!(
                "[ 1060.748752] watchdog: BUG: soft lockup - CPU#0 stuck for {n}s! [bad_input_is_re:1407]"
            )
        };
        assert_eq!(soft_lockup_seconds(&lockup(26)), Some(26));
        assert_eq!(soft_lockup_seconds("test result: ok. 1 passed"), None);
        console.feed(&lockup(26), Duration::ZERO);
        assert_eq!(console.hung, None, "a short lockup may be emulation lag");
        console.feed(&lockup(131), Duration::ZERO);
        assert!(console.hung.as_deref().is_some_and(|l| l.contains("stuck for 131s")));
    }

    #[test]
    fn markers_need_a_word_boundary() {
        assert_eq!(marker("TCPTRACE-VM-DONE", "TCPTRACE-VM-DONE"), Some(""));
        assert_eq!(marker("TCPTRACE-VM-DONEX", "TCPTRACE-VM-DONE"), None);
        assert_eq!(marker("x TCPTRACE-VM-BEGIN  tp-btf ", "TCPTRACE-VM-BEGIN"), Some("tp-btf"));
    }

    #[test]
    fn strips_terminal_control() {
        assert_eq!(
            printable("\u{1b}c\u{1b}[?7lSeaBIOS (version 1.16)\r\n"),
            "SeaBIOS (version 1.16)"
        );
        assert_eq!(printable("a\tb\u{1b}[1;31mred\u{1b}[0m"), "a\tbred");
    }
}
