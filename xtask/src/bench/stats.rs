//! The statistics over the rounds: per-round ratios to that round's baseline, and medians
//! and ranges, one row per tracer.

use super::{measure::Run, tracers::Tracer};

/// One line of the table: a tracer's medians over the rounds.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Row {
    pub(super) tracer: Tracer,
    pub(super) rate: f64,
    /// Median of (this round's rate / this round's baseline rate).
    pub(super) ratio: f64,
    pub(super) ratio_min: f64,
    pub(super) ratio_max: f64,
    /// Median CPU µs per connection.
    pub(super) cpu_per_conn: f64,
    /// Median of (this round's baseline CPU per connection / this run's): the throughput
    /// ratio the same CPU cost gives when the cores are saturated.
    pub(super) cpu_ratio: f64,
    pub(super) cpu_ratio_min: f64,
    pub(super) cpu_ratio_max: f64,
    pub(super) bpf_run_ns: Option<f64>,
    pub(super) bpf_runs_per_conn: Option<f64>,
    pub(super) direct_per_conn: Option<f64>,
    /// Median of (this round's baseline CPU per connection / (that + this run's direct
    /// cost)): an upper bound on the CPU ratio, with little noise.
    pub(super) direct_ratio: Option<f64>,
    pub(super) direct_ratio_min: f64,
    pub(super) direct_ratio_max: f64,
    pub(super) wakeups: Option<f64>,
    pub(super) cpu: Option<f64>,
    pub(super) events_per_conn: Option<f64>,
    /// Worst over the rounds.
    pub(super) lost: Option<u64>,
    pub(super) drift: Option<u64>,
    pub(super) rounds: usize,
}

pub(super) fn summarize(tracers: &[Tracer], runs: &[(u32, Run)]) -> Vec<Row> {
    let baseline = |round: u32| {
        runs.iter()
            .find(|(r, run)| *r == round && run.tracer == Tracer::Baseline)
            .map(|(_, run)| run)
    };
    tracers
        .iter()
        .filter_map(|&tracer| {
            let mine: Vec<&(u32, Run)> =
                runs.iter().filter(|(_, run)| run.tracer == tracer).collect();
            let paired: Vec<(&Run, &Run)> =
                mine.iter().filter_map(|(round, run)| Some((baseline(*round)?, run))).collect();
            let ratios: Vec<f64> =
                paired.iter().map(|(b, run)| rate_ratio(b.rate, run.rate)).collect();
            let cpu_ratios: Vec<f64> = paired
                .iter()
                .map(|(b, run)| cost_ratio(b.cpu_per_conn, run.cpu_per_conn))
                .collect();
            let direct_ratios: Vec<f64> = paired
                .iter()
                .filter_map(|(b, run)| {
                    Some(cost_ratio(b.cpu_per_conn, b.cpu_per_conn + run.direct_per_conn?))
                })
                .collect();
            let (direct_ratio_min, direct_ratio_max) = range(&direct_ratios);
            let opt_median = |f: fn(&Run) -> Option<f64>| {
                let v: Vec<f64> = mine.iter().filter_map(|(_, run)| f(run)).collect();
                median(&v)
            };
            let (ratio_min, ratio_max) = range(&ratios);
            let (cpu_ratio_min, cpu_ratio_max) = range(&cpu_ratios);
            Some(Row {
                tracer,
                rate: median(&mine.iter().map(|(_, run)| run.rate).collect::<Vec<_>>())?,
                ratio: median(&ratios)?,
                ratio_min,
                ratio_max,
                cpu_per_conn: median(&mine.iter().map(|(_, r)| r.cpu_per_conn).collect::<Vec<_>>())
                    .unwrap_or(f64::NAN),
                cpu_ratio: median(&cpu_ratios).unwrap_or(f64::NAN),
                cpu_ratio_min,
                cpu_ratio_max,
                bpf_run_ns: opt_median(|r| r.bpf_run_ns),
                bpf_runs_per_conn: opt_median(|r| r.bpf_runs_per_conn),
                direct_per_conn: opt_median(|r| r.direct_per_conn),
                direct_ratio: median(&direct_ratios),
                direct_ratio_min,
                direct_ratio_max,
                wakeups: opt_median(|r| r.wakeups),
                cpu: opt_median(|r| r.cpu),
                events_per_conn: opt_median(|r| r.events_per_conn),
                lost: mine.iter().filter_map(|(_, run)| run.lost).max(),
                drift: mine.iter().filter_map(|(_, run)| run.drift).max(),
                rounds: mine.len(),
            })
        })
        .collect()
}

/// A run's throughput over its round's baseline throughput.
fn rate_ratio(baseline_rate: f64, rate: f64) -> f64 {
    if baseline_rate > 0.0 { rate / baseline_rate } else { f64::NAN }
}

