//! The JSON that tcptrace prints, as types: one definition of the contract, shared by the
//! library that writes it, the live tests that read it back from the real binary, and
//! xtask's benchmarks.
//!
//! - [`Snapshot`]: one `watch --json` line (and the model every view renders); its field
//!   order is the key order consumers see;
//! - [`LocalPortRow`], [`RemoteEndpointRow`]: the ledger's aggregates;
//! - [`ListenerRow`], [`DestinationRow`]: the capacity rows;
//! - [`EventLine`]: one `events --json` line;
//! - [`load`]: a `tcptrace load hold` worker's progress lines;
//! - [`metrics`]: `serve`'s OpenMetrics text read back as numbers (not JSON, but the same
//!   contract's other reading side).
//!
//! Addresses serialize as their text (`"127.0.0.1"`, `"::1"`).

pub mod limits;
pub mod load;
pub mod metrics;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The ledger's counts at one moment, with what the views print around them: one
/// `watch --json` line. The fields are in the order of the line's keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Time since tracing started, written to the millisecond: plenty for a refresh
    /// interval, and it keeps the line short.
    #[serde(serialize_with = "to_the_millisecond")]
    pub elapsed_s: f64,
    /// Name of the attach path in use (fentry, kprobe, tp_btf, tracepoint).
    pub backend: String,
    /// Events applied to the ledger.
    pub events: u64,
    /// Events the kernel dropped because the ring buffer was full: when not 0, the counts
    /// may be off.
    pub lost: u64,
    /// Connections the last reconciliation with sock_diag found wrong in the ledger (and
    /// corrected): when not 0, the hooks missed something. A difference is corrected when
    /// two passes in a row find it.
    pub drift: u64,
    /// Every reconciliation's corrections since tracing started: what `drift` was, summed,
    /// so that a scrape or a line that falls between two passes misses none.
    pub drift_total: u64,
    /// Network namespaces (or groups of tasks whose namespace could not be seen) that the
    /// last reconciliation could not read: their counts rest on the hooks alone.
    pub unreconciled_netns: u64,
    /// Events the in-kernel filter (`--port`, `--addr`, ...) kept out of the ring: not
    /// lost, only not asked for.
    pub filtered: u64,
    pub live: u64,
    pub local_ports: Vec<LocalPortRow>,
    pub remote_endpoints: Vec<RemoteEndpointRow>,
    /// How old `listeners`, `destinations` and `limits` are: seconds since the sock_diag
    /// walk they come from, which is paced on a large box (the counts above are current
    /// at every line). `None` when there are no such rows (their refresh failed).
    #[serde(default, serialize_with = "to_the_millisecond_or_null")]
    pub capacity_age_s: Option<f64>,
    /// Per listening socket: port reuse on the server side.
    pub listeners: Vec<ListenerRow>,
    /// Per client-side destination: ephemeral ports in use and headroom.
    pub destinations: Vec<DestinationRow>,
    /// The kernel's caps per network namespace that holds a listener or a connection.
    #[serde(default)]
    pub limits: Vec<limits::NetnsLimits>,
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's serialize_with passes a reference")]
fn to_the_millisecond<S: serde::Serializer>(seconds: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((seconds * 1000.0).round() / 1000.0)
}

#[expect(clippy::ref_option, reason = "serde's serialize_with passes a reference")]
fn to_the_millisecond_or_null<S: serde::Serializer>(
    seconds: &Option<f64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match seconds {
        Some(seconds) => to_the_millisecond(seconds, s),
        None => s.serialize_none(),
    }
}

/// Live connections on one local port (a listener's accepted connections and the
/// connections made from that ephemeral port alike), across network namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPortRow {
    pub port: u16,
    pub live: u64,
    /// Distinct remote IP addresses among the port's live connections.
    pub remote_addrs: u64,
}

/// Live connections to one remote endpoint (IP address and port), across network
/// namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpointRow {
    /// Serialized as its textual form (`"127.0.0.1"`, `"::1"`).
    pub addr: IpAddr,
    pub port: u16,
    pub live: u64,
    /// Distinct local port numbers among the live connections to this endpoint.
    pub local_ports: u64,
}

/// One listening socket, or one `SO_REUSEPORT` group of them: the sockets listening on the
/// same address and port in one network namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerRow {
    pub netns: u32,
    /// The address listened on (`"0.0.0.0"` and `"::"` for every address).
    pub addr: IpAddr,
    pub port: u16,
    /// Its connections in `ESTABLISHED` or `CLOSE_WAIT` (queued or accepted): the ledger's
    /// "live", but per listener and namespace, counted from the same sock_diag dump as the
    /// rest of the row (the ledger aggregates per port number across namespaces). An
    /// accepted connection belongs to the listener on its exact local address, else to the
    /// wildcard one (`0.0.0.0`, then a dual-stack `::`).
    pub live: u64,
    /// Distinct remote addresses among them.
    pub remote_addrs: u64,
    /// The most of them from any one remote address.
    pub max_per_remote: u64,
    /// The highest `live` seen at a refresh since tracing started (sampled once per
    /// interval: a burst shorter than that can be missed).
    pub peak_live: u64,
    /// Accept events per second since the previous refresh: on the tracepoint paths a
    /// completed handshake, on the fentry and kprobe paths `accept()` returning.
    pub accept_rate: f64,
    /// Close events per second of its connections since the previous refresh.
    pub close_rate: f64,
    /// Listening sockets on this address and port: more than 1 only with `SO_REUSEPORT`.
    pub reuseport_sockets: u64,
    /// Processes holding one of those sockets open, sorted, from a `/proc/*/fd` scan
    /// (as `ss -p` does it). The scan is repeated when a new listener appears, but at most
    /// every 5 s, and at least every 30 s: a new listener can show no pid for a few
    /// seconds, and a worker that inherited a listener shows up within 30 s. The scan runs
    /// beside the refreshes; on a box with a hundred thousand open files its pids show
    /// from the refresh after the one that started it (the first snapshot has none).
    pub pids: Vec<u32>,
    /// What caps its connections, and which limit binds first (see [`limits`]).
    #[serde(default)]
    pub limits: Option<limits::ListenerLimits>,
}

