//! Judging expectations over a run: the [`Observation`] the command gives once per interval,
//! the [`Tolerance`] for lost events and drift, and the [`Check`], which keeps for each
//! expectation the one value its rule is about and turns them into a [`Report`].

use std::net::SocketAddr;
use std::time::Duration;

use tcptrace_json::limits::{Headroom, LimitName};

use super::expect::{Expectation, Metric, Rule, Selector, count};
use super::report::{
    ExpectationResult, Report, Unit, Verdict, drift_excess, drift_unknown, lost_excess,
};

/// The counts of one observation, as the check asks for them. The command implements it
/// over the ledger at each interval. A port, listener or destination with no live
/// connection is `None`, like a row the ledger does not have.
pub trait Observation {
    /// The live connections on local port `port`, on every local address and network
    /// namespace.
    fn lport(&self, port: u16) -> Option<PortValues>;
    /// The live connections whose local end is `addr`; an unspecified address (0.0.0.0 or
    /// ::) stands for every local address on that port, as a wildcard listener accepts on
    /// all of them.
    fn listener(&self, addr: SocketAddr) -> Option<ListenerValues>;
    /// The live connections to remote endpoint `addr`.
    fn destination(&self, addr: SocketAddr) -> Option<DestinationValues>;
    /// The whole box.
    fn total(&self) -> TotalValues;
    /// Whether this observation has the listener and destination rows (their refresh can
    /// fail): without them those selectors are not measured this time, rather than idle.
    fn has_capacity_rows(&self) -> bool {
        true
    }
}

/// The live connections of a local port or listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortValues {
    pub live: u64,
    /// Distinct remote IP addresses among them.
    pub remote_addrs: u64,
    /// The most live connections from any one remote IP address: how far one client is
    /// into its own ephemeral range toward this port.
    pub max_per_remote: u64,
}

/// A listener: its connections, and its limits where they could be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerValues {
    pub conns: PortValues,
    pub limits: Option<LimitValues>,
}

/// A listener's limits in one observation (the `limits` of its capacity row). Where the
/// selector matches several listeners (one per namespace or address), the binding limit
/// of the one closest to it, the fullest queue and every one's drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitValues {
    /// The limit that runs out first, and how many more connections it lets in.
    pub binding: Option<Headroom>,
    /// Connections waiting for `accept()`, and what the queue holds at most (backlog + 1
    /// per socket of the `SO_REUSEPORT` group), of the fullest listener; `None` when not
    /// read.
    pub queue: Option<(u64, u64)>,
    /// Handshakes its LISTEN sockets dropped, summed over the listeners; `None` when the
    /// kernel sent no meminfo.
    pub drops: Option<u64>,
}

/// One remote endpoint, as a client of it. Each local address in each network namespace
/// has its own ephemeral range toward it (one `capacity` destination row each): these are
/// the values of the one closest to running out, the row with the highest `use_pct`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DestinationValues {
    /// Live connections to the endpoint, from every local address and namespace.
    pub live: u64,
    /// Local ports taken toward the endpoint (`TIME_WAIT` included), in that row.
    pub ports_in_use: u64,
    /// `ports_in_use` in percent of that row's ephemeral range (above 100 when ports were
    /// bound by hand outside the range).
    pub use_pct: f64,
    /// That row's ephemeral range, in ports; `None` without a row.
    pub range: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TotalValues {
    pub live: u64,
    /// Events lost since the start (cumulative, as `watch` prints it).
    pub lost: u64,
    /// How many connections sock_diag recounts have found the live count wrong by (and
    /// corrected) since the start, when one was made for this observation; `None` when not
    /// measured this time.
    pub drift: Option<u64>,
    /// The box's open files and its file table's size (`fs/file-nr`, `fs/file-max`), when
    /// read.
    pub files: Option<(u64, u64)>,
}

impl PortValues {
    fn get(self, metric: Metric) -> f64 {
        count(match metric {
            Metric::Live => self.live,
            Metric::RemoteAddrs => self.remote_addrs,
            Metric::MaxPerRemote => self.max_per_remote,
            _ => unreachable!("the parser gives ports and listeners only their own metrics"),
        })
    }
}

