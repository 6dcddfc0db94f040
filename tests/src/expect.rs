//! Expectations: the rows a snapshot must (or must not) have, computed from the sockets a
//! test holds, and tallies of what it saw.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::{Tuple, canonical};

/// One row a snapshot must (or must not) have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Port { port: u16, live: u64, remote_addrs: u64 },
    NoPort(u16),
    Endpoint { addr: SocketAddr, live: u64, local_ports: u64 },
    NoEndpoint(SocketAddr),
}

/// The rows that the live connections `open` (every open end the test holds, client and
/// server alike) imply for the given listener ports and remote endpoints, straight from the
/// contract's definitions: a port's `live` counts connections with that local port and
/// `remote_addrs` their distinct peer IPs; an endpoint's `live` counts connections to it
/// and `local_ports` their distinct local port numbers. No live connection, no row.
#[must_use]
pub fn expected(open: &[Tuple], ports: &[u16], endpoints: &[SocketAddr]) -> Vec<Expect> {
    let mut rows = Vec::new();
    for &port in ports {
        let conns: Vec<&Tuple> = open.iter().filter(|t| t.local.port() == port).collect();
        let peers: BTreeSet<IpAddr> = conns.iter().map(|t| t.peer.ip()).collect();
        rows.push(if conns.is_empty() {
            Expect::NoPort(port)
        } else {
            Expect::Port { port, live: count(conns.len()), remote_addrs: count(peers.len()) }
        });
    }
    for &endpoint in endpoints {
        let endpoint = canonical(endpoint);
        let conns: Vec<&Tuple> = open.iter().filter(|t| t.peer == endpoint).collect();
        let local_ports: BTreeSet<u16> = conns.iter().map(|t| t.local.port()).collect();
        rows.push(if conns.is_empty() {
            Expect::NoEndpoint(endpoint)
        } else {
            Expect::Endpoint {
                addr: endpoint,
                live: count(conns.len()),
                local_ports: count(local_ports.len()),
            }
        });
    }
    rows
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Port { port, live, remote_addrs } => {
                write!(f, "port {port}: live={live} remote_addrs={remote_addrs}")
            }
            Self::NoPort(port) => write!(f, "port {port}: no row"),
            Self::Endpoint { addr, live, local_ports } => {
                write!(f, "endpoint {addr}: live={live} local_ports={local_ports}")
            }
            Self::NoEndpoint(addr) => write!(f, "endpoint {addr}: no row"),
        }
    }
}

pub(crate) fn count(n: usize) -> u64 {
    u64::try_from(n).expect("count fits u64")
}

/// Groups `items` by `key`, counting each group.
pub fn tally<T, K: Ord>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> BTreeMap<K, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(key(&item)).or_insert(0) += 1;
    }
    counts
}
