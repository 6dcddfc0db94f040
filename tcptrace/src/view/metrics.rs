//! The snapshot as Prometheus metrics (OpenMetrics text), for `tcptrace serve`.
//!
//! Cardinality is bounded by construction: every per-port, per-listener and per-destination
//! metric has at most `top_k` labelled series plus one `other` series (every label
//! `"other"`) that holds the rest, for the quantities that add up (live connections, ports
//! in use). Totals are exact and carry no per-row labels. The snapshot's rows arrive
//! sorted by the ledger and the capacity tracker (most live first, highest use first);
//! this view only cuts them and adds up the rest.
//!
//! A fresh registry is built per render: the top K changes between refreshes, and a
//! series that left the top K must disappear rather than keep its last value.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::Snapshot;
use crate::{
    capacity::{DestinationRow, ListenerRow},
    event::EventKind,
    ledger::{EventCounts, LocalPortRow},
};

/// Every metric name starts with this (and a `_`).
pub const PREFIX: &str = "tcptrace";

/// The value of every label of the series that sums the rows beyond the top K.
pub const OTHER: &str = "other";

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttachLabels {
    attach: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    pass: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    netns: String,
    addr: String,
    port: String,
}

/// A listener's labels and one of its limits (`fds`, `file_max`, `memory`,
/// `accept_queue`: four at most).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLimitLabels {
    netns: String,
    addr: String,
    port: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetnsLabels {
    netns: String,
}

/// A namespace and one of `capacity::LIMIT_COUNTERS`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetnsCounterLabels {
    netns: String,
    counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    netns: String,
    laddr: String,
    raddr: String,
    rport: String,
}

impl PortLabels {
    fn of(row: &LocalPortRow) -> Self {
        Self { port: row.port.to_string() }
    }

    fn other() -> Self {
        Self { port: OTHER.into() }
    }
}

impl ListenerLabels {
    fn of(row: &ListenerRow) -> Self {
        Self {
            netns: row.netns.to_string(),
            addr: row.addr.to_string(),
            port: row.port.to_string(),
        }
    }

    fn other() -> Self {
        Self { netns: OTHER.into(), addr: OTHER.into(), port: OTHER.into() }
    }
}

impl DestinationLabels {
    fn of(row: &DestinationRow) -> Self {
        Self {
            netns: row.netns.to_string(),
            laddr: row.laddr.to_string(),
            raddr: row.raddr.to_string(),
            rport: row.rport.to_string(),
        }
    }

    fn other() -> Self {
        Self { netns: OTHER.into(), laddr: OTHER.into(), raddr: OTHER.into(), rport: OTHER.into() }
    }
}

/// Splits sorted rows into the first `k` and the sum of `value` over the rest.
fn top_and_rest<T>(rows: &[T], k: usize, value: impl Fn(&T) -> u64) -> (&[T], u64) {
    let (top, rest) = rows.split_at(k.min(rows.len()));
    (top, rest.iter().map(value).sum())
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// What the engine says of itself: passes of each kind (reconciliation, capacity refresh)
/// that failed and were skipped, and events over its tables' cap, since start.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub skipped: Vec<(&'static str, u64)>,
    pub over_cap: u64,
}

