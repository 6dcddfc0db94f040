//! What the demo found: [`Results`] and its parts, serialized as they are for `--json`
//! (their schema is a contract), and rendered as a short table for a terminal.

use std::{fmt::Write as _, net::IpAddr};

use serde::Serialize;

use crate::{check::Verdict, view::report::VerdictRow};

/// What the demo found; also its JSON output.
#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub backend: String,
    pub netns: u32,
    pub server: Option<ServerSide>,
    pub client: Option<ClientSide>,
    /// What would stop this box next, nearest first: each box-wide limit and how many more
    /// connections like the demo's it leaves room for, measured after the server side.
    pub next_limits: Vec<NextLimit>,
    pub events: u64,
    pub lost: u64,
    /// Every correction the reconciliations made (at each side's verdict and at the end).
    pub drift: u64,
    /// The tracer's resident memory at the end of the ramp.
    pub tracer_rss_bytes: u64,
    /// CPU time (user + system) the tracer process used, load workers excluded.
    pub tracer_cpu_s: f64,
    pub teardown: Option<Teardown>,
    /// Every claim held: the counts agree, nothing lost, no drift.
    pub passed: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct ServerSide {
    pub listen: String,
    pub target: u64,
    /// Connections the workers opened, and accepted, and hold.
    pub opened: u64,
    pub accepted: u64,
    /// The tracer's live count on the port (from the hooks' events).
    pub tracer_live: u64,
    /// sock_diag's count (what `ss` reads).
    pub sock_diag_live: u64,
    pub remote_addrs: u64,
    pub max_per_remote: u64,
    pub reuseport_sockets: u64,
    pub worker_processes: usize,
    pub ramp_s: f64,
    /// How much MemAvailable fell during the ramp, per socket (two per connection):
    /// the kernel's cost of a loopback connection end, measured, not assumed.
    pub kernel_bytes_per_socket: u64,
    pub over_65535: bool,
    pub passed: bool,
}

#[derive(Debug, Serialize)]
pub struct ClientSide {
    pub source: IpAddr,
    pub destination: String,
    pub range_low: u16,
    pub range_high: u16,
    pub range: u32,
    /// The range was narrowed from the kernel's default to fit `--connections`.
    pub narrowed: bool,
    pub opened: u64,
    /// connect() calls that failed with EADDRNOTAVAIL, as the workers saw them.
    pub failed: u64,
    /// Distinct local ports of the live connections to the destination (tracer).
    pub tracer_local_ports: u64,
    /// Ports in use towards the destination and use of the range (sock_diag).
    pub ports_in_use: u64,
    pub use_pct: f64,
    /// Failed connects the tracer saw (syscall exit with EADDRNOTAVAIL).
    pub tracer_failed_connects: u64,
    pub second_destination: String,
    pub second_opened: u64,
    /// Connections to the second destination on a local port also in use to the first.
    pub second_reused_local_ports: u64,
    pub passed: bool,
}

/// A box-wide limit on more connections, measured after the server side's ramp.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NextLimit {
    /// `memory`, `file_max` or `conntrack`.
    pub name: &'static str,
    /// More connections like the demo's (both ends on this box: two sockets, two open
    /// files and one conntrack entry each) before this limit is reached.
    pub more_connections: u64,
    /// How it was measured.
    pub detail: String,
}

