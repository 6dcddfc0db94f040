//! Harness for the live integration tests: runs the real `tcptrace` binary against TCP
//! connections that the tests open themselves, inside network namespaces they create.
//!
//! The tracer sees the whole machine, so every test works in its own namespace, on its own
//! 127.x.y.z addresses and its own listener ports (below the ephemeral range, which starts
//! at 32768), and computes every expected count from the sockets it holds.
//!
//! - [`Netns`]: a thread living in a fresh network namespace that creates sockets there;
//! - [`Server`] and [`connect`]: listeners that accept every connection, and clients bound
//!   to a chosen source address;
//! - [`Tracer`]: the binary as a child process, its JSON lines parsed as they arrive;
//! - [`Snapshot`], [`Expect`] and [`Event`]: the output contract, typed.
//!
//! Environment: `TCPTRACE_BIN` (the binary), `TCPTRACE_ATTACH` (the attach path, default
//! `auto`). Run as root with `--test-threads=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, OnceLock, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use std::{fmt, fs, mem, panic};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use socket2::{Domain, Socket, Type};

/// How long to wait for a condition. The VM runs on a software-emulated CPU, so this is
/// generous; every wait returns as soon as its condition holds.
pub const WAIT: Duration = Duration::from_mins(1);
/// How long the tracer may take to load, attach and seed (BTF parsing is slow under TCG).
pub const ATTACH_WAIT: Duration = Duration::from_mins(2);
/// The interval the tests ask `watch` for: short, so that waits end quickly.
pub const INTERVAL: &str = "200ms";
/// `watch` options for the tests that check drift: every row, frequent snapshots, and a
/// reconciliation every 400 ms, so that a connection the hooks missed shows within a
/// second (see [`Tracer::max_drift`]).
pub const RECONCILE_OFTEN: [&str; 6] =
    ["--top", "0", "--interval", INTERVAL, "--reconcile-every", "400ms"];
/// Tracer stderr lines echoed into the test output, at most (the rest are kept).
const ECHO_LINES: usize = 40;

// ---------------------------------------------------------------------------------------
// Process set-up and configuration
// ---------------------------------------------------------------------------------------

/// Once per process: raise the soft open-file limit to the hard one (a held loopback
/// connection costs two descriptors; the hard limit is 20000 on the host, 4096 in the VM).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit(NOFILE)");
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE");
        }
    });
}

/// The binary under test: `TCPTRACE_BIN`, or the workspace's debug build (said once).
pub fn tracer_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = if let Some(bin) = std::env::var_os("TCPTRACE_BIN") {
            PathBuf::from(bin)
        } else {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("the tests crate lives in the workspace");
            let bin = workspace.join("target/debug/tcptrace");
            eprintln!("TCPTRACE_BIN is not set: using {}", bin.display());
            bin
        };
        assert!(
            bin.is_file(),
            "tcptrace binary not found at {} (build it with `cargo build -p tcptrace` or set TCPTRACE_BIN)",
            bin.display()
        );
        bin
    })
}

/// The attach path the tests run with: `TCPTRACE_ATTACH`, default `auto`.
#[must_use]
pub fn attach_path() -> String {
    std::env::var("TCPTRACE_ATTACH").unwrap_or_else(|_| "auto".to_owned())
}

// ---------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------

type Job = Box<dyn FnOnce() + Send>;

