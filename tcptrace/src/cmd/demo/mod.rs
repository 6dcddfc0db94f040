//! `tcptrace demo`: proves the capacity facts on the box it runs on, with the tracer
//! attached from the start, on loopback in a network namespace of its own.
//!
//! 1. Server side: `--connections` concurrent connections to ONE port, from many source
//!    addresses, accepted by a SO_REUSEPORT group of worker processes (one process may
//!    hold only RLIMIT_NOFILE sockets). The tracer's count on that port must equal what the
//!    workers hold, and sock_diag must agree.
//! 2. Client side: from one source address to one server, connections until the
//!    namespace's ephemeral range is exhausted and connect() fails with EADDRNOTAVAIL; the
//!    tracer must see every port in use and every failure. Then a second server still gets
//!    connections from the same source, on the same local port numbers.
//!
//! Then everything is torn down (also on Ctrl-C): the workers die with the demo, and the
//! namespace with them.
//!
//! The pieces: [`plan`] sizes the run against memory and RLIMIT_NOFILE before anything
//! starts, [`phases`] drives the load and the tracer through both sides and the teardown,
//! [`report`] is what the demo found (its JSON) and the table a person reads; [`procfs`]
//! reads the figures the kernel keeps of this box and this process.

mod phases;
mod plan;
mod report;

use anyhow::Context as _;
use clap::Args;

use tcptrace_common::DEFAULT_RING_BYTES;

use crate::cmd::{
    Outcome,
    args::TraceArgs,
    output::{is_html, open_report, run_info, write_report},
    print,
};
use crate::view::{self, report::VerdictRow};

use phases::{Demo, Phase};
pub use report::{ClientSide, Results, ServerSide, Teardown};
use report::{render, verdict_rows};

/// Connections the second destination gets (at most).
const SECOND_DESTINATION_CONNECTIONS: u64 = 1_000;
/// The ring buffer the demo uses unless told otherwise (--ring-size).
const DEMO_RING_BYTES: u32 = 64 << 20;
/// The full demo's size; smaller runs narrow the client side's ephemeral range to fit.
const FULL_SIZE: u64 = 100_000;

#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  tcptrace demo                          100,000 connections on one port, then exhaust a range
  tcptrace demo --connections 1000000    a million (needs about 10 GB of memory)
  tcptrace demo --connections 5000 --json | jq .server
  tcptrace demo --connections 20000 --report demo.html   the verdicts and charts, one page")]
pub struct DemoArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Concurrent connections to hold on the one server port.
    #[arg(long, default_value_t = FULL_SIZE, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// The server port (in the demo's own network namespace, so it cannot clash).
    #[arg(long, default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
    pub server_port: u16,
    /// Connections per worker process; each also accepts about as many, so two sockets
    /// per connection must fit in RLIMIT_NOFILE.
    #[arg(long, default_value_t = 8_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub per_process: u64,
    /// Skip the client side (ephemeral range exhaustion).
    #[arg(long)]
    pub server_only: bool,
    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the results to this file: as the JSON of --json, or, for a path ending
    /// in .html, as one page with the demo's verdicts and the charts of its run (one point
    /// per interval; see `tcptrace report --help`).
    #[arg(long, value_name = "PATH")]
    pub report: Option<std::path::PathBuf>,
}

pub async fn run(mut args: DemoArgs) -> anyhow::Result<Outcome> {
    let plan = plan::plan(&args)?;
    // Before the load: a report that cannot be written fails now, not after the run.
    let mut report_file = args.report.as_deref().map(open_report).transpose()?;
    let html = args.report.as_deref().is_some_and(is_html);
    if args.trace.ring_size == DEFAULT_RING_BYTES {
        // The demo makes a connection storm on purpose, on a box that may be busy too:
        // a bigger ring rides out the moments this process is not scheduled.
        args.trace.ring_size = DEMO_RING_BYTES;
    }
    let mut demo = Demo::start(&args, plan, html)?;
    let outcome = demo.run_phases().await;
    let interrupted = matches!(outcome, Ok(Phase::Interrupted));
    let teardown = demo.teardown(interrupted).await;
    demo.results.teardown = Some(teardown);
    outcome?;
    demo.results.passed = demo.results.server.as_ref().is_some_and(|s| s.passed)
        && demo.results.client.as_ref().is_none_or(|c| c.passed)
        && demo.results.lost == 0
        && demo.results.drift == 0
        && !interrupted;
    if args.json {
        print(&serde_json::to_string(&demo.results)?)?;
    } else if !interrupted {
        print(&render(&demo.results))?;
    }
    if let Some((file, path)) = &mut report_file {
        let text = if html {
            let samples = demo.take_samples();
            let r = &demo.results;
            let verdict = match (interrupted, r.passed) {
                (true, _) => "INTERRUPTED",
                (false, true) => "PASS",
                (false, false) => "FAIL",
            };
            let mut info = run_info(
                format!("tcptrace demo: {verdict}"),
                demo.live(),
                format!(
                    "{} connections on one port, {:.1} s, {} snapshots",
                    args.connections,
                    demo.elapsed().as_secs_f64(),
                    samples.len()
                ),
            );
            if let Some(next) = r.next_limits.first() {
                let line = format!(
                    "{}: about {} more connections like these ({})",
                    next.name, next.more_connections, next.detail
                );
                info.facts.push(("next limit".into(), line));
            }
            let mut rows = verdict_rows(r);
            if interrupted {
                // Counts that agreed so far are no PASS of a run that did not finish.
                rows.insert(
                    0,
                    VerdictRow {
                        claim: "the demo ran to its end".into(),
                        verdict: crate::check::Verdict::Fail,
                        detail: "interrupted (Ctrl-C, SIGTERM or --duration)".into(),
                    },
                );
            }
            view::report::html(&info, &rows, &samples)
        } else {
            serde_json::to_string_pretty(&demo.results)?
        };
        write_report(file, &text)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(match (interrupted, demo.results.passed) {
        (true, _) => Outcome::Interrupted,
        (false, true) => Outcome::Passed,
        (false, false) => Outcome::Failed,
    })
}
