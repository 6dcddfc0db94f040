//! The limits that cap a listener (issue 13) against the kernel's own readings: own network
//! namespaces, 127.91.0.0/16, ports 22191-22193.
//!
//! - a listener with backlog 4 that never accepts, filled past it: accept queue 5 of 4 and
//!   its drops exactly what `ss -ltm` and the namespace's `nstat` counters say, and the
//!   namespace's caps as its `/proc` reads them;
//! - a server under a soft `RLIMIT_NOFILE` of 40 that runs out of fds while clients keep
//!   connecting: binding limit `fds`, headroom 0, its fds as `/proc` counts them.
//!
//! Each also runs a real `check` on the same listener: its limit expectations (capacity,
//! accept queue, drops, the box's file table) are judged on these readings, and a failing
//! one names the limit that decided it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use tcptrace_json::limits::LimitName;
use tcptrace_tests::limits::{LimitedServer, ss_listener, tcp_ext};
use tcptrace_tests::{
    INTERVAL, ListenerRow, Netns, Snapshot, Tracer, WAIT, attach_path, run_to_exit,
};

const BACKLOG_SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 91, 0, 1)), 22191);
const FD_SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 91, 0, 1)), 22192);
const BACKLOG: u32 = 4;
const CLIENTS: usize = 12;

/// One expectation as a check's JSON report judged it: expr, verdict, observed, limit.
type Judged = (String, String, f64, String);

/// A 2 s `check` of `expectations`: its exit code and each expectation as judged.
fn check(expectations: &[String]) -> (Option<i32>, Vec<Judged>) {
    let report = std::env::temp_dir().join(format!("tcptrace-limits-{}.json", std::process::id()));
    let attach = attach_path();
    let mut args = vec!["check", "--attach", &attach, "--duration", "2s", "--interval", "250ms"];
    args.extend(["--ignore-loss", "--report", report.to_str().expect("UTF-8 path")]);
    for e in expectations {
        args.extend(["--expect", e]);
    }
    let exit = run_to_exit(&args, Duration::from_mins(2));
    println!("  check: exit {:?}\n{}", exit.code(), exit.stdout.trim_end());
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{e}: {}", exit.stderr));
    std::fs::remove_file(&report).ok();
    let v: Value = serde_json::from_str(&text).expect("the report is JSON");
    let field = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_owned();
    let seen = v["expectations"]
        .as_array()
        .expect("expectations")
        .iter()
        .map(|e| {
            let observed = e["observed"].as_f64().unwrap_or(f64::NAN);
            (field(e, "expr"), field(e, "verdict"), observed, field(e, "limit"))
        })
        .collect();
    (exit.code(), seen)
}

fn listener_row(s: &Snapshot, ns: &Netns, addr: SocketAddr) -> Option<ListenerRow> {
    s.listeners
        .iter()
        .find(|l| l.netns == ns.inode() && l.addr == addr.ip() && l.port == addr.port())
        .cloned()
}