impl ListenerValues {
    /// The value, and the binding limit that the verdict names; `None` for a limit not
    /// read this time.
    fn get(self, metric: Metric) -> Option<(f64, Option<String>)> {
        let binding = self.limits.and_then(|l| l.binding);
        let value = match metric {
            Metric::Live | Metric::RemoteAddrs | Metric::MaxPerRemote => self.conns.get(metric),
            Metric::Capacity => count(binding?.headroom),
            Metric::AcceptQueue => {
                let (waiting, holds) = self.limits?.queue?;
                count(waiting) * 100.0 / count(holds.max(1))
            }
            Metric::Drops => count(self.limits?.drops?),
            _ => unreachable!("the parser gives listeners only their own metrics"),
        };
        Some((value, binding.map(|b| binding_limit(&b))))
    }
}

/// `binding limit fds: 300 of 300 in use, 0 more connections`.
fn binding_limit(h: &Headroom) -> String {
    let more = if h.headroom == 1 { "connection" } else { "connections" };
    if h.name == LimitName::Memory {
        // Its value is not a count in use: memory is `MemAvailable` over a connection's cost.
        return format!(
            "binding limit memory: {} more {more} in {} bytes available",
            h.headroom, h.limit
        );
    }
    format!(
        "binding limit {}: {} of {} in use, {} more {more}",
        h.name.as_str(),
        h.value,
        h.limit,
        h.headroom,
    )
}

impl DestinationValues {
    fn get(self, metric: Metric) -> Option<(f64, Option<String>)> {
        let value = match metric {
            Metric::Live => count(self.live),
            Metric::PortsInUse => count(self.ports_in_use),
            Metric::Use => self.use_pct,
            // Negative when ports bound outside the range take use past 100%.
            Metric::Headroom => 100.0 - self.use_pct,
            Metric::UsablePorts => count(u64::from(self.range?).saturating_sub(self.ports_in_use)),
            _ => unreachable!("the parser gives destinations only their own metrics"),
        };
        let range =
            self.range.map(|r| format!("ephemeral range {r} ports, {} in use", self.ports_in_use));
        Some((value, range))
    }
}

impl TotalValues {
    fn get(self, metric: Metric) -> Option<(f64, Option<String>)> {
        Some(match metric {
            Metric::Live => (count(self.live), None),
            Metric::Lost => (count(self.lost), None),
            Metric::Drift => (count(self.drift?), None),
            Metric::FdHeadroom => {
                let (open, max) = self.files?;
                let free = count(max.saturating_sub(open)) * 100.0 / count(max.max(1));
                (free, Some(format!("file table: {open} of file-max {max} open")))
            }
            _ => unreachable!("the parser gives total only its own metrics"),
        })
    }
}

/// How many lost events and how much drift the check accepts; `None` does not check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tolerance {
    pub max_lost: Option<u64>,
    pub max_drift: Option<u64>,
}

impl Tolerance {
    /// The default: counts are exact or the check fails.
    pub const EXACT: Self = Self { max_lost: Some(0), max_drift: Some(0) };

    /// From `--max-lost N`, `--max-drift N` and `--ignore-loss`. Lost events are what
    /// makes the live count drift, so `--ignore-loss` stops checking both, unless
    /// `--max-drift` is given too. With `--ignore-loss`, `--max-lost` is ignored: the CLI
    /// should declare the two in conflict.
    #[must_use]
    pub fn from_flags(max_lost: Option<u64>, max_drift: Option<u64>, ignore_loss: bool) -> Self {
        if ignore_loss {
            Self { max_lost: None, max_drift }
        } else {
            Self { max_lost: Some(max_lost.unwrap_or(0)), max_drift: Some(max_drift.unwrap_or(0)) }
        }
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Self::EXACT
    }
}

/// One expectation's value in one observation.
#[derive(Clone, Debug, PartialEq)]
enum Sample {
    /// The value, and the limit it was measured against, as the verdict names it.
    Value(f64, Option<String>),
    /// The selector has no live connection now: the metric's idle value (0, or 100%
    /// headroom).
    Idle,
    /// Not measured in this observation (drift without a reconciliation, a listener or a
    /// destination without capacity rows, a limit not read): nothing to record.
    Unmeasured,
}

