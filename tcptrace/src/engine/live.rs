//! [`Live`]: the counts a run keeps current. One sock_diag walk at start seeds the ledger
//! and gives the first capacity rows; every event then goes to the ledger and to the
//! capacity tracker's rates; every `reconcile_every` (and when the run stops) the ledger is
//! checked against the kernel; a snapshot takes the top rows of both.
//!
//! The walks after the first run on the [`Walker`]'s thread, so that the loop keeps
//! counting, printing and serving while one takes long. A tick that asks for one waits
//! [`WALK_WAIT`] for it, which is enough on most boxes, so that its rows and drift are that
//! tick's; a longer one is taken in at a later tick. Each kind of walk is paced by its own
//! cost: not asked for again sooner than [`capacity::REFRESH_COST_RATIO`] times what the
//! last one took.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{
    Options,
    passes::{Pass, Passes},
    reconcile::{Drift, KernelView, Suspects, reconcile},
    session::{Session, Tick},
    walker::{Walk, Walked, Walker},
};
use crate::{
    Error,
    capacity::{self, Capacity, REFRESH_COST_RATIO},
    conn::Conn,
    event::Event,
    ledger::Ledger,
    view::{self, Snapshot, Trust},
};

/// How long a tick waits for a walk it asked for: a walk of a box with some tens of
/// thousands of sockets ends within it, so its rows and drift are that tick's.
pub const WALK_WAIT: Duration = Duration::from_millis(250);
/// How long the last tick waits for its reconciliation, the run's final word on drift.
pub const STOP_WAIT: Duration = Duration::from_mins(2);
/// The most often a reconciliation runs when one is due at once (events were lost, or a
/// difference waits for the next pass to confirm it): `--reconcile-every` when shorter.
pub const CONFIRM_FLOOR: Duration = Duration::from_secs(2);

/// A walk that did not end in time.
#[derive(Debug, thiserror::Error)]
#[error("the sock_diag walk did not finish within {0:?}")]
struct WalkTimeout(Duration);

/// The ledger and the capacity rows of one run, and how far they can be trusted.
pub struct Live {
    pub session: Session,
    pub ledger: Ledger,
    pub capacity: capacity::Tracker,
    /// The last reconciliation's differences.
    pub drift: Drift,
    /// Every reconciliation's corrections since the run started.
    pub drift_total: u64,
    /// Namespaces (or groups of tasks whose namespace could not be seen) the last
    /// reconciliation could not read: their counts rest on the hooks alone.
    pub unreconciled: u64,
    /// Whether a reconciliation ran, and worked, during the last [`Live::next`].
    pub reconciled: bool,
    /// Passes that failed and were skipped.
    pub passes: Passes,
    walker: Walker,
    /// The connections that had an event since the reconciliation walk in flight was
    /// asked for: either side may have seen them before or after their change, so they are
    /// left out of its comparison.
    touched: Option<HashSet<Conn>>,
    /// What the last reconciliation found different and holds against the next.
    suspects: Suspects,
    /// `lost` when the last reconciliation that worked was asked for: when it grows, one
    /// is due.
    lost_at_reconcile: u64,
    lost_when_asked: u64,
    /// Whether the last tick reconciles (`serve` and `top` have nobody to tell the result).
    reconcile_on_stop: bool,
    last_reconcile: Instant,
    reconcile_every: Duration,
    /// Said once, when reconciliations start to space out.
    notes: Vec<String>,
    reconciliation_paced: bool,
    /// The rows of the start-up walk, for a snapshot taken before the first tick.
    first_rows: Option<Capacity>,
}

