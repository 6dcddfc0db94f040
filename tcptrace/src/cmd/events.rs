//! `tcptrace events`: one line per connect, accept and close.

use crate::{
    cli::EventsArgs,
    cmd::{Session, Tick, print},
    event::EventKind,
    view::events::{json_line, text_line},
};

pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let mut session = Session::start_with_details(&args.trace)?;
    eprintln!("tcptrace: {}", session.tracer.describe());
    let mut reported_lost = 0;
    let mut open = true;
    loop {
        let tick = session.next().await;
        session.consumer.drain(|ev| {
            // The server-side handshake is for the ledger; the accept that follows is the
            // event users read (with the accepting process's pid).
            if open && ev.kind != EventKind::Established {
                let line = if args.json { json_line(&ev) } else { text_line(&ev) };
                open = print(&line).unwrap_or(false);
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
