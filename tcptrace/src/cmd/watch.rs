//! `tcptrace watch`: the live counts, as a table or JSON lines, every interval.

use std::{collections::HashSet, io::IsTerminal as _, time::Instant};

use crate::{
    cli::WatchArgs,
    cmd::{Session, Tick, print},
    conn::Conn,
    ledger::Ledger,
    reconcile::{Drift, reconcile},
    seed,
    view::{self, Snapshot, Trust},
};

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut session = Session::start(&args.trace)?;
    let mut ledger = Ledger::new();
    // Seed after attaching: a connection that changes in between shows up both in the
    // snapshot and as an event, and applying the events after the snapshot gets it right
    // (opens are idempotent; closes of unknown connections are ignored).
    let seeded = KernelView::take(&session)?;
    for skipped in &seeded.skipped {
        eprintln!("tcptrace: note: not seeded: {skipped}");
    }
    for &conn in &seeded.conns {
        ledger.open(conn);
    }
    session.consumer.drain(|ev| ledger.apply(&ev));
    eprintln!(
        "tcptrace: {}; seeded {} live connections from {} network namespaces",
        session.tracer.describe(),
        seeded.conns.len(),
        seeded.namespaces.len(),
    );

    let mut drift = Drift::default();
    let mut last_reconcile = Instant::now();
    let clear_screen = !args.json && std::io::stdout().is_terminal();
    let render = |session: &Session, ledger: &Ledger, drift: Drift| {
        let trust = Trust { lost: session.tracer.lost(), drift: drift.total() };
        let snapshot = Snapshot::from_ledger(
            ledger,
            session.tracer.backend.name(),
            session.started.elapsed(),
            trust,
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
    if !print(&render(&session, &ledger, drift))? {
        return Ok(());
    }
    loop {
        let tick = session.next().await;
        session.consumer.drain(|ev| ledger.apply(&ev));
        let due =
            !args.reconcile_every.is_zero() && last_reconcile.elapsed() >= args.reconcile_every;
        if matches!(tick, Tick::Stop) || (matches!(tick, Tick::Report) && due) {
            drift = reconcile_with_kernel(&mut session, &mut ledger)?;
            last_reconcile = Instant::now();
        }
        match tick {
            Tick::Drain => {}
            Tick::Report => {
                if !print(&render(&session, &ledger, drift))? {
                    return Ok(());
                }
            }
            Tick::Stop => {
                print(&render(&session, &ledger, drift))?;
                return Ok(());
            }
        }
    }
}

/// The kernel's live connections, keyed the way the programs key their events.
struct KernelView {
    conns: HashSet<Conn>,
    /// Network namespaces whose connections were read.
    namespaces: HashSet<u32>,
    skipped: Vec<String>,
}

impl KernelView {
    fn take(session: &Session) -> anyhow::Result<Self> {
        let snapshot = seed::snapshot()?;
        let knows_netns = session.tracer.knows_netns;
        // Without BTF the programs report netns 0; key the kernel's view the same way.
        let netns = |n: u32| if knows_netns { n } else { 0 };
        let mut namespaces: HashSet<u32> = snapshot.conns.iter().map(|c| netns(c.netns)).collect();
        namespaces.insert(netns(seed::own_netns()?));
        let conns =
            snapshot.conns.into_iter().map(|c| Conn { netns: netns(c.netns), ..c }).collect();
        Ok(Self { conns, namespaces, skipped: snapshot.skipped })
    }
}

/// Compares the ledger with a fresh sock_diag snapshot and corrects it. Events drained
/// after the snapshot was started may describe changes the snapshot did or did not see,
/// so their connections are left out of the comparison.
fn reconcile_with_kernel(session: &mut Session, ledger: &mut Ledger) -> anyhow::Result<Drift> {
    let kernel = KernelView::take(session)?;
    let mut touched = HashSet::new();
    session.consumer.drain(|ev| {
        touched.insert(ev.conn);
        ledger.apply(&ev);
    });
    let drift = reconcile(ledger, &kernel.conns, &kernel.namespaces, &touched);
    if drift.total() > 0 {
        log::info!("reconciliation with sock_diag: {drift:?}");
    }
    Ok(drift)
}
