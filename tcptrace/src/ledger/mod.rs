//! The one owner of live counts: which connections are established and not yet closed by
//! the local application, and how they add up per local port and per remote endpoint.
//!
//! The per-port and per-endpoint aggregates are kept up to date on every open and close,
//! so a view never walks the connections: it only ranks the aggregates.
//!
//! Memory is what limits how many connections we can follow (the goal is millions), so
//! nothing here is allocated per connection: only flat hash tables (hashbrown, foldhash)
//! with small `Copy` keys that hash as one or two integers, and one fixed array over the
//! 65,536 local ports. IPv6 addresses are interned to 4-byte ids, so both families pay for
//! a 16-byte connection key; a remote endpoint with a single local port (the common case:
//! a client's ephemeral port seen from a server), and a local port with a single remote
//! address (a client's ephemeral port seen from the client), keep it inline rather than in
//! a table of their own.
//!
//! Speed comes from the same choices: an event costs a cache miss or two in every table it
//! touches once the tables outgrow the cache, so each event touches as few as it can (the
//! connection table, the port's array slot, and usually one endpoint table) and each table
//! once. The hasher is hashbrown's default, foldhash, seeded at random per process: the
//! keys come from the network (a peer picks its own address and port), and without the
//! seed it cannot precompute keys that collide; the port array is not hashed at all.
//!
//! Measured with a counting allocator
//! (`cargo bench -p tcptrace --bench ledger_memory`): 1,000,000 server ends from 125
//! addresses take 72 bytes of heap a connection, the demo's 2,000,000 ends 54, and
//! 1,000,000 connections from as many remote addresses 100 (IPv4) or 131 (IPv6), the port
//! array's fixed 1 MiB included. A table doubles once 7/8 full, so just after a growth the
//! figures are up to 8% higher (77, 58, 106, 141) and just before it about half.
//!
//! The parts: `key` is how a connection is stored (its compact 4-tuple, IPv6 addresses
//! interned), `aggregate` the per-port and per-endpoint counts, `rank` the top-N.

mod aggregate;
mod key;
mod rank;

use std::cmp::Reverse;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use self::aggregate::{Endpoint, Family, LocalPorts, RemoteKey};
use self::key::{AddrId, Interner, Key, Tuple};
use self::rank::top;
use crate::conn::{Conn, canonical_ip};
use crate::event::{Event, EventKind};

/// The ledger's aggregates are rows of the output contract, as `watch --json` prints them.
pub use tcptrace_json::{LocalPortRow, RemoteEndpointRow};

/// Events applied to the ledger, per kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    pub connect: u64,
    pub accept: u64,
    pub established: u64,
    pub close: u64,
    pub connect_failed: u64,
}

impl EventCounts {
    #[must_use]
    pub fn get(&self, kind: EventKind) -> u64 {
        match kind {
            EventKind::Connect => self.connect,
            EventKind::Accept => self.accept,
            EventKind::Established => self.established,
            EventKind::Close => self.close,
            EventKind::ConnectFailed => self.connect_failed,
        }
    }

    #[must_use]
    pub fn total(&self) -> u64 {
        self.connect + self.accept + self.established + self.close + self.connect_failed
    }
}

/// Live TCP connections, keyed by 4-tuple and network namespace, with their aggregates.
#[derive(Debug, Default)]
pub struct Ledger {
    v4: Family<Ipv4Addr>,
    /// IPv6 connections keyed by interned addresses (see [`Interner`]), so that their keys
    /// are as small as IPv4 ones.
    v6: Family<AddrId>,
    v6_addrs: Interner,
    /// Local port → live connections and distinct remote addresses. Shared by both
    /// families: a port's IPv4 and IPv6 remote addresses never coincide once
    /// canonicalised, so their distinct counts simply add up.
    ports: LocalPorts,
    seen: EventCounts,
    untracked_closes: u64,
}

