//! `tcptrace check`: watch for the duration, then a verdict on each expectation.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tcptrace_json::limits::LimitName;

use crate::{
    capacity::{Capacity, DestinationRow, ListenerLimits, ListenerRow},
    check::{
        Check, DestinationValues, Expectation, LimitValues, ListenerValues, Observation,
        PortValues, Report, Selector, Tolerance, TotalValues, Verdict, summary, tolerance_verdicts,
    },
    cmd::{
        Outcome,
        args::{TraceArgs, parse_duration},
        output::{is_html, open_report, report_sample, run_info, write_report},
        print,
    },
    conn::canonical_ip,
    engine::{Live, Tick, passes::Pass},
    ledger::Ledger,
    view::{
        self,
        report::{Samples, VerdictRow},
    },
};

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example:\n  tcptrace check --expect 'lport=8080 live>=100000' \\\n      --expect 'dst=127.0.0.5:9000 headroom>=20%' --duration 60s --report out.json"
)]
pub struct CheckArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// A claim to check, e.g. 'lport=8080 live>=100000'; repeat for several. See
    /// --help for the grammar.
    #[arg(long = "expect", required = true, value_name = "EXPR", long_help = crate::check::EXPECT_HELP)]
    pub expect: Vec<Expectation>,
    /// Also write the verdicts, observed values, lost and drift to this file: as JSON, or,
    /// for a path ending in .html, as one page with the verdicts and charts of the run
    /// (one point per interval; see `tcptrace report --help`).
    #[arg(long, value_name = "PATH")]
    pub report: Option<std::path::PathBuf>,
    /// Lost events tolerated before the check fails (default 0: counts must be exact).
    #[arg(long, value_name = "N")]
    pub max_lost: Option<u64>,
    /// Drift tolerated before the check fails (default 0).
    #[arg(long, value_name = "N")]
    pub max_drift: Option<u64>,
    /// Do not fail the check on lost events or drift (unless --max-drift is given).
    #[arg(long, conflicts_with = "max_lost")]
    pub ignore_loss: bool,
    /// How often to reconcile with sock_diag during the check; it also runs at the end.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub reconcile_every: Duration,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<Outcome> {
    // Before watching: a report that cannot be written fails now, not after the run.
    let mut report_file = args.report.as_deref().map(open_report).transpose()?;
    let mut live = Live::start(&args.trace.options(args.reconcile_every), 0)?;
    let tolerance = Tolerance::from_flags(args.max_lost, args.max_drift, args.ignore_loss);
    let mut check = Check::new(args.expect.clone(), tolerance);
    // The run as the HTML report draws it: one snapshot per observation.
    let html = args.report.as_deref().is_some_and(is_html);
    let mut samples = Samples::default();
    eprintln!(
        "tcptrace: checking {} expectation(s) {}",
        args.expect.len(),
        args.trace.duration.map_or("until Ctrl-C".to_owned(), |d| format!("for {d:?}")),
    );
    loop {
        let tick = live.next().await;
        if matches!(tick, Tick::Drain) {
            continue;
        }
        // An interval whose capacity refresh failed has no listener or destination values:
        // those are not measured this time (rather than idle); the totals still are.
        // The last observation is the final one, so its rows are walked now, not paced.
        let rows = if matches!(tick, Tick::Stop) {
            live.current_capacity_rows(0)
        } else {
            live.capacity_rows(0)
        };
        check.observe(&Observed {
            ledger: &live.ledger,
            capacity: rows.as_ref(),
            lost: live.session.tracer.lost(),
            // Every correction since the start: one between two observations counts too.
            drift: live.reconciled.then_some(live.drift_total),
        });
        if html {
            samples.push(report_sample(&live, rows.map(|r| charted(&args.expect, r))));
        }
        for note in live.take_notices() {
            eprintln!("tcptrace: note: {note}");
        }
        if matches!(tick, Tick::Stop) {
            break;
        }
    }
    if let Some(why) = &live.passes.record(Pass::Reconciliation).failing {
        check.unverified(why.clone());
    }
    let report = check.report(live.session.started.elapsed());
    // The verdict first: a report that cannot be written after all does not hide it.
    print(&summary(&report))?;
    if let Some((file, path)) = &mut report_file {
        let text = if html {
            let info = run_info(
                format!("tcptrace check: {}", if report.passed { "PASS" } else { "FAIL" }),
                &live,
                format!("{:.1} s, {} observations", report.duration_s, report.observations),
            );
            view::report::html(&info, &verdict_rows(&report), &samples.into_vec())
        } else {
            report.to_json()
        };
        write_report(file, &text)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(Outcome::of(report.passed))
}

/// The rows an HTML report charts: the listeners and destinations the expectations select,
/// so that the charts show what was claimed; all of a kind that no expectation selects.
fn charted(expectations: &[Expectation], mut rows: Capacity) -> Capacity {
    let selectors: Vec<Selector> = expectations.iter().map(Expectation::selector).collect();
    let listener = |l: &ListenerRow, s: &Selector| match *s {
        Selector::LocalPort(port) => l.port == port,
        Selector::Listener(addr) => selects_listener(addr, l),
        Selector::Destination(_) | Selector::Total => false,
    };
    let destination = |d: &DestinationRow, s: &Selector| match *s {
        Selector::Destination(addr) => selects_destination(addr, d),
        _ => false,
    };
    if selectors.iter().any(|s| matches!(s, Selector::LocalPort(_) | Selector::Listener(_))) {
        rows.listeners.retain(|l| selectors.iter().any(|s| listener(l, s)));
    }
    if selectors.iter().any(|s| matches!(s, Selector::Destination(_))) {
        rows.destinations.retain(|d| selectors.iter().any(|s| destination(d, s)));
    }
    rows
}

