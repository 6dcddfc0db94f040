//! How far the counts can be trusted: the ledger checked against the kernel's own table.
//!
//! Periodically and at exit the live connections in the ledger are compared with a
//! sock_diag snapshot (the same source `ss` reads). Connections that changed while the
//! snapshot was being taken are left out of the comparison, since either side may have
//! seen them before or after the change; every other difference is drift. The ledger is
//! then corrected to the kernel's view, and the drift is reported next to `lost`.

use std::collections::HashSet;

use crate::{
    conn::{Conn, events_netns},
    ledger::Ledger,
    sockdiag::LiveConnections,
};

/// The kernel's live connections, keyed the way the programs key their events.
pub struct KernelView {
    /// Each once (the dump removes repeats); a list, not a set: see [`reconcile`].
    pub conns: Vec<Conn>,
    /// Network namespaces whose connections were read.
    pub namespaces: HashSet<u32>,
    pub skipped: Vec<String>,
}

impl KernelView {
    /// Keys `live` as the events key their connections.
    #[must_use]
    pub fn of(live: LiveConnections, knows_netns: bool) -> Self {
        let key = |c: Conn| c.as_events_key_them(knows_netns);
        // Without namespace ids every namespace is one to the events: if some could not be
        // read, none can be compared for stale connections (theirs would look closed).
        let namespaces = if knows_netns || live.skipped.is_empty() {
            live.namespaces.iter().map(|&n| events_netns(n, knows_netns)).collect()
        } else {
            HashSet::new()
        };
        let mut conns: Vec<Conn> = live.conns.into_iter().map(key).collect();
        if !knows_netns {
            // Namespaces merged into one can hold the same 4-tuple more than once.
            conns.sort_unstable();
            conns.dedup();
        }
        Self { conns, namespaces, skipped: live.skipped }
    }
}

/// Differences one reconciliation corrected, and what it found and holds against the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    /// Live in the kernel, missing from the ledger (a lost or unseen open), confirmed.
    pub missing: u64,
    /// In the ledger, no longer live in the kernel (a lost or unseen close), confirmed.
    pub stale: u64,
    /// Found different for the first time: not corrected yet (see [`Suspects`]).
    pub suspected: u64,
}

/// What a reconciliation found different and did not correct yet. A sock_diag dump is not
/// atomic: it resumes each datagram at "the n-th socket of hash bucket b", so a connection
/// opened or closed in the same bucket meanwhile can make it skip or repeat a neighbour,
/// and a live connection can be missing from one dump. So a difference is corrected only
/// when the next pass finds it again, with no event on that connection in between (an event
/// is the hooks' word, and ends the suspicion). One skipped socket no longer turns into a
/// wrong "correction" and drift; a lost event still is corrected, one pass later.
#[derive(Clone, Debug, Default)]
pub struct Suspects {
    missing: hashbrown::HashSet<Conn>,
    stale: hashbrown::HashSet<Conn>,
}

impl Suspects {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.stale.is_empty()
    }

    /// An event on `conn`: the hooks have said what it is.
    pub fn clear(&mut self, conn: &Conn) {
        self.missing.remove(conn);
        self.stale.remove(conn);
    }
}

impl Drift {
    #[must_use]
    pub fn total(self) -> u64 {
        self.missing + self.stale
    }
}