#[test]
fn a_full_backlog_shows_its_queue_drops_and_the_namespace_caps() {
    println!(
        "checks: a listener with backlog {BACKLOG} that never accepts, {CLIENTS} clients: \
         accept queue {} of {BACKLOG}, drops = ss -ltm d = ListenDrops = the connects that \
         timed out, and the namespace's tcp_max_tw_buckets, tcp_mem, tcp_max_orphans and \
         somaxconn as /proc reads them there",
        BACKLOG + 1
    );
    let ns = Netns::new("ns-backlog");
    // A value no other namespace has: the row must be this namespace's reading.
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", "777").expect("set tw buckets");
    let listener = ns.run(|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.bind(&BACKLOG_SERVER.into()).expect("bind");
        s.listen(BACKLOG.cast_signed()).expect("listen");
        s
    });
    let tracer = Tracer::watch(&["--top", "0", "--interval", INTERVAL]);
    // A SYN to a full queue is dropped; the client's retry would come after 1 s, so a
    // connect that gives up after 200 ms sent one SYN and costs the listener one drop.
    let (clients, timed_out) = ns.run(|| {
        let mut clients = Vec::new();
        let mut timed_out = 0u64;
        for _ in 0..CLIENTS {
            match TcpStream::connect_timeout(&BACKLOG_SERVER, Duration::from_millis(200)) {
                Ok(c) => clients.push(c),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => timed_out += 1,
                Err(e) => panic!("connect: {e}"),
            }
        }
        (clients, timed_out)
    });
    println!("  {} connected, {timed_out} timed out", clients.len());
    assert_eq!(clients.len(), BACKLOG as usize + 1, "the kernel queues backlog + 1");

    let ss = ss_listener(&ns, BACKLOG_SERVER).expect("ss shows the listener");
    let (drops, overflows) = (tcp_ext(&ns, "ListenDrops"), tcp_ext(&ns, "ListenOverflows"));
    println!("  ss: {ss:?}; nstat: ListenDrops {drops}, ListenOverflows {overflows}");
    assert_eq!(
        (ss.recv_q, ss.send_q, ss.drops),
        (u64::from(BACKLOG) + 1, u64::from(BACKLOG), timed_out)
    );
    assert_eq!((drops, overflows), (timed_out, timed_out));

    let read = |name: &str| ns.read_sysctl(name).expect("sysctl");
    // tcp_mem and tcp_max_orphans are the box's: only the initial namespace shows them.
    let host = |name: &str| std::fs::read_to_string(format!("/proc/sys/{name}")).unwrap();
    let tcp_mem: Vec<u64> =
        host("net/ipv4/tcp_mem").split_whitespace().map(|w| w.parse().unwrap()).collect();
    let max_orphans: u64 = host("net/ipv4/tcp_max_orphans").trim().parse().unwrap();
    let somaxconn: u64 = read("net.core.somaxconn").parse().unwrap();
    let file_max: u64 = host("fs/file-max").trim().parse().unwrap();

    let snapshot = tracer.wait_for("the full listener and its namespace", |s| {
        let row = listener_row(s, &ns, BACKLOG_SERVER).ok_or("no listener row")?;
        let l = row.limits.as_ref().ok_or("no limits")?;
        let box_row = s.limits.iter().find(|b| b.netns == ns.inode()).ok_or("no netns limits")?;
        if l.accept_queue == ss.recv_q
            && l.drops == Some(ss.drops)
            && box_row.counters.iter().any(|c| c.name == "ListenDrops" && c.total == drops)
        {
            Ok(())
        } else {
            Err(format!("{l:?} / {box_row:?}"))
        }
    });
    let row = listener_row(&snapshot, &ns, BACKLOG_SERVER).unwrap();
    let l = row.limits.unwrap();
    println!("  row: {l:?}");
    assert_eq!((l.accept_queue, l.backlog, l.min_backlog), (ss.recv_q, ss.send_q, ss.send_q));
    assert_eq!(l.somaxconn, Some(somaxconn));
    assert!(!l.backlog_clamped, "backlog {BACKLOG} is below somaxconn {somaxconn}");
    let queue = l.headroom.iter().find(|h| h.name == LimitName::AcceptQueue).expect("queue limit");
    assert_eq!(
        (queue.value, queue.limit, queue.headroom),
        (u64::from(BACKLOG) + 1, u64::from(BACKLOG) + 1, 0)
    );
    assert_eq!(
        l.binding,
        Some(LimitName::AcceptQueue),
        "a test thread holds it, with fds to spare"
    );
    assert_eq!(l.binding_headroom, Some(0));

    let b = snapshot.limits.iter().find(|b| b.netns == ns.inode()).unwrap();
    println!("  netns: {b:?}");
    assert_eq!(b.max_tw_buckets, Some(777));
    assert_eq!(b.tcp_mem.map(Vec::from), Some(tcp_mem));
    assert_eq!(b.max_orphans, Some(max_orphans));
    assert_eq!(b.file_max, Some(file_max));
    let counter = |name: &str| b.counters.iter().find(|c| c.name == name).map(|c| c.total);
    assert_eq!(
        (counter("ListenDrops"), counter("ListenOverflows")),
        (Some(drops), Some(overflows))
    );
    assert!(b.bytes_per_connection.is_some_and(|n| n > 1000), "slab objects alone are > 1 KB");
    check_the_full_listener(ss.drops, file_max);
    drop((clients, listener));
}

