//! `tcptrace report` as a person would look at it: a real `watch --json` recording of
//! connections ramping up in the test's own network namespace (127.89.0.0/16, listener
//! port 22290, a 12-port ephemeral range that runs out), turned into the HTML page, which
//! headless Chromium (Debian's `chromium`, which `cargo xtask setup` installs) then renders
//! and screenshots.
//!
//! Not in the VM tier (the initramfs has no Chromium): the page is made from recorded JSON,
//! whatever the attach path.

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tcptrace_tests::{
    ATTACH_WAIT, Accepted, Netns, Server, Snapshot, WAIT, attach_path, run_to_exit, tracer_bin,
};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 89, 0, 1)), 22290);
const RANGE: (u16, u16) = (40_000, 40_011);
/// Connections added at each step of the ramp, one step a second: 4 steps fill the range.
const STEP: usize = 3;
const STEPS: usize = 4;
/// Connects tried once the range is full: each fails with `EADDRNOTAVAIL`.
const OVER: usize = 3;
/// The screenshot's size, as `--window-size` asks for it.
const SHOT: (u32, u32) = (1100, 2000);

/// A directory of the test's own, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Headless Chromium on `page` with `args` (`--dump-dom`, `--screenshot=...`), bounded in
/// time; its stdout. The flags are those that keep it off the network (this machine's is
/// closed). Its output goes to files: a DOM larger than a pipe's buffer would block it
/// while the test waits for it to exit.
fn chromium(scratch: &Path, page: &Path, args: &[String]) -> String {
    let binary = Path::new("/usr/bin/chromium");
    assert!(
        binary.exists(),
        "{} is missing: install Debian's chromium package (`cargo xtask setup` does)",
        binary.display()
    );
    let mut child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", scratch.join("chromium").display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(fs::File::create(scratch.join("chromium.out")).expect("chromium's stdout"))
        .stderr(fs::File::create(scratch.join("chromium.err")).expect("chromium's stderr"))
        .spawn()
        .expect("spawn chromium");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("wait for chromium").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("chromium {args:?} did not finish within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().expect("chromium's status");
    let stderr = fs::read_to_string(scratch.join("chromium.err")).unwrap_or_default();
    assert!(status.success(), "chromium {args:?}: {status}: {stderr}");
    fs::read_to_string(scratch.join("chromium.out")).expect("chromium's stdout")
}

/// The part of the page from the figure `id` to its end.
fn figure<'p>(dom: &'p str, id: &str) -> &'p str {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no figure {id}"));
    let end = dom[start..].find("</figure>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// For each polyline in `svg`: its number of points, and of distinct y coordinates (pixel
/// rows). The mesh and axes are polylines of two points; a plotted line has one point per
/// snapshot of its row.
fn polylines(svg: &str) -> Vec<(usize, usize)> {
    svg.split("<polyline")
        .skip(1)
        .map(|p| {
            let points =
                p.split("points=\"").nth(1).and_then(|p| p.split('"').next()).unwrap_or("");
            let mut ys: Vec<&str> =
                points.split_whitespace().filter_map(|xy| xy.split(',').nth(1)).collect();
            let count = ys.len();
            ys.sort_unstable();
            ys.dedup();
            (count, ys.len())
        })
        .collect()
}

#[test]
fn a_recorded_ramp_renders_as_charts_in_a_real_browser() {
    println!(
        "checks: watch --json recorded while {STEPS} steps of {STEP} connections fill a \
         {}-port range and {OVER} more connects fail; tcptrace report turns it into a page that \
         Chromium renders with the title, every chart's plotted lines (the ramp's levels on \
         the live chart), the failed connects marked, and a screenshot",
        RANGE.1 - RANGE.0 + 1
    );
    let (scratch, ns, server) = prepared("ns-report");
    let dir = &scratch.0;

    let inode = ns.inode().to_string();
    let watch = ["watch", "--json", "--netns", &inode, "--interval", "250ms"];
    let (_, clients) = traced_ramp(
        dir,
        &ns,
        &server,
        ("watch", &watch),
        |out, _| out.lines().next().is_some(),
        Stop::Interrupt,
    );
    let recording = dir.join("watch.out");

    // What the page must show, from the recording itself.
    let text = fs::read_to_string(&recording).expect("read the recording");
    let samples: Vec<Snapshot> =
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let ours = |s: &Snapshot| {
        s.listeners
            .iter()
            .find(|l| l.addr == SERVER.ip() && l.port == SERVER.port())
            .map(|l| l.live)
    };
    let mut levels: Vec<u64> = samples.iter().filter_map(ours).collect();
    levels.dedup();
    println!("  {} snapshots; the listener's live count went {levels:?}", samples.len());
    let last = samples.last().expect("snapshots");
    let dest =
        last.destinations.iter().find(|d| d.raddr == SERVER.ip() && d.rport == SERVER.port());
    assert_eq!(dest.map(|d| d.failed_connects), Some(OVER as u64), "{dest:?}");

    let page = dir.join("run.html");
    let out = Command::new(tracer_bin())
        .arg("report")
        .arg(&recording)
        .arg("-o")
        .arg(&page)
        .output()
        .expect("run tcptrace report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tcptrace report: {}: {stderr}", out.status);
    println!("  tcptrace report: {}", stderr.trim());

    let dom = chromium(dir, &page, &["--dump-dom".into()]);
    assert!(dom.contains(&format!("<h1>tcptrace: {}</h1>", recording.display())), "no title");
    every_chart_has_a_line(&dom, samples.len() / 2);
    let live = figure(&dom, "chart-live");
    let named = format!("{SERVER} (netns {})", ns.inode());
    assert!(live.contains(&named), "the listener is not named");
    // The ramp's levels (0 or the first step, then each step) are on the page.
    let steepest = polylines(live).into_iter().map(|(_, levels)| levels).max().unwrap_or(0);
    assert!(steepest >= STEPS, "the live line has {steepest} levels, the ramp {STEPS}");
    println!("  chart-live: the listener's line climbs through {steepest} levels");
    let ports = figure(&dom, "chart-ports");
    assert!(ports.contains("failed connects"), "no failed connects in the legend");
    assert!(ports.contains("<circle"), "no failed connect marked");

    screenshot_renders(dir, &page);
    drop(clients);
}

/// A scratch directory, and the test's namespace with its small range and its listener.
fn prepared(name: &str) -> (Scratch, Netns, Server) {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("tcptrace-{name}-{}", std::process::id())));
    let _ = fs::remove_dir_all(&scratch.0);
    fs::create_dir_all(&scratch.0).expect("scratch directory");
    let ns = Netns::new(name);
    ns.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", RANGE.0, RANGE.1))
        .expect("set the namespace's ephemeral range");
    let server = Server::listen(&ns, SERVER, Accepted::Hold);
    (scratch, ns, server)
}

