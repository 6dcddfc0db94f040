//! `tcptrace check`: verdicts, the JSON report and exit codes, against connections these
//! tests hold themselves (own network namespace, 127.77.0.0/16, port 21771).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tcptrace_tests::{Accepted, Exit, Netns, Server, attach_path, connect, run_to_exit_during};

const LISTEN: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 77, 0, 1));
const PORT: u16 = 21771;

fn run_check(expectations: &[&str], report: &std::path::Path) -> Exit {
    run_check_during(expectations, report, || {})
}

/// `check` for 2 s, reconciling every 500 ms (so that a connection the hooks missed is seen
/// twice and corrected, which fails `total drift<=0`), with `during` run once it attached.
fn run_check_during(
    expectations: &[&str],
    report: &std::path::Path,
    during: impl FnOnce(),
) -> Exit {
    let attach = attach_path();
    let report = report.to_str().expect("UTF-8 path");
    let mut args = vec![
        "check",
        "--attach",
        &attach,
        "--duration",
        "2s",
        "--interval",
        "250ms",
        "--reconcile-every",
        "500ms",
        "--report",
        report,
    ];
    for e in expectations {
        args.extend(["--expect", e]);
    }
    run_to_exit_during(&args, Duration::from_mins(2), during)
}

fn report_of(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the report was written");
    serde_json::from_str(&text).expect("the report is JSON")
}

fn verdicts(report: &Value) -> Vec<(String, String, f64)> {
    report["expectations"]
        .as_array()
        .expect("expectations")
        .iter()
        .map(|e| {
            (
                e["expr"].as_str().unwrap_or_default().to_owned(),
                e["verdict"].as_str().unwrap_or_default().to_owned(),
                e["observed"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

#[test]
fn check_judges_real_connections_and_exits_accordingly() {
    println!(
        "checks: claims that hold exit 0 with exact observed values in the report, a claim that \
         does not exits 1, a malformed claim exits 2 and says where"
    );
    let ns = Netns::new("ns-check");
    let server = Server::listen(&ns, SocketAddr::new(LISTEN, PORT), Accepted::Hold);
    let from = |d| IpAddr::V4(Ipv4Addr::new(127, 77, 0, d));
    let mut clients = connect(&ns, from(2), SocketAddr::new(LISTEN, PORT), 20);
    server.wait_accepted(20);
    let dir = std::env::temp_dir().join(format!("tcptrace-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let holds = dir.join("holds.json");
    // 20 connections held before the check (its seed), 5 opened and 3 opened and closed
    // while it runs (its hooks): the observed values must count all of them exactly.
    let exit = run_check_during(
        &[
            "lport=21771 live>=25",
            "lport=21771 max_per_remote==20",
            "listener=127.77.0.1:21771 remote_addrs==2",
            "dst=127.77.0.1:21771 live>=25",
            "total drift<=0",
        ],
        &holds,
        || {
            clients.extend(connect(&ns, from(3), SocketAddr::new(LISTEN, PORT), 5));
            let brief = connect(&ns, from(4), SocketAddr::new(LISTEN, PORT), 3);
            server.wait_accepted(28);
            drop(brief);
            server.close_where(|t| t.peer.ip() == from(4));
        },
    );
    assert_eq!(exit.code(), Some(0), "stdout:\n{}\nstderr:\n{}", exit.stdout, exit.stderr);
    let report = report_of(&holds);
    assert_eq!(report["passed"], Value::Bool(true), "{report:#}");
    let seen = verdicts(&report);
    let observed: Vec<f64> = seen.iter().map(|v| v.2).collect();
    assert!(seen.iter().all(|v| v.1 == "pass"), "{seen:?}");
    assert_eq!(observed, [25.0, 20.0, 2.0, 25.0, 0.0], "{seen:?}");
    assert!(exit.stdout.contains("check passed"), "{}", exit.stdout);
    println!("  holding claims: exit 0, observed {observed:?}");

    let fails = dir.join("fails.json");
    let exit = run_check(&["lport=21771 live>=26"], &fails);
    assert_eq!(exit.code(), Some(1), "stdout:\n{}\nstderr:\n{}", exit.stdout, exit.stderr);
    let seen = verdicts(&report_of(&fails));
    assert_eq!(seen, [("lport=21771 live>=26".to_owned(), "fail".to_owned(), 25.0)]);
    assert!(exit.stdout.contains("FAIL"), "{}", exit.stdout);
    println!("  a claim one too high: exit 1, observed 25");

    let exit = run_check(&["lport=21771 lve>=1"], &dir.join("bad.json"));
    assert_eq!(exit.code(), Some(2), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("unknown metric `lve`") && exit.stderr.contains('^'),
        "{}",
        exit.stderr
    );
    assert!(!exit.stderr.contains("panicked"), "{}", exit.stderr);
    println!("  a malformed claim: exit 2 with the column and the reason");

    drop(clients);
    std::fs::remove_dir_all(&dir).ok();
}