/// The throughput ratio that a run's CPU cost per connection implies when the cores are
/// saturated (throughput = cores / CPU per connection): baseline cost over the run's cost.
/// 0.98 means every connection cost 1/0.98 = 2.04 % more CPU than without the tracer.
fn cost_ratio(baseline_cpu_per_conn: f64, cpu_per_conn: f64) -> f64 {
    if cpu_per_conn > 0.0 { baseline_cpu_per_conn / cpu_per_conn } else { f64::NAN }
}

/// Smallest and largest finite value (NaN, NaN when there is none).
pub(super) fn range(values: &[f64]) -> (f64, f64) {
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    if finite().next().is_none() {
        return (f64::NAN, f64::NAN);
    }
    (finite().fold(f64::INFINITY, f64::min), finite().fold(f64::NEG_INFINITY, f64::max))
}

pub(super) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { f64::midpoint(v[mid - 1], v[mid]) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::measure::tests::run;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn ratios_are_per_round_then_median() {
        let runs = vec![
            (0, run(Tracer::Baseline, 100.0)),
            (0, run(Tracer::Tcptrace, 99.0)),
            (1, run(Tracer::Baseline, 50.0)),
            (1, run(Tracer::Tcptrace, 45.0)),
            (2, run(Tracer::Baseline, 80.0)),
            (2, run(Tracer::Tcptrace, 80.0)),
        ];
        let rows = summarize(&[Tracer::Baseline, Tracer::Tcptrace], &runs);
        assert_eq!(rows.len(), 2);
        assert!((rows[0].ratio - 1.0).abs() < 1e-12);
        assert!((rows[1].ratio - 0.99).abs() < 1e-12, "{:?}", rows[1]);
        assert!((rows[1].ratio_min - 0.9).abs() < 1e-12);
        assert!((rows[1].ratio_max - 1.0).abs() < 1e-12);
        assert!((rows[1].rate - 80.0).abs() < 1e-12);
        assert_eq!(rows[1].rounds, 3);
    }

    #[test]
    fn cost_ratios_are_baseline_cost_over_run_cost() {
        // 2 % more CPU per connection is the 0.98 of the target (to 1/1.02).
        assert!((cost_ratio(100.0, 102.0) - 0.980_392).abs() < 1e-6);
        assert!((cost_ratio(50.0, 50.0) - 1.0).abs() < 1e-12);
        assert!(cost_ratio(50.0, 0.0).is_nan());
        assert!(rate_ratio(0.0, 5.0).is_nan());
        assert_eq!(range(&[f64::NAN, 3.0, 1.0]), (1.0, 3.0));
        assert!(range(&[f64::NAN]).0.is_nan());
        // Per round, against that round's baseline, even when the rates say otherwise.
        let cost = |tracer, rate, cpu_per_conn| Run { cpu_per_conn, ..run(tracer, rate) };
        let runs = vec![
            (0, cost(Tracer::Baseline, 100.0, 50.0)),
            (0, cost(Tracer::Tcptrace, 120.0, 51.0)),
            (1, cost(Tracer::Baseline, 60.0, 60.0)),
            (1, cost(Tracer::Tcptrace, 40.0, 66.0)),
            (2, cost(Tracer::Baseline, 80.0, 40.0)),
            (2, cost(Tracer::Tcptrace, 80.0, 40.0)),
        ];
        let rows = summarize(&[Tracer::Baseline, Tracer::Tcptrace], &runs);
        let t = &rows[1];
        assert!((t.cpu_ratio - 50.0 / 51.0).abs() < 1e-12, "{t:?}");
        assert!((t.cpu_ratio_min - 60.0 / 66.0).abs() < 1e-12);
        assert!((t.cpu_ratio_max - 1.0).abs() < 1e-12);
        assert!((t.cpu_per_conn - 51.0).abs() < 1e-12);
        assert!((rows[0].cpu_ratio - 1.0).abs() < 1e-12);
        assert_eq!(rows[0].direct_ratio, None);
        // The direct cost is added to the same round's baseline cost.
        let direct = |round, d| {
            (round, Run { direct_per_conn: Some(d), ..cost(Tracer::Tcptrace, 1.0, 90.0) })
        };
        let runs = vec![
            (0, cost(Tracer::Baseline, 1.0, 50.0)),
            direct(0, 1.0),
            (1, cost(Tracer::Baseline, 1.0, 40.0)),
            direct(1, 10.0),
        ];
        let t = &summarize(&[Tracer::Baseline, Tracer::Tcptrace], &runs)[1];
        let want = f64::midpoint(50.0 / 51.0, 40.0 / 50.0);
        assert!((t.direct_ratio.unwrap() - want).abs() < 1e-12, "{t:?}");
        assert!((t.direct_ratio_min - 0.8).abs() < 1e-12);
        assert!((t.direct_per_conn.unwrap() - 5.5).abs() < 1e-12);
    }
}
