//! `cargo xtask bench --vm`: the churn cost of every attach path, on the Debian 6.1 kernel
//! under QEMU, where fentry and kprobe load (the host refuses them).
//!
//! The VM has one vCPU, which the load generator keeps busy, and the tracer and its BPF
//! programs share it: so the rate with a tracer over the rate without is the churn ratio,
//! with every cost in it. Emulation slows the guest down tens of times, so only ratios
//! within the VM mean anything. Each round runs the churn without and with the tracer,
//! in an order that alternates from round to round (`xtask/src/vm/initramfs.rs`).

use std::{collections::BTreeMap, fmt::Write as _, fs};

use anyhow::{Context as _, Result, bail};

use super::{
    BenchArgs,
    churn::parse_churn,
    measure::ratio,
    stats::{median, range},
    watch::{WatchEnd, parse_watch_line},
};
use crate::{
    attach::AttachPath,
    vm::{self, VmArgs, initramfs::BenchPlan},
};

/// Boots the VM once with the benchmark as its workload, then prints the table.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let plan = BenchPlan { rounds: args.rounds, seconds: args.seconds };
    let paths = AttachPath::VM_DEFAULT.to_vec();
    let vm_args =
        VmArgs { paths: paths.clone(), release: true, bench: Some(plan), ..VmArgs::default() };
    let report = vm::run(&vm_args)?;
    let console = fs::read_to_string(&report.log)
        .with_context(|| format!("reading {}", report.log.display()))?;
    let runs = parse_console(&console)?;
    if runs.is_empty() {
        bail!("the VM printed no benchmark line; see {}", report.log.display());
    }
    println!("{}", render(&report.kernel, plan, &paths, &runs));
    for row in &report.rows {
        if !row.verdict.is_ok() {
            say!("bench: vm {}: {}", row.what, row.verdict.word());
        }
    }
    Ok(())
}

/// One round of one path: the churn's rate without and with the tracer, and the tracer's
/// last `watch --json` line.
#[derive(Debug, Default, Clone, PartialEq)]
struct Round {
    without: Option<f64>,
    with: Option<(f64, u64)>,
    watch: Option<WatchEnd>,
}

/// `TCPTRACE-VM-BENCH path round tracer {churn json}` and
/// `TCPTRACE-VM-BENCH-WATCH path round {watch json}`, by path and round.
fn parse_console(console: &str) -> Result<BTreeMap<(String, u32), Round>> {
    let mut runs: BTreeMap<(String, u32), Round> = BTreeMap::new();
    for line in console.lines() {
        if let Some(rest) = vm::marker(line, "TCPTRACE-VM-BENCH-WATCH") {
            let mut words = rest.splitn(3, ' ');
            let (path, round, json) = (words.next(), words.next(), words.next());
            let (Some(path), Some(round), Some(json)) = (path, round, json) else { continue };
            let round: u32 = round.parse().with_context(|| format!("round in {line}"))?;
            runs.entry((path.to_owned(), round)).or_default().watch = Some(parse_watch_line(json)?);
        } else if let Some(rest) = vm::marker(line, "TCPTRACE-VM-BENCH") {
            let mut words = rest.splitn(4, ' ');
            let (path, round, tracer, json) =
                (words.next(), words.next(), words.next(), words.next());
            let (Some(path), Some(round), Some(tracer), Some(json)) = (path, round, tracer, json)
            else {
                continue;
            };
            let round: u32 = round.parse().with_context(|| format!("round in {line}"))?;
            let churn = parse_churn(json)?;
            let run = runs.entry((path.to_owned(), round)).or_default();
            if tracer == "none" {
                run.without = Some(churn.rate);
            } else {
                run.with = Some((churn.rate, churn.connections));
            }
        }
    }
    Ok(runs)
}

