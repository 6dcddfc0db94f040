//! The long-running commands. Each one attaches, then loops on [`Session::next`], which
//! turns ring wake-ups, timers, the deadline and signals into one stream of ticks.

pub mod check;
pub mod demo;
pub mod events;
pub mod serve;
pub mod top;
pub mod watch;

use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

use std::collections::HashSet;

use anyhow::Context as _;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::{Interval, MissedTickBehavior, interval, sleep_until},
};

use crate::{
    backend::{Options, Tracer},
    capacity::Tracker,
    cli::TraceArgs,
    conn::Conn,
    consumer::Consumer,
    event::Event,
    filter::FilterArgs,
    ledger::Ledger,
    reconcile::{Drift, reconcile},
    seed,
    view::Trust,
};

/// How often the ring is drained when the kernel has not woken us: a quiet box still sees
/// its events within this long, and a busy one is woken by the kernel well before.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

pub enum Tick {
    /// Drain the ring now.
    Drain,
    /// Drain, then report (print a snapshot, check for lost events).
    Report,
    /// Drain, report a last time, and stop: the duration is up, or SIGINT/SIGTERM came.
    Stop,
}

pub struct Session {
    pub tracer: Tracer,
    /// The same filter as the programs', for the sock_diag side.
    pub filter: FilterArgs,
    pub consumer: Consumer,
    pub started: Instant,
    deadline: Option<tokio::time::Instant>,
    drain: Interval,
    report: Interval,
    sigint: Signal,
    sigterm: Signal,
}

impl Session {
    /// Attaches the programs for counting: events need not say when or who.
    pub fn start(args: &TraceArgs) -> anyhow::Result<Self> {
        Self::attach(args, false)
    }

    /// Attaches the programs so that every event says when and who (a connect: the
    /// process that called `connect()`), for views that show events one by one.
    pub fn start_with_details(args: &TraceArgs) -> anyhow::Result<Self> {
        Self::attach(args, true)
    }

