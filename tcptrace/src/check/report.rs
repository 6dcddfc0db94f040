//! What a check says: a [`Verdict`] per expectation in an [`ExpectationResult`], the
//! [`Report`] (the JSON of `--report`) and the [`summary`] for a person. The exit code
//! is the command's (`cmd::Outcome`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::expect::{Expectation, Metric, Rule, Selector};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The selector had no live connection in any observation (or drift was never
    /// measured): a failure, since nothing shows the claim.
    NoData,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Count,
    Percent,
}

/// One expectation's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// The expectation in canonical form: `dst=127.0.0.5:9000 headroom>=20%`.
    pub expr: String,
    /// Which value of the run `observed` is.
    pub rule: Rule,
    /// The VALUE of the expectation, in `unit`.
    pub expected: f64,
    pub unit: Unit,
    /// The value the verdict was made on; `None` with no data.
    pub observed: Option<f64>,
    /// Observations in which the selector had live connections (for drift: was measured).
    pub samples: u64,
    pub verdict: Verdict,
    /// The limit the observed value was measured against, at that moment: a listener's
    /// binding limit (`binding limit fds: 300 of 300 in use, 0 more connections`), a
    /// destination's ephemeral range, the box's file table; `None` where no limit applies
    /// (a local port, the counts of the totals) or none could be read.
    pub limit: Option<String>,
}

impl ExpectationResult {
    /// `peak 100000`, `minimum 12.5%` and the limit that decided it, or why there is no
    /// data.
    pub(crate) fn detail(&self, observations: u64) -> String {
        match self.observed {
            Some(v) => match &self.limit {
                Some(limit) => format!("{} {} ({limit})", self.rule.name(), self.format(v)),
                None => format!("{} {}", self.rule.name(), self.format(v)),
            },
            None => match Expectation::parse(&self.expr).map(|e| (e.selector, e.metric)) {
                _ if observations == 0 => "no data: nothing was observed".to_owned(),
                Ok((Selector::Total, Metric::Drift)) => {
                    "no data: drift was never measured".to_owned()
                }
                Ok((_, metric)) if metric.idle().is_none() => format!(
                    "no data: {} was not read in any of {observations} observations",
                    metric.name()
                ),
                Ok((Selector::Total, _)) => "no data".to_owned(),
                _ => format!("no data: no live connection in any of {observations} observations"),
            },
        }
    }

    fn format(&self, v: f64) -> String {
        match self.unit {
            Unit::Count => format!("{v}"),
            Unit::Percent => {
                let s = format!("{v:.3}");
                format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
            }
        }
    }
}

/// The outcome of a check, written as JSON by `--report` and read by [`summary`]. The
/// keys come in the order of the fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Every expectation passed, and loss and drift are within their tolerance.
    pub passed: bool,
    pub duration_s: f64,
    pub observations: u64,
    pub expectations: Vec<ExpectationResult>,
    /// Events lost over the run.
    pub lost: u64,
    /// The most lost events allowed; `None` when loss is not checked.
    pub lost_tolerance: Option<u64>,
    /// The corrections the reconciliations made over the run (the last measured
    /// `drift_total`); `None` when it was never measured.
    pub drift: Option<u64>,
    /// The most drift allowed; `None` when drift is not checked.
    pub drift_tolerance: Option<u64>,
    /// Why the check failed, one line per reason: failed expectations, then loss and drift.
    pub failures: Vec<String>,
    /// Why drift is unknown at the end, when it is checked and the last reconciliation
    /// failed (it is among `failures` too; kept apart for [`summary`], not in the JSON).
    #[serde(skip)]
    pub unverified: Option<String>,
}

impl Report {
    /// Pretty JSON, for `--report`.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    fn failed_expectations(&self) -> usize {
        self.expectations.iter().filter(|r| r.verdict != Verdict::Pass).count()
    }
}