/// Gauges hold i64; connection and port counts stay far below 2^63.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The exposition of `snapshot`, which must hold every row (taken with `top` 0), with
/// per-row series for the first `top_k` rows of each kind; `health` is what the engine
/// says of its own passes and tables.
#[must_use]
pub fn render(snapshot: &Snapshot, events: EventCounts, health: &Health, top_k: usize) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    let r = &mut registry;

    let attach = Family::<AttachLabels, Gauge>::default();
    attach.get_or_create(&AttachLabels { attach: snapshot.backend.clone() }).set(1);
    r.register(
        "attach_info",
        "The kernel attach path in use (fentry, kprobe, tp_btf, tracepoint), as a label; always 1",
        attach,
    );

    gauge(
        r,
        "live_connections",
        "Live TCP connections on the box (ESTABLISHED or CLOSE_WAIT), every network namespace",
        int(snapshot.live),
    );
    let by_kind = Family::<KindLabels, Counter>::default();
    for kind in [
        EventKind::Connect,
        EventKind::Accept,
        EventKind::Established,
        EventKind::Close,
        EventKind::ConnectFailed,
    ] {
        by_kind.get_or_create(&KindLabels { kind: kind.as_str().into() }).inc_by(events.get(kind));
    }
    r.register("events", "Kernel events applied to the counts, per kind", by_kind);
    counter(
        r,
        "lost_events",
        "Events the kernel dropped because the ring buffer was full: when it grows, counts may \
         be off until the next reconciliation (raise --ring-size)",
        snapshot.lost,
    );
    gauge(
        r,
        "drift_connections",
        "Connections the last reconciliation with sock_diag found wrong in the counts, and \
         corrected",
        int(snapshot.drift),
    );
    counter(
        r,
        "drift_corrections",
        "Every correction reconciliations made since tcptrace started: drift_connections \
         summed, so a scrape between two passes misses none",
        snapshot.drift_total,
    );
    gauge(
        r,
        "unreconciled_namespaces",
        "Network namespaces the last reconciliation could not read: their counts rest on the \
         hooks alone",
        int(snapshot.unreconciled_netns),
    );

    let by_pass = Family::<PassLabels, Counter>::default();
    for &(pass, n) in &health.skipped {
        by_pass.get_or_create(&PassLabels { pass: pass.into() }).inc_by(n);
    }
    r.register(
        "skipped_passes",
        "Passes of the loop (a reconciliation, a capacity refresh) that failed and were \
         skipped; the counts go on, /healthz says why",
        by_pass,
    );
    counter(
        r,
        "events_over_cap",
        "Events whose listener or destination found its table of event counts full (65,536 \
         keys: keys come from what users do): in the live totals, in no row's rates",
        health.over_cap,
    );

    local_ports(r, &snapshot.local_ports, top_k);
    listeners(r, &snapshot.listeners, top_k);
    listener_limits(r, &snapshot.listeners, top_k);
    netns_limits(r, &snapshot.limits, top_k);
    destinations(r, &snapshot.destinations, top_k);

    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

fn local_ports(r: &mut Registry, rows: &[LocalPortRow], top_k: usize) {
    gauge(
        r,
        "local_ports",
        "Local ports with at least one live connection",
        int(rows.len() as u64),
    );
    let (top, rest) = top_and_rest(rows, top_k, |row| row.live);
    let live = Family::<PortLabels, Gauge>::default();
    for row in top {
        live.get_or_create(&PortLabels::of(row)).set(int(row.live));
    }
    live.get_or_create(&PortLabels::other()).set(int(rest));
    r.register(
        "local_port_live_connections",
        "Live connections per local port number, across network namespaces: the top K ports, \
         and port=\"other\" for the rest",
        live,
    );
}

fn listeners(r: &mut Registry, rows: &[ListenerRow], top_k: usize) {
    gauge(
        r,
        "listeners",
        "Listening sockets (SO_REUSEPORT groups count once)",
        int(rows.len() as u64),
    );
    let (top, rest) = top_and_rest(rows, top_k, |row| row.live);
    let live = Family::<ListenerLabels, Gauge>::default();
    let remotes = Family::<ListenerLabels, Gauge>::default();
    let sockets = Family::<ListenerLabels, Gauge>::default();
    for row in top {
        let labels = ListenerLabels::of(row);
        live.get_or_create(&labels).set(int(row.live));
        remotes.get_or_create(&labels).set(int(row.remote_addrs));
        sockets.get_or_create(&labels).set(int(row.reuseport_sockets));
    }
    live.get_or_create(&ListenerLabels::other()).set(int(rest));
    r.register(
        "listener_live_connections",
        "Live connections per listener (network namespace, address, port): the top K \
         listeners, and every label \"other\" for the rest",
        live,
    );
    r.register(
        "listener_remote_addresses",
        "Distinct remote addresses among a top-K listener's live connections",
        remotes,
    );
    r.register(
        "listener_reuseport_sockets",
        "Listening sockets sharing a top-K listener's address and port (SO_REUSEPORT)",
        sockets,
    );
}

