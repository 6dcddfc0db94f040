//! The output contract: `watch --json` and `events --json` lines as the tests read them
//! back, with the lookups and checks the tests make on them.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::{Expect, Tuple};

/// One `watch --json` line.
#[derive(Clone, Debug, Deserialize)]
pub struct Snapshot {
    pub elapsed_s: f64,
    pub backend: String,
    pub events: u64,
    pub lost: u64,
    pub drift: u64,
    /// Events the in-kernel filter kept out of the ring.
    pub filtered: u64,
    pub live: u64,
    pub local_ports: Vec<PortRow>,
    pub remote_endpoints: Vec<EndpointRow>,
    pub listeners: Vec<ListenerRow>,
    pub destinations: Vec<DestinationRow>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PortRow {
    pub port: u16,
    pub live: u64,
    pub remote_addrs: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EndpointRow {
    pub addr: IpAddr,
    pub port: u16,
    pub live: u64,
    pub local_ports: u64,
}

/// A server-side listener row of `watch --json` (the fields the tests check).
#[derive(Clone, Debug, Deserialize)]
pub struct ListenerRow {
    pub netns: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub live: u64,
    pub remote_addrs: u64,
    pub max_per_remote: u64,
    pub reuseport_sockets: u64,
    pub pids: Vec<u32>,
}

/// A client-side destination row of `watch --json` (the fields the tests check).
#[derive(Clone, Debug, Deserialize)]
pub struct DestinationRow {
    pub netns: u32,
    pub laddr: IpAddr,
    pub raddr: IpAddr,
    pub rport: u16,
    pub ports_in_use: u64,
    pub shared_ports: u64,
    pub range: u32,
    pub use_pct: f64,
    pub failed_connects: u64,
}

impl Snapshot {
    #[must_use]
    pub fn port(&self, port: u16) -> Option<&PortRow> {
        self.local_ports.iter().find(|r| r.port == port)
    }

    #[must_use]
    pub fn endpoint(&self, addr: SocketAddr) -> Option<&EndpointRow> {
        self.remote_endpoints.iter().find(|r| r.addr == addr.ip() && r.port == addr.port())
    }

    /// `Ok` when every expectation holds; otherwise every mismatch, one per line.
    pub fn check(&self, expect: &[Expect]) -> Result<(), String> {
        let mut wrong = String::new();
        for e in expect {
            match *e {
                Expect::Port { port, live, remote_addrs } => match self.port(port) {
                    Some(r) if r.live == live && r.remote_addrs == remote_addrs => {}
                    found => {
                        let _ = writeln!(
                            wrong,
                            "local port {port}: want live={live} remote_addrs={remote_addrs}, got {found:?}"
                        );
                    }
                },
                Expect::NoPort(port) => {
                    if let Some(r) = self.port(port) {
                        let _ = writeln!(wrong, "local port {port}: want no row, got {r:?}");
                    }
                }
                Expect::Endpoint { addr, live, local_ports } => match self.endpoint(addr) {
                    Some(r) if r.live == live && r.local_ports == local_ports => {}
                    found => {
                        let _ = writeln!(
                            wrong,
                            "remote endpoint {addr}: want live={live} local_ports={local_ports}, got {found:?}"
                        );
                    }
                },
                Expect::NoEndpoint(addr) => {
                    if let Some(r) = self.endpoint(addr) {
                        let _ = writeln!(wrong, "remote endpoint {addr}: want no row, got {r:?}");
                    }
                }
            }
        }
        if wrong.is_empty() { Ok(()) } else { Err(wrong) }
    }

    /// With `--top 0` every live connection has exactly one row in each table, so both
    /// tables must add up to `live`.
    pub fn check_totals(&self) -> Result<(), String> {
        let by_port: u64 = self.local_ports.iter().map(|r| r.live).sum();
        let by_endpoint: u64 = self.remote_endpoints.iter().map(|r| r.live).sum();
        if by_port == self.live && by_endpoint == self.live {
            Ok(())
        } else {
            Err(format!(
                "live={} but local_ports add up to {by_port} and remote_endpoints to {by_endpoint}",
                self.live
            ))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Connect,
    Accept,
    Close,
    ConnectFailed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

/// One `events --json` line.
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    pub event: EventKind,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub netns: u32,
    pub sock: String,
}

impl Event {
    /// The event's connection as seen from the socket it concerns.
    #[must_use]
    pub fn tuple(&self) -> Tuple {
        Tuple {
            local: SocketAddr::new(self.laddr, self.lport),
            peer: SocketAddr::new(self.raddr, self.rport),
        }
    }

    /// The socket's kernel address, from its `0x…` form.
    #[must_use]
    pub fn sock_addr(&self) -> Option<u64> {
        u64::from_str_radix(self.sock.strip_prefix("0x")?, 16).ok()
    }
}
