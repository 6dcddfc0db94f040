//! `tcptrace serve`: scraped over real HTTP while the test holds real connections (own
//! network namespace, 127.85.0.0/16, listener port 21883, a 10-port ephemeral range so the
//! test's destination ranks first by use of its range), and its errors for a port in use
//! and a bad --listen.
//!
//! Then what a local user can throw at its HTTP side (floods of idle connections above the
//! cap, slow-header clients, oversized heads, a low open-file limit), each followed by the
//! same check: still running, /metrics answers 200 at once, and the counts of the
//! connections the test holds in a namespace of its own (127.85.1.0/24, port 21884) are
//! still exact, with no drift and no skipped pass.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use tcptrace_json::metrics::family;
use tcptrace_tests::serve::{Serve, destination_labels, get, get_within, listener_labels};
use tcptrace_tests::{Accepted, Netns, Server, WAIT, attach_path, connect, run_to_exit};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 85, 0, 1)), 21883);
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 85, 0, 2));
/// Connections held; fewer than the namespace's 10 ephemeral ports.
const HELD: usize = 8;
const RANGE: (u16, u16) = (40_000, 40_009);
/// Series per kind. Large, because the tracer sees the whole box: a load test elsewhere
/// can hold more than `HELD` connections on each of hundreds of local port numbers (client
/// ports are shared across destinations), which would push the test's port into `other`.
const TOP_K: usize = 1000;

fn value(m: &BTreeMap<String, f64>, series: &str) -> Result<f64, String> {
    m.get(series).copied().ok_or_else(|| format!("no series {series}"))
}

fn expect(m: &BTreeMap<String, f64>, series: &str, want: f64) -> Result<(), String> {
    let got = value(m, series)?;
    if (got - want).abs() < 1e-9 { Ok(()) } else { Err(format!("{series} = {got}, want {want}")) }
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
    let listener = format!("{{{}}}", listener_labels(netns, SERVER));
    let destination = format!("{{{}}}", destination_labels(netns, CLIENT, SERVER));
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

    // Reconciling every second since the start: a connection the hooks missed or invented
    // would have been corrected by now, and counted in the cumulative counter.
    let m = serve.scrape();
    expect(&m, "tcptrace_drift_connections", 0.0)
        .and_then(|()| expect(&m, "tcptrace_drift_corrections_total", 0.0))
        .unwrap_or_else(|e| panic!("the hooks missed or invented a connection: {e}"));
    println!("  drift 0 and no correction since the start (reconciling every 1 s)");

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

/// Where the attack tests hold their own connections, in a namespace of their own.
const HELD_SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 85, 1, 1)), 21884);
const HELD_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 85, 1, 2));
/// serve's cap on HTTP connections when not told otherwise (`--max-connections`).
const DEFAULT_CAP: usize = 64;
/// How long an HTTP client may take to send its request line and headers (serve's
/// `REQUEST_HEAD_TIMEOUT`), and the slack allowed on top before a test calls it not closed.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(3);
/// How soon a refused connection must have its 503, and a scrape after an attack its 200.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// Connections the test holds in its own namespace, to check that serve is still exact.
struct Held {
    ns: Netns,
    _server: Server,
    _clients: Vec<TcpStream>,
}

impl Held {
    fn new(name: &str) -> Self {
        let ns = Netns::new(name);
        let server = Server::listen(&ns, HELD_SERVER, Accepted::Hold);
        let clients = connect(&ns, HELD_CLIENT, HELD_SERVER, HELD);
        server.wait_accepted(HELD);
        Self { ns, _server: server, _clients: clients }
    }

    fn listener(&self) -> String {
        format!(
            "tcptrace_listener_live_connections{{netns=\"{}\",addr=\"{}\",port=\"{}\"}}",
            self.ns.inode(),
            HELD_SERVER.ip(),
            HELD_SERVER.port()
        )
    }

    /// Waits until serve shows exactly the held connections with no drift; returns the
    /// passes skipped so far.
    fn exact(&self, serve: &Serve) -> f64 {
        let held = f64::from(u32::try_from(HELD).expect("a handful"));
        let m = serve.wait_for("the held connections, no drift", |m| {
            expect(m, &self.listener(), held)?;
            expect(m, "tcptrace_drift_connections", 0.0)
        });
        family(&m, "tcptrace_skipped_passes_total").iter().map(|(_, v)| v).sum()
    }

    /// After an attack: serve still runs, answers /metrics with 200 within
    /// [`ANSWER_WITHIN`], and is still exact, with no pass skipped since `skipped`.
    fn still_exact(&self, serve: &Serve, skipped: f64) {
        if let Ok(Some(status)) = serve.child_status() {
            panic!("tcptrace serve exited with {status}: {}", serve.stderr());
        }
        let asked = Instant::now();
        let answer = get_within(serve.addr, "/metrics", ANSWER_WITHIN);
        let took = asked.elapsed();
        assert!(
            matches!(answer, Ok((200, _))) && took < ANSWER_WITHIN,
            "/metrics after the attack: {answer:?} in {took:?}\nstderr: {}",
            serve.stderr()
        );
        let now = self.exact(serve);
        assert!(
            (now - skipped).abs() < 1e-9,
            "{} passes skipped during the attack\nstderr: {}",
            now - skipped,
            serve.stderr()
        );
        let (status, body) = get(serve.addr, "/healthz").expect("GET /healthz");
        assert!(status == 200 && body.starts_with("ok: "), "/healthz: {status} {body}");
        println!("  afterwards: running, /metrics 200 in {took:?}, {HELD} held counted, drift 0");
    }
}

