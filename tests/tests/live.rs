//! Live tests: the real tcptrace binary against connections these tests open themselves.
//!
//! Run as root, one test at a time: `TCPTRACE_BIN=… cargo test -p tcptrace-tests --
//! --test-threads=1`. Each test owns a network namespace, a 127.x.0.0/16 block (x = 71…)
//! and listener ports 21x71…21x79, and computes every expected count from its own sockets.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tcptrace_common::attach::Path;
use tcptrace_tests::{
    ATTACH_WAIT, Accepted, EventKind, EventLine, EventLineExt, Exit, Expect, Family, INTERVAL,
    Netns, Server, Snapshot, SnapshotExt, Tracer, Tuple, WAIT, attach_path, connect, expected,
    run_to_exit, tally, tuples,
};

/// `watch` options for the counting tests: every row, frequent snapshots.
const WATCH_ALL: [&str; 4] = ["--top", "0", "--interval", INTERVAL];
/// [`WATCH_ALL`] with reconciliation off, for the counting tests: a connection the hooks
/// missed or invented then stays wrong in the counts instead of being corrected away.
const WATCH_HOOKS_ONLY: [&str; 6] =
    ["--top", "0", "--interval", INTERVAL, "--reconcile-every", "0s"];
const V6_LOOPBACK: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn at(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Removes and returns the sockets whose tuple matches.
fn take(streams: &mut Vec<TcpStream>, mut matches: impl FnMut(&Tuple) -> bool) -> Vec<TcpStream> {
    streams.extract_if(.., |s| matches(&Tuple::of(s))).collect()
}

/// Every open end, client and server.
fn open_ends(clients: &[TcpStream], servers: &[&Server]) -> Vec<Tuple> {
    let mut open = tuples(clients);
    for server in servers {
        open.extend(server.open());
    }
    open
}

/// Waits until a snapshot has exactly the rows `expect` describes, and checks that the
/// tables of that snapshot add up to its `live` total.
fn wait_exact(tracer: &Tracer<Snapshot>, step: &str, expect: &[Expect]) -> Snapshot {
    println!("  {step}: expecting");
    for row in expect {
        println!("    {row}");
    }
    let started = Instant::now();
    let snapshot = tracer.wait_for(step, |s| s.check(expect));
    println!("    seen after {:.1?} (snapshot at {:.1}s)", started.elapsed(), snapshot.elapsed_s);
    snapshot.check_totals().unwrap_or_else(|e| panic!("{step}: {e}"));
    // A state caught between two related events (a client's close and its server end's
    // CLOSE_WAIT) must not pass for the settled one: the next snapshot must agree.
    let next = tracer.next_snapshots(1);
    next.check(expect).unwrap_or_else(|miss| {
        panic!("{step}: matched once, then at {:.1}s:\n{miss}", next.elapsed_s)
    });
    snapshot
}

#[test]
fn counts_held_connections_exactly() {
    println!(
        "checks: per-port and per-endpoint live counts follow held, half-closed and closed \
         connections exactly, over IPv4, IPv6 and IPv4-mapped IPv6"
    );
    let ns = Netns::new("ns-counts");
    let listen = v4(127, 71, 0, 1);
    let v4_server = Server::listen(&ns, at(listen, 21171), Accepted::Hold);
    let v6_server = Server::listen(&ns, at(V6_LOOPBACK, 21172), Accepted::Hold);
    // Dual-stack: IPv4 clients arrive as ::ffff:127.71.0.6, which must be reported as IPv4.
    let dual_server = Server::listen(&ns, at(Ipv6Addr::UNSPECIFIED.into(), 21173), Accepted::Hold);
    let servers = [&v4_server, &v6_server, &dual_server];
    let ports = [21171, 21172, 21173];
    let tracer = Tracer::watch(&WATCH_HOOKS_ONLY);

    let mut clients = Vec::new();
    for host in 2..=5 {
        clients.extend(connect(&ns, v4(127, 71, 0, host), at(listen, 21171), 3));
    }
    clients.extend(connect(&ns, V6_LOOPBACK, at(V6_LOOPBACK, 21172), 5));
    clients.extend(connect(&ns, v4(127, 71, 0, 6), at(listen, 21173), 2));
    v4_server.wait_accepted(12);
    v6_server.wait_accepted(5);
    dual_server.wait_accepted(2);
    assert!(
        dual_server.open().iter().all(|t| t.peer.ip() == v4(127, 71, 0, 6)),
        "the dual-stack listener sees IPv4 peers"
    );

    // The listeners, plus every IPv4 client end as the server ends' remote endpoint (only
    // this test uses 127.71/16, so those rows are ours alone; `::1` ones might not be).
    let mut endpoints = vec![at(listen, 21171), at(V6_LOOPBACK, 21172), at(listen, 21173)];
    endpoints.extend(tuples(&clients).iter().filter(|t| t.local.is_ipv4()).map(|t| t.local));
    let expect =
        |clients: &[TcpStream]| expected(&open_ends(clients, &servers), &ports, &endpoints);

    wait_exact(&tracer, "all 19 connections held", &expect(&clients));

    // Closing the client end leaves the server end in CLOSE_WAIT: still live, because
    // its application has not closed it.
    let mut v6_closed = 0;
    let closed = take(&mut clients, |t| {
        let v6 = t.local.is_ipv6() && v6_closed < 2;
        v6_closed += usize::from(v6);
        t.local.ip() == v4(127, 71, 0, 2) || v6
    });
    let closed_tuples = tuples(&closed);
    drop(closed);
    wait_exact(
        &tracer,
        "client ends from 127.71.0.2 and two IPv6 client ends closed (server ends in CLOSE_WAIT)",
        &expect(&clients),
    );

    v4_server.close_peers_of(&closed_tuples);
    v6_server.close_peers_of(&closed_tuples);
    wait_exact(&tracer, "their server ends closed too", &expect(&clients));

    // The other way round: the server closes first, the client end stays live.
    let from_3 = v4(127, 71, 0, 3);
    v4_server.close_where(|t| t.peer.ip() == from_3);
    let mut first = true;
    dual_server.close_where(|_| std::mem::replace(&mut first, false));
    wait_exact(
        &tracer,
        "server ends of 127.71.0.3 and one IPv4-mapped server end closed first",
        &expect(&clients),
    );

    clients.clear();
    for server in servers {
        server.close_where(|_| true);
    }
    let gone = expect(&clients);
    assert!(gone.iter().all(|e| matches!(e, Expect::NoPort(_) | Expect::NoEndpoint(_))));
    wait_exact(&tracer, "everything closed: the rows are gone", &gone);
    tracer.assert_no_drift("held, half-closed and closed connections");
    tracer.assert_running();
}

#[test]
fn one_thousand_on_one_port() {
    println!("checks: 1,000 held connections to one port count exactly 1000, then drop to none");
    let ns = Netns::new("ns-thousand");
    let listen = v4(127, 72, 0, 1);
    let server = Server::listen(&ns, at(listen, 21271), Accepted::Hold);
    let tracer = Tracer::watch(&WATCH_HOOKS_ONLY);

    let started = Instant::now();
    let mut clients = Vec::new();
    for host in 2..=5 {
        clients.extend(connect(&ns, v4(127, 72, 0, host), at(listen, 21271), 250));
    }
    server.wait_accepted(1000);
    println!("  1000 connections established in {:.1?}", started.elapsed());

    let ports = [21271];
    let endpoints = [at(listen, 21271)];
    let held = expected(&open_ends(&clients, &[&server]), &ports, &endpoints);
    assert!(
        matches!(held[0], Expect::Port { live: 1000, remote_addrs: 4, .. }),
        "the test's own view: {held:?}"
    );
    assert!(
        matches!(held[1], Expect::Endpoint { live: 1000, .. }),
        "the test's own view: {held:?}"
    );
    wait_exact(&tracer, "1000 connections held", &held);

    drop(clients);
    server.close_where(|_| true);
    wait_exact(&tracer, "all 1000 closed", &expected(&[], &ports, &endpoints));
    tracer.assert_no_drift("1000 connections");
}

/// The events one connection must produce, each exactly once.
fn expected_events(client: Tuple) -> [(EventKind, Tuple); 4] {
    [
        (EventKind::Connect, client),
        (EventKind::Accept, client.reversed()),
        (EventKind::Close, client),
        (EventKind::Close, client.reversed()),
    ]
}

/// `Ok` when every `(kind, tuple)` wanted has at least one event.
fn have_all(events: &[EventLine], wanted: &[(EventKind, Tuple)]) -> Result<(), String> {
    let seen: BTreeSet<(u8, Tuple)> =
        events.iter().map(|e| (kind_key(e.event), e.tuple())).collect();
    let missing: Vec<_> =
        wanted.iter().filter(|(k, t)| !seen.contains(&(kind_key(*k), *t))).collect();
    if missing.is_empty() { Ok(()) } else { Err(format!("missing {missing:?}")) }
}

fn kind_key(kind: EventKind) -> u8 {
    match kind {
        EventKind::Connect => 0,
        EventKind::Accept => 1,
        EventKind::Close => 2,
        EventKind::ConnectFailed => 3,
    }
}

fn family_of(addr: SocketAddr) -> Family {
    if addr.is_ipv4() { Family::Ipv4 } else { Family::Ipv6 }
}

fn this_thread() -> (u32, String) {
    let tid = u32::try_from(nix::unistd::gettid().as_raw()).expect("tid");
    let comm = std::fs::read_to_string("/proc/thread-self/comm").expect("comm");
    (tid, comm.trim_end().to_owned())
}

#[test]
fn events_carry_correct_four_tuples() {
    println!(
        "checks: `events --json` reports one connect, one accept and one close per end, with \
         the sockets' own 4-tuples, netns, pid/tid/comm of the connecting and closing threads"
    );
    let ns = Netns::new("ns-events");
    let listen = v4(127, 73, 0, 1);
    // The tracer starts before the servers' accept threads block in accept(), as a user's
    // would (the accept event comes from the handshake on every path, so it would be seen
    // either way).
    let tracer = Tracer::events(&[21371, 21372, 21379]);
    let v4_server = Server::listen(&ns, at(listen, 21371), Accepted::Hold);
    let v6_server = Server::listen(&ns, at(V6_LOOPBACK, 21372), Accepted::Hold);
    // Once the sentinel's closes are out, every earlier event is too.
    let sentinel = Server::listen(&ns, at(listen, 21379), Accepted::Hold);

    let mut clients = connect(&ns, v4(127, 73, 0, 2), at(listen, 21371), 2);
    clients.extend(connect(&ns, V6_LOOPBACK, at(V6_LOOPBACK, 21372), 2));
    v4_server.wait_accepted(2);
    v6_server.wait_accepted(2);
    let conns = tuples(&clients);
    let opens: Vec<_> =
        conns.iter().flat_map(|&c| expected_events(c).into_iter().take(2)).collect();
    tracer.wait_events("connect and accept of each connection", |ev| have_all(ev, &opens));
    println!("  connects and accepts seen for {conns:?}");

    let closer = this_thread();
    drop(clients);
    v4_server.close_where(|_| true);
    v6_server.close_where(|_| true);
    let all: Vec<_> = conns.iter().flat_map(|&c| expected_events(c)).collect();
    tracer.wait_events("closes of both ends", |ev| have_all(ev, &all));

    let probe = connect(&ns, v4(127, 73, 0, 3), at(listen, 21379), 1);
    sentinel.wait_accepted(1);
    let probe_tuple = Tuple::of(&probe[0]);
    drop(probe);
    sentinel.close_where(|_| true);
    let events = tracer.wait_events("the sentinel's closes", |ev| {
        have_all(ev, &expected_events(probe_tuple)[2..])
    });

    // Events of other namespaces on the same ports are not ours; but one that carries our
    // exact 4-tuple must be ours, so its netns is wrong.
    let expected_tuples: BTreeSet<Tuple> = all.iter().map(|&(_, t)| t).collect();
    let (ours, foreign): (Vec<&EventLine>, Vec<&EventLine>) = events
        .iter()
        .filter(|e| e.lport != 21379 && e.rport != 21379)
        .partition(|e| e.netns == ns.inode());
    let misplaced: Vec<_> =
        foreign.iter().filter(|e| expected_tuples.contains(&e.tuple())).collect();
    assert!(
        misplaced.is_empty(),
        "events of ours with netns other than {}: {misplaced:#?}",
        ns.inode()
    );
    let counts = tally(ours.iter(), |e| (kind_key(e.event), e.tuple()));
    for &(kind, tuple) in &all {
        assert_eq!(
            counts.get(&(kind_key(kind), tuple)),
            Some(&1),
            "{kind:?} {tuple:?} exactly once"
        );
    }
    assert_eq!(ours.len(), all.len(), "no other events on our ports in our namespace: {ours:#?}");

    for &client in &conns {
        check_connection_events(&ours, client, &ns, &closer);
        println!("  {client:?}: connect, accept and both closes correct");
    }
}

/// Checks the four events of one connection, found by kind and 4-tuple: same netns and
/// family, the connect from the namespace thread, the closes from the closing thread, each
/// close naming the socket that was opened.
fn check_connection_events(ours: &[&EventLine], client: Tuple, ns: &Netns, closer: &(u32, String)) {
    let pid = std::process::id();
    let ns_tid = u32::try_from(ns.tid()).expect("tid");
    let find = |kind: EventKind, tuple: Tuple| -> &EventLine {
        ours.iter().find(|e| e.event == kind && e.tuple() == tuple).expect("counted before")
    };
    let server = client.reversed();
    let connect = find(EventKind::Connect, client);
    let accept = find(EventKind::Accept, server);
    let client_close = find(EventKind::Close, client);
    let server_close = find(EventKind::Close, server);
    for e in [connect, accept, client_close, server_close] {
        assert_eq!(e.netns, ns.inode(), "netns of {e:?}");
        assert_eq!(e.family, family_of(client.local), "family of {e:?}");
        assert!(e.sock_addr().is_some_and(|s| s != 0), "sock of {e:?}");
    }
    assert_eq!(
        (connect.pid, connect.tid, connect.comm.as_str()),
        (pid, ns_tid, ns.comm()),
        "connect is made by the namespace thread: {connect:?}"
    );
    for close in [client_close, server_close] {
        assert_eq!(
            (close.pid, close.tid, close.comm.as_str()),
            (pid, closer.0, closer.1.as_str()),
            "closed by the test thread: {close:?}"
        );
    }
    assert_eq!(client_close.sock, connect.sock, "the client close names the connected socket");
    assert_eq!(server_close.sock, accept.sock, "the server close names the accepted socket");
    assert_ne!(connect.sock, accept.sock, "two ends, two sockets");
    assert!(connect.ts_ns <= client_close.ts_ns, "{connect:?} before {client_close:?}");
    assert!(accept.ts_ns <= server_close.ts_ns, "{accept:?} before {server_close:?}");
}

#[test]
fn pre_existing_connections_are_counted() {
    println!(
        "checks: connections opened before the tracer starts are in its first snapshot \
         exactly, and their closes are counted afterwards"
    );
    let ns = Netns::new("ns-seed");
    let listen = v4(127, 74, 0, 1);
    let v4_server = Server::listen(&ns, at(listen, 21471), Accepted::Hold);
    let v6_server = Server::listen(&ns, at(V6_LOOPBACK, 21472), Accepted::Hold);
    let servers = [&v4_server, &v6_server];
    let mut clients = connect(&ns, v4(127, 74, 0, 2), at(listen, 21471), 3);
    clients.extend(connect(&ns, v4(127, 74, 0, 3), at(listen, 21471), 2));
    clients.extend(connect(&ns, V6_LOOPBACK, at(V6_LOOPBACK, 21472), 2));
    // Accepted before the tracer starts, so no path can take them for half-open.
    v4_server.wait_accepted(5);
    v6_server.wait_accepted(2);

    let ports = [21471, 21472];
    let mut endpoints = vec![at(listen, 21471), at(V6_LOOPBACK, 21472)];
    endpoints.extend(tuples(&clients).iter().filter(|t| t.local.is_ipv4()).map(|t| t.local));
    let expect =
        |clients: &[TcpStream]| expected(&open_ends(clients, &servers), &ports, &endpoints);

    let held = expect(&clients);
    let tracer = Tracer::watch(&WATCH_ALL);
    let first = tracer.first();
    println!("  first snapshot (backend {}) must show:", first.backend);
    for row in &held {
        println!("    {row}");
    }
    first.check(&held).unwrap_or_else(|miss| panic!("first snapshot:\n{miss}"));
    first.check_totals().unwrap_or_else(|e| panic!("first snapshot: {e}"));

    let mut v6_closed = false;
    let closed = take(&mut clients, |t| {
        let v6 = t.local.is_ipv6() && !v6_closed;
        v6_closed |= v6;
        t.local.ip() == v4(127, 74, 0, 2) || v6
    });
    let closed_tuples = tuples(&closed);
    drop(closed);
    v4_server.close_peers_of(&closed_tuples);
    v6_server.close_peers_of(&closed_tuples);
    wait_exact(
        &tracer,
        "seeded connections from 127.74.0.2 and one IPv6 closed",
        &expect(&clients),
    );

    clients.clear();
    for server in servers {
        server.close_where(|_| true);
    }
    wait_exact(&tracer, "all seeded connections closed", &expect(&clients));
}

#[test]
fn connections_dropped_without_close_are_counted_closed() {
    const PORT: u16 = 21871;
    println!(
        "checks: a listener closed with connections still in its accept queue: the kernel \
         drops the server ends without tcp_close and resets the client ends, which their \
         application still holds; the hooks count every end gone (no reconciliation finds \
         one they missed)"
    );
    let ns = Netns::new("ns-dropped");
    let addr = at(v4(127, 78, 0, 1), PORT);
    let listener = ns.run(move || std::net::TcpListener::bind(addr).expect("bind"));
    let inode = ns.inode().to_string();
    let tracer = Tracer::watch_reconciling(&["--netns", &inode]);
    // Never accepted: the server ends wait in the accept queue, established.
    let clients = connect(&ns, v4(127, 78, 0, 2), addr, 5);
    tracer.wait_for("both ends of 5 queued connections", |s| {
        if s.live == 10 { Ok(()) } else { Err(format!("live {}", s.live)) }
    });
    drop(listener);
    tracer.wait_for("every end gone", |s| {
        if s.live == 0 { Ok(()) } else { Err(format!("live {}", s.live)) }
    });
    let later = tracer.next_snapshots(3);
    assert_eq!(later.live, 0, "{later:?}");
    assert_eq!(tracer.max_drift(), 0, "a reconciliation found ends the hooks missed");
    println!("  10 ends gone, events {}, drift 0 throughout", later.events);
    drop(clients);
}

#[test]
fn ring_overflow_is_reported() {
    const BURST: usize = 300;
    const MAX_BURSTS: u8 = 10;
    println!(
        "checks: with a 4 KiB ring, a burst of connections shows as lost > 0 and the tracer keeps running"
    );
    let ns = Netns::new("ns-overflow");
    let listen = v4(127, 75, 0, 1);
    // The server closes at once, so client ports do not pile up in TIME_WAIT.
    let server = Server::listen(&ns, at(listen, 21571), Accepted::Close);
    let tracer = Tracer::watch(&["--top", "5", "--interval", INTERVAL, "--ring-size", "4096"]);
    let first = tracer.first();
    println!("  at start: events={} lost={}", first.events, first.lost);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut opened = 0;
    for burst in 0..MAX_BURSTS {
        if tracer.latest().lost > 0 || Instant::now() > deadline {
            break;
        }
        let clients = connect(&ns, v4(127, 75, 0, 2 + burst % 8), at(listen, 21571), BURST);
        opened += BURST;
        drop(clients);
    }
    server.wait_accepted(opened);
    println!("  opened and closed {opened} connections");
    let lossy = tracer.wait_for("a snapshot with lost > 0", |s| {
        if s.lost > 0 { Ok(()) } else { Err(format!("lost=0, events={}", s.events)) }
    });
    println!("  lost={} of events={} at {:.1}s", lossy.lost, lossy.events, lossy.elapsed_s);
    assert!(lossy.events >= first.events, "events is cumulative");

    tracer.assert_running();
    let later = tracer.next_snapshots(2);
    tracer.assert_running();
    assert!(
        later.lost >= lossy.lost && later.events >= lossy.events,
        "counters are cumulative: {later:?}"
    );
    println!("  still running: lost={} events={}", later.lost, later.events);
}

#[test]
fn drift_stays_zero_after_churn() {
    const BATCH: usize = 500;
    const HELD: usize = 40;
    // The VM (software-emulated CPU) sets a smaller churn; the code path is the same.
    let churn: usize =
        std::env::var("TCPTRACE_TEST_CHURN").map_or(20_000, |v| v.parse().expect("a number"));
    println!(
        "checks: after a churn of {churn} connections, reconciling with sock_diag finds drift 0, \
         nothing is lost, and the {HELD} connections held throughout count exactly"
    );
    let ns = Netns::new("ns-drift");
    let listen = v4(127, 76, 0, 1);
    let churned = Server::listen(&ns, at(listen, 21671), Accepted::Close);
    let held_server = Server::listen(&ns, at(listen, 21672), Accepted::Hold);
    // Only the test's namespace, so that a correction elsewhere on the box cannot count.
    let tracer = Tracer::watch_netns(&ns, "1s", &[]);
    let held_clients = connect(&ns, v4(127, 76, 0, 2), at(listen, 21672), HELD);
    held_server.wait_accepted(HELD);

    let started = Instant::now();
    let mut opened = 0;
    while opened < churn {
        // Spread over source addresses so TIME_WAIT never runs a source out of ports.
        let from = v4(127, 76, 1, 1 + (opened / BATCH % 200) as u8);
        let n = BATCH.min(churn - opened);
        drop(connect(&ns, from, at(listen, 21671), n));
        opened += n;
    }
    churned.wait_accepted(churn);
    println!("  churned {churn} connections in {:.1?}", started.elapsed());

    // Let at least one reconciliation run after the churn has settled.
    std::thread::sleep(Duration::from_millis(1500));
    let ports = [21671, 21672];
    let endpoints = [at(listen, 21671), at(listen, 21672)];
    let want = expected(&open_ends(&held_clients, &[&held_server]), &ports, &endpoints);
    let settled = wait_exact(&tracer, "held connections exact after the churn", &want);
    // Two more passes (a correction shows on the second that finds a difference), then
    // no snapshot of the whole run may have reported one.
    let trusted = tracer.wait_for("two reconciliations after the churn settled", |s| {
        if s.elapsed_s > settled.elapsed_s + 2.5 {
            Ok(())
        } else {
            Err(format!("drift={} lost={} events={}", s.drift, s.lost, s.events))
        }
    });
    assert_eq!(trusted.lost, 0, "events lost: {trusted:?}");
    tracer.assert_no_drift("the churn and the held connections");
    println!(
        "  drift 0 on all snapshots (drift_total {}), lost={} events={}",
        trusted.drift_total, trusted.lost, trusted.events
    );
    assert!(trusted.events >= 2 * churn as u64, "saw the churn: {trusted:?}");
}

fn assert_clean_failure(what: &str, exit: &Exit) {
    let code = exit.code();
    assert!(
        code.is_some_and(|c| c != 0),
        "{what}: want a non-zero exit code, got {:?}\nstderr:\n{}",
        exit.status,
        exit.stderr
    );
    assert!(!exit.stderr.contains("panicked"), "{what}: panicked:\n{}", exit.stderr);
}

#[test]
fn bad_input_is_refused_cleanly() {
    println!(
        "checks: bad flags and values exit non-zero with a clear message; a refused hook is one error line, not a panic"
    );
    let limit = ATTACH_WAIT;

    let exit = run_to_exit(&["watch", "--no-such-flag"], limit);
    assert_clean_failure("unknown flag", &exit);
    assert_eq!(exit.code(), Some(2), "unknown flag: clap's exit code\n{}", exit.stderr);
    assert!(exit.stderr.contains("Usage"), "unknown flag: usage text\n{}", exit.stderr);
    println!("  unknown flag: exit 2 with usage");

    // With --duration, a value that is wrongly accepted ends the run with 0 instead of hanging.
    let cases: [(&str, &[&str], &str); 3] = [
        ("--top abc", &["watch", "--json", "--top", "abc", "--duration", "2s"], "top"),
        ("--interval 0s", &["watch", "--json", "--interval", "0s", "--duration", "2s"], "interval"),
        (
            "--ring-size 1000",
            &["watch", "--json", "--ring-size", "1000", "--duration", "2s"],
            "ring",
        ),
    ];
    for (what, args, names) in cases {
        let exit = run_to_exit(args, limit);
        assert_clean_failure(what, &exit);
        let message = exit.stderr.to_lowercase();
        assert!(message.contains(names), "{what}: the message names `{names}`:\n{}", exit.stderr);
        println!(
            "  {what}: exit {:?}: {}",
            exit.code(),
            exit.stderr.lines().find(|l| l.contains("error")).unwrap_or_default()
        );
    }

    for path in ["fentry", "kprobe"] {
        match Tracer::try_watch(&["--attach", path, "--top", "1", "--interval", INTERVAL]) {
            Ok(tracer) => {
                let backend = tracer.first().backend;
                // The printed name, as the `--attach` value that forces it (the table's).
                let forced_by = Path::from_name(&backend).map(|p| p.info().request);
                assert_eq!(
                    forced_by,
                    Some(path),
                    "--attach {path} must use {path} or fail, not fall back (backend {backend})"
                );
                println!("  --attach {path}: skipped, this kernel loads it (backend {backend})");
            }
            Err(exit) => {
                let what = format!("--attach {path}");
                assert_clean_failure(&what, &exit);
                let errors: Vec<&str> =
                    exit.stderr.lines().filter(|l| l.starts_with("tcptrace: error:")).collect();
                assert_eq!(errors.len(), 1, "{what}: one `tcptrace: error:` line\n{}", exit.stderr);
                assert!(
                    errors[0].to_lowercase().contains(path),
                    "{what}: the error names the refused path:\n{}",
                    exit.stderr
                );
                println!("  {what}: exit {:?}: {}", exit.code(), errors[0]);
            }
        }
    }
}

#[test]
fn duration_ends_the_run_cleanly() {
    println!(
        "checks: --duration ends watch and events by themselves with exit 0; watch prints a \
         first and a final snapshot, counters never go down"
    );
    let path = attach_path();
    let limit = ATTACH_WAIT + WAIT;
    let exit = run_to_exit(
        &[
            "watch",
            "--json",
            "--top",
            "3",
            "--interval",
            INTERVAL,
            "--duration",
            "1s",
            "--attach",
            &path,
        ],
        limit,
    );
    assert_eq!(exit.code(), Some(0), "watch --duration 1s: {:?}\n{}", exit.status, exit.stderr);
    let snapshots: Vec<Snapshot> = exit
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a snapshot ({e}): {l}")))
        .collect();
    assert!(snapshots.len() >= 2, "a first and a final snapshot: {snapshots:?}");
    for pair in snapshots.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            b.elapsed_s >= a.elapsed_s && b.events >= a.events && b.lost >= a.lost,
            "elapsed_s, events and lost only grow: {a:?} then {b:?}"
        );
    }
    let last = snapshots.last().expect("checked");
    assert!(last.elapsed_s >= 0.9, "the final snapshot comes after the duration: {last:?}");
    println!("  watch: {} snapshots, the last at {:.2}s", snapshots.len(), last.elapsed_s);

    let exit = run_to_exit(&["events", "--json", "--duration", "1s", "--attach", &path], limit);
    assert_eq!(exit.code(), Some(0), "events --duration 1s: {:?}\n{}", exit.status, exit.stderr);
    assert!(
        exit.stderr.lines().any(|l| l.starts_with("tcptrace: attached")),
        "events says when it is attached:\n{}",
        exit.stderr
    );
    println!("  events: exit 0 after 1s");
}
