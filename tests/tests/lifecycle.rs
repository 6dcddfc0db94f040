//! When a connection starts and stops being live: the README's definition (`ss` states
//! `ESTABLISHED` and `CLOSE_WAIT`) at the moments the hooks can get wrong: a connect held
//! in `SYN_SENT`, `shutdown(SHUT_WR)`, SYN cookies, TCP Fast Open, a reset before
//! `accept()`, listeners closed under their connections, handshakes over a slow link
//! (netem, where the kernel has it), and more handshakes at once than the BPF maps hold.
//!
//! Every test runs twice, each time in a fresh namespace: with reconciliation off (a missed
//! or invented event stays in the counts, which must be exact) and with it every 250 ms (a
//! correction shows as drift, which must be 0 on every snapshot). Each state is held for
//! longer than two passes, the most a correction takes to show. The tracer watches only
//! the test's namespace (`--netns`), so no other traffic on the box can move its counts.
//!
//! Each test owns a namespace, the block 127.90.N.0/24 and listener port 2207N. The tests
//! sit in `mod lifecycle`, so that `-- lifecycle` selects them in every test executable
//! (the VM tier passes one filter to all of them).

mod lifecycle {
    use std::io::ErrorKind;
    use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::thread;
    use std::time::{Duration, Instant};

    use tcptrace_tests::{
        Accepted, EventKind, EventLine, Netns, Server, Snapshot, SnapshotExt, Tracer, Tuple,
        connect, connect_fastopen, expected, listen_unaccepted, netstat, reset, serve_fastopen,
        start_connect, start_connects, state_of, tcp_state, tuple_to, tuples, wait_state,
    };

    /// `--reconcile-every` for the two runs of every test: off, then often.
    const RECONCILE: [&str; 2] = ["0s", "250ms"];
    /// Snapshots (200 ms apart) that must agree once a state is reached: with
    /// reconciliation on, longer than two passes, so that a correction would show.
    const HOLD_OFF: usize = 2;
    const HOLD_RECONCILING: usize = 4;
    /// How long a state may take to show after the step that made it: a few snapshots,
    /// generously for the VM's emulated CPU, and short, so a wrong count fails fast.
    const STEP_WAIT: Duration = Duration::from_secs(20);