/// The top-K listeners' limits (see `capacity::ListenerLimits`): these do not add up
/// across listeners, so there is no `other` series.
fn listener_limits(r: &mut Registry, rows: &[ListenerRow], top_k: usize) {
    let queue = Family::<ListenerLabels, Gauge>::default();
    let backlog = Family::<ListenerLabels, Gauge>::default();
    let drops = Family::<ListenerLabels, Counter>::default();
    let fds = Family::<ListenerLabels, Gauge>::default();
    let fd_limit = Family::<ListenerLabels, Gauge>::default();
    let headroom = Family::<ListenerLimitLabels, Gauge>::default();
    let binding = Family::<ListenerLimitLabels, Gauge>::default();
    for row in rows.iter().take(top_k) {
        let Some(limits) = &row.limits else { continue };
        let labels = ListenerLabels::of(row);
        queue.get_or_create(&labels).set(int(limits.accept_queue));
        backlog.get_or_create(&labels).set(int(limits.backlog));
        if let Some(n) = limits.drops {
            drops.get_or_create(&labels).inc_by(n);
        }
        if let (Some(open), Some(max)) = (limits.fds, limits.fd_limit) {
            fds.get_or_create(&labels).set(int(open));
            fd_limit.get_or_create(&labels).set(int(max));
        }
        let with = |limit: &str| ListenerLimitLabels {
            netns: labels.netns.clone(),
            addr: labels.addr.clone(),
            port: labels.port.clone(),
            limit: limit.to_owned(),
        };
        for h in &limits.headroom {
            headroom.get_or_create(&with(h.name.as_str())).set(int(h.headroom));
        }
        if let Some(name) = limits.binding {
            binding.get_or_create(&with(name.as_str())).set(1);
        }
    }
    r.register(
        "listener_accept_queue",
        "Connections waiting for accept() on a top-K listener (ss -lnt Recv-Q, summed over \
         its SO_REUSEPORT group)",
        queue,
    );
    r.register(
        "listener_backlog",
        "A top-K listener's backlog (ss -lnt Send-Q, summed over its group); each socket's \
         queue holds at most backlog + 1",
        backlog,
    );
    r.register(
        "listener_drops",
        "SYNs and third ACKs a top-K listener's sockets dropped since they were made (full \
         accept or SYN queue; ss -ltm d)",
        drops,
    );
    r.register(
        "listener_process_fds",
        "Open fds of the process holding a top-K listener with the least room under its soft \
         RLIMIT_NOFILE",
        fds,
    );
    r.register("listener_process_fd_limit", "That process's soft RLIMIT_NOFILE", fd_limit);
    r.register(
        "listener_headroom_connections",
        "Connections a top-K listener can still take before each limit (fds, file_max, \
         memory, accept_queue) stops it",
        headroom,
    );
    r.register(
        "listener_binding_limit",
        "1 for the limit that stops a top-K listener first",
        binding,
    );
}

/// One reading of a namespace's limits row, for a gauge family.
type NetnsReading = fn(&tcptrace_json::limits::NetnsLimits) -> Option<u64>;

/// The kernel's caps of the first `top_k` namespaces by inode (the initial namespace is
/// the lowest), and their counters of a limit hit.
fn netns_limits(r: &mut Registry, rows: &[tcptrace_json::limits::NetnsLimits], top_k: usize) {
    if let Some(first) = rows.first() {
        for (name, help, value) in [
            ("files_allocated", "File handles allocated on the box (fs/file-nr)", first.files),
            ("files_max", "fs/file-max", first.file_max),
            ("memory_available_bytes", "MemAvailable of /proc/meminfo", first.mem_available),
        ] {
            if let Some(v) = value {
                gauge(r, name, help, int(v));
            }
        }
    }
    let families: [(&str, &str, NetnsReading); 11] = [
        ("netns_tcp_mem_pages", "Pages TCP buffers hold (sockstat TCP mem)", |l| l.tcp_mem_pages),
        ("netns_tcp_mem_pressure_pages", "net.ipv4.tcp_mem pressure", |l| l.tcp_mem.map(|m| m[1])),
        ("netns_tcp_mem_max_pages", "net.ipv4.tcp_mem max", |l| l.tcp_mem.map(|m| m[2])),
        ("netns_orphans", "Orphaned TCP sockets (sockstat orphan)", |l| l.orphans),
        ("netns_max_orphans", "net.ipv4.tcp_max_orphans", |l| l.max_orphans),
        ("netns_time_wait", "TIME_WAIT sockets (sockstat tw)", |l| l.time_wait),
        ("netns_max_tw_buckets", "net.ipv4.tcp_max_tw_buckets", |l| l.max_tw_buckets),
        ("netns_conntrack", "nf_conntrack_count, where nf_conntrack is loaded", |l| l.conntrack),
        ("netns_conntrack_max", "nf_conntrack_max", |l| l.conntrack_max),
        (
            "netns_kernel_bytes_per_connection",
            "Kernel memory one accepted connection costs (slab objects + mean buffers)",
            |l| l.bytes_per_connection,
        ),
        ("netns_memory_connections", "Connections that fit in MemAvailable at that cost", |l| {
            l.memory_connections
        }),
    ];
    for (name, help, value) in families {
        let family = Family::<NetnsLabels, Gauge>::default();
        for row in rows.iter().take(top_k) {
            if let Some(v) = value(row) {
                family.get_or_create(&NetnsLabels { netns: row.netns.to_string() }).set(int(v));
            }
        }
        r.register(name, help, family);
    }
    let counters = Family::<NetnsCounterLabels, Counter>::default();
    for row in rows.iter().take(top_k) {
        for c in &row.counters {
            let labels =
                NetnsCounterLabels { netns: row.netns.to_string(), counter: c.name.clone() };
            counters.get_or_create(&labels).inc_by(c.total);
        }
    }
    r.register(
        "netns_limit_hits",
        "TcpExt counters of a limit hit (ListenOverflows, ListenDrops, TCPReqQFullDrop, \
         TCPReqQFullDoCookies, SyncookiesSent, TCPMemoryPressures, TCPAbortOnMemory, \
         TCPTimeWaitOverflow), as nstat reads them",
        counters,
    );
}

