//! Whether the tracer grew without a cause: five checks over the curve, each with its
//! threshold here (the `--help` text of `bench --soak` says the same; a test holds them
//! equal).

use std::time::Duration;

use super::curve::{Phase, Sample, kib_to_mib};

/// RSS may go above its warm-up peak by this share of it ...
///
/// A generous bound, because the peak moves for reasons that are not leaks: each burst
/// loses a different number of events, the reconciliation that corrects them allocates in
/// proportion, and glibc keeps the high-water mark (and spreads the walk threads' dumps
/// over up to 8 arenas per core). In 2-minute runs here RSS rose 20 to 42 % over the
/// warm-up's peak in the minute after it (27 % with `MALLOC_ARENA_MAX=1`); a leak still
/// crosses the bound, the sooner the longer the run.
pub(super) const RSS_GROWTH_PERCENT: u64 = 50;
/// ... plus this much, so that a small tracer's noise is no alarm.
pub(super) const RSS_SLACK_MIB: u64 = 32;
/// A rise of drift_total has a cause when lost rose within this long before it: the
/// reconciliation that corrects what a loss broke comes a pass or two later, and passes
/// are paced by their cost (20 times a walk).
pub(super) const CAUSE_WINDOW: Duration = Duration::from_mins(2);
/// Seconds in a row that serve may leave unanswered ...
pub(super) const UNANSWERED_IN_A_ROW: usize = 3;
/// ... and the share of all seconds, in %.
pub(super) const UNANSWERED_PERCENT: usize = 2;
/// How long the tracer has, once the load is gone, to count 0 again.
pub(super) const EMPTY_WITHIN: Duration = Duration::from_mins(1);

/// One check's outcome: its name and a line saying what was measured against what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Check {
    pub(super) name: &'static str,
    pub(super) passed: bool,
    pub(super) line: String,
}

impl Check {
    fn new(name: &'static str, passed: bool, line: String) -> Self {
        Self { name, passed, line }
    }
}

/// How the tracer process ended, if it did before the soak stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Died {
    pub(super) t_s: u64,
    pub(super) status: String,
}

/// Every check, in the order of `--help`.
pub(super) fn judge(samples: &[Sample], warm_up: Duration, died: Option<&Died>) -> Vec<Check> {
    vec![alive(died), answers(samples), rss(samples, warm_up), drift(samples), empty(samples)]
}

fn alive(died: Option<&Died>) -> Check {
    match died {
        None => Check::new("alive", true, "tcptrace serve ran until the soak stopped it".into()),
        Some(d) => {
            Check::new("alive", false, format!("tcptrace serve died at {} s ({})", d.t_s, d.status))
        }
    }
}

fn answers(samples: &[Sample]) -> Check {
    let unanswered = samples.iter().filter(|s| !s.answered).count();
    let (mut run, mut longest, mut longest_at) = (0, 0, 0.0);
    for s in samples {
        run = if s.answered { 0 } else { run + 1 };
        if run > longest {
            (longest, longest_at) = (run, s.t_s);
        }
    }
    let allowed = samples.len() * UNANSWERED_PERCENT / 100;
    let passed = longest < UNANSWERED_IN_A_ROW && unanswered <= allowed;
    let line = if passed {
        format!(
            "serve answered /metrics and /healthz in {} of {} seconds (at most {} missed \
             in a row)",
            samples.len() - unanswered,
            samples.len(),
            longest
        )
    } else if longest >= UNANSWERED_IN_A_ROW {
        format!(
            "serve did not answer /metrics or /healthz for {longest} seconds in a row (up to \
             {longest_at:.0} s); at most {} allowed",
            UNANSWERED_IN_A_ROW - 1
        )
    } else {
        format!(
            "serve did not answer /metrics or /healthz in {unanswered} of {} seconds; at \
             most {UNANSWERED_PERCENT} % ({allowed}) allowed",
            samples.len()
        )
    };
    Check::new("answers", passed, line)
}

fn rss(samples: &[Sample], warm_up: Duration) -> Check {
    let warm = warm_up.as_secs_f64();
    let peak = |after: bool| {
        samples
            .iter()
            .filter(|s| (s.t_s >= warm) == after)
            .filter_map(|s| Some((s.rss_kib?, s.t_s)))
            .max_by_key(|&(kib, _)| kib)
    };
    let (Some((warm_peak, _)), Some((later, at))) = (peak(false), peak(true)) else {
        return Check::new("rss", false, "no RSS read during or after the warm-up".into());
    };
    let limit = warm_peak + warm_peak * RSS_GROWTH_PERCENT / 100 + RSS_SLACK_MIB * 1024;
    let passed = later <= limit;
    let line = format!(
        "tracer RSS peaked at {:.1} MiB after the warm-up (at {at:.0} s) against {:.1} MiB in \
         it (first {warm:.0} s); the limit is {:.1} MiB (+{RSS_GROWTH_PERCENT} % + \
         {RSS_SLACK_MIB} MiB)",
        kib_to_mib(later),
        kib_to_mib(warm_peak),
        kib_to_mib(limit)
    );
    Check::new("rss", passed, if passed { line } else { format!("RSS grew: {line}") })
}