/// Every chart of the page has a line through at least `points` points: not an empty axis.
fn every_chart_has_a_line(dom: &str, points: usize) {
    for id in ["chart-live", "chart-ports", "chart-queue", "chart-trust"] {
        let longest = polylines(figure(dom, id)).into_iter().map(|(n, _)| n).max().unwrap_or(0);
        assert!(longest >= points, "{id}: its longest line has {longest} points, not {points}");
        println!("  {id}: a line of {longest} points");
    }
}

#[test]
fn a_check_report_shows_its_verdicts_then_the_ramp_in_a_real_browser() {
    println!(
        "checks: check --report check.html over the same ramp, with a claim that holds (the \
         listener's live connections reach {}) and one that cannot (half the range left \
         free): exit 1, and Chromium renders FAIL, each verdict with its observed value, \
         every chart's lines, the claimed listener charted and not another one, and a \
         screenshot",
        STEP * STEPS
    );
    let (scratch, ns, server) = prepared("ns-report-check");
    // A listener no claim is about: the charts leave it out.
    let aside = SocketAddr::new(SERVER.ip(), SERVER.port() + 1);
    let _aside = Server::listen(&ns, aside, Accepted::Hold);
    let dir = &scratch.0;
    let page = dir.join("check.html");
    let (inode, report) = (ns.inode().to_string(), page.display().to_string());
    let holds = format!("listener={SERVER} live>={}", STEP * STEPS);
    let cannot = format!("dst={SERVER} headroom>=50%");
    let check = [
        "check",
        "--netns",
        &inode,
        "--interval",
        "250ms",
        "--duration",
        "9s",
        "--expect",
        &holds,
        "--expect",
        &cannot,
        "--report",
        &report,
    ];
    let (status, clients) = traced_ramp(
        dir,
        &ns,
        &server,
        ("check", &check),
        |_, err| err.contains("checking 2 expectation(s)"),
        Stop::OnItsOwn,
    );
    let verdicts = fs::read_to_string(dir.join("check.out")).unwrap_or_default();
    println!("{verdicts}");
    assert_eq!(status.code(), Some(1), "one claim cannot hold: {verdicts}");

    let dom = chromium(dir, &page, &["--dump-dom".into()]);
    assert!(dom.contains("<h1>tcptrace check: FAIL</h1>"), "no verdict in the title");
    // The browser serializes `>` in text as `&gt;`.
    for (claim, verdict) in [(&holds, "pass\">PASS"), (&cannot, "fail\">FAIL")] {
        let row =
            format!("<code>{}</code></td><td class=\"{verdict}</td>", claim.replace('>', "&gt;"));
        assert!(dom.contains(&row), "no row {row}");
    }
    assert!(dom.contains("minimum 0%"), "the failed claim's observed value is not shown");
    every_chart_has_a_line(&dom, 9);
    let live = figure(&dom, "chart-live");
    assert!(live.contains(&format!("{SERVER} (netns")), "the claimed listener is not charted");
    assert!(!live.contains(&format!("{aside} (netns")), "a listener no claim names is charted");
    screenshot_renders(dir, &page);
    drop(clients);
}

