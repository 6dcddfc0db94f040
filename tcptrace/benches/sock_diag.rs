//! sock_diag with real sockets: what a snapshot of the live connections, a capacity refresh
//! and a reconciliation cost with many sockets, or many namespaces, on the box.
//! `cargo bench -p tcptrace --bench sock_diag [-- snapshot|refresh|scale|namespaces]`
//! (none: all four), as root: the measurements make network namespaces and set their
//! sysctls.
//!
//! - `snapshot`: [`sockdiag::live_connections`] with 8,000 extra loopback connections
//!   (16,000 sockets, under the 20,000 file limit) in the bench's own namespace, as the
//!   ledger is seeded;
//! - `refresh`: [`Tracker::refresh`] in a namespace of its own with 10,000 sockets (5,000
//!   live connections), then with 100,000 (8,000 live connections and 84,000 client ends in
//!   `TIME_WAIT`, spread over 6 destinations);
//! - `scale`: 10 forked processes hold 9,000 loopback connections each in a namespace of
//!   its own, 180,000 live sockets: the dump, the snapshot, the capacity refresh (and how
//!   much of it is ours, [`Tracker::last_refresh_cost`]) and the reconciliation;
//! - `namespaces [N...]`: N network namespaces (default 5,000), each a thread of the bench
//!   holding a listener and one loopback connection (3 sockets): a reconciliation's walk
//!   and a capacity refresh, first with the namespaces empty, then holding their sockets,
//!   and where the time goes (a thread and a `setns` per namespace, against the kernel's
//!   dump of the one TCP hash table every namespace shares). `--hold=SECS` keeps the last
//!   N's namespaces, sockets and all, that long afterwards, for a tracer to be run against
//!   them.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use tcptrace::capacity::{self, EphemeralRange, Tracker, dumped_states};
use tcptrace::conn::Conn;
use tcptrace::engine::reconcile::{Suspects, reconcile};
use tcptrace::filter::Filter;
use tcptrace::ledger::Ledger;
use tcptrace::sockdiag::{self, procfs, states};
use tcptrace_netns::Netns;

/// Each measurement by the name that picks it.
const MEASUREMENTS: [(&str, fn()); 4] =
    [("snapshot", snapshot), ("refresh", refresh), ("scale", scale), ("namespaces", namespaces)];

/// The command line's words: `cargo bench` passes --bench, and `--hold=` is an option.
fn words() -> impl Iterator<Item = String> {
    std::env::args().skip(1).filter(|a| !a.starts_with('-'))
}

fn main() {
    // Words pick measurements by name; numbers are the counts of `namespaces`.
    let picked: Vec<String> = words().filter(|w| w.parse::<usize>().is_err()).collect();
    for name in &picked {
        assert!(
            MEASUREMENTS.iter().any(|(known, _)| known == name),
            "no measurement {name:?}: pick among snapshot, refresh, scale and namespaces"
        );
    }
    for (name, run) in MEASUREMENTS {
        if picked.is_empty() || picked.iter().any(|p| p == name) {
            run();
        }
    }
}

/// Seeding cost at scale: the snapshot of every namespace with 16,000 extra sockets in the
/// bench's own.
fn snapshot() {
    const N: usize = 8_000;
    let own = sockdiag::own_netns().unwrap();
    let listener = TcpListener::bind((Ipv4Addr::new(127, 64, 0, 1), 0)).unwrap();
    let server = listener.local_addr().unwrap();
    let pairs: Vec<_> = (0..N)
        .map(|_| (TcpStream::connect(server).unwrap(), listener.accept().unwrap().0))
        .collect();
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let snap = sockdiag::live_connections(&Filter::default()).unwrap();
        times.push(started.elapsed());
        let ours = snap
            .conns
            .iter()
            .filter(|c| c.netns == own && (c.local == server || c.remote == server))
            .count();
        assert_eq!(ours, 2 * N, "both ends of every connection, once");
    }
    times.sort();
    println!("snapshot with {} extra sockets: min {:?}, median {:?}", 2 * N, times[0], times[2]);
    drop(pairs);
}

/// Refresh cost at 10,000 and at 100,000 sockets, each in a namespace of its own.
fn refresh() {
    for (live, time_waits) in [(5_000, 0), (8_000, 84_000)] {
        tcptrace_netns::in_new(move |netns| measure_refresh(netns, live, time_waits));
    }
}