/// Whether `listener=addr` selects the row: its port, and its address, or any address when
/// `addr`'s is unspecified (0.0.0.0 or ::), as a wildcard listener accepts on all of them.
fn selects_listener(addr: SocketAddr, l: &ListenerRow) -> bool {
    let ip = canonical_ip(addr.ip());
    l.port == addr.port() && (ip.is_unspecified() || canonical_ip(l.addr) == ip)
}

/// Whether `dst=addr` selects the destination row.
fn selects_destination(addr: SocketAddr, d: &DestinationRow) -> bool {
    d.rport == addr.port() && canonical_ip(d.raddr) == canonical_ip(addr.ip())
}

/// Each expectation's verdict, then loss and drift against their tolerance where checked.
fn verdict_rows(report: &Report) -> Vec<VerdictRow> {
    let mut rows: Vec<VerdictRow> = report
        .expectations
        .iter()
        .map(|e| VerdictRow {
            claim: e.expr.clone(),
            verdict: e.verdict,
            detail: e.detail(report.observations),
        })
        .collect();
    let tolerances = [("lost", report.lost_tolerance), ("drift", report.drift_tolerance)];
    for ((name, most), (checked, line)) in tolerances.into_iter().zip(tolerance_verdicts(report)) {
        if let (Some(most), Some(passed)) = (most, checked) {
            let verdict = if passed { Verdict::Pass } else { Verdict::Fail };
            rows.push(VerdictRow { claim: format!("{name}<={most}"), verdict, detail: line });
        }
    }
    rows
}

/// One interval's counts, as the check asks for them: ports and totals from the ledger,
/// listeners and destinations from the capacity rows.
struct Observed<'a> {
    ledger: &'a Ledger,
    /// `None` when the interval's capacity refresh failed.
    capacity: Option<&'a Capacity>,
    lost: u64,
    drift: Option<u64>,
}

impl Observation for Observed<'_> {
    fn lport(&self, port: u16) -> Option<PortValues> {
        let row = self.ledger.local_port(port)?;
        Some(PortValues {
            live: row.live,
            remote_addrs: row.remote_addrs,
            max_per_remote: self.ledger.max_per_remote(port),
        })
    }

    /// Sums the listeners on that address and port in every namespace (an unspecified
    /// address: every local address). Distinct remote addresses add up per listener. The
    /// limits are those of the listener closest to its binding limit.
    fn listener(&self, addr: SocketAddr) -> Option<ListenerValues> {
        let rows: Vec<_> =
            self.capacity?.listeners.iter().filter(|l| selects_listener(addr, l)).collect();
        if rows.is_empty() {
            return None;
        }
        let conns = PortValues {
            live: rows.iter().map(|l| l.live).sum(),
            remote_addrs: rows.iter().map(|l| l.remote_addrs).sum(),
            max_per_remote: rows.iter().map(|l| l.max_per_remote).max().unwrap_or(0),
        };
        // The binding limit of the row closest to it; the fullest queue of any row (the
        // queue each row holds: backlog + 1 per socket); the drops of every row.
        let read: Vec<_> = rows.iter().filter_map(|l| l.limits.as_ref()).collect();
        let queue = |l: &ListenerLimits| {
            let cap = l.headroom.iter().find(|h| h.name == LimitName::AcceptQueue)?.limit;
            Some((l.accept_queue, cap.max(1)))
        };
        let fullest = read.iter().filter_map(|l| queue(l)).max_by(|a, b| {
            (u128::from(a.0) * u128::from(b.1)).cmp(&(u128::from(b.0) * u128::from(a.1)))
        });
        let limits = read.iter().min_by_key(|l| l.binding_headroom.unwrap_or(u64::MAX)).map(|l| {
            LimitValues {
                binding: l.headroom.iter().copied().find(|h| Some(h.name) == l.binding),
                queue: fullest,
                drops: read.iter().map(|l| l.drops).sum(),
            }
        });
        Some(ListenerValues { conns, limits })
    }

    /// Live connections from the ledger; ports in use and use from the destination row
    /// (local address, namespace) closest to running out.
    fn destination(&self, addr: SocketAddr) -> Option<DestinationValues> {
        let live = self.ledger.remote_endpoint(addr).map(|r| r.live);
        let row = self
            .capacity?
            .destinations
            .iter()
            .filter(|d| selects_destination(addr, d))
            .max_by(|a, b| a.use_pct.total_cmp(&b.use_pct));
        if live.is_none() && row.is_none() {
            return None;
        }
        Some(DestinationValues {
            live: live.unwrap_or(0),
            ports_in_use: row.map_or(0, |d| d.ports_in_use),
            use_pct: row.map_or(0.0, |d| d.use_pct),
            range: row.map(|d| d.range),
        })
    }

    /// The file table is the box's: every namespace's limits row has the same reading.
    fn total(&self) -> TotalValues {
        let files =
            self.capacity.and_then(|c| c.limits.iter().find_map(|l| l.files.zip(l.file_max)));
        TotalValues { live: self.ledger.live() as u64, lost: self.lost, drift: self.drift, files }
    }

    fn has_capacity_rows(&self) -> bool {
        self.capacity.is_some()
    }
}
