//! The command line (clap derive): the commands and what runs without one (`watch`). Each
//! command's options are in its own file under [`crate::cmd`]; the options they share are
//! in [`crate::cmd::args`].

use clap::{Parser, Subcommand};

use crate::cmd::{
    check::CheckArgs, demo::DemoArgs, events::EventsArgs, report::ReportArgs, serve::ServeArgs,
    top::TopArgs, watch::WatchArgs,
};

const ABOUT: &str =
    "Exact, live counts of TCP connections per local port and per remote endpoint, from eBPF.";

const LONG_ABOUT: &str = "\
Exact, live counts of TCP connections per local port and per remote endpoint, from eBPF.

A connection is live from its completed handshake until the local application closes it
(the `ss` states ESTABLISHED and CLOSE_WAIT). tcptrace counts every one: connections that
existed when it started (read from sock_diag, in every network namespace) and every connect,
accept and close after that (kernel hooks, through a ring buffer). A server port is not
limited to 65,535 connections: each is a 4-tuple, so one listening port can hold far more;
a client is limited per destination by its ephemeral port range.

Needs root, or CAP_BPF and CAP_PERFMON. No kernel headers and no compiler on the target.";

const AFTER_HELP: &str = "\
Examples:
  tcptrace                                 live table, refreshed every second
  tcptrace watch --json --top 5 | jq .live one JSON object per interval
  tcptrace events --json --duration 10s    every connect, accept and close for 10 s
  tcptrace --attach tracepoint             force the tracepoint path";

#[derive(Debug, Parser)]
#[command(name = "tcptrace", version, long_version = long_version(), about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `watch`, which runs when no command is given.
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// `--version`: the version, and the attach paths compiled in.
fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let paths: Vec<&str> = crate::kernel::compiled_in().iter().map(|p| p.name).collect();
        let paths = if paths.is_empty() {
            "none (built without its BPF object: AYA_BUILD_SKIP was set)".to_owned()
        } else {
            format!("{} (--attach auto tries them in this order)", paths.join(", "))
        };
        format!("{}\nattach paths compiled in: {paths}", env!("CARGO_PKG_VERSION"))
    })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Live table of the local ports and remote endpoints with the most live connections (default).
    Watch(WatchArgs),
    /// One line per connect, accept and close.
    Events(EventsArgs),
    /// Turn a capacity claim into pass or fail: watch for --duration, then exit 0 if every
    /// --expect held, 1 if one did not, 2 on bad input or when nothing could be measured.
    Check(CheckArgs),
    /// Prove it on this box: hold --connections (100,000) connections on ONE port, then
    /// exhaust a client's ephemeral range, with the tracer counting; exit 0 if every count
    /// agreed. Loopback only, in a network namespace of its own, torn down at the end.
    Demo(DemoArgs),
    /// Full-screen live view: listeners, destinations, local ports and remote endpoints,
    /// sortable and filterable (keys shown on screen; q quits). Prints `watch`'s table when
    /// stdout is not a terminal.
    Top(TopArgs),
    /// Serve the counts as Prometheus metrics on /metrics (and /healthz) over HTTP.
    Serve(ServeArgs),
    /// Turn `watch --json` lines recorded with tee into one HTML page of charts (live
    /// connections, ports per destination, accept queues, lost and drift); needs no root.
    Report(ReportArgs),
    /// tcptrace's own loopback load generator (used by the demo and the benchmarks).
    #[command(hide = true)]
    Load(crate::load::LoadArgs),
}

impl Cli {
    #[must_use]
    pub fn command(self) -> Command {
        self.command.unwrap_or(Command::Watch(self.watch))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("tcptrace").chain(args.iter().copied()))
            .map(Cli::command)
    }

    #[test]
    fn every_command_is_well_formed() {
        // clap checks unique names, conflicts and defaults only when it builds a command:
        // this builds them all, so a clash (say, a flattened flag) fails here and not in use.
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn no_command_means_watch_with_its_flags() {
        let Ok(Command::Watch(w)) = parse(&["--json", "--top", "5", "--interval", "250ms"]) else {
            panic!("expected watch");
        };
        assert!(w.json);
        assert_eq!(w.top, 5);
        assert_eq!(w.trace.interval, Duration::from_millis(250));
        assert_eq!(w.trace.attach.name, "auto");
        assert_eq!(w.reconcile_every, Duration::from_secs(10));
    }

    #[test]
    fn events_takes_duration_and_attach() {
        let Ok(Command::Events(e)) =
            parse(&["events", "--json", "--duration", "2s", "--attach", "tracepoint-classic"])
        else {
            panic!("expected events");
        };
        assert_eq!(e.trace.duration, Some(Duration::from_secs(2)));
        assert_eq!(e.trace.attach.name, "tracepoint-classic");
    }

    #[test]
    fn bad_values_are_rejected_with_a_reason() {
        let err = parse(&["--interval", "0s"]).unwrap_err().to_string();
        assert!(err.contains("at least 10ms"), "{err}");
        let err = parse(&["--top", "abc"]).unwrap_err().to_string();
        assert!(err.contains("--top"), "{err}");
        let err = parse(&["--attach", "uprobe"]).unwrap_err().to_string();
        assert!(err.contains("possible values"), "{err}");
        assert!(parse(&["--duration", "soon"]).is_err());
    }
}
