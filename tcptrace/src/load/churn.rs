//! `tcptrace load churn`: connect, accept and close loopback connections as fast as the box
//! allows, for a bounded time or count, and print one JSON line with the rate.
//!
//! TIME_WAIT is what caps a naive loopback churn: every closed connection keeps its
//! 4-tuple for 60 s, and one source address has only the ephemeral range (28,232 ports
//! here) per destination. So the servers listen on several addresses and every client
//! socket binds its own source address with `IP_BIND_ADDRESS_NO_PORT` (the kernel picks the
//! port at connect time, per 4-tuple rather than per source address): sources × listeners
//! pairs each have the whole range. All addresses are in 127.0.0.0/8 and none is 127.0.0.1,
//! so the load never meets anything else on the box's loopback.
//!
//! Closing is a normal close (FIN) by default, because that is what servers and clients do
//! and what a tracer must keep up with (every connection passes FIN_WAIT, CLOSE_WAIT,
//! LAST_ACK and TIME_WAIT). `--reset` closes with `SO_LINGER` 0 (RST), which skips TIME_WAIT
//! and is cheaper per connection, for comparison.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket,
    sockopt,
};
use serde::Serialize;

/// The servers listen on 127.201.0.1, 127.201.0.2, ...
const LISTEN_NET: [u8; 2] = [127, 201];
/// The clients bind 127.202.0.1, 127.202.0.2, ... (skipping .0 and .255 in the last byte).
const SOURCE_NET: [u8; 2] = [127, 202];
/// How long the servers may take to accept what the clients connected before we give up.
const ACCEPT_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Args)]
#[command(
    about = "Open, accept and close loopback connections in a bounded loop, and report the rate",
    after_help = "Prints one JSON line on stdout, e.g.\n  \
{\"workload\":\"churn\",\"connections\":250000,\"failed\":0,\"seconds\":5.0,\"rate\":50000.0,...}\n\n\
Servers listen on 127.201.0.1..N, clients bind 127.202.x.y sources: never 127.0.0.1."
)]
pub struct ChurnArgs {
    /// Stop after this long (e.g. 5s). Default 5s unless --connections is given.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many connections (whichever bound comes first).
    #[arg(long, value_name = "N")]
    pub connections: Option<u64>,
    /// Client threads, and as many server (accept) threads. Default: twice the CPUs, so
    /// every core is busy.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Listening addresses (127.201.0.1 and up), all on --port.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=254))]
    pub listeners: u16,
    /// Client source addresses (127.202.0.1 and up).
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64_000))]
    pub sources: u16,
    /// Port the listeners use (outside the ephemeral range, so clients never pick it).
    #[arg(long, default_value_t = 9400)]
    pub port: u16,
    /// Close client sockets with an RST (SO_LINGER 0) instead of a normal FIN close.
    #[arg(long)]
    pub reset: bool,
}

/// A listener with the largest accept queue the kernel allows (std's is 128, which a
/// storm fills whenever an acceptor is descheduled: the dropped SYN costs its client 1 s).
fn listen(addr: SocketAddrV4) -> anyhow::Result<TcpListener> {
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(addr))?;
    nix::sys::socket::listen(&fd, Backlog::MAXCONN)?;
    Ok(TcpListener::from(fd))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 5m)"))
}

/// What one churn run did; printed as one JSON line.
#[derive(Debug, Serialize, PartialEq)]
pub struct ChurnReport {
    pub workload: &'static str,
    /// Connections that completed the handshake and were closed by both sides.
    pub connections: u64,
    /// connect() calls that failed (e.g. EADDRNOTAVAIL when the ports run out).
    pub failed: u64,
    /// Connections the servers accepted (equal to `connections` once the run is over).
    pub accepted: u64,
    /// From the first connect to the last client close.
    pub seconds: f64,
    /// Connections a second: those completed by the --duration deadline over the time to
    /// it, or `connections / seconds` when only --connections bounds the run.
    pub rate: f64,
    pub threads: u16,
    pub listeners: u16,
    pub sources: u16,
    pub port: u16,
    /// `fin` (normal close) or `rst` (SO_LINGER 0).
    pub close: &'static str,
}

/// Where the run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bounds {
    deadline: Option<Duration>,
    connections: Option<u64>,
}

impl ChurnArgs {
    fn bounds(&self) -> anyhow::Result<Bounds> {
        if self.connections == Some(0) {
            bail!("--connections must be at least 1");
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            bail!("--duration must be more than 0s");
        }
        let deadline = match (self.duration, self.connections) {
            (None, None) => Some(Duration::from_secs(5)),
            (d, _) => d,
        };
        Ok(Bounds { deadline, connections: self.connections })
    }

    fn threads(&self) -> u16 {
        self.threads.unwrap_or_else(|| {
            let cpus = thread::available_parallelism().map_or(1, std::num::NonZero::get);
            u16::try_from(cpus * 2).unwrap_or(1024).min(1024)
        })
    }
}