fn render(
    kernel: &str,
    plan: BenchPlan,
    paths: &[AttachPath],
    runs: &BTreeMap<(String, u32), Round>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`cargo xtask bench --vm` on {kernel} under QEMU (TCG, 1 vCPU): {} rounds x {} s of churn per path\n",
        plan.rounds, plan.seconds
    );
    s.push_str("| path | conn/s without (median) | conn/s with (median) | rate ratio (median) | rate ratio range | events/conn | lost | drift | rounds |\n");
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for path in paths {
        let rounds: Vec<&Round> =
            runs.iter().filter(|((p, _), _)| p == path.as_str()).map(|(_, r)| r).collect();
        let without: Vec<f64> = rounds.iter().filter_map(|r| r.without).collect();
        let with: Vec<f64> = rounds.iter().filter_map(|r| r.with.map(|w| w.0)).collect();
        let ratios: Vec<f64> = rounds.iter().filter_map(|r| Some(r.with?.0 / r.without?)).collect();
        let (low, high) = range(&ratios);
        let events: Vec<f64> =
            rounds.iter().filter_map(|r| Some(ratio(r.watch?.events, r.with?.1))).collect();
        let worst =
            |f: fn(&WatchEnd) -> u64| rounds.iter().filter_map(|r| r.watch.as_ref().map(f)).max();
        let num = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
        };
        let count = |v: Option<u64>| v.map_or_else(|| "–".to_owned(), |v| v.to_string());
        let _ = writeln!(
            s,
            "| {path} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(median(&without), 0),
            num(median(&with), 0),
            num(median(&ratios), 3),
            if ratios.is_empty() { "–".to_owned() } else { format!("{low:.3}–{high:.3}") },
            num(median(&events), 3),
            count(worst(|w| w.lost)),
            count(worst(|w| w.drift)),
            ratios.len(),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use tcptrace_common::attach::Path;

    use super::*;

    #[test]
    fn reads_the_rounds_from_the_console() {
        // The last `watch --json` line of a run: every key, as tcptrace prints it.
        let watch = |events: u64, lost: u64, drift: u64| {
            format!(
                r#"{{"elapsed_s":6.002,"backend":"fentry","events":{events},"lost":{lost},"drift":{drift},"drift_total":{drift},"unreconciled_netns":0,"filtered":0,"live":0,"local_ports":[],"remote_endpoints":[],"listeners":[],"destinations":[]}}"#
            )
        };
        let console = format!(
            "\
[   9.1] random kernel line
TCPTRACE-VM-BENCH fentry 1 none {{\"workload\":\"churn\",\"connections\":1000,\"rate\":200.0}}
TCPTRACE-VM-BENCH fentry 1 fentry {{\"workload\":\"churn\",\"connections\":900,\"rate\":180.0}}
TCPTRACE-VM-BENCH-WATCH fentry 1 {}
TCPTRACE-VM-BENCH fentry 2 fentry {{\"workload\":\"churn\",\"connections\":950,\"rate\":190.0}}
TCPTRACE-VM-BENCH-WATCH fentry 2 {}
TCPTRACE-VM-BENCH fentry 2 none {{\"workload\":\"churn\",\"connections\":1000,\"rate\":200.0}}
",
            watch(3600, 0, 0),
            watch(3800, 2, 1)
        );
        let runs = parse_console(&console).unwrap();
        assert_eq!(runs.len(), 2);
        let first = &runs[&("fentry".to_owned(), 1)];
        assert_eq!((first.without, first.with), (Some(200.0), Some((180.0, 900))));
        assert_eq!(first.watch, Some(WatchEnd { events: 3600, lost: 0, drift: 0 }));
        let table = render(
            "6.1",
            BenchPlan { rounds: 2, seconds: 5 },
            &[AttachPath::Only(Path::Fentry)],
            &runs,
        );
        // Ratios 0.90 and 0.95: the median of two is their midpoint.
        assert!(
            table.contains("| fentry | 200 | 185 | 0.925 | 0.900–0.950 | 4.000 | 2 | 1 | 2 |"),
            "{table}"
        );
    }
}
