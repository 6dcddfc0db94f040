//! `tcptrace serve`: the live counts as Prometheus metrics over HTTP, for a fleet whose
//! metrics pipeline already exists.
//!
//! The main loop keeps the ledger current exactly as `watch` does (seed, ring drain,
//! periodic reconciliation) and, every interval, renders the metrics once into a shared
//! buffer. The HTTP server runs on a thread of its own, with its own single-threaded tokio
//! runtime, and answers every scrape from that buffer. The two share nothing else, so
//! neither waits for the other: the sock_diag walks (the capacity refresh, the
//! reconciliation; about 30 ms per 10,000 sockets, seconds on a box with hundreds of
//! thousands) run on the engine's walker thread, a scrape never waits for the kernel, and
//! a slow client never delays the ring drain. If the loop does stall, /healthz says so.
//!
//! Any local user can connect, and the tracer runs as root, so the HTTP side is bounded
//! whatever clients do: at most `--max-connections` connections at once (fewer when the
//! open-file limit cannot hold that many and still leave the tracer the descriptors its
//! own passes open), one more answered `503` and closed at once; request heads that must
//! be complete within [`REQUEST_HEAD_TIMEOUT`] and fit in [`MAX_REQUEST_HEAD`]; no
//! request bodies; and every connection over within [`CONNECTION_TIMEOUT`].

use std::{
    convert::Infallible,
    fs,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr},
    pin::pin,
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, header, server::conn::http1, service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::{
    cmd::args::{TraceArgs, parse_duration},
    engine::{Live, Options, Tick, passes::Pass},
    view::metrics,
};

/// The port Prometheus' exporter list assigns to nothing in particular and that
/// OpenTelemetry's Prometheus exporter uses; loopback, so nothing is exposed by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// A request's line and headers must be complete this long after its connection opens or
/// the previous response on it was sent, or the connection is closed (no answer). hyper
/// restarts this timer whenever a connection waits for a request, so it is also the
/// keep-alive idle timeout. A scraper sends its request at once; a client that sits idle
/// or dribbles its headers (slowloris) holds a connection slot this long at most.
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection's whole life, and so that of every request on it, the response included
/// (a client can stop reading one): after [`NEW_REQUESTS_FOR`] it takes no new request and
/// finishes the one in flight; [`SHUTDOWN_GRACE`] later it is closed whatever it is doing.
const CONNECTION_TIMEOUT: Duration = NEW_REQUESTS_FOR.saturating_add(SHUTDOWN_GRACE);
const NEW_REQUESTS_FOR: Duration = Duration::from_secs(25);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A request's line and headers together, at most; a longer one is answered `431` and its
/// connection closed. A scrape's are a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// What hyper may buffer per connection, at most (its floor is 8 KiB, its default about
/// 400 KiB): with the cap on connections, what clients can make the server hold.
const MAX_CONNECTION_BUFFER: usize = 16 * 1024;

/// `--max-connections` by default: a few Prometheus servers and people with curl.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// The most `--max-connections` allows: each connection may hold
/// [`MAX_CONNECTION_BUFFER`] and a file descriptor.
const MAX_MAX_CONNECTIONS: usize = 4096;
/// Descriptors kept free for the tracer's own work whatever HTTP clients do, beyond those
/// it holds when it starts serving (BPF programs, maps and links, the runtimes): a pass
/// opens a sock_diag socket, walks `/proc` a few directories deep, and for each foreign
/// namespace (one at a time) opens the namespace's file and a socket in a thread of its
/// own. Measured on this project's machine: 25 held once serving, and every pass worked
/// with one more free; the rest is room for the deeper `/proc` walks of a busy box.
const RESERVED_FILES: u64 = 32;
/// How often the refusals of connections over the cap are said, at most.
const REFUSALS_SAID_EVERY: Duration = Duration::from_mins(1);

