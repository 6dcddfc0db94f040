//! One JSON object per line, for `watch --json | jq`.

use serde::Serialize;

use super::Snapshot;
use crate::{
    capacity::{DestinationRow, ListenerRow},
    ledger::{LocalPortRow, RemoteEndpointRow},
};

/// The line's schema. Its own type, rather than `Snapshot`'s, so that the key order
/// consumers see is written down here and does not follow the struct's field order.
#[derive(Serialize)]
struct WatchLine<'a> {
    elapsed_s: f64,
    backend: &'a str,
    events: u64,
    lost: u64,
    drift: u64,
    filtered: u64,
    live: u64,
    local_ports: &'a [LocalPortRow],
    remote_endpoints: &'a [RemoteEndpointRow],
    listeners: &'a [ListenerRow],
    destinations: &'a [DestinationRow],
}

/// The snapshot as one line of JSON, without the trailing newline.
#[must_use]
pub fn watch_line(s: &Snapshot) -> String {
    let line = WatchLine {
        // Milliseconds are plenty for a refresh interval, and keep the line short.
        elapsed_s: (s.elapsed_s * 1000.0).round() / 1000.0,
        backend: &s.backend,
        events: s.events,
        lost: s.lost,
        drift: s.drift,
        filtered: s.filtered,
        live: s.live,
        local_ports: &s.local_ports,
        remote_endpoints: &s.remote_endpoints,
        listeners: &s.listeners,
        destinations: &s.destinations,
    };
    serde_json::to_string(&line).expect("a snapshot always serializes")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::view::tests::sample;

    #[test]
    fn keys_come_in_the_documented_order() {
        let line = watch_line(&sample());
        let keys = [
            "elapsed_s",
            "backend",
            "events",
            "lost",
            "drift",
            "filtered",
            "live",
            "local_ports",
            "remote_endpoints",
            "listeners",
            "destinations",
        ];
        let positions: Vec<usize> =
            keys.iter().map(|k| line.find(&format!("\"{k}\":")).unwrap()).collect();
        assert!(positions.is_sorted(), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v.as_object().unwrap().len(), keys.len());
    }

    #[test]
    fn line_parses_back_with_the_counts() {
        let s = sample();
        let line = watch_line(&s);
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["elapsed_s"], 12.345);
        assert_eq!(v["backend"], "fentry");
        assert_eq!((v["events"].as_u64(), v["lost"].as_u64()), (Some(0), Some(3)));
        assert_eq!(v["live"], 5);

        let ports = v["local_ports"].as_array().unwrap();
        assert_eq!(ports.len(), s.local_ports.len());
        assert_eq!(ports[0], serde_json::json!({"port": 8080, "live": 3, "remote_addrs": 2}));

        let endpoints = v["remote_endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), s.remote_endpoints.len());
        for (json, row) in endpoints.iter().zip(&s.remote_endpoints) {
            assert_eq!(json["addr"], row.addr.to_string());
            assert_eq!(json["port"], row.port);
            assert_eq!(json["live"], row.live);
            assert_eq!(json["local_ports"], row.local_ports);
            assert_eq!(json.as_object().unwrap().len(), 4);
        }
        assert!(endpoints.iter().any(|e| e["addr"] == "::1"));
    }

    #[test]
    fn empty_snapshot_has_empty_arrays() {
        let s = Snapshot {
            backend: "tracepoint".into(),
            elapsed_s: 0.0,
            events: 0,
            lost: 0,
            drift: 0,
            filtered: 0,
            live: 0,
            local_ports: Vec::new(),
            remote_endpoints: Vec::new(),
            listeners: Vec::new(),
            destinations: Vec::new(),
        };
        let v: Value = serde_json::from_str(&watch_line(&s)).unwrap();
        assert_eq!(v["local_ports"], serde_json::json!([]));
        assert_eq!(v["remote_endpoints"], serde_json::json!([]));
    }
}
