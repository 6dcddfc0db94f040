//! Live tests: nothing a local user does on the box stops the tracer or fools its counts
//! (issue 14). Each test owns network namespaces of its own, 127.87.0.0/16 and 127.88.0.0/16
//! and listener ports 21887-21889, checks that the tracer is still running and still exact
//! afterwards, and asserts drift 0 on every snapshot.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tcptrace_tests::{
    Accepted, Netns, RECONCILE_OFTEN, Server, SnapshotExt, Tracer, attach_path, connect, expected,
    run_to_exit, tuples,
};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 87, 0, 1)), 21887);
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 87, 0, 2));
/// Connections each test holds and checks, in its namespace.
const HELD: usize = 20;
/// Failed connects to distinct destinations, past the tracer's cap of 65,536 keys.
const FAILURES: u32 = 70_000;

/// Holds `HELD` connections to `SERVER` in a namespace of their own, and waits until the
/// tracer counts them exactly: returns what keeps them open.
fn hold_and_check(
    tracer: &Tracer<tcptrace_tests::Snapshot>,
    name: &str,
) -> (Netns, Server, Vec<std::net::TcpStream>) {
    let ns = Netns::new(name);
    let server = Server::listen(&ns, SERVER, Accepted::Hold);
    let clients = connect(&ns, CLIENT, SERVER, HELD);
    server.wait_accepted(HELD);
    let mut open = tuples(&clients);
    open.extend(server.open());
    let expect = expected(&open, &[SERVER.port()], &[SERVER]);
    tracer.wait_for("the held connections, exactly", |s| s.check(&expect));
    (ns, server, clients)
}

/// Fails unless every snapshot so far had drift 0 and the tracer still runs.
fn still_exact(tracer: &Tracer<tcptrace_tests::Snapshot>, what: &str) {
    tracer.assert_running();
    assert_eq!(tracer.max_drift(), 0, "{what}: a snapshot showed drift\n{}", tracer.stderr());
}

#[test]
fn failed_connects_to_ever_new_destinations_keep_the_tables_bounded() {
    println!(
        "checks: a user who makes connects fail towards 70,000 destinations (a one-port \
         ephemeral range in a namespace of their own, that port taken) cannot grow the \
         tracer's failed-connect table past its cap, and the counts stay exact"
    );
    let env = [("RUST_LOG", "tcptrace::capacity=debug")];
    let tracer = Tracer::watch_with_env(&RECONCILE_OFTEN, &env);
    let _held = hold_and_check(&tracer, "ns-robust-held");

    let flood = Netns::new("ns-robust-fail");
    flood.sysctl("net.ipv4.ip_local_port_range", "40100 40100").unwrap();
    // The only port of the range is taken: every autobound connect fails at once with
    // EADDRNOTAVAIL, before a SYN is sent (no packet leaves; the destinations are loopback).
    let failed = flood.run(|| {
        let _taken = std::net::TcpListener::bind("0.0.0.0:40100").expect("take the one port");
        let mut failed = 0u32;
        for i in 0..FAILURES {
            let [_, _, hi, lo] = (i % 65_536).to_be_bytes();
            let port = 9 + u16::try_from(i / 65_536).expect("a few ports");
            let to = SocketAddrV4::new(Ipv4Addr::new(127, 88, hi, lo), port);
            let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            match sock.connect(&to.into()) {
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => failed += 1,
                other => panic!("connect to {to}: expected EADDRNOTAVAIL, got {other:?}"),
            }
        }
        failed
    });
    assert_eq!(failed, FAILURES);
    // The debug line of a refresh says how many keys each table holds.
    let cap = |line: &str| -> Option<(u64, u64)> {
        let tables = line.split("tables: ").nth(1)?;
        let n = tables.split("failed connects ").nth(1)?.split(',').next()?.parse().ok()?;
        let over = tables.split("; ").nth(1)?.split(' ').next()?.parse().ok()?;
        Some((n, over))
    };
    // Every failure is in the table, in the overflow, or among the events the kernel lost
    // (a storm of 70,000 can fill the ring): wait until they are all accounted for.
    let lost = |snapshots: &[tcptrace_tests::Snapshot]| snapshots.last().map_or(0, |s| s.lost);
    let line = tracer.wait_stderr("a refresh that has seen every failure", |line, snapshots| {
        cap(line).is_some_and(|(n, over)| n + over + lost(snapshots) >= u64::from(FAILURES))
    });
    let (n, over) = cap(&line).expect("parsed above");
    println!("  {line} (lost {})", tracer.latest().lost);
    assert_eq!(n, 65_536, "the failed-connect table stops at its cap: {line}");
    assert!(over > 0, "the rest are counted as overflow: {line}");
    tracer.next_snapshots(5);
    still_exact(&tracer, "after the failures");
}

#[test]
fn namespaces_that_come_and_go_leave_the_counts_exact() {
    println!(
        "checks: 1,000 network namespaces, each with a connection, appear and disappear \
         while watch reconciles every 400 ms; the tracer stays up, and the connections it \
         was asked to count stay exact with drift 0 on every snapshot"
    );
    let tracer = Tracer::watch_reconciling(&[]);
    let (_ns, _server, _clients) = hold_and_check(&tracer, "ns-robust-stay");
    let started = Instant::now();
    for batch in 0..20 {
        // 50 at a time: each a thread in a namespace of its own, with a connection in it.
        let alive: Vec<(Netns, Server, Vec<std::net::TcpStream>)> = (0..50)
            .map(|i| {
                let ns = Netns::new(&format!("ns-come-{batch}-{i}"));
                let server = Server::listen(&ns, SERVER, Accepted::Hold);
                let clients = connect(&ns, CLIENT, SERVER, 1);
                (ns, server, clients)
            })
            .collect();
        drop(alive);
    }
    println!("  1,000 namespaces came and went in {:.1?}", started.elapsed());
    tracer.next_snapshots(10);
    still_exact(&tracer, "after the namespaces");
}