/// The n-th listening address (n from 0).
fn listen_addr(n: u16) -> Ipv4Addr {
    Ipv4Addr::new(LISTEN_NET[0], LISTEN_NET[1], 0, (n + 1) as u8)
}

/// The n-th source address (n from 0): 127.202.0.1 ... 127.202.0.254, 127.202.1.1 ...
fn source_addr(n: u16) -> Ipv4Addr {
    Ipv4Addr::new(SOURCE_NET[0], SOURCE_NET[1], (n / 254) as u8, (n % 254 + 1) as u8)
}

/// Counters the threads share.
#[derive(Default)]
struct Counters {
    /// Connections a client started (reserved against --connections).
    started: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    accepted: AtomicU64,
    stop_servers: AtomicBool,
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "load::run hands every workload its arguments by value"
)]
pub fn run(args: ChurnArgs) -> anyhow::Result<()> {
    let report = churn(&args)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs the churn and returns its report.
pub fn churn(args: &ChurnArgs) -> anyhow::Result<ChurnReport> {
    let bounds = args.bounds()?;
    let threads = args.threads();
    let listeners = (0..args.listeners)
        .map(|n| {
            let addr = SocketAddrV4::new(listen_addr(n), args.port);
            listen(addr)
                .with_context(|| format!("cannot listen on {addr}: pick another --port"))
                .map(Arc::new)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let counters = Arc::new(Counters::default());

    // At least one acceptor per listener, or its queue fills and its clients stall.
    let servers: Vec<_> = (0..threads.max(args.listeners))
        .map(|t| {
            let listener = Arc::clone(&listeners[usize::from(t % args.listeners)]);
            let counters = Arc::clone(&counters);
            thread::spawn(move || serve(&listener, &counters))
        })
        .collect();

    // The clients start together, so `seconds` measures only the churn.
    let start = Arc::new(Barrier::new(usize::from(threads) + 1));
    let clients: Vec<_> = (0..threads)
        .map(|t| {
            let counters = Arc::clone(&counters);
            let start = Arc::clone(&start);
            let client = Client {
                first: t,
                stride: threads,
                listeners: args.listeners,
                sources: args.sources,
                port: args.port,
                reset: args.reset,
            };
            thread::spawn(move || {
                start.wait();
                client.run(bounds, &counters)
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    // With a deadline, the rate is what completed by the deadline: a connect that straggles
    // after it (a SYN retransmitted after 1 s) must not stretch the measured time.
    let at_deadline = bounds.deadline.map(|d| {
        while !clients.iter().all(thread::JoinHandle::is_finished) && began.elapsed() < d {
            thread::sleep(Duration::from_millis(1));
        }
        (counters.connected.load(Ordering::SeqCst), began.elapsed().as_secs_f64())
    });
    let mut client_error = None;
    for client in clients {
        if let Err(e) = client.join().expect("a client thread panicked") {
            client_error.get_or_insert(e);
        }
    }
    let seconds = began.elapsed().as_secs_f64();

    // Let the servers accept (and close) what the clients connected, so that a tracer sees
    // every connection end before we report.
    let connected = counters.connected.load(Ordering::SeqCst);
    let grace = Instant::now();
    while counters.accepted.load(Ordering::SeqCst) < connected && grace.elapsed() < ACCEPT_GRACE {
        thread::sleep(Duration::from_millis(1));
    }
    counters.stop_servers.store(true, Ordering::SeqCst);
    for listener in &listeners {
        // Wakes the threads blocked in accept() (Linux returns EINVAL to them).
        let _ = nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Read);
    }
    for server in servers {
        server.join().expect("a server thread panicked");
    }

    let failed = counters.failed.load(Ordering::SeqCst);
    let accepted = counters.accepted.load(Ordering::SeqCst);
    if let Some(e) = client_error {
        return Err(e);
    }
    if connected == 0 {
        bail!("no connection completed ({failed} connect() calls failed)");
    }
    if accepted < connected {
        bail!(
            "the servers accepted {accepted} of {connected} connections within {ACCEPT_GRACE:?} \
             after the clients stopped"
        );
    }
    Ok(ChurnReport {
        workload: "churn",
        connections: connected,
        failed,
        accepted,
        seconds,
        rate: at_deadline.map_or_else(|| rate(connected, seconds), |(n, s)| rate(n, s)),
        threads,
        listeners: args.listeners,
        sources: args.sources,
        port: args.port,
        close: if args.reset { "rst" } else { "fin" },
    })
}

#[expect(clippy::cast_precision_loss, reason = "a rate; 2^53 connections will not happen")]
fn rate(connections: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { connections as f64 / seconds } else { 0.0 }
}

/// Accepts and closes until told to stop.
fn serve(listener: &TcpListener, counters: &Counters) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                counters.accepted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
            Err(_) if counters.stop_servers.load(Ordering::SeqCst) => return,
            // EMFILE, ECONNABORTED...: transient; the client side counts what failed.
            Err(_) => thread::yield_now(),
        }
    }
}

/// One client thread: connects round-robin over (source, listener) pairs, closes at once.
struct Client {
    first: u16,
    stride: u16,
    listeners: u16,
    sources: u16,
    port: u16,
    reset: bool,
}

impl Client {
    fn run(&self, bounds: Bounds, counters: &Counters) -> anyhow::Result<()> {
        let began = Instant::now();
        let mut n = u64::from(self.first);
        loop {
            if bounds.deadline.is_some_and(|d| began.elapsed() >= d) {
                return Ok(());
            }
            if let Some(max) = bounds.connections
                && counters.started.fetch_add(1, Ordering::SeqCst) >= max
            {
                return Ok(());
            }
            let source = source_addr((n % u64::from(self.sources)) as u16);
            // Walk the listeners at a different pace than the sources, so every pair is used.
            let listener =
                listen_addr(((n / u64::from(self.sources)) % u64::from(self.listeners)) as u16);
            n += u64::from(self.stride);
            match self.connect_and_close(source, listener) {
                Ok(()) => counters.connected.fetch_add(1, Ordering::SeqCst),
                Err(e) if is_transient(e) => counters.failed.fetch_add(1, Ordering::SeqCst),
                Err(e) => {
                    return Err(io::Error::from(e)).with_context(|| {
                        format!("connecting {source} to {listener}:{}", self.port)
                    });
                }
            };
        }
    }

    fn connect_and_close(&self, source: Ipv4Addr, listener: Ipv4Addr) -> nix::Result<()> {
        let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        setsockopt(&fd, sockopt::IpBindAddressNoPort, &true)?;
        bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(source, 0)))?;
        connect(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(listener, self.port)))?;
        if self.reset {
            setsockopt(&fd, sockopt::Linger, &libc::linger { l_onoff: 1, l_linger: 0 })?;
        }
        drop(fd);
        Ok(())
    }
}

