//! [`Live`]: the counts a run keeps current. One sock_diag walk at start seeds the ledger
//! and gives the first capacity rows; every event then goes to the ledger and to the
//! capacity tracker's rates; every `reconcile_every` (and when the run stops) the ledger is
//! checked against the kernel; a snapshot takes the top rows of both.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{
    Options,
    passes::{Pass, Passes},
    reconcile::{Drift, KernelView, reconcile},
    session::{Session, Tick},
};
use crate::{
    Error,
    capacity::{self, Capacity},
    event::Event,
    filter::Filter,
    ledger::Ledger,
    sockdiag,
    view::{self, Snapshot, Trust},
};

/// The ledger and the capacity rows of one run, and how far they can be trusted.
pub struct Live {
    pub session: Session,
    pub ledger: Ledger,
    pub capacity: capacity::Tracker,
    /// The last reconciliation's differences.
    pub drift: Drift,
    /// Whether a reconciliation ran, and worked, during the last [`Live::next`].
    pub reconciled: bool,
    /// Passes that failed and were skipped.
    pub passes: Passes,
    filter: Filter,
    last_reconcile: Instant,
    reconcile_every: Duration,
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
            reconciled: false,
            passes: Passes::default(),
            filter: options.filter.clone(),
            last_reconcile: Instant::now(),
            reconcile_every: options.reconcile_every,
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

    /// What [`Live::next`] does once the tick came: applies the ring, and reconciles on a
    /// report tick that is due and always on stop (a caller may pass [`Tick::Stop`] to force
    /// one). A reconciliation that fails is skipped (see [`Passes`]): the drift stays the
    /// last one measured and [`Live::reconciled`] says none ran.
    pub fn update(&mut self, tick: &Tick) {
        // From the first tick on the start-up rows are out of date.
        self.first_rows = None;
        self.apply_ring(|_| {});
        let due = !self.reconcile_every.is_zero()
            && self.last_reconcile.elapsed() >= self.reconcile_every;
        self.reconciled = false;
        if matches!(tick, Tick::Stop) || (matches!(tick, Tick::Report) && due) {
            match self.reconcile_with_kernel() {
                Ok(drift) => {
                    self.drift = drift;
                    self.reconciled = true;
                    self.passes.worked(Pass::Reconciliation);
                }
                Err(e) => self.passes.failed(Pass::Reconciliation, &e),
            }
            // A failed one waits its turn too: retrying at once would fail the same way.
            self.last_reconcile = Instant::now();
        }
    }

    /// Drains the ring into everything that counts events; `also` sees each one first.
    fn apply_ring(&mut self, mut also: impl FnMut(&Event)) {
        let (ledger, capacity) = (&mut self.ledger, &mut self.capacity);
        self.session.consumer.drain(|ev| {
            also(&ev);
            capacity.on_event(&ev);
            ledger.apply(&ev);
        });
    }

    /// Compares the ledger with a fresh sock_diag walk and corrects it. Events drained
    /// after the walk was started may describe changes the walk did or did not see, so
    /// their connections are left out of the comparison.
    fn reconcile_with_kernel(&mut self) -> Result<Drift, sockdiag::Error> {
        let kernel = KernelView::take(&self.filter, self.session.tracer.knows_netns)?;
        let mut touched = HashSet::new();
        self.apply_ring(|ev| {
            touched.insert(ev.conn);
        });
        let drift = reconcile(&mut self.ledger, &kernel.conns, &kernel.namespaces, &touched);
        if drift.total() > 0 {
            log::info!("reconciliation with sock_diag: {drift:?}");
        }
        Ok(drift)
    }

    #[must_use]
    pub fn trust(&self) -> Trust {
        Trust {
            lost: self.session.tracer.lost(),
            drift: self.drift.total(),
            filtered: self.session.tracer.filtered(),
        }
    }

    /// The capacity rows now: before the first tick the start-up walk's, then a refresh
    /// (paced by its cost: see [`capacity::Tracker::refresh`]); `None` when the refresh
    /// failed and was skipped (see [`Passes`]).
    pub fn capacity_rows(&mut self, top: usize) -> Option<Capacity> {
        if let Some(rows) = self.first_rows.take() {
            return Some(rows);
        }
        match self.capacity.refresh(top) {
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

    /// The ledger's top `top` rows of each kind (all when 0) and the capacity rows (none
    /// when their refresh failed: the ledger's counts are there either way).
    pub fn snapshot(&mut self, top: usize) -> Snapshot {
        let rows = self.capacity_rows(top).unwrap_or_default();
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
        notices
    }
}
