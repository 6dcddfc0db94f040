//! The capacity views of `watch --json` against real sockets (own network namespaces,
//! 127.79.0.0/16, ports 21971-21975): a client's exhaustion of a 10-port ephemeral range,
//! and the listener and destination rows of two namespaces that use the same addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};

use tcptrace_tests::{
    Accepted, EventKind, EventLine, INTERVAL, Netns, Server, Snapshot, Tracer, Tuple, WAIT,
    connect, tally, tuples,
};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 79, 0, 1)), 21971);
/// Nothing listens there.
const REFUSED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 79, 0, 1)), 21975);

#[test]
fn ephemeral_exhaustion_and_failed_connects_are_reported() {
    const ATTEMPTS: usize = 14;
    println!(
        "checks: with a 10-port ephemeral range, the destination row shows every port in use, \
         use 100% of the range, and exactly the connect() calls that failed with EADDRNOTAVAIL \
         (as events too), and no refused connect among them"
    );
    let ns = Netns::new("ns-exhaust");
    let range: u32 = ns.run(|| {
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40009").expect("set range");
        let text =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").expect("range");
        let ends: Vec<u32> = text.split_whitespace().map(|p| p.parse().expect("port")).collect();
        ends[1] - ends[0] + 1
    });
    let server = Server::listen(&ns, SERVER, Accepted::Hold);
    let tracer = Tracer::watch(&["--top", "0", "--interval", INTERVAL]);
    let events = Tracer::events(&[SERVER.port(), REFUSED.port()]);

    // Refused connects got a port and failed later: not the range running out (on the
    // tracepoint paths both end in SYN_SENT -> CLOSE; only the port tells them apart).
    let refused = ns.run(|| {
        (0..3)
            .filter(|_| {
                TcpStream::connect(REFUSED)
                    .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
            })
            .count()
    });
    assert_eq!(refused, 3, "nothing listens on {REFUSED}");
    // Unbound sockets: the kernel picks the source address and a port from the range.
    let (clients, failed) = ns
        .run(|| {
            let mut clients = Vec::new();
            let mut failed = 0u64;
            for _ in 0..ATTEMPTS {
                match TcpStream::connect(SERVER) {
                    Ok(s) => clients.push(s),
                    Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => failed += 1,
                    Err(e) => panic!("connect: {e}"),
                }
            }
            Ok::<_, io::Error>((clients, failed))
        })
        .expect("connects");
    server.wait_accepted(clients.len());
    println!("  range {range}: {} connected, {failed} failed with EADDRNOTAVAIL", clients.len());
    assert!(failed > 0, "the range must run out within {ATTEMPTS} attempts");

    let in_use = clients.len() as u64;
    let row = tracer.wait_for("the exhausted destination", |s| {
        let Some(d) =
            s.destinations.iter().find(|d| d.raddr == SERVER.ip() && d.rport == SERVER.port())
        else {
            return Err("no destination row".into());
        };
        let in_use_f = f64::from(u32::try_from(in_use).expect("a handful of ports"));
        let full = (d.use_pct - 100.0 * in_use_f / f64::from(range)).abs() < 1e-6;
        if d.ports_in_use == in_use && d.range == range && full && d.failed_connects == failed {
            Ok(())
        } else {
            Err(format!("{d:?}"))
        }
    });
    let d = row.destinations.iter().find(|d| d.rport == SERVER.port()).expect("row");
    assert_eq!(d.netns, ns.inode(), "{d:?}");
    println!("  tracer: {d:?}");
    // Events come in ring order: once the exhaustion's failures are in, a refused connect
    // reported as failed would be too.
    let failed_to = |evs: &[EventLine], port| {
        evs.iter().filter(|e| e.event == EventKind::ConnectFailed && e.rport == port).count() as u64
    };
    let seen = events.wait_events("the failed connects as events", |evs| {
        let n = failed_to(evs, SERVER.port());
        if n == failed { Ok(()) } else { Err(format!("{n} of {failed}")) }
    });
    assert_eq!(failed_to(&seen, REFUSED.port()), 0, "refused connects are not failed ones");
    println!("  events: {failed} connect_failed to {SERVER}, none to {REFUSED} (refused 3 times)");
    drop(clients);
}

const GROUP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 79, 1, 1)), 21972);
const OTHER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 79, 1, 1)), 21974);
const V6: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 21973);

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 79, 1, d))
}

