//! The curve: one sample a second of what the tracer used and said against what the soak
//! held, written as JSON lines as it goes, and the summary table over it.

use std::{
    fmt::Write as _,
    fs::File,
    io::{BufWriter, Write as _},
    path::Path,
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::plan::Plan;

/// Which part of the run a sample is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Phase {
    /// The plan runs: population, churn, namespaces.
    Load,
    /// The load is gone; the tracer should come back to 0.
    Teardown,
}

/// One second of the soak. A field is `None` when it could not be read that second (serve
/// did not answer, the process was gone).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Sample {
    /// Seconds since the load started.
    pub(super) t_s: f64,
    pub(super) phase: Phase,
    /// Connections the plan asks the workers to hold now.
    pub(super) target: u64,
    /// Connections the workers say they hold (each has both ends on this box).
    pub(super) held: u64,
    /// The tracer's `tcptrace_live_connections`: it should be `2 × held`, plus the few
    /// connections of the churn in flight.
    pub(super) live: Option<u64>,
    /// The tracer's resident memory, in KiB.
    pub(super) rss_kib: Option<u64>,
    /// The tracer's CPU time over the last second, in % of one core.
    pub(super) cpu_pct: Option<f64>,
    pub(super) events: Option<u64>,
    pub(super) lost: Option<u64>,
    pub(super) drift: Option<u64>,
    pub(super) drift_total: Option<u64>,
    pub(super) skipped_passes: Option<u64>,
    pub(super) unreconciled_netns: Option<u64>,
    /// `/healthz`'s status code.
    pub(super) healthz: Option<u16>,
    /// How long `/metrics` took to answer, in ms.
    pub(super) metrics_ms: Option<f64>,
    /// Both `/metrics` and `/healthz` answered 200 within the scrape timeout.
    pub(super) answered: bool,
    /// Child namespaces alive, and made so far.
    pub(super) namespaces: u64,
    pub(super) namespaces_made: u64,
    /// Connections the churn has made so far.
    pub(super) churned: u64,
    pub(super) burst: bool,
}

impl Sample {
    /// What the tracer should count: both ends of every held connection.
    pub(super) fn expected_live(&self) -> u64 {
        2 * self.held
    }
}

/// The curve's file: one JSON object a line, flushed every line so a killed run keeps what
/// it measured.
pub(super) struct CurveFile {
    out: BufWriter<File>,
}

impl CurveFile {
    pub(super) fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { out: BufWriter::new(file) })
    }

    pub(super) fn write(&mut self, sample: &Sample) -> Result<()> {
        serde_json::to_writer(&mut self.out, sample)?;
        self.out.write_all(b"\n")?;
        self.out.flush().context("writing the curve")
    }
}

/// The summary: one row per population step, then one for the teardown, in Markdown.
pub(super) fn table(plan: &Plan, samples: &[Sample]) -> String {
    let mut s = String::from(
        "| seconds | target | held (end) | live (end) | live − 2×held, settled (max) | RSS MiB (max) | CPU % (mean) | lost (+) | drift_total (+) | unanswered s |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut bounds: Vec<(f64, f64, String)> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let end = plan.steps.get(i + 1).map_or(plan.duration, |next| next.at);
            (step.at.as_secs_f64(), end.as_secs_f64(), step.connections.to_string())
        })
        .collect();
    if let Some(last) = samples.iter().rev().find(|s| s.phase == Phase::Teardown) {
        bounds.push((plan.duration.as_secs_f64(), last.t_s + 1.0, "teardown".into()));
    }
    let mut before: Option<&Sample> = None;
    for (from, to, target) in bounds {
        let rows: Vec<&Sample> = samples.iter().filter(|x| x.t_s >= from && x.t_s < to).collect();
        let Some(end) = rows.last() else { continue };
        let grew = |f: fn(&Sample) -> Option<u64>| {
            let first = before.and_then(f).unwrap_or(0);
            rows.iter()
                .rev()
                .find_map(|x| f(x))
                .map_or_else(dash, |v| v.saturating_sub(first).to_string())
        };
        let settled = settled_gap(samples, &rows);
        let rss = rows.iter().filter_map(|x| x.rss_kib).max();
        let cpu: Vec<f64> = rows.iter().filter_map(|x| x.cpu_pct).collect();
        let _ = writeln!(
            s,
            "| {}–{} | {target} | {} | {} | {} | {} | {} | {} | {} | {} |",
            seconds(from),
            seconds(to),
            end.held,
            end.live.map_or_else(dash, |v| v.to_string()),
            settled.map_or_else(dash, |v| v.to_string()),
            rss.map_or_else(dash, |k| format!("{:.1}", kib_to_mib(k))),
            mean(&cpu).map_or_else(dash, |c| format!("{c:.1}")),
            grew(|x| x.lost),
            grew(|x| x.drift_total),
            rows.iter().filter(|x| !x.answered).count(),
        );
        before = rows.last().copied();
    }
    s
}