/// The ids of the BPF programs a process holds (`prog_id:` in `/proc/PID/fdinfo/*`).
fn bpf_programs_of(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo").flatten() {
        let Ok(info) = fs::read_to_string(fd.path()) else { continue };
        ids.extend(
            info.lines().find_map(|l| l.strip_prefix("prog_id:")?.trim().parse::<u32>().ok()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Whether the kernel still has a BPF program of this id (`BPF_PROG_GET_FD_BY_ID`).
fn program_exists(id: u32) -> bool {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    // union bpf_attr for this command: prog_id, next_id, open_flags.
    let attr: [u32; 3] = [id, 0, 0];
    // SAFETY: the attr is a plain array of the layout the command reads, of the size passed.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_GET_FD_BY_ID, attr.as_ptr(), size_of_val(&attr))
    };
    if fd >= 0 {
        // SAFETY: a descriptor the call just gave us.
        unsafe { libc::close(i32::try_from(fd).expect("an fd")) };
        return true;
    }
    io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

#[test]
fn a_killed_tracer_leaves_no_program_behind_and_a_new_one_counts_exactly() {
    println!(
        "checks: kill -9 of a running tracer leaves none of its BPF programs in the kernel \
         (nothing is pinned: they go with its last file descriptor), and a tracer started \
         after it counts exactly"
    );
    let first = Tracer::watch_reconciling(&[]);
    let programs = bpf_programs_of(first.pid());
    assert!(!programs.is_empty(), "a running tracer holds its programs");
    assert!(programs.iter().all(|&id| program_exists(id)));
    first.kill_hard();
    // The kernel frees a program after an RCU grace period: moments, bounded here.
    let deadline = Instant::now() + Duration::from_secs(30);
    while programs.iter().any(|&id| program_exists(id)) {
        assert!(Instant::now() < deadline, "programs {programs:?} outlived their tracer");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("  {} programs gone after kill -9", programs.len());
    let second = Tracer::watch_reconciling(&[]);
    let _held = hold_and_check(&second, "ns-robust-restart");
    second.next_snapshots(5);
    still_exact(&second, "the tracer after the killed one");
}

#[test]
fn two_tracers_at_once_both_count_exactly() {
    println!(
        "checks: two tracers attached at the same time each get every event: both count the \
         same connections exactly, with drift 0 on every snapshot"
    );
    let one = Tracer::watch_reconciling(&[]);
    let two = Tracer::watch_reconciling(&[]);
    let (_ns, server, clients) = hold_and_check(&one, "ns-robust-two");
    let mut open = tuples(&clients);
    open.extend(server.open());
    let expect = expected(&open, &[SERVER.port()], &[SERVER]);
    two.wait_for("the same connections, in the second tracer", |s| s.check(&expect));
    for tracer in [&one, &two] {
        tracer.next_snapshots(5);
        still_exact(tracer, "with another tracer attached");
    }
}

#[test]
fn a_bad_report_path_fails_at_once_and_a_symlink_is_not_followed() {
    println!(
        "checks: check --report to a path that cannot be written exits 2 with one line \
         before it watches; a symlink there is refused and what it points to is untouched"
    );
    let attach = attach_path();
    let check = |report: &Path| {
        let report = report.to_str().expect("UTF-8 path").to_owned();
        let args = ["check", "--attach", &attach, "--expect", "total live>=0", "--duration", "30s"];
        let mut args = args.to_vec();
        args.extend(["--report", &report]);
        let started = Instant::now();
        let exit = run_to_exit(&args, Duration::from_mins(1));
        (exit, started.elapsed())
    };
    let (exit, took) = check(Path::new("/nonexistent-dir/out.json"));
    assert_eq!(exit.code(), Some(2), "{exit:?}");
    assert!(took < Duration::from_secs(10), "it failed only after watching: {took:?}");
    let lines: Vec<&str> = exit.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].contains("/nonexistent-dir/out.json"), "{lines:?}");

    let dir = std::env::temp_dir().join(format!("tcptrace-robust-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let victim = dir.join("victim");
    fs::write(&victim, "keep me\n").unwrap();
    let link = dir.join("report.json");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let (exit, took) = check(&link);
    assert_eq!(exit.code(), Some(2), "{exit:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(exit.stderr.contains("symlink"), "says why: {}", exit.stderr);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me\n", "the link was not followed");

    // A FIFO another user put there cannot hold the open; /dev/null still takes a report.
    let fifo = dir.join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (exit, took) = check(&fifo);
    assert_eq!(exit.code(), Some(2), "{exit:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(exit.stderr.contains("not a regular file"), "says why: {}", exit.stderr);
    let attach = attach_path();
    let args = ["check", "--attach", &attach, "--expect", "total live>=0", "--duration", "1s"];
    let exit =
        run_to_exit(&[&args[..], &["--report", "/dev/null"]].concat(), Duration::from_mins(1));
    assert_eq!(exit.code(), Some(0), "a report to /dev/null: {exit:?}");
    fs::remove_dir_all(&dir).unwrap();
}
