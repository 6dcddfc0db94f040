//! The event log: one line per connect, accept or close, as text or JSON.

use std::net::SocketAddr;

use tcptrace_json as json;

use crate::conn::canonical_ip;
use crate::event::{Event, EventKind};

/// Width of the longest kind name ("connect"), so the fields after it line up.
const KIND_WIDTH: usize = 7;

/// `connect  pid=123 comm=curl 127.0.0.1:40000 -> 127.0.0.1:8080 netns=4026531840`:
/// local end first, IPv6 addresses bracketed.
#[must_use]
pub fn text_line(ev: &Event) -> String {
    let local = canonical(ev.conn.local);
    let remote = canonical(ev.conn.remote);
    format!(
        "{kind:<KIND_WIDTH$}  pid={pid} comm={comm} {local} -> {remote} netns={netns}",
        kind = ev.kind.as_str(),
        pid = ev.pid,
        comm = TextComm(&ev.comm.as_str()),
        netns = ev.conn.netns,
    )
}

/// The event as one JSON object, without the trailing newline; `None` for the server-side
/// handshake (`Established`), which is for the ledger: the accept that follows is the event
/// users read, with the accepting process's pid.
#[must_use]
pub fn json_line(ev: &Event) -> Option<String> {
    let event = match ev.kind {
        EventKind::Connect => json::EventKind::Connect,
        EventKind::Accept => json::EventKind::Accept,
        EventKind::Close => json::EventKind::Close,
        EventKind::ConnectFailed => json::EventKind::ConnectFailed,
        EventKind::Established => return None,
    };
    let (local, remote) = (canonical(ev.conn.local), canonical(ev.conn.remote));
    let line = json::EventLine {
        event,
        ts_ns: ev.ts_ns,
        pid: ev.pid,
        tid: ev.tid,
        comm: ev.comm.as_str().into_owned(),
        family: if local.is_ipv4() { json::Family::Ipv4 } else { json::Family::Ipv6 },
        laddr: local.ip(),
        lport: local.port(),
        raddr: remote.ip(),
        rport: remote.port(),
        netns: ev.conn.netns,
        sock: format!("{:#x}", ev.sock),
    };
    Some(serde_json::to_string(&line).expect("an event always serializes"))
}

/// `Conn::new` canonicalises already; events built by hand may not have been.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

/// A task name as one whitespace-free token: processes may name their threads anything,
/// and a space inside would shift every field after it.
struct TextComm<'a>(&'a str);

impl std::fmt::Display for TextComm<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plain = !self.0.is_empty()
            && !self.0.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"');
        if plain { f.write_str(self.0) } else { write!(f, "{:?}", self.0) }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::conn::Conn;
    use crate::event::EventKind;

    fn event(kind: EventKind, local: &str, remote: &str, comm: &str) -> Event {
        Event {
            kind,
            conn: Conn::new(4_026_531_840, local.parse().unwrap(), remote.parse().unwrap()),
            sock: 0xffff_8880_0000_1000,
            ts_ns: 123_456_789_012,
            pid: 123,
            tid: 124,
            comm: comm.into(),
        }
    }

    #[test]
    fn text_line_reads_local_to_remote() {
        let ev = event(EventKind::Connect, "127.0.0.1:40000", "127.0.0.1:8080", "curl");
        let line = text_line(&ev);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            fields,
            [
                "connect",
                "pid=123",
                "comm=curl",
                "127.0.0.1:40000",
                "->",
                "127.0.0.1:8080",
                "netns=4026531840"
            ]
        );
    }

    #[test]
    fn text_kind_column_is_aligned() {
        let lines = [EventKind::Connect, EventKind::Accept, EventKind::Close]
            .map(|k| text_line(&event(k, "10.0.0.1:80", "10.0.0.2:5000", "nginx")));
        let at: Vec<usize> = lines.iter().map(|l| l.find("pid=").unwrap()).collect();
        assert!(at.iter().all(|&i| i == at[0]), "{lines:?}");
        assert!(lines[1].starts_with("accept ") && lines[2].starts_with("close "));
    }

    #[test]
    fn text_brackets_ipv6_and_unmaps_ipv4() {
        let ev = event(EventKind::Accept, "[::1]:8080", "[::1]:40000", "srv");
        assert!(text_line(&ev).contains(" [::1]:8080 -> [::1]:40000 "));
        let mut ev = event(EventKind::Close, "127.0.0.1:1", "127.0.0.1:2", "srv");
        ev.conn.remote = "[::ffff:10.0.0.3]:2".parse().unwrap();
        assert!(text_line(&ev).contains(" -> 10.0.0.3:2 "));
    }

    #[test]
    fn text_comm_with_spaces_stays_one_field() {
        let ev = event(EventKind::Connect, "10.0.0.1:1", "10.0.0.2:2", "Web Content");
        let line = text_line(&ev);
        assert!(line.contains(r#"comm="Web Content" "#), "{line}");
        let ev = event(EventKind::Connect, "10.0.0.1:1", "10.0.0.2:2", "");
        assert!(text_line(&ev).contains(r#"comm="" "#));
    }

    #[test]
    fn json_line_has_every_field() {
        let ev = event(EventKind::Accept, "10.0.0.1:8080", "10.0.0.2:40000", "nginx");
        let line = json_line(&ev).unwrap();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = [
            "event", "ts_ns", "pid", "tid", "comm", "family", "laddr", "lport", "raddr", "rport",
            "netns", "sock",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(v["event"], "accept");
        assert_eq!(v["ts_ns"], 123_456_789_012_u64);
        assert_eq!((v["pid"].as_u64(), v["tid"].as_u64()), (Some(123), Some(124)));
        assert_eq!(v["comm"], "nginx");
        assert_eq!(v["family"], "ipv4");
        assert_eq!((v["laddr"].as_str(), v["lport"].as_u64()), (Some("10.0.0.1"), Some(8080)));
        assert_eq!((v["raddr"].as_str(), v["rport"].as_u64()), (Some("10.0.0.2"), Some(40000)));
        assert_eq!(v["netns"], 4_026_531_840_u64);
        assert_eq!(v["sock"], "0xffff888000001000");
    }

    #[test]
    fn json_family_follows_the_canonical_local_address() {
        let ev = event(EventKind::Connect, "[2001:db8::1]:40000", "[2001:db8::2]:443", "curl");
        let v: Value = serde_json::from_str(&json_line(&ev).unwrap()).unwrap();
        assert_eq!(
            (v["family"].as_str(), v["raddr"].as_str()),
            (Some("ipv6"), Some("2001:db8::2"))
        );
        assert_eq!(v["event"], "connect");

        let mut ev = event(EventKind::Close, "127.0.0.1:1", "127.0.0.1:2", "curl");
        ev.conn.local = "[::ffff:10.0.0.1]:40000".parse().unwrap();
        let v: Value = serde_json::from_str(&json_line(&ev).unwrap()).unwrap();
        assert_eq!((v["family"].as_str(), v["laddr"].as_str()), (Some("ipv4"), Some("10.0.0.1")));
        assert_eq!(v["event"], "close");
    }

    #[test]
    fn json_escapes_odd_comms() {
        let ev = event(EventKind::Connect, "10.0.0.1:1", "10.0.0.2:2", "a\"b\\c\u{1}");
        let v: Value = serde_json::from_str(&json_line(&ev).unwrap()).unwrap();
        assert_eq!(v["comm"], "a\"b\\c\u{1}");
    }
}