impl Ledger {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `conn` live. Idempotent (a connection can be both seeded and seen by a hook
    /// during start-up); true if it became live now.
    pub fn open(&mut self, conn: Conn) -> bool {
        match Key::of(&conn) {
            Key::V4(t) => self.v4.open(t, &mut self.ports),
            Key::V6(t) => {
                // Two interner lookups, not four: a repeated open (rarer than a new one)
                // gives its two address uses back.
                let local = self.v6_addrs.acquire(t.local);
                let remote = self.v6_addrs.acquire(t.remote);
                let opened = self.v6.open(Tuple { local, remote, ..t.ports_of() }, &mut self.ports);
                if !opened {
                    self.v6_addrs.release(local);
                    self.v6_addrs.release(remote);
                }
                opened
            }
        }
    }

    /// Marks `conn` closed; true if it was live. Closing a connection the ledger never saw
    /// (opened before the tracer started and missed by the seed) is a no-op.
    pub fn close(&mut self, conn: &Conn) -> bool {
        match Key::of(conn) {
            Key::V4(t) => self.v4.close(&t, &mut self.ports),
            Key::V6(t) => {
                let Some(key) = self.v6_key(&t) else { return false };
                if !self.v6.close(&key, &mut self.ports) {
                    return false;
                }
                self.v6_addrs.release(key.local);
                self.v6_addrs.release(key.remote);
                true
            }
        }
    }

    /// The IPv6 table's key for `t`, if both its addresses are known.
    fn v6_key(&self, t: &Tuple<Ipv6Addr>) -> Option<Tuple<AddrId>> {
        let local = self.v6_addrs.get(t.local)?;
        let remote = self.v6_addrs.get(t.remote)?;
        Some(Tuple { local, remote, ..t.ports_of() })
    }

    /// Applies a hook event: connect, accept and established open the connection (opens
    /// are idempotent, so a connection seen both at its handshake and at `accept()` counts
    /// once), close closes it.
    pub fn apply(&mut self, ev: &Event) {
        match ev.kind {
            EventKind::Connect => {
                self.seen.connect += 1;
                self.open(ev.conn);
            }
            EventKind::Accept => {
                self.seen.accept += 1;
                self.open(ev.conn);
            }
            EventKind::Established => {
                self.seen.established += 1;
                self.open(ev.conn);
            }
            // No connection came to be; the capacity view counts it per destination.
            EventKind::ConnectFailed => self.seen.connect_failed += 1,
            EventKind::Close => {
                self.seen.close += 1;
                if !self.close(&ev.conn) {
                    self.untracked_closes += 1;
                }
            }
        }
    }

    /// Number of live connections.
    #[must_use]
    pub fn live(&self) -> usize {
        self.v4.conns.len() + self.v6.conns.len()
    }

    /// Every live connection (for reconciliation against the kernel's own table).
    pub fn conns(&self) -> impl Iterator<Item = Conn> + '_ {
        let v4 = self.v4.conns.iter().map(|t| t.conn(IpAddr::V4));
        let v6 = self.v6.conns.iter().map(|t| t.conn(|id| IpAddr::V6(self.v6_addrs.addr(id))));
        v4.chain(v6)
    }

    #[must_use]
    pub fn is_live(&self, conn: &Conn) -> bool {
        match Key::of(conn) {
            Key::V4(t) => self.v4.conns.contains(&t),
            Key::V6(t) => self.v6_key(&t).is_some_and(|key| self.v6.conns.contains(&key)),
        }
    }

    /// Events applied so far, all kinds.
    #[must_use]
    pub fn events_seen(&self) -> u64 {
        self.seen.total()
    }

    /// Events applied so far, per kind.
    #[must_use]
    pub fn event_counts(&self) -> EventCounts {
        self.seen
    }

    /// Close events for connections that were not live: opened before the tracer started
    /// and not seeded, or closed twice. A high number says the seed missed connections.
    #[must_use]
    pub fn untracked_closes(&self) -> u64 {
        self.untracked_closes
    }