impl Expectation {
    fn sample(&self, obs: &dyn Observation) -> Sample {
        let metric = self.metric;
        if matches!(self.selector, Selector::Listener(_) | Selector::Destination(_))
            && !obs.has_capacity_rows()
        {
            return Sample::Unmeasured;
        }
        // The selector's values (`None`: it has no live connection), and of them this
        // metric's (`None`: not read this time).
        let value = match self.selector {
            Selector::LocalPort(port) => obs.lport(port).map(|v| Some((v.get(metric), None))),
            Selector::Listener(addr) => obs.listener(addr).map(|v| v.get(metric)),
            Selector::Destination(addr) => obs.destination(addr).map(|v| v.get(metric)),
            Selector::Total => Some(obs.total().get(metric)),
        };
        match value {
            None if metric.idle().is_some() => Sample::Idle,
            None | Some(None) => Sample::Unmeasured,
            Some(Some((value, limit))) => Sample::Value(value, limit),
        }
    }
}

/// What the check keeps of one expectation over the run.
#[derive(Clone, Debug)]
struct ExpectationState {
    expectation: Expectation,
    /// Observations in which the selector had live connections (or drift was measured).
    samples: u64,
    /// The peak, or the minimum for room before a limit, with the limit at that moment.
    extreme: Option<(f64, Option<String>)>,
    last: Option<(f64, Option<String>)>,
}

impl ExpectationState {
    fn record(&mut self, sample: Sample) {
        let value = match sample {
            Sample::Unmeasured => return,
            Sample::Idle => match self.expectation.metric.idle() {
                Some(idle) => (idle, None),
                None => return,
            },
            Sample::Value(v, limit) => {
                self.samples += 1;
                (v, limit)
            }
        };
        // The first moment the worst value was reached names its limit.
        let worse = match (&self.extreme, self.expectation.rule()) {
            (None, _) => true,
            (Some((e, _)), Rule::Minimum) => value.0 < *e,
            (Some((e, _)), _) => value.0 > *e,
        };
        if worse {
            self.extreme = Some(value.clone());
        }
        self.last = Some(value);
    }

    fn result(&self) -> ExpectationResult {
        let e = &self.expectation;
        let rule = e.rule();
        let (observed, limit) = match (self.samples, rule) {
            (0, _) => (None, None),
            (_, Rule::Final) => self.last.clone().unzip(),
            _ => self.extreme.clone().unzip(),
        };
        let verdict = match observed {
            None => Verdict::NoData,
            Some(v) if e.op.holds(v, e.value) => Verdict::Pass,
            Some(_) => Verdict::Fail,
        };
        ExpectationResult {
            expr: e.to_string(),
            rule,
            expected: e.value,
            unit: if e.metric.is_percent() { Unit::Percent } else { Unit::Count },
            observed,
            samples: self.samples,
            verdict,
            limit: limit.flatten(),
        }
    }
}

/// The expectations of one run and what has been observed of them so far.
#[derive(Clone, Debug)]
pub struct Check {
    states: Vec<ExpectationState>,
    tolerance: Tolerance,
    observations: u64,
    lost: u64,
    drift: Option<u64>,
    /// Why the counts could not be checked against the kernel at the end, if they could not.
    unverified: Option<String>,
}

impl Check {
    /// A check of `expectations` (none is allowed: then only loss and drift are checked).
    #[must_use]
    pub fn new(expectations: Vec<Expectation>, tolerance: Tolerance) -> Self {
        let states = expectations
            .into_iter()
            .map(|expectation| ExpectationState {
                expectation,
                samples: 0,
                extreme: None,
                last: None,
            })
            .collect();
        Self { states, tolerance, observations: 0, lost: 0, drift: None, unverified: None }
    }

    /// The counts could not be checked against the kernel at the end (the last
    /// reconciliation failed: `why`). Unless drift goes unchecked, the check fails: its
    /// verdicts rest on counts nobody verified.
    pub fn unverified(&mut self, why: String) {
        self.unverified = Some(why);
    }

    /// Records one observation: call it once per interval, and once more at the end.
    pub fn observe(&mut self, obs: &dyn Observation) {
        self.observations += 1;
        let total = obs.total();
        self.lost = self.lost.max(total.lost);
        if let Some(drift) = total.drift {
            self.drift = Some(self.drift.map_or(drift, |d| d.max(drift)));
        }
        for state in &mut self.states {
            let sample = state.expectation.sample(obs);
            state.record(sample);
        }
    }