fn destinations(r: &mut Registry, rows: &[DestinationRow], top_k: usize) {
    gauge(
        r,
        "destinations",
        "Client-side destinations (network namespace, local address, remote address and port) \
         holding at least one local port",
        int(rows.len() as u64),
    );
    let (top, rest) = top_and_rest(rows, top_k, |row| row.ports_in_use);
    let in_use = Family::<DestinationLabels, Gauge>::default();
    let shared = Family::<DestinationLabels, Gauge>::default();
    let range = Family::<DestinationLabels, Gauge>::default();
    let headroom = Family::<DestinationLabels, Gauge>::default();
    let ratio = Family::<DestinationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let failed = Family::<DestinationLabels, Counter>::default();
    for row in top {
        let labels = DestinationLabels::of(row);
        in_use.get_or_create(&labels).set(int(row.ports_in_use));
        shared.get_or_create(&labels).set(int(row.shared_ports));
        range.get_or_create(&labels).set(i64::from(row.range));
        headroom
            .get_or_create(&labels)
            .set(int(u64::from(row.range).saturating_sub(row.ports_in_use)));
        ratio.get_or_create(&labels).set(row.use_pct / 100.0);
        failed.get_or_create(&labels).inc_by(row.failed_connects);
    }
    in_use.get_or_create(&DestinationLabels::other()).set(int(rest));
    r.register(
        "destination_ports_in_use",
        "Local ports held toward a destination (SYN_SENT through TIME_WAIT): the top K \
         destinations by use of the ephemeral range, and every label \"other\" for the rest",
        in_use,
    );
    r.register(
        "destination_shared_ports",
        "Of a top-K destination's ports in use, the local ports that serve another \
         destination at the same time (one local port, several 4-tuples)",
        shared,
    );
    r.register(
        "destination_ephemeral_range_ports",
        "Size of the ephemeral port range a top-K destination's ports come from \
         (ip_local_port_range minus ip_local_reserved_ports of its network namespace)",
        range,
    );
    r.register(
        "destination_headroom_ports",
        "Ports a top-K destination can still take from its ephemeral range",
        headroom,
    );
    r.register(
        "destination_port_use_ratio",
        "Ports in use over the ephemeral range size, for a top-K destination (1 = exhausted)",
        ratio,
    );
    r.register(
        "destination_failed_connects",
        "connect() calls to a top-K destination's remote address and port (from any local \
         address) that failed with EADDRNOTAVAIL since tcptrace started",
        failed,
    );
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::view::tests::sample;

    /// `name{labels}` → value as written, from the exposition's sample lines.
    fn samples(text: &str) -> HashMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("a sample line");
                (series.to_owned(), value.to_owned())
            })
            .collect()
    }

    fn listener(port: u16, live: u64) -> ListenerRow {
        crate::view::columns::tests::listener_in(7, "127.0.0.1", port, live)
    }

    fn destination(rport: u16, ports_in_use: u64, range: u32) -> DestinationRow {
        DestinationRow {
            netns: 7,
            laddr: "10.0.0.1".parse().unwrap(),
            raddr: "10.0.0.9".parse().unwrap(),
            rport,
            ports_in_use,
            shared_ports: 1,
            range,
            use_pct: crate::capacity::use_pct(ports_in_use, range),
            connect_rate: 0.0,
            exhaustion_s: None,
            failed_connects: 2,
        }
    }

    #[test]
    fn totals_are_exact_and_rows_beyond_the_top_k_go_to_other() {
        let mut s = sample();
        s.listeners = vec![listener(8080, 3), listener(443, 2), listener(22, 1)];
        for l in &mut s.listeners {
            l.limits = Some(every_limit());
        }
        s.destinations = vec![destination(5432, 5, 10), destination(6379, 1, 10)];
        s.limits = vec![netns_limits(7), netns_limits(8)];
        let events = EventCounts { connect: 4, accept: 3, close: 1, ..EventCounts::default() };
        let health =
            Health { skipped: vec![("reconciliation", 2), ("capacity_refresh", 0)], over_cap: 6 };
        let text = render(&s, events, &health, 1);
        let m = samples(&text);

        assert_eq!(m["tcptrace_attach_info{attach=\"fentry\"}"], "1");
        assert_eq!(m["tcptrace_live_connections"], "5");
        assert_eq!(m["tcptrace_lost_events_total"], "3");
        assert_eq!(m["tcptrace_drift_connections"], "1");
        assert_eq!(m["tcptrace_drift_corrections_total"], "5");
        assert_eq!(m["tcptrace_unreconciled_namespaces"], "0");
        assert_eq!(m["tcptrace_events_total{kind=\"connect\"}"], "4");
        assert_eq!(m["tcptrace_events_total{kind=\"connect_failed\"}"], "0");
        assert_eq!(m["tcptrace_skipped_passes_total{pass=\"reconciliation\"}"], "2");
        assert_eq!(m["tcptrace_skipped_passes_total{pass=\"capacity_refresh\"}"], "0");
        assert_eq!(m["tcptrace_events_over_cap_total"], "6");

        // Local ports 8080 (3), 443 (1), 41000 (1): the top one, and the other two summed.
        assert_eq!(m["tcptrace_local_ports"], "3");
        assert_eq!(m["tcptrace_local_port_live_connections{port=\"8080\"}"], "3");
        assert_eq!(m["tcptrace_local_port_live_connections{port=\"other\"}"], "2");
        let port_series = m.keys().filter(|k| k.starts_with("tcptrace_local_port_live")).count();
        assert_eq!(port_series, 2);

        assert_eq!(m["tcptrace_listeners"], "3");
        let top = "{netns=\"7\",addr=\"127.0.0.1\",port=\"8080\"}";
        let other = "{netns=\"other\",addr=\"other\",port=\"other\"}";
        assert_eq!(m[&format!("tcptrace_listener_live_connections{top}")], "3");
        assert_eq!(m[&format!("tcptrace_listener_live_connections{other}")], "3");
        assert_eq!(m[&format!("tcptrace_listener_remote_addresses{top}")], "1");
        assert!(!m.contains_key(&format!("tcptrace_listener_remote_addresses{other}")));

        let d = "{netns=\"7\",laddr=\"10.0.0.1\",raddr=\"10.0.0.9\",rport=\"5432\"}";
        assert_eq!(m["tcptrace_destinations"], "2");
        assert_eq!(m[&format!("tcptrace_destination_ports_in_use{d}")], "5");
        assert_eq!(m[&format!("tcptrace_destination_shared_ports{d}")], "1");
        assert_eq!(m[&format!("tcptrace_destination_ephemeral_range_ports{d}")], "10");
        assert_eq!(m[&format!("tcptrace_destination_headroom_ports{d}")], "5");
        assert_eq!(m[&format!("tcptrace_destination_port_use_ratio{d}")], "0.5");
        assert_eq!(m[&format!("tcptrace_destination_failed_connects_total{d}")], "2");
        let other_d = "{netns=\"other\",laddr=\"other\",raddr=\"other\",rport=\"other\"}";
        assert_eq!(m[&format!("tcptrace_destination_ports_in_use{other_d}")], "1");
        assert!(text.ends_with("# EOF\n"), "{text}");

        let binding = r#"tcptrace_listener_binding_limit{netns="7",addr="127.0.0.1",port="8080",limit="fds"}"#;
        assert_eq!(m[binding], "1");
        assert_eq!(m["tcptrace_netns_max_tw_buckets{netns=\"7\"}"], "777");
        assert!(!m.contains_key("tcptrace_netns_max_tw_buckets{netns=\"8\"}"), "K = 1");

        // Every kind has more rows than K = 1, so this is the README's bound, reached:
        // 10 per-row metrics × K, 3 `other` series, 17 series that are always there; per
        // listener 10 limit series, per namespace 19, and 3 box-wide ones.
        assert_eq!(m.len(), 10 + 3 + 17 + 10 + 19 + 3, "the README's 39 × K + 23");
    }

    /// A listener's limits with every reading there.
    fn every_limit() -> crate::capacity::ListenerLimits {
        use crate::capacity::{Headroom, LimitName};
        let h = |name, headroom| Headroom { name, value: 1, limit: 2, headroom };
        crate::capacity::ListenerLimits {
            accept_queue: 1,
            backlog: 16,
            min_backlog: 16,
            somaxconn: Some(4096),
            backlog_clamped: false,
            drops: Some(3),
            fds: Some(10),
            fd_limit: Some(20),
            fd_pid: Some(42),
            headroom: vec![
                h(LimitName::Fds, 10),
                h(LimitName::AcceptQueue, 16),
                h(LimitName::FileMax, 100),
                h(LimitName::Memory, 1000),
            ],
            binding: Some(LimitName::Fds),
            binding_headroom: Some(10),
        }
    }

    /// A namespace's limits with every reading there.
    fn netns_limits(netns: u32) -> crate::capacity::NetnsLimits {
        crate::capacity::NetnsLimits {
            netns,
            files: Some(1),
            file_max: Some(2),
            tcp_mem_pages: Some(3),
            tcp_mem: Some([4, 5, 6]),
            memory_pressure: false,
            orphans: Some(0),
            max_orphans: Some(7),
            time_wait: Some(0),
            max_tw_buckets: Some(777),
            conntrack: Some(0),
            conntrack_max: Some(8),
            mem_available: Some(9),
            bytes_per_connection: Some(10),
            memory_connections: Some(0),
            counters: crate::capacity::LIMIT_COUNTERS
                .iter()
                .map(|&name| tcptrace_json::limits::CounterRate {
                    name: name.to_owned(),
                    total: 1,
                    rate: 0.0,
                })
                .collect(),
        }
    }

    #[test]
    fn other_is_always_there_and_zero_when_everything_fits() {
        let s = sample();
        let m = samples(&render(&s, EventCounts::default(), &Health::default(), 100));
        assert_eq!(m["tcptrace_local_port_live_connections{port=\"other\"}"], "0");
        assert_eq!(
            m["tcptrace_listener_live_connections{netns=\"other\",addr=\"other\",port=\"other\"}"],
            "0"
        );
        let sum: u64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("tcptrace_local_port_live"))
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .sum();
        assert_eq!(sum.to_string(), m["tcptrace_live_connections"]);
    }

    #[test]
    fn listener_limits_are_series_of_the_top_k() {
        let s = crate::view::columns::tests::full_snapshot();
        let m = samples(&render(&s, EventCounts::default(), &Health::default(), 5));
        let at = r#"{netns="4026531840",addr="0.0.0.0",port="22""#;
        assert_eq!(m[&format!("tcptrace_listener_accept_queue{at}}}")], "129");
        assert_eq!(m[&format!("tcptrace_listener_backlog{at}}}")], "128");
        assert_eq!(m[&format!("tcptrace_listener_drops_total{at}}}")], "17");
        assert_eq!(m[&format!("tcptrace_listener_process_fds{at}}}")], "300");
        assert_eq!(m[&format!("tcptrace_listener_binding_limit{at},limit=\"fds\"}}")], "1");
        // The second listener has no limits (an old row): no series.
        assert!(!m.keys().any(|k| k.starts_with("tcptrace_listener_backlog{netns=\"4026532001\"")));
    }

    #[test]
    fn every_metric_has_help_and_type() {
        let text = render(&sample(), EventCounts::default(), &Health::default(), 5);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name.strip_suffix("_total").unwrap_or(name);
            assert!(text.contains(&format!("# HELP {family} ")), "no HELP for {name}");
            assert!(text.contains(&format!("# TYPE {family} ")), "no TYPE for {name}");
        }
    }
}
