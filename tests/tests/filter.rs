//! The in-kernel filters against real connections: filtered-out traffic never reaches user
//! space (and is counted as `filtered`), while a second, unfiltered tracer still sees it;
//! the seed and the reconciliation apply the same filter, so the counts start exact and
//! drift stays 0. Addresses 127.83.0.0/16, ports 21301-21312.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tcptrace_tests::{
    Accepted, EventKind, EventLineExt, INTERVAL, Netns, Server, Snapshot, Tracer, connect,
    run_to_exit, tuples,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Every local port row of `s`, as (port, live).
fn port_rows(s: &Snapshot) -> BTreeSet<(u16, u64)> {
    s.local_ports.iter().map(|r| (r.port, r.live)).collect()
}

type CapacityRows = (BTreeSet<(u16, u64)>, BTreeSet<(SocketAddr, u64)>);

/// The listener rows (port, live) and destination rows (remote, ports in use) of `s`: the
/// capacity rows, which count only what passes the filter too.
fn capacity_rows(s: &Snapshot) -> CapacityRows {
    (
        s.listeners.iter().map(|l| (l.port, l.live)).collect(),
        s.destinations
            .iter()
            .map(|d| (SocketAddr::new(d.raddr, d.rport), d.ports_in_use))
            .collect(),
    )
}

/// Checks that every snapshot of a filtered run so far has drift 0.
fn no_drift(s: &Snapshot) -> Result<(), String> {
    if s.drift == 0 { Ok(()) } else { Err(format!("drift {} in a filtered run", s.drift)) }
}

#[test]
fn filter_events_carry_only_the_filtered_local_port() {
    const A: u16 = 21301;
    const B: u16 = 21302;
    println!(
        "checks: `events --lport A --netns NS` prints exactly A's server-side accepts and closes, \
         nothing of B's connections nor of A's client ends"
    );
    let ns = Netns::new("ns-filter-ev");
    let inode = ns.inode().to_string();
    let tracer = Tracer::events_with(&["--lport", &A.to_string(), "--netns", &inode], &[A, B]);
    // Listening after attaching: on the fentry and kprobe paths an accept() that was
    // already blocked when tcptrace attached is never seen returning.
    let server_a = Server::listen(&ns, SocketAddr::new(ip("127.83.0.1"), A), Accepted::Hold);
    let server_b = Server::listen(&ns, SocketAddr::new(ip("127.83.0.1"), B), Accepted::Hold);

    // B first: had the filter let it through, its events would be in the ring before A's.
    let b = connect(&ns, ip("127.83.0.2"), server_b.addr(), 4);
    server_b.wait_accepted(4);
    let a = connect(&ns, ip("127.83.0.2"), server_a.addr(), 3);
    server_a.wait_accepted(3);
    server_a.close_peers_of(&tuples(&a));
    server_b.close_peers_of(&tuples(&b));
    let want: BTreeSet<_> = tuples(&a).into_iter().map(tcptrace_tests::Tuple::reversed).collect();
    tracer.wait_events("3 accepts and 3 closes on A", |events| {
        let of = |kind| events.iter().filter(|e| e.event == kind).count();
        if of(EventKind::Accept) == 3 && of(EventKind::Close) == 3 {
            Ok(())
        } else {
            Err(format!("{} accepts, {} closes", of(EventKind::Accept), of(EventKind::Close)))
        }
    });
    // Give B's events, had they been written, time to be drained.
    thread::sleep(Duration::from_millis(500));
    let events = tracer.wait_events("the same events after a pause", |_| Ok(()));
    for e in &events {
        assert_eq!(e.lport, A, "an event the filter should have kept out: {e:?}");
        assert!(want.contains(&e.tuple()), "not one of A's server ends: {e:?}");
        assert_eq!(e.netns, ns.inode());
    }
    assert_eq!(events.len(), 6, "{events:#?}");
    println!("  {} events, all on local port {A}", events.len());
    drop((a, b));
}

