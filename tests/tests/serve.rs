//! `tcptrace serve`: scraped over real HTTP while the test holds real connections (own
//! network namespace, 127.85.0.0/16, listener port 21883, a 10-port ephemeral range so the
//! test's destination ranks first by use of its range), and its errors for a port in use
//! and a bad --listen.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tcptrace_tests::{
    ATTACH_WAIT, Accepted, INTERVAL, Netns, Server, WAIT, attach_path, connect, run_to_exit,
    tracer_bin,
};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 85, 0, 1)), 21883);
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 85, 0, 2));
/// Connections held; fewer than the namespace's 10 ephemeral ports.
const HELD: usize = 8;
const RANGE: (u16, u16) = (40_000, 40_009);
/// Series per kind. Large, because the tracer sees the whole box: a load test elsewhere
/// can hold more than `HELD` connections on each of hundreds of local port numbers (client
/// ports are shared across destinations), which would push the test's port into `other`.
const TOP_K: usize = 1000;

/// `tcptrace serve` as a child process, killed on drop; its stderr is kept.
struct Serve {
    child: Mutex<Child>,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    /// Starts it on a free loopback port and waits until /healthz answers 200.
    fn start(extra: &[&str]) -> Self {
        let addr = free_loopback_port();
        let attach = attach_path();
        let listen = addr.to_string();
        let mut args = vec!["serve", "--listen", &listen, "--attach", &attach];
        args.extend(["--interval", INTERVAL, "--reconcile-every", "1s"]);
        args.extend(extra);
        println!("  running: {} {}", tracer_bin().display(), args.join(" "));
        let mut child = Command::new(tracer_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcptrace serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = Arc::clone(&stderr);
            let mut pipe = child.stderr.take().expect("piped stderr");
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    stderr.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let serve = Self { child: Mutex::new(child), addr, stderr };
        let deadline = Instant::now() + ATTACH_WAIT;
        loop {
            if let Ok(Some(status)) = serve.child_status() {
                panic!("tcptrace serve exited with {status}: {}", serve.stderr());
            }
            if let Ok((200, _)) = get(addr, "/healthz") {
                return serve;
            }
            assert!(
                Instant::now() < deadline,
                "no /healthz within {ATTACH_WAIT:?}: {}",
                serve.stderr()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn child_status(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.lock().unwrap().try_wait()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The current metrics, `name{labels}` → value.
    fn scrape(&self) -> BTreeMap<String, f64> {
        let (status, body) = get(self.addr, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        assert!(body.ends_with("# EOF\n"), "not OpenMetrics text: {body}");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("a sample line");
                (series.to_owned(), value.parse().expect("a number"))
            })
            .collect()
    }

    /// Scrapes until `check` passes; panics with the last failure after [`WAIT`].
    fn wait_for(
        &self,
        what: &str,
        mut check: impl FnMut(&BTreeMap<String, f64>) -> Result<(), String>,
    ) -> BTreeMap<String, f64> {
        let deadline = Instant::now() + WAIT;
        loop {
            let metrics = self.scrape();
            match check(&metrics) {
                Ok(()) => return metrics,
                Err(why) if Instant::now() >= deadline => {
                    panic!("{what}: not within {WAIT:?}: {why}\nstderr: {}", self.stderr())
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A loopback port nobody listens on now (never 18080, which is busy and not ours).
fn free_loopback_port() -> SocketAddr {
    loop {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe listener");
        let addr = probe.local_addr().expect("probe address");
        if addr.port() != 18080 {
            return addr;
        }
    }
}

/// A plain HTTP/1.0 GET: (status, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {head:?}")))?;
    Ok((status, body.to_owned()))
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> Result<f64, String> {
    m.get(series).copied().ok_or_else(|| format!("no series {series}"))
}

fn expect(m: &BTreeMap<String, f64>, series: &str, want: f64) -> Result<(), String> {
    let got = value(m, series)?;
    if (got - want).abs() < 1e-9 { Ok(()) } else { Err(format!("{series} = {got}, want {want}")) }
}

/// The series of one family (`name{...}`), by labels.
fn family<'a>(m: &'a BTreeMap<String, f64>, name: &str) -> Vec<(&'a str, f64)> {
    let prefix = format!("{name}{{");
    m.iter().filter_map(|(k, &v)| k.strip_prefix(&prefix).map(|labels| (labels, v))).collect()
}

#[test]
fn scraped_metrics_match_the_connections_held() {
    println!(
        "checks: /metrics over HTTP shows exactly the held connections for the test's \
         listener, local port and destination (ports in use, range, headroom, use ratio), \
         follows closes, keeps totals exact with at most K+1 series per kind; /healthz is ok"
    );
    let ns = Netns::new("ns-serve");
    let range = ns.run(|| {
        std::fs::write(
            "/proc/sys/net/ipv4/ip_local_port_range",
            format!("{} {}", RANGE.0, RANGE.1),
        )
        .expect("set the namespace's ephemeral range");
        u32::from(RANGE.1 - RANGE.0) + 1
    });
    let server = Server::listen(&ns, SERVER, Accepted::Hold);
    let serve = Serve::start(&["--top-k", &TOP_K.to_string()]);

    let clients = connect(&ns, CLIENT, SERVER, HELD);
    server.wait_accepted(HELD);
    let netns = ns.inode();
    let listener =
        format!("{{netns=\"{netns}\",addr=\"{}\",port=\"{}\"}}", SERVER.ip(), SERVER.port());
    let destination = format!(
        "{{netns=\"{netns}\",laddr=\"{CLIENT}\",raddr=\"{}\",rport=\"{}\"}}",
        SERVER.ip(),
        SERVER.port()
    );
    let held = f64::from(u32::try_from(HELD).expect("a handful"));
    let m = serve.wait_for("the held connections", |m| {
        expect(m, &format!("tcptrace_listener_live_connections{listener}"), held)?;
        expect(m, &format!("tcptrace_listener_remote_addresses{listener}"), 1.0)?;
        expect(m, &format!("tcptrace_listener_reuseport_sockets{listener}"), 1.0)?;
        expect(
            m,
            &format!("tcptrace_local_port_live_connections{{port=\"{}\"}}", SERVER.port()),
            held,
        )?;
        expect(m, &format!("tcptrace_destination_ports_in_use{destination}"), held)?;
        expect(
            m,
            &format!("tcptrace_destination_ephemeral_range_ports{destination}"),
            f64::from(range),
        )?;
        expect(
            m,
            &format!("tcptrace_destination_headroom_ports{destination}"),
            f64::from(range) - held,
        )?;
        expect(
            m,
            &format!("tcptrace_destination_port_use_ratio{destination}"),
            held / f64::from(range),
        )?;
        expect(m, &format!("tcptrace_destination_failed_connects_total{destination}"), 0.0)?;
        if value(m, "tcptrace_events_total{kind=\"connect\"}")? < held {
            return Err("fewer connect events than connections made".into());
        }
        Ok(())
    });
    println!(
        "  listener{listener}: {held} live; destination{destination}: {held} of {range} ports"
    );

    let backend = check_invariants(&m, &serve.stderr(), TOP_K);

    // The server closes 3 of its ends: they leave the listener's live count; the client
    // ends, in CLOSE_WAIT, still hold their ports.
    let closed = server.close_where({
        let mut n = 0;
        move |_| {
            n += 1;
            n <= 3
        }
    });
    assert_eq!(closed.len(), 3);
    serve.wait_for("the closes", |m| {
        expect(m, &format!("tcptrace_listener_live_connections{listener}"), held - 3.0)?;
        expect(
            m,
            &format!("tcptrace_local_port_live_connections{{port=\"{}\"}}", SERVER.port()),
            held - 3.0,
        )?;
        expect(m, &format!("tcptrace_destination_ports_in_use{destination}"), held)
    });
    println!(
        "  after 3 server-side closes: listener {} live, destination still {held} ports",
        held - 3.0
    );

    let (status, body) = get(serve.addr, "/healthz").expect("GET /healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with(&format!("ok: attached via {backend}")), "{body}");
    let (status, _) = get(serve.addr, "/nothing-here").expect("GET /nothing-here");
    assert_eq!(status, 404);
    drop(serve);

    top_k_one_keeps_one_row_per_kind_and_exact_totals(held);
    drop(clients);
}

/// With --top-k 1 every per-row kind has its top row and `other`, which still add up.
fn top_k_one_keeps_one_row_per_kind_and_exact_totals(held: f64) {
    let serve = Serve::start(&["--top-k", "1"]);
    let m = serve.wait_for("a scrape with held connections", |m| {
        if value(m, "tcptrace_live_connections")? >= held { Ok(()) } else { Err("not yet".into()) }
    });
    for (name, rows) in [
        ("tcptrace_local_port_live_connections", "tcptrace_local_ports"),
        ("tcptrace_listener_live_connections", "tcptrace_listeners"),
        ("tcptrace_destination_ports_in_use", "tcptrace_destinations"),
    ] {
        let series = family(&m, name).len();
        let expected = usize::from(m[rows] >= 1.0) + 1;
        assert_eq!(series, expected, "{name}: {series} series with {rows} = {}", m[rows]);
    }
    check_invariants(&m, &serve.stderr(), 1);
    println!("  --top-k 1: 2 series per kind, totals exact");
}

/// One exposition is one moment: its per-port series (top K and `other`) add up to the
/// exact total, no kind has more than K + 1 series, and one attach path is named, the one
/// the tracer said it attached with. Returns that path.
fn check_invariants(m: &BTreeMap<String, f64>, stderr: &str, top_k: usize) -> String {
    for (name, total) in [
        ("tcptrace_local_port_live_connections", Some("tcptrace_live_connections")),
        ("tcptrace_listener_live_connections", None),
        ("tcptrace_destination_ports_in_use", None),
    ] {
        let series = family(m, name);
        assert!(series.len() <= top_k + 1, "{name}: {} series", series.len());
        assert!(series.iter().any(|(labels, _)| labels.contains("\"other\"")), "{name}: no other");
        if let Some(total) = total {
            let sum: f64 = series.iter().map(|(_, v)| v).sum();
            expect(m, total, sum).unwrap_or_else(|e| panic!("{name} series do not add up: {e}"));
        }
    }
    let attach = family(m, "tcptrace_attach_info");
    assert_eq!(attach.len(), 1, "{attach:?}");
    let backend = attach[0].0.trim_start_matches("attach=\"").trim_end_matches("\"}");
    assert!(stderr.contains(&format!("attached via {backend}")), "{attach:?}");
    expect(m, &format!("tcptrace_attach_info{{attach=\"{backend}\"}}"), 1.0).unwrap();
    backend.to_owned()
}

#[test]
fn a_port_in_use_and_a_bad_listen_address_get_one_line_errors() {
    println!(
        "checks: --listen on a port in use exits 1 before attaching, and a malformed --listen exits 2, each saying what to do"
    );
    let taken = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let exit = run_to_exit(&["serve", "--listen", &addr, "--attach", &attach_path()], WAIT);
    assert_eq!(exit.code(), Some(1), "{exit:?}");
    let lines: Vec<&str> = exit.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].contains(&format!("cannot serve on {addr}: the port is in use")), "{lines:?}");
    assert!(lines[0].contains("--listen 127.0.0.1:PORT"), "{lines:?}");
    println!("  port in use: {}", lines[0]);

    let exit = run_to_exit(&["serve", "--listen", "localhost:http"], WAIT);
    assert_eq!(exit.code(), Some(2), "{exit:?}");
    let first = exit.stderr.lines().next().unwrap_or_default();
    assert!(first.contains("'--listen <ADDR:PORT>'"), "{first}");
    assert!(first.contains("expected ADDRESS:PORT, e.g. 127.0.0.1:9464"), "{first}");
    println!("  bad --listen: {first}");
    drop(taken);
}
