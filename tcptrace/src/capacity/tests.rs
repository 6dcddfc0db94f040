use std::fs;
use std::io::Read as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::thread;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, connect, listen, setsockopt,
    socket, sockopt,
};

use super::*;
use crate::conn::Conn;
use crate::sockdiag;

// ---- pure ----

#[test]
fn range_minus_reserved_ports() {
    let r = EphemeralRange::parse("32768\t60999\n", "\n").unwrap();
    assert_eq!((r.low, r.high, r.size()), (32_768, 60_999, 28_232));
    let r = EphemeralRange::parse("8000 9999", "8080,9000-9010\n").unwrap();
    assert_eq!(r.reserved, vec![8080..=8080, 9000..=9010]);
    assert_eq!(r.size(), 2000 - 1 - 11);
    // Outside the range, overlapping, adjacent, unsorted.
    let r =
        EphemeralRange::parse("40000 40099", "1-39999,40098-41000,40010-40020,40015-40025,40026")
            .unwrap();
    assert_eq!(r.reserved, vec![40010..=40026, 40098..=40099]);
    assert_eq!(r.size(), 100 - 17 - 2);
    assert_eq!(EphemeralRange::parse("5 5", "5").unwrap().size(), 0);
    assert_eq!(EphemeralRange::parse("1 65535", "").unwrap().size(), 65_535);
    for (range, reserved) in
        [("60999 32768", ""), ("1", ""), ("1 2 3", ""), ("a 5", ""), ("1 9", "3-x")]
    {
        assert!(EphemeralRange::parse(range, reserved).is_err(), "{range:?} {reserved:?}");
    }
}

#[test]
#[expect(clippy::float_cmp, reason = "exact results of exact inputs")]
fn percentages_rates_and_exhaustion() {
    assert_eq!(use_pct(25, 100), 25.0);
    assert_eq!(use_pct(95, 95), 100.0);
    assert_eq!(use_pct(0, 0), 0.0);
    assert_eq!(use_pct(1, 0), 100.0);
    assert_eq!(rate(10, Duration::from_secs(4)), 2.5);
    assert_eq!(rate(10, Duration::ZERO), 0.0);
    assert_eq!(exhaustion_s(100, 4.0), Some(25.0));
    assert_eq!(exhaustion_s(0, 4.0), Some(0.0));
    assert_eq!(exhaustion_s(100, 0.0), None);
    assert!(states::holds_port(tcp_state::TIME_WAIT) && states::holds_port(tcp_state::SYN_SENT));
    assert!(!states::holds_port(tcp_state::LISTEN) && !states::holds_port(tcp_state::SYN_RECV));
    assert!(!states::holds_port(200));
}

