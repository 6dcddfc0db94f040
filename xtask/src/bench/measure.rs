//! One run: the churn with one tracer attached (or none), and what it cost the box.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    BenchArgs,
    bpf_stats::BpfStats,
    churn::churn,
    proc::{ProcSample, softirq_threads_cpu},
    tracers::{Ready, Traced, Tracer, tracer_command},
    watch::parse_watch_line,
};

/// One churn with one tracer attached.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Run {
    pub(super) tracer: Tracer,
    /// Connections (connect + accept + close) a second.
    pub(super) rate: f64,
    /// CPU time per connection, in µs: load generator + tracer + softirq threads.
    pub(super) cpu_per_conn: f64,
    /// The tracer's BPF programs: mean run time, and runs per churn connection (other
    /// traffic on the box runs them too), from `kernel.bpf_stats_enabled`.
    pub(super) bpf_run_ns: Option<f64>,
    pub(super) bpf_runs_per_conn: Option<f64>,
    /// The tracer's direct cost per connection, in µs: its BPF programs' run time plus its
    /// process's CPU time. What it leaves out (syscall tracing's slow path, cache and lock
    /// contention) only adds to the cost, so this is a lower bound, and a steady one.
    pub(super) direct_per_conn: Option<f64>,
    /// The tracer process's voluntary context switches a second during the churn.
    pub(super) wakeups: Option<f64>,
    /// The tracer process's CPU time (user + system) over wall time during the churn.
    pub(super) cpu: Option<f64>,
    /// tcptrace's events over the churn's connections: 4 (connect, accept, two closes)
    /// when it saw every one and nothing else ran.
    pub(super) events_per_conn: Option<f64>,
    /// tcptrace's last line: events lost and drift against sock_diag at exit.
    pub(super) lost: Option<u64>,
    pub(super) drift: Option<u64>,
}

impl Run {
    pub(super) fn describe(&self) -> String {
        let mut s = format!("{:.0} conn/s, {:.2} µs CPU/conn", self.rate, self.cpu_per_conn);
        if let (Some(ns), Some(runs)) = (self.bpf_run_ns, self.bpf_runs_per_conn) {
            let _ = write!(s, ", BPF {ns:.0} ns/run x {runs:.1} runs/conn");
        }
        if let Some(w) = self.wakeups {
            let _ = write!(s, ", {w:.0} wakeups/s");
        }
        if let Some(c) = self.cpu {
            let _ = write!(s, ", tracer CPU {:.0}%", c * 100.0);
        }
        if let Some(e) = self.events_per_conn {
            let _ = write!(s, ", {e:.3} events/conn");
        }
        if let (Some(l), Some(d)) = (self.lost, self.drift) {
            let _ = write!(s, ", lost {l}, drift {d}");
        }
        s
    }
}

pub(super) fn measure(
    tracer: Tracer,
    tcptrace: &Path,
    work: &Path,
    script: &Path,
    args: &BenchArgs,
) -> Result<Run> {
    let stdout_file = work.join("tracer.out");
    let err = work.join("tracer.err");
    let mut child = match tracer_command(tracer, tcptrace, script) {
        Some(mut command) => {
            let stdout = fs::File::create(&stdout_file)?;
            let stderr = fs::File::create(&err)?;
            command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
            // tcptrace is ready when it prints its first snapshot (after seeding from
            // sock_diag, which can take seconds on a busy box); a peer when it has attached.
            let ready = if tracer.is_tcptrace() { Ready::FirstLine } else { Ready::Attached };
            Some(Traced::start(command, ready, &stdout_file, &err)?)
        }
        None => None,
    };
    let before = child.as_ref().map(|c| ProcSample::read(c.pid()));
    let bpf_before = child.as_ref().map(|c| BpfStats::of(c.pid()));
    let softirq_before = softirq_threads_cpu();
    let began = Instant::now();
    let churned = churn(tcptrace, args);
    let wall = began.elapsed().as_secs_f64();
    let softirq = softirq_threads_cpu().saturating_sub(softirq_before);
    let after = child.as_ref().map(|c| ProcSample::read(c.pid()));
    let bpf_after = child.as_ref().map(|c| BpfStats::of(c.pid()));
    let last_line = match child.take() {
        Some(running) => running.stop(&stdout_file)?,
        None => None,
    };
    let churned = churned?;
    let child_started = before.is_some();
    let (wakeups, cpu, tracer_cpu) = match (before, after) {
        (Some(Some(b)), Some(Some(a))) => {
            let (w, c) = a.since(&b, wall);
            (Some(w), Some(c), Duration::from_nanos(a.cpu_ns.saturating_sub(b.cpu_ns)))
        }
        (None, None) => (None, None, Duration::ZERO),
        _ => bail!("could not read the tracer's /proc files"),
    };
    // Everything the churn cost, wherever it ran: the load generator's threads (BPF
    // programs and loopback softirqs run in them), the tracer's, and the softirq threads
    // (deferred softirqs; they serve the box's other loopback traffic too).
    let cpu_per_conn = per_connection(churned.cpu + tracer_cpu + softirq, churned.connections);
    let bpf = match (bpf_before, bpf_after) {
        (Some(b), Some(a)) => a.since(&b),
        _ => None,
    };
    let end = if tracer.is_tcptrace() {
        let line = last_line.context("tcptrace printed no JSON line")?;
        Some(parse_watch_line(&line)?)
    } else {
        None
    };
    Ok(Run {
        tracer,
        rate: churned.rate,
        cpu_per_conn,
        bpf_run_ns: bpf.and_then(|b| b.ns_per_run()),
        bpf_runs_per_conn: bpf.map(|b| ratio(b.run_cnt, churned.connections)),
        direct_per_conn: child_started.then(|| {
            per_connection(
                Duration::from_nanos(bpf.map_or(0, |b| b.run_time_ns)) + tracer_cpu,
                churned.connections,
            )
        }),
        wakeups,
        cpu,
        events_per_conn: end.map(|e| ratio(e.events, churned.connections)),
        lost: end.map(|e| e.lost),
        drift: end.map(|e| e.drift),
    })
}

/// CPU time per connection, in µs (NaN without connections).
#[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
pub(super) fn per_connection(cpu: Duration, connections: u64) -> f64 {
    if connections == 0 { f64::NAN } else { cpu.as_secs_f64() * 1e6 / connections as f64 }
}

/// `a / b` (NaN when `b` is 0).
#[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
pub(super) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { f64::NAN } else { a as f64 / b as f64 }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn per_connection_costs_and_ratios() {
        assert!((per_connection(Duration::from_millis(250), 5000) - 50.0).abs() < 1e-9);
        assert!(per_connection(Duration::from_secs(1), 0).is_nan());
        assert!((ratio(3, 4) - 0.75).abs() < 1e-12);
        assert!(ratio(3, 0).is_nan());
    }

    /// A run with a rate and 100 µs of CPU a connection, and nothing else measured: what
    /// the tests of the statistics and of the table start from.
    pub(in crate::bench) fn run(tracer: Tracer, rate: f64) -> Run {
        Run {
            tracer,
            rate,
            cpu_per_conn: 100.0,
            bpf_run_ns: None,
            bpf_runs_per_conn: None,
            direct_per_conn: None,
            wakeups: None,
            cpu: None,
            events_per_conn: None,
            lost: None,
            drift: None,
        }
    }
}
