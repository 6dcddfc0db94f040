//! The fleet path against a real Prometheus (Debian's `prometheus` package, which
//! `cargo xtask setup` installs): the rules in contrib/prometheus pass `promtool`'s checks
//! and their unit tests, and a Prometheus server on loopback, run with
//! contrib/prometheus/prometheus.yml, scrapes a real `tcptrace serve` while the test holds
//! connections (own network namespace, 127.84.0.0/16, listener port 21890, a 10-port
//! ephemeral range). What Prometheus stores, what its rules compute and which alerts it
//! raises are read back through its own HTTP query API and checked against what the test
//! holds.
//!
//! Not in the VM tier (the initramfs has no Prometheus): nothing here depends on the attach
//! path, which `test/serve` covers there.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tcptrace_tests::serve::{Serve, destination_labels, free_loopback_port, get, listener_labels};
use tcptrace_tests::{Accepted, Netns, Server, WAIT, connect};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 84, 0, 1)), 21890);
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 84, 0, 2));
/// Connections held: 9 of the namespace's 10 ephemeral ports, over the port-exhaustion
/// alert's 80%.
const HELD: usize = 9;
const RANGE: (u16, u16) = (40_000, 40_009);
/// Server ends the test closes halfway.
const CLOSED: usize = 4;

/// The rules, their unit tests and the scrape config, as the repository ships them.
fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/prometheus")
}

/// `program` from Debian's `prometheus` package, run in contrib/prometheus; panics with
/// what to install when it is missing.
fn prometheus_tool(program: &str) -> Command {
    let path = Path::new("/usr/bin").join(program);
    assert!(
        path.exists(),
        "{} is missing: install Debian's prometheus package (`cargo xtask setup` does)",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.current_dir(contrib());
    cmd
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    println!(
        "checks: promtool check rules and check config accept contrib/prometheus, promtool \
         test rules passes every alert's unit tests, and the README's scrape config is \
         contrib/prometheus/prometheus.yml"
    );
    for args in [
        &["check", "rules", "tcptrace.rules.yml"][..],
        &["test", "rules", "tcptrace.rules.test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let out = prometheus_tool("promtool").args(args).output().expect("run promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {}: {}\n{text}", args.join(" "), out.status);
        println!("  promtool {}: {}", args.join(" "), text.trim().replace('\n', " | "));
    }

    let config = fs::read_to_string(contrib().join("prometheus.yml")).expect("prometheus.yml");
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("README.md");
    assert!(
        readme.contains(&format!("```yaml\n{config}```\n")),
        "the README's scrape config must be contrib/prometheus/prometheus.yml, verbatim"
    );
}

/// A Prometheus server on a free loopback port, with its own config and storage in a
/// directory of its own; killed, and the directory removed, on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Runs contrib/prometheus/prometheus.yml with `target` as its only target and 1 s
    /// intervals, and waits until it is ready.
    fn scraping(target: SocketAddr) -> Self {
        let shipped = fs::read_to_string(contrib().join("prometheus.yml")).expect("read");
        let mut config = shipped.clone();
        for (from, to) in [
            ("['box-a:9464', 'box-b:9464']", format!("['{target}']")),
            ("scrape_interval: 15s", "scrape_interval: 1s".into()),
            ("evaluation_interval: 15s", "evaluation_interval: 1s".into()),
        ] {
            assert!(config.contains(from), "prometheus.yml no longer has {from:?}: {shipped}");
            config = config.replace(from, &to);
        }
        let dir = std::env::temp_dir().join(format!("tcptrace-prometheus-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create Prometheus's directory");
        fs::write(dir.join("prometheus.yml"), config).expect("write its config");
        fs::copy(contrib().join("tcptrace.rules.yml"), dir.join("tcptrace.rules.yml"))
            .expect("copy the rules");
        let log = fs::File::create(dir.join("prometheus.log")).expect("its log");

        let addr = free_loopback_port();
        let mut cmd = prometheus_tool("prometheus");
        cmd.current_dir(&dir)
            .arg("--config.file=prometheus.yml")
            .arg("--storage.tsdb.path=data")
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        println!("  running: {cmd:?} (in {})", dir.display());
        let child = cmd.spawn().expect("spawn prometheus");
        let mut prometheus = Self { child, addr, dir };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", prometheus.log());
            }
            if let Ok((200, _)) = get(addr, "/-/ready") {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "not ready within {WAIT:?}:\n{}", prometheus.log());
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The end of its log, for failure messages.
    fn log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `GET /api/v1/PATH`: its `data`, after checking `status` is "success".
    fn api(&self, path: &str) -> Value {
        let (status, body) = get(self.addr, &format!("/api/v1/{path}")).expect("query Prometheus");
        let answer: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/api/v1/{path} answered {status}, not JSON ({e}): {body}"));
        assert_eq!(answer["status"], "success", "/api/v1/{path}: {body}");
        answer["data"].clone()
    }

    /// An instant query's samples: each series' labels and value.
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let data = self.api(&format!("query?query={}", percent_encode(promql)));
        let rows = data["result"].as_array().cloned().unwrap_or_default();
        rows.into_iter()
            .map(|row| {
                let value = row["value"][1].as_str().and_then(|v| v.parse().ok());
                (row["metric"].clone(), value.unwrap_or_else(|| panic!("{promql}: {row}")))
            })
            .collect()
    }

    /// The one value `promql` gives, or why there is not exactly one.
    fn value(&self, promql: &str) -> Result<f64, String> {
        match self.query(promql).as_slice() {
            [(_, v)] => Ok(*v),
            rows => Err(format!("{promql}: {} series, not 1", rows.len())),
        }
    }

    /// Queries until `check` passes; panics with the last failure after [`WAIT`].
    fn wait_for(&self, what: &str, mut check: impl FnMut(&Self) -> Result<(), String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            match check(self) {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => {
                    panic!("{what}: not within {WAIT:?}: {why}\nprometheus:\n{}", self.log())
                }
                Err(_) => thread::sleep(Duration::from_millis(250)),
            }
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `s` as a URL query value: every byte but the unreserved ones percent-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            write!(out, "%{b:02X}").expect("write to a String");
        }
        out
    })
}