fn drift(samples: &[Sample]) -> Check {
    let window = CAUSE_WINDOW.as_secs_f64();
    let known: Vec<(f64, u64, u64)> =
        samples.iter().filter_map(|s| Some((s.t_s, s.drift_total?, s.lost?))).collect();
    let (mut explained, mut previous) = (0, (0.0, 0, 0));
    for &(t, drift_total, lost) in &known {
        let (_, drift_before, _) = previous;
        if drift_total > drift_before {
            // lost at the start of the window: the last reading before it, or 0 before the
            // first reading.
            let lost_then = known.iter().rev().find(|k| k.0 < t - window).map_or(0, |k| k.2);
            if lost <= lost_then {
                return Check::new(
                    "drift",
                    false,
                    format!(
                        "drift_total grew {drift_before} → {drift_total} at {t:.0} s while \
                         lost did not grow in the {window:.0} s before ({lost_then} → {lost})"
                    ),
                );
            }
            explained += drift_total - drift_before;
        }
        previous = (t, drift_total, lost);
    }
    let (_, drift_total, lost) = previous;
    Check::new(
        "drift",
        true,
        format!(
            "drift_total {drift_total}, every rise within {window:.0} s of a rise of lost \
             ({explained} explained; lost {lost})"
        ),
    )
}

fn empty(samples: &[Sample]) -> Check {
    let teardown: Vec<&Sample> = samples.iter().filter(|s| s.phase == Phase::Teardown).collect();
    let start = teardown.first().map_or(0.0, |s| s.t_s);
    match teardown.iter().find(|s| s.live == Some(0)) {
        Some(s) => Check::new(
            "empty",
            true,
            format!("live fell to 0 {:.0} s after the load ended", s.t_s - start),
        ),
        None => Check::new(
            "empty",
            false,
            format!(
                "live was still {} {:.0} s after the load ended; it must reach 0 within {} s",
                teardown
                    .last()
                    .and_then(|s| s.live)
                    .map_or_else(|| "unknown".into(), |l| l.to_string()),
                teardown.last().map_or(0.0, |s| s.t_s - start),
                EMPTY_WITHIN.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::soak::curve::tests::sample;

    fn run(n: u32) -> Vec<Sample> {
        let mut all: Vec<Sample> = (0..n).map(|t| sample(t, 100)).collect();
        let mut end = sample(n, 0);
        end.phase = Phase::Teardown;
        all.push(end);
        all
    }

    fn failed(samples: &[Sample], warm_up: u64) -> Vec<&'static str> {
        judge(samples, Duration::from_secs(warm_up), None)
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_quiet_run_passes_every_check() {
        let checks = judge(&run(300), Duration::from_secs(30), None);
        assert!(checks.iter().all(|c| c.passed), "{checks:#?}");
        assert_eq!(checks.len(), 5);
    }

    #[test]
    fn rss_is_compared_with_its_peak_in_the_warm_up_not_the_first_sample() {
        let mut all = run(300);
        // Arenas grow early: the first sample is far below what the run needs.
        all[0].rss_kib = Some(8 * 1024);
        all[20].rss_kib = Some(100 * 1024);
        all[200].rss_kib = Some(182 * 1024); // 100 + 50 % + 32 = 182 MiB
        assert!(failed(&all, 30).is_empty());
        all[250].rss_kib = Some(183 * 1024);
        assert_eq!(failed(&all, 30), ["rss"]);
        let check = rss(&all, Duration::from_secs(30));
        assert!(
            check.line.starts_with("RSS grew: tracer RSS peaked at 183.0 MiB"),
            "{}",
            check.line
        );
        // Without a reading after the warm-up there is nothing to judge on.
        assert!(!rss(&all[..10], Duration::from_secs(30)).passed);
    }

    #[test]
    fn drift_needs_a_loss_within_the_window_before_it() {
        let mut all = run(400);
        for s in &mut all[50..] {
            s.lost = Some(10);
        }
        for s in &mut all[120..] {
            s.drift_total = Some(4); // 70 s after the loss
        }
        assert!(failed(&all, 30).is_empty());
        for s in &mut all[300..] {
            s.drift_total = Some(5); // 250 s after it
        }
        let check = drift(&all);
        assert!(!check.passed);
        assert_eq!(
            check.line,
            "drift_total grew 4 → 5 at 300 s while lost did not grow in the 120 s before (10 → 10)"
        );
        // A reading that is missing is no rise.
        let mut gaps = run(100);
        gaps[40].drift_total = None;
        gaps[40].lost = None;
        assert!(drift(&gaps).passed);
    }

    #[test]
    fn serve_may_miss_a_second_now_and_then_but_not_three_in_a_row() {
        let mut all = run(300);
        all[10].answered = false;
        all[100].answered = false;
        all[101].answered = false;
        assert!(failed(&all, 30).is_empty());
        all[102].answered = false;
        assert_eq!(failed(&all, 30), ["answers"]);
        let mut scattered = run(300);
        for t in (0..300).step_by(40) {
            scattered[t].answered = false; // 8 of 301 > 2 %
        }
        assert_eq!(failed(&scattered, 30), ["answers"]);
    }

    #[test]
    fn a_dead_tracer_and_a_count_left_behind_fail() {
        let died = Died { t_s: 42, status: "signal: 9 (SIGKILL)".into() };
        let checks = judge(&run(100), Duration::from_secs(30), Some(&died));
        assert_eq!(checks[0].line, "tcptrace serve died at 42 s (signal: 9 (SIGKILL))");
        let mut left = run(100);
        left.last_mut().unwrap().live = Some(6);
        assert_eq!(failed(&left, 30), ["empty"]);
        assert!(
            empty(&left).line.starts_with("live was still 6 0 s after the load"),
            "{}",
            empty(&left).line
        );
    }
}