/// A thread that moved itself into a new network namespace, brought `lo` up there, and runs
/// the closures sent to it, so the sockets they create belong to that namespace (their
/// descriptors work from any thread afterwards).
///
/// The thread lives until the `Netns` is dropped: the tracer finds namespaces through
/// `/proc/*/task/*/ns/net`, so it must outlive the connections it made.
pub struct Netns {
    inode: u32,
    tid: i32,
    comm: String,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// What the namespace thread reports once it is set up: (netns inode, tid, comm).
type NetnsIdentity = (u32, i32, String);

impl Netns {
    /// A new namespace whose thread is called `name` (the kernel keeps 15 bytes of it as
    /// the thread's comm, which is what connect events report).
    #[must_use]
    pub fn new(name: &str) -> Self {
        init();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<NetnsIdentity, String>>();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let setup = enter_new_netns();
                let entered = setup.is_ok();
                let _ = ready_tx.send(setup);
                if entered {
                    for job in jobs_rx {
                        job();
                    }
                }
            })
            .expect("spawn the namespace thread");
        let (inode, tid, comm) = ready_rx
            .recv()
            .expect("the namespace thread reports")
            .unwrap_or_else(|e| panic!("cannot set up a network namespace: {e}"));
        Self { inode, tid, comm, jobs: Some(jobs_tx), thread: Some(thread) }
    }

    /// Inode number of the namespace, as the tracer reports it in `netns`.
    #[must_use]
    pub fn inode(&self) -> u32 {
        self.inode
    }

    /// Thread id of the namespace thread (the `tid` of the connects it makes).
    #[must_use]
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// The namespace thread's comm (the `comm` of the connects it makes).
    #[must_use]
    pub fn comm(&self) -> &str {
        &self.comm
    }

    /// Runs `f` on the namespace thread and returns its result; a panic in `f` is
    /// re-raised here.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(panic::catch_unwind(panic::AssertUnwindSafe(f)));
        });
        self.jobs
            .as_ref()
            .expect("namespace thread running")
            .send(job)
            .expect("namespace thread alive");
        match rx.recv().expect("namespace thread answers") {
            Ok(result) => result,
            Err(payload) => panic::resume_unwind(payload),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn enter_new_netns() -> Result<NetnsIdentity, String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
    bring_loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
    let inode = fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| format!("stat /proc/thread-self/ns/net: {e}"))?
        .ino();
    let inode = u32::try_from(inode).map_err(|_| format!("netns inode {inode} exceeds u32"))?;
    let comm = fs::read_to_string("/proc/thread-self/comm")
        .map_err(|e| format!("read /proc/thread-self/comm: {e}"))?
        .trim_end()
        .to_owned();
    Ok((inode, nix::unistd::gettid().as_raw(), comm))
}

/// `ip link set lo up`, with the two ioctls it makes, so that no external command is needed
/// (the VM has busybox only). Bringing `lo` up also assigns 127.0.0.1/8 and `::1`.
fn bring_loopback_up() -> io::Result<()> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // SAFETY: `ifreq` is plain old data, for which all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::try_from(*src).expect("ASCII");
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `req`, which lives
    // across the call; the request type differs between libcs, hence the inferred cast.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags from `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

/// One end of a connection as `ss` would print it: local and peer address from
/// getsockname/getpeername, IPv4-mapped IPv6 addresses shown as IPv4 (as tcptrace does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

impl Tuple {
    /// The tuple of a connected socket.
    #[must_use]
    pub fn of(stream: &TcpStream) -> Self {
        let local = stream.local_addr().expect("getsockname");
        let peer = stream.peer_addr().expect("getpeername");
        Self { local: canonical(local), peer: canonical(peer) }
    }

    /// The same connection seen from the other end.
    #[must_use]
    pub fn reversed(self) -> Self {
        Self { local: self.peer, peer: self.local }
    }
}

/// `::ffff:a.b.c.d` becomes `a.b.c.d` (only mapped addresses: `::1` stays IPv6).
#[must_use]
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    SocketAddr::new(ip, addr.port())
}

/// The tuples of the given sockets.
pub fn tuples<'a>(streams: impl IntoIterator<Item = &'a TcpStream>) -> Vec<Tuple> {
    streams.into_iter().map(Tuple::of).collect()
}

/// Opens `count` connections to `to` from `from` (bound to `from:0` first, so the kernel
/// picks the ephemeral port), created inside `ns`. Each connect returns after the
/// handshake.
#[must_use]
pub fn connect(ns: &Netns, from: IpAddr, to: SocketAddr, count: usize) -> Vec<TcpStream> {
    ns.run(move || {
        (0..count)
            .map(|i| {
                let sock = Socket::new(Domain::for_address(to), Type::STREAM, None)
                    .unwrap_or_else(|e| panic!("socket for {to}: {e}"));
                sock.bind(&SocketAddr::new(from, 0).into())
                    .unwrap_or_else(|e| panic!("bind {from}:0 (connection {i}): {e}"));
                sock.connect(&to.into())
                    .unwrap_or_else(|e| panic!("connect {from} -> {to} (connection {i}): {e}"));
                TcpStream::from(sock)
            })
            .collect()
    })
}

/// What a [`Server`] does with the connections it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Keep them open until the test closes them.
    Hold,
    /// Close each one right away (for churn).
    Close,
}

