//! One JSON object per line, for `watch --json | jq`.

use super::Snapshot;

/// The snapshot as one line of JSON, without the trailing newline. The key order and the
/// millisecond `elapsed_s` are the contract's ([`tcptrace_json::Snapshot`]).
#[must_use]
pub fn watch_line(s: &Snapshot) -> String {
    serde_json::to_string(s).expect("a snapshot always serializes")
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
            "drift_total",
            "unreconciled_netns",
            "filtered",
            "live",
            "local_ports",
            "remote_endpoints",
            "capacity_age_s",
            "listeners",
            "destinations",
            "limits",
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
        assert_eq!((v["drift"].as_u64(), v["drift_total"].as_u64()), (Some(1), Some(5)));

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
            drift_total: 0,
            unreconciled_netns: 0,
            filtered: 0,
            live: 0,
            local_ports: Vec::new(),
            remote_endpoints: Vec::new(),
            capacity_age_s: None,
            limits: Vec::new(),
            listeners: Vec::new(),
            destinations: Vec::new(),
        };
        let v: Value = serde_json::from_str(&watch_line(&s)).unwrap();
        assert_eq!(v["local_ports"], serde_json::json!([]));
        assert_eq!(v["remote_endpoints"], serde_json::json!([]));
    }
}