#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  tcptrace serve                               http://127.0.0.1:9464/metrics
  tcptrace serve --listen 0.0.0.0:9464         reachable from other machines (mind the firewall)
  tcptrace serve --top-k 50 --interval 5s      more series per kind, refreshed less often
  curl -s 127.0.0.1:9464/metrics | grep tcptrace_live_connections

Metrics (prefix tcptrace_): attach_info{attach}, live_connections, events_total{kind},
lost_events_total, drift_connections, drift_corrections_total, unreconciled_namespaces,
skipped_passes_total{pass}, events_over_cap_total, local_ports, local_port_live_connections{port},
listeners, listener_live_connections / listener_remote_addresses /
listener_reuseport_sockets{netns,addr,port}, destinations, destination_ports_in_use /
destination_ephemeral_range_ports / destination_headroom_ports /
destination_port_use_ratio / destination_failed_connects_total{netns,laddr,raddr,rport};
limits (README, Limits): listener_accept_queue / listener_backlog / listener_drops_total /
listener_process_fds / listener_process_fd_limit{netns,addr,port},
listener_headroom_connections / listener_binding_limit{netns,addr,port,limit},
files_allocated, files_max, memory_available_bytes, netns_*{netns} (tcp_mem, orphans,
TIME_WAIT, conntrack, memory per connection), netns_limit_hits_total{netns,counter}.
Per-row series exist for the top K rows only; the `other` series (every label \"other\")
sums the rest, so totals stay exact and the number of series stays bounded.

HTTP limits (any local user can connect): at most --max-connections connections at once
(default 64, lowered at start if the open-file limit cannot also hold what the tracer
needs); one more is answered 503 and closed. A request's line and headers must arrive
within 5 s of connecting or of the previous response (the keep-alive idle timeout too) and
fit in 8 KiB (else 431); a request with a body gets 413; a connection lasts 30 s at most.")]
pub struct ServeArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Address and port to serve /metrics and /healthz on. Loopback by default: give
    /// 0.0.0.0:9464 (or [::]:9464) to let a Prometheus on another machine scrape it. A bare
    /// port means 127.0.0.1.
    #[arg(long, default_value = DEFAULT_LISTEN, value_parser = parse_listen, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Per-row series for this many local ports, listeners and destinations each (the ones
    /// with the most connections, or the highest use of the ephemeral range); the rest are
    /// summed into one `other` series. Bounds the number of series whatever the box does.
    #[arg(long, default_value_t = 20, value_parser = parse_top_k, value_name = "K")]
    pub top_k: usize,
    /// How often to check the counts against the kernel's own table (sock_diag) and
    /// report the difference as tcptrace_drift_connections; `0s`: only at exit. Sooner when
    /// events were lost or a difference waits for the next pass to confirm it.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub reconcile_every: Duration,
    /// HTTP connections served at once, at most (1 to 4096); one more is answered `503
    /// Service Unavailable` and closed at once. Lowered at start (and said) if the
    /// open-file limit (RLIMIT_NOFILE) cannot hold that many and still leave the tracer
    /// the descriptors its own passes need. Idle or slow clients hold a slot 5 s at most.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = parse_max_connections, value_name = "N")]
    pub max_connections: usize,
}

/// The most series per kind `--top-k` allows: past this a Prometheus server is better
/// served by `tcptrace watch --json` into a log pipeline.
const MAX_TOP_K: usize = 10_000;

fn parse_top_k(s: &str) -> Result<usize, String> {
    let k: usize = s.parse().map_err(|_| format!("expected a number from 1 to {MAX_TOP_K}"))?;
    if (1..=MAX_TOP_K).contains(&k) {
        Ok(k)
    } else {
        Err(format!(
            "must be from 1 to {MAX_TOP_K}: the top K rows get series, the rest one `other` series"
        ))
    }
}

