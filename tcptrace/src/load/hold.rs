//! `tcptrace load hold`: one worker of a connection-holding workload. It may join a
//! SO_REUSEPORT listener group and accept whatever the group's hash sends it, and it may
//! open connections from one source address to one server; it holds everything it has
//! until its stdin closes (the parent went away or is done), then exits and lets the
//! kernel close the sockets.
//!
//! Several workers make one workload because one process may hold only RLIMIT_NOFILE
//! sockets (20,000 on the project's test hosts). The parent reads progress as JSON lines
//! on stdout ([`Progress`]) and says `go` on stdin once every worker listens, so that the
//! connections spread over the whole listener group.

use std::{
    io::{self, BufRead as _, Write as _},
    mem::ManuallyDrop,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use socket2::{Domain, Socket, Type};

/// The accept backlog asked for; the kernel caps it at `net.core.somaxconn` (4096 by
/// default). A full backlog drops SYNs, and a dropped SYN costs the client a 1 s retry.
const BACKLOG: i32 = 4096;

/// The load's scheduling niceness (0 is the default, 19 the lowest priority).
const LOAD_NICE: libc::c_int = 10;

/// How often a worker reports its counts while they change.
const REPORT_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Args)]
pub struct HoldArgs {
    /// Join the SO_REUSEPORT listener group on this address and hold every connection it
    /// accepts.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Open connections to this server.
    #[arg(long, value_name = "ADDR:PORT", requires = "count")]
    pub connect: Option<SocketAddr>,
    /// Source address of the connections (the kernel picks the port at connect time, so
    /// the same port can serve several destinations).
    #[arg(long, value_name = "ADDR")]
    pub from: Option<IpAddr>,
    /// How many connections to open.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop opening at the first EADDRNOTAVAIL (the ephemeral range is exhausted towards
    /// that server), then try `--failures` times in all and count the failures.
    #[arg(long)]
    pub until_exhausted: bool,
    /// Connect attempts that must fail with EADDRNOTAVAIL before an exhausted worker stops.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub failures: u64,
    /// Wait for a `go` line on stdin before connecting.
    #[arg(long)]
    pub wait_for_go: bool,
}

/// The progress and failure lines a worker prints: their JSON is the wire format between a
/// worker and its [`Fleet`](super::fleet::Fleet) (or xtask's soak), defined once in the
/// contract crate.
pub use tcptrace_json::load::{Failure, Progress};

pub fn run(args: HoldArgs) -> anyhow::Result<()> {
    die_with_parent()?;
    // The load must not starve what it is there to exercise: the tracer drains its ring
    // on a box whose CPUs the load keeps busy.
    // SAFETY: setpriority has no memory-safety preconditions.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, LOAD_NICE) };
    let accepted = Arc::new(AtomicU64::new(0));
    let mut progress = Progress::default();
    if let Some(addr) = args.listen {
        let listener = reuseport_listener(addr)?;
        progress.listening = Some(listener.local_addr()?.port());
        let count = Arc::clone(&accepted);
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(&listener, &count))?;
    }
    emit(&progress)?;
    let stdin = watch_stdin();
    if args.wait_for_go && !stdin.wait_for_go() {
        return Ok(());
    }
    let connected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut opener = Some({
        let (connected, failed) = (Arc::clone(&connected), Arc::clone(&failed));
        thread::Builder::new()
            .name("connect".into())
            .spawn(move || open(&args, &connected, &failed))?
    });
    // Everything opened is held here until stdin closes.
    let mut held = Vec::new();
    let mut last = None;
    loop {
        if opener.as_ref().is_some_and(thread::JoinHandle::is_finished) {
            let (streams, outcome) = opener.take().expect("checked").join().expect("no panic");
            held = streams;
            if let Err(e) = outcome {
                emit_failure(&format!("{e:#}"))?;
            }
        }
        progress.connected = connected.load(Ordering::Relaxed);
        progress.accepted = accepted.load(Ordering::Relaxed);
        progress.failed = failed.load(Ordering::Relaxed);
        progress.done = opener.is_none();
        if last != Some(progress) {
            emit(&progress)?;
            last = Some(progress);
        }
        if stdin.closed() {
            drop(held);
            return Ok(());
        }
        thread::sleep(REPORT_EVERY);
    }
}