/// Writes `net.ipv4.<name>` of the calling thread's network namespace.
fn sysctl(name: &'static str, value: &'static str) -> impl FnOnce() + Send + 'static {
    move || {
        std::fs::write(format!("/proc/sys/net/ipv4/{name}"), value)
            .unwrap_or_else(|e| panic!("set {name}: {e}"));
    }
}

/// `count` connections to `to` from sockets that are not bound first: the kernel picks
/// the source address and the port, and may give the same local port to several
/// destinations.
fn connect_unbound(ns: &Netns, to: SocketAddr, count: usize) -> Vec<TcpStream> {
    ns.run(move || {
        (0..count)
            .map(|i| TcpStream::connect(to).unwrap_or_else(|e| panic!("connect {to} ({i}): {e}")))
            .collect()
    })
}

/// What a listener row must say, from the server ends the test holds.
#[derive(Debug, PartialEq)]
struct ListenerWant {
    live: u64,
    remote_addrs: u64,
    max_per_remote: u64,
    reuseport_sockets: u64,
}

fn listener_want(servers: &[&Server]) -> ListenerWant {
    let ends: Vec<Tuple> = servers.iter().flat_map(|s| s.open()).collect();
    let per_remote = tally(&ends, |t| t.peer.ip());
    ListenerWant {
        live: ends.len() as u64,
        remote_addrs: per_remote.len() as u64,
        max_per_remote: per_remote.values().max().map_or(0, |&n| n as u64),
        reuseport_sockets: servers.len() as u64,
    }
}

/// Per (local address, destination): ports in use, and how many of them another
/// destination uses at the same time.
type DestinationsWant = BTreeMap<(IpAddr, SocketAddr), (u64, u64)>;

/// [`DestinationsWant`] from the client ends.
fn destinations_want(clients: &[Tuple]) -> DestinationsWant {
    let uses = tally(clients, |t| t.local);
    let mut want = BTreeMap::new();
    for t in clients {
        let row: &mut (u64, u64) = want.entry((t.local.ip(), t.peer)).or_default();
        row.0 += 1;
        row.1 += u64::from(uses[&t.local] > 1);
    }
    want
}

/// Every row the test expects in `s`, or what differs.
fn rows_match(
    s: &Snapshot,
    listeners: &[(u32, SocketAddr, &ListenerWant)],
    destinations: &[(u32, u32, &DestinationsWant)],
) -> Result<(), String> {
    let mut misses = Vec::new();
    for &(netns, addr, want) in listeners {
        let row = s
            .listeners
            .iter()
            .find(|l| (l.netns, l.addr, l.port) == (netns, addr.ip(), addr.port()));
        let got = row.map(|l| ListenerWant {
            live: l.live,
            remote_addrs: l.remote_addrs,
            max_per_remote: l.max_per_remote,
            reuseport_sockets: l.reuseport_sockets,
        });
        if got.as_ref() != Some(want) {
            misses.push(format!("listener {addr} in {netns}: {got:?}, want {want:?}"));
        } else if want.reuseport_sockets > 1
            && !row.is_some_and(|l| l.pids.contains(&std::process::id()))
        {
            misses.push(format!(
                "listener {addr} in {netns}: pids {:?} lack ours",
                row.map(|l| &l.pids)
            ));
        }
    }
    for &(netns, range, want) in destinations {
        for (&(laddr, dst), &(ports, shared)) in want {
            let row = s.destinations.iter().find(|d| {
                (d.netns, d.laddr, d.raddr, d.rport) == (netns, laddr, dst.ip(), dst.port())
            });
            let got = row.map(|d| (d.ports_in_use, d.shared_ports, d.range));
            if got != Some((ports, shared, range)) {
                misses.push(format!(
                    "destination {laddr} -> {dst} in {netns}: (ports, shared, range) {got:?}, \
                     want {:?}",
                    (ports, shared, range)
                ));
            }
        }
    }
    if misses.is_empty() { Ok(()) } else { Err(misses.join("\n")) }
}

