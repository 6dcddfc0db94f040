//! `tcptrace top`: the live counts full-screen, refreshed every interval, with keys to sort
//! and filter the tables (see [`crate::view::tui`]). When stdout is not a terminal it is
//! `watch`'s plain table.
//!
//! The ledger is kept exactly as `watch` keeps it ([`Live`]); keys arrive
//! through crossterm's `EventStream` on the same tokio loop, so a key never holds up a
//! ring drain and a drain never holds up a key for longer than one refresh.

use std::io::{self, IsTerminal as _};
use std::time::Duration;

use clap::Args;
use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt as _;
use ratatui::DefaultTerminal;

use crate::{
    cmd::{
        args::{TraceArgs, parse_duration},
        watch::{self, WatchArgs},
    },
    engine::{Live, Options, Tick},
    view::{
        Snapshot,
        tui::{Flow, TopView},
    },
};

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Rows kept per table (the most live first) before sorting and filtering; 0 keeps all.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub top: usize,
    /// How often to check the counts against the kernel's own table (sock_diag) and report
    /// the difference as `drift`; `0s`: only at exit. Sooner when events were lost or a
    /// difference waits for the next pass to confirm it.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub reconcile_every: Duration,
}

pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    if !io::stdout().is_terminal() {
        let TopArgs { trace, top, reconcile_every } = args;
        return watch::run(WatchArgs { trace, json: false, top, reconcile_every }).await;
    }
    let options = Options { reconcile_on_stop: false, ..args.trace.options(args.reconcile_every) };
    let mut live = Live::start(&options, args.top)?;
    let mut view = TopView::default();
    let mut snapshot = take_snapshot(&mut live, &mut view, args.top);

    let mut screen = Screen::enter()?;
    let mut keys = EventStream::new();
    let mut redraw = true;
    loop {
        if redraw {
            screen.0.draw(|frame| view.render(&snapshot, frame))?;
            redraw = false;
        }
        let input = tokio::select! {
            tick = live.next() => Input::Tick(tick),
            key = keys.next() => Input::Terminal(key),
        };
        match input {
            Input::Tick(tick) => {
                match tick {
                    Tick::Drain => {}
                    Tick::Report => {
                        snapshot = take_snapshot(&mut live, &mut view, args.top);
                        redraw = true;
                    }
                    // The duration is up, or SIGTERM/SIGINT came from outside.
                    Tick::Stop => return Ok(()),
                }
            }
            Input::Terminal(Some(Ok(TermEvent::Key(key)))) => {
                if view.on_key(key) == Flow::Quit {
                    return Ok(());
                }
                redraw = true;
            }
            Input::Terminal(Some(Ok(TermEvent::Resize(..)))) => redraw = true,
            Input::Terminal(Some(Ok(_))) => {}
            Input::Terminal(Some(Err(e))) => {
                return Err(anyhow::Error::new(e).context("cannot read the keyboard"));
            }
            // The terminal is gone: nobody is watching.
            Input::Terminal(None) => return Ok(()),
        }
    }
}

enum Input {
    Tick(Tick),
    Terminal(Option<io::Result<TermEvent>>),
}

/// The ledger's counts and the capacity rows now. A capacity failure is shown on screen
/// (stderr would scribble over the full-screen view) and the ledger's tables go on.
fn take_snapshot(live: &mut Live, view: &mut TopView, top: usize) -> Snapshot {
    let snapshot = live.snapshot(top);
    // The notices would scribble over the screen; what is failing now shows on it instead.
    live.take_notices();
    view.notice = live
        .passes
        .failing()
        .map(|(pass, why)| format!("{} failed and was skipped: {why}", pass.what()));
    snapshot
}

/// The terminal in raw mode on the alternate screen, given back however `run` ends: on
/// return and on `?` by this guard's drop, on a panic by the hook `ratatui::try_init`
/// installs (it restores, then runs the previous hook, so the message shows on the
/// normal screen).
struct Screen(DefaultTerminal);

impl Screen {
    fn enter() -> io::Result<Self> {
        ratatui::try_init().map(Self).inspect_err(|_| ratatui::restore())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
        // The cursor is shown again when the terminal (the field) is dropped after this.
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn top_takes_the_trace_options_and_keeps_every_row_by_default() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("tcptrace").chain(args.iter().copied()))
                .map(Cli::command)
        };
        let Ok(Command::Top(top)) = parse(&["top", "--interval", "250ms", "--duration", "5s"])
        else {
            panic!("expected top");
        };
        assert_eq!((top.top, top.reconcile_every.as_secs()), (0, 10));
        assert_eq!(top.trace.interval.as_millis(), 250);
        let err = parse(&["top", "--reconcile-every", "soon"]).unwrap_err().to_string();
        assert!(err.contains("examples: 500ms"), "{err}");
        assert!(parse(&["top", "--json"]).is_err(), "top has no JSON output");
    }
}