    /// The live connections of one local port, if it has any.
    #[must_use]
    pub fn local_port(&self, port: u16) -> Option<LocalPortRow> {
        self.ports.get(port).map(|agg| agg.row(port))
    }

    /// The live connections to one remote endpoint, if it has any.
    #[must_use]
    pub fn remote_endpoint(&self, endpoint: SocketAddr) -> Option<RemoteEndpointRow> {
        let addr = canonical_ip(endpoint.ip());
        let ep = match addr {
            IpAddr::V4(ip) => self.v4.endpoints.get(&RemoteKey(ip, endpoint.port())),
            IpAddr::V6(ip) => {
                self.v6.endpoints.get(&RemoteKey(self.v6_addrs.get(ip)?, endpoint.port()))
            }
        }?;
        Some(RemoteEndpointRow {
            addr,
            port: endpoint.port(),
            live: u64::from(ep.live),
            local_ports: u64::from(ep.distinct),
        })
    }

    /// The most live connections on local port `port` from any one remote address. Scans
    /// the per-(port, remote address) counts: meant for the few ports a check names.
    #[must_use]
    pub fn max_per_remote(&self, port: u16) -> u64 {
        let most = match self.ports.get(port) {
            None => 0,
            // A single remote address has all of the port's connections.
            Some(agg) if agg.distinct == 1 => agg.live,
            Some(_) => {
                let counts = self.ports.remotes.iter().filter(|(k, _)| k.port == port);
                counts.map(|(_, &n)| n).max().unwrap_or(0)
            }
        };
        u64::from(most)
    }

    /// The `n` local ports with the most live connections (all of them when `n` is 0),
    /// most first, ties by port number.
    #[must_use]
    pub fn top_local_ports(&self, n: usize) -> Vec<LocalPortRow> {
        let rows = self.ports.iter().map(|(port, agg)| agg.row(port));
        top(rows, n, |r| (Reverse(r.live), r.port))
    }