/// What would stop this box next, nearest first, from the demo's namespace's limits row
/// and the kernel memory a socket was measured to cost during the ramp
/// (`bytes_per_socket`, never below the row's slab-based estimate). A
/// limit the kernel does not expose, or that does not apply (conntrack not tracking), is
/// left out, never guessed.
pub(super) fn next_limits(
    limits: &crate::capacity::NetnsLimits,
    bytes_per_socket: u64,
) -> Vec<NextLimit> {
    let mut next = Vec::new();
    // The slab objects (and mean buffers) a socket takes are a floor: a smaller fall of MemAvailable over a
    // small ramp is the noise of everything else the box did meanwhile (measured: 102 B a
    // socket over 4,000 connections, against 3,584 B of slab objects).
    let per_socket = match (bytes_per_socket, limits.bytes_per_connection) {
        (0, floor) => floor,
        (measured, floor) => Some(measured.max(floor.unwrap_or(0))),
    }
    .filter(|b| *b > 0);
    if let (Some(available), Some(per_socket)) = (limits.mem_available, per_socket) {
        next.push(NextLimit {
            name: "memory",
            more_connections: available / (2 * per_socket),
            detail: format!(
                "at {per_socket} B of kernel memory a socket, {} available",
                super::plan::gib(available)
            ),
        });
    }
    if let (Some(files), Some(max)) = (limits.files, limits.file_max) {
        next.push(NextLimit {
            name: "file_max",
            more_connections: max.saturating_sub(files) / 2,
            detail: format!("fs/file-nr {files} of fs/file-max {max}; every socket is a file"),
        });
    }
    // nf_conntrack tracks a namespace's connections only once a rule there needs it: a
    // count of 0 beside the demo's connections says it is loaded but not tracking them.
    if let (Some(count @ 1..), Some(max)) = (limits.conntrack, limits.conntrack_max) {
        next.push(NextLimit {
            name: "conntrack",
            more_connections: max.saturating_sub(count),
            detail: format!("nf_conntrack_count {count} of nf_conntrack_max {max}"),
        });
    }
    next.sort_by_key(|l| l.more_connections);
    next
}

#[derive(Debug, Default, Serialize)]
pub struct Teardown {
    pub workers_stopped: usize,
    /// Connections the tracer still counted in the demo's namespace afterwards.
    pub left_live: u64,
    pub interrupted: bool,
}

/// The results as a short report for a terminal.
#[expect(clippy::cast_precision_loss, reason = "a rounded figure for people")]
pub(super) fn render(r: &Results) -> String {
    let mut out = String::new();
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let _ = writeln!(out, "tcptrace demo  backend {}  netns {}", r.backend, r.netns);
    if let Some(s) = &r.server {
        let _ = write!(
            out,
            "\nSERVER SIDE: one port, many 4-tuples                               {}\n\
             \x20 listener {}: SO_REUSEPORT group of {} sockets in {} processes\n\
             \x20 held by the load       {:>10}   (opened {}, accepted {}, in {:.1}s; {} B of kernel memory per socket)\n\
             \x20 tracer (events)        {:>10}   live on port {}\n\
             \x20 sock_diag (as ss)      {:>10}\n\
             \x20 remote addresses {}, at most {} from one; {} 65,535 on ONE port\n",
            verdict(s.passed),
            s.listen,
            s.reuseport_sockets,
            s.worker_processes,
            s.target,
            s.opened,
            s.accepted,
            s.ramp_s,
            s.kernel_bytes_per_socket,
            s.tracer_live,
            s.listen.rsplit(':').next().unwrap_or_default(),
            s.sock_diag_live,
            s.remote_addrs,
            s.max_per_remote,
            if s.over_65535 { "more than" } else { "not more than" },
        );
    }
    if let Some(c) = &r.client {
        let _ = write!(
            out,
            "\nCLIENT SIDE: ephemeral ports per destination                       {}\n\
             \x20 {} -> {}: range {}-{} ({} ports{})\n\
             \x20 opened by the load     {:>10}   then connect() failed {} times (EADDRNOTAVAIL)\n\
             \x20 tracer local ports     {:>10}   failed connects seen: {}\n\
             \x20 sock_diag ports in use {:>10}   {:.1}% of the range\n\
             \x20 {} -> {}: {} connections, {} on a local port also in use to {}\n",
            verdict(c.passed),
            c.source,
            c.destination,
            c.range_low,
            c.range_high,
            c.range,
            if c.narrowed { ", narrowed to fit --connections" } else { "" },
            c.opened,
            c.failed,
            c.tracer_local_ports,
            c.tracer_failed_connects,
            c.ports_in_use,
            c.use_pct,
            c.source,
            c.second_destination,
            c.second_opened,
            c.second_reused_local_ports,
            c.destination,
        );
    }
    if let Some((first, then)) = r.next_limits.split_first() {
        let _ = writeln!(
            out,
            "\nNEXT LIMIT {}: about {} more connections like these ({})",
            first.name, first.more_connections, first.detail
        );
        for l in then {
            let _ = writeln!(out, "  then {}: {} more ({})", l.name, l.more_connections, l.detail);
        }
    }
    let _ = write!(
        out,
        "\nTRUST  events {}  lost {}  drift {}\nTRACER resident {:.1} MiB, CPU {:.1} s\nRESULT {}",
        r.events,
        r.lost,
        r.drift,
        r.tracer_rss_bytes as f64 / f64::from(1u32 << 20),
        r.tracer_cpu_s,
        verdict(r.passed)
    );
    out
}