/// Errors a storm may cause and the next connect may not: out of ports, a full accept
/// queue, a race with TIME_WAIT.
fn is_transient(e: nix::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e,
        Errno::EADDRNOTAVAIL
            | Errno::EADDRINUSE
            | Errno::ECONNREFUSED
            | Errno::ECONNRESET
            | Errno::ETIMEDOUT
            | Errno::EAGAIN
            | Errno::EINTR
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        churn: ChurnArgs,
    }

    fn parse(args: &[&str]) -> Result<ChurnArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("churn").chain(args.iter().copied())).map(|c| c.churn)
    }

    #[test]
    fn is_bounded_by_default() {
        let args = parse(&[]).unwrap();
        assert_eq!(
            args.bounds().unwrap(),
            Bounds { deadline: Some(Duration::from_secs(5)), connections: None }
        );
        assert!(!args.reset);
        assert!(args.threads() >= 2);
    }

    #[test]
    fn a_count_alone_bounds_the_run() {
        let args = parse(&["--connections", "1000"]).unwrap();
        assert_eq!(args.bounds().unwrap(), Bounds { deadline: None, connections: Some(1000) });
        let args = parse(&["--connections", "1000", "--duration", "2s"]).unwrap();
        assert_eq!(
            args.bounds().unwrap(),
            Bounds { deadline: Some(Duration::from_secs(2)), connections: Some(1000) }
        );
    }

    #[test]
    fn rejects_empty_bounds_and_bad_counts() {
        assert!(parse(&["--connections", "0"]).unwrap().bounds().is_err());
        assert!(parse(&["--duration", "0s"]).unwrap().bounds().is_err());
        assert!(parse(&["--duration", "soon"]).is_err());
        assert!(parse(&["--listeners", "0"]).is_err());
        assert!(parse(&["--listeners", "255"]).is_err());
        assert!(parse(&["--threads", "0"]).is_err());
    }

    #[test]
    fn addresses_stay_in_their_nets_and_avoid_127_0_0_1() {
        assert_eq!(listen_addr(0), Ipv4Addr::new(127, 201, 0, 1));
        assert_eq!(listen_addr(253), Ipv4Addr::new(127, 201, 0, 254));
        assert_eq!(source_addr(0), Ipv4Addr::new(127, 202, 0, 1));
        assert_eq!(source_addr(253), Ipv4Addr::new(127, 202, 0, 254));
        assert_eq!(source_addr(254), Ipv4Addr::new(127, 202, 1, 1));
        for n in [0, 1, 253, 254, 255, 63_999] {
            let s = source_addr(n).octets();
            assert_eq!(s[..2], SOURCE_NET);
            assert!(s[3] != 0 && s[3] != 255, "{n}: {s:?}");
        }
    }

    #[test]
    fn reports_a_rate() {
        assert!((rate(1000, 2.0) - 500.0).abs() < f64::EPSILON);
        assert!(rate(1000, 0.0).abs() < f64::EPSILON);
    }
}