#[test]
fn filter_watch_counts_exactly_the_filtered_connections_while_others_go_on() {
    const A: u16 = 21303;
    const B: u16 = 21304;
    println!(
        "checks: `watch --lport A --netns /proc/PID/task/TID/ns/net` seeds and counts exactly A's \
         server ends, with drift 0 after reconciling, `filtered` grows by at least B's events, \
         and an unfiltered tracer sees B's connections at the same time"
    );
    let ns = Netns::new("ns-filter-watch");
    let server_a = Server::listen(&ns, SocketAddr::new(ip("127.83.1.1"), A), Accepted::Hold);
    let server_b = Server::listen(&ns, SocketAddr::new(ip("127.83.1.1"), B), Accepted::Hold);
    // Open before the tracer starts: the seed must filter them the same way.
    let mut a = connect(&ns, ip("127.83.1.2"), server_a.addr(), 2);
    let mut b = connect(&ns, ip("127.83.1.2"), server_b.addr(), 2);
    server_a.wait_accepted(2);
    server_b.wait_accepted(2);

    let ns_path = format!("/proc/{}/task/{}/ns/net", std::process::id(), ns.tid());
    let filtered = Tracer::watch_reconciling(&["--lport", &A.to_string(), "--netns", &ns_path]);
    let inode = ns.inode().to_string();
    let everything = Tracer::watch(&["--netns", &inode, "--top", "0", "--interval", INTERVAL]);
    let first = filtered.first();
    assert_eq!(port_rows(&first), BTreeSet::from([(A, 2)]), "seeded exactly: {first:?}");
    assert_eq!(first.live, 2);
    // The client ends use ephemeral local ports: no destination passes --lport A.
    assert_eq!(capacity_rows(&first), (BTreeSet::from([(A, 2)]), BTreeSet::new()), "{first:?}");
    no_drift(&first).unwrap();

    a.extend(connect(&ns, ip("127.83.1.3"), server_a.addr(), 3));
    b.extend(connect(&ns, ip("127.83.1.3"), server_b.addr(), 5));
    server_a.wait_accepted(5);
    server_b.wait_accepted(7);
    // Each new connection to B is at least a connect and an accept (plus the server-side
    // handshake on fentry/kprobe); each new one to A at least its client-side connect.
    let least_filtered = first.filtered + 5 * 2 + 3;
    let s = filtered.wait_for("A's 5 server ends, nothing else", |s| {
        no_drift(s)?;
        let rows = port_rows(s);
        let capacity = capacity_rows(s);
        if s.live == 5
            && rows == BTreeSet::from([(A, 5)])
            && capacity == (BTreeSet::from([(A, 5)]), BTreeSet::new())
            && s.filtered >= least_filtered
        {
            Ok(())
        } else {
            Err(format!(
                "live {} rows {rows:?} capacity rows {capacity:?} filtered {}",
                s.live, s.filtered
            ))
        }
    });
    for r in &s.remote_endpoints {
        assert!(r.port != A && r.port != B, "a client end got through: {r:?}");
    }
    everything.wait_for("both ends of all 12 connections", |s| {
        if s.live == 24 { Ok(()) } else { Err(format!("live {}", s.live)) }
    });
    // Two snapshots later at least one reconciliation has run (every 400ms); the ledger and the
    // filtered sock_diag view must still agree.
    let later = filtered.next_snapshots(2);
    assert_eq!(filtered.max_drift(), 0, "a reconciliation found what the hooks missed");
    assert_eq!(port_rows(&later), BTreeSet::from([(A, 5)]));
    println!(
        "  filtered run: live {} events {} filtered {} (+{} since start) drift {}",
        later.live,
        later.events,
        later.filtered,
        later.filtered - first.filtered,
        later.drift
    );

    server_a.close_peers_of(&tuples(&a[..2]));
    filtered.wait_for("A down to 3", |s| {
        no_drift(s)?;
        if s.live == 3 { Ok(()) } else { Err(format!("live {}", s.live)) }
    });
    assert_eq!(filtered.max_drift(), 0, "a reconciliation found what the hooks missed");
    drop((a, b));
}