impl Live {
    /// Attaches, then seeds the ledger and says on stderr which path is live. Seeding after
    /// attaching is what makes the start exact: a connection that changes in between shows
    /// up both in the dump and as an event, and applying the events after the dump gets it
    /// right (opens are idempotent; closes of unknown connections are ignored).
    ///
    /// The seed and the first capacity rows (the `top` of each kind) come from one dump,
    /// which holds every live connection anyway: one walk of the kernel's tables before the
    /// first snapshot, not two.
    pub fn start(options: &Options, top: usize) -> Result<Self, Error> {
        let mut session = Session::start(options)?;
        let mut capacity = capacity::Tracker::new(options.filter.clone());
        let t0 = Instant::now();
        let (rows, live) = capacity.refresh_and_seed(top)?;
        let seeded = KernelView::of(live, session.tracer.knows_netns);
        log::debug!("seed snapshot: {} connections in {:?}", seeded.conns.len(), t0.elapsed());
        for skipped in &seeded.skipped {
            eprintln!("tcptrace: note: not seeded: {skipped}");
        }
        let mut ledger = Ledger::new();
        for &conn in &seeded.conns {
            ledger.open(conn);
        }
        session.consumer.drain(|ev| ledger.apply(&ev));
        session.restart_reports();
        eprintln!(
            "tcptrace: {}; seeded {} live connections from {} network namespaces",
            session.tracer.describe(),
            seeded.conns.len(),
            seeded.namespaces.len(),
        );
        Ok(Self {
            session,
            ledger,
            capacity,
            drift: Drift::default(),
            drift_total: 0,
            unreconciled: 0,
            reconciled: false,
            passes: Passes::default(),
            walker: Walker::start(options.filter.clone()).map_err(Error::Walker)?,
            touched: None,
            suspects: Suspects::default(),
            lost_at_reconcile: 0,
            lost_when_asked: 0,
            reconcile_on_stop: options.reconcile_on_stop,
            last_reconcile: Instant::now(),
            reconcile_every: options.reconcile_every,
            notes: Vec::new(),
            reconciliation_paced: false,
            first_rows: Some(rows),
        })
    }

    /// Waits for the next tick, then applies what the ring holds to the ledger and the
    /// capacity rates; on a report tick that is due, and always on stop, reconciles with
    /// the kernel. Cancel-safe, as [`Session::next`] is: nothing changes until the tick.
    pub async fn next(&mut self) -> Tick {
        let tick = self.session.next().await;
        self.update(&tick);
        tick
    }

    /// What [`Live::next`] does once the tick came: applies the ring, takes in a
    /// reconciliation that finished since, and asks for one on a report tick that is due and
    /// always on stop (a caller may pass [`Tick::Stop`] to force one; it waits up to
    /// [`STOP_WAIT`] for it). A reconciliation that fails is skipped (see [`Passes`]): the
    /// drift stays the last one measured and [`Live::reconciled`] says none ran.
    pub fn update(&mut self, tick: &Tick) {
        // From the first tick on the start-up rows are out of date.
        self.first_rows = None;
        self.reconciled = false;
        self.apply_ring();
        self.take_reconciliation(Duration::ZERO);
        let stop = matches!(tick, Tick::Stop);
        if !(stop || (matches!(tick, Tick::Report) && self.reconciliation_due())) {
            return;
        }
        if !self.reconcile_on_stop && stop {
            return;
        }
        self.reconcile_now(stop);
        // The last word of a run must not leave a difference only suspected: confirm it now.
        if stop && self.reconciled && !self.suspects.is_empty() {
            self.reconcile_now(true);
        }
    }

    /// Asks for a reconciliation walk (unless one is in flight) and takes it in: waits
    /// [`WALK_WAIT`] if this call asked, [`STOP_WAIT`] when `last`, else not at all (a walk
    /// in flight since an earlier tick is taken in when it is done, without holding up this
    /// one).
    fn reconcile_now(&mut self, last: bool) {
        let asked = self.walker.ask(Walk::Reconciliation);
        if asked {
            self.touched = Some(HashSet::new());
            self.lost_when_asked = self.session.tracer.lost();
        }
        let wait = match (last, asked) {
            (true, _) => STOP_WAIT,
            (false, true) => WALK_WAIT,
            (false, false) => Duration::ZERO,
        };
        if !self.take_reconciliation(wait) && last {
            self.passes.failed(Pass::Reconciliation, &WalkTimeout(wait));
        }
    }