    /// Attaches the programs and says on stderr which path is live and what was passed over.
    fn attach(args: &TraceArgs, details: bool) -> anyhow::Result<Self> {
        // Too many values for the in-kernel arrays is a usage error: exit 2, as clap does.
        let filter = args.filter.to_wire().unwrap_or_else(|e| e.exit());
        let options = Options { attach: args.attach, ring_bytes: args.ring_size, filter, details };
        let mut tracer = Tracer::attach(options)?;
        for note in &tracer.notes {
            eprintln!("tcptrace: note: {note}");
        }
        let consumer = Consumer::new(tracer.take_ring()?, args.ring_size)
            .context("cannot poll the ring buffer")?;
        let mut drain = interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let start = tokio::time::Instant::now();
        let mut report = tokio::time::interval_at(start + args.interval, args.interval);
        report.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            tracer,
            filter: args.filter.clone(),
            consumer,
            started: Instant::now(),
            deadline: args.duration.map(|d| start + d),
            drain,
            report,
            sigint: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            sigterm: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    pub async fn next(&mut self) -> Tick {
        let deadline = async {
            match self.deadline {
                Some(d) => sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.sigint.recv() => Tick::Stop,
            _ = self.sigterm.recv() => Tick::Stop,
            () = deadline => Tick::Stop,
            _ = self.report.tick() => Tick::Report,
            r = self.consumer.wait() => {
                if let Err(e) = r {
                    log::warn!("ring buffer poll failed: {e}");
                }
                Tick::Drain
            }
            _ = self.drain.tick() => Tick::Drain,
        }
    }
}

/// The ledger a session keeps current: seeded from sock_diag at start, fed by every event,
/// and checked against the kernel every `reconcile_every` and when the session stops.
pub struct Tracked {
    pub ledger: Ledger,
    /// The last reconciliation's differences.
    pub drift: Drift,
    /// Whether a reconciliation ran during the last [`Tracked::update`].
    pub reconciled: bool,
    last_reconcile: Instant,
    reconcile_every: Duration,
}

impl Tracked {
    /// Seeds the ledger and says on stderr which path is live. Seeding after attaching
    /// is what makes the start exact: a connection that changes in between shows up both in
    /// the snapshot and as an event, and applying the events after the snapshot gets it
    /// right (opens are idempotent; closes of unknown connections are ignored).
    ///
    /// The seed comes from `capacity`'s first refresh (its `top` rows), whose dump holds
    /// every live connection anyway: one walk of the kernel's tables before the first
    /// snapshot, not two.
    pub fn start(
        session: &mut Session,
        capacity: &mut Tracker,
        top: usize,
        reconcile_every: Duration,
    ) -> anyhow::Result<Self> {
        let t0 = Instant::now();
        let (_, snapshot) = capacity.refresh_and_seed(top)?;
        let seeded = KernelView::of(session, snapshot);
        log::debug!("seed snapshot: {} connections in {:?}", seeded.conns.len(), t0.elapsed());
        for skipped in &seeded.skipped {
            eprintln!("tcptrace: note: not seeded: {skipped}");
        }
        let mut ledger = Ledger::new();
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
        Ok(Self {
            ledger,
            drift: Drift::default(),
            reconciled: false,
            last_reconcile: Instant::now(),
            reconcile_every,
        })
    }

    /// Applies what the ring holds, showing each event to `also` too (per-port rates);
    /// on a report tick that is due, and always on stop, reconciles with the kernel.
    pub fn update(
        &mut self,
        session: &mut Session,
        tick: &Tick,
        mut also: impl FnMut(&Event),
    ) -> anyhow::Result<()> {
        let ledger = &mut self.ledger;
        session.consumer.drain(|ev| {
            also(&ev);
            ledger.apply(&ev);
        });
        let due = !self.reconcile_every.is_zero()
            && self.last_reconcile.elapsed() >= self.reconcile_every;
        self.reconciled = matches!(tick, Tick::Stop) || (matches!(tick, Tick::Report) && due);
        if self.reconciled {
            self.drift = self.reconcile_with_kernel(session, also)?;
            self.last_reconcile = Instant::now();
        }
        Ok(())
    }

    #[must_use]
    pub fn trust(&self, session: &Session) -> Trust {
        Trust {
            lost: session.tracer.lost(),
            drift: self.drift.total(),
            filtered: session.tracer.filtered(),
        }
    }

    /// Compares the ledger with a fresh sock_diag snapshot and corrects it. Events drained
    /// after the snapshot was started may describe changes the snapshot did or did not
    /// see, so their connections are left out of the comparison.
    fn reconcile_with_kernel(
        &mut self,
        session: &mut Session,
        mut also: impl FnMut(&Event),
    ) -> anyhow::Result<Drift> {
        let kernel = KernelView::take(session)?;
        let ledger = &mut self.ledger;
        let mut touched = HashSet::new();
        session.consumer.drain(|ev| {
            also(&ev);
            touched.insert(ev.conn);
            ledger.apply(&ev);
        });
        let drift = reconcile(ledger, &kernel.conns, &kernel.namespaces, &touched);
        if drift.total() > 0 {
            log::info!("reconciliation with sock_diag: {drift:?}");
        }
        Ok(drift)
    }
}

/// The kernel's live connections, keyed the way the programs key their events.
struct KernelView {
    /// Each once (the dump removes repeats); a list, not a set: see [`reconcile`].
    conns: Vec<Conn>,
    /// Network namespaces whose connections were read.
    namespaces: HashSet<u32>,
    skipped: Vec<String>,
}

impl KernelView {
    fn take(session: &Session) -> anyhow::Result<Self> {
        Ok(Self::of(session, session.filter.snapshot()?))
    }

    fn of(session: &Session, snapshot: seed::Snapshot) -> Self {
        let knows_netns = session.tracer.knows_netns;
        // Without BTF the programs report netns 0; key the kernel's view the same way.
        let netns = |n: u32| if knows_netns { n } else { 0 };
        let namespaces = snapshot.namespaces.iter().map(|&n| netns(n)).collect();
        let mut conns = snapshot.conns;
        if !knows_netns {
            for c in &mut conns {
                c.netns = 0;
            }
            // Namespaces merged into 0 can hold the same 4-tuple more than once.
            conns.sort_unstable();
            conns.dedup();
        }
        Self { conns, namespaces, skipped: snapshot.skipped }
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends the command quietly rather than failing.
pub fn print(text: &str) -> io::Result<bool> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}
