//! sock_diag with real sockets: what a snapshot of the live connections, a capacity refresh
//! and a reconciliation cost with many sockets on the box.
//! `cargo bench -p tcptrace --bench sock_diag [-- snapshot|refresh|scale]` (none: all
//! three), as root: the measurements make network namespaces and set their sysctls.
//!
//! - `snapshot`: [`sockdiag::live_connections`] with 8,000 extra loopback connections
//!   (16,000 sockets, under the 20,000 file limit) in the bench's own namespace, as the
//!   ledger is seeded;
//! - `refresh`: [`Tracker::refresh`] in a namespace of its own with 10,000 sockets (5,000
//!   live connections), then with 100,000 (8,000 live connections and 84,000 client ends in
//!   `TIME_WAIT`, spread over 6 destinations);
//! - `scale`: 10 forked processes hold 9,000 loopback connections each in a namespace of
//!   its own, 180,000 live sockets: the dump, the snapshot, the capacity refresh (and how
//!   much of it is ours, [`Tracker::last_refresh_cost`]) and the reconciliation.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tcptrace::capacity::{Tracker, dumped_states};
use tcptrace::conn::Conn;
use tcptrace::engine::reconcile::{Suspects, reconcile};
use tcptrace::filter::Filter;
use tcptrace::ledger::Ledger;
use tcptrace::sockdiag::{self, states};

/// Each measurement by the name that picks it.
const MEASUREMENTS: [(&str, fn()); 3] =
    [("snapshot", snapshot), ("refresh", refresh), ("scale", scale)];

fn main() {
    // `cargo bench` passes --bench; other arguments pick measurements by name.
    let picked: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    for name in &picked {
        assert!(
            MEASUREMENTS.iter().any(|(known, _)| known == name),
            "no measurement {name:?}: pick among snapshot, refresh and scale"
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