fn write_sysctl(name: &str, value: &str) {
    let path = format!("/proc/sys/net/ipv4/{name}");
    fs::write(&path, value).unwrap_or_else(|e| panic!("writing {value:?} to {path}: {e}"));
}

/// `live` connections and `time_waits` client ends in `TIME_WAIT` over 6 destinations in
/// the calling thread's namespace `netns`, then the refresh timed: the first, then 5 more.
fn measure_refresh(netns: u32, live: usize, time_waits: usize) {
    const DESTINATIONS: usize = 6;
    write_sysctl("ip_local_port_range", "30000 65000");
    // Else connect() recycles loopback TIME_WAIT ends once a destination's ports wrap.
    write_sysctl("tcp_tw_reuse", "0");
    let servers: Vec<TcpListener> = (0..DESTINATIONS as u16)
        .map(|i| TcpListener::bind(("127.75.0.1", 22050 + i)).unwrap())
        .collect();
    let targets: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr().unwrap()).collect();
    let deadline = Instant::now() + Duration::from_mins(2);
    let started = Instant::now();
    for i in 0..time_waits {
        assert!(Instant::now() < deadline, "creating TIME_WAIT sockets took too long");
        let c = TcpStream::connect(targets[i % DESTINATIONS]).unwrap();
        let s = servers[i % DESTINATIONS].accept().unwrap().0;
        drop(c);
        drop(s);
    }
    let pairs: Vec<(TcpStream, TcpStream)> = (0..live)
        .map(|i| {
            (
                TcpStream::connect(targets[i % DESTINATIONS]).unwrap(),
                servers[i % DESTINATIONS].accept().unwrap().0,
            )
        })
        .collect();
    let sockets = sockdiag::dump(netns, &dumped_states()).unwrap().len();
    println!("{sockets} sockets in the namespace (set up in {:?})", started.elapsed());
    let mut tracker = Tracker::default();
    let cold = Instant::now();
    let c = tracker.refresh(0).unwrap();
    let cold = cold.elapsed();
    let mut warm = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        tracker.refresh_now(20).unwrap();
        warm.push(t.elapsed());
    }
    warm.sort();
    let t = Instant::now();
    for _ in 0..5 {
        sockdiag::dump(netns, &dumped_states()).unwrap();
    }
    let dump = t.elapsed() / 5;
    println!(
        "refresh with {sockets} sockets: first (with the /proc fd scan) {cold:?}, then min {:?} median {:?}; the dump of this namespace alone {dump:?}; {} listeners, {} destinations ({} here), top use {:.1}%",
        warm[0],
        warm[2],
        c.listeners.len(),
        c.destinations.len(),
        c.destinations.iter().filter(|d| d.netns == netns).count(),
        c.destinations.first().map_or(0.0, |d| d.use_pct),
    );
    drop(pairs);
}

/// A forked child that holds loopback connections (both ends) in the network namespace of
/// the thread that forked it: one process may hold only ~20,000 files, so a larger
/// measurement needs several. Killed and reaped when dropped.
struct Holder {
    pid: libc::pid_t,
    /// The child writes one byte here once its connections are up.
    ready: File,
    /// The child waits until this closes (or it is killed).
    _release: File,
}