    /// The `n` remote endpoints with the most live connections (all of them when `n` is
    /// 0), most first, ties by address then port.
    #[must_use]
    pub fn top_remote_endpoints(&self, n: usize) -> Vec<RemoteEndpointRow> {
        let row = |addr: IpAddr, port: u16, ep: &Endpoint| RemoteEndpointRow {
            addr,
            port,
            live: u64::from(ep.live),
            local_ports: u64::from(ep.distinct),
        };
        let v4 =
            self.v4.endpoints.iter().map(|(&RemoteKey(ip, port), ep)| row(ip.into(), port, ep));
        let v6 = self
            .v6
            .endpoints
            .iter()
            .map(|(&RemoteKey(id, port), ep)| row(self.v6_addrs.addr(id).into(), port, ep));
        top(v4.chain(v6), n, |r| (Reverse(r.live), r.addr, r.port))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use hashbrown::{HashMap, HashSet};

    use super::aggregate::{PortAggregate, PortRemote};
    use super::*;

    const NS: u32 = 4_026_531_840;

    pub(super) fn conn(local: &str, remote: &str) -> Conn {
        conn_in(NS, local, remote)
    }

    fn conn_in(netns: u32, local: &str, remote: &str) -> Conn {
        Conn::new(netns, local.parse().unwrap(), remote.parse().unwrap())
    }

    fn port_row(port: u16, live: u64, remote_addrs: u64) -> LocalPortRow {
        LocalPortRow { port, live, remote_addrs }
    }

    fn endpoint_row(addr: &str, port: u16, live: u64, local_ports: u64) -> RemoteEndpointRow {
        RemoteEndpointRow { addr: addr.parse().unwrap(), port, live, local_ports }
    }

    fn event(kind: EventKind, c: Conn) -> Event {
        Event { kind, conn: c, sock: 1, ts_ns: 2, pid: 3, tid: 3, comm: "t".into() }
    }

    /// Recomputes the aggregates from scratch, to check the incremental ones against.
    fn rescan(open: &[Conn]) -> (Vec<LocalPortRow>, Vec<RemoteEndpointRow>) {
        let mut ports: HashMap<u16, (u64, HashSet<IpAddr>)> = HashMap::new();
        let mut endpoints: HashMap<SocketAddr, (u64, HashSet<u16>)> = HashMap::new();
        for c in open.iter().collect::<HashSet<_>>() {
            let p = ports.entry(c.local.port()).or_default();
            p.0 += 1;
            p.1.insert(c.remote.ip());
            let e = endpoints.entry(c.remote).or_default();
            e.0 += 1;
            e.1.insert(c.local.port());
        }
        let mut ports: Vec<_> = ports
            .into_iter()
            .map(|(port, (live, ips))| port_row(port, live, ips.len() as u64))
            .collect();
        ports.sort_by_key(|r| (Reverse(r.live), r.port));
        let mut endpoints: Vec<_> = endpoints
            .into_iter()
            .map(|(ep, (live, lports))| RemoteEndpointRow {
                addr: ep.ip(),
                port: ep.port(),
                live,
                local_ports: lports.len() as u64,
            })
            .collect();
        endpoints.sort_by_key(|r| (Reverse(r.live), r.addr, r.port));
        (ports, endpoints)
    }

    #[test]
    fn single_port_and_endpoint_lookups_match_the_top_rows() {
        let mut l = Ledger::new();
        for (local, remote) in [
            ("127.0.0.1:80", "127.0.0.2:40000"),
            ("127.0.0.1:80", "127.0.0.2:40001"),
            ("127.0.0.1:80", "127.0.0.3:40000"),
            ("[::1]:80", "[::1]:40000"),
        ] {
            l.open(Conn::new(1, local.parse().unwrap(), remote.parse().unwrap()));
        }
        assert_eq!(l.local_port(80), l.top_local_ports(1).first().copied());
        assert_eq!(l.local_port(81), None);
        assert_eq!(l.max_per_remote(80), 2);
        assert_eq!(l.max_per_remote(81), 0);
        let ep = l.remote_endpoint("127.0.0.2:40000".parse().unwrap()).unwrap();
        assert_eq!((ep.live, ep.local_ports), (1, 1));
        let mapped = l.remote_endpoint("[::ffff:127.0.0.2]:40000".parse().unwrap());
        assert_eq!(mapped, Some(ep), "IPv4-mapped addresses find the IPv4 row");
    }

    #[test]
    fn empty_ledger_has_no_rows() {
        let l = Ledger::new();
        assert_eq!(l.live(), 0);
        assert!(l.top_local_ports(0).is_empty());
        assert!(l.top_remote_endpoints(10).is_empty());
        assert_eq!(l.events_seen(), 0);
    }

    #[test]
    fn open_is_idempotent() {
        let mut l = Ledger::new();
        let c = conn("10.0.0.1:8080", "10.0.0.2:40000");
        assert!(l.open(c));
        assert!(!l.open(c));
        assert_eq!(l.live(), 1);
        assert!(l.is_live(&c));
        assert_eq!(l.top_local_ports(0), [port_row(8080, 1, 1)]);
        assert_eq!(l.top_remote_endpoints(0), [endpoint_row("10.0.0.2", 40000, 1, 1)]);
    }

    #[test]
    fn closing_an_unknown_connection_is_a_no_op() {
        let mut l = Ledger::new();
        let known = conn("10.0.0.1:8080", "10.0.0.2:40000");
        l.open(known);
        assert!(!l.close(&conn("10.0.0.1:8080", "10.0.0.2:40001")));
        assert!(!l.close(&conn_in(7, "10.0.0.1:8080", "10.0.0.2:40000")));
        assert_eq!(l.live(), 1);
        assert_eq!(l.top_local_ports(0), [port_row(8080, 1, 1)]);
        assert!(l.close(&known));
        assert!(!l.close(&known));
        assert_eq!(l.live(), 0);
    }

    #[test]
    fn last_close_removes_port_and_endpoint() {
        let mut l = Ledger::new();
        let a = conn("10.0.0.1:8080", "10.0.0.2:40000");
        let b = conn("10.0.0.1:8080", "10.0.0.3:40000");
        l.open(a);
        l.open(b);
        l.close(&a);
        l.close(&b);
        assert!(l.top_local_ports(0).is_empty());
        assert!(l.top_remote_endpoints(0).is_empty());
        assert!(l.ports.is_empty() && l.ports.remotes.is_empty());
        assert!(l.v4.endpoints.is_empty() && l.v4.endpoint_ports.is_empty());
    }

    #[test]
    fn distinct_remote_addrs_per_port_go_up_and_down() {
        let mut l = Ledger::new();
        let a1 = conn("10.0.0.1:8080", "10.0.0.2:40000");
        let a2 = conn("10.0.0.1:8080", "10.0.0.2:40001");
        let b = conn("10.0.0.1:8080", "10.0.0.3:40000");
        l.open(a1);
        l.open(a2);
        assert_eq!(l.top_local_ports(0), [port_row(8080, 2, 1)]);
        l.open(b);
        assert_eq!(l.top_local_ports(0), [port_row(8080, 3, 2)]);
        l.close(&a1);
        assert_eq!(l.top_local_ports(0), [port_row(8080, 2, 2)]);
        l.close(&b);
        assert_eq!(l.top_local_ports(0), [port_row(8080, 1, 1)]);
    }

    #[test]
    fn distinct_local_ports_per_endpoint_go_up_and_down() {
        let mut l = Ledger::new();
        let db = "10.0.0.9:5432";
        // The same local port twice: from two local addresses, and from another netns.
        let a = conn("10.0.0.1:40000", db);
        let a_other_ip = conn("10.0.0.5:40000", db);
        let a_other_ns = conn_in(7, "10.0.0.1:40000", db);
        let b = conn("10.0.0.1:40001", db);
        for c in [a, a_other_ip, a_other_ns] {
            l.open(c);
        }
        assert_eq!(l.top_remote_endpoints(0), [endpoint_row("10.0.0.9", 5432, 3, 1)]);
        l.open(b);
        assert_eq!(l.top_remote_endpoints(0), [endpoint_row("10.0.0.9", 5432, 4, 2)]);
        l.close(&a);
        l.close(&a_other_ns);
        assert_eq!(l.top_remote_endpoints(0), [endpoint_row("10.0.0.9", 5432, 2, 2)]);
        l.close(&a_other_ip);
        assert_eq!(l.top_remote_endpoints(0), [endpoint_row("10.0.0.9", 5432, 1, 1)]);
    }

    #[test]
    fn ports_and_endpoints_aggregate_across_namespaces() {
        let mut l = Ledger::new();
        l.open(conn_in(1, "10.0.0.1:8080", "10.0.0.2:40000"));
        l.open(conn_in(2, "10.0.0.1:8080", "10.0.0.2:40000"));
        assert_eq!(l.live(), 2);
        assert_eq!(l.top_local_ports(0), [port_row(8080, 2, 1)]);
        assert_eq!(l.top_remote_endpoints(0), [endpoint_row("10.0.0.2", 40000, 2, 1)]);
    }

    #[test]
    fn ipv6_and_mapped_ipv4() {
        let mut l = Ledger::new();
        l.open(conn("[::1]:8080", "[::1]:40000"));
        l.open(conn("[2001:db8::1]:8080", "[2001:db8::2]:40000"));
        // A dual-stack listener's IPv4 client: the same remote address as a plain IPv4 one.
        l.open(conn("[::ffff:10.0.0.1]:8080", "[::ffff:10.0.0.2]:40000"));
        l.open(conn("10.0.0.1:8080", "10.0.0.2:40001"));
        assert_eq!(l.live(), 4);
        assert_eq!(l.v4.conns.len(), 2);
        assert_eq!(l.top_local_ports(0), [port_row(8080, 4, 3)]);
        assert_eq!(
            l.top_remote_endpoints(0),
            [
                endpoint_row("10.0.0.2", 40000, 1, 1),
                endpoint_row("10.0.0.2", 40001, 1, 1),
                endpoint_row("::1", 40000, 1, 1),
                endpoint_row("2001:db8::2", 40000, 1, 1),
            ]
        );
        // A close reported in mapped form finds the connection opened in plain form.
        let mapped = Conn {
            netns: NS,
            local: "[::ffff:10.0.0.1]:8080".parse().unwrap(),
            remote: "[::ffff:10.0.0.2]:40001".parse().unwrap(),
        };
        assert!(l.close(&mapped));
        assert!(l.close(&conn("[::1]:8080", "[::1]:40000")));
        assert_eq!(l.top_local_ports(0), [port_row(8080, 2, 2)]);
    }

    #[test]
    fn mixed_family_pair_is_counted_and_closed() {
        let mut l = Ledger::new();
        let c = Conn {
            netns: NS,
            local: "[2001:db8::1]:8080".parse().unwrap(),
            remote: "10.0.0.2:40000".parse().unwrap(),
        };
        assert!(l.open(c));
        assert_eq!(l.live(), 1);
        assert_eq!(l.top_local_ports(0), [port_row(8080, 1, 1)]);
        assert!(l.close(&c));
        assert_eq!(l.live(), 0);
    }

    #[test]
    fn ties_are_ordered_by_key() {
        let mut l = Ledger::new();
        for (local, remote) in [
            ("10.0.0.1:9000", "10.0.0.7:1"),
            ("10.0.0.1:80", "10.0.0.7:2"),
            ("10.0.0.1:443", "10.0.0.3:1"),
            ("10.0.0.1:443", "10.0.0.3:2"),
            ("[::1]:22", "[::1]:2"),
            ("10.0.0.1:22", "10.0.0.7:2"),
        ] {
            l.open(conn(local, remote));
        }
        let ports: Vec<u16> = l.top_local_ports(0).iter().map(|r| r.port).collect();
        assert_eq!(ports, [22, 443, 80, 9000]);
        let eps: Vec<(String, u16, u64)> = l
            .top_remote_endpoints(0)
            .iter()
            .map(|r| (r.addr.to_string(), r.port, r.live))
            .collect();
        // Most live first; among equals by address (IPv4 before IPv6), then port.
        let expected: Vec<(String, u16, u64)> = [
            ("10.0.0.7", 2, 2),
            ("10.0.0.3", 1, 1),
            ("10.0.0.3", 2, 1),
            ("10.0.0.7", 1, 1),
            ("::1", 2, 1),
        ]
        .iter()
        .map(|&(a, p, n)| (a.to_string(), p, n))
        .collect();
        assert_eq!(eps, expected);
    }

    #[test]
    fn top_n_truncates_and_zero_means_all() {
        let mut l = Ledger::new();
        for port in 1..=50u16 {
            for i in 0..port % 7 {
                l.open(conn(&format!("10.0.0.1:{port}"), &format!("10.0.1.{i}:{}", 1000 + port)));
            }
        }
        let all = l.top_local_ports(0);
        assert_eq!(all.len(), l.ports.len());
        for n in [1, 3, 10, all.len(), all.len() + 5] {
            assert_eq!(l.top_local_ports(n), all[..n.min(all.len())]);
        }
        let all = l.top_remote_endpoints(0);
        assert_eq!(l.top_remote_endpoints(4), all[..4]);
    }

    #[test]
    fn incremental_aggregates_match_a_rescan() {
        // A deterministic pseudo-random mix of opens and closes over a small key space, so
        // that ports, addresses and endpoints collide often.
        let mut l = Ledger::new();
        let mut open: Vec<Conn> = Vec::new();
        let mut x: u32 = 12345;
        let mut next = |m: u32| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) % m
        };
        for step in 0..3000 {
            let (lp, rip, rp, ns, v6) = (next(4), next(3), next(3), next(2), next(4) == 0);
            let (local, remote) = if v6 {
                (format!("[fd00::1]:{}", 80 + lp), format!("[fd00::{}]:{}", rip + 2, 5000 + rp))
            } else {
                (format!("10.0.0.1:{}", 80 + lp), format!("10.0.1.{rip}:{}", 5000 + rp))
            };
            let c = conn_in(ns, &local, &remote);
            if next(5) < 3 {
                assert_eq!(l.open(c), !open.contains(&c));
                if !open.contains(&c) {
                    open.push(c);
                }
            } else {
                assert_eq!(l.close(&c), open.contains(&c));
                open.retain(|o| *o != c);
            }
            if step % 50 == 0 {
                let (ports, endpoints) = rescan(&open);
                assert_eq!(l.top_local_ports(0), ports, "step {step}");
                assert_eq!(l.top_remote_endpoints(0), endpoints, "step {step}");
                // Per-local-port counts are kept only for endpoints with several.
                let spilled: usize = endpoints
                    .iter()
                    .filter(|r| r.local_ports > 1)
                    .map(|r| r.local_ports as usize)
                    .sum();
                assert_eq!(l.v4.endpoint_ports.len() + l.v6.endpoint_ports.len(), spilled);
                // Likewise per-remote-address counts, for ports with several only.
                let spilled: usize = ports
                    .iter()
                    .filter(|r| r.remote_addrs > 1)
                    .map(|r| r.remote_addrs as usize)
                    .sum();
                assert_eq!(l.ports.remotes.len(), spilled);
                for r in &ports {
                    let mut per_remote: HashMap<IpAddr, u64> = HashMap::new();
                    for c in open.iter().filter(|c| c.local.port() == r.port) {
                        *per_remote.entry(c.remote.ip()).or_default() += 1;
                    }
                    let most = per_remote.values().copied().max();
                    assert_eq!(l.max_per_remote(r.port), most.unwrap_or(0), "step {step}");
                }
            }
            assert_eq!(l.live(), open.len());
        }
    }

    #[test]
    fn apply_counts_events_per_kind() {
        let mut l = Ledger::new();
        let a = conn("10.0.0.1:40000", "10.0.0.2:443");
        let b = conn("10.0.0.1:8080", "10.0.0.3:50000");
        l.apply(&event(EventKind::Connect, a));
        l.apply(&event(EventKind::Accept, b));
        l.apply(&event(EventKind::Accept, b));
        assert_eq!(l.live(), 2);
        l.apply(&event(EventKind::Close, a));
        l.apply(&event(EventKind::Close, conn("10.0.0.1:1", "10.0.0.2:2")));
        assert_eq!(l.live(), 1);
        assert!(l.is_live(&b));
        let counts = l.event_counts();
        assert_eq!((counts.connect, counts.accept, counts.close), (1, 2, 2));
        assert_eq!(counts.get(EventKind::Accept), 2);
        assert_eq!(l.events_seen(), 5);
        assert_eq!(l.untracked_closes(), 1);
    }

    #[test]
    fn compact_keys_stay_small() {
        assert_eq!(size_of::<Tuple<Ipv4Addr>>(), 16);
        assert_eq!(size_of::<Tuple<AddrId>>(), 16);
        assert_eq!(size_of::<(RemoteKey<Ipv4Addr>, Endpoint)>(), 16);
        assert_eq!(size_of::<(PortRemote, u32)>(), 12);
        assert_eq!(size_of::<PortAggregate>(), 16);
    }
}