#[test]
fn listener_and_destination_rows_keep_two_namespaces_apart() {
    println!(
        "checks: listener rows (live, remote addresses, most from one, SO_REUSEPORT group and \
         its pid) and destination rows (ports in use with TIME_WAIT, ports shared between \
         destinations, range less reserved ports), IPv4 and IPv6, in two namespaces that \
         use the same addresses"
    );
    let a = Netns::new("ns-cap-a");
    let b = Netns::new("ns-cap-b");
    // A: 40 ports less 3 reserved. B keeps its default range.
    a.run(sysctl("ip_local_port_range", "41000 41039"));
    a.run(sysctl("ip_local_reserved_ports", "41005,41010-41011"));
    let range_a = 37;
    let range_b: u32 = b.run(|| {
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let ends: Vec<u32> = text.split_whitespace().map(|p| p.parse().unwrap()).collect();
        ends[1] - ends[0] + 1
    });

    let group = [Server::listen_reuseport(&a, GROUP), Server::listen_reuseport(&a, GROUP)];
    let other = Server::listen(&a, OTHER, Accepted::Hold);
    let single = Server::listen(&b, GROUP, Accepted::Hold);
    let v6 = Server::listen(&b, V6, Accepted::Hold);
    let tracer = Tracer::watch(&["--top", "0", "--interval", INTERVAL]);

    // A: bound clients from two addresses, then unbound ones to two destinations, which
    // share local ports (the bound ones' ports are theirs alone).
    let mut clients_a = connect(&a, v4(2), GROUP, 3);
    clients_a.extend(connect(&a, v4(3), GROUP, 2));
    clients_a.extend(connect_unbound(&a, GROUP, 20));
    clients_a.extend(connect_unbound(&a, OTHER, 20));
    let mut clients_b = connect(&b, v4(2), GROUP, 4);
    clients_b.extend(connect(&b, IpAddr::V6(Ipv6Addr::LOCALHOST), V6, 2));
    // The kernel spreads the group's 25 over its two sockets: wait for both to be done.
    let deadline = std::time::Instant::now() + WAIT;
    while group.iter().map(Server::accepted).sum::<usize>() < 25 {
        assert!(std::time::Instant::now() < deadline, "the group accepted too few");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    other.wait_accepted(20);
    single.wait_accepted(4);
    v6.wait_accepted(2);
    let shared = destinations_want(&tuples(&clients_a))
        .values()
        .map(|&(_, shared)| shared)
        .max()
        .unwrap_or(0);
    // The 3 bound ports from .2 are distinct; .3's 2 may reuse their numbers: at most 34
    // ports are left for 40 unbound connections, so at least 6 are shared.
    assert!(shared >= 6, "40 connections over at most 34 free ports must share ({shared})");
    println!("  A: 20 unbound connections to each of {GROUP} and {OTHER}, {shared} ports shared");

    let check = |step: &str, clients_a: &[TcpStream], time_wait: &[Tuple]| {
        let mut client_ends_a = tuples(clients_a);
        client_ends_a.extend_from_slice(time_wait);
        let dest_a = destinations_want(&client_ends_a);
        let dest_b = destinations_want(&tuples(&clients_b));
        let (group_a, other_a) = (listener_want(&[&group[0], &group[1]]), listener_want(&[&other]));
        let (single_b, v6_b) = (listener_want(&[&single]), listener_want(&[&v6]));
        let s = tracer.wait_for(step, |s| {
            rows_match(
                s,
                &[
                    (a.inode(), GROUP, &group_a),
                    (a.inode(), OTHER, &other_a),
                    (b.inode(), GROUP, &single_b),
                    (b.inode(), V6, &v6_b),
                ],
                &[(a.inode(), range_a, &dest_a), (b.inode(), range_b, &dest_b)],
            )
        });
        println!(
            "  {step}: listener {GROUP} live {} in A, {} in B; {} destinations in A",
            group_a.live,
            single_b.live,
            dest_a.len()
        );
        assert_eq!((s.lost, s.drift), (0, 0));
    };
    check("every connection held", &clients_a, &[]);

    // Four unbound clients of the group close first, then their server ends: the client
    // ends wait in TIME_WAIT and still hold their ports; the listener loses them.
    let mut closing = Vec::new();
    let mut rest = Vec::new();
    for stream in clients_a.drain(..) {
        let t = Tuple::of(&stream);
        if closing.len() < 4
            && t.peer == GROUP
            && !t.local.ip().eq(&v4(2))
            && !t.local.ip().eq(&v4(3))
        {
            closing.push((t, stream));
        } else {
            rest.push(stream);
        }
    }
    let time_wait: Vec<Tuple> = closing.iter().map(|(t, _)| *t).collect();
    drop(closing);
    let peers: BTreeSet<SocketAddr> = time_wait.iter().map(|t| t.local).collect();
    let closed: usize =
        group.iter().map(|s| s.close_where(|t| peers.contains(&t.peer)).len()).sum();
    assert_eq!(closed, 4, "the group held the four server ends");
    check("four client ends in TIME_WAIT", &rest, &time_wait);
    tracer.assert_running();
}
