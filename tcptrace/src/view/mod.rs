//! The snapshot and its renderings: `watch`'s table ([`table`]), the `top` screen
//! ([`tui`]), both from one column table (`columns`); JSON lines ([`json`]), Prometheus
//! metrics ([`metrics`]), the event log ([`events`]) and a run's HTML report with its
//! charts ([`report`]).
//!
//! A view reads a [`Snapshot`], never the ledger's connections: the ledger already keeps
//! the aggregates, a snapshot only takes the top rows of them. The snapshot is the output
//! contract itself ([`tcptrace_json::Snapshot`]: what `watch --json` prints, field for key).

use std::time::Duration;

pub use tcptrace_json::Snapshot;

use crate::{capacity::Capacity, ledger::Ledger};

mod columns;
pub mod events;
pub mod json;
pub mod metrics;
pub mod report;
pub mod table;
pub mod tui;

/// How far the counts can be trusted: see [`Snapshot::lost`] and [`Snapshot::drift`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    pub lost: u64,
    /// The last reconciliation's corrections.
    pub drift: u64,
    /// Every reconciliation's corrections since the run started.
    pub drift_total: u64,
    /// Namespaces the last reconciliation could not read.
    pub unreconciled: u64,
    /// Events the in-kernel filter kept out of the ring.
    pub filtered: u64,
}

/// The ledger's counts at one moment: its top `top` local ports and remote endpoints (all
/// of them when `top` is 0), the capacity rows (already cut to the top N by the tracker),
/// and what the views print around them.
#[must_use]
pub fn snapshot(
    ledger: &Ledger,
    backend: &str,
    elapsed: Duration,
    trust: Trust,
    top: usize,
    capacity: Capacity,
) -> Snapshot {
    Snapshot {
        backend: backend.to_owned(),
        elapsed_s: elapsed.as_secs_f64(),
        events: ledger.events_seen(),
        lost: trust.lost,
        drift: trust.drift,
        drift_total: trust.drift_total,
        unreconciled_netns: trust.unreconciled,
        filtered: trust.filtered,
        live: ledger.live() as u64,
        local_ports: ledger.top_local_ports(top),
        remote_endpoints: ledger.top_remote_endpoints(top),
        capacity_age_s: capacity.measured.map(|at| at.elapsed().as_secs_f64()),
        listeners: capacity.listeners,
        destinations: capacity.destinations,
        limits: capacity.limits,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::conn::Conn;
    use crate::ledger::LocalPortRow;

    /// A snapshot with IPv4 and IPv6 rows, shared by the view tests.
    pub(crate) fn sample() -> Snapshot {
        let mut ledger = Ledger::new();
        for (local, remote) in [
            ("10.0.0.1:8080", "10.0.0.2:40000"),
            ("10.0.0.1:8080", "10.0.0.3:40001"),
            ("10.0.0.1:8080", "10.0.0.3:40002"),
            ("[::1]:443", "[::1]:50000"),
            ("10.0.0.1:41000", "10.0.0.9:5432"),
        ] {
            ledger.open(Conn::new(7, local.parse().unwrap(), remote.parse().unwrap()));
        }
        snapshot(
            &ledger,
            "fentry",
            Duration::from_millis(12_345),
            Trust { lost: 3, drift: 1, drift_total: 5, unreconciled: 0, filtered: 4 },
            0,
            Capacity::default(),
        )
    }

    #[test]
    fn snapshot_takes_counts_and_top_rows() {
        let s = sample();
        assert_eq!((s.backend.as_str(), s.events, s.lost, s.drift, s.live), ("fentry", 0, 3, 1, 5));
        assert!((s.elapsed_s - 12.345).abs() < 1e-9);
        assert_eq!(s.local_ports.len(), 3);
        assert_eq!(s.local_ports[0], LocalPortRow { port: 8080, live: 3, remote_addrs: 2 });
        assert_eq!(s.remote_endpoints.len(), 5);

        let mut ledger = Ledger::new();
        ledger.open(Conn::new(7, "10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap()));
        ledger.open(Conn::new(7, "10.0.0.1:3".parse().unwrap(), "10.0.0.2:4".parse().unwrap()));
        let s =
            snapshot(&ledger, "kprobe", Duration::ZERO, Trust::default(), 1, Capacity::default());
        assert_eq!((s.live, s.local_ports.len(), s.remote_endpoints.len()), (2, 1, 1));
    }
}