impl Holder {
    /// The child listens on 127.80.`index`.1:23000, connects to itself `n` times, writes
    /// one byte on `ready` when done, and waits until it is killed or `release` closes (10
    /// minutes at most, bounded).
    fn spawn(index: u8, n: usize) -> Self {
        use std::os::fd::FromRawFd as _;
        let (mut ready, mut release) = ([0; 2], [0; 2]);
        // SAFETY: pipe() fills the arrays we own.
        assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
        assert_eq!(unsafe { libc::pipe(release.as_mut_ptr()) }, 0);
        // Only async-signal-safe calls in the child: no allocation after the fork.
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 23000u16.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::new(127, 80, index, 1)).to_be() },
            sin_zero: [0; 8],
        };
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: the child runs only the libc calls below and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            unsafe {
                let sa = (&raw const addr).cast::<libc::sockaddr>();
                let listener = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                if listener < 0
                    || libc::bind(listener, sa, len) != 0
                    || libc::listen(listener, 4096) != 0
                {
                    libc::_exit(1);
                }
                for _ in 0..n {
                    let client = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                    if client < 0 || libc::connect(client, sa, len) != 0 {
                        libc::_exit(2);
                    }
                    if libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) < 0 {
                        libc::_exit(3);
                    }
                }
                libc::write(ready[1], [1u8].as_ptr().cast(), 1);
                let mut pfd = libc::pollfd { fd: release[0], events: libc::POLLIN, revents: 0 };
                libc::poll(&raw mut pfd, 1, 600_000);
                libc::_exit(0);
            }
        }
        // SAFETY: the parent owns its ends of the pipes from here; the child's are closed.
        unsafe {
            libc::close(ready[1]);
            libc::close(release[0]);
            Self {
                pid,
                ready: File::from_raw_fd(ready[0]),
                _release: File::from_raw_fd(release[1]),
            }
        }
    }

    /// Waits until the child holds its connections.
    fn wait_ready(&self) {
        let mut byte = [0u8; 1];
        let got = (&self.ready).read(&mut byte).unwrap_or(0);
        assert_eq!(got, 1, "holder {} failed to set up its connections", self.pid);
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Each child inherited the others' pipe ends, so closing ours does not end it: a
        // signal to our own child, by its pid, does.
        // SAFETY: signalling and reaping a child this bench forked.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// The median of `times`.
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The median time of `runs` runs of `f`.
fn median_time(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    median((0..runs).map(|_| f()).collect())
}

/// Cost at scale with real sockets: 180,000 live ones in a namespace of this bench's own.
#[expect(clippy::cast_precision_loss, reason = "socket counts far below 2^52")]
fn scale() {
    const HOLDERS: u8 = 10;
    const EACH: usize = 9_000;
    tcptrace_netns::in_new(|netns| {
        let started = Instant::now();
        let holders: Vec<Holder> = (0..HOLDERS).map(|i| Holder::spawn(i, EACH)).collect();
        for holder in &holders {
            holder.wait_ready();
        }
        let runs = 5;
        let dump = median_time(runs, || {
            let t = Instant::now();
            sockdiag::dump(netns, &states::live()).unwrap();
            t.elapsed()
        });
        let conns: Vec<Conn> =
            sockdiag::dump(netns, &states::live()).unwrap().into_iter().map(|s| s.conn).collect();
        let sockets = conns.len();
        println!(
            "{sockets} live sockets held by {HOLDERS} processes, set up in {:.1?}",
            started.elapsed()
        );
        let snapshot = median_time(runs, || {
            let t = Instant::now();
            sockdiag::live_connections(&Filter::default()).unwrap();
            t.elapsed()
        });
        let mut tracker = Tracker::default();
        tracker.refresh_now(20).unwrap();
        let mut rows = Vec::new();
        let refresh = median_time(runs, || {
            let t = Instant::now();
            tracker.refresh_now(20).unwrap();
            let took = t.elapsed();
            rows.push(tracker.last_refresh_cost().expect("a refresh ran").rows);
            took
        });
        let rows = median(rows);
        let t = Instant::now();
        let mut ledger = Ledger::new();
        for &c in &conns {
            ledger.open(c);
        }
        let seed_ledger = t.elapsed();
        let dumped = HashSet::from([netns]);
        let touched = HashSet::new();
        let reconcile = median_time(runs, || {
            let t = Instant::now();
            let drift = reconcile(&mut ledger, &conns, &dumped, &touched, &mut Suspects::default());
            assert_eq!(drift.total(), 0);
            t.elapsed()
        });
        // What the reconciliation did before: a std HashSet of the kernel's connections.
        let set_before = median_time(runs, || {
            let t = Instant::now();
            let set: HashSet<Conn> = conns.iter().copied().collect();
            let stale = ledger.conns().filter(|c| !set.contains(c)).count();
            assert_eq!(stale, 0);
            t.elapsed()
        });
        let per = |d: Duration| d.as_secs_f64() * 1e9 / sockets as f64;
        println!(
            "medians of {runs}: dump of this namespace (live states) {dump:.1?} ({:.0} ns/socket); \
             sockdiag::live_connections of every namespace {snapshot:.1?}; capacity refresh {refresh:.1?} \
             ({:.0} ns/socket), of which turning the dump into rows {rows:.1?}; ledger seed {seed_ledger:.1?}; \
             reconcile {reconcile:.1?} (a std HashSet of the kernel's connections, as before: \
             {set_before:.1?})",
            per(dump),
            per(refresh),
        );
        drop(holders);
    });
}

/// Runs per timing in `namespaces`.
const RUNS: usize = 5;
/// One file limit of 20,000 holds 3 sockets a namespace for this many, with room to spare.
const MAX_NAMESPACES: usize = 6_000;
/// Namespaces made at once: their set-up (`unshare`, `lo` up) is mostly the kernel's.
const MAKERS: usize = 8;
/// How long the set-up of the namespaces and their sockets may take.
const SETUP_LIMIT: Duration = Duration::from_mins(5);
/// How long `--hold=` may keep them.
const MAX_HOLD: Duration = Duration::from_mins(30);
/// Where each namespace listens: each has its own loopback, so the same one everywhere.
const NAMESPACE_SERVER: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 23_500);