/// One HTTP client of an attack, from the test's side.
struct Client {
    stream: TcpStream,
    opened: Instant,
    /// What the server sent.
    answer: Vec<u8>,
    /// When the server closed it (FIN or reset), counted from `opened`.
    closed_after: Option<Duration>,
    /// Bytes of the drip sent so far.
    dripped: usize,
}

impl Client {
    fn refused(&self) -> bool {
        let answer = String::from_utf8_lossy(&self.answer);
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n")
            && answer.contains("\r\nconnection: close\r\n")
            && answer.ends_with("(--max-connections); try again\n")
    }
}

/// Opens `count` connections to serve, one after the other.
fn open_clients(addr: SocketAddr, count: usize) -> Vec<Client> {
    (0..count)
        .map(|i| {
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect {i} to serve at {addr}: {e}"));
            stream.set_nonblocking(true).expect("non-blocking");
            Client {
                stream,
                opened: Instant::now(),
                answer: Vec::new(),
                closed_after: None,
                dripped: 0,
            }
        })
        .collect()
}

/// Reads what serve sends each client until it closes them all or `within` has passed;
/// meanwhile sends the still-open ones `drip` a byte at a time, one every `every`.
fn follow(clients: &mut [Client], within: Duration, drip: &[u8], every: Duration) {
    let deadline = Instant::now() + within;
    let mut next_drip = Instant::now();
    while clients.iter().any(|c| c.closed_after.is_none()) && Instant::now() < deadline {
        let dripping = !drip.is_empty() && Instant::now() >= next_drip;
        if dripping {
            next_drip += every;
        }
        for c in clients.iter_mut().filter(|c| c.closed_after.is_none()) {
            let mut buf = [0u8; 4096];
            match c.stream.read(&mut buf) {
                Ok(0) => c.closed_after = Some(c.opened.elapsed()),
                Ok(n) => c.answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => c.closed_after = Some(c.opened.elapsed()),
            }
            if dripping
                && c.closed_after.is_none()
                && c.dripped < drip.len()
                && let Ok(n) = c.stream.write(&drip[c.dripped..=c.dripped])
            {
                c.dripped += n;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Checks an attack's outcome: exactly the clients over `cap` got their 503 within
/// [`ANSWER_WITHIN`], and the others got nothing and were closed by serve within the head
/// timeout (plus [`SLACK`]).
fn refused_over_the_cap_and_timed_out(clients: &[Client], cap: usize, stderr: &str) {
    let (refused, served): (Vec<&Client>, Vec<&Client>) = clients.iter().partition(|c| c.refused());
    let late = refused.iter().filter(|c| c.closed_after.is_none_or(|t| t > ANSWER_WITHIN)).count();
    let worst = served.iter().filter_map(|c| c.closed_after).max().unwrap_or_default();
    let open = served.iter().filter(|c| c.closed_after.is_none()).count();
    println!(
        "  {} clients: {} answered 503 and closed ({late} late); {} served, {open} of them \
         still open after {:?}, the others closed after {worst:?} at most",
        clients.len(),
        refused.len(),
        served.len(),
        HEAD_TIMEOUT + SLACK
    );
    let unrefused: Vec<String> = served
        .iter()
        .filter(|c| !c.answer.is_empty())
        .map(|c| String::from_utf8_lossy(&c.answer).into_owned())
        .take(3)
        .collect();
    assert!(unrefused.is_empty(), "answers that are not the 503 of the cap: {unrefused:?}");
    assert_eq!(
        refused.len(),
        clients.len().saturating_sub(cap),
        "connections over the cap of {cap} answered 503\nstderr: {stderr}"
    );
    assert_eq!(late, 0, "503s that took longer than {ANSWER_WITHIN:?}");
    let open = served.iter().filter(|c| c.closed_after.is_none_or(|t| t > HEAD_TIMEOUT + SLACK));
    assert_eq!(open.count(), 0, "connections still open after {:?}", HEAD_TIMEOUT + SLACK);
}

/// Lets the start-up probes' connections end, so that every slot is free.
fn settle() {
    thread::sleep(Duration::from_millis(300));
}

#[test]
fn an_idle_flood_above_the_cap_is_refused_and_timed_out() {
    println!(
        "checks: 150 idle connections (the cap is 64): 86 answered 503 at once, 64 closed \
         after the 5 s head timeout; serve still runs, answers and is exact"
    );
    let held = Held::new("ns-serve-idle");
    let serve = Serve::start(&["--top-k", &TOP_K.to_string()]);
    let skipped = held.exact(&serve);
    settle();
    let mut clients = open_clients(serve.addr, 150);
    follow(&mut clients, HEAD_TIMEOUT + SLACK, &[], Duration::ZERO);
    refused_over_the_cap_and_timed_out(&clients, DEFAULT_CAP, &serve.stderr());
    assert!(serve.stderr().contains("HTTP connection(s) with 503"), "{}", serve.stderr());
    held.still_exact(&serve, skipped);
}

#[test]
fn slow_header_clients_are_refused_over_the_cap_and_cut_off() {
    println!(
        "checks: 70 clients that send their request a byte every 2 s (the cap is 64): 6 \
         answered 503 at once, 64 closed without an answer after the 5 s head timeout; \
         serve still runs, answers and is exact"
    );
    let held = Held::new("ns-serve-slow");
    let serve = Serve::start(&["--top-k", &TOP_K.to_string()]);
    let skipped = held.exact(&serve);
    settle();
    let mut clients = open_clients(serve.addr, DEFAULT_CAP + 6);
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", serve.addr);
    follow(&mut clients, HEAD_TIMEOUT + SLACK, request.as_bytes(), Duration::from_secs(2));
    let dripped = clients.iter().map(|c| c.dripped).max().unwrap_or(0);
    println!("  the slowest sent {dripped} of {} bytes before serve closed it", request.len());
    refused_over_the_cap_and_timed_out(&clients, DEFAULT_CAP, &serve.stderr());
    held.still_exact(&serve, skipped);
}

/// Sends `request` on a connection of its own and reads until serve closes it (or
/// [`ANSWER_WITHIN`] passes): the status line of the answer, and the answer.
fn one_request(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(ANSWER_WITHIN)).expect("read timeout");
    // serve may answer and close before it has it all: a failed write still has an answer.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        !matches!(&read, Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut),
        "not closed within {ANSWER_WITHIN:?}: {answer}"
    );
    (answer.lines().next().unwrap_or_default().to_owned(), answer)
}

#[test]
fn oversized_heads_and_request_bodies_are_refused() {
    println!(
        "checks: a 16 KiB request head gets 431, 1 MiB of headers gets 431 (or a reset) \
         and a close, a GET with a body gets 413 with connection: close, a head of 4 KiB \
         is served; serve still runs, answers and is exact"
    );
    let held = Held::new("ns-serve-big");
    let serve = Serve::start(&["--top-k", &TOP_K.to_string()]);
    let skipped = held.exact(&serve);
    let padded = |pad: usize| {
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(pad))
    };

    let (status, _) = one_request(serve.addr, padded(16 * 1024).as_bytes());
    assert!(status.starts_with("HTTP/1.1 431 "), "16 KiB head: {status}");
    println!("  16 KiB head: {status}");
    let endless =
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{}", "X-Pad: aaaaaaaa\r\n".repeat(60_000));
    let (status, _) = one_request(serve.addr, endless.as_bytes());
    assert!(status.is_empty() || status.starts_with("HTTP/1.1 431 "), "1 MiB of headers: {status}");
    println!("  1 MiB of headers: {}", if status.is_empty() { "reset" } else { &status });
    let (status, answer) = one_request(
        serve.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert!(status.starts_with("HTTP/1.1 413 "), "a body: {answer}");
    assert!(answer.contains("connection: close\r\n"), "a body: {answer}");
    println!("  a GET with a body: {status}");
    let (status, answer) =
        one_request(serve.addr, padded(4 * 1024).replace("1.1", "1.0").as_bytes());
    assert!(status.starts_with("HTTP/1.0 200 "), "4 KiB head: {status}");
    assert!(answer.ends_with("# EOF\n"), "4 KiB head: {answer}");
    held.still_exact(&serve, skipped);
}

#[test]
fn under_a_low_file_limit_a_flood_leaves_the_tracer_its_files() {
    println!(
        "checks: serve under an open-file limit of 96 says it lowers its cap, and 150 idle \
         connections leave every pass working (no \"Too many open files\"): the ones over \
         the cap answered 503, the others timed out; still runs, answers and is exact"
    );
    let held = Held::new("ns-serve-nofile");
    let serve = Serve::start_under(Some(96), &["--top-k", &TOP_K.to_string()]);
    let skipped = held.exact(&serve);
    settle();
    let mut clients = open_clients(serve.addr, 150);
    // Long enough for several reconciliations (every 1 s) with every slot taken.
    follow(&mut clients, HEAD_TIMEOUT + SLACK, &[], Duration::ZERO);
    let stderr = serve.stderr();
    assert!(!stderr.contains("Too many open files"), "{stderr}");
    held.still_exact(&serve, skipped);
    let cap: usize = stderr
        .split_once("serving at most ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no note of a lowered cap: {stderr}"));
    assert!((1..DEFAULT_CAP).contains(&cap), "cap {cap}");
    println!("  cap lowered to {cap}");
    refused_over_the_cap_and_timed_out(&clients, cap, &stderr);
}