struct ServerState {
    open: Mutex<Vec<(Tuple, TcpStream)>>,
    accepted: AtomicUsize,
    stop: AtomicBool,
}

/// A listener created inside a namespace, with a thread that accepts every connection (the
/// fentry and kprobe paths count the server side from `accept()` returning).
pub struct Server {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    state: Arc<ServerState>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `addr` inside `ns`. An IPv6 wildcard address listens dual-stack, so IPv4
    /// clients arrive as IPv4-mapped IPv6 connections.
    #[must_use]
    pub fn listen(ns: &Netns, addr: SocketAddr, mode: Accepted) -> Self {
        Self::listen_with(ns, addr, mode, false)
    }

    /// Listens on `addr` with `SO_REUSEPORT`, holding what it accepts: call it again with
    /// the same address for another socket of the group (the kernel spreads the
    /// connections over them).
    #[must_use]
    pub fn listen_reuseport(ns: &Netns, addr: SocketAddr) -> Self {
        Self::listen_with(ns, addr, Accepted::Hold, true)
    }

    fn listen_with(ns: &Netns, addr: SocketAddr, mode: Accepted, reuse_port: bool) -> Self {
        let listener = ns.run(move || -> io::Result<TcpListener> {
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            sock.set_reuse_address(true)?;
            sock.set_reuse_port(reuse_port)?;
            if addr.is_ipv6() {
                sock.set_only_v6(false)?;
            }
            sock.bind(&addr.into())?;
            // The kernel caps the backlog at net.core.somaxconn (4096 by default).
            sock.listen(4096)?;
            Ok(sock.into())
        });
        let listener = Arc::new(listener.unwrap_or_else(|e| panic!("listen on {addr}: {e}")));
        let state = Arc::new(ServerState {
            open: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let state = Arc::clone(&state);
            let listener = Arc::clone(&listener);
            thread::Builder::new()
                .name(format!("accept-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &state, mode))
                .expect("spawn the accept thread")
        };
        Self { addr, listener, state, thread: Some(thread) }
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (closed ones included).
    #[must_use]
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Waits until `count` connections have been accepted.
    pub fn wait_accepted(&self, count: usize) {
        let deadline = Instant::now() + WAIT;
        while self.accepted() < count {
            assert!(
                Instant::now() < deadline,
                "{}: accepted {} connections, expected {count}",
                self.addr,
                self.accepted()
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// The server ends still open.
    #[must_use]
    pub fn open(&self) -> Vec<Tuple> {
        self.lock().iter().map(|(t, _)| *t).collect()
    }

    /// Closes the server ends whose tuple matches, from the calling thread; returns them.
    pub fn close_where(&self, mut matches: impl FnMut(&Tuple) -> bool) -> Vec<Tuple> {
        let closing: Vec<(Tuple, TcpStream)> = {
            let mut open = self.lock();
            let (closing, kept) = mem::take(&mut *open).into_iter().partition(|(t, _)| matches(t));
            *open = kept;
            closing
        };
        closing
            .into_iter()
            .map(|(t, stream)| {
                drop(stream);
                t
            })
            .collect()
    }

    /// Closes the server end of each connection to this listener's port whose client end
    /// is among `clients` (others are ignored, so one list can serve several listeners).
    pub fn close_peers_of(&self, clients: &[Tuple]) {
        let peers: BTreeSet<SocketAddr> =
            clients.iter().filter(|c| c.peer.port() == self.addr.port()).map(|c| c.local).collect();
        let closed = self.close_where(|t| peers.contains(&t.peer));
        assert_eq!(closed.len(), peers.len(), "{}: server ends of {clients:?}", self.addr);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Tuple, TcpStream)>> {
        self.state.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Shutting a listener down wakes the accept() blocked on it (with EINVAL).
        let _ = socket2::SockRef::from(&*self.listener).shutdown(std::net::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Blocking accept() until the listener is shut down: no polling, so the accept hooks see
/// one call per connection (plus the last, failing one).
fn accept_loop(listener: &TcpListener, state: &ServerState, mode: Accepted) {
    loop {
        let accepted = listener.accept();
        if state.stop.load(Ordering::SeqCst) {
            break;
        }
        match accepted {
            Ok((stream, _)) => {
                if mode == Accepted::Hold {
                    let tuple = Tuple::of(&stream);
                    state
                        .open
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((tuple, stream));
                }
                state.accepted.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // ECONNABORTED and the like: the client gave up; nothing to count.
            Err(e) => eprintln!("accept on {:?}: {e}", listener.local_addr()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The output contract
// ---------------------------------------------------------------------------------------

/// One `watch --json` line.
#[derive(Clone, Debug, Deserialize)]
pub struct Snapshot {
    pub elapsed_s: f64,
    pub backend: String,
    pub events: u64,
    pub lost: u64,
    pub drift: u64,
    /// Events the in-kernel filter kept out of the ring.
    pub filtered: u64,
    pub live: u64,
    pub local_ports: Vec<PortRow>,
    pub remote_endpoints: Vec<EndpointRow>,
    pub listeners: Vec<ListenerRow>,
    pub destinations: Vec<DestinationRow>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PortRow {
    pub port: u16,
    pub live: u64,
    pub remote_addrs: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EndpointRow {
    pub addr: IpAddr,
    pub port: u16,
    pub live: u64,
    pub local_ports: u64,
}

/// A server-side listener row of `watch --json` (the fields the tests check).
#[derive(Clone, Debug, Deserialize)]
pub struct ListenerRow {
    pub netns: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub live: u64,
    pub remote_addrs: u64,
    pub max_per_remote: u64,
    pub reuseport_sockets: u64,
    pub pids: Vec<u32>,
}

/// A client-side destination row of `watch --json` (the fields the tests check).
#[derive(Clone, Debug, Deserialize)]
pub struct DestinationRow {
    pub netns: u32,
    pub laddr: IpAddr,
    pub raddr: IpAddr,
    pub rport: u16,
    pub ports_in_use: u64,
    pub shared_ports: u64,
    pub range: u32,
    pub use_pct: f64,
    pub failed_connects: u64,
}

/// One row a snapshot must (or must not) have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Port { port: u16, live: u64, remote_addrs: u64 },
    NoPort(u16),
    Endpoint { addr: SocketAddr, live: u64, local_ports: u64 },
    NoEndpoint(SocketAddr),
}

/// The rows that the live connections `open` (every open end the test holds, client and
/// server alike) imply for the given listener ports and remote endpoints, straight from the
/// contract's definitions: a port's `live` counts connections with that local port and
/// `remote_addrs` their distinct peer IPs; an endpoint's `live` counts connections to it
/// and `local_ports` their distinct local port numbers. No live connection, no row.
#[must_use]
pub fn expected(open: &[Tuple], ports: &[u16], endpoints: &[SocketAddr]) -> Vec<Expect> {
    let mut rows = Vec::new();
    for &port in ports {
        let conns: Vec<&Tuple> = open.iter().filter(|t| t.local.port() == port).collect();
        let peers: BTreeSet<IpAddr> = conns.iter().map(|t| t.peer.ip()).collect();
        rows.push(if conns.is_empty() {
            Expect::NoPort(port)
        } else {
            Expect::Port { port, live: count(conns.len()), remote_addrs: count(peers.len()) }
        });
    }
    for &endpoint in endpoints {
        let endpoint = canonical(endpoint);
        let conns: Vec<&Tuple> = open.iter().filter(|t| t.peer == endpoint).collect();
        let local_ports: BTreeSet<u16> = conns.iter().map(|t| t.local.port()).collect();
        rows.push(if conns.is_empty() {
            Expect::NoEndpoint(endpoint)
        } else {
            Expect::Endpoint {
                addr: endpoint,
                live: count(conns.len()),
                local_ports: count(local_ports.len()),
            }
        });
    }
    rows
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Port { port, live, remote_addrs } => {
                write!(f, "port {port}: live={live} remote_addrs={remote_addrs}")
            }
            Self::NoPort(port) => write!(f, "port {port}: no row"),
            Self::Endpoint { addr, live, local_ports } => {
                write!(f, "endpoint {addr}: live={live} local_ports={local_ports}")
            }
            Self::NoEndpoint(addr) => write!(f, "endpoint {addr}: no row"),
        }
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).expect("count fits u64")
}

impl Snapshot {
    #[must_use]
    pub fn port(&self, port: u16) -> Option<&PortRow> {
        self.local_ports.iter().find(|r| r.port == port)
    }

    #[must_use]
    pub fn endpoint(&self, addr: SocketAddr) -> Option<&EndpointRow> {
        self.remote_endpoints.iter().find(|r| r.addr == addr.ip() && r.port == addr.port())
    }

    /// `Ok` when every expectation holds; otherwise every mismatch, one per line.
    pub fn check(&self, expect: &[Expect]) -> Result<(), String> {
        let mut wrong = String::new();
        for e in expect {
            match *e {
                Expect::Port { port, live, remote_addrs } => match self.port(port) {
                    Some(r) if r.live == live && r.remote_addrs == remote_addrs => {}
                    found => {
                        let _ = writeln!(
                            wrong,
                            "local port {port}: want live={live} remote_addrs={remote_addrs}, got {found:?}"
                        );
                    }
                },
                Expect::NoPort(port) => {
                    if let Some(r) = self.port(port) {
                        let _ = writeln!(wrong, "local port {port}: want no row, got {r:?}");
                    }
                }
                Expect::Endpoint { addr, live, local_ports } => match self.endpoint(addr) {
                    Some(r) if r.live == live && r.local_ports == local_ports => {}
                    found => {
                        let _ = writeln!(
                            wrong,
                            "remote endpoint {addr}: want live={live} local_ports={local_ports}, got {found:?}"
                        );
                    }
                },
                Expect::NoEndpoint(addr) => {
                    if let Some(r) = self.endpoint(addr) {
                        let _ = writeln!(wrong, "remote endpoint {addr}: want no row, got {r:?}");
                    }
                }
            }
        }
        if wrong.is_empty() { Ok(()) } else { Err(wrong) }
    }

    /// With `--top 0` every live connection has exactly one row in each table, so both
    /// tables must add up to `live`.
    pub fn check_totals(&self) -> Result<(), String> {
        let by_port: u64 = self.local_ports.iter().map(|r| r.live).sum();
        let by_endpoint: u64 = self.remote_endpoints.iter().map(|r| r.live).sum();
        if by_port == self.live && by_endpoint == self.live {
            Ok(())
        } else {
            Err(format!(
                "live={} but local_ports add up to {by_port} and remote_endpoints to {by_endpoint}",
                self.live
            ))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Connect,
    Accept,
    Close,
    ConnectFailed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

/// One `events --json` line.
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    pub event: EventKind,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub netns: u32,
    pub sock: String,
}

impl Event {
    /// The event's connection as seen from the socket it concerns.
    #[must_use]
    pub fn tuple(&self) -> Tuple {
        Tuple {
            local: SocketAddr::new(self.laddr, self.lport),
            peer: SocketAddr::new(self.raddr, self.rport),
        }
    }

    /// The socket's kernel address, from its `0x…` form.
    #[must_use]
    pub fn sock_addr(&self) -> Option<u64> {
        u64::from_str_radix(self.sock.strip_prefix("0x")?, 16).ok()
    }
}

// ---------------------------------------------------------------------------------------
// The tracer process
// ---------------------------------------------------------------------------------------

struct Output<T> {
    /// Parsed stdout lines that passed the filter.
    items: Vec<T>,
    /// Parsed stdout lines, filtered or not.
    parsed: usize,
    /// Stdout lines that are not a valid `T`: a contract violation.
    unparsed: Vec<String>,
    stderr: Vec<String>,
    stdout_open: bool,
    stderr_open: bool,
}

struct Shared<T> {
    out: Mutex<Output<T>>,
    changed: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Output<T>> {
        self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The tracer as a child process whose stdout lines are parsed as `T` ([`Snapshot`] for
/// `watch --json`, [`Event`] for `events --json`) by a reader thread. Killed on drop.
pub struct Tracer<T> {
    child: Mutex<Child>,
    command: String,
    shared: Arc<Shared<T>>,
}

/// How a tracer run ended.
#[derive(Debug)]
pub struct Exit {
    /// `None` when it had to be killed after the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Exit {
    #[must_use]
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs the tracer with `args` to completion (killed after `timeout`).
#[must_use]
pub fn run_to_exit(args: &[&str], timeout: Duration) -> Exit {
    let mut child = Command::new(tracer_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", tracer_bin().display()));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the tracer") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    Exit {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl<T: DeserializeOwned + Send + 'static> Tracer<T> {
    fn spawn(args: &[String], keep: impl Fn(&T) -> bool + Send + 'static) -> Self {
        init();
        let bin = tracer_bin();
        let command = format!("{} {}", bin.display(), args.join(" "));
        println!("  running: {command}");
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
        let shared = Arc::new(Shared {
            out: Mutex::new(Output {
                items: Vec::new(),
                parsed: 0,
                unparsed: Vec::new(),
                stderr: Vec::new(),
                stdout_open: true,
                stderr_open: true,
            }),
            changed: Condvar::new(),
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let parsed = serde_json::from_str::<T>(&line);
                    let mut out = shared.lock();
                    match parsed {
                        Ok(item) => {
                            out.parsed += 1;
                            if keep(&item) {
                                out.items.push(item);
                            }
                        }
                        Err(e) => out.unparsed.push(format!("{e}: {line}")),
                    }
                    drop(out);
                    shared.changed.notify_all();
                }
                shared.lock().stdout_open = false;
                shared.changed.notify_all();
            });
        }
        {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut out = shared.lock();
                    if out.stderr.len() < ECHO_LINES {
                        eprintln!("  [tcptrace] {line}");
                    }
                    out.stderr.push(line);
                    drop(out);
                    shared.changed.notify_all();
                }
                shared.lock().stderr_open = false;
                shared.changed.notify_all();
            });
        }
        Self { child: Mutex::new(child), command, shared }
    }

    /// Waits until `done` returns `Some` over the output so far. `Err` when the tracer
    /// exits first (with its stderr complete) or on timeout (tracer left running).
    fn wait_output<R>(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Output<T>) -> Option<R>,
    ) -> Result<R, Failure> {
        let deadline = Instant::now() + timeout;
        let mut out = self.shared.lock();
        loop {
            if !out.unparsed.is_empty() {
                return Err(Failure::Unparsed);
            }
            if let Some(result) = done(&out) {
                return Ok(result);
            }
            if !out.stdout_open {
                // Exited: give stderr a moment to close so the message is complete.
                let grace = Instant::now() + Duration::from_secs(5);
                while out.stderr_open && Instant::now() < grace {
                    out = self
                        .shared
                        .changed
                        .wait_timeout(out, Duration::from_millis(100))
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
                return Err(Failure::Exited);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::Timeout);
            }
            out = self
                .shared
                .changed
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The exit status if the tracer has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_wait()
            .expect("wait for the tracer")
    }

    /// The tracer's stderr so far, one string.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.shared.lock().stderr.join("\n")
    }

    /// Panics unless the tracer is still running.
    pub fn assert_running(&self) {
        if let Some(status) = self.exit_status() {
            self.fail("tracer still running", &format!("it exited with {status}"));
        }
    }

    /// Panics with everything needed to see why: the command, its status, its stderr.
    fn fail(&self, what: &str, detail: &str) -> ! {
        let status = self
            .exit_status()
            .map_or_else(|| "still running".to_owned(), |s| format!("exited with {s}"));
        let out = self.shared.lock();
        let stderr: Vec<&str> =
            out.stderr.iter().rev().take(40).rev().map(String::as_str).collect();
        let unparsed: Vec<&str> = out.unparsed.iter().take(5).map(String::as_str).collect();
        panic!(
            "waiting for: {what}\n{detail}\ncommand: {}\ntracer {status}; {} stdout lines parsed\n\
             unparsable stdout lines: {unparsed:#?}\nstderr (last 40 lines):\n{}",
            self.command,
            out.parsed,
            stderr.join("\n")
        );
    }

    fn fail_with(&self, what: &str, failure: &Failure, last: &str) -> ! {
        let detail = match failure {
            Failure::Unparsed => "stdout has lines that do not match the JSON contract".to_owned(),
            Failure::Exited => format!("the tracer exited first; last seen:\n{last}"),
            Failure::Timeout => format!("not within {WAIT:?}; last seen:\n{last}"),
        };
        self.fail(what, &detail);
    }
}

enum Failure {
    Unparsed,
    Exited,
    Timeout,
}

fn has_attached_line(out: &Output<impl Sized>) -> bool {
    out.stderr.iter().any(|l| l.starts_with("tcptrace: attached"))
}

impl Tracer<Snapshot> {
    /// `tcptrace watch --json ARGS` (plus `--attach TCPTRACE_ATTACH` unless ARGS attach),
    /// returned once the first snapshot and the `tcptrace: attached` line are out.
    #[must_use]
    pub fn watch(args: &[&str]) -> Self {
        Self::try_watch(args).unwrap_or_else(|exit| {
            panic!(
                "tcptrace watch {args:?} exited before its first snapshot ({:?}); stderr:\n{}",
                exit.status, exit.stderr
            )
        })
    }

    /// Like [`Tracer::watch`], but a tracer that exits before its first snapshot is an
    /// `Err` with its exit status and stderr, for the tests that expect a refusal.
    pub fn try_watch(args: &[&str]) -> Result<Self, Exit> {
        let mut command_line: Vec<String> = vec!["watch".into(), "--json".into()];
        command_line.extend(args.iter().map(|&a| a.to_owned()));
        if !args.contains(&"--attach") {
            command_line.extend(["--attach".to_owned(), attach_path()]);
        }
        let tracer = Self::spawn(&command_line, |_| true);
        let ready = tracer.wait_output(ATTACH_WAIT, |out| {
            (!out.items.is_empty() && has_attached_line(out)).then_some(())
        });
        match ready {
            Ok(()) => Ok(tracer),
            Err(Failure::Exited) => {
                let status = tracer
                    .child
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .wait()
                    .ok();
                Err(Exit { status, stdout: String::new(), stderr: tracer.stderr() })
            }
            Err(failure) => {
                let last = tracer.shared.lock().items.last().map(|s| format!("{s:?}"));
                tracer.fail_with(
                    "the first snapshot and `tcptrace: attached`",
                    &failure,
                    &last.unwrap_or_default(),
                )
            }
        }
    }

    /// The first snapshot: the state right after attaching and seeding.
    #[must_use]
    pub fn first(&self) -> Snapshot {
        self.shared.lock().items[0].clone()
    }

    /// The newest snapshot.
    #[must_use]
    pub fn latest(&self) -> Snapshot {
        self.shared.lock().items.last().expect("at least the first snapshot").clone()
    }

    /// Waits for a snapshot printed after this call for which `check` is `Ok`, and returns
    /// it; panics with the last mismatch, the last snapshot's header and the stderr.
    pub fn wait_for(
        &self,
        what: &str,
        mut check: impl FnMut(&Snapshot) -> Result<(), String>,
    ) -> Snapshot {
        let mut next = self.shared.lock().items.len();
        let mut last_miss = String::from("(no snapshot printed since)");
        let found = self.wait_output(WAIT, |out| {
            while let Some(snapshot) = out.items.get(next) {
                next += 1;
                match check(snapshot) {
                    Ok(()) => return Some(snapshot.clone()),
                    Err(miss) => {
                        last_miss = format!(
                            "snapshot at {:.1}s (backend {}, events {}, lost {}, live {}):\n{miss}",
                            snapshot.elapsed_s,
                            snapshot.backend,
                            snapshot.events,
                            snapshot.lost,
                            snapshot.live
                        );
                    }
                }
            }
            None
        });
        found.unwrap_or_else(|failure| self.fail_with(what, &failure, &last_miss))
    }

    /// `watch ARGS` with [`RECONCILE_OFTEN`].
    #[must_use]
    pub fn watch_reconciling(args: &[&str]) -> Self {
        let all: Vec<&str> = args.iter().copied().chain(RECONCILE_OFTEN).collect();
        Self::watch(&all)
    }

    /// The largest `drift` of every snapshot printed so far. Each snapshot reports the last
    /// reconciliation's drift, which the next one no longer shows once it is corrected,
    /// so a `wait_for` that checks drift may simply have waited one out.
    #[must_use]
    pub fn max_drift(&self) -> u64 {
        self.shared.lock().items.iter().map(|s| s.drift).max().unwrap_or(0)
    }

    /// Waits until the tracer prints `count` more snapshots; returns the last.
    pub fn next_snapshots(&self, count: usize) -> Snapshot {
        let mut seen = 0;
        self.wait_for(&format!("{count} more snapshots"), |_| {
            seen += 1;
            if seen >= count { Ok(()) } else { Err("counting".into()) }
        })
    }
}

impl Tracer<Event> {
    /// `tcptrace events --json --attach TCPTRACE_ATTACH`, keeping only the events whose
    /// local or remote port is one of `ports`; returned once `tcptrace: attached` is out.
    #[must_use]
    pub fn events(ports: &[u16]) -> Self {
        Self::events_with(&[], ports)
    }

    /// Like [`Tracer::events`], with more arguments (filters).
    #[must_use]
    pub fn events_with(extra: &[&str], ports: &[u16]) -> Self {
        let mut argv = ["events", "--json", "--attach", &attach_path()].map(str::to_owned).to_vec();
        argv.extend(extra.iter().map(|&a| a.to_owned()));
        let ports: BTreeSet<u16> = ports.iter().copied().collect();
        let tracer = Self::spawn(&argv, move |e: &Event| {
            ports.contains(&e.lport) || ports.contains(&e.rport)
        });
        if let Err(failure) =
            tracer.wait_output(ATTACH_WAIT, |out| has_attached_line(out).then_some(()))
        {
            tracer.fail_with("`tcptrace: attached` on stderr", &failure, "");
        }
        tracer
    }

    /// Waits until `check` is `Ok` over all the kept events; returns them.
    pub fn wait_events(
        &self,
        what: &str,
        mut check: impl FnMut(&[Event]) -> Result<(), String>,
    ) -> Vec<Event> {
        let mut last_miss = String::new();
        let mut checked = usize::MAX;
        let found = self.wait_output(WAIT, |out| {
            if out.items.len() == checked {
                return None;
            }
            checked = out.items.len();
            match check(&out.items) {
                Ok(()) => Some(out.items.clone()),
                Err(miss) => {
                    last_miss = format!("{} kept events: {miss}", out.items.len());
                    None
                }
            }
        });
        found.unwrap_or_else(|failure| {
            let events: String =
                self.shared.lock().items.iter().take(60).fold(String::new(), |mut s, e| {
                    let _ = writeln!(s, "{e:?}");
                    s
                });
            self.fail_with(what, &failure, &format!("{last_miss}\n{events}"))
        })
    }
}

impl<T> Drop for Tracer<T> {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Groups `items` by `key`, counting each group.
pub fn tally<T, K: Ord>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> BTreeMap<K, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(key(&item)).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness itself, without the tracer: a namespace of its own with `lo` up, both
    /// loopback families, tuples as `ss` shows them, and expectations from them.
    #[test]
    fn namespace_connections_and_expectations() {
        let root_ns = fs::metadata("/proc/self/ns/net").expect("stat").ino();
        let ns = Netns::new("ns-harness");
        assert_ne!(u64::from(ns.inode()), root_ns, "a namespace of its own");
        assert_eq!(ns.comm(), "ns-harness");

        let listen: IpAddr = "127.70.0.1".parse().unwrap();
        let v4 = Server::listen(&ns, SocketAddr::new(listen, 21071), Accepted::Hold);
        let dual = Server::listen(&ns, "[::]:21072".parse().unwrap(), Accepted::Hold);
        let mut clients = connect(&ns, "127.70.0.2".parse().unwrap(), v4.addr(), 3);
        clients.extend(connect(&ns, "127.70.0.3".parse().unwrap(), v4.addr(), 1));
        clients.extend(connect(&ns, "::1".parse().unwrap(), "[::1]:21072".parse().unwrap(), 2));
        clients.extend(connect(
            &ns,
            "127.70.0.4".parse().unwrap(),
            SocketAddr::new(listen, 21072),
            1,
        ));
        v4.wait_accepted(4);
        dual.wait_accepted(3);
        assert!(dual.open().iter().any(|t| t.peer.ip() == "127.70.0.4".parse::<IpAddr>().unwrap()));

        let mut open = tuples(&clients);
        open.extend(v4.open());
        open.extend(dual.open());
        let endpoint = SocketAddr::new(listen, 21071);
        let ports: BTreeSet<u16> =
            clients[..4].iter().map(|c| c.local_addr().unwrap().port()).collect();
        let rows = expected(&open, &[21071, 21072, 21073], &[endpoint]);
        assert_eq!(
            rows,
            [
                Expect::Port { port: 21071, live: 4, remote_addrs: 2 },
                Expect::Port { port: 21072, live: 3, remote_addrs: 2 },
                Expect::NoPort(21073),
                Expect::Endpoint { addr: endpoint, live: 4, local_ports: count(ports.len()) },
            ]
        );
        let closed = v4.close_where(|t| t.peer.ip() == "127.70.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(closed.len(), 3);
        assert_eq!(v4.open().len(), 1);
    }
}
