//! `tcptrace watch`: the live counts, as a table or JSON lines, every interval.

use std::io::IsTerminal as _;
use std::time::Duration;

use clap::Args;

use crate::{
    cmd::{
        args::{TraceArgs, parse_duration},
        print,
    },
    engine::{Live, Tick},
    view,
};

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Print one JSON object per interval, one per line, instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Rows per table (local ports, remote endpoints); 0 shows all.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// How often to check the counts against the kernel's own table (sock_diag, as `ss`
    /// reads it), correct them, and report the difference as `drift`; `0s`: only at exit.
    /// Sooner when events were lost or a difference waits for the next pass to confirm it.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub reconcile_every: Duration,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut live = Live::start(&args.trace.options(args.reconcile_every), args.top)?;
    let clear_screen = !args.json && std::io::stdout().is_terminal();
    let render = |live: &mut Live| {
        let snapshot = live.snapshot(args.top);
        for note in live.take_notices() {
            eprintln!("tcptrace: note: {note}");
        }
        if args.json {
            view::json::watch_line(&snapshot)
        } else if clear_screen {
            format!("\x1b[H\x1b[2J{}", view::table::render(&snapshot))
        } else {
            format!("{}\n", view::table::render(&snapshot))
        }
    };
    if !print(&render(&mut live))? {
        return Ok(());
    }
    loop {
        match live.next().await {
            Tick::Drain => {}
            Tick::Report => {
                if !print(&render(&mut live))? {
                    return Ok(());
                }
            }
            Tick::Stop => {
                print(&render(&mut live))?;
                return Ok(());
            }
        }
    }
}
