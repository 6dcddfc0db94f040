//! `tcptrace serve`: the live counts as Prometheus metrics over HTTP, for a fleet whose
//! metrics pipeline already exists.
//!
//! The main loop keeps the ledger current exactly as `watch` does (seed, ring drain,
//! periodic reconciliation) and, every interval, renders the metrics once into a shared
//! buffer. The HTTP server runs on a thread of its own, with its own single-threaded tokio
//! runtime, and answers every scrape from that buffer. The two share nothing else, so
//! neither waits for the other: the loop's sock_diag dumps (the capacity refresh every
//! interval, the reconciliation; about 30 ms per 10,000 sockets, seconds on a box with
//! hundreds of thousands) block that loop alone, a scrape never waits for the kernel, and
//! a slow client never delays the ring drain. If the loop does stall, /healthz says so.

use std::{
    convert::Infallible,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, header, server::conn::http1, service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::{
    cmd::args::{TraceArgs, parse_duration},
    engine::{Live, Tick, passes::Pass},
    view::metrics,
};

/// The port Prometheus' exporter list assigns to nothing in particular and that
/// OpenTelemetry's Prometheus exporter uses; loopback, so nothing is exposed by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  tcptrace serve                               http://127.0.0.1:9464/metrics
  tcptrace serve --listen 0.0.0.0:9464         reachable from other machines (mind the firewall)
  tcptrace serve --top-k 50 --interval 5s      more series per kind, refreshed less often
  curl -s 127.0.0.1:9464/metrics | grep tcptrace_live_connections

Metrics (prefix tcptrace_): attach_info{attach}, live_connections, events_total{kind},
lost_events_total, drift_connections, local_ports, local_port_live_connections{port},
listeners, listener_live_connections / listener_remote_addresses /
listener_reuseport_sockets{netns,addr,port}, destinations, destination_ports_in_use /
destination_ephemeral_range_ports / destination_headroom_ports /
destination_port_use_ratio / destination_failed_connects_total{netns,laddr,raddr,rport}.
Per-row series exist for the top K rows only; the `other` series (every label \"other\")
sums the rest, so totals stay exact and the number of series stays bounded.")]
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
    /// report the difference as tcptrace_drift_connections; `0s` only at exit.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub reconcile_every: Duration,
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

    fn respond(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
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
                    text(StatusCode::SERVICE_UNAVAILABLE, format!("degraded: {failing}\n"))
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
    let mut live = Live::start(&args.trace.options(args.reconcile_every), 0)?;
    let render = |live: &mut Live| {
        // Every row: the view keeps the top K and sums the rest into `other`.
        let snapshot = live.snapshot(0);
        for note in live.take_notices() {
            eprintln!("tcptrace: note: {note}");
        }
        let skipped = Pass::ALL.map(|p| (p.name(), live.passes.record(p).skipped));
        let failing = live.passes.failing().map(|(pass, why)| {
            let n = live.passes.record(pass).skipped;
            format!("{} failed and was skipped ({n} so far): {why}", pass.what())
        });
        Published {
            metrics: metrics::render(&snapshot, live.ledger.event_counts(), &skipped, args.top_k)
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
    eprintln!(
        "tcptrace: serving http://{}/metrics and /healthz",
        listener.local_addr().unwrap_or(args.listen)
    );
    spawn_http(listener, shared.clone())?;
    loop {
        match live.next().await {
            Tick::Drain => {}
            Tick::Report => shared.publish(render(&mut live)),
            // The HTTP thread ends with the process.
            Tick::Stop => return Ok(()),
        }
    }
}

/// Moves the listener to a thread with its own runtime and serves scrapes there.
fn spawn_http(listener: TcpListener, shared: Shared) -> anyhow::Result<()> {
    // A tokio listener belongs to the runtime that made it: hand over the plain socket.
    let listener = listener.into_std().context("cannot hand the HTTP listener over")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve_http(listener, shared).await,
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

/// Accepts scrapes until the task is aborted, one task per connection.
async fn serve_http(listener: TcpListener, shared: Shared) {
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
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                std::future::ready(Ok::<_, Infallible>(shared.respond(&req)))
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                log::debug!("HTTP connection: {e}");
            }
        });
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
}
