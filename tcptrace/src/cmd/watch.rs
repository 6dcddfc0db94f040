//! `tcptrace watch`: the live counts, as a table or JSON lines, every interval.

use std::io::IsTerminal as _;

use crate::{
    cli::WatchArgs,
    cmd::{Session, Tick, print},
    ledger::Ledger,
    seed,
    view::{self, Snapshot},
};

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut session = Session::start(&args.trace)?;
    let mut ledger = Ledger::new();
    // Seed after attaching: a connection that changes in between shows up both in the
    // snapshot and as an event, and applying the events after the snapshot gets it right
    // (opens are idempotent; closes of unknown connections are ignored).
    let seeded = seed::snapshot()?;
    for skipped in &seeded.skipped {
        eprintln!("tcptrace: note: not seeded: {skipped}");
    }
    let seeded_count = seeded.conns.len();
    for mut conn in seeded.conns {
        if !session.tracer.knows_netns {
            conn.netns = 0;
        }
        ledger.open(conn);
    }
    session.consumer.drain(|ev| ledger.apply(&ev));
    eprintln!(
        "tcptrace: {}; seeded {seeded_count} live connections from {} network namespaces",
        session.tracer.describe(),
        seeded.namespaces,
    );

    let clear_screen = !args.json && std::io::stdout().is_terminal();
    let render = |session: &Session, ledger: &Ledger| {
        let snapshot = Snapshot::from_ledger(
            ledger,
            session.tracer.backend.name(),
            session.started.elapsed(),
            session.tracer.lost(),
            args.top,
        );
        if args.json {
            view::json::watch_line(&snapshot)
        } else if clear_screen {
            format!("\x1b[H\x1b[2J{}", view::table::render(&snapshot))
        } else {
            format!("{}\n", view::table::render(&snapshot))
        }
    };
    if !print(&render(&session, &ledger))? {
        return Ok(());
    }
    loop {
        let tick = session.next().await;
        session.consumer.drain(|ev| ledger.apply(&ev));
        match tick {
            Tick::Drain => {}
            Tick::Report => {
                if !print(&render(&session, &ledger))? {
                    return Ok(());
                }
            }
            Tick::Stop => {
                print(&render(&session, &ledger))?;
                return Ok(());
            }
        }
    }
}
