//! `tcptrace watch`: the live counts, as a table or JSON lines, every interval.

use std::io::IsTerminal as _;

use crate::{
    capacity::{self, Capacity},
    cli::WatchArgs,
    cmd::{Session, Tick, Tracked, print},
    view::{self, Snapshot},
};

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut session = Session::start(&args.trace)?;
    let mut capacity = capacity::Tracker::new(session.filter.clone());
    let mut tracked = Tracked::start(&mut session, &mut capacity, args.top, args.reconcile_every)?;
    let clear_screen = !args.json && std::io::stdout().is_terminal();
    let render = |session: &Session, tracked: &Tracked, capacity: &mut capacity::Tracker| {
        let rows = capacity.refresh(args.top).unwrap_or_else(|e| {
            log::warn!("capacity views unavailable: {e:#}");
            Capacity::default()
        });
        if let Some(note) = capacity.cadence_note() {
            eprintln!("tcptrace: note: {note}");
        }
        let snapshot = Snapshot::from_ledger(
            &tracked.ledger,
            session.tracer.backend.name(),
            session.started.elapsed(),
            tracked.trust(session),
            args.top,
        )
        .with_capacity(rows);
        if args.json {
            view::json::watch_line(&snapshot)
        } else if clear_screen {
            format!("\x1b[H\x1b[2J{}", view::table::render(&snapshot))
        } else {
            format!("{}\n", view::table::render(&snapshot))
        }
    };
    if !print(&render(&session, &tracked, &mut capacity))? {
        return Ok(());
    }
    loop {
        let tick = session.next().await;
        tracked.update(&mut session, &tick, |ev| capacity.on_event(ev))?;
        match tick {
            Tick::Drain => {}
            Tick::Report => {
                if !print(&render(&session, &tracked, &mut capacity))? {
                    return Ok(());
                }
            }
            Tick::Stop => {
                print(&render(&session, &tracked, &mut capacity))?;
                return Ok(());
            }
        }
    }
}
