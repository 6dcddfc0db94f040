//! `tcptrace events`: one line per connect, accept and close.

use std::time::Duration;

use clap::Args;

use crate::{
    cmd::{args::TraceArgs, print},
    engine::{Options, Session, Tick},
    event::EventKind,
    view::events::{json_line, text_line},
};

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    // Every event says when and who; nothing is reconciled (there is no ledger).
    let options = Options { details: true, ..args.trace.options(Duration::ZERO) };
    let mut session = Session::start(&options)?;
    eprintln!("tcptrace: {}", session.tracer.describe());
    let mut reported_lost = 0;
    let mut open = true;
    loop {
        let tick = session.next().await;
        session.consumer.drain(|ev| {
            // The server-side handshake is for the ledger; the accept that follows is the
            // event users read (with the accepting process's pid).
            if open && ev.kind != EventKind::Established {
                let line = if args.json { json_line(&ev) } else { Some(text_line(&ev)) };
                if let Some(line) = line {
                    open = print(&line).unwrap_or(false);
                }
            }
        });
        if !open {
            return Ok(());
        }
        if matches!(tick, Tick::Report | Tick::Stop) {
            let lost = session.tracer.lost();
            if lost > reported_lost {
                eprintln!(
                    "tcptrace: {lost} events lost so far: the ring buffer was full (raise --ring-size)"
                );
                reported_lost = lost;
            }
        }
        if matches!(tick, Tick::Stop) {
            return Ok(());
        }
    }
}