/// Opens the connections one after another (blocking connects: loopback completes them
/// at once unless the server's backlog is full).
/// Returns what it opened, and why it stopped early if it did.
fn open(
    args: &HoldArgs,
    connected: &AtomicU64,
    failed: &AtomicU64,
) -> (Vec<TcpStream>, anyhow::Result<()>) {
    let mut held = Vec::new();
    let outcome = open_into(args, &mut held, connected, failed);
    (held, outcome)
}

fn open_into(
    args: &HoldArgs,
    held: &mut Vec<TcpStream>,
    connected: &AtomicU64,
    failed: &AtomicU64,
) -> anyhow::Result<()> {
    let Some(server) = args.connect else { return Ok(()) };
    let count = args.count.unwrap_or(0);
    while (held.len() as u64) < count {
        match connect_from(args.from, server) {
            Ok(stream) => {
                held.push(stream);
                connected.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && args.until_exhausted => {
                if failed.fetch_add(1, Ordering::Relaxed) + 1 >= args.failures {
                    return Ok(());
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                anyhow::bail!(
                    "this process may hold only {} files (RLIMIT_NOFILE) and holds {}: \
                     give each worker fewer connections",
                    nofile_limit().unwrap_or(0),
                    held.len()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("connect to {server}")),
        }
    }
    Ok(())
}

fn connect_from(from: Option<IpAddr>, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(server), Type::STREAM, None)?;
    if let Some(ip) = from {
        // Without this, bind() would pick the port, unique per source address across every
        // destination; with it, connect() picks one unique per 4-tuple, as a client that
        // does not bind does.
        bind_address_no_port(&socket)?;
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect(&server.into())?;
    Ok(socket.into())
}

fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option value is a c_int that lives across the call, and its size is given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn reuseport_listener(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into()).with_context(|| format!("bind {addr}"))?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts until the process exits, keeping every connection open. The streams are never
/// dropped: the kernel closes them when the worker exits.
fn accept_loop(listener: &TcpListener, accepted: &AtomicU64) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = ManuallyDrop::new(stream);
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                let _ = emit_failure(&format!(
                    "the listener cannot accept more: this process may hold only {} files \
                     (RLIMIT_NOFILE)",
                    nofile_limit().unwrap_or(0)
                ));
                thread::sleep(Duration::from_secs(1));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Stdin as the parent's voice: a `go` line, and EOF when the parent is done or gone.
struct Stdin {
    state: Arc<(Mutex<StdinState>, std::sync::Condvar)>,
}

#[derive(Default)]
struct StdinState {
    go: bool,
    closed: bool,
}

fn watch_stdin() -> Stdin {
    let state = Arc::new((Mutex::new(StdinState::default()), std::sync::Condvar::new()));
    let shared = Arc::clone(&state);
    thread::spawn(move || {
        let (lock, changed) = &*shared;
        for line in io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "go" => lock.lock().expect("not poisoned").go = true,
                Ok(_) => {}
                Err(_) => break,
            }
            changed.notify_all();
        }
        lock.lock().expect("not poisoned").closed = true;
        changed.notify_all();
    });
    Stdin { state }
}

impl Stdin {
    /// Waits for `go`; false if stdin closed first.
    fn wait_for_go(&self) -> bool {
        let (lock, changed) = &*self.state;
        let mut state = lock.lock().expect("not poisoned");
        while !state.go && !state.closed {
            state = changed.wait(state).expect("not poisoned");
        }
        state.go
    }

    fn closed(&self) -> bool {
        self.state.0.lock().expect("not poisoned").closed
    }
}

/// A worker must not outlive its parent (Ctrl-C, a crash): the kernel kills it when the
/// parent exits, which closes its sockets.
fn die_with_parent() -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .context("prctl(PR_SET_PDEATHSIG)")?;
    // The parent may have exited before the prctl.
    if nix::unistd::getppid().as_raw() == 1 {
        anyhow::bail!("the parent exited before this worker started");
    }
    Ok(())
}

/// The files one process may hold (the soft RLIMIT_NOFILE): what bounds the connections
/// of one worker, and so how a workload is spread over workers.
pub fn nofile_limit() -> nix::Result<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map(|(soft, _)| soft)
}

fn emit(progress: &Progress) -> anyhow::Result<()> {
    emit_line(&serde_json::to_string(progress)?)
}

fn emit_failure(error: &str) -> anyhow::Result<()> {
    emit_line(&serde_json::to_string(&Failure { error: error.to_owned() })?)
}

fn emit_line(line: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).context("stdout closed")
}