fn parse_max_connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_MAX_CONNECTIONS).contains(&n) => Ok(n),
        _ => Err(format!("expected a number of connections from 1 to {MAX_MAX_CONNECTIONS}")),
    }
}

/// `127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464`, or a bare port (loopback).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse().map_err(|_| {
        "expected ADDRESS:PORT, e.g. 127.0.0.1:9464, [::1]:9464 or 0.0.0.0:9464".to_owned()
    })
}

/// What the HTTP side serves: the last rendering, and when it was made.
struct Published {
    metrics: Bytes,
    at: Instant,
    backend: &'static str,
    live: u64,
    /// A pass of the loop that is failing now, and why (see `engine::passes`).
    failing: Option<String>,
}

/// The latest [`Published`], shared between the update loop and the HTTP connections.
#[derive(Clone)]
struct Shared {
    latest: Arc<Mutex<Published>>,
    /// A rendering older than this means the update loop is stuck: /healthz says so.
    stale_after: Duration,
}

impl Shared {
    fn publish(&self, p: Published) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = p;
    }

    fn respond(&self, req: &Request<impl hyper::body::Body>) -> Response<Full<Bytes>> {
        if !req.body().is_end_stream() {
            // Never read: a body would only be something a client makes the server hold.
            let mut refused =
                text(StatusCode::PAYLOAD_TOO_LARGE, "no request bodies: GET or HEAD only\n".into());
            refused
                .headers_mut()
                .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            return refused;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        }
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        match req.uri().path() {
            "/metrics" => Response::builder()
                .header(header::CONTENT_TYPE, metrics::CONTENT_TYPE)
                .body(Full::new(latest.metrics.clone()))
                .expect("a valid response"),
            "/healthz" => {
                let age = latest.at.elapsed();
                if age > self.stale_after {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("stale: last update {:.1}s ago\n", age.as_secs_f64()),
                    )
                } else if let Some(failing) = &latest.failing {
                    // Still serving (the counts the hooks keep are current), but not checked.
                    // 200, not 503: a liveness probe would restart it, and a restart resets
                    // every counter; tcptrace_skipped_passes_total is there to alert on.
                    text(StatusCode::OK, format!("degraded: {failing}\n"))
                } else {
                    text(
                        StatusCode::OK,
                        format!(
                            "ok: attached via {}, {} live connections\n",
                            latest.backend, latest.live
                        ),
                    )
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found: try /metrics or /healthz\n".into()),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Before attaching: a port in use is reported at once, and no programs are loaded.
    let listener = bind(args.listen).await?;
    let options = Options { reconcile_on_stop: false, ..args.trace.options(args.reconcile_every) };
    let mut live = Live::start(&options, 0)?;
    let render = |live: &mut Live| {
        // Every row: the view keeps the top K and sums the rest into `other`.
        let snapshot = live.snapshot(0);
        for note in live.take_notices() {
            eprintln!("tcptrace: note: {note}");
        }
        let health = metrics::Health {
            skipped: Pass::ALL.map(|p| (p.name(), live.passes.record(p).skipped)).to_vec(),
            over_cap: live.capacity.over_cap(),
        };
        let failing = live.passes.failing().map(|(pass, why)| {
            let n = live.passes.record(pass).skipped;
            format!("{} failed and was skipped ({n} so far): {why}", pass.what())
        });
        Published {
            metrics: metrics::render(&snapshot, live.ledger.event_counts(), &health, args.top_k)
                .into(),
            at: Instant::now(),
            backend: live.session.tracer.path.name(),
            live: snapshot.live,
            failing,
        }
    };
    let shared = Shared {
        latest: Arc::new(Mutex::new(render(&mut live))),
        stale_after: (args.trace.interval * 3).max(Duration::from_secs(10)),
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    spawn_http(listener, shared.clone(), args.max_connections)?;
    eprintln!("tcptrace: serving http://{addr}/metrics and /healthz");
    loop {
        match live.next().await {
            Tick::Drain => {}
            Tick::Report => shared.publish(render(&mut live)),
            // The HTTP thread ends with the process.
            Tick::Stop => return Ok(()),
        }
    }
}

/// How many HTTP connections to serve at once: `wanted`, or fewer if the open-file limit
/// cannot hold them besides the files open now and [`RESERVED_FILES`]. Said when lowered.
fn connection_cap(wanted: usize) -> anyhow::Result<usize> {
    let (limit, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .context("getrlimit(RLIMIT_NOFILE)")?;
    // Less the descriptor the listing itself opens.
    let open = fs::read_dir("/proc/self/fd").context("listing /proc/self/fd")?.count() - 1;
    let open = u64::try_from(open).unwrap_or(u64::MAX);
    let cap = fit_connections(wanted, limit, open);
    if cap == 0 {
        bail!(
            "cannot serve HTTP: the open-file limit (RLIMIT_NOFILE) is {limit}, the tracer \
             holds {open} files and keeps {RESERVED_FILES} free for its own work; raise the \
             limit (`ulimit -n`, or LimitNOFILE= in a systemd unit)"
        );
    }
    if cap < wanted {
        eprintln!(
            "tcptrace: note: serving at most {cap} HTTP connections at once, not {wanted}: the \
             open-file limit (RLIMIT_NOFILE) is {limit}, the tracer holds {open} files and \
             keeps {RESERVED_FILES} free for its own work (raise the limit for more)"
        );
    }
    Ok(cap)
}

/// `wanted`, or as many connections as fit in `limit` descriptors besides the `open` ones,
/// [`RESERVED_FILES`] and the one of a connection being refused.
fn fit_connections(wanted: usize, limit: u64, open: u64) -> usize {
    let spare = limit.saturating_sub(open.saturating_add(RESERVED_FILES + 1));
    usize::try_from(spare).map_or(wanted, |spare| wanted.min(spare))
}

/// Moves the listener to a thread with its own runtime and serves scrapes there, `wanted`
/// connections at once at most (or fewer: see [`connection_cap`]).
fn spawn_http(listener: TcpListener, shared: Shared, wanted: usize) -> anyhow::Result<()> {
    // A tokio listener belongs to the runtime that made it: hand over the plain socket.
    let listener = listener.into_std().context("cannot hand the HTTP listener over")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    // Counted once the runtime holds its files too: past this point only the passes (for a
    // moment, from the reserve) and HTTP clients open more.
    let cap = match connection_cap(wanted) {
        Ok(cap) => cap,
        Err(e) => {
            // Dropping a runtime inside another one's async context panics.
            runtime.shutdown_background();
            return Err(e);
        }
    };
    thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve_http(listener, shared, cap).await,
                    Err(e) => log::error!("cannot serve HTTP: {e}"),
                }
            });
        })
        .context("cannot start the HTTP thread")?;
    Ok(())
}