#[expect(
    clippy::implicit_hasher,
    reason = "the callers build these sets; a generic hasher would only add noise"
)]
/// Compares the ledger with `kernel` (the live connections of the namespaces in `dumped`,
/// each once) and corrects what the last pass found different too (`suspects`, which it
/// replaces with what it found only now). `touched` holds the connections that had an
/// event while the snapshot was taken: they are not compared.
///
/// At 2,000,000 sockets a set of the kernel's connections would cost hundreds of MB and
/// most of a second, so none is built unless needed: every kernel connection is looked up
/// in the ledger, and only if fewer matched than the ledger holds (in those namespaces,
/// untouched) is there a stale connection to find.
pub fn reconcile(
    ledger: &mut Ledger,
    kernel: &[Conn],
    dumped: &HashSet<u32>,
    touched: &HashSet<Conn>,
    suspects: &mut Suspects,
) -> Drift {
    let compared = |c: &Conn| dumped.contains(&c.netns) && !touched.contains(c);
    let mut missing = Vec::new();
    let mut matched = 0;
    for c in kernel.iter().filter(|c| !touched.contains(c)) {
        if ledger.is_live(c) {
            matched += 1;
        } else {
            missing.push(*c);
        }
    }
    let held = ledger.conns().filter(|c| compared(c)).count();
    let stale: Vec<Conn> = if held == matched {
        Vec::new()
    } else {
        let kernel: hashbrown::HashSet<&Conn> = kernel.iter().collect();
        ledger.conns().filter(|c| compared(c) && !kernel.contains(c)).collect()
    };
    // Found by the last pass too: confirmed. Found only now: held against the next.
    let confirm = |found: Vec<Conn>, before: &hashbrown::HashSet<Conn>| {
        let (confirmed, new): (Vec<Conn>, Vec<Conn>) =
            found.into_iter().partition(|c| before.contains(c));
        (confirmed, new.into_iter().collect::<hashbrown::HashSet<Conn>>())
    };
    let (missing, suspect_missing) = confirm(missing, &suspects.missing);
    let (stale, suspect_stale) = confirm(stale, &suspects.stale);
    for c in &stale {
        ledger.close(c);
    }
    for &c in &missing {
        ledger.open(c);
    }
    *suspects = Suspects { missing: suspect_missing, stale: suspect_stale };
    Drift {
        missing: missing.len() as u64,
        stale: stale.len() as u64,
        suspected: (suspects.missing.len() + suspects.stale.len()) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(netns: u32, local: &str, remote: &str) -> Conn {
        Conn::new(netns, local.parse().unwrap(), remote.parse().unwrap())
    }

    /// One pass with a fresh suspect list and nothing touched.
    fn pass(ledger: &mut Ledger, kernel: &[Conn], suspects: &mut Suspects) -> Drift {
        reconcile(ledger, kernel, &HashSet::from([1]), &HashSet::new(), suspects)
    }

    #[test]
    fn agreeing_tables_have_no_drift() {
        let mut ledger = Ledger::new();
        let a = conn(1, "127.0.0.1:80", "127.0.0.2:40000");
        ledger.open(a);
        let kernel = [a];
        let drift = pass(&mut ledger, &kernel, &mut Suspects::default());
        assert_eq!(drift, Drift::default());
        assert_eq!(ledger.live(), 1);
    }

    #[test]
    fn differences_seen_by_two_passes_are_counted_and_corrected() {
        let mut ledger = Ledger::new();
        let kept = conn(1, "127.0.0.1:80", "127.0.0.2:40000");
        let stale = conn(1, "127.0.0.1:80", "127.0.0.2:40001");
        let missing = conn(1, "[::1]:80", "[::1]:40002");
        ledger.open(kept);
        ledger.open(stale);
        let kernel = [kept, missing];
        let mut suspects = Suspects::default();
        let first = pass(&mut ledger, &kernel, &mut suspects);
        assert_eq!(first, Drift { missing: 0, stale: 0, suspected: 2 }, "held, not corrected");
        assert!(ledger.is_live(&stale) && !ledger.is_live(&missing));
        let drift = pass(&mut ledger, &kernel, &mut suspects);
        assert_eq!(drift, Drift { missing: 1, stale: 1, suspected: 0 });
        assert_eq!(drift.total(), 2);
        assert!(ledger.is_live(&missing) && !ledger.is_live(&stale) && ledger.is_live(&kept));
        assert!(suspects.is_empty());
    }

    #[test]
    fn a_connection_one_dump_skipped_is_not_closed() {
        let mut ledger = Ledger::new();
        let live = conn(1, "127.0.0.1:80", "127.0.0.2:40000");
        ledger.open(live);
        let mut suspects = Suspects::default();
        // The dump skipped it (a neighbour in its hash bucket changed between datagrams).
        assert_eq!(pass(&mut ledger, &[], &mut suspects).suspected, 1);
        let drift = pass(&mut ledger, &[live], &mut suspects);
        assert_eq!(drift, Drift::default(), "the next dump has it: no drift, no correction");
        assert!(ledger.is_live(&live) && suspects.is_empty());
    }

    #[test]
    fn an_event_between_two_passes_ends_the_suspicion() {
        let mut ledger = Ledger::new();
        let gone = conn(1, "127.0.0.1:80", "127.0.0.2:40000");
        ledger.open(gone);
        let mut suspects = Suspects::default();
        pass(&mut ledger, &[], &mut suspects);
        suspects.clear(&gone);
        assert_eq!(
            pass(&mut ledger, &[], &mut suspects),
            Drift { suspected: 1, ..Drift::default() }
        );
        assert!(ledger.is_live(&gone), "suspected afresh, not corrected on one pass");
    }

    #[test]
    fn connections_that_changed_during_the_snapshot_are_not_compared() {
        let mut ledger = Ledger::new();
        let closing = conn(1, "127.0.0.1:80", "127.0.0.2:40000");
        let opening = conn(1, "127.0.0.1:80", "127.0.0.2:40001");
        ledger.open(closing);
        let kernel = [opening];
        let touched = HashSet::from([closing, opening]);
        let mut suspects = Suspects::default();
        for _ in 0..2 {
            let drift =
                reconcile(&mut ledger, &kernel, &HashSet::from([1]), &touched, &mut suspects);
            assert_eq!(drift, Drift::default());
        }
        assert!(ledger.is_live(&closing), "left to its own events");
    }

    #[test]
    fn namespaces_that_could_not_be_read_are_not_compared() {
        let mut ledger = Ledger::new();
        let elsewhere = conn(7, "127.0.0.1:80", "127.0.0.2:40000");
        ledger.open(elsewhere);
        let mut suspects = Suspects::default();
        for _ in 0..2 {
            assert_eq!(pass(&mut ledger, &[], &mut suspects), Drift::default());
        }
        assert!(ledger.is_live(&elsewhere));
    }
}
