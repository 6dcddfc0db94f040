//! Harness for the live integration tests: runs the real `tcptrace` binary against TCP
//! connections that the tests open themselves, inside network namespaces they create.
//!
//! The tracer sees the whole machine, so every test works in its own namespace, on its own
//! 127.x.y.z addresses and its own listener ports (below the ephemeral range, which starts
//! at 32768), and computes every expected count from the sockets it holds.
//!
//! What lives where (everything is re-exported here, so tests `use tcptrace_tests::...`):
//! - `setup`: the waits, the binary under test ([`tracer_bin`]), the attach path
//!   ([`attach_path`]) and the once-per-process [`init`];
//! - `netns`: [`Netns`], a thread living in a fresh network namespace that creates sockets
//!   there;
//! - `conn`: [`connect`] (clients bound to a chosen source address) and [`Tuple`] (a
//!   connection as `ss` shows it);
//! - `server`: [`Server`], listeners that accept every connection;
//! - `handshake`: what sits between the moments a connection becomes and stops being live:
//!   listeners nobody accepts from ([`listen_unaccepted`]), connects left in `SYN_SENT`
//!   ([`start_connect`]), resets, TCP Fast Open, the kernel's state of a socket
//!   ([`state_of`]) and its `/proc/net/netstat` counters ([`netstat`]);
//! - `tracer`: [`Tracer`], the binary as a child process, its JSON lines parsed as they
//!   arrive, and [`run_to_exit`];
//! - `contract`: [`Snapshot`] and [`EventLine`], the output contract (from `tcptrace-json`),
//!   with what the tests look up and check in them ([`SnapshotExt`], [`EventLineExt`]);
//! - `expect`: [`Expect`] and [`expected`], the rows the held sockets imply, and [`tally`];
//! - `serve` (not re-exported): `tcptrace serve` as a child process, and plain HTTP GETs.
//!
//! Environment: `TCPTRACE_BIN` (the binary), `TCPTRACE_ATTACH` (the attach path, default
//! `auto`). Run as root with `--test-threads=1`.

mod conn;
mod contract;
mod expect;
mod handshake;
pub mod limits;
mod netns;
pub mod serve;
mod server;
mod setup;
mod tracer;

pub use conn::{Tuple, canonical, connect, tuples};
pub use contract::{
    DestinationRow, EventKind, EventLine, EventLineExt, Family, ListenerRow, LocalPortRow,
    RemoteEndpointRow, Snapshot, SnapshotExt,
};
pub use expect::{Expect, expected, tally};
pub use handshake::{
    connect_fastopen, listen_unaccepted, netstat, reset, serve_fastopen, start_connect,
    start_connects, state_of, tcp_state, tuple_to, wait_state,
};
pub use netns::Netns;
pub use server::{Accepted, Server};
pub use setup::{ATTACH_WAIT, INTERVAL, WAIT, attach_path, init, tracer_bin};
pub use tracer::{Exit, RECONCILE_OFTEN, Tracer, run_to_exit, run_to_exit_during};

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::net::{IpAddr, SocketAddr};
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::expect::count;

    /// The harness itself, without the tracer: a namespace of its own with `lo` up, both
    /// loopback families, tuples as `ss` shows them, and expectations from them.
    #[test]
    fn namespace_connections_and_expectations() {
        let root_ns = fs::metadata("/proc/self/ns/net").expect("stat").ino();
        let ns = Netns::new("ns-harness");
        assert_ne!(u64::from(ns.inode()), root_ns, "a namespace of its own");
        assert_eq!(ns.comm(), "ns-harness");

        let listen: IpAddr = "127.70.0.1".parse().unwrap();
        let v4 = Server::listen(&ns, SocketAddr::new(listen, 21071), Accepted::Hold);
        let dual = Server::listen(&ns, "[::]:21072".parse().unwrap(), Accepted::Hold);
        let mut clients = connect(&ns, "127.70.0.2".parse().unwrap(), v4.addr(), 3);
        clients.extend(connect(&ns, "127.70.0.3".parse().unwrap(), v4.addr(), 1));
        clients.extend(connect(&ns, "::1".parse().unwrap(), "[::1]:21072".parse().unwrap(), 2));
        clients.extend(connect(
            &ns,
            "127.70.0.4".parse().unwrap(),
            SocketAddr::new(listen, 21072),
            1,
        ));
        v4.wait_accepted(4);
        dual.wait_accepted(3);
        assert!(dual.open().iter().any(|t| t.peer.ip() == "127.70.0.4".parse::<IpAddr>().unwrap()));

        let mut open = tuples(&clients);
        open.extend(v4.open());
        open.extend(dual.open());
        let endpoint = SocketAddr::new(listen, 21071);
        let ports: BTreeSet<u16> =
            clients[..4].iter().map(|c| c.local_addr().unwrap().port()).collect();
        let rows = expected(&open, &[21071, 21072, 21073], &[endpoint]);
        assert_eq!(
            rows,
            [
                Expect::Port { port: 21071, live: 4, remote_addrs: 2 },
                Expect::Port { port: 21072, live: 3, remote_addrs: 2 },
                Expect::NoPort(21073),
                Expect::Endpoint { addr: endpoint, live: 4, local_ports: count(ports.len()) },
            ]
        );
        let closed = v4.close_where(|t| t.peer.ip() == "127.70.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(closed.len(), 3);
        assert_eq!(v4.open().len(), 1);
    }
}
