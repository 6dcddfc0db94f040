//! tcptrace's last word on a run: the last line of `tcptrace watch --json`, read as the
//! contract's [`Snapshot`].

use anyhow::{Context as _, Result};
use tcptrace_json::Snapshot;

/// `events`, `lost` and `drift` of a `tcptrace watch --json` line.
pub(super) fn parse_watch_line(line: &str) -> Result<WatchEnd> {
    let snapshot: Snapshot = serde_json::from_str(line)
        .with_context(|| format!("not a `tcptrace watch --json` line: {line}"))?;
    Ok(WatchEnd { events: snapshot.events, lost: snapshot.lost, drift: snapshot.drift })
}

/// tcptrace's last word on a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WatchEnd {
    pub(super) events: u64,
    pub(super) lost: u64,
    pub(super) drift: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_watch_line() {
        // Recorded (tests/fixtures/contract/watch.jsonl, line 2), with events, lost and
        // drift set apart from each other.
        let watch = concat!(
            r#"{"elapsed_s":0.511,"backend":"tp_btf","events":9,"lost":2,"drift":1,"drift_total":1,"#,
            r#""unreconciled_netns":0,"filtered":0,"live":10,"#,
            r#""local_ports":[{"port":22081,"live":3,"remote_addrs":1},"#,
            r#"{"port":22082,"live":2,"remote_addrs":1},"#,
            r#"{"port":40003,"live":1,"remote_addrs":1},"#,
            r#"{"port":40017,"live":1,"remote_addrs":1},"#,
            r#"{"port":40022,"live":1,"remote_addrs":1}],"#,
            r#""remote_endpoints":[{"addr":"127.86.0.1","port":22081,"live":3,"local_ports":3},"#,
            r#"{"addr":"::1","port":22082,"live":2,"local_ports":2},"#,
            r#"{"addr":"127.86.0.2","port":40003,"live":1,"local_ports":1},"#,
            r#"{"addr":"127.86.0.2","port":40017,"live":1,"local_ports":1},"#,
            r#"{"addr":"127.86.0.2","port":40033,"live":1,"local_ports":1}],"#,
            r#""listeners":[{"netns":4026532174,"addr":"127.86.0.1","port":22081,"live":3,"remote_addrs":1,"max_per_remote":3,"peak_live":3,"accept_rate":5.931033351090188,"close_rate":0.0,"reuseport_sockets":2,"pids":[]},"#,
            r#"{"netns":4026532174,"addr":"::1","port":22082,"live":2,"remote_addrs":1,"max_per_remote":2,"peak_live":2,"accept_rate":3.954022234060125,"close_rate":0.0,"reuseport_sockets":1,"pids":[]}],"#,
            r#""destinations":[{"netns":4026532174,"laddr":"127.86.0.2","raddr":"127.86.0.1","rport":22081,"ports_in_use":3,"shared_ports":0,"range":64,"use_pct":4.6875,"connect_rate":5.931033351090188,"exhaustion_s":10.284885683333334,"failed_connects":0},"#,
            r#"{"netns":4026532174,"laddr":"::1","raddr":"::1","rport":22082,"ports_in_use":2,"shared_ports":0,"range":64,"use_pct":3.125,"connect_rate":3.954022234060125,"exhaustion_s":15.68023555,"failed_connects":0}]}"#,
        );
        assert_eq!(parse_watch_line(watch).unwrap(), WatchEnd { events: 9, lost: 2, drift: 1 });
        assert!(parse_watch_line(r#"{"lost":1}"#).is_err());
    }
}