/// How the walks of every namespace grow with namespaces of a few sockets each, at each
/// count the command line names (5,000 if none).
fn namespaces() {
    let mut counts: Vec<usize> = words().filter_map(|w| w.parse().ok()).collect();
    if counts.is_empty() {
        counts.push(5_000);
    }
    let hold = std::env::args().find_map(|a| {
        let secs = a.strip_prefix("--hold=")?.parse().expect("--hold=SECONDS");
        Some(Duration::from_secs(secs).min(MAX_HOLD))
    });
    let last = counts.len() - 1;
    for (i, &n) in counts.iter().enumerate() {
        measure_namespaces(n, hold.filter(|_| i == last));
    }
}

/// The CPU time of `clock`: every thread of this process (those that ended included), or
/// the calling thread.
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    assert_eq!(unsafe { libc::clock_gettime(clock, &raw mut ts) }, 0);
    Duration::new(ts.tv_sec.cast_unsigned(), u32::try_from(ts.tv_nsec).expect("below 1e9"))
}

/// Wall time (what the engine paces a walk by) and CPU time (its own cost, whatever else
/// runs on the box), each the median of a few runs.
#[derive(Clone, Copy, Debug)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

impl Timing {
    /// A walk run [`RUNS`] times, with the CPU time of the whole process (a walk's threads).
    fn of(walk: impl FnMut()) -> Self {
        Self::on(RUNS, libc::CLOCK_PROCESS_CPUTIME_ID, walk)
    }

    /// `f` run `runs` times, with the CPU time of `clock`.
    fn on(runs: usize, clock: libc::clockid_t, mut f: impl FnMut()) -> Self {
        let (mut walls, mut cpus) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (t, cpu) = (Instant::now(), cpu_time(clock));
            f();
            walls.push(t.elapsed());
            cpus.push(cpu_time(clock).saturating_sub(cpu));
        }
        Self { wall: median(walls), cpu: median(cpus) }
    }
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1?} (CPU {:.1?})", self.wall, self.cpu)
    }
}

/// The walks of every namespace, each the median of [`RUNS`].
#[derive(Debug)]
struct Walks {
    /// [`sockdiag::in_every_netns`] with nothing to do in each namespace: finding them
    /// (`/proc/*/task/*`), then a thread that `setns()`es into each.
    entering: Timing,
    /// [`sockdiag::live_connections`]: a reconciliation's walk.
    snapshot: Timing,
    /// [`capacity::dump`], then [`Tracker::rows_of`]: a capacity refresh.
    refresh: Timing,
    /// ... of which turning the walk into rows ([`Tracker::last_refresh_cost`]).
    refresh_rows: Duration,
}

impl Walks {
    /// Times each walk, checking that it entered every namespace of `ours` and found
    /// `live` live sockets in them.
    fn time(ours: &HashSet<u32>, live: usize) -> Self {
        let entering = Timing::of(|| {
            let found = sockdiag::in_every_netns(|_| Ok(())).unwrap();
            let entered = found.results.iter().filter(|(netns, ())| ours.contains(netns)).count();
            assert_eq!(entered, ours.len(), "skipped: {:?}", found.skipped);
        });
        let snapshot = Timing::of(|| {
            let snap = sockdiag::live_connections(&Filter::default()).unwrap();
            let entered = snap.namespaces.iter().filter(|netns| ours.contains(netns)).count();
            assert_eq!(entered, ours.len(), "skipped: {:?}", snap.skipped);
            let found = snap.conns.iter().filter(|c| ours.contains(&c.netns)).count();
            assert_eq!(found, live, "both ends of every connection, once");
        });
        let mut tracker = Tracker::default();
        // The first refresh starts the /proc/*/fd scan for the listeners' pids.
        tracker.refresh_now(20).unwrap();
        let mut rows = Vec::new();
        let refresh = Timing::of(|| {
            let dump = capacity::dump(&Filter::default()).unwrap();
            tracker.rows_of(&dump, 20);
            rows.push(tracker.last_refresh_cost().expect("a refresh ran").rows);
        });
        Self { entering, snapshot, refresh, refresh_rows: median(rows) }
    }