    /// The verdicts so far; `duration` is how long the run has been watching.
    #[must_use]
    pub fn report(&self, duration: Duration) -> Report {
        let expectations: Vec<ExpectationResult> =
            self.states.iter().map(ExpectationState::result).collect();
        let mut failures = Vec::new();
        if self.observations == 0 {
            failures
                .push("nothing was observed: the run ended before its first interval".to_owned());
        }
        for r in expectations.iter().filter(|r| r.verdict != Verdict::Pass) {
            failures.push(format!("{}: {}", r.expr, r.detail(self.observations)));
        }
        failures.extend(lost_excess(self.lost, self.tolerance.max_lost));
        failures.extend(drift_excess(self.drift, self.tolerance.max_drift));
        let unverified = self.unverified.clone().filter(|_| self.tolerance.max_drift.is_some());
        failures.extend(unverified.as_deref().map(drift_unknown));
        Report {
            passed: failures.is_empty(),
            // Milliseconds are plenty for a run measured in intervals.
            duration_s: (duration.as_secs_f64() * 1000.0).round() / 1000.0,
            observations: self.observations,
            expectations,
            lost: self.lost,
            lost_tolerance: self.tolerance.max_lost,
            drift: self.drift,
            drift_tolerance: self.tolerance.max_drift,
            failures,
            unverified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::fixtures::{DST, Fake, dst_ports, run, sock, totals};

    /// Port 8080 with these live counts (`None`: no live connection).
    fn port_live(values: &[Option<u64>]) -> Vec<Fake> {
        values
            .iter()
            .map(|v| {
                let mut f = Fake::default();
                if let Some(live) = *v {
                    f.ports
                        .insert(8080, PortValues { live, remote_addrs: 1, max_per_remote: live });
                }
                f
            })
            .collect()
    }

    /// The observed value, rule and verdict of one expectation over `observations`.
    fn judge(expr: &str, observations: &[Fake]) -> (Option<f64>, Rule, Verdict) {
        let r = run(&[expr], observations, Tolerance::EXACT);
        let e = &r.expectations[0];
        assert_eq!(r.passed, e.verdict == Verdict::Pass);
        (e.observed, e.rule, e.verdict)
    }

    use Verdict::{Fail, NoData, Pass};

    #[test]
    fn at_least_is_judged_on_the_peak() {
        let obs = port_live(&[Some(50), Some(120), Some(10)]);
        assert_eq!(judge("lport=8080 live>=100", &obs), (Some(120.0), Rule::Peak, Pass));
        assert_eq!(judge("lport=8080 live>=120", &obs), (Some(120.0), Rule::Peak, Pass));
        assert_eq!(judge("lport=8080 live>=121", &obs), (Some(120.0), Rule::Peak, Fail));
        assert_eq!(judge("lport=8080 live>119", &obs), (Some(120.0), Rule::Peak, Pass));
        assert_eq!(judge("lport=8080 live>120", &obs), (Some(120.0), Rule::Peak, Fail));
    }

    #[test]
    fn at_most_is_judged_on_the_peak() {
        let obs = port_live(&[Some(50), Some(120), Some(10)]);
        assert_eq!(judge("lport=8080 live<=100", &obs), (Some(120.0), Rule::Peak, Fail));
        assert_eq!(judge("lport=8080 live<=120", &obs), (Some(120.0), Rule::Peak, Pass));
        assert_eq!(judge("lport=8080 live<120", &obs), (Some(120.0), Rule::Peak, Fail));
        assert_eq!(judge("lport=8080 live<121", &obs), (Some(120.0), Rule::Peak, Pass));
    }

    #[test]
    fn equal_is_judged_on_the_final_value() {
        let obs = port_live(&[Some(5), Some(7), Some(3)]);
        assert_eq!(judge("lport=8080 live==3", &obs), (Some(3.0), Rule::Final, Pass));
        assert_eq!(judge("lport=8080 live==7", &obs), (Some(3.0), Rule::Final, Fail));
        let obs = dst_ports(&[Some(10), Some(25)]);
        assert_eq!(judge("dst=127.0.0.5:9000 use==25%", &obs), (Some(25.0), Rule::Final, Pass));
        assert_eq!(
            judge("dst=127.0.0.5:9000 headroom==75%", &obs),
            (Some(75.0), Rule::Final, Pass)
        );
    }

    #[test]
    fn headroom_is_judged_on_its_minimum() {
        // 10, 85, 30 ports of 100 in use: headroom 90%, 15%, 70%.
        let obs = dst_ports(&[Some(10), Some(85), Some(30)]);
        let at = |expr: &str| judge(&format!("dst={DST} {expr}"), &obs);
        // A floor must hold at the worst moment...
        assert_eq!(at("headroom>=15%"), (Some(15.0), Rule::Minimum, Pass));
        assert_eq!(at("headroom>=20%"), (Some(15.0), Rule::Minimum, Fail));
        assert_eq!(at("headroom>15%"), (Some(15.0), Rule::Minimum, Fail));
        // ...and getting close to exhaustion is shown by getting there once.
        assert_eq!(at("headroom<=15%"), (Some(15.0), Rule::Minimum, Pass));
        assert_eq!(at("headroom<16%"), (Some(15.0), Rule::Minimum, Pass));
        assert_eq!(at("headroom<=10%"), (Some(15.0), Rule::Minimum, Fail));
        // Use mirrors it with the peak.
        assert_eq!(at("use<=80%"), (Some(85.0), Rule::Peak, Fail));
        assert_eq!(at("use<=85%"), (Some(85.0), Rule::Peak, Pass));
        assert_eq!(at("use>=50%"), (Some(85.0), Rule::Peak, Pass));
        assert_eq!(at("ports_in_use<=85"), (Some(85.0), Rule::Peak, Pass));
    }

    #[test]
    fn use_past_the_range() {
        // Ports bound outside the range can take use past 100%, headroom below 0.
        let obs = dst_ports(&[Some(150)]);
        assert_eq!(judge(&format!("dst={DST} use>=100%"), &obs), (Some(150.0), Rule::Peak, Pass));
        assert_eq!(
            judge(&format!("dst={DST} headroom>=0%"), &obs),
            (Some(-50.0), Rule::Minimum, Fail)
        );
    }

    #[test]
    fn no_live_connection_counts_as_zero_once_seen() {
        // The port empties at the end: it ends at 0, and its peak stays.
        let obs = port_live(&[Some(5), None]);
        assert_eq!(judge("lport=8080 live==0", &obs), (Some(0.0), Rule::Final, Pass));
        assert_eq!(judge("lport=8080 live<=5", &obs), (Some(5.0), Rule::Peak, Pass));
        let obs = port_live(&[None, Some(5), None]);
        assert_eq!(judge("lport=8080 live>=5", &obs), (Some(5.0), Rule::Peak, Pass));
        // A destination without connections has all its headroom.
        let obs = dst_ports(&[None, Some(50), None]);
        assert_eq!(
            judge(&format!("dst={DST} headroom==100%"), &obs),
            (Some(100.0), Rule::Final, Pass)
        );
        assert_eq!(
            judge(&format!("dst={DST} headroom>=50%"), &obs),
            (Some(50.0), Rule::Minimum, Pass)
        );
        assert_eq!(judge(&format!("dst={DST} use==0%"), &obs), (Some(0.0), Rule::Final, Pass));
    }

    #[test]
    fn a_selector_never_seen_has_no_data_and_fails() {
        let obs = port_live(&[Some(5), Some(6)]);
        // Claims that an empty port would satisfy fail all the same: a typo must not pass.
        for expr in ["lport=8081 live<=10", "lport=8081 live==0", "lport=8081 live>=1"] {
            assert_eq!(
                judge(expr, &obs),
                (None, if expr.contains("==") { Rule::Final } else { Rule::Peak }, NoData)
            );
        }
        assert_eq!(judge("listener=10.0.0.1:8080 live<=10", &obs).2, NoData);
        assert_eq!(judge(&format!("dst={DST} headroom>=20%"), &obs).2, NoData);
        let r = run(&["lport=8080 live>=6", "lport=8081 live<=10"], &obs, Tolerance::EXACT);
        assert!(!r.passed);
        assert_eq!(r.expectations[0].samples, 2);
        assert_eq!(r.expectations[1].samples, 0);
        assert_eq!(
            r.failures,
            ["lport=8081 live<=10: no data: no live connection in any of 2 observations"]
        );
    }

    #[test]
    fn nothing_observed_fails() {
        let r = run(&["total live>=0"], &[], Tolerance::EXACT);
        assert!(!r.passed);
        assert_eq!(r.observations, 0);
        assert_eq!(r.expectations[0].verdict, NoData);
        assert_eq!(
            r.failures,
            [
                "nothing was observed: the run ended before its first interval",
                "total live>=0: no data: nothing was observed"
            ]
        );
        // Even with no expectation at all.
        assert!(!run(&[], &[], Tolerance::EXACT).passed);
        assert!(run(&[], &[Fake::default()], Tolerance::EXACT).passed);
    }

    #[test]
    fn each_metric_reads_its_own_value() {
        let mut o = Fake::default();
        o.ports.insert(80, PortValues { live: 10, remote_addrs: 3, max_per_remote: 6 });
        let conns = PortValues { live: 20, remote_addrs: 4, max_per_remote: 9 };
        o.listeners.insert(sock("[::1]:443"), ListenerValues { conns, limits: None });
        o.destinations.insert(
            sock(DST),
            DestinationValues { live: 30, ports_in_use: 25, use_pct: 25.0, range: Some(100) },
        );
        o.total = TotalValues { live: 60, lost: 0, drift: Some(0), files: None };
        let obs = [o];
        for (expr, value) in [
            ("lport=80 live==10", 10.0),
            ("lport=80 remote_addrs==3", 3.0),
            ("lport=80 max_per_remote==6", 6.0),
            ("listener=[::1]:443 live==20", 20.0),
            ("listener=[::1]:443 remote_addrs==4", 4.0),
            ("listener=[::1]:443 max_per_remote==9", 9.0),
            ("dst=127.0.0.5:9000 live==30", 30.0),
            ("dst=127.0.0.5:9000 ports_in_use==25", 25.0),
            ("dst=127.0.0.5:9000 use==25%", 25.0),
            ("dst=127.0.0.5:9000 headroom==75%", 75.0),
            ("total live==60", 60.0),
            ("total lost==0", 0.0),
            ("total drift==0", 0.0),
        ] {
            assert_eq!(judge(expr, &obs), (Some(value), Rule::Final, Pass), "{expr}");
        }
    }

    #[test]
    fn drift_is_judged_on_its_measurements_only() {
        let obs = totals(&[(5, 0, None), (6, 0, Some(2)), (7, 0, None)]);
        assert_eq!(judge("total drift<=2", &[obs[0].clone()]), (None, Rule::Peak, NoData));
        let r = run(
            &["total drift<=2", "total drift==2", "total live==7"],
            &obs,
            Tolerance::from_flags(None, Some(2), false),
        );
        let observed: Vec<_> =
            r.expectations.iter().map(|e| (e.observed, e.samples, e.verdict)).collect();
        assert_eq!(observed, [(Some(2.0), 1, Pass), (Some(2.0), 1, Pass), (Some(7.0), 3, Pass)]);
        assert_eq!(r.drift, Some(2));
        assert!(r.passed);
        let r = run(&["total drift<=2"], &obs[..1], Tolerance::EXACT);
        assert_eq!(r.failures, ["total drift<=2: no data: drift was never measured"]);
    }

    // ---- loss and drift tolerance ----

    #[test]
    fn tolerance_from_flags() {
        assert_eq!(Tolerance::from_flags(None, None, false), Tolerance::EXACT);
        assert_eq!(Tolerance::default(), Tolerance::EXACT);
        assert_eq!(
            Tolerance::from_flags(Some(5), Some(2), false),
            Tolerance { max_lost: Some(5), max_drift: Some(2) }
        );
        assert_eq!(
            Tolerance::from_flags(None, None, true),
            Tolerance { max_lost: None, max_drift: None }
        );
        assert_eq!(
            Tolerance::from_flags(None, Some(3), true),
            Tolerance { max_lost: None, max_drift: Some(3) }
        );
    }

    #[test]
    fn lost_events_fail_the_check_beyond_the_tolerance() {
        // Lost is cumulative: the report has the last (largest) count.
        let obs = totals(&[(5, 0, None), (5, 3, None), (5, 3, Some(0))]);
        let r = run(&["total live>=5"], &obs, Tolerance::EXACT);
        assert_eq!((r.lost, r.lost_tolerance), (3, Some(0)));
        assert_eq!(r.expectations[0].verdict, Pass);
        assert!(!r.passed);
        assert!(!r.passed);
        assert_eq!(
            r.failures,
            ["3 events lost, 0 allowed: the counts may be off by up to 3; raise --ring-size, \
              or allow them with --max-lost or --ignore-loss"]
        );
        assert!(run(&["total live>=5"], &obs, Tolerance::from_flags(Some(3), None, false)).passed);
        assert!(!run(&["total live>=5"], &obs, Tolerance::from_flags(Some(2), None, false)).passed);
        let r = run(&["total live>=5"], &obs, Tolerance::from_flags(None, None, true));
        assert!(r.passed);
        assert_eq!((r.lost, r.lost_tolerance), (3, None));
    }

    #[test]
    fn drift_fails_the_check_beyond_the_tolerance() {
        let obs = totals(&[(5, 0, Some(1)), (5, 0, Some(3)), (5, 0, Some(0))]);
        let r = run(&[], &obs, Tolerance::EXACT);
        // The largest measurement is the one that counts.
        assert_eq!((r.drift, r.drift_tolerance), (Some(3), Some(0)));
        assert_eq!(
            r.failures,
            ["drift 3, 0 allowed: the live count differed from a sock_diag recount by 3 \
              connections; allow it with --max-drift"]
        );
        assert!(run(&[], &obs, Tolerance::from_flags(None, Some(3), false)).passed);
        assert!(run(&[], &obs, Tolerance::from_flags(None, None, true)).passed);
        assert!(!run(&[], &obs, Tolerance::from_flags(None, Some(2), true)).passed);
        // A drift never measured fails no tolerance.
        let r = run(&[], &totals(&[(5, 0, None)]), Tolerance::EXACT);
        assert!(r.passed);
        assert_eq!(r.drift, None);
    }

    #[test]
    fn counts_nobody_verified_fail_unless_drift_goes_unchecked() {
        let observe = |tolerance| {
            let mut check =
                Check::new(vec![crate::check::fixtures::parse("total live>=1")], tolerance);
            for o in &totals(&[(5, 0, Some(0)), (5, 0, None)]) {
                check.observe(o);
            }
            check.unverified("Too many open files (os error 24)".into());
            check.report(Duration::from_mins(1))
        };
        let r = observe(Tolerance::EXACT);
        assert!(!r.passed);
        assert!(
            r.failures.iter().any(|f| f.starts_with("drift unknown:") && f.contains("os error 24"))
        );
        let text = crate::check::summary(&r);
        assert!(text.contains("FAIL     drift unknown"), "{text}");
        assert!(text.ends_with("check FAILED: drift unknown\n"), "{text}");

        let ignored = observe(Tolerance::from_flags(None, None, true));
        assert!(ignored.passed, "{:?}", ignored.failures);
        assert_eq!(ignored.unverified, None);
    }

    #[test]
    fn an_interval_without_capacity_rows_measures_no_listener_but_every_total() {
        use crate::check::fixtures::sock;
        let listener = sock("127.0.0.1:8080");
        let mut held = Fake::default();
        let conns = PortValues { live: 5, remote_addrs: 1, max_per_remote: 5 };
        held.listeners.insert(listener, ListenerValues { conns, limits: None });
        held.total = TotalValues { live: 5, lost: 0, drift: Some(0), files: None };
        let failed = Fake {
            no_capacity_rows: true,
            total: TotalValues { live: 7, lost: 0, drift: Some(0), files: None },
            ..Fake::default()
        };
        let obs = [held, failed];
        // Not idle (0) in the second interval: not measured there.
        assert_eq!(judge("listener=127.0.0.1:8080 live==5", &obs), (Some(5.0), Rule::Final, Pass));
        assert_eq!(judge("total live==7", &obs), (Some(7.0), Rule::Final, Pass));
    }

    /// A listener on 127.0.0.1:8080 whose binding limit is `binding` with `headroom` left,
    /// and `waiting` of 17 in its accept queue (backlog 16).
    fn limited(binding: LimitName, headroom: u64, waiting: u64, drops: Option<u64>) -> Fake {
        let mut f = Fake::default();
        let conns = PortValues { live: 300 - headroom, remote_addrs: 1, max_per_remote: 1 };
        let binding = Headroom { name: binding, value: 300 - headroom, limit: 300, headroom };
        let limits = LimitValues { binding: Some(binding), queue: Some((waiting, 17)), drops };
        f.listeners.insert(sock("127.0.0.1:8080"), ListenerValues { conns, limits: Some(limits) });
        f
    }

    #[test]
    fn limit_metrics_judge_the_worst_moment_and_name_the_binding_limit() {
        let obs = [
            limited(LimitName::AcceptQueue, 40, 0, Some(0)),
            limited(LimitName::Fds, 0, 17, Some(3)),
            limited(LimitName::Fds, 10, 4, Some(3)),
        ];
        let r = run(
            &[
                "listener=127.0.0.1:8080 capacity>=1000",
                "listener=127.0.0.1:8080 accept_queue<=50%",
                "listener=127.0.0.1:8080 drops==3",
                "listener=127.0.0.1:8080 live>=300",
            ],
            &obs,
            Tolerance::EXACT,
        );
        let seen: Vec<_> =
            r.expectations.iter().map(|e| (e.observed, e.verdict, e.limit.clone())).collect();
        let fds = Some("binding limit fds: 300 of 300 in use, 0 more connections".to_owned());
        assert_eq!(
            seen,
            [
                // The minimum, at the moment the fds ran out: the limit then is named.
                (Some(0.0), Fail, fds.clone()),
                (Some(100.0), Fail, fds.clone()),
                (
                    Some(3.0),
                    Pass,
                    Some("binding limit fds: 290 of 300 in use, 10 more connections".to_owned())
                ),
                (Some(300.0), Pass, fds),
            ]
        );
        assert!(
            r.failures[0]
                .ends_with("minimum 0 (binding limit fds: 300 of 300 in use, 0 more connections)"),
            "{:?}",
            r.failures
        );
    }

    #[test]
    fn a_limit_never_read_has_no_data_rather_than_an_idle_value() {
        // A listener without limits (none read), then gone: capacity has no data, while
        // its live count is idle (0) once it is gone.
        let mut unread = limited(LimitName::Fds, 5, 0, None);
        unread.listeners.values_mut().for_each(|l| l.limits = None);
        let obs = [unread, Fake::default()];
        let r = run(
            &["listener=127.0.0.1:8080 capacity>=1", "listener=127.0.0.1:8080 live<=295"],
            &obs,
            Tolerance::EXACT,
        );
        assert_eq!(r.expectations[0].verdict, NoData);
        assert_eq!(
            r.expectations[0].detail(2),
            "no data: capacity was not read in any of 2 observations"
        );
        assert_eq!((r.expectations[1].observed, r.expectations[1].verdict), (Some(295.0), Pass));
        // Drops the kernel did not report: no data either.
        let r = run(
            &["listener=127.0.0.1:8080 drops==0"],
            &[limited(LimitName::Fds, 5, 0, None)],
            Tolerance::EXACT,
        );
        assert_eq!(r.expectations[0].verdict, NoData);
    }

    #[test]
    fn usable_ports_and_fd_headroom_are_room_left() {
        let obs = dst_ports(&[Some(10), Some(90), Some(40)]);
        assert_eq!(
            judge(&format!("dst={DST} usable_ports>=20"), &obs),
            (Some(10.0), Rule::Minimum, Fail)
        );
        assert_eq!(judge(&format!("dst={DST} usable_ports>=10"), &obs).2, Pass);
        let files = |open| Fake {
            total: TotalValues { files: Some((open, 1000)), ..TotalValues::default() },
            ..Fake::default()
        };
        let obs = [files(100), files(850), files(0)];
        let r = run(&["total fd_headroom>=20%"], &obs, Tolerance::EXACT);
        let e = &r.expectations[0];
        assert_eq!((e.observed, e.verdict), (Some(15.0), Fail));
        assert_eq!(e.limit.as_deref(), Some("file table: 850 of file-max 1000 open"));
        // Not read at all: no data, not 100%.
        assert_eq!(judge("total fd_headroom>=20%", &[Fake::default()]).2, NoData);
    }
}