/// The report for a person: a line per expectation (PASS, FAIL or NO DATA, and the value
/// it was judged on), a line each for loss and drift, and a last line that says whether
/// the check passed and, if not, what failed. Each line ends in a newline.
#[must_use]
pub fn summary(r: &Report) -> String {
    let n = r.expectations.len();
    let plural = if n == 1 { "" } else { "s" };
    let mut out = format!(
        "tcptrace check: {n} expectation{plural}, {} observations over {:.1}s\n",
        r.observations, r.duration_s
    );
    let width = r.expectations.iter().map(|e| e.expr.chars().count()).max().unwrap_or(0);
    for e in &r.expectations {
        let status = match e.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NoData => "NO DATA",
        };
        let _ = writeln!(out, "{status:<8} {:<width$}  {}", e.expr, e.detail(r.observations));
    }
    for (checked, line) in tolerance_verdicts(r) {
        let status = checked.map_or("-", |passed| if passed { "PASS" } else { "FAIL" });
        let _ = writeln!(out, "{status:<8} {line}");
    }
    if r.passed {
        out.push_str("check passed\n");
        return out;
    }
    let mut what = Vec::new();
    let failed = r.failed_expectations();
    if failed > 0 {
        what.push(format!("{failed} of {n} expectation{plural}"));
    }
    if r.observations == 0 {
        what.push("nothing observed".to_owned());
    }
    if lost_excess(r.lost, r.lost_tolerance).is_some() {
        what.push(format!("{} events lost", r.lost));
    }
    if let (Some(d), Some(_)) = (r.drift, drift_excess(r.drift, r.drift_tolerance)) {
        what.push(format!("drift {d}"));
    }
    if r.unverified.is_some() {
        what.push("drift unknown".to_owned());
    }
    let _ = writeln!(out, "check FAILED: {}", what.join(", "));
    out
}

/// Loss, then drift, against their tolerance: passed or not (`None` where it is not
/// checked), and the line that says why. The one reading of both for every view of a
/// report, so that the text and the HTML page cannot disagree with the exit code.
pub(crate) fn tolerance_verdicts(r: &Report) -> [(Option<bool>, String); 2] {
    let lost = match (lost_excess(r.lost, r.lost_tolerance), r.lost_tolerance) {
        (Some(reason), _) => (Some(false), reason),
        (None, Some(max)) => (Some(true), format!("lost {} events ({max} allowed)", r.lost)),
        (None, None) => (None, format!("lost {} events (not checked)", r.lost)),
    };
    let drift = match (drift_excess(r.drift, r.drift_tolerance), r.drift, r.drift_tolerance) {
        _ if r.unverified.is_some() => {
            (Some(false), drift_unknown(r.unverified.as_deref().unwrap_or("")))
        }
        (Some(reason), _, _) => (Some(false), reason),
        (None, None, _) => (None, "drift not measured".to_owned()),
        (None, Some(d), Some(max)) => (Some(true), format!("drift {d} ({max} allowed)")),
        (None, Some(d), None) => (None, format!("drift {d} (not checked)")),
    };
    [lost, drift]
}

/// The reason unverified counts fail the check: the last reconciliation failed with `why`.
pub(super) fn drift_unknown(why: &str) -> String {
    format!(
        "drift unknown: the last reconciliation with sock_diag failed ({why}), so the counts \
         were not checked against the kernel; allow it with --ignore-loss"
    )
}

/// The reason lost events fail the check, if they do.
pub(super) fn lost_excess(lost: u64, max: Option<u64>) -> Option<String> {
    let max = max?;
    (lost > max).then(|| {
        format!(
            "{lost} events lost, {max} allowed: the counts may be off by up to {lost}; \
             raise --ring-size, or allow them with --max-lost or --ignore-loss"
        )
    })
}