    fn line(&self) -> String {
        format!(
            "entering every namespace (find them, a thread and a setns each) {}; \
             sockdiag::live_connections {}; capacity refresh {}, of which rows {:.1?}",
            self.entering, self.snapshot, self.refresh, self.refresh_rows
        )
    }
}

/// `n` new network namespaces, made [`MAKERS`] at a time.
fn new_namespaces(n: usize, deadline: Instant) -> Vec<Netns> {
    thread::scope(|scope| {
        let makers: Vec<_> = (0..MAKERS)
            .map(|m| {
                scope.spawn(move || {
                    (m..n)
                        .step_by(MAKERS)
                        .map(|_| {
                            assert!(Instant::now() < deadline, "making namespaces took too long");
                            Netns::new("bench-netns").unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        makers.into_iter().flat_map(|m| m.join().unwrap()).collect()
    })
}

/// In the calling thread's namespace: a listener at [`NAMESPACE_SERVER`] and both ends of
/// one connection to it.
fn one_connection() -> (TcpListener, TcpStream, TcpStream) {
    let listener = TcpListener::bind(NAMESPACE_SERVER).unwrap();
    let server = listener.local_addr().unwrap();
    let client = TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    (listener, client, accepted)
}

/// `MemAvailable` in /proc/meminfo, in KiB.
fn mem_available_kib() -> i64 {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Per-namespace pieces of a walk, in one namespace's own thread (no spawn, no `setns`).
#[derive(Debug)]
struct Alone {
    /// A `NETLINK_SOCK_DIAG` socket opened, bound and closed.
    netlink: Duration,
    /// Both sockstat counts of hashed sockets read: all a walk does in an empty namespace.
    sockstat: Duration,
    /// The ephemeral range read from `/proc/sys` (two files), as a capacity walk does in
    /// each namespace, with the thread's CPU time.
    range: Timing,
    /// [`sockdiag::dump`] of the live states (a reconciliation's), and of the capacity
    /// refresh's states: a netlink socket, the sockstat check and the kernel's walk.
    live: Duration,
    capacity: Duration,
}

impl Alone {
    /// In the calling thread's namespace `netns`, medians of 21.
    fn time(netns: u32) -> Self {
        const RUNS: usize = 21;
        let netlink = median_time(RUNS, || {
            let t = Instant::now();
            // SAFETY: a socket we own, bound with an address that lives across the call,
            // then closed.
            unsafe {
                let fd = libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_SOCK_DIAG,
                );
                assert!(fd >= 0, "socket(NETLINK_SOCK_DIAG)");
                let mut addr: libc::sockaddr_nl = std::mem::zeroed();
                addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
                let len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
                assert_eq!(libc::bind(fd, (&raw const addr).cast(), len), 0, "bind");
                libc::close(fd);
            }
            t.elapsed()
        });
        let sockstat = median_time(RUNS, || {
            let t = Instant::now();
            procfs::hashed_tcp_sockets(false).unwrap();
            procfs::hashed_tcp_sockets(true).unwrap();
            t.elapsed()
        });
        let range = range_read();
        let dump_of = |states: sockdiag::StateFlags| {
            median_time(RUNS, || {
                let t = Instant::now();
                sockdiag::dump(netns, &states).unwrap();
                t.elapsed()
            })
        };
        Self {
            netlink,
            sockstat,
            range,
            live: dump_of(states::live()),
            capacity: dump_of(dumped_states()),
        }
    }
}

/// The ephemeral range read in the calling thread's namespace, median of 21.
fn range_read() -> Timing {
    Timing::on(21, libc::CLOCK_THREAD_CPUTIME_ID, || {
        EphemeralRange::read().unwrap();
    })
}

/// A thread spawned and joined, and a `setns()` into each of `spaces` (opening its task's
/// `ns/net` first), each from one thread: the per-namespace overhead of a walk.
fn thread_and_setns(spaces: &[Netns]) -> (Duration, Duration) {
    let t = Instant::now();
    for _ in spaces {
        thread::scope(|scope| scope.spawn(|| ()).join().unwrap());
    }
    let spawn = t.elapsed();
    let pid = std::process::id();
    let paths: Vec<String> =
        spaces.iter().map(|ns| format!("/proc/{pid}/task/{}/ns/net", ns.tid())).collect();
    let setns = thread::scope(|scope| {
        scope
            .spawn(|| {
                let t = Instant::now();
                for path in &paths {
                    let file = File::open(path).unwrap();
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                }
                t.elapsed()
            })
            .join()
            .unwrap()
    });
    (spawn, setns)
}

/// `n` namespaces: the walks while they are empty, then while each holds a listener and
/// one loopback connection, and the pieces of the cost.
#[expect(clippy::cast_possible_wrap, reason = "n is at most MAX_NAMESPACES")]
fn measure_namespaces(n: usize, hold: Option<Duration>) {
    assert!((1..=MAX_NAMESPACES).contains(&n), "1 to {MAX_NAMESPACES} namespaces");
    let deadline = Instant::now() + SETUP_LIMIT;
    let available = mem_available_kib();
    let t = Instant::now();
    let spaces = new_namespaces(n, deadline);
    let made = t.elapsed();
    let kib_each = (available - mem_available_kib()) / n as i64;
    let ours: HashSet<u32> = spaces.iter().map(Netns::inode).collect();
    assert_eq!(ours.len(), n, "every namespace its own");
    println!(
        "{n} namespaces made in {made:.1?} ({MAKERS} at a time; MemAvailable fell \
         {kib_each} KiB each); load average {}",
        fs::read_to_string("/proc/loadavg").unwrap().trim()
    );
    // Before any walk has looked up /proc/sys/net in the new namespaces.
    let range_before = spaces[0].run(range_read);
    let empty = Walks::time(&ours, 0);
    println!("  holding no sockets, medians of {RUNS}: {}", empty.line());
    let (spawn, setns) = thread_and_setns(&spaces);

    let t = Instant::now();
    let sockets: Vec<_> = spaces
        .iter()
        .map(|ns| {
            assert!(Instant::now() < deadline, "opening the connections took too long");
            ns.run(one_connection)
        })
        .collect();
    println!("  3 sockets in each opened in {:.1?}", t.elapsed());
    let full = Walks::time(&ours, 2 * n);
    println!("  holding 3 sockets each, medians of {RUNS}: {}", full.line());
    let first = spaces[0].inode();
    let alone = spaces[0].run(move || Alone::time(first));
    let per = |d: Duration| d / u32::try_from(n).expect("n fits");
    let per_cpu = |full: Timing, empty: Timing| {
        format!(
            "{:.1?} (over empty {:.1?})",
            per(full.cpu),
            per(full.cpu.saturating_sub(empty.cpu))
        )
    };
    println!(
        "  per namespace: a thread spawned and joined {:.1?}, open ns/net + setns {:.1?}; \
         in one namespace's own thread (medians of 21): sockstat's two counts {:.1?}, the \
         ephemeral range {} (before the first capacity walk: {}), a netlink socket opened, \
         bound and closed {:.1?}, its dump (live states) {:.1?}, (capacity states) {:.1?}; \
         the walks' CPU per namespace: \
         entering {:.1?}, live_connections {}, capacity refresh {}",
        per(spawn),
        per(setns),
        alone.sockstat,
        alone.range,
        range_before,
        alone.netlink,
        alone.live,
        alone.capacity,
        per(full.entering.cpu),
        per_cpu(full.snapshot, empty.snapshot),
        per_cpu(full.refresh, empty.refresh),
    );
    if let Some(hold) = hold {
        println!("  holding {n} namespaces with {} sockets for {hold:?}", 3 * n);
        thread::sleep(hold);
    }
    let t = Instant::now();
    drop(sockets);
    drop(spaces);
    println!("  torn down in {:.1?} (the kernel frees the namespaces after)", t.elapsed());
}