    /// Whether a report tick should reconcile: `reconcile_every` has passed since the last
    /// one, and so has [`REFRESH_COST_RATIO`] times what the last one cost. Sooner (paced by
    /// the cost alone, and even with `reconcile_every` 0) when the kernel lost events since
    /// the last one, or when it found differences the next pass must confirm: a lost
    /// event is repaired within two passes, not a `reconcile_every` later.
    fn reconciliation_due(&mut self) -> bool {
        let cost = self.walker.last(Walk::Reconciliation).map_or(Duration::ZERO, |(_, c)| c);
        // Not more often than this even when one is wanted at once: under churn every pass
        // can find new suspects, and a walk slows the churn (BENCHMARKS.md).
        let floor = if self.reconcile_every.is_zero() {
            CONFIRM_FLOOR
        } else {
            self.reconcile_every.min(CONFIRM_FLOOR)
        };
        let paced = self.last_reconcile.elapsed() >= (cost * REFRESH_COST_RATIO).max(floor);
        if !self.suspects.is_empty() || self.session.tracer.lost() > self.lost_at_reconcile {
            return paced;
        }
        if self.reconcile_every.is_zero() {
            return false;
        }
        let every = self.reconcile_every.max(cost * REFRESH_COST_RATIO);
        if every > self.reconcile_every && !self.reconciliation_paced {
            self.reconciliation_paced = true;
            self.notes.push(format!(
                "reconciliations run at most every {every:.1?}: one takes {cost:.1?} here; the live counts stay current"
            ));
        }
        self.last_reconcile.elapsed() >= every
    }

    /// Takes in the reconciliation walk if it finished (waiting up to `wait` for one in
    /// flight) and reconciles; whether it did.
    fn take_reconciliation(&mut self, wait: Duration) -> bool {
        let Some(Walked::Reconciliation(walked)) = self.walker.take(Walk::Reconciliation, wait)
        else {
            return false;
        };
        // What happened while the walk ran is touched too.
        self.apply_ring();
        let touched = self.touched.take().unwrap_or_default();
        self.last_reconcile = Instant::now();
        match walked {
            Ok(live) => {
                // The lost events up to the ask are repaired by this pass (or held for the
                // next): a failed walk leaves them due.
                self.lost_at_reconcile = self.lost_when_asked;
                let kernel = KernelView::of(live, self.session.tracer.knows_netns);
                let drift = reconcile(
                    &mut self.ledger,
                    &kernel.conns,
                    &kernel.namespaces,
                    &touched,
                    &mut self.suspects,
                );
                if drift.total() + drift.suspected > 0 {
                    log::info!("reconciliation with sock_diag: {drift:?}");
                }
                self.drift = drift;
                self.drift_total += drift.total();
                self.note_unreconciled(&kernel.skipped);
                self.reconciled = true;
                self.passes.worked(Pass::Reconciliation);
            }
            Err(e) => self.passes.failed(Pass::Reconciliation, &e),
        }
        true
    }

    /// Says once when namespaces start to go unreconciled, and when that changes.
    fn note_unreconciled(&mut self, skipped: &[String]) {
        let n = skipped.len() as u64;
        if n != self.unreconciled && n > 0 {
            self.notes.push(format!(
                "{n} network namespace(s) could not be reconciled: their counts rest on the hooks alone (first: {})",
                skipped[0]
            ));
        }
        self.unreconciled = n;
    }

