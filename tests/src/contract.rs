//! The output contract as the tests read it back: the types of `tcptrace-json` (the one
//! definition of the `watch --json` and `events --json` lines, shared with the binary that
//! prints them), with the lookups and checks the tests make on them.

use std::fmt::Write as _;
use std::net::SocketAddr;

pub use tcptrace_json::{
    DestinationRow, EventKind, EventLine, Family, ListenerRow, LocalPortRow, RemoteEndpointRow,
    Snapshot,
};

use crate::{Expect, Tuple};

/// What the tests look up in and check against one `watch --json` line.
pub trait SnapshotExt {
    /// The row of local port `port`, if any.
    #[must_use]
    fn port(&self, port: u16) -> Option<&LocalPortRow>;

    /// The row of remote endpoint `addr`, if any.
    #[must_use]
    fn endpoint(&self, addr: SocketAddr) -> Option<&RemoteEndpointRow>;

    /// `Ok` when every expectation holds; otherwise every mismatch, one per line.
    fn check(&self, expect: &[Expect]) -> Result<(), String>;

    /// With `--top 0` every live connection has exactly one row in each table, so both
    /// tables must add up to `live`.
    fn check_totals(&self) -> Result<(), String>;
}

impl SnapshotExt for Snapshot {
    fn port(&self, port: u16) -> Option<&LocalPortRow> {
        self.local_ports.iter().find(|r| r.port == port)
    }

    fn endpoint(&self, addr: SocketAddr) -> Option<&RemoteEndpointRow> {
        self.remote_endpoints.iter().find(|r| r.addr == addr.ip() && r.port == addr.port())
    }

    fn check(&self, expect: &[Expect]) -> Result<(), String> {
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

    fn check_totals(&self) -> Result<(), String> {
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

/// What the tests read from one `events --json` line.
pub trait EventLineExt {
    /// The event's connection as seen from the socket it concerns.
    #[must_use]
    fn tuple(&self) -> Tuple;

    /// The socket's kernel address, from its `0x…` form.
    #[must_use]
    fn sock_addr(&self) -> Option<u64>;
}

impl EventLineExt for EventLine {
    fn tuple(&self) -> Tuple {
        Tuple {
            local: SocketAddr::new(self.laddr, self.lport),
            peer: SocketAddr::new(self.raddr, self.rport),
        }
    }

    fn sock_addr(&self) -> Option<u64> {
        u64::from_str_radix(self.sock.strip_prefix("0x")?, 16).ok()
    }
}