#[test]
fn filter_addr_matches_the_remote_address_in_both_families() {
    const V4: u16 = 21305;
    const V6: u16 = 21306;
    const DUAL: u16 = 21307;
    println!(
        "checks: `--addr 127.83.2.2/32 --addr ::1` counts the connections whose remote end is \
         127.83.2.2 (also as an IPv4-mapped peer of a dual-stack listener) or ::1, seeded and live"
    );
    let ns = Netns::new("ns-filter-addr");
    let v4 = Server::listen(&ns, SocketAddr::new(ip("127.83.2.1"), V4), Accepted::Hold);
    let v6 = Server::listen(&ns, SocketAddr::new(ip("::1"), V6), Accepted::Hold);
    let dual = Server::listen(&ns, SocketAddr::new(ip("::"), DUAL), Accepted::Hold);
    // Matching: the server ends of 127.83.2.2's connections, both ends of ::1's.
    let mut held = connect(&ns, ip("127.83.2.2"), v4.addr(), 1);
    held.extend(connect(&ns, ip("::1"), v6.addr(), 1));
    // Not matching: another client address; the client ends (remote 127.83.2.1).
    held.extend(connect(&ns, ip("127.83.2.3"), v4.addr(), 2));
    v4.wait_accepted(3);
    v6.wait_accepted(1);

    let inode = ns.inode().to_string();
    let tracer =
        Tracer::watch_reconciling(&["--netns", &inode, "--addr", "127.83.2.2/32", "--addr", "::1"]);
    let first = tracer.first();
    assert_eq!(first.live, 3, "seeded: 1 IPv4 server end + both ends over ::1: {first:?}");

    held.extend(connect(&ns, ip("127.83.2.2"), v4.addr(), 2));
    held.extend(connect(&ns, ip("::1"), v6.addr(), 1));
    held.extend(connect(&ns, ip("127.83.2.3"), v4.addr(), 3));
    held.extend(connect(&ns, ip("127.83.2.2"), SocketAddr::new(ip("127.83.2.1"), DUAL), 1));
    v4.wait_accepted(8);
    v6.wait_accepted(2);
    dual.wait_accepted(1);
    // The listeners count their matching connections only; the one client side that
    // matches is ::1's towards V6.
    let want_capacity = (
        BTreeSet::from([(V4, 3), (V6, 2), (DUAL, 1)]),
        BTreeSet::from([(SocketAddr::new(ip("::1"), V6), 2)]),
    );
    let s = tracer.wait_for("3 + 4 + 1 matching ends", |s| {
        no_drift(s)?;
        let capacity = capacity_rows(s);
        if s.live == 8 && capacity == want_capacity {
            Ok(())
        } else {
            Err(format!("live {} capacity rows {capacity:?}", s.live))
        }
    });
    let remotes: BTreeSet<IpAddr> = s.remote_endpoints.iter().map(|r| r.addr).collect();
    assert_eq!(remotes, BTreeSet::from([ip("127.83.2.2"), ip("::1")]), "{s:?}");
    assert!(port_rows(&s).contains(&(DUAL, 1)), "the IPv4-mapped peer: {s:?}");
    let later = tracer.next_snapshots(2);
    assert_eq!(tracer.max_drift(), 0, "a reconciliation found what the hooks missed");
    assert_eq!(later.live, 8);
    drop(held);
}

// ---- --pid and --cgroup: a forked client process ---------------------------------------

/// A forked child that opens one connection to `to` per byte it reads from its control
/// pipe, answers one byte per connection, and holds them until the pipe closes. Forked
/// from a threaded process, it only makes raw system calls.
struct Client {
    pid: libc::pid_t,
    control: Option<OwnedFd>,
    answers: OwnedFd,
}