    fn block(test: u8, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 90, test, host))
    }

    /// One run of a test: its namespace and the tracer watching it.
    struct Run {
        ns: Netns,
        test: u8,
        reconcile: &'static str,
        listen: SocketAddr,
    }

    impl Run {
        fn new(test: u8, name: &str, reconcile: &'static str) -> Self {
            println!("  --- reconcile every {reconcile} ---");
            let ns = Netns::new(name);
            let listen = SocketAddr::new(block(test, 1), 22070 + u16::from(test));
            Self { ns, test, reconcile, listen }
        }

        fn from(&self, host: u8) -> IpAddr {
            block(self.test, host)
        }

        fn watch(&self) -> Tracer<Snapshot> {
            self.watch_with(&[])
        }

        fn watch_with(&self, filter: &[&str]) -> Tracer<Snapshot> {
            Tracer::watch_netns(&self.ns, self.reconcile, filter)
        }

        /// Waits until a snapshot counts exactly the ends in `live` (every end the test
        /// holds that `ss` shows as `ESTABLISHED` or `CLOSE_WAIT`: the namespace's total,
        /// the listener's port row and endpoint row), then holds it: the next snapshots
        /// must agree, and none may report drift.
        fn settle(&self, tracer: &Tracer<Snapshot>, step: &str, live: &[Tuple]) {
            println!("  {step}: expecting {} live ends", live.len());
            let expect = expected(live, &[self.listen.port()], &[self.listen]);
            let want = u64::try_from(live.len()).expect("fits");
            let check = |s: &Snapshot| {
                if s.drift != 0 {
                    // Fails below, with the drift named.
                    return Ok(());
                }
                let total = if s.live == want {
                    String::new()
                } else {
                    format!("namespace total: want live={want}, got {}\n", s.live)
                };
                match (total.is_empty(), s.check(&expect)) {
                    (true, Ok(())) => Ok(()),
                    (_, rows) => Err(format!("{total}{}", rows.err().unwrap_or_default())),
                }
            };
            let started = Instant::now();
            let seen = tracer.wait_for_within(STEP_WAIT, step, check);
            tracer.assert_no_drift(step);
            let hold = if self.reconcile == "0s" { HOLD_OFF } else { HOLD_RECONCILING };
            for _ in 0..hold {
                let next = tracer.next_snapshots(1);
                if let Err(miss) = check(&next) {
                    panic!(
                        "{step}: matched at {:.1}s, then at {:.1}s:\n{miss}",
                        seen.elapsed_s, next.elapsed_s
                    );
                }
            }
            tracer.assert_no_drift(step);
            println!(
                "    seen after {:.1?}, held for {hold} more snapshots, drift 0",
                started.elapsed()
            );
        }
    }

    fn both_ends(streams: &[TcpStream]) -> Vec<Tuple> {
        let mut ends = tuples(streams);
        ends.extend(tuples(streams).into_iter().map(Tuple::reversed));
        ends
    }

    fn accept(listener: &TcpListener) -> TcpStream {
        listener.accept().expect("accept a queued connection").0
    }

    #[test]
    fn syn_sent_is_not_live_until_the_handshake_completes() {
        println!(
            "checks: a connect held in SYN_SENT (its SYNs dropped by a full accept queue) is not \
             live; it becomes live when the handshake completes, client and server end together"
        );
        for reconcile in RECONCILE {
            let run = Run::new(1, "ns-life-synsent", reconcile);
            // Backlog 0 queues one connection; the next SYNs are dropped while it waits.
            let listener = listen_unaccepted(&run.ns, run.listen, 0);
            let tracer = run.watch();
            let filler = connect(&run.ns, run.from(2), run.listen, 1);
            let mut live = both_ends(&filler);
            run.settle(&tracer, "one connection fills the accept queue", &live);

            let held = start_connect(&run.ns, SocketAddr::new(run.from(3), 0), run.listen);
            thread::sleep(Duration::from_millis(100));
            assert_eq!(state_of(&held), tcp_state::SYN_SENT, "the full queue holds the connect");
            run.settle(&tracer, "a second connect held in SYN_SENT: not live", &live);
            assert_eq!(state_of(&held), tcp_state::SYN_SENT, "still SYN_SENT after the checks");

            // Room in the queue: the next retransmitted SYN (1 s, 3 s, 7 s after the
            // first) completes the handshake.
            let accepted = accept(&listener);
            wait_state(&held, tcp_state::ESTABLISHED, Duration::from_secs(20), "the held connect");
            let held_tuple = tuple_to(&held, run.listen);
            live.extend([held_tuple, held_tuple.reversed()]);
            run.settle(&tracer, "its handshake completed: both ends live", &live);

            drop((filler, accepted, held, listener));
            run.settle(&tracer, "everything closed", &[]);
        }
    }

    #[test]
    fn shutdown_write_ends_live_on_the_closing_side_only() {
        println!(
            "checks: shutdown(SHUT_WR) on a socket still held ends its being live (FIN_WAIT), \
             while the peer end, now CLOSE_WAIT, stays live; either side first"
        );
        for reconcile in RECONCILE {
            let run = Run::new(2, "ns-life-shutwr", reconcile);
            let listener = listen_unaccepted(&run.ns, run.listen, 8);
            let tracer = run.watch();
            let clients = connect(&run.ns, run.from(2), run.listen, 2);
            let servers = [accept(&listener), accept(&listener)];
            let mut live = both_ends(&clients);
            run.settle(&tracer, "two connections held", &live);

            clients[0].shutdown(Shutdown::Write).expect("shutdown(SHUT_WR)");
            let wait = Duration::from_secs(10);
            wait_state(&clients[0], tcp_state::FIN_WAIT2, wait, "the client end shut down");
            wait_state(&servers[0], tcp_state::CLOSE_WAIT, wait, "its server end");
            let gone = Tuple::of(&clients[0]);
            live.retain(|t| *t != gone);
            run.settle(&tracer, "client end shut for writing (FIN_WAIT2): not live", &live);

            let server_end = Tuple::of(&servers[1]);
            servers[1].shutdown(Shutdown::Write).expect("shutdown(SHUT_WR)");
            wait_state(&servers[1], tcp_state::FIN_WAIT2, wait, "the server end shut down");
            wait_state(&clients[1], tcp_state::CLOSE_WAIT, wait, "its client end");
            live.retain(|t| *t != server_end);
            run.settle(&tracer, "server end shut for writing: not live, its client is", &live);

            drop((clients, servers, listener));
            run.settle(&tracer, "everything closed", &[]);
        }
    }

    #[test]
    fn syn_cookie_children_are_live_from_their_final_ack() {
        println!(
            "checks: with SYN cookies forced (tcp_syncookies=2), every child is live from its \
             final ACK: queued and never accepted, or returned to an accept() that was blocked \
             before the tracer started"
        );
        for reconcile in RECONCILE {
            let run = Run::new(3, "ns-life-cookie", reconcile);
            run.ns.sysctl("net.ipv4.tcp_syncookies", "2").expect("tcp_syncookies=2");
            // Blocked in accept() before the tracer attaches.
            let accepting = Server::listen(&run.ns, run.listen, Accepted::Hold);
            let queued_at = SocketAddr::new(run.listen.ip(), run.listen.port() + 100);
            let queue = listen_unaccepted(&run.ns, queued_at, 7);
            let tracer = run.watch();

            let cookies = netstat(&run.ns, "SyncookiesRecv");
            let mut clients = connect(&run.ns, run.from(2), run.listen, 5);
            clients.extend(connect(&run.ns, run.from(3), queued_at, 8));
            accepting.wait_accepted(5);
            let mut live = tuples(&clients);
            live.extend(accepting.open());
            live.extend(tuples(&clients[5..]).into_iter().map(Tuple::reversed));
            // A child appears at its final ACK, a moment after connect() returns.
            let deadline = Instant::now() + Duration::from_secs(10);
            while netstat(&run.ns, "SyncookiesRecv") < cookies + 13 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            let used = netstat(&run.ns, "SyncookiesRecv") - cookies;
            assert_eq!(used, 13, "every handshake ended with a valid cookie (SyncookiesRecv)");
            run.settle(&tracer, "5 accepted and 8 queued children, all from cookies", &live);

            drop((clients, queue));
            accepting.close_where(|_| true);
            run.settle(&tracer, "everything closed", &[]);
        }
    }

    #[test]
    fn fast_open_children_are_live_from_their_final_ack() {
        println!(
            "checks: TCP Fast Open (tcp_fastopen=3, data in the SYN) children are live from the \
             final ACK, queued or accepted, and their clients from the SYN-ACK"
        );
        for reconcile in RECONCILE {
            let run = Run::new(4, "ns-life-tfo", reconcile);
            run.ns.sysctl("net.ipv4.tcp_fastopen", "3").expect("tcp_fastopen=3");
            let accepting = Server::listen(&run.ns, run.listen, Accepted::Hold);
            serve_fastopen(accepting.listener(), 16);
            let queued_at = SocketAddr::new(run.listen.ip(), run.listen.port() + 100);
            let queue = listen_unaccepted(&run.ns, queued_at, 15);
            serve_fastopen(&queue, 16);
            let tracer = run.watch();

            // The first connect to an address gets the cookie that lets the next ones
            // carry data in their SYN.
            let from = SocketAddr::new(run.from(2), 0);
            let mut clients = vec![connect_fastopen(&run.ns, from, run.listen, b"cookie?")];
            let passive = netstat(&run.ns, "TCPFastOpenPassive");
            for _ in 0..4 {
                clients.push(connect_fastopen(&run.ns, from, run.listen, b"hello"));
                clients.push(connect_fastopen(&run.ns, from, queued_at, b"hello"));
            }
            let fast = netstat(&run.ns, "TCPFastOpenPassive") - passive;
            assert_eq!(fast, 8, "every later connect opened fast (TCPFastOpenPassive)");
            accepting.wait_accepted(5);
            let mut live = tuples(&clients);
            live.extend(accepting.open());
            let queued: Vec<Tuple> =
                tuples(&clients).into_iter().filter(|t| t.peer == queued_at).collect();
            live.extend(queued.iter().map(|t| t.reversed()));
            run.settle(&tracer, "5 accepted and 4 queued Fast Open connections", &live);

            drop((clients, queue));
            accepting.close_where(|_| true);
            run.settle(&tracer, "everything closed", &[]);
        }
    }

    #[test]
    fn a_reset_before_accept_is_not_live_again_when_accepted() {
        println!(
            "checks: a client that connects and resets (SO_LINGER 0) before the server's \
             accept() is gone at the reset, and accept() returning its dead server end does \
             not make it live again"
        );
        for reconcile in RECONCILE {
            let run = Run::new(5, "ns-life-reset", reconcile);
            let listener = listen_unaccepted(&run.ns, run.listen, 8);
            let tracer = run.watch();
            let mut clients = connect(&run.ns, run.from(2), run.listen, 3);
            run.settle(&tracer, "three connections queued", &both_ends(&clients));

            let kept = clients.split_off(2);
            for client in clients {
                reset(client);
            }
            let live = both_ends(&kept);
            run.settle(&tracer, "two clients reset before accept()", &live);

            // The reset children are still in the queue, first in line, and accept()
            // returns them (dead: CLOSE) before the kept one.
            listener.set_nonblocking(true).expect("O_NONBLOCK");
            let mut accepted = Vec::new();
            loop {
                match listener.accept() {
                    Ok((stream, _)) => accepted.push(stream),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("accept: {e}"),
                }
            }
            let dead = accepted.iter().filter(|s| state_of(*s) == tcp_state::CLOSE).count();
            println!("    accept() returned {} ends, {dead} of them reset", accepted.len());
            assert!(dead >= 1, "accept() returned no reset end: nothing was exercised");
            run.settle(&tracer, "the reset ends accepted: still not live", &live);

            drop((kept, accepted, listener));
            run.settle(&tracer, "everything closed", &[]);
        }
    }

    #[test]
    fn accepted_connections_outlive_their_listener() {
        println!("checks: closing a listener leaves the connections it accepted live");
        for reconcile in RECONCILE {
            let run = Run::new(6, "ns-life-outlive", reconcile);
            let server = Server::listen(&run.ns, run.listen, Accepted::Hold);
            let tracer = run.watch();
            let clients = connect(&run.ns, run.from(2), run.listen, 3);
            server.wait_accepted(3);
            let live = both_ends(&clients);
            run.settle(&tracer, "three connections accepted", &live);

            let held = server.close_listener();
            assert_eq!(held.len(), 3);
            run.settle(&tracer, "listener closed: the accepted ones stay live", &live);

            drop((clients, held));
            run.settle(&tracer, "everything closed", &[]);
        }
    }

    #[test]
    fn closing_a_listener_ends_its_queued_connections() {
        println!(
            "checks: a listener closed with connections in its accept queue resets them: both \
             ends of each stop being live, the accepted one stays"
        );
        for reconcile in RECONCILE {
            let run = Run::new(7, "ns-life-unqueue", reconcile);
            let listener = listen_unaccepted(&run.ns, run.listen, 8);
            let tracer = run.watch();
            let accepted_client = connect(&run.ns, run.from(2), run.listen, 1);
            let accepted = accept(&listener);
            let queued = connect(&run.ns, run.from(3), run.listen, 4);
            let mut live = both_ends(&accepted_client);
            live.extend(both_ends(&queued));
            run.settle(&tracer, "one accepted, four queued", &live);

            drop(listener);
            for client in &queued {
                wait_state(client, tcp_state::CLOSE, Duration::from_secs(10), "a queued client");
            }
            let live = both_ends(&accepted_client);
            run.settle(&tracer, "listener closed: the queued ones reset", &live);

            drop((accepted_client, accepted, queued));
            run.settle(&tracer, "everything closed", &[]);
        }
    }

    /// The one-way delay the slow-link test puts on its namespace's loopback: a handshake
    /// takes three (SYN, SYN-ACK, final ACK), under the 1 s initial RTO, so nothing is sent
    /// twice.
    const LINK_DELAY: Duration = Duration::from_millis(300);

    /// Delays every packet on `ns`'s loopback by `delay` (`tc qdisc add dev lo root netem`).
    /// `Err` only when the kernel has no netem qdisc (this project's host has none: see
    /// PLATFORM.md); any other failure of `tc` fails the test.
    fn delay_loopback(ns: &Netns, delay: Duration) -> Result<(), String> {
        let delay = format!("{}ms", delay.as_millis());
        let out = ns
            .run(move || {
                std::process::Command::new("tc")
                    .args(["qdisc", "add", "dev", "lo", "root", "netem", "delay", &delay])
                    .output()
            })
            .expect("run tc (iproute2)");
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if out.status.success() {
            Ok(())
        } else if stderr.contains("qdisc kind is unknown") {
            Err(format!("this kernel has no netem qdisc (sch_netem): tc says {stderr:?}"))
        } else {
            panic!("tc qdisc add dev lo root netem: {}: {stderr}", out.status)
        }
    }

    /// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns()`, which stamps
    /// the events.
    fn monotonic_ns() -> u64 {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec, which `now` is.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
        u64::try_from(now.tv_sec).expect("after boot") * 1_000_000_000
            + u64::try_from(now.tv_nsec).expect("in range")
    }

    #[test]
    fn a_handshake_over_a_slow_link_is_live_from_its_syn_ack() {
        const COUNT: usize = 4;
        println!(
            "checks: with netem delaying the namespace's loopback {LINK_DELAY:?} each way, a \
             client's connect event comes no sooner than two delays after connect() (the \
             SYN-ACK), its server end's accept no sooner than three (the final ACK); \
             reconciliations in the middle of handshakes correct nothing"
        );
        for reconcile in RECONCILE {
            let run = Run::new(9, "ns-life-netem", reconcile);
            if let Err(why) = delay_loopback(&run.ns, LINK_DELAY) {
                println!("  skipped: {why}");
                return;
            }
            let server = Server::listen(&run.ns, run.listen, Accepted::Hold);
            let inode = run.ns.inode().to_string();
            let events = Tracer::events_with(&["--netns", &inode], &[run.listen.port()]);
            let tracer = run.watch();

            let mut clients = Vec::new();
            let mut called = Vec::new();
            for _ in 0..COUNT {
                let at = monotonic_ns();
                clients.extend(connect(&run.ns, run.from(2), run.listen, 1));
                called.push(at);
            }
            server.wait_accepted(COUNT);
            let dialled = tuples(&clients);
            let seen = events.wait_events("a connect and an accept event per connection", |evs| {
                let missing = dialled.iter().filter(|t| {
                    !evs.iter().any(|e| is_end(e, EventKind::Connect, t))
                        || !evs.iter().any(|e| is_end(e, EventKind::Accept, &t.reversed()))
                });
                match missing.count() {
                    0 => Ok(()),
                    n => Err(format!("{n} of {COUNT} connections lack an event")),
                }
            });
            let delay = u64::try_from(LINK_DELAY.as_nanos()).expect("fits");
            for (t, &at) in dialled.iter().zip(&called) {
                let stamp = |kind, end: &Tuple| {
                    seen.iter().find(|e| is_end(e, kind, end)).map(|e| e.ts_ns).expect("seen")
                };
                let connect_after = stamp(EventKind::Connect, t).saturating_sub(at);
                let accept_after = stamp(EventKind::Accept, &t.reversed()).saturating_sub(at);
                println!(
                    "    {}: connect event {} ms after connect(), accept {} ms",
                    t.local,
                    connect_after / 1_000_000,
                    accept_after / 1_000_000
                );
                assert!(
                    connect_after >= 2 * delay,
                    "{t:?}: the client counted live {connect_after} ns after connect(), before \
                     its SYN-ACK could arrive ({} ns)",
                    2 * delay
                );
                assert!(
                    accept_after >= 3 * delay,
                    "{t:?}: the server end counted live {accept_after} ns after connect(), \
                     before the final ACK could arrive ({} ns)",
                    3 * delay
                );
            }
            run.settle(&tracer, "connections made over the slow link", &both_ends(&clients));

            drop(clients);
            let server_ends: Vec<Tuple> = dialled.iter().map(|t| t.reversed()).collect();
            run.settle(&tracer, "clients closed: their server ends in CLOSE_WAIT", &server_ends);
            server.close_where(|_| true);
            run.settle(&tracer, "everything closed", &[]);
        }
    }

    /// Whether `e` is a `kind` event of the connection end `end` (local, then peer).
    fn is_end(e: &EventLine, kind: EventKind, end: &Tuple) -> bool {
        e.event == kind
            && SocketAddr::new(e.laddr, e.lport) == end.local
            && SocketAddr::new(e.raddr, e.rport) == end.peer
    }

    /// Entries of the `CONNECTING` map (tcptrace-ebpf/src/maps.rs), which
    /// remembers who called `connect()` from `SYN_SENT` to `ESTABLISHED` when details are on
    /// (`events`, `--pid`).
    const CONNECTING_ENTRIES: usize = 16_384;

    #[test]
    // The cause, measured on the host: the held sockets' SYN retransmissions expire in
    // batches (timer-wheel buckets of about 0.5 s at RTOs of 4 to 16 s), more than the
    // per-CPU loopback backlog holds (net.core.netdev_max_backlog 1000, box-wide): one run
    // dropped 66,240 packets (/proc/net/softnet_stat), and the dropped SYNs wait for the
    // next backoff (31 s, 63 s). After 30 s, 5,611 of 17,384 were still in SYN_SENT.
    #[ignore = "unfinished: the held connects' retransmitted SYNs overflow the box-wide \
                loopback backlog (see above), so not all complete within 30 s; run with \
                --ignored"]
    fn more_handshakes_at_once_than_the_connecting_map_holds() {
        // 1,000 beyond the map: enough to show an eviction, and with the test's other
        // descriptors under this host's RLIMIT_NOFILE of 20,000 (which cannot be raised:
        // no CAP_SYS_RESOURCE). The server ends wait in the accept queue, holding no
        // descriptor. ADMITTED (65,536, under --pid) is out of one process's reach.
        const HANDSHAKES: usize = CONNECTING_ENTRIES + 1_000;
        println!(
            "checks: under --pid, {HANDSHAKES} connects in SYN_SENT at once (more than the \
             {CONNECTING_ENTRIES} the CONNECTING map holds) are not live, and each is live, \
             attributed to this process, once its handshake completes"
        );
        // The limit as the tests raise it (soft to hard).
        tcptrace_tests::init();
        let (nofile, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .expect("getrlimit(NOFILE)");
        if nofile < u64::try_from(HANDSHAKES + 500).expect("fits") {
            println!("  skipped: RLIMIT_NOFILE is {nofile}, {HANDSHAKES} sockets need more");
            return;
        }
        let pid = std::process::id().to_string();
        for reconcile in RECONCILE {
            let run = Run::new(8, "ns-life-lru", reconcile);
            run.ns.sysctl("net.core.somaxconn", "20000").expect("somaxconn");
            let full = listen_unaccepted(&run.ns, run.listen, 0);
            let filler = connect(&run.ns, run.from(2), run.listen, 1);
            let tracer = run.watch_with(&["--pid", &pid]);
            // Under --pid a queued server end belongs to no process: only clients count.
            run.settle(&tracer, "one client, its server end filling the queue", &tuples(&filler));

            let started = Instant::now();
            let held =
                start_connects(&run.ns, SocketAddr::new(run.from(3), 0), run.listen, HANDSHAKES);
            println!("    {HANDSHAKES} connects started in {:.1?}", started.elapsed());
            assert!(held.iter().all(|s| state_of(s) == tcp_state::SYN_SENT), "all in SYN_SENT");
            run.settle(&tracer, "all of them held in SYN_SENT: not live", &tuples(&filler));

            // A listener with room for all: the next retransmitted SYNs complete.
            drop((filler, full));
            let _room = listen_unaccepted(&run.ns, run.listen, 20_000);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !held.iter().all(|s| state_of(s) == tcp_state::ESTABLISHED) {
                assert!(
                    Instant::now() < deadline,
                    "the held connects did not all complete; sockets by state: {:?}",
                    tcptrace_tests::tally(&held, |s| state_of(*s))
                );
                thread::sleep(Duration::from_millis(100));
            }
            println!("    all established {:.1?} after the first SYN", started.elapsed());
            let live: Vec<Tuple> = held.iter().map(|s| tuple_to(s, run.listen)).collect();
            run.settle(&tracer, "every handshake completed: each client live", &live);

            drop(held);
            run.settle(&tracer, "everything closed", &[]);
        }
    }
}