    /// Drains the ring into everything that counts events, the touched set of a
    /// reconciliation in flight, and the suspicions an event settles.
    fn apply_ring(&mut self) {
        let (ledger, capacity) = (&mut self.ledger, &mut self.capacity);
        let (touched, suspects) = (&mut self.touched, &mut self.suspects);
        self.session.consumer.drain(|ev: Event| {
            if let Some(touched) = touched.as_mut() {
                touched.insert(ev.conn);
            }
            if !suspects.is_empty() {
                suspects.clear(&ev.conn);
            }
            capacity.on_event(&ev);
            ledger.apply(&ev);
        });
    }

    #[must_use]
    pub fn trust(&self) -> Trust {
        Trust {
            lost: self.session.tracer.lost(),
            drift: self.drift.total(),
            drift_total: self.drift_total,
            unreconciled: self.unreconciled,
            filtered: self.session.tracer.filtered(),
        }
    }

    /// The capacity rows now: before the first tick the start-up walk's; then the last
    /// refresh's, after asking for one if it is due (paced by its cost: see
    /// [`capacity::Tracker::due`]) and taking in a walk that finished. `None` while the
    /// refreshes fail (see [`Passes`]).
    pub fn capacity_rows(&mut self, top: usize) -> Option<Capacity> {
        if let Some(rows) = self.first_rows.take() {
            return Some(rows);
        }
        self.take_capacity(top, Duration::ZERO);
        if self.capacity.due(top) && self.walker.ask(Walk::Capacity) {
            self.take_capacity(top, WALK_WAIT);
        }
        if self.passes.record(Pass::CapacityRefresh).failing.is_some() {
            return None;
        }
        self.capacity.last_rows(top).cloned()
    }

    /// The capacity rows as the kernel has them now, however recent the last refresh: a
    /// run's last word (`check`'s final values) must not be a paced refresh seconds old
    /// (3 s behind a 2 s check in a slow VM). The walk runs here, not on the walker: nothing
    /// comes after it. `None` when it fails, recorded as the refresh pass's failure.
    pub fn current_capacity_rows(&mut self, top: usize) -> Option<Capacity> {
        self.first_rows = None;
        // The rates count the events up to now.
        self.apply_ring();
        match self.capacity.refresh_now(top) {
            Ok(rows) => {
                self.passes.worked(Pass::CapacityRefresh);
                Some(rows)
            }
            Err(e) => {
                self.passes.failed(Pass::CapacityRefresh, &e);
                None
            }
        }
    }

    /// Takes in the capacity walk if it finished (waiting up to `wait` for one in flight).
    fn take_capacity(&mut self, top: usize, wait: Duration) {
        if let Some(Walked::Capacity(walked)) = self.walker.take(Walk::Capacity, wait) {
            // The rates count the events up to now.
            self.apply_ring();
            match walked {
                Ok(dump) => {
                    self.capacity.rows_of(&dump, top);
                    self.passes.worked(Pass::CapacityRefresh);
                }
                Err(e) => self.passes.failed(Pass::CapacityRefresh, &e),
            }
        }
    }

    /// The ledger's top `top` rows of each kind (all when 0) and the capacity rows (none
    /// when their refresh failed: the ledger's counts are there either way).
    pub fn snapshot(&mut self, top: usize) -> Snapshot {
        let rows = self.capacity_rows(top).unwrap_or_default();
        self.snapshot_with(top, rows)
    }

    /// The ledger's top `top` rows of each kind beside capacity rows the caller already has.
    #[must_use]
    pub fn snapshot_with(&self, top: usize, rows: Capacity) -> Snapshot {
        view::snapshot(
            &self.ledger,
            self.session.tracer.path.name(),
            self.session.started.elapsed(),
            self.trust(),
            top,
            rows,
        )
    }

    /// What the user should hear now, once each: a pass that started failing or works
    /// again, the capacity rows spacing out.
    pub fn take_notices(&mut self) -> Vec<String> {
        let mut notices = self.passes.take_notices();
        notices.extend(self.capacity.cadence_note());
        notices.append(&mut self.notes);
        notices
    }
}