#[test]
fn top_keeps_the_best_sorted() {
    let mut rows = vec![5, 1, 9, 3, 7];
    top_by(&mut rows, 3, |a, b| b.cmp(a));
    assert_eq!(rows, [9, 7, 5]);
    let mut rows = vec![5, 1, 9];
    top_by(&mut rows, 0, Ord::cmp);
    assert_eq!(rows, [1, 5, 9]);
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn sock(netns: u32, state: u8, local: &str, remote: &str, inode: u32) -> TcpSocket {
    TcpSocket {
        conn: Conn::new(netns, sa(local), sa(remote)),
        state,
        inode,
        cgroup: 0,
        rqueue: 0,
        wqueue: 0,
        memory: None,
    }
}

fn event(kind: EventKind, netns: u32, local: &str, remote: &str) -> Event {
    Event {
        kind,
        conn: Conn::new(netns, sa(local), sa(remote)),
        sock: 1,
        ts_ns: 0,
        pid: 1,
        tid: 1,
        comm: "t".into(),
    }
}

fn range(low: u16, high: u16) -> EphemeralRange {
    EphemeralRange { low, high, reserved: vec![] }
}

#[test]
fn rows_count_only_what_passes_the_filter() {
    use tcp_state::{ESTABLISHED, LISTEN};
    let mut sockets = vec![
        sock(7, LISTEN, "0.0.0.0:8080", "0.0.0.0:0", 11),
        sock(7, LISTEN, "0.0.0.0:9090", "0.0.0.0:0", 13),
        sock(7, ESTABLISHED, "10.0.0.1:8080", "10.0.0.2:40000", 0),
        sock(7, ESTABLISHED, "10.0.0.1:8080", "10.0.0.3:40000", 0),
        sock(7, ESTABLISHED, "10.0.0.1:9090", "10.0.0.4:40000", 0),
        sock(7, ESTABLISHED, "10.0.0.1:50000", "10.0.0.9:443", 0),
        sock(7, ESTABLISHED, "10.0.0.1:50001", "10.0.0.9:80", 0),
    ];
    sockets.sort_unstable_by_key(|s| s.conn);
    let dumps =
        [NetnsDump { netns: 7, sockets, range: Some(Ok(range(50_000, 50_099))), readings: None }];
    let rows = |filter: Filter| {
        let passes = |s: &TcpSocket| filter.matches_socket(&s.conn, s.cgroup, || false);
        let c = Tracker::default().tally(
            &dumps,
            &BoxReadings::default(),
            &passes,
            &HashMap::new(),
            Instant::now(),
            0,
        );
        let listeners: Vec<(u16, u64)> = c.listeners.iter().map(|l| (l.port, l.live)).collect();
        let destinations: Vec<(u16, u64)> =
            c.destinations.iter().map(|d| (d.rport, d.ports_in_use)).collect();
        (listeners, destinations)
    };
    let everything = rows(Filter::default());
    assert_eq!(everything.0, [(8080, 2), (9090, 1)]);
    assert_eq!(everything.1.len(), 2);
    let lport = rows(Filter { lport: vec![8080], ..Filter::default() });
    assert_eq!(lport, (vec![(8080, 2)], vec![]), "the client side uses other local ports");
    // A listener has no remote end: under --addr it shows for its matching connections
    // only, and the other one not at all; an accepted connection never becomes a client.
    let addr = rows(Filter { addr: vec!["10.0.0.3".parse().unwrap()], ..Filter::default() });
    assert_eq!(addr, (vec![(8080, 1)], vec![]));
    let rport = rows(Filter { rport: vec![443], ..Filter::default() });
    assert_eq!(rport, (vec![], vec![(443, 1)]));
    let other_netns = rows(Filter { netns: vec![8], ..Filter::default() });
    assert_eq!(other_netns, (vec![], vec![]));
}

#[test]
fn tally_splits_server_and_client_sides() {
    use tcp_state::{CLOSE_WAIT, ESTABLISHED, FIN_WAIT2, LAST_ACK, LISTEN, SYN_SENT, TIME_WAIT};
    const NS: u32 = 7;
    let mut sockets = vec![
        // A wildcard SO_REUSEPORT pair, a dual-stack listener, and one on an address.
        sock(NS, LISTEN, "0.0.0.0:8080", "0.0.0.0:0", 11),
        sock(NS, LISTEN, "0.0.0.0:8080", "0.0.0.0:0", 12),
        sock(NS, LISTEN, "[::]:9090", "[::]:0", 13),
        sock(NS, LISTEN, "10.0.0.1:7070", "0.0.0.0:0", 14),
        // Server side of 8080: 3 from .2, 1 from .3 live; TIME_WAIT and LAST_ACK are not.
        sock(NS, ESTABLISHED, "10.0.0.1:8080", "10.0.0.2:40000", 0),
        sock(NS, ESTABLISHED, "10.0.0.1:8080", "10.0.0.2:40001", 0),
        sock(NS, CLOSE_WAIT, "10.0.0.1:8080", "10.0.0.2:40002", 0),
        sock(NS, ESTABLISHED, "10.0.0.1:8080", "10.0.0.3:40000", 0),
        sock(NS, TIME_WAIT, "10.0.0.1:8080", "10.0.0.3:40001", 0),
        sock(NS, LAST_ACK, "10.0.0.1:8080", "10.0.0.3:40002", 0),
        // An IPv4 client of the dual-stack listener, and an IPv6 one.
        sock(NS, ESTABLISHED, "10.0.0.1:9090", "10.0.0.4:1", 0),
        sock(NS, ESTABLISHED, "[fd00::1]:9090", "[fd00::2]:1", 0),
        // Client side: to 10.0.0.9:443, 4 ports in use; one also used towards :80.
        sock(NS, ESTABLISHED, "10.0.0.1:50000", "10.0.0.9:443", 0),
        sock(NS, SYN_SENT, "10.0.0.1:50001", "10.0.0.9:443", 0),
        sock(NS, TIME_WAIT, "10.0.0.1:50002", "10.0.0.9:443", 0),
        sock(NS, FIN_WAIT2, "10.0.0.1:50003", "10.0.0.9:443", 0),
        sock(NS, ESTABLISHED, "10.0.0.1:50000", "10.0.0.9:80", 0),
        // 7070 listens on 10.0.0.1 only: a connection from another local address with
        // that port number is a client.
        sock(NS, ESTABLISHED, "10.0.0.5:7070", "10.0.0.9:80", 0),
    ];
    sockets.sort_unstable_by_key(|s| s.conn);
    let other = vec![sock(8, ESTABLISHED, "10.0.0.1:50000", "10.0.0.9:443", 0)];
    let dumps = [
        NetnsDump { netns: NS, sockets, range: Some(Ok(range(50_000, 50_099))), readings: None },
        NetnsDump { netns: 8, sockets: other, range: Some(Err("gone".into())), readings: None },
    ];
    let mut t = Tracker::default();
    let t0 = t.counting_since;
    for _ in 0..6 {
        t.on_event(&event(EventKind::Accept, NS, "10.0.0.1:8080", "10.0.0.2:1"));
    }
    // Without namespace ids: resolved through the address and port.
    t.on_event(&event(EventKind::Accept, 0, "10.0.0.1:9090", "10.0.0.4:1"));
    t.on_event(&event(EventKind::Close, NS, "10.0.0.1:8080", "10.0.0.3:40001"));
    t.on_event(&event(EventKind::Established, NS, "10.0.0.1:8080", "10.0.0.2:1"));
    for _ in 0..4 {
        t.on_event(&event(EventKind::Connect, NS, "10.0.0.1:50000", "10.0.0.9:443"));
    }
    let pids = HashMap::from([(11, vec![100]), (12, vec![100, 101]), (14, vec![102])]);
    let c =
        t.tally(&dumps, &BoxReadings::default(), &|_| true, &pids, t0 + Duration::from_secs(2), 0);

    let by_port = |port| c.listeners.iter().find(|l| l.port == port).unwrap();
    let l = by_port(8080);
    assert_eq!(l.addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!((l.live, l.remote_addrs, l.max_per_remote, l.peak_live), (4, 2, 3, 4));
    assert_eq!((l.accept_rate, l.close_rate), (3.0, 0.5));
    assert_eq!((l.reuseport_sockets, l.pids.as_slice()), (2, &[100, 101][..]));
    let l = by_port(9090);
    assert_eq!((l.live, l.remote_addrs, l.accept_rate, l.reuseport_sockets), (2, 2, 0.5, 1));
    let l = by_port(7070);
    assert_eq!((l.live, l.pids.as_slice()), (0, &[102][..]));
    assert_eq!(c.listeners[0].port, 8080, "most live first");

    assert_eq!(c.destinations.len(), 4);
    let d = &c.destinations[0];
    assert_eq!((d.netns, d.rport, d.ports_in_use, d.range), (NS, 443, 4, 100));
    assert_eq!((d.use_pct, d.connect_rate, d.exhaustion_s), (4.0, 2.0, None));
    let d = &c.destinations[3];
    assert_eq!((d.netns, d.ports_in_use, d.range), (8, 1, 28_232), "default range");
    assert_eq!(c.namespaces[0].shared_local_ports, 1);
    assert_eq!(c.shared_local_ports, 1);
    let shared: Vec<(u32, String, u16, u64)> = c
        .destinations
        .iter()
        .map(|d| (d.netns, d.laddr.to_string(), d.rport, d.shared_ports))
        .collect();
    assert!(
        shared.iter().all(|(ns, laddr, _, n)| *n == u64::from(*ns == NS && laddr == "10.0.0.1")),
        "10.0.0.1:50000 serves :443 and :80 in {NS} only: {shared:?}"
    );
    assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);

    // A second refresh 2 s later: 8080 down to 1 live (peak stays), 443 up by 12 ports.
    let mut sockets: Vec<TcpSocket> = dumps[0]
        .sockets
        .iter()
        .filter(|s| {
            s.state == LISTEN || s.conn.remote.ip() != "10.0.0.2".parse::<IpAddr>().unwrap()
        })
        .copied()
        .collect();
    sockets.extend(
        (0..12)
            .map(|i| sock(NS, TIME_WAIT, &format!("10.0.0.1:{}", 50_010 + i), "10.0.0.9:443", 0)),
    );
    let dumps =
        [NetnsDump { netns: NS, sockets, range: Some(Ok(range(50_000, 50_099))), readings: None }];
    let c =
        t.tally(&dumps, &BoxReadings::default(), &|_| true, &pids, t0 + Duration::from_secs(4), 0);
    let l = c.listeners.iter().find(|l| l.port == 8080).unwrap();
    assert_eq!((l.port, l.live, l.peak_live, l.accept_rate, l.close_rate), (8080, 1, 4, 0.0, 0.0));
    let d = &c.destinations[0];
    assert_eq!((d.rport, d.ports_in_use, d.connect_rate), (443, 16, 0.0));
    // 12 more ports in 2 s: 6 a second, 84 left.
    assert_eq!(d.exhaustion_s, Some(14.0));

    // Top 1 of each; no growth since, no estimate.
    let c =
        t.tally(&dumps, &BoxReadings::default(), &|_| true, &pids, t0 + Duration::from_secs(6), 1);
    assert_eq!((c.listeners.len(), c.destinations.len()), (1, 1));
    assert_eq!((c.listeners[0].port, c.listeners[0].live), (9090, 2));
    assert_eq!((c.destinations[0].rport, c.destinations[0].exhaustion_s), (443, None));
}

#[test]
fn failed_connects_stay_in_their_namespace_are_capped_and_forgotten() {
    use tcp_state::ESTABLISHED;
    // Both namespaces hold a port towards 10.0.0.9:443; only namespace 7 ran out.
    let dumps = |at_443: bool| {
        [7, 8].map(|netns| NetnsDump {
            netns,
            sockets: if at_443 {
                vec![sock(netns, ESTABLISHED, "10.0.0.1:50000", "10.0.0.9:443", 0)]
            } else {
                vec![]
            },
            range: Some(Ok(range(50_000, 50_099))),
            readings: None,
        })
    };
    let failed = |t: &Tracker, netns| {
        t.failed.get(&(netns, "10.0.0.9".parse::<IpAddr>().unwrap(), 443)).map(|f| f.count)
    };
    let mut t = Tracker::default();
    let t0 = t.counting_since;
    for _ in 0..3 {
        t.on_event(&event(EventKind::ConnectFailed, 7, "0.0.0.0:0", "10.0.0.9:443"));
    }
    let c = t.tally(&dumps(true), &BoxReadings::default(), &|_| true, &HashMap::new(), t0, 0);
    let row = |netns| c.destinations.iter().find(|d| d.netns == netns).unwrap().failed_connects;
    assert_eq!((row(7), row(8)), (3, 0), "a failure in one namespace is not another's");

    // Users control the keys: past the cap a new endpoint is only counted as overflow.
    for i in 0..MAX_KEYS as u32 + 10 {
        let remote = std::net::SocketAddrV4::new(std::net::Ipv4Addr::from(0x0a00_0000 + i), 9);
        t.on_event(&event(EventKind::ConnectFailed, 9, "0.0.0.0:0", &remote.to_string()));
    }
    assert_eq!(t.failed.len(), MAX_KEYS);
    assert_eq!(t.overflow, 11, "one slot was taken by the first endpoint");
    assert!(t.table_sizes().contains(&format!("failed connects {MAX_KEYS}")));

    // Held by a row: kept however old; held by none and old: forgotten.
    let later = t0 + FAILED_KEEP + Duration::from_secs(1);
    t.tally(&dumps(true), &BoxReadings::default(), &|_| true, &HashMap::new(), later, 0);
    assert_eq!((failed(&t, 7), t.failed.len()), (Some(3), 1), "only the one a row holds");
    t.tally(&dumps(false), &BoxReadings::default(), &|_| true, &HashMap::new(), later, 0);
    assert_eq!(failed(&t, 7), None);
}

// ---- live: real sockets, each test in a network namespace of its own ----

/// Runs `body` in a thread that has a new network namespace with `lo` up; the
/// namespace (and every socket in it) goes when the thread ends.
fn in_new_netns<T: Send + 'static>(body: impl FnOnce(u32) -> T + Send + 'static) -> T {
    tcptrace_netns::in_new(body)
}