/// The local ports one destination holds, against the ephemeral range they come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DestinationRow {
    pub netns: u32,
    pub laddr: IpAddr,
    pub raddr: IpAddr,
    pub rport: u16,
    /// Client sockets to the destination from `laddr` in a state that holds a local port:
    /// `SYN_SENT`, `ESTABLISHED`, `FIN_WAIT1`, `FIN_WAIT2`, `CLOSE_WAIT`, `LAST_ACK`,
    /// `CLOSING`, `TIME_WAIT`. Each one has a different local port.
    pub ports_in_use: u64,
    /// Of `ports_in_use`, the local ports (address and port) that also serve another
    /// destination at the same time: the kernel reuses a local port for different
    /// 4-tuples, so a client is limited per destination, not per box.
    pub shared_ports: u64,
    /// Size of the namespace's effective ephemeral range: the most connections this
    /// destination can have from `laddr` with kernel-chosen ports.
    pub range: u32,
    /// `ports_in_use` as a percentage of `range` (above 100 if ports were bound by hand
    /// outside the range).
    pub use_pct: f64,
    /// Connect events per second since the previous refresh.
    pub connect_rate: f64,
    /// Seconds until `ports_in_use` reaches `range` if it keeps growing as fast as it did
    /// since the previous refresh; `None` when it did not grow (or at the first refresh).
    /// The net growth is used rather than `connect_rate` because ports come back as
    /// connections leave `TIME_WAIT`: a steady connect rate is only a risk if the ports
    /// it takes are not returned as fast.
    pub exhaustion_s: Option<f64>,
    /// `connect()`s to this remote endpoint from this network namespace (from any local
    /// address) that failed with `EADDRNOTAVAIL` since tcptrace started: the range ran out.
    /// An endpoint no destination row holds is forgotten 10 minutes after its last one.
    pub failed_connects: u64,
}

/// One `tcptrace events --json` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    pub event: EventKind,
    /// `bpf_ktime_get_ns()` when the hook ran: monotonic nanoseconds since boot.
    pub ts_ns: u64,
    /// Process (tgid) and thread of the task the hook ran in (for a connect, the one that
    /// called `connect()`).
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    /// Inode of the socket's network namespace (`lsns -t net`); 0 without kernel BTF.
    pub netns: u32,
    /// The kernel address of the socket, in hex (`0xffff...`), as the kernel prints it: a
    /// JSON number would lose precision in readers that parse numbers as doubles. It links
    /// a close to its open.
    pub sock: String,
}

/// What happened to a connection, as `events` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Connect,
    Accept,
    Close,
    /// `connect()` failed with `EADDRNOTAVAIL`: the ephemeral range ran out.
    ConnectFailed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_line_keeps_its_key_order_and_reads_back() {
        let line = r#"{"elapsed_s":1.0,"backend":"tp_btf","events":9,"lost":2,"drift":1,"drift_total":3,"unreconciled_netns":0,"filtered":0,"live":1,"local_ports":[{"port":80,"live":1,"remote_addrs":1}],"remote_endpoints":[{"addr":"::1","port":80,"live":1,"local_ports":1}],"capacity_age_s":0.25,"listeners":[],"destinations":[{"netns":7,"laddr":"127.0.0.2","raddr":"127.0.0.1","rport":80,"ports_in_use":1,"shared_ports":0,"range":28232,"use_pct":0.0035,"connect_rate":1.0,"exhaustion_s":null,"failed_connects":0}],"limits":[]}"#;
        let snapshot: Snapshot = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_string(&snapshot).unwrap(), line);
        assert_eq!(snapshot.remote_endpoints[0].addr, "::1".parse::<IpAddr>().unwrap());
        assert!(serde_json::from_str::<Snapshot>(r#"{"elapsed_s":1.0}"#).is_err());
        let late = Snapshot { elapsed_s: 12.345_678, capacity_age_s: Some(0.123_456), ..snapshot };
        let text = serde_json::to_string(&late).unwrap();
        assert!(text.starts_with(r#"{"elapsed_s":12.346,"#), "{text}");
        assert!(text.contains(r#","capacity_age_s":0.123,"#), "{text}");
        // A recording from before the key reads back, without it; no rows: null.
        let old: Snapshot =
            serde_json::from_str(&line.replace(r#""capacity_age_s":0.25,"#, "")).unwrap();
        assert_eq!(old.capacity_age_s, None);
        let none = Snapshot { capacity_age_s: None, ..old };
        assert!(serde_json::to_string(&none).unwrap().contains(r#""capacity_age_s":null"#));
    }

    #[test]
    fn event_kinds_are_snake_case() {
        let kinds: Vec<String> = [EventKind::Connect, EventKind::ConnectFailed]
            .iter()
            .map(|k| serde_json::to_string(k).unwrap())
            .collect();
        assert_eq!(kinds, [r#""connect""#, r#""connect_failed""#]);
        assert!(serde_json::from_str::<EventKind>(r#""established""#).is_err());
    }
}