/// `want` == `got`, or why not.
fn equal(what: &str, got: f64, want: f64) -> Result<(), String> {
    if (got - want).abs() < 1e-9 { Ok(()) } else { Err(format!("{what} = {got}, want {want}")) }
}

#[test]
fn a_real_prometheus_stores_and_alerts_on_what_the_test_holds() {
    println!(
        "checks: a real Prometheus running contrib/prometheus/prometheus.yml against tcptrace \
         serve stores the held connections exactly (listener, local port, destination and \
         its range), keeps the per-port series adding up to the total, follows closes; every \
         rule evaluates without error, the headroom ratio is recorded for each limit of the \
         test's listener, and the destination over 80% of its range is a pending alert"
    );
    let ns = Netns::new("ns-prom");
    ns.sysctl("net.ipv4.ip_local_port_range", &format!("{} {}", RANGE.0, RANGE.1))
        .expect("set the namespace's ephemeral range");
    let range = f64::from(RANGE.1 - RANGE.0 + 1);
    let server = Server::listen(&ns, SERVER, Accepted::Hold);
    let clients = connect(&ns, CLIENT, SERVER, HELD);
    server.wait_accepted(HELD);

    // Enough rows that the test's own are never folded into `other` by a busy box.
    let serve = Serve::start(&["--top-k", "1000"]);
    let prometheus = Prometheus::scraping(serve.addr);
    let instance = format!("instance=\"{}\",job=\"tcptrace\"", serve.addr);
    let netns = ns.inode();
    let listener = format!("{instance},{}", listener_labels(netns, SERVER));
    let destination = format!("{instance},{}", destination_labels(netns, CLIENT, SERVER));
    let held = f64::from(u32::try_from(HELD).expect("a handful"));

    prometheus.wait_for("the held connections in Prometheus", |p| {
        let live = format!("tcptrace_listener_live_connections{{{listener}}}");
        equal(&live, p.value(&live)?, held)?;
        let port = format!(
            "tcptrace_local_port_live_connections{{{instance},port=\"{}\"}}",
            SERVER.port()
        );
        equal(&port, p.value(&port)?, held)?;
        let in_use = format!("tcptrace_destination_ports_in_use{{{destination}}}");
        equal(&in_use, p.value(&in_use)?, held)?;
        let size = format!("tcptrace_destination_ephemeral_range_ports{{{destination}}}");
        equal(&size, p.value(&size)?, range)?;
        // One scrape is one moment, and Prometheus stores it as one.
        let apart = format!(
            "sum(tcptrace_local_port_live_connections{{{instance}}}) \
             - on () tcptrace_live_connections{{{instance}}}"
        );
        equal("the per-port series less the total", p.value(&apart)?, 0.0)
    });
    println!("  stored: listener {held} live, destination {held} of {range} ports, sums exact");

    every_rule_evaluates(&prometheus);
    headroom_ratio_is_recorded(&prometheus, &listener);
    port_exhaustion_is_pending(&prometheus, serve.addr, netns);

    // The server closes some of its ends: they leave the listener's count; the client ends,
    // in CLOSE_WAIT, still hold their ports.
    let mut n = 0;
    let closed = server.close_where(move |_| {
        n += 1;
        n <= CLOSED
    });
    assert_eq!(closed.len(), CLOSED);
    let left = f64::from(u32::try_from(HELD - CLOSED).expect("a handful"));
    prometheus.wait_for("the closes in Prometheus", |p| {
        let live = format!("tcptrace_listener_live_connections{{{listener}}}");
        equal(&live, p.value(&live)?, left)?;
        let in_use = format!("tcptrace_destination_ports_in_use{{{destination}}}");
        equal(&in_use, p.value(&in_use)?, held)
    });
    println!("  after {CLOSED} server-side closes: listener {left} live, destination still {held}");

    // Reconciling every second since the start: a connection the hooks missed or invented
    // would have been corrected by now, and counted.
    let corrections = format!("tcptrace_drift_corrections_total{{{instance}}}");
    let drift = prometheus.value(&corrections).unwrap_or_else(|e| panic!("{e}"));
    assert!(drift == 0.0, "the hooks missed or invented a connection: {corrections} = {drift}");
    drop(prometheus);
    drop(serve);
    drop(clients);
}

