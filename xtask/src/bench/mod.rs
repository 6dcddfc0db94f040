//! `cargo xtask bench`: what tcptrace costs a box under a connection storm, side by side
//! with what users would otherwise run (libbpf-tools' tcplife and tcpstates, a bpftrace
//! script), against a baseline with no tracer.
//!
//! Every round runs the same loopback churn (`tcptrace load churn`) once per tracer, in
//! an order that rotates from round to round, so slow drifts of a shared, noisy box (other
//! builds, background traffic) spread over every tracer instead of landing on one. The
//! table gives medians over rounds; a tracer's ratio is the median of its per-round
//! ratios to that round's baseline.
//!
//! Where each part lives:
//! - here: the arguments, and the rounds (the tracers in a rotating order);
//! - `tracers`: what can watch the churn (tcptrace's variants, the peers), installing the
//!   peers, starting a tracer until it has attached, and stopping it;
//! - `measure`: one run, the churn with one tracer attached, and what it cost;
//! - `churn`: the load generator (`tcptrace load churn`) and its CPU time;
//! - `watch`: tcptrace's last `watch --json` line (events, lost, drift);
//! - `proc`: a process's wake-ups, CPU time and fds, and the softirq threads' CPU time,
//!   from /proc;
//! - `bpf_stats`: `kernel.bpf_stats_enabled`, and the run time of a tracer's BPF programs;
//! - `stats`: medians and ratios over the rounds, one row per tracer;
//! - `table`: the machine, the Markdown table and the verdicts against the targets;
//! - `scale`: `--scale`, the demo with N connections;
//! - `vm`: `--vm`, the churn on every attach path in the Debian 6.1 VM;
//! - `soak`: `--soak`, `tcptrace serve` for an hour under a changing load, and whether
//!   anything grew without a cause.

mod bpf_stats;
mod churn;
mod measure;
mod proc;
mod scale;
pub mod soak;
mod stats;
mod table;
mod tracers;
mod vm;
mod watch;

use std::fs;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use self::{
    bpf_stats::BpfStatsOn,
    measure::measure,
    stats::summarize,
    table::{Machine, load_average, render, verdicts},
    tracers::{BPFTRACE_SCRIPT, Tracer, ensure_peers},
};
use crate::{
    cargo::{self, Profile},
    cmd,
};

#[derive(Args, Debug)]
#[expect(clippy::struct_excessive_bools, reason = "independent command-line switches")]
pub struct BenchArgs {
    /// Rounds: every tracer runs once per round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
    /// Seconds of churn per run.
    #[arg(long, default_value_t = 5, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=120))]
    pub seconds: u64,
    /// Load generator threads (clients, and as many acceptors); default: twice the CPUs.
    #[arg(long, value_name = "N")]
    pub threads: Option<u16>,
    /// Only these tracers, comma-separated (the baseline always runs).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "TRACERS")]
    pub only: Vec<Tracer>,
    /// Do not install missing peers (apt); skip the tracers that are missing instead.
    #[arg(long)]
    pub no_install: bool,
    /// Leave `kernel.bpf_stats_enabled` alone: no BPF ns/run column, and no stats overhead
    /// (two clock reads per program run) in the tracers' CPU.
    #[arg(long)]
    pub no_bpf_stats: bool,
    /// Instead of the churn: the scale benchmark, `tcptrace demo --connections N` (one
    /// port held by N connections, then a client's ephemeral range exhausted), printing the
    /// demo's table; 1,000,000 needs about 10 GB of memory (issue 6's figures in
    /// BENCHMARKS.md come from it).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1000000")]
    pub scale: Option<u64>,
    /// Instead of the churn on this kernel: the churn on every attach path (fentry and
    /// kprobe too) in the Debian 6.1 VM of `cargo xtask vm-test`, with and without
    /// `tcptrace watch`, --rounds times --seconds each; rate ratios only (one vCPU, and
    /// emulation slows it tens of times).
    #[arg(long, conflicts_with_all = ["scale", "only", "threads"])]
    pub vm: bool,
    /// Instead of the churn: the soak, `tcptrace serve` for --minutes under a changing load
    /// (see `--help`).
    #[arg(long, long_help = soak::HELP, conflicts_with_all = ["scale", "vm", "only", "threads"])]
    pub soak: bool,
    /// How long the soak runs.
    #[arg(long, requires = "soak", default_value_t = 60, value_name = "N", value_parser = clap::value_parser!(u64).range(2..=600))]
    pub minutes: u64,
    /// The range of connections the soak holds (each with both ends on this box).
    #[arg(long, requires = "soak", default_value_t = soak::Population::FULL, value_name = "LOW-HIGH")]
    pub population: soak::Population,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    if !cmd::may_load_bpf() {
        bail!("benchmarks attach eBPF programs: run `cargo xtask bench` as root");
    }
    if let Some(connections) = args.scale {
        return scale::scale(connections);
    }
    if args.vm {
        return vm::bench(args);
    }
    if args.soak {
        let options = soak::SoakOptions {
            minutes: args.minutes,
            population: args.population,
            profile: Profile::Release,
        };
        let report = soak::soak(&options)?;
        say!("bench: the soak's curve is in {}", report.curve.display());
        return match report.failure {
            Some(why) => bail!("the soak failed: {why}"),
            None => Ok(()),
        };
    }
    // In ALL's order (the baselines apart), whatever the order of --only.
    let mut tracers: Vec<Tracer> = Tracer::ALL
        .into_iter()
        .filter(|t| args.only.is_empty() || t.is_baseline() || args.only.contains(t))
        .collect();
    let missing = ensure_peers(&tracers, args.no_install)?;
    tracers.retain(|t| !missing.contains(t));