impl Client {
    fn fork(to: SocketAddr) -> Self {
        let SocketAddr::V4(to) = to else { panic!("IPv4 only") };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: to.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*to.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let (control_r, control_w) = pipe();
        let (answers_r, answers_w) = pipe();
        // SAFETY: the child only calls async-signal-safe functions and then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // The child's copies of the parent's ends: closed, so that the parent closing
            // the control pipe reaches the child as end of file.
            // Every other inherited descriptor too: `--pid` in user space counts the
            // sockets a process holds, and this one must hold only its own.
            let keep = [control_r.as_raw_fd(), answers_w.as_raw_fd()];
            unsafe {
                for fd in 3..4096 {
                    if !keep.contains(&fd) {
                        libc::close(fd);
                    }
                }
                client_main(keep[0], keep[1], &addr)
            }
        }
        Self { pid, control: Some(control_w), answers: answers_r }
    }

    /// Opens one more connection and waits until it is established.
    fn connect(&self) {
        let mut byte = [b'c'];
        // SAFETY: plain reads and writes on pipes this struct owns.
        unsafe {
            let control = self.control.as_ref().expect("open until drop").as_raw_fd();
            assert_eq!(libc::write(control, byte.as_ptr().cast(), 1), 1);
            assert_eq!(libc::read(self.answers.as_raw_fd(), byte.as_mut_ptr().cast(), 1), 1);
        }
        assert_eq!(byte[0], 1, "the client's connect failed");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Closing its control pipe makes the child exit.
        drop(self.control.take());
        // SAFETY: our own child.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

unsafe fn client_main(control: i32, answers: i32, addr: &libc::sockaddr_in) -> ! {
    let mut byte = [0u8];
    unsafe {
        while libc::read(control, byte.as_mut_ptr().cast(), 1) == 1 {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            let ok = fd >= 0
                && libc::connect(
                    fd,
                    std::ptr::from_ref(addr).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ) == 0;
            let answer = [u8::from(ok)];
            libc::write(answers, answer.as_ptr().cast(), 1);
        }
        libc::_exit(0)
    }
}

/// A listener in the tracer's own namespace whose accepted ends the test process holds.
struct HostServer {
    addr: SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl HostServer {
    fn listen(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("listen on {addr}: {e}"));
        let held = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&held);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                sink.lock().unwrap().push(stream);
            }
        });
        Self { addr, held }
    }

    fn wait_accepted(&self, n: usize) {
        for _ in 0..3000 {
            if self.held.lock().unwrap().len() >= n {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("{}: fewer than {n} accepted", self.addr);
    }
}

/// Runs the owner filter `flag value` against a client process that opens one connection
/// before the tracer starts and two after, while the test process holds the server ends:
/// exactly the client's ends are counted, from the seed on, with drift 0.
fn owner_filter_counts_only_the_clients_connections(
    client: &Client,
    server: &HostServer,
    flag: &str,
    value: &str,
) {
    client.connect();
    server.wait_accepted(1);
    let tracer = Tracer::watch_reconciling(&[flag, value]);
    let first = tracer.first();
    let to_server = |s: &Snapshot| -> u64 {
        s.remote_endpoints.iter().filter(|r| r.addr == server.addr.ip()).map(|r| r.live).sum()
    };
    assert_eq!((first.live, to_server(&first)), (1, 1), "seeded: the client's end: {first:?}");
    no_drift(&first).unwrap();
    client.connect();
    client.connect();
    server.wait_accepted(3);
    tracer.wait_for("the client's 3 ends, none of the server's", |s| {
        no_drift(s)?;
        let server_rows = s.local_ports.iter().any(|r| r.port == server.addr.port());
        if s.live == 3 && to_server(s) == 3 && !server_rows {
            Ok(())
        } else {
            Err(format!("live {} to server {} rows {:?}", s.live, to_server(s), port_rows(s)))
        }
    });
    let later = tracer.next_snapshots(2);
    assert_eq!(tracer.max_drift(), 0, "a reconciliation found what the hooks missed");
    assert_eq!(later.live, 3);
    println!(
        "  {flag} {value}: live {} filtered {} drift {}",
        later.live, later.filtered, later.drift
    );
}

#[test]
fn filter_pid_counts_the_connections_of_one_process() {
    println!("checks: `--pid CHILD` counts the child's client ends, not the test's server ends");
    let server = HostServer::listen("127.83.3.1:21308".parse().unwrap());
    let client = Client::fork(server.addr);
    owner_filter_counts_only_the_clients_connections(
        &client,
        &server,
        "--pid",
        &client.pid.to_string(),
    );
}

#[test]
fn filter_pid_counts_the_server_ends_its_process_accepts() {
    const PORT: u16 = 21310;
    println!(
        "checks: `--pid TEST` counts the server ends the test process accepts (seeded, then \
         live, on every path: the tracepoint paths see accept() return), not the child's \
         client ends, with drift 0"
    );
    let server = HostServer::listen(SocketAddr::new(ip("127.83.5.1"), PORT));
    let client = Client::fork(server.addr);
    client.connect();
    server.wait_accepted(1);
    let me = std::process::id().to_string();
    let tracer = Tracer::watch_reconciling(&["--pid", &me]);
    // Earlier tests' servers may still hold ends in this process: look at PORT only.
    let server_ends = |s: &Snapshot| s.local_ports.iter().find(|r| r.port == PORT).map(|r| r.live);
    let client_ends = |s: &Snapshot| -> u64 {
        s.remote_endpoints.iter().filter(|r| r.port == PORT).map(|r| r.live).sum()
    };
    let first = tracer.first();
    assert_eq!((server_ends(&first), client_ends(&first)), (Some(1), 0), "seeded: {first:?}");
    no_drift(&first).unwrap();
    for _ in 0..3 {
        client.connect();
    }
    server.wait_accepted(4);
    tracer.wait_for("the 4 server ends, none of the child's", |s| {
        no_drift(s)?;
        if server_ends(s) == Some(4) && client_ends(s) == 0 {
            Ok(())
        } else {
            Err(format!("server ends {:?} client ends {}", server_ends(s), client_ends(s)))
        }
    });
    // At least one reconciliation later the hooks' count still agrees with sock_diag's.
    let later = tracer.next_snapshots(2);
    assert_eq!(tracer.max_drift(), 0, "a reconciliation found what the hooks missed");
    assert_eq!(server_ends(&later), Some(4));
    println!(
        "  --pid {me}: {PORT} live {:?} filtered {} drift {}",
        server_ends(&later),
        later.filtered,
        later.drift
    );
}

#[test]
fn filter_cgroup_counts_the_sockets_created_in_it() {
    println!("checks: `--cgroup DIR` counts the sockets of a process in DIR, not the test's");
    let Some(root) = cgroup2_root() else {
        println!("  skipped: no cgroup v2 hierarchy is mounted and mounting one failed");
        return;
    };
    let dir = root.join(format!("tcptrace-filter-test-{}", std::process::id()));
    let _ = fs::remove_dir(&dir);
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let server = HostServer::listen("127.83.4.1:21309".parse().unwrap());
    {
        let client = Client::fork(server.addr);
        fs::write(dir.join("cgroup.procs"), client.pid.to_string()).expect("move the client");
        owner_filter_counts_only_the_clients_connections(
            &client,
            &server,
            "--cgroup",
            dir.to_str().expect("utf-8 path"),
        );
    }
    let _ = fs::remove_dir(&dir);
}

impl Drop for HostServer {
    fn drop(&mut self) {
        self.held.lock().unwrap().clear();
    }
}

/// Where cgroup v2 is mounted (mounting it under /tmp when it is not, as in the VM).
fn cgroup2_root() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in mountinfo.lines() {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next() == Some("cgroup2") {
            return left.split_whitespace().nth(4).map(PathBuf::from);
        }
    }
    let dir = Path::new("/tmp/tcptrace-cgroup2");
    fs::create_dir_all(dir).ok()?;
    let target = CString::new(dir.to_str()?).ok()?;
    // SAFETY: valid NUL-terminated strings.
    let ok = unsafe {
        libc::mount(c"none".as_ptr(), target.as_ptr(), c"cgroup2".as_ptr(), 0, std::ptr::null())
    } == 0;
    ok.then(|| dir.to_owned())
}

