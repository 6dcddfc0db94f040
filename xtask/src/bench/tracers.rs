//! What can watch the churn: tcptrace in its variants and the peers users would otherwise
//! run (tcplife, tcpstates, a bpftrace script); installing the peers; running one tracer in
//! the background, from the moment it has attached until it is stopped.

use std::{
    fs,
    path::Path,
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use super::proc::fd_targets;
use crate::{attach::AttachPath, cmd, setup};

/// What watches the churn in one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Tracer {
    /// No tracer: the reference rate.
    Baseline,
    /// No tracer again, as if it were one: its ratios to the baseline are the noise of the
    /// measurement (an A/A control).
    BaselineAgain,
    /// `tcptrace watch --json`, attach path auto (tp_btf on the host).
    Tcptrace,
    /// `tcptrace watch --json --attach tracepoint-classic`.
    TcptraceClassic,
    /// `tcptrace watch --json --interval 1h`: no snapshot (no sock_diag dump) during the
    /// churn, so the row shows the event path alone (BPF programs, ring, ledger).
    TcptraceEventsOnly,
    /// libbpf-tools' tcplife: one line per closed connection.
    Tcplife,
    /// libbpf-tools' tcpstates: one line per state change.
    Tcpstates,
    /// bpftrace counting live connections per local port on sock:inet_sock_set_state.
    Bpftrace,
}

impl Tracer {
    pub(super) const ALL: [Self; 8] = [
        Self::Baseline,
        Self::Tcptrace,
        Self::TcptraceClassic,
        Self::TcptraceEventsOnly,
        // Halfway round, so that it, like the baseline, always follows a tracer's run (and
        // its start-up pause): right after the baseline it ran 4-10 % cheaper.
        Self::BaselineAgain,
        Self::Tcplife,
        Self::Tcpstates,
        Self::Bpftrace,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline (no tracer)",
            Self::BaselineAgain => "baseline again (A/A control)",
            Self::Tcptrace => "tcptrace (auto: tp_btf)",
            Self::TcptraceClassic => "tcptrace (tracepoint-classic)",
            Self::TcptraceEventsOnly => "tcptrace (auto), no snapshots during the run",
            Self::Tcplife => "tcplife (libbpf-tools)",
            Self::Tcpstates => "tcpstates (libbpf-tools)",
            Self::Bpftrace => "bpftrace live-per-port script",
        }
    }

    pub(super) fn is_baseline(self) -> bool {
        matches!(self, Self::Baseline | Self::BaselineAgain)
    }

    pub(super) fn is_tcptrace(self) -> bool {
        matches!(self, Self::Tcptrace | Self::TcptraceClassic | Self::TcptraceEventsOnly)
    }

    /// The rows that the targets apply to: what a user runs.
    pub(super) fn has_targets(self) -> bool {
        matches!(self, Self::Tcptrace | Self::TcptraceClassic)
    }

    pub(super) fn is_peer(self) -> bool {
        self.peer_program().is_some()
    }

    /// The program a peer runs as (and is looked for on PATH as).
    fn peer_program(self) -> Option<&'static str> {
        match self {
            Self::Tcplife => Some("tcplife"),
            Self::Tcpstates => Some("tcpstates"),
            Self::Bpftrace => Some("bpftrace"),
            _ => None,
        }
    }
}

/// The bpftrace peer: live connections (ESTABLISHED and CLOSE_WAIT, as tcptrace counts
/// them) per local port, the top 20 printed every second, like `tcptrace watch`.
pub(super) const BPFTRACE_SCRIPT: &str = r"tracepoint:sock:inet_sock_set_state
/args->protocol == 6/
{
  if (args->newstate == 1) { @live[args->sport]++; }
  if ((args->oldstate == 1 && args->newstate != 8) || args->oldstate == 8) { @live[args->sport]--; }
}
interval:s:1 { print(@live, 20); }
";

/// apt packages the peers come from.
const PEER_PACKAGES: [(&str, &[Tracer]); 2] =
    [("libbpf-tools", &[Tracer::Tcplife, Tracer::Tcpstates]), ("bpftrace", &[Tracer::Bpftrace])];

/// Installs the apt packages of the peers that are asked for (unless `no_install`), and
/// returns the tracers still missing.
pub(super) fn ensure_peers(tracers: &[Tracer], no_install: bool) -> Result<Vec<Tracer>> {
    let mut install = Vec::new();
    for (package, peers) in PEER_PACKAGES {
        let needed: Vec<&str> = peers
            .iter()
            .filter(|peer| tracers.contains(peer))
            .filter_map(|peer| peer.peer_program())
            .collect();
        if needed.is_empty() {
            continue;
        }
        if needed.iter().all(|p| cmd::on_path(p).is_some()) {
            say!("bench: skipping apt package {package}: {} already installed", needed.join(", "));
        } else {
            install.push(package);
        }
    }
    if !install.is_empty() && !no_install {
        say!("bench: installing the peers' apt packages: {}", install.join(" "));
        setup::apt_update_once()?;
        cmd::run(
            setup::apt_get().args(["install", "-y", "--no-install-recommends"]).args(&install),
        )?;
    }
    let missing: Vec<Tracer> = tracers
        .iter()
        .copied()
        .filter(|t| t.peer_program().is_some_and(|program| cmd::on_path(program).is_none()))
        .collect();
    for t in &missing {
        say!("bench: skipping {}: not installed (drop --no-install to install it)", t.name());
    }
    Ok(missing)
}