/// The demo's claims as an HTML report's verdict rows: each side's exact count, then lost
/// events and drift, which must be 0 for the demo to pass.
pub(super) fn verdict_rows(r: &Results) -> Vec<VerdictRow> {
    let verdict = |ok: bool| if ok { Verdict::Pass } else { Verdict::Fail };
    let mut rows = Vec::new();
    if let Some(s) = &r.server {
        rows.push(VerdictRow {
            claim: format!("server: every connection held on {} counted", s.listen),
            verdict: verdict(s.passed),
            detail: format!(
                "held {}, tracer {}, sock_diag {}; {} 65,535 on one port, from {} remote \
                 addresses; {} B of kernel memory a socket",
                s.target,
                s.tracer_live,
                s.sock_diag_live,
                if s.over_65535 { "more than" } else { "not more than" },
                s.remote_addrs,
                s.kernel_bytes_per_socket,
            ),
        });
    }
    if let Some(c) = &r.client {
        rows.push(VerdictRow {
            claim: format!(
                "client: {} -> {} exhausts its {} ports, every failed connect seen",
                c.source, c.destination, c.range
            ),
            verdict: verdict(c.passed),
            detail: format!(
                "ports: tracer {}, sock_diag {} ({:.1}%); failed connects: load {}, tracer {}; \
                 {} more to {}, {} on a local port in use to the first",
                c.tracer_local_ports,
                c.ports_in_use,
                c.use_pct,
                c.failed,
                c.tracer_failed_connects,
                c.second_opened,
                c.second_destination,
                c.second_reused_local_ports,
            ),
        });
    }
    rows.push(VerdictRow {
        claim: "lost<=0".into(),
        verdict: verdict(r.lost == 0),
        detail: format!("{} events, {} lost", r.events, r.lost),
    });
    rows.push(VerdictRow {
        claim: "drift<=0".into(),
        verdict: verdict(r.drift == 0),
        detail: format!("drift {} over every reconciliation", r.drift),
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::NetnsLimits;

    fn limits() -> NetnsLimits {
        NetnsLimits {
            netns: 1,
            files: Some(1_000),
            file_max: Some(101_000),
            tcp_mem_pages: None,
            tcp_mem: None,
            memory_pressure: false,
            orphans: None,
            max_orphans: None,
            time_wait: None,
            max_tw_buckets: None,
            conntrack: None,
            conntrack_max: None,
            mem_available: Some(3_000_000_000),
            bytes_per_connection: Some(2_000),
            memory_connections: None,
            counters: Vec::new(),
        }
    }

    #[test]
    fn the_nearest_limit_comes_first_and_a_missing_one_is_left_out() {
        // 3 GB at 3,000 B a socket, two a connection: 500,000; 100,000 free files: 50,000.
        let next = next_limits(&limits(), 3_000);
        let seen: Vec<_> = next.iter().map(|l| (l.name, l.more_connections)).collect();
        assert_eq!(seen, [("file_max", 50_000), ("memory", 500_000)]);
        // Less measured than the slab objects take: the slab estimate; conntrack once it
        // tracks.
        let mut with_conntrack = limits();
        (with_conntrack.conntrack, with_conntrack.conntrack_max) = (Some(100), Some(10_100));
        let seen: Vec<_> = next_limits(&with_conntrack, 100)
            .iter()
            .map(|l| (l.name, l.more_connections))
            .collect();
        assert_eq!(seen, [("conntrack", 10_000), ("file_max", 50_000), ("memory", 750_000)]);
        // Loaded, but tracking nothing here: not a limit on these connections.
        with_conntrack.conntrack = Some(0);
        assert!(next_limits(&with_conntrack, 0).iter().all(|l| l.name != "conntrack"));
    }
}
