//! `tcptrace demo`, scaled down: the same code path as the full run (worker processes in a
//! SO_REUSEPORT group, a namespace of its own, a client-side exhaustion), with exact counts
//! checked here against what the demo says the load held, and nothing left behind, also
//! when interrupted.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tcptrace_tests::{attach_path, init, run_to_exit, tracer_bin};

/// Connections held on the server port: the churn size the tiers choose (3,000 in the VM).
fn connections() -> u64 {
    std::env::var("TCPTRACE_TEST_CHURN").ok().and_then(|v| v.parse().ok()).unwrap_or(6_000)
}

/// Processes whose network namespace is `inode`.
fn processes_in_netns(inode: u64) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == inode))
        .collect()
}

/// What each thread of `pid` and of its children is doing (comm, state, wait channel), for
/// a failure message.
fn threads_of(pid: u32) -> String {
    let children = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/status"))
                .is_ok_and(|s| s.lines().any(|l| l == format!("PPid:\t{pid}")))
        });
    std::iter::once(pid)
        .chain(children)
        .map(|p| format!("{p}: {}", tasks_of(p)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn tasks_of(pid: u32) -> String {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else { return String::new() };
    dir.filter_map(Result::ok)
        .map(|t| {
            let read = |f: &str| fs::read_to_string(t.path().join(f)).unwrap_or_default();
            let state = read("stat")
                .rsplit(')')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            format!("[{} {} {}]", read("comm").trim(), state, read("wchan"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or_else(|| panic!("no {path} in {v}"))
}

#[test]
fn demo_counts_one_port_and_an_exhausted_range_exactly() {
    init();
    let n = connections();
    println!(
        "checks: `tcptrace demo --connections {n}` holds {n} connections on one port and the \
         tracer, the load and sock_diag agree; the client side exhausts its range and every \
         EADDRNOTAVAIL is seen; what stops the box next is read from the kernel, nearest \
         first; nothing is left afterwards"
    );
    let n_text = n.to_string();
    let exit = run_to_exit(
        &["demo", "--connections", &n_text, "--per-process", "1000", "--json"],
        Duration::from_mins(5),
    );
    assert_eq!(exit.code(), Some(0), "demo failed:\n{}\n{}", exit.stdout, exit.stderr);
    let r: Value = serde_json::from_str(exit.stdout.trim()).expect("one JSON object");

    assert_eq!(u(&r, "/server/target"), n);
    for field in ["opened", "accepted", "tracer_live", "sock_diag_live"] {
        assert_eq!(u(&r, &format!("/server/{field}")), n, "server.{field} in {r}");
    }
    let workers = u(&r, "/server/worker_processes");
    assert_eq!(workers, n.div_ceil(1000), "{r}");
    assert_eq!(u(&r, "/server/reuseport_sockets"), workers, "one listener per worker: {r}");
    assert_eq!(u(&r, "/server/remote_addrs"), workers, "one source address per worker: {r}");

    let range = u(&r, "/client/range");
    assert_eq!(u(&r, "/client/range_high") - u(&r, "/client/range_low") + 1, range);
    assert_eq!(u(&r, "/client/opened"), range, "the range, not the workers, stops the load");
    assert_eq!(u(&r, "/client/tracer_local_ports"), range, "{r}");
    assert_eq!(u(&r, "/client/ports_in_use"), range, "{r}");
    assert!(u(&r, "/client/failed") > 0, "exhaustion must show as EADDRNOTAVAIL: {r}");
    assert_eq!(u(&r, "/client/tracer_failed_connects"), u(&r, "/client/failed"), "{r}");
    let second = u(&r, "/client/second_opened");
    assert!(second > 0);
    assert_eq!(u(&r, "/client/second_reused_local_ports"), second, "{r}");

    // What stops this box next: nearest first, each from the kernel's own reading.
    let next = r["next_limits"].as_array().expect("next_limits");
    let more: Vec<u64> = next.iter().map(|l| l["more_connections"].as_u64().unwrap()).collect();
    assert!(more.is_sorted(), "nearest first: {next:?}");
    let file_max = std::fs::read_to_string("/proc/sys/fs/file-max").expect("file-max");
    let files = next.iter().find(|l| l["name"] == "file_max").expect("file_max is read");
    let detail = files["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!("of fs/file-max {}", file_max.trim())), "{detail}");
    let memory = next.iter().find(|l| l["name"] == "memory").expect("memory is read");
    // The ramp's measured cost a socket, or the slab objects' when those take more.
    let detail = memory["detail"].as_str().unwrap_or_default();
    let taken: u64 = detail
        .strip_prefix("at ")
        .and_then(|d| d.split(' ').next())
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no bytes a socket in {detail}"));
    assert!(taken >= u(&r, "/server/kernel_bytes_per_socket"), "{detail}: {r}");
    assert!(taken > 1000, "slab objects alone are > 1 KB a socket: {detail}");
    println!("  next limits: {next:?}");

    assert_eq!((u(&r, "/lost"), u(&r, "/drift")), (0, 0), "{r}");
    assert_eq!(u(&r, "/teardown/left_live"), 0, "{r}");
    assert_eq!(r["passed"], Value::Bool(true));
    let netns = u(&r, "/netns");
    let left = processes_in_netns(netns);
    assert!(left.is_empty(), "processes left in the demo's namespace: {left:?}");
    println!("attach path {}: demo passed with {n} connections", attach_path());
}

#[test]
fn an_interrupted_demo_leaves_nothing_behind() {
    init();
    println!(
        "checks: SIGINT during the ramp stops the demo with exit 130, its workers and their \
         namespace gone"
    );
    let mut child = Command::new(tracer_bin())
        .args(["demo", "--connections", "20000", "--interval", "200ms"])
        // The teardown's steps, in the failure message if it hangs.
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the demo");
    let (tx, rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().expect("piped"));
    thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The namespace, from the plan line; then wait for connections to be held.
    let deadline = Instant::now() + Duration::from_mins(2);
    let mut netns = None;
    let mut log = Vec::new();
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
        log.push(line.clone());
        if let Some(rest) = line.split("new network namespace (").nth(1) {
            netns = rest.split(')').next().and_then(|n| n.parse::<u64>().ok());
        }
        if line.contains("server side: ")
            && !line.contains("listeners")
            && !line.contains("(0 opened")
        {
            break;
        }
    }
    let netns = netns.unwrap_or_else(|| panic!("no namespace line in:\n{}", log.join("\n")));
    assert!(!processes_in_netns(netns).is_empty(), "workers run in the demo's namespace");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let deadline = Instant::now() + Duration::from_mins(1);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let threads = threads_of(child.id());
            let _ = child.kill();
            log.extend(rx.try_iter());
            panic!(
                "the demo did not stop within 60 s of SIGINT:\n{}\nits threads: {threads}\n\
                 processes in its namespace: {:?}",
                log.join("\n"),
                processes_in_netns(netns)
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    log.extend(rx.try_iter());
    assert_eq!(status.code(), Some(130), "exit code after SIGINT:\n{}", log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("interrupted; teardown")),
        "says it tore down:\n{}",
        log.join("\n")
    );
    let left = processes_in_netns(netns);
    assert!(left.is_empty(), "processes left in the demo's namespace: {left:?}");
}

#[test]
fn impossible_sizes_get_a_clear_error() {
    init();
    println!("checks: a demo that cannot fit says why and what fits, and exits 2");
    let exit = run_to_exit(&["demo", "--connections", "1000000000"], Duration::from_secs(30));
    assert_eq!(exit.code(), Some(2), "{}", exit.stderr);
    assert!(exit.stderr.contains("kernel memory"), "{}", exit.stderr);
    assert!(exit.stderr.contains("Try --connections"), "{}", exit.stderr);
    let exit = run_to_exit(&["demo", "--connections", "0"], Duration::from_secs(30));
    assert_eq!(exit.code(), Some(2), "{}", exit.stderr);
}