/// The full listener judged by check: its queue full (100% of backlog + 1), its drops
/// exactly ss's, no room left, named as the queue; the box's file table as /proc has it.
fn check_the_full_listener(drops: u64, file_max: u64) {
    let (code, seen) = check(&[
        format!("listener={BACKLOG_SERVER} accept_queue<=50%"),
        // Clients retrying their SYNs can add drops while the check runs.
        format!("listener={BACKLOG_SERVER} drops>={drops}"),
        format!("listener={BACKLOG_SERVER} capacity>=1"),
        "total fd_headroom>=0%".to_owned(),
    ]);
    assert_eq!(code, Some(1), "{seen:?}");
    let queue_full =
        format!("binding limit accept_queue: {0} of {0} in use, 0 more connections", BACKLOG + 1);
    let verdicts: Vec<_> = seen.iter().map(|s| (s.1.as_str(), s.3.as_str())).collect();
    assert_eq!(
        verdicts[..3],
        [
            ("fail", queue_full.as_str()),
            ("pass", queue_full.as_str()),
            ("fail", queue_full.as_str())
        ],
        "{seen:?}"
    );
    assert_eq!((seen[0].2, seen[2].2), (100.0, 0.0), "queue full, no room: {seen:?}");
    assert!(seen[1].2 >= count(drops), "{seen:?}");
    // The box's file table, as /proc says it now (it moves a little with the box).
    let nr = std::fs::read_to_string("/proc/sys/fs/file-nr").expect("file-nr");
    let open: u64 = nr.split_whitespace().next().and_then(|n| n.parse().ok()).expect("file-nr");
    let free = 100.0 - count(open) * 100.0 / count(file_max);
    assert_eq!(seen[3].1, "pass", "{seen:?}");
    assert!((seen[3].2 - free).abs() < 1.0, "fd_headroom {} vs /proc's {free}", seen[3].2);
    assert!(seen[3].3.ends_with(&format!("of file-max {file_max} open")), "{seen:?}");
}

#[test]
fn a_server_out_of_fds_is_bound_by_its_fds() {
    const NOFILE: u64 = 40;
    const CLIENTS: usize = 60;
    println!(
        "checks: a server with RLIMIT_NOFILE {NOFILE} and {CLIENTS} clients: it runs out of \
         fds, connections stay in its accept queue, and its listener's binding limit is fds \
         with headroom 0; fds, queue and backlog as /proc and ss say"
    );
    let ns = Netns::new("ns-fds");
    let server = LimitedServer::start(&ns, FD_SERVER, NOFILE);
    let tracer = Tracer::watch(&["--top", "0", "--interval", INTERVAL]);
    // Wait for it to listen.
    let deadline = std::time::Instant::now() + WAIT;
    while ss_listener(&ns, FD_SERVER).is_none() {
        assert!(std::time::Instant::now() < deadline, "the server never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let clients = ns.run(|| {
        (0..CLIENTS).map(|_| TcpStream::connect(FD_SERVER).expect("connect")).collect::<Vec<_>>()
    });
    // Until it stops accepting: fds at the limit and the queue steady.
    let settled = || {
        let (open, soft) = server.fds();
        let ss = ss_listener(&ns, FD_SERVER).expect("listener");
        (open == soft).then_some((open, soft, ss))
    };
    let (open, soft, ss) = loop {
        if let Some(done) = settled() {
            break done;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never ran out: {:?}",
            server.fds()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("  server pid {}: {open} of {soft} fds; ss {ss:?}", server.pid());
    assert_eq!(soft, NOFILE);
    assert!(ss.recv_q > 0, "connections wait in the queue");

    let snapshot = tracer.wait_for("the listener bound by fds", |s| {
        let row = listener_row(s, &ns, FD_SERVER).ok_or("no listener row")?;
        let l = row.limits.as_ref().ok_or("no limits")?;
        if l.binding == Some(LimitName::Fds) && l.fds == Some(open) && l.accept_queue == ss.recv_q {
            Ok(())
        } else {
            Err(format!("pids {:?}: {l:?}", row.pids))
        }
    });
    let row = listener_row(&snapshot, &ns, FD_SERVER).unwrap();
    let l = row.limits.unwrap();
    println!("  row: {l:?}");
    assert_eq!((l.fds, l.fd_limit, l.fd_pid), (Some(open), Some(soft), Some(server.pid())));
    assert_eq!(l.binding_headroom, Some(0));
    assert_eq!(l.backlog, ss.send_q);
    let queue = l.headroom.iter().find(|h| h.name == LimitName::AcceptQueue).unwrap();
    assert_eq!(queue.headroom, ss.send_q + 1 - ss.recv_q, "the queue still has room: the fds bind");

    // check fails a capacity claim on this listener and names its fds as the reason.
    let (code, seen) = check(&[format!("listener={FD_SERVER} capacity>=1000")]);
    assert_eq!(code, Some(1), "{seen:?}");
    let fds = format!("binding limit fds: {open} of {soft} in use, 0 more connections");
    assert_eq!(
        seen,
        [(format!("listener={FD_SERVER} capacity>=1000"), "fail".to_owned(), 0.0, fds)]
    );
    drop(clients);
}

#[expect(clippy::cast_precision_loss, reason = "a few drops")]
fn count(n: u64) -> f64 {
    n as f64
}