/// Every rule of the shipped file is loaded and has been evaluated without error: a
/// vector match that real label sets break would say so here.
fn every_rule_evaluates(prometheus: &Prometheus) {
    let rules_file = fs::read_to_string(contrib().join("tcptrace.rules.yml")).expect("rules");
    let shipped = rules_file.matches("- record:").count() + rules_file.matches("- alert:").count();
    prometheus.wait_for("every rule evaluated without error", |p| {
        let groups = p.api("rules")["groups"].as_array().cloned().unwrap_or_default();
        let rules: Vec<Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if rules.len() != shipped {
            return Err(format!("{} rules loaded, the file has {shipped}", rules.len()));
        }
        match rules.iter().find(|r| r["health"] != "ok") {
            Some(r) => Err(format!("{} is {}: {}", r["name"], r["health"], r["lastError"])),
            None => Ok(()),
        }
    });
    println!("  all {shipped} rules evaluated, health ok");
}

/// `tcptrace:listener_headroom:ratio` has a series for each of the listener's four limits,
/// each in (0, 1]: the group_left match holds on tcptrace's real labels.
fn headroom_ratio_is_recorded(prometheus: &Prometheus, listener: &str) {
    prometheus.wait_for("the headroom ratio of every limit of the test's listener", |p| {
        let rows = p.query(&format!("tcptrace:listener_headroom:ratio{{{listener}}}"));
        let mut limits: Vec<&str> =
            rows.iter().map(|(labels, _)| labels["limit"].as_str().unwrap_or("?")).collect();
        limits.sort_unstable();
        if limits != ["accept_queue", "fds", "file_max", "memory"] {
            return Err(format!("recorded for {limits:?}"));
        }
        match rows.iter().find(|(_, ratio)| !(*ratio > 0.0 && *ratio <= 1.0)) {
            Some((labels, ratio)) => Err(format!("{labels}: ratio {ratio}, not in (0, 1]")),
            None => Ok(()),
        }
    });
    println!("  tcptrace:listener_headroom:ratio recorded for all four limits, each in (0, 1]");
}

/// The test's destination, over 80% of its range, is a pending
/// `TcptraceDestinationPortsNearlyExhausted` (it fires after 5 minutes, longer than a test).
fn port_exhaustion_is_pending(prometheus: &Prometheus, instance: SocketAddr, netns: u32) {
    let (instance, netns) = (instance.to_string(), netns.to_string());
    let (raddr, rport) = (SERVER.ip().to_string(), SERVER.port().to_string());
    prometheus.wait_for("the port-exhaustion alert on the test's destination", |p| {
        let alerts = p.api("alerts")["alerts"].as_array().cloned().unwrap_or_default();
        let ours: Vec<&Value> = alerts
            .iter()
            .filter(|a| {
                let labels = &a["labels"];
                labels["instance"] == instance.as_str()
                    && labels["netns"] == netns.as_str()
                    && labels["raddr"] == raddr.as_str()
                    && labels["rport"] == rport.as_str()
            })
            .collect();
        let pending = ours.iter().any(|a| {
            a["labels"]["alertname"] == "TcptraceDestinationPortsNearlyExhausted"
                && a["state"] == "pending"
        });
        let names: Vec<&Value> = ours.iter().map(|a| &a["labels"]["alertname"]).collect();
        if pending { Ok(()) } else { Err(format!("alerts on it: {names:?}")) }
    });
    println!("  TcptraceDestinationPortsNearlyExhausted pending for {SERVER}");
}