#[test]
fn a_demo_report_shows_both_sides_in_a_real_browser() {
    const CONNECTIONS: u64 = 3_000;
    println!(
        "checks: demo --connections {CONNECTIONS} --report demo.html --json: exit 0, and \
         Chromium renders PASS, a verdict row per side with the demo's own numbers (its \
         --json), lost and drift, the demo's listeners only (its namespace), every chart's \
         lines and a screenshot"
    );
    let scratch =
        Scratch(std::env::temp_dir().join(format!("tcptrace-demo-report-{}", std::process::id())));
    fs::create_dir_all(&scratch.0).expect("scratch directory");
    let page = scratch.0.join("demo.html");
    let (n, report, attach) = (CONNECTIONS.to_string(), page.display().to_string(), attach_path());
    let args = ["demo", "--connections", &n, "--per-process", "1000", "--interval", "250ms"];
    let exit = run_to_exit(
        &[&args[..], &["--attach", &attach, "--json", "--report", &report]].concat(),
        Duration::from_mins(3),
    );
    assert_eq!(exit.code(), Some(0), "stdout:\n{}\nstderr:\n{}", exit.stdout, exit.stderr);
    let results: Value = serde_json::from_str(exit.stdout.trim()).expect("demo --json");
    let (server, client) = (&results["server"], &results["client"]);

    let dom = chromium(&scratch.0, &page, &["--dump-dom".into()]);
    assert!(dom.contains("<h1>tcptrace demo: PASS</h1>"), "no verdict in the title");
    let row = |claim: &str| {
        let at = dom.find(claim).unwrap_or_else(|| panic!("no row {claim}"));
        let end = dom[at..].find("</tr>").map_or(dom.len(), |e| at + e);
        dom[at..end].to_owned()
    };
    let listen = server["listen"].as_str().expect("listen");
    let server_row = row(&format!("server: every connection held on {listen} counted"));
    let held = format!(
        "held {}, tracer {}, sock_diag {}",
        server["target"], server["tracer_live"], server["sock_diag_live"]
    );
    assert!(server_row.contains("PASS") && server_row.contains(&held), "{server_row}");
    let client_row = row("exhausts its");
    let seen = format!(
        "failed connects: load {}, tracer {}",
        client["failed"], client["tracer_failed_connects"]
    );
    assert!(client_row.contains("PASS") && client_row.contains(&seen), "{client_row}");
    for claim in ["lost&lt;=0", "drift&lt;=0"] {
        assert!(row(claim).contains("PASS"), "{}", row(claim));
    }
    println!("  rows: {held}; {seen}");
    // A side can be over between two intervals: each ramp's end is a point of its own.
    every_chart_has_a_line(&dom, 2);
    let live = figure(&dom, "chart-live");
    let netns = format!("(netns {})", results["netns"]);
    assert!(live.contains(&format!("{listen} {netns}")), "the demo's listener is not named");
    assert_eq!(
        live.matches("(netns ").count(),
        live.matches(&netns).count(),
        "a listener of another namespace is charted"
    );
    screenshot_renders(&scratch.0, &page);
}