fn family(addr: &SocketAddr) -> AddressFamily {
    if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
}

fn reuseport_listener(addr: SocketAddr) -> TcpListener {
    let fd = socket(family(&addr), SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).unwrap();
    listen(&fd, Backlog::new(128).unwrap()).unwrap();
    TcpListener::from(fd)
}

/// A connection from `src` (any port) to `dst`.
fn connect_from(src: IpAddr, dst: SocketAddr) -> TcpStream {
    let fd = socket(family(&dst), SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    bind(fd.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(src, 0))).unwrap();
    connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)).unwrap();
    TcpStream::from(fd)
}

/// `n` connections to `listener`, each accepted at once: (client, server) pairs.
fn connect_n(listener: &TcpListener, n: usize) -> Vec<(TcpStream, TcpStream)> {
    let target = listener.local_addr().unwrap();
    (0..n)
        .map(|_| {
            let client = TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap();
            (client, listener.accept().unwrap().0)
        })
        .collect()
}

fn write_sysctl(name: &str, value: &str) {
    let path = format!("/proc/sys/net/ipv4/{name}");
    fs::write(&path, value).unwrap_or_else(|e| panic!("writing {value:?} to {path}: {e}"));
}

/// Sockets in `state` in the calling thread's namespace, waited for (bounded).
fn wait_for_state(netns: u32, state: u8, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = sockdiag::dump(netns, &StateFlags::all())
            .unwrap()
            .iter()
            .filter(|s| s.state == state)
            .count();
        if n >= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reuseport_listeners_and_skewed_remotes() {
    let ((netns, got), ours) = in_new_netns(|netns| {
        let addr = sa("127.71.0.1:22010");
        let listeners = [reuseport_listener(addr), reuseport_listener(addr)];
        // 6, 3 and 1 connections from three source addresses; not accepted (queued
        // connections are established, and live, all the same).
        let mut clients = Vec::new();
        for (src, n) in [("127.71.1.1", 6), ("127.71.1.2", 3), ("127.71.1.3", 1)] {
            for _ in 0..n {
                clients.push(connect_from(src.parse().unwrap(), addr));
            }
        }
        wait_for_state(netns, tcp_state::ESTABLISHED, 20);
        let mut tracker = Tracker::default();
        assert_eq!(tracker.last_refresh_cost(), None);
        let mut got = tracker.refresh(0).unwrap();
        assert!(tracker.last_refresh_cost().is_some_and(|c| c.dump > Duration::ZERO));
        // The pid scan runs on in the background on a box with many open files.
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.listeners.iter().all(|l| l.pids.is_empty()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            got = tracker.refresh_now(0).unwrap();
        }
        drop((listeners, clients));
        ((netns, got), std::process::id())
    });
    let rows: Vec<_> = got.listeners.iter().filter(|l| l.netns == netns).collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let l = rows[0];
    assert_eq!((l.addr, l.port), ("127.71.0.1".parse::<IpAddr>().unwrap(), 22010));
    assert_eq!((l.live, l.remote_addrs, l.max_per_remote, l.peak_live), (10, 3, 6, 10));
    assert_eq!(l.reuseport_sockets, 2);
    assert!(l.pids.contains(&ours), "{:?} lacks {ours}", l.pids);
    // The client ends: 3 destinations (one per source address), none shared.
    let dests: Vec<_> = got.destinations.iter().filter(|d| d.netns == netns).collect();
    let mut per_source: Vec<u64> = dests.iter().map(|d| d.ports_in_use).collect();
    per_source.sort_unstable();
    assert_eq!(per_source, [1, 3, 6]);
    assert!(dests.iter().all(|d| d.range == 28_232 && d.rport == 22010));
}

#[test]
#[expect(clippy::float_cmp, reason = "exact results of exact inputs")]
fn client_ports_in_use_count_time_wait_against_the_namespace_range() {
    const K: usize = 60;
    const CLOSED: usize = 20;
    const TO_B: usize = 50;
    let (netns, got, range_a, shared_expected, laddr) = in_new_netns(|netns| {
        write_sysctl("ip_local_port_range", "40000 40099");
        write_sysctl("ip_local_reserved_ports", "40000,40050-40053");
        let range = EphemeralRange::read().unwrap();
        let a = TcpListener::bind("127.72.0.1:22030").unwrap();
        let b = TcpListener::bind("127.72.0.1:22031").unwrap();
        let mut to_a = connect_n(&a, K);
        let laddr = to_a[0].0.local_addr().unwrap().ip();
        let a_ports: HashSet<u16> =
            to_a.iter().map(|(c, _)| c.local_addr().unwrap().port()).collect();
        // The client closes first, then the server: the client end sits in TIME_WAIT.
        for (client, mut server) in to_a.drain(..CLOSED) {
            drop(client);
            server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(server.read(&mut [0u8; 1]).unwrap(), 0, "expected EOF");
        }
        assert_eq!(wait_for_state(netns, tcp_state::TIME_WAIT, CLOSED), CLOSED);
        // A second destination: the kernel gives it local ports that A uses too (110
        // connections, 95 ports).
        let to_b = connect_n(&b, TO_B);
        let shared =
            to_b.iter().filter(|(c, _)| a_ports.contains(&c.local_addr().unwrap().port())).count();
        let got = Tracker::default().refresh(0).unwrap();
        drop((to_a, to_b));
        (netns, got, range, shared, laddr)
    });
    assert_eq!(range_a.size(), 95);
    let ns = got.namespaces.iter().find(|r| r.netns == netns).unwrap();
    assert_eq!((ns.range_low, ns.range_high, ns.range), (40_000, 40_099, 95));
    let dest = |rport| {
        got.destinations
            .iter()
            .find(|d| d.netns == netns && d.rport == rport)
            .unwrap_or_else(|| panic!("no row for :{rport} in {:?}", got.destinations))
    };
    let a = dest(22030);
    assert_eq!((a.laddr, a.raddr), (laddr, "127.72.0.1".parse::<IpAddr>().unwrap()));
    assert_eq!((a.ports_in_use, a.range), (K as u64, 95), "TIME_WAIT ends count");
    assert_eq!(a.use_pct, use_pct(K as u64, 95));
    assert!((a.use_pct - 63.157_894).abs() < 1e-5);
    let b = dest(22031);
    assert_eq!((b.ports_in_use, b.use_pct), (TO_B as u64, use_pct(TO_B as u64, 95)));
    eprintln!(
        "to A: {} ports in use ({:.2}%), to B: {}; {shared_expected} local ports serve both",
        a.ports_in_use, a.use_pct, b.ports_in_use
    );
    assert!(shared_expected >= K + TO_B - 95, "{shared_expected}");
    assert_eq!(ns.shared_local_ports, shared_expected as u64);
    assert_eq!((a.shared_ports, b.shared_ports), (shared_expected as u64, shared_expected as u64));
    assert!(got.shared_local_ports >= ns.shared_local_ports);
    // The server ends are the listeners', not destinations.
    assert!(!got.destinations.iter().any(|d| d.netns == netns && d.laddr == a.raddr));
    let listener = got.listeners.iter().find(|l| l.netns == netns && l.port == 22030).unwrap();
    assert_eq!((listener.live, listener.remote_addrs), ((K - CLOSED) as u64, 1));
}

#[test]
fn ipv6_destinations_and_dual_stack_listeners() {
    let (netns, got) = in_new_netns(|netns| {
        let v6 = TcpListener::bind("[::1]:22040").unwrap();
        let dual = TcpListener::bind("[::]:22041").unwrap();
        let mut keep: Vec<TcpStream> =
            (0..5).map(|_| TcpStream::connect(v6.local_addr().unwrap()).unwrap()).collect();
        let dual_port = dual.local_addr().unwrap().port();
        for src in ["127.74.0.1", "127.74.0.1", "127.74.0.2"] {
            keep.push(connect_from(
                src.parse().unwrap(),
                SocketAddr::new("127.74.0.9".parse().unwrap(), dual_port),
            ));
        }
        keep.push(connect_from(
            "::1".parse().unwrap(),
            SocketAddr::new("::1".parse().unwrap(), dual_port),
        ));
        wait_for_state(netns, tcp_state::ESTABLISHED, 18);
        let got = Tracker::default().refresh(0).unwrap();
        drop((keep, v6, dual));
        (netns, got)
    });
    let listener =
        |port| got.listeners.iter().find(|l| l.netns == netns && l.port == port).unwrap();
    let l = listener(22040);
    assert_eq!(
        (l.addr.to_string().as_str(), l.live, l.remote_addrs, l.max_per_remote),
        ("::1", 5, 1, 5)
    );
    let l = listener(22041);
    assert_eq!(
        (l.addr.to_string().as_str(), l.live, l.remote_addrs, l.max_per_remote),
        ("::", 4, 3, 2)
    );
    let d = got.destinations.iter().find(|d| d.netns == netns && d.rport == 22040).unwrap();
    let loopback = IpAddr::V6(Ipv6Addr::LOCALHOST);
    assert_eq!((d.laddr, d.raddr, d.ports_in_use, d.range), (loopback, loopback, 5, 28_232));
    let json = serde_json::to_value(d).unwrap();
    assert_eq!((json["laddr"].as_str(), json["raddr"].as_str()), (Some("::1"), Some("::1")));
    assert_eq!(json["exhaustion_s"], serde_json::Value::Null);
    let v4 = got.destinations.iter().filter(|d| d.netns == netns && d.rport == 22041).count();
    assert_eq!(v4, 3, "127.74.0.1, 127.74.0.2 and ::1 to the dual-stack port");
}