#[test]
fn filter_bad_filter_values_exit_2_with_the_reason() {
    println!("checks: bad filter values are refused before attaching, exit 2, one clear line");
    let nine_ports: Vec<String> = (1..=9).flat_map(|p| ["--port".into(), p.to_string()]).collect();
    let mut cases: Vec<(Vec<String>, &str)> = [
        (&["--lport", "0"][..], "1 to 65535"),
        (&["--rport", "65536"], "1 to 65535"),
        (&["--port", "http"], "not a port number"),
        (&["--addr", "10.0.0.0/33"], "prefix length must be 0 to 32"),
        (&["--addr", "example.com"], "not an IP address"),
        (&["--netns", "/run/netns/tcptrace-no-such-ns"], "cannot open"),
        (&["--netns", "/proc/self/ns/uts"], "not a network namespace"),
        (&["--cgroup", "/sys/fs/cgroup/tcptrace-no-such-cgroup"], "cannot read"),
        (&["--pid", "0"], "not a process id"),
    ]
    .into_iter()
    .map(|(args, why)| (args.iter().map(|&a| a.to_owned()).collect(), why))
    .collect();
    cases.push((nine_ports, "--port was given 9 times"));
    for (args, why) in &cases {
        let mut argv = vec!["watch", "--json", "--duration", "5s"];
        argv.extend(args.iter().map(String::as_str));
        let exit = run_to_exit(&argv, Duration::from_mins(1));
        assert_eq!(exit.code(), Some(2), "{argv:?}: {exit:?}");
        assert!(exit.stderr.contains(why), "{argv:?}: expected {why:?} in:\n{}", exit.stderr);
        assert!(exit.stdout.is_empty(), "{argv:?} printed: {}", exit.stdout);
        println!("  {args:?}: {}", exit.stderr.lines().next().unwrap_or_default());
    }
}