    let tcptrace = cargo::build_tcptrace(Profile::Release)?;
    let work = cargo::target_dir()?.join("bench");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let script = work.join("live_per_port.bt");
    fs::write(&script, BPFTRACE_SCRIPT).with_context(|| format!("writing {}", script.display()))?;

    let _stats = if args.no_bpf_stats { None } else { Some(BpfStatsOn::enable()?) };
    let machine = Machine::read();
    say!("bench: {machine}");
    say!(
        "bench: {} rounds x {} tracers x {} s of churn; load average now {}",
        args.rounds,
        tracers.len(),
        args.seconds,
        load_average()
    );
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        for tracer in rotated(&tracers, round as usize) {
            let run = measure(tracer, &tcptrace, &work, &script, args)
                .with_context(|| format!("round {}: {}", round + 1, tracer.name()))?;
            say!("bench: round {} {}: {}", round + 1, tracer.name(), run.describe());
            runs.push((round, run));
        }
    }
    let rows = summarize(&tracers, &runs);
    let load_after = load_average();
    println!("{}", render(&machine, args, &rows, &load_after));
    for line in verdicts(&rows) {
        say!("bench: {line}");
    }
    Ok(())
}

/// The tracers in round `round`'s order: the list rotated by one more each round, the
/// baseline included, so no tracer always runs first or right after another.
fn rotated(tracers: &[Tracer], round: usize) -> Vec<Tracer> {
    let mut order = tracers.to_vec();
    if !order.is_empty() {
        let by = round % order.len();
        order.rotate_left(by);
    }
    order
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    pub(super) fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn parses_arguments() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.rounds, a.seconds, a.threads, a.only.len()), (3, 5, None, 0));
        let a = parse(&["--only", "tcptrace,tcplife", "--rounds", "3", "--seconds", "2"]).unwrap();
        assert_eq!(a.only, [Tracer::Tcptrace, Tracer::Tcplife]);
        assert_eq!((a.rounds, a.seconds), (3, 2));
        assert!(parse(&["--rounds", "0"]).is_err());
        assert!(parse(&["--only", "tcpdump"]).is_err());
    }

    #[test]
    fn the_soak_takes_its_length_and_range() {
        let a = parse(&["--soak"]).unwrap();
        assert!(a.soak);
        assert_eq!((a.minutes, a.population), (60, soak::Population::FULL));
        let a = parse(&["--soak", "--minutes", "20", "--population", "10000-40000"]).unwrap();
        assert_eq!((a.minutes, a.population.low, a.population.high), (20, 10_000, 40_000));
        assert!(parse(&["--minutes", "20"]).is_err(), "--minutes is the soak's");
        assert!(parse(&["--soak", "--minutes", "1"]).is_err());
        assert!(parse(&["--soak", "--vm"]).is_err());
    }

    #[test]
    fn rotates_the_order_each_round() {
        let t = [Tracer::Baseline, Tracer::Tcptrace, Tracer::Tcplife];
        assert_eq!(rotated(&t, 0), t);
        assert_eq!(rotated(&t, 1), [Tracer::Tcptrace, Tracer::Tcplife, Tracer::Baseline]);
        assert_eq!(rotated(&t, 3), t);
    }
}