/// `tcptrace ARGS --attach PATH` run while the ramp fills the namespace's range and
/// further connects fail, its stdout and stderr in `dir` (`NAME.out`, `NAME.err`). The ramp
/// starts once `ready(stdout, stderr)`; after it the tracer is interrupted (`Ctrl-C`) or,
/// with `Stop::OnItsOwn`, left to end at its `--duration`. Its exit status, and the clients
/// (held until the end).
fn traced_ramp(
    dir: &Path,
    ns: &Netns,
    server: &Server,
    (name, args): (&str, &[&str]),
    ready: impl Fn(&str, &str) -> bool,
    stop: Stop,
) -> (ExitStatus, Vec<TcpStream>) {
    let (out, err) = (dir.join(format!("{name}.out")), dir.join(format!("{name}.err")));
    let attach = attach_path();
    let mut tracer = Reaped(
        Command::new(tracer_bin())
            .args(args)
            .args(["--attach", &attach])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("the tracer's stdout"))
            .stderr(fs::File::create(&err).expect("the tracer's stderr"))
            .spawn()
            .expect("spawn tcptrace"),
    );
    let read = |path: &Path| fs::read_to_string(path).unwrap_or_default();
    let deadline = Instant::now() + ATTACH_WAIT;
    while !ready(&read(&out), &read(&err)) {
        assert!(tracer.0.try_wait().expect(name).is_none(), "{name} exited: {}", read(&err));
        assert!(
            Instant::now() < deadline,
            "{name} not ready within {ATTACH_WAIT:?}: {}",
            read(&err)
        );
        thread::sleep(Duration::from_millis(100));
    }

    // The ramp: unbound sockets, so the kernel takes each port from the namespace's range.
    let mut clients = Vec::new();
    for step in 1..=STEPS {
        clients.extend(ns.run(|| {
            (0..STEP).map(|_| TcpStream::connect(SERVER).expect("connect")).collect::<Vec<_>>()
        }));
        server.wait_accepted(step * STEP);
        thread::sleep(Duration::from_secs(1));
    }
    let failed = ns.run(|| {
        (0..OVER)
            .filter(|_| {
                TcpStream::connect(SERVER).is_err_and(|e| {
                    assert_ne!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
                    e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                })
            })
            .count()
    });
    assert_eq!(failed, OVER, "the range is full: every further connect must fail");
    thread::sleep(Duration::from_millis(1500));
    if stop == Stop::Interrupt {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(tracer.0.id()).expect("a pid")),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("interrupt the tracer");
    }
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = tracer.0.try_wait().expect(name) {
            break status;
        }
        assert!(Instant::now() < deadline, "{name} still running {WAIT:?} after the ramp");
        thread::sleep(Duration::from_millis(100));
    };
    println!(
        "  {name} ended ({status}) after the ramp: {}",
        read(&err).lines().last().unwrap_or("")
    );
    (status, clients)
}

/// A tracer that is killed and reaped when dropped: a failed assertion must not leave it
/// running, attached, after the test.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Interrupt,
    OnItsOwn,
}

/// A screenshot of `page`: a PNG of the size asked for, and not blank.
fn screenshot_renders(dir: &Path, page: &Path) {
    let shot = dir.join("run.png");
    chromium(
        dir,
        page,
        &[
            format!("--window-size={},{}", SHOT.0, SHOT.1),
            format!("--screenshot={}", shot.display()),
        ],
    );
    let png = fs::read(&shot).expect("the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!((size(16), size(20)), SHOT, "the screenshot's width and height (IHDR)");
    // A blank page of that size compresses to a few KB; charts and text do not.
    assert!(png.len() > 40_000, "the screenshot is {} bytes: a blank page?", png.len());
    println!("  screenshot {}x{}, {} bytes", SHOT.0, SHOT.1, png.len());
}