/// Binds the HTTP listener (with SO_REUSEADDR, so a restart is not refused while the last
/// scrapes' connections sit in TIME_WAIT), with an error that says what to do.
async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| bind_error(addr, &e))
}

fn bind_error(addr: SocketAddr, e: &io::Error) -> anyhow::Error {
    let ip = addr.ip();
    let ip = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
    match e.kind() {
        io::ErrorKind::AddrInUse => anyhow!(
            "cannot serve on {addr}: the port is in use (see `ss -ltnp 'sport = :{}'`); pick \
             another with --listen {ip}:PORT",
            addr.port()
        ),
        io::ErrorKind::AddrNotAvailable => anyhow!(
            "cannot serve on {addr}: {} is not an address of this machine; use one that \
             `ip -brief address` lists, 0.0.0.0 for all, or the default {DEFAULT_LISTEN}",
            addr.ip()
        ),
        io::ErrorKind::PermissionDenied => anyhow!(
            "cannot serve on {addr}: ports below 1024 need CAP_NET_BIND_SERVICE; pick a port \
             above 1023 with --listen {ip}:PORT"
        ),
        _ => anyhow!("cannot serve on {addr}: {e}; pick another address with --listen ADDR:PORT"),
    }
}

/// Accepts scrapes until the process ends, one task per connection and `cap` at most; a
/// connection over the cap is refused where it is accepted, so refused ones never pile up.
async fn serve_http(listener: TcpListener, shared: Shared, cap: usize) {
    let slots = Arc::new(Semaphore::new(cap));
    let mut refusals = Refusals::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                log::warn!("cannot accept an HTTP connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refuse(stream, cap);
            refusals.count(cap);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(stream, shared).await;
            // Only now: a slot stands for a descriptor, and the socket is closed.
            drop(slot);
        });
    }
}