/// The largest |live − 2 × held| over the settled seconds among `rows`: those whose held
/// count had not changed for the three seconds before and with no burst running, when the
/// tracer's count (rendered once a second) has had time to catch up.
fn settled_gap(all: &[Sample], rows: &[&Sample]) -> Option<u64> {
    rows.iter()
        .filter(|x| is_settled(all, x))
        .filter_map(|x| Some(x.live?.abs_diff(x.expected_live())))
        .max()
}

pub(super) fn is_settled(all: &[Sample], x: &Sample) -> bool {
    let before: Vec<&Sample> =
        all.iter().filter(|y| y.t_s < x.t_s && y.t_s >= x.t_s - 3.5).collect();
    before.len() >= 3 && !x.burst && before.iter().all(|y| y.held == x.held && !y.burst)
}

#[expect(clippy::cast_precision_loss, reason = "KiB of a process, far below 2^52")]
pub(super) fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[expect(clippy::cast_precision_loss, reason = "a few thousand samples")]
pub(super) fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// `7.5`, `15`: whole seconds without a decimal.
fn seconds(s: f64) -> String {
    if s.fract() == 0.0 { format!("{s:.0}") } else { format!("{s:.1}") }
}

fn dash() -> String {
    "–".to_owned()
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::soak::plan::Population;

    /// A quiet second at `t`: `held` connections, counted exactly, nothing lost.
    pub(in crate::bench::soak) fn sample(t: u32, held: u64) -> Sample {
        Sample {
            t_s: f64::from(t),
            phase: Phase::Load,
            target: held,
            held,
            live: Some(2 * held),
            rss_kib: Some(40 * 1024),
            cpu_pct: Some(10.0),
            events: Some(u64::from(t) * 100),
            lost: Some(0),
            drift: Some(0),
            drift_total: Some(0),
            skipped_passes: Some(0),
            unreconciled_netns: Some(0),
            healthz: Some(200),
            metrics_ms: Some(1.0),
            answered: true,
            namespaces: 1,
            namespaces_made: 1,
            churned: u64::from(t) * 2000,
            burst: false,
        }
    }

    #[test]
    fn settled_seconds_follow_three_unchanged_ones() {
        let mut all: Vec<Sample> = (0..8).map(|t| sample(t, if t < 3 { 10 } else { 20 })).collect();
        all[7].live = Some(45);
        assert!(!is_settled(&all, &all[4]) && !is_settled(&all, &all[5]));
        assert!(is_settled(&all, &all[6]));
        let rows: Vec<&Sample> = all.iter().collect();
        assert_eq!(settled_gap(&all, &rows), Some(5));
    }

    #[test]
    fn the_table_has_a_row_per_step_and_the_teardown() {
        let plan =
            Plan::new(Duration::from_mins(2), Population { low: 10, high: 20 }, 20_000).unwrap();
        let mut all: Vec<Sample> =
            (0..30).map(|t| sample(t, plan.target_at(Duration::from_secs(t.into())))).collect();
        for s in &mut all[20..] {
            s.lost = Some(7);
        }
        // The first cycle only; the steps without samples have no row.
        let mut end = sample(120, 0);
        end.phase = Phase::Teardown;
        end.lost = Some(7);
        all.push(end);
        let table = table(&plan, &all);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 4 + 1, "{table}");
        assert!(
            lines[2].starts_with("| 0–7.5 | 20 | 20 | 40 | 0 | 40.0 | 10.0 | 0 | 0 | 0 |"),
            "{table}"
        );
        assert!(lines[4].contains("| 7 | 0 | 0 |"), "{table}");
        assert!(lines[6].starts_with("| 120–121 | teardown | 0 | 0 |"), "{table}");
    }
}