/// The reason drift fails the check, if it does. A drift never measured does not.
pub(super) fn drift_excess(drift: Option<u64>, max: Option<u64>) -> Option<String> {
    let (drift, max) = (drift?, max?);
    (drift > max).then(|| {
        format!(
            "drift {drift}, {max} allowed: the live count differed from a sock_diag recount \
             by {drift} connections; allow it with --max-drift"
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::check::{
        Check, DestinationValues, PortValues, Tolerance, TotalValues,
        fixtures::{DST, Fake, dst_ports, run, sock, totals},
    };

    use Verdict::Pass;

    fn mixed_report() -> Report {
        let mut a = Fake::default();
        a.ports.insert(8080, PortValues { live: 100_000, remote_addrs: 4, max_per_remote: 25_000 });
        a.destinations.insert(
            sock(DST),
            DestinationValues { live: 85, ports_in_use: 85, use_pct: 85.0, range: Some(100) },
        );
        a.total = TotalValues { live: 100_085, lost: 2, drift: None, files: None };
        let mut b = a.clone();
        b.destinations.insert(
            sock(DST),
            DestinationValues { live: 30, ports_in_use: 30, use_pct: 30.0, range: Some(100) },
        );
        b.total.drift = Some(0);
        run(
            &["lport=8080 live>=100000", "dst=127.0.0.5:9000 headroom>=20%", "lport=9999 live<=10"],
            &[a, b],
            Tolerance::EXACT,
        )
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = mixed_report();
        let json = r.to_json();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);

        let v: Value = serde_json::from_str(&json).unwrap();
        let keys = [
            "passed",
            "duration_s",
            "observations",
            "expectations",
            "lost",
            "lost_tolerance",
            "drift",
            "drift_tolerance",
            "failures",
        ];
        assert_eq!(v.as_object().unwrap().len(), keys.len());
        let positions: Vec<usize> =
            keys.iter().map(|k| json.find(&format!("\n  \"{k}\":")).unwrap()).collect();
        assert!(positions.is_sorted(), "{json}");
        assert_eq!(v["passed"], false);
        assert_eq!(v["duration_s"], 60.0);
        assert_eq!(v["observations"], 2);
        assert_eq!((v["lost"].as_u64(), v["lost_tolerance"].as_u64()), (Some(2), Some(0)));
        assert_eq!((v["drift"].as_u64(), v["drift_tolerance"].as_u64()), (Some(0), Some(0)));
        let e = &v["expectations"];
        assert_eq!(
            e[0],
            serde_json::json!({
                "expr": "lport=8080 live>=100000", "rule": "peak", "expected": 100_000.0,
                "unit": "count", "observed": 100_000.0, "samples": 2, "verdict": "pass",
                "limit": null
            })
        );
        assert_eq!(e[1]["rule"], "minimum");
        assert_eq!(e[1]["unit"], "percent");
        assert_eq!(e[1]["verdict"], "fail");
        assert_eq!(
            (e[1]["observed"].as_f64(), e[1]["expected"].as_f64()),
            (Some(15.0), Some(20.0))
        );
        assert!(e[2]["observed"].is_null());
        assert_eq!(e[2]["verdict"], "no_data");
        assert_eq!(v["failures"].as_array().unwrap().len(), 3);

        // Unchecked tolerances and an unmeasured drift are null.
        let r = run(&[], &[Fake::default()], Tolerance::from_flags(None, None, true));
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(
            v["lost_tolerance"].is_null() && v["drift_tolerance"].is_null() && v["drift"].is_null()
        );
        assert_eq!(v["passed"], true);
        assert_eq!(v["failures"], serde_json::json!([]));
    }

    #[test]
    fn summary_of_a_failed_check() {
        let r = mixed_report();
        assert_eq!(
            summary(&r),
            "\
tcptrace check: 3 expectations, 2 observations over 60.0s
PASS     lport=8080 live>=100000           peak 100000
FAIL     dst=127.0.0.5:9000 headroom>=20%  minimum 15% (ephemeral range 100 ports, 85 in use)
NO DATA  lport=9999 live<=10               no data: no live connection in any of 2 observations
FAIL     2 events lost, 0 allowed: the counts may be off by up to 2; raise --ring-size, or allow them with --max-lost or --ignore-loss
PASS     drift 0 (0 allowed)
check FAILED: 2 of 3 expectations, 2 events lost
"
        );
    }

    #[test]
    fn summary_of_a_passed_check() {
        let obs = dst_ports(&[Some(1), Some(3)]);
        let r =
            run(&[&format!("dst={DST} use<=12.5%")], &obs, Tolerance::from_flags(None, None, true));
        assert_eq!(
            summary(&r),
            "\
tcptrace check: 1 expectation, 2 observations over 60.0s
PASS     dst=127.0.0.5:9000 use<=12.5%  peak 3% (ephemeral range 100 ports, 3 in use)
-        lost 0 events (not checked)
-        drift not measured
check passed
"
        );
        let obs = totals(&[(1, 0, Some(4))]);
        let text = summary(&run(&[], &obs, Tolerance::from_flags(None, Some(4), false)));
        assert!(
            text.contains("\nPASS     lost 0 events (0 allowed)\nPASS     drift 4 (4 allowed)\n"),
            "{text}"
        );
        let text = summary(&run(&[], &obs, Tolerance::from_flags(None, None, true)));
        assert!(text.contains("\n-        drift 4 (not checked)\n"), "{text}");
    }

    #[test]
    fn summary_names_every_reason_to_fail() {
        let obs = totals(&[(1, 5, Some(2))]);
        let text = summary(&run(&["total live>=1"], &obs, Tolerance::EXACT));
        assert!(text.ends_with("\ncheck FAILED: 5 events lost, drift 2\n"), "{text}");
        let text = summary(&run(&["total live>=1"], &[], Tolerance::EXACT));
        assert!(text.contains("NO DATA  total live>=1  no data: nothing was observed\n"), "{text}");
        assert!(text.ends_with("\ncheck FAILED: 1 of 1 expectation, nothing observed\n"), "{text}");
    }

    #[test]
    fn percentages_are_shown_to_three_decimals() {
        let r = ExpectationResult {
            expr: String::new(),
            rule: Rule::Peak,
            expected: 0.0,
            unit: Unit::Percent,
            observed: None,
            samples: 0,
            verdict: Pass,
            limit: None,
        };
        assert_eq!(r.format(100.0 / 3.0), "33.333%");
        assert_eq!(r.format(12.5), "12.5%");
        assert_eq!(r.format(20.0), "20%");
        assert_eq!(r.format(0.0), "0%");
    }

    #[test]
    fn loss_and_drift_verdicts_agree_with_the_report() {
        let judged = |report: &Report| {
            let verdicts = tolerance_verdicts(report).map(|(checked, _)| checked);
            // With no expectations, the report fails only on loss or drift.
            assert_eq!(report.passed, !verdicts.contains(&Some(false)), "{verdicts:?}");
            verdicts
        };
        // A drift never measured is not checked, and does not fail the check.
        let quiet = run(&[], &totals(&[(1, 0, None)]), Tolerance::EXACT);
        assert_eq!(judged(&quiet), [Some(true), None]);
        let lossy = run(&[], &totals(&[(1, 5, Some(0))]), Tolerance::EXACT);
        assert_eq!(judged(&lossy), [Some(false), Some(true)]);
        // A failed reconciliation fails drift whatever the last pass measured.
        let mut check = Check::new(Vec::new(), Tolerance::EXACT);
        check.observe(&totals(&[(1, 0, Some(0))])[0]);
        check.unverified("the dump failed".to_owned());
        let unverified = check.report(std::time::Duration::from_secs(1));
        assert_eq!(judged(&unverified), [Some(true), Some(false)]);
        let ignored =
            run(&[], &totals(&[(1, 5, Some(3))]), Tolerance::from_flags(None, None, true));
        assert_eq!(judged(&ignored), [None, None]);
    }

    #[test]
    fn a_report_passes_only_when_everything_held() {
        assert!(!mixed_report().passed);
        assert!(run(&["total live>=0"], &[Fake::default()], Tolerance::EXACT).passed);
    }
}
