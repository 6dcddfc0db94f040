//! Test fixtures shared by the tests of `parse`, `judge` and `report`: expectations and
//! addresses from text, and observations built by hand.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::{
    Check, DestinationValues, Expectation, ListenerValues, Observation, PortValues, Report,
    Tolerance, TotalValues, expect::count,
};

pub(super) fn parse(expr: &str) -> Expectation {
    Expectation::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

pub(super) fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One observation, built by hand.
#[derive(Clone, Debug, Default)]
pub(super) struct Fake {
    pub(super) ports: HashMap<u16, PortValues>,
    pub(super) listeners: HashMap<SocketAddr, ListenerValues>,
    pub(super) destinations: HashMap<SocketAddr, DestinationValues>,
    pub(super) total: TotalValues,
    /// The listener and destination rows' refresh failed this time.
    pub(super) no_capacity_rows: bool,
}

impl Observation for Fake {
    fn lport(&self, port: u16) -> Option<PortValues> {
        self.ports.get(&port).copied()
    }
    fn listener(&self, addr: SocketAddr) -> Option<ListenerValues> {
        self.listeners.get(&addr).copied()
    }
    fn destination(&self, addr: SocketAddr) -> Option<DestinationValues> {
        self.destinations.get(&addr).copied()
    }
    fn total(&self) -> TotalValues {
        self.total
    }
    fn has_capacity_rows(&self) -> bool {
        !self.no_capacity_rows
    }
}

pub(super) const DST: &str = "127.0.0.5:9000";

/// `DST` with these ports in use, of a range of 100 (`None`: no live connection).
pub(super) fn dst_ports(values: &[Option<u64>]) -> Vec<Fake> {
    values
        .iter()
        .map(|v| {
            let mut f = Fake::default();
            if let Some(ports) = *v {
                f.destinations.insert(
                    sock(DST),
                    DestinationValues {
                        live: ports,
                        ports_in_use: ports,
                        use_pct: count(ports),
                        range: Some(100),
                    },
                );
            }
            f
        })
        .collect()
}

pub(super) fn run(exprs: &[&str], observations: &[Fake], tolerance: Tolerance) -> Report {
    let mut check = Check::new(exprs.iter().map(|e| parse(e)).collect(), tolerance);
    for o in observations {
        check.observe(o);
    }
    check.report(Duration::from_mins(1))
}

pub(super) fn totals(values: &[(u64, u64, Option<u64>)]) -> Vec<Fake> {
    values
        .iter()
        .map(|&(live, lost, drift)| Fake {
            total: TotalValues { live, lost, drift, files: None },
            ..Fake::default()
        })
        .collect()
}
