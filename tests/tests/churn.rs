//! Live smoke test of the load generator the benchmarks use: `tcptrace load churn` does
//! what it reports, and the tracer sees every one of its connections exactly once.
//!
//! Run as root: `TCPTRACE_BIN=… cargo test -p tcptrace-tests --test churn`.

use std::process::Command;

use serde_json::Value;
use tcptrace_tests::{EventKind, Netns, Tracer, tracer_bin};

/// Not a port any other live test uses.
const PORT: u16 = 21_991;
const CONNECTIONS: usize = 2_000;

#[test]
fn churn_is_seen_exactly() {
    println!(
        "checks: `tcptrace load churn --connections {CONNECTIONS}` in a namespace of its own \
         completes them all, and `events` reports each connect, accept and both closes once"
    );
    let ns = Netns::new("ns-churn");
    let tracer = Tracer::events(&[PORT]);
    let inode = ns.inode();
    let output = ns.run(|| {
        Command::new(tracer_bin())
            .args(["load", "churn", "--connections", &CONNECTIONS.to_string()])
            .args(["--port", &PORT.to_string(), "--threads", "2", "--sources", "16"])
            .output()
            .expect("run tcptrace load churn")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "churn failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    println!("  churn: {report}");
    assert_eq!(report["connections"].as_u64(), Some(CONNECTIONS as u64), "{report}");
    assert_eq!(report["accepted"].as_u64(), Some(CONNECTIONS as u64), "{report}");
    assert_eq!(report["failed"].as_u64(), Some(0), "{report}");
    assert!(report["rate"].as_f64().is_some_and(|r| r > 0.0), "{report}");

    let count = |events: &[tcptrace_tests::EventLine], kind: EventKind| {
        events.iter().filter(|e| e.netns == inode && e.event == kind).count()
    };
    let events = tracer.wait_events("every close of the churn", |ev| {
        let closes = count(ev, EventKind::Close);
        if closes >= 2 * CONNECTIONS { Ok(()) } else { Err(format!("{closes} closes")) }
    });
    let own: Vec<_> = events.iter().filter(|e| e.netns == inode).collect();
    for e in &own {
        assert!(e.lport == PORT || e.rport == PORT, "{e:?}");
        assert!(
            e.laddr.to_string().starts_with("127.20") && e.raddr.to_string().starts_with("127.20"),
            "the churn stays on its own addresses: {e:?}"
        );
    }
    assert_eq!(count(&events, EventKind::Connect), CONNECTIONS);
    assert_eq!(count(&events, EventKind::Accept), CONNECTIONS);
    assert_eq!(count(&events, EventKind::Close), 2 * CONNECTIONS);
    assert_eq!(count(&events, EventKind::ConnectFailed), 0);
}