pub(super) fn tracer_command(tracer: Tracer, tcptrace: &Path, script: &Path) -> Option<Command> {
    let watch = |attach: AttachPath| {
        let mut c = Command::new(tcptrace);
        c.args(["watch", "--json", "--top", "5", "--attach", attach.as_str()]);
        c
    };
    let mut quiet = watch(AttachPath::Auto);
    quiet.args(["--interval", "1h"]);
    match tracer {
        Tracer::Baseline | Tracer::BaselineAgain => None,
        Tracer::Tcptrace => Some(watch(AttachPath::Auto)),
        Tracer::TcptraceClassic => {
            Some(watch(AttachPath::Only(tcptrace_common::attach::Path::Tracepoint)))
        }
        Tracer::TcptraceEventsOnly => Some(quiet),
        Tracer::Tcplife | Tracer::Tcpstates => tracer.peer_program().map(Command::new),
        Tracer::Bpftrace => {
            let mut c = Command::new("bpftrace");
            // Every ephemeral port of the churn is a key; bpftrace's default (4096) would
            // drop updates once they fill the map.
            c.env("BPFTRACE_MAP_KEYS_MAX", "65536").arg(script);
            Some(c)
        }
    }
}

/// What tells that a tracer is ready to measure.
#[derive(Clone, Copy)]
pub(super) enum Ready {
    /// A first line on stdout.
    FirstLine,
    /// A BPF link or perf event fd, or any output.
    Attached,
}

/// A tracer running in the background, its output going to files.
pub(super) struct Traced {
    child: Child,
}

/// How long a tracer may take to attach (bpftrace compiles its script with LLVM).
const ATTACH_TIMEOUT: Duration = Duration::from_mins(1);
/// After the first output, so the last probe is surely attached.
const SETTLE: Duration = Duration::from_secs(1);

impl Traced {
    /// Starts the tracer and waits until it has attached: it holds a BPF link or perf event
    /// (a tracepoint attachment), or has said something. Output alone is not enough: a
    /// peer's stdout into a file is block-buffered, so its header may come much later.
    pub(super) fn start(
        mut command: Command,
        ready: Ready,
        out: &Path,
        err: &Path,
    ) -> Result<Self> {
        say!("bench: starting {}", cmd::display(&command));
        let child = command.spawn().with_context(|| format!("cannot start {command:?}"))?;
        let mut running = Self { child };
        let began = Instant::now();
        loop {
            if let Some(status) = running.child.try_wait()? {
                let why = fs::read_to_string(err).unwrap_or_default();
                bail!("exited before attaching ({status}): {}", why.trim());
            }
            let said = |p: &Path| fs::metadata(p).is_ok_and(|m| m.len() > 0);
            let is_ready = match ready {
                Ready::FirstLine => fs::read(out).is_ok_and(|text| text.contains(&b'\n')),
                Ready::Attached => holds_attachment(running.pid()) || said(out) || said(err),
            };
            if is_ready {
                break;
            }
            if began.elapsed() > ATTACH_TIMEOUT {
                let _ = running.child.kill();
                bail!("did not attach within {ATTACH_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(50));
        }
        // The first attachment is not the last: give the others time too.
        thread::sleep(SETTLE);
        Ok(running)
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGINT (tcptrace reconciles and prints a last line) and returns the
    /// last line of its stdout.
    pub(super) fn stop(mut self, out: &Path) -> Result<Option<String>> {
        let _ = Command::new("kill").args(["-INT", &self.pid().to_string()]).status();
        if cmd::wait_bounded(&mut self.child, Duration::from_secs(30))?.is_none() {
            bail!("did not stop within 30 s of SIGINT");
        }
        let text = fs::read_to_string(out).unwrap_or_default();
        Ok(text.lines().rfind(|l| !l.trim().is_empty()).map(str::to_owned))
    }
}

/// Whether the process holds a BPF link or a perf event (how tracepoints are attached).
fn holds_attachment(pid: u32) -> bool {
    fd_targets(pid).any(|(_, target)| is_attachment(&target))
}

fn is_attachment(fd_target: &str) -> bool {
    fd_target == "anon_inode:bpf_link" || fd_target == "anon_inode:[perf_event]"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_attachments_from_other_fds() {
        assert!(is_attachment("anon_inode:bpf_link"));
        assert!(is_attachment("anon_inode:[perf_event]"));
        assert!(!is_attachment("anon_inode:bpf-map"));
    }

    #[test]
    fn every_peer_comes_from_one_package() {
        for tracer in Tracer::ALL {
            let packages =
                PEER_PACKAGES.iter().filter(|(_, peers)| peers.contains(&tracer)).count();
            assert_eq!(packages, usize::from(tracer.is_peer()), "{tracer:?}");
        }
    }
}