/// Serves one connection within the limits of the module doc; the socket is closed on return.
/// Any byte stream will do, for the fuzz tier's sake.
async fn serve_connection<S>(stream: S, shared: Shared)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        service_fn(move |req| std::future::ready(Ok::<_, Infallible>(shared.respond(&req))));
    let mut connection = pin!(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(REQUEST_HEAD_TIMEOUT)
            .max_header_size(MAX_REQUEST_HEAD)
            .max_buf_size(MAX_CONNECTION_BUFFER)
            .serve_connection(TokioIo::new(stream), service)
    );
    let served =
        if let Ok(served) = tokio::time::timeout(NEW_REQUESTS_FOR, connection.as_mut()).await {
            served
        } else {
            connection.as_mut().graceful_shutdown();
            let Ok(served) = tokio::time::timeout(SHUTDOWN_GRACE, connection).await else {
                log::debug!("HTTP connection: closed after {CONNECTION_TIMEOUT:?}");
                return;
            };
            served
        };
    if let Err(e) = served {
        log::debug!("HTTP connection: {e}");
    }
}

/// Answers a connection over the cap `503` and closes it, without waiting for anything.
fn refuse(stream: TcpStream, cap: usize) {
    let Ok(mut stream) = stream.into_std() else { return };
    let body = format!(
        "too many connections: tcptrace serve takes {cap} at once (--max-connections); try \
         again\n"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // A new socket's send buffer is empty, so this one non-blocking write goes out whole.
    let _ = stream.write(response.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
    // Closing a socket with unread bytes sends a reset, which can cost the client the
    // answer: read what it has sent so far (a request, usually), without waiting for more.
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        if !matches!(stream.read(&mut sink), Ok(1..)) {
            break;
        }
    }
}

/// Connections refused since it was last said; said at most every [`REFUSALS_SAID_EVERY`].
#[derive(Default)]
struct Refusals {
    unsaid: u64,
    said_at: Option<Instant>,
}

impl Refusals {
    fn count(&mut self, cap: usize) {
        self.unsaid += 1;
        if self.said_at.is_none_or(|at| at.elapsed() >= REFUSALS_SAID_EVERY) {
            log::warn!(
                "refused {} HTTP connection(s) with 503: {cap} were open, the most \
                 --max-connections allows",
                self.unsaid
            );
            self.unsaid = 0;
            self.said_at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser as _};

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<ServeArgs, String> {
        match Cli::try_parse_from(std::iter::once("tcptrace").chain(args.iter().copied())) {
            Ok(cli) => match cli.command() {
                Command::Serve(a) => Ok(a),
                other => Err(format!("not serve: {other:?}")),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn listens_on_loopback_unless_told_otherwise() {
        let a = parse(&["serve"]).unwrap();
        assert_eq!(a.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(a.listen.ip().is_loopback());
        assert_eq!(a.top_k, 20);
        assert_eq!(
            parse(&["serve", "--listen", "9999"]).unwrap().listen,
            "127.0.0.1:9999".parse().unwrap()
        );
        assert_eq!(
            parse(&["serve", "--listen", "[::]:1"]).unwrap().listen,
            "[::]:1".parse().unwrap()
        );
    }

    #[test]
    fn max_connections_defaults_to_64_and_is_bounded() {
        assert_eq!(parse(&["serve"]).unwrap().max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(parse(&["serve", "--max-connections", "4096"]).unwrap().max_connections, 4096);
        for bad in ["0", "4097", "many"] {
            let err = parse(&["serve", "--max-connections", bad]).unwrap_err();
            assert!(err.contains("from 1 to 4096"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_cap_leaves_the_tracer_its_reserve() {
        assert_eq!(fit_connections(64, 1024, 26), 64);
        // 96 - 26 held - 32 reserved - 1 being refused.
        assert_eq!(fit_connections(64, 96, 26), 37);
        assert_eq!(fit_connections(64, 59, 26), 0);
        assert_eq!(fit_connections(64, 20, 26), 0);
        assert_eq!(fit_connections(64, u64::MAX, 26), 64);
    }

    fn shared() -> Shared {
        Shared {
            latest: Arc::new(Mutex::new(Published {
                metrics: Bytes::from_static(b"# EOF\n"),
                at: Instant::now(),
                backend: "tracepoint",
                live: 3,
                failing: None,
            })),
            stale_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_request_with_a_body_is_refused_and_its_connection_closed() {
        let get = |body: &'static str| {
            Request::get("/metrics").body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap()
        };
        let refused = shared().respond(&get("x=1"));
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(refused.headers()[header::CONNECTION], "close");
        assert_eq!(shared().respond(&get("")).status(), StatusCode::OK);
    }

    /// Serves on a loopback port with `cap` connections at most; returns its address.
    fn serving(cap: usize) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        thread::spawn(move || {
            runtime.block_on(async {
                serve_http(TcpListener::from_std(listener).unwrap(), shared(), cap).await;
            });
        });
        addr
    }

    /// Sends `request` and reads until the server closes: (what it answered, whether it
    /// closed within `within`).
    fn exchange(addr: SocketAddr, request: &[u8], within: Duration) -> String {
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(within)).unwrap();
        client.write_all(request).unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).expect("closed by the server in time");
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[test]
    fn a_connection_over_the_cap_is_answered_503_and_closed() {
        let addr = serving(2);
        let held: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        // Both held connections are accepted before the next one (the accept queue is FIFO).
        thread::sleep(Duration::from_millis(200));
        let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n", Duration::from_secs(2));
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
        let body = answer.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(
            body,
            "too many connections: tcptrace serve takes 2 at once (--max-connections); try again\n"
        );
        drop(held);
        thread::sleep(Duration::from_millis(200));
        let answer = exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n", Duration::from_secs(2));
        assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    }

    #[test]
    fn an_oversized_request_head_is_answered_431() {
        let addr = serving(2);
        let big =
            format!("GET /metrics HTTP/1.1\r\nx-pad: {}\r\n\r\n", "a".repeat(MAX_REQUEST_HEAD));
        let answer = exchange(addr, big.as_bytes(), Duration::from_secs(2));
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let fits =
            format!("GET /metrics HTTP/1.0\r\nx-pad: {}\r\n\r\n", "a".repeat(MAX_REQUEST_HEAD / 2));
        let answer = exchange(addr, fits.as_bytes(), Duration::from_secs(2));
        assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let err = parse(&["serve", "--listen", "localhost"]).unwrap_err();
        assert!(err.contains("expected ADDRESS:PORT, e.g. 127.0.0.1:9464"), "{err}");
        let err = parse(&["serve", "--top-k", "0"]).unwrap_err();
        assert!(err.contains("from 1 to 10000"), "{err}");
    }

    #[test]
    fn bind_errors_say_what_to_do() {
        let addr: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let e = bind_error(addr, &io::Error::from(io::ErrorKind::AddrInUse)).to_string();
        assert!(e.contains("in use") && e.contains("--listen 127.0.0.1:PORT"), "{e}");
        assert!(!e.contains('\n'));
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let e = bind_error(v6, &io::Error::from(io::ErrorKind::PermissionDenied)).to_string();
        assert!(e.contains("--listen [::1]:PORT"), "{e}");
    }

    #[test]
    fn version_names_the_attach_paths() {
        let version = <Cli as CommandFactory>::command().render_long_version();
        assert!(version.contains("attach paths compiled in:"), "{version}");
    }

    #[test]
    fn completions_and_man_page_know_serve() {
        let mut cmd = <Cli as CommandFactory>::command();
        let mut bash = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "tcptrace", &mut bash);
        let bash = String::from_utf8(bash).unwrap();
        assert!(
            bash.contains("serve") && bash.contains("--top-k"),
            "serve missing from bash completion"
        );
        let mut man = Vec::new();
        clap_mangen::Man::new(<Cli as CommandFactory>::command()).render(&mut man).unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(man.contains("serve"), "serve missing from the man page");
    }

    // ---- fuzz tier: the HTTP request path, from the bytes a local user may send ----

    fn shared_for_tests() -> Shared {
        let published = Published {
            metrics: Bytes::from_static(b"# EOF\n"),
            at: Instant::now(),
            backend: "tp_btf",
            live: 0,
            failing: None,
        };
        Shared { latest: Arc::new(Mutex::new(published)), stale_after: Duration::from_hours(1) }
    }

    /// Sends `request` on a fresh connection, keeps it open as a client that says no more
    /// would, and reads until serve closes it (time is paused, so its timeouts pass at
    /// once): what came back, or `None` if serve never closed it.
    fn in_memory(request: &[u8]) -> Option<Vec<u8>> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // Held, not shut down: serve must close a connection by itself.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a test runtime");
        runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            tokio::spawn(serve_connection(server, shared_for_tests()));
            let request = request.to_vec();
            let (mut reader, mut writer) = tokio::io::split(&mut client);
            let send = async {
                // serve may stop reading (a head too large) and close: that is an answer.
                let _ = writer.write_all(&request).await;
            };
            let mut answer = Vec::new();
            let receive = tokio::time::timeout(
                CONNECTION_TIMEOUT + Duration::from_secs(5),
                reader.read_to_end(&mut answer),
            );
            let ((), received) = tokio::join!(send, receive);
            received.ok().map(|_| answer)
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 256,
            ..crate::fuzz::config()
        })]

        #[test]
        fn any_bytes_are_answered_or_closed(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20_000)) {
            let answer = in_memory(&bytes);
            proptest::prop_assert!(answer.is_some(), "serve kept the connection open");
            let answer = answer.unwrap_or_default();
            proptest::prop_assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 "), "{:?}", String::from_utf8_lossy(&answer));
        }

        #[test]
        fn any_method_and_path_get_a_status_serve_gives(
            method in "[A-Z]{1,8}",
            path in "/[!-~]{0,200}",
        ) {
            let request = format!("{method} {path} HTTP/1.1\r\nhost: t\r\n\r\n");
            let answer = in_memory(request.as_bytes()).unwrap_or_default();
            let status = String::from_utf8_lossy(answer.get(9..12).unwrap_or_default()).into_owned();
            proptest::prop_assert!(
                ["200", "400", "404", "405", "414", "431"].contains(&status.as_str()),
                "{request:?} got {:?}", String::from_utf8_lossy(&answer)
            );
        }
    }

    #[test]
    fn a_good_request_is_answered_after_garbage() {
        assert!(in_memory(b"\x00\xff garbage \r\n\r\n").is_some());
        let answer = in_memory(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer));
        let answer =
            in_memory(b"GET /metrics HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabc").unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 413"), "{:?}", String::from_utf8_lossy(&answer));
    }
}
