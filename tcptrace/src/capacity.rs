//! Capacity: how each listener and each client destination stands against its real limit.
//!
//! - **Server side**, per listening socket (network namespace, address, port): a listener is
//!   not limited by the number of ports, since every accepted connection is its own 4-tuple;
//!   what matters is how many it holds, from how many remote addresses, the most from any
//!   one of them, how fast they come and go, and how many sockets share the port through
//!   `SO_REUSEPORT`, in which processes.
//! - **Client side**, per destination (local address, remote address, remote port): every
//!   connection to one destination needs its own local port, taken from the ephemeral range
//!   of the socket's network namespace (`ip_local_port_range` minus
//!   `ip_local_reserved_ports`). A port stays taken from `SYN_SENT` until `TIME_WAIT` ends,
//!   so the count comes from a sock_diag dump of those states (no close hook sees
//!   `TIME_WAIT` end), not from the ledger's live connections.
//!
//! [`Tracker::on_event`] counts accepts, closes and connects as events arrive (a hash-map
//! increment each); [`Tracker::refresh`], once per interval, dumps every namespace once and
//! turns the dump and the counts into rows.

use hashbrown::{HashMap, HashSet};
use std::cmp::{Ordering, Reverse};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::os::unix::ffi::OsStrExt as _;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use serde::Serialize;

use crate::event::{Event, EventKind};
use crate::filter::FilterArgs;
use crate::seed::{self, StateFlags, TcpSocket, tcp_state};

/// One listening socket, or one `SO_REUSEPORT` group of them: the sockets listening on the
/// same address and port in one network namespace.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
}

/// The local ports one destination holds, against the ephemeral range they come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
    /// `connect()`s to this remote endpoint (from any local address) that failed with
    /// `EADDRNOTAVAIL` since tcptrace started: the range ran out.
    pub failed_connects: u64,
}

/// What one network namespace allows its clients.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetnsRow {
    pub netns: u32,
    /// `ip_local_port_range`.
    pub range_low: u16,
    pub range_high: u16,
    /// Ports of the range left once `ip_local_reserved_ports` are taken out.
    pub range: u32,
    /// Client-side local (address, port) pairs in use by several 4-tuples at once, each to
    /// a different destination: the kernel reuses a local port for another destination.
    pub shared_local_ports: u64,
}

/// Everything one refresh found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capacity {
    /// Most `live` first.
    pub listeners: Vec<ListenerRow>,
    /// Highest `use_pct` first.
    pub destinations: Vec<DestinationRow>,
    /// [`NetnsRow::shared_local_ports`] summed over the namespaces.
    pub shared_local_ports: u64,
    /// Every namespace that was dumped, by inode.
    pub namespaces: Vec<NetnsRow>,
    /// Namespaces that could not be read, ranges that could not be read (the kernel
    /// default is assumed then), and an incomplete pid scan: one line each.
    pub skipped: Vec<String>,
}

/// `ip_local_port_range` of a fresh network namespace, assumed when it cannot be read.
pub const DEFAULT_RANGE: (u16, u16) = (32_768, 60_999);

/// The ports `connect()` picks a local port from, in one network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EphemeralRange {
    pub low: u16,
    pub high: u16,
    /// `ip_local_reserved_ports` within `low..=high`, sorted and merged.
    pub reserved: Vec<RangeInclusive<u16>>,
}

impl EphemeralRange {
    /// From the two sysctls' text: `"32768\t60999"` and `"8080,9000-9010"` (empty when
    /// nothing is reserved).
    pub fn parse(port_range: &str, reserved_ports: &str) -> Result<Self, String> {
        let bad = |what: &str| format!("unexpected {what}");
        let mut words = port_range.split_whitespace();
        let (Some(low), Some(high), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad(&format!("ip_local_port_range {port_range:?}")));
        };
        let port = |s: &str| s.parse::<u16>().map_err(|_| bad(&format!("port {s:?}")));
        let (low, high) = (port(low)?, port(high)?);
        if low > high {
            return Err(bad(&format!("ip_local_port_range {port_range:?}")));
        }
        let mut reserved = Vec::new();
        for item in reserved_ports.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (port(a.trim())?, port(b.trim())?),
                None => (port(item)?, port(item)?),
            };
            let (first, last) = (first.max(low), last.min(high));
            if first <= last {
                reserved.push(first..=last);
            }
        }
        reserved.sort_unstable_by_key(|r| *r.start());
        let mut merged: Vec<RangeInclusive<u16>> = Vec::with_capacity(reserved.len());
        for r in reserved {
            match merged.last_mut() {
                Some(last) if u32::from(*r.start()) <= u32::from(*last.end()) + 1 => {
                    *last = *last.start()..=(*last.end()).max(*r.end());
                }
                _ => merged.push(r),
            }
        }
        Ok(Self { low, high, reserved: merged })
    }

    /// The calling thread's network namespace's range: `/proc/sys/net` shows the sysctls
    /// of the namespace of the thread that opens the file.
    pub fn read() -> anyhow::Result<Self> {
        const RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
        const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
        let range = fs::read_to_string(RANGE).with_context(|| format!("reading {RANGE}"))?;
        // Absent on kernels without it: nothing is reserved then.
        let reserved = fs::read_to_string(RESERVED).unwrap_or_default();
        Self::parse(&range, &reserved).map_err(|e| anyhow!(e))
    }

    /// Ports `connect()` can choose from.
    #[must_use]
    pub fn size(&self) -> u32 {
        let span = |r: &RangeInclusive<u16>| u32::from(*r.end()) - u32::from(*r.start()) + 1;
        span(&(self.low..=self.high)) - self.reserved.iter().map(span).sum::<u32>()
    }
}

/// `ports_in_use` as a percentage of `range`.
#[expect(clippy::cast_precision_loss, reason = "port and event counts stay far below 2^52")]
#[must_use]
pub fn use_pct(ports_in_use: u64, range: u32) -> f64 {
    if range == 0 {
        return if ports_in_use == 0 { 0.0 } else { 100.0 };
    }
    ports_in_use as f64 * 100.0 / f64::from(range)
}

/// Events per second.
#[expect(clippy::cast_precision_loss, reason = "port and event counts stay far below 2^52")]
#[must_use]
pub fn rate(events: u64, over: Duration) -> f64 {
    if over.is_zero() { 0.0 } else { events as f64 / over.as_secs_f64() }
}

/// Seconds until `free` ports are gone at `growth` ports per second; `None` if not growing.
#[expect(clippy::cast_precision_loss, reason = "port and event counts stay far below 2^52")]
#[must_use]
pub fn exhaustion_s(free: u64, growth: f64) -> Option<f64> {
    (growth > 0.0).then(|| free as f64 / growth)
}

/// The sockets the capacity refresh needs: listeners, and every state that holds a port.
fn dumped_states() -> StateFlags {
    StateFlags::LISTEN | port_holding_states()
}

fn port_holding_states() -> StateFlags {
    StateFlags::SYN_SENT
        | StateFlags::ESTABLISHED
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
        | StateFlags::TIME_WAIT
}

fn holds_port(state: u8) -> bool {
    state < 32 && port_holding_states().bits() & (1 << state) != 0
}

fn is_live(state: u8) -> bool {
    state == tcp_state::ESTABLISHED || state == tcp_state::CLOSE_WAIT
}

/// (network namespace, local address, local port).
type LocalKey = (u32, IpAddr, u16);
/// (network namespace, local address, remote address, remote port).
type DestKey = (u32, IpAddr, IpAddr, u16);

/// After this long the listeners' processes are looked up again even if no listener is new:
/// a forked worker inherits a listening socket without creating one.
const PIDS_MAX_AGE: Duration = Duration::from_secs(30);
/// New listeners wait this long for their processes at most: a scan costs about 10 µs per
/// open file on the box (the kernel builds a `/proc` inode for each), too much to repeat
/// every interval where listeners come and go all the time.
const PIDS_MIN_AGE: Duration = Duration::from_secs(5);
/// A `/proc/*/fd` scan stops after this long; the pids it found by then are kept.
const PID_SCAN_BUDGET: Duration = Duration::from_secs(2);
/// How long a refresh waits for a scan it started: enough for a box with a few thousand
/// open files, so their pids are in the same refresh.
const PID_SCAN_WAIT: Duration = Duration::from_millis(100);

/// Capacity state kept across refreshes by the watch loop.
#[derive(Debug)]
pub struct Tracker {
    accepts: HashMap<LocalKey, u64>,
    closes: HashMap<LocalKey, u64>,
    connects: HashMap<DestKey, u64>,
    /// `connect()`s that failed with `EADDRNOTAVAIL`, per remote endpoint, since start.
    failed: HashMap<(IpAddr, u16), u64>,
    /// When the event counts above started.
    counting_since: Instant,
    /// Local ports with a listener at the last refresh; `None` before it. Closes on other
    /// ports (client connections, the common case) are not counted.
    listening_ports: Option<PortSet>,
    peaks: HashMap<LocalKey, u64>,
    /// Ports in use per destination at the last refresh, and when.
    last_in_use: Option<(Instant, HashMap<DestKey, u64>)>,
    pids: PidCache,
    /// The last refresh, returned again while a new one would cost too much.
    last: Option<LastRefresh>,
    /// Said once when the refreshes start to space out.
    note: Option<String>,
    /// The run's `--port`, `--pid`, ... filter: rows count only the sockets that pass it.
    filter: FilterArgs,
}

/// A refresh may use at most 1 / `REFRESH_COST_RATIO` of a core: one that took 300 ms
/// is not repeated for 6 s. The dump also walks the established hash table's bucket
/// locks that connecting processes take: under a connection storm, dumping every second
/// cost the churn about a third of its rate, and 5 % of the time costs what the event
/// path alone does (BENCHMARKS.md).
pub const REFRESH_COST_RATIO: u32 = 20;
/// Spacing refreshes further apart than this is worth telling the user.
const SLOW_REFRESH: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct LastRefresh {
    at: Instant,
    cost: Duration,
    top: usize,
    rows: Capacity,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new(FilterArgs::default())
    }
}

/// One sock_diag walk of every namespace, with what decides which sockets count.
struct Dump {
    namespaces: Vec<NetnsDump>,
    skipped: Vec<String>,
    /// When the walk ended.
    at: Instant,
    filter: FilterArgs,
    /// The socket inodes the `--pid` processes held just before the walk.
    held: std::collections::HashSet<u32>,
}

impl Dump {
    fn passes(&self, socket: &TcpSocket) -> bool {
        self.filter.matches_socket(socket, &self.held)
    }
}

/// One namespace's part of a refresh.
#[derive(Debug)]
struct NetnsDump {
    netns: u32,
    sockets: Vec<TcpSocket>,
    range: Result<EphemeralRange, String>,
}

impl Tracker {
    /// Rows of the sockets that pass `filter`, the same one the programs apply to the
    /// events: listeners and destinations then agree with the live counts.
    #[must_use]
    pub fn new(filter: FilterArgs) -> Self {
        Self {
            accepts: HashMap::new(),
            closes: HashMap::new(),
            connects: HashMap::new(),
            failed: HashMap::new(),
            counting_since: Instant::now(),
            listening_ports: None,
            peaks: HashMap::new(),
            last_in_use: None,
            pids: PidCache::default(),
            last: None,
            note: None,
            filter,
        }
    }

    /// Counts an event towards the rates. Cheap: at most one hash-map increment.
    pub fn on_event(&mut self, ev: &Event) {
        let c = &ev.conn;
        match ev.kind {
            EventKind::Accept => {
                *self.accepts.entry((c.netns, c.local.ip(), c.local.port())).or_default() += 1;
            }
            EventKind::Close
                if self.listening_ports.as_ref().is_none_or(|p| p.contains(c.local.port())) =>
            {
                *self.closes.entry((c.netns, c.local.ip(), c.local.port())).or_default() += 1;
            }
            EventKind::Connect => {
                let key = (c.netns, c.local.ip(), c.remote.ip(), c.remote.port());
                *self.connects.entry(key).or_default() += 1;
            }
            EventKind::ConnectFailed => {
                *self.failed.entry((c.remote.ip(), c.remote.port())).or_default() += 1;
            }
            EventKind::Established | EventKind::Close => {}
        }
    }

    /// Dumps every network namespace (listeners and every port-holding state, with the
    /// namespace's ephemeral range), finds the listeners' processes, and returns the rows,
    /// the `top` of each kind (all when `top` is 0). The event rates are over the time
    /// since the previous refresh.
    ///
    /// Blocking. The kernel's dump dominates, about 1.5 to 2 µs per TCP socket: measured
    /// 30 ms with 10,000 sockets, 160 to 190 ms with 100,000 (mostly `TIME_WAIT`) and
    /// 300 ms with 180,000 live ones (`tests::scale_cost`). A refresh that scans
    /// `/proc/*/fd` for the listeners' pids (the first one, then see [`ListenerRow::pids`])
    /// adds about 10 µs per open file on the box.
    ///
    /// The cost grows with the sockets on the box (seconds at 2,000,000), so a refresh
    /// that comes sooner than [`REFRESH_COST_RATIO`] times the last one's cost after it
    /// returns the last rows again: the capacity rows then lag, the ledger's counts never
    /// do. See [`Tracker::cadence_note`].
    pub fn refresh(&mut self, top: usize) -> anyhow::Result<Capacity> {
        if let Some(last) = &self.last
            && last.top == top
            && last.at.elapsed() < last.cost * REFRESH_COST_RATIO
        {
            return Ok(last.rows.clone());
        }
        self.measured(top, |tracker| tracker.refresh_now(top))
    }

    /// The first refresh, whose dump also seeds the ledger: the live connections that pass
    /// the filter, every namespace's. One sock_diag walk of the box serves both, where a
    /// separate seed dump took as long again before the first snapshot (BENCHMARKS.md,
    /// start-up).
    pub fn refresh_and_seed(&mut self, top: usize) -> anyhow::Result<(Capacity, seed::Snapshot)> {
        let mut seed = None;
        let rows = self.measured(top, |tracker| {
            let dump = tracker.dump()?;
            seed = Some(seed::Snapshot {
                conns: dump
                    .namespaces
                    .iter()
                    .flat_map(|d| &d.sockets)
                    .filter(|s| is_live(s.state) && dump.passes(s))
                    .map(|s| s.conn)
                    .collect(),
                namespaces: dump.namespaces.iter().map(|d| d.netns).collect(),
                skipped: dump.skipped.clone(),
            });
            Ok(tracker.rows(&dump, top))
        })?;
        Ok((rows, seed.expect("set with the rows")))
    }

    /// Runs a refresh, remembers its rows and cost for [`refresh`](Self::refresh)'s pacing,
    /// and notes when the pacing starts to show.
    fn measured(
        &mut self,
        top: usize,
        refresh: impl FnOnce(&mut Self) -> anyhow::Result<Capacity>,
    ) -> anyhow::Result<Capacity> {
        let started = Instant::now();
        let rows = refresh(self)?;
        let cost = started.elapsed();
        log::debug!("capacity refresh in {cost:?}");
        if cost * REFRESH_COST_RATIO > SLOW_REFRESH
            && self.last.as_ref().is_none_or(|l| l.cost * REFRESH_COST_RATIO <= SLOW_REFRESH)
        {
            self.note = Some(format!(
                "capacity rows (listeners, destinations) refresh at most every {:.1?}: a sock_diag refresh takes {cost:.1?} here; the live counts stay current",
                cost * REFRESH_COST_RATIO
            ));
        }
        self.last = Some(LastRefresh { at: Instant::now(), cost, top, rows: rows.clone() });
        Ok(rows)
    }

    /// A line for the user when the capacity rows started to refresh less often than
    /// asked, once.
    pub fn cadence_note(&mut self) -> Option<String> {
        self.note.take()
    }

    /// A refresh, however recent the last one: for a verdict that must be current.
    pub fn refresh_now(&mut self, top: usize) -> anyhow::Result<Capacity> {
        let dump = self.dump()?;
        Ok(self.rows(&dump, top))
    }

    /// Dumps every network namespace: listeners and every port-holding state, with the
    /// namespace's ephemeral range.
    fn dump(&self) -> anyhow::Result<Dump> {
        let started = Instant::now();
        // Taken before the dump, as for the ledger's snapshot.
        let held = self.filter.held_sockets();
        let found = seed::in_every_netns(|netns| {
            Ok(NetnsDump {
                netns,
                sockets: seed::dump_sockets(netns, &dumped_states())?,
                range: EphemeralRange::read().map_err(|e| format!("{e:#}")),
            })
        })?;
        let at = Instant::now();
        let namespaces: Vec<NetnsDump> = found.results.into_iter().map(|(_, dump)| dump).collect();
        log::debug!(
            "capacity dump: {} sockets in {:?}",
            namespaces.iter().map(|d| d.sockets.len()).sum::<usize>(),
            at.saturating_duration_since(started)
        );
        Ok(Dump { namespaces, skipped: found.skipped, at, filter: self.filter.clone(), held })
    }

    /// The rows of a dump: finds the listeners' processes, then tallies.
    fn rows(&mut self, dump: &Dump, top: usize) -> Capacity {
        let inodes: HashSet<u32> = dump
            .namespaces
            .iter()
            .flat_map(|d| &d.sockets)
            .filter(|s| s.state == tcp_state::LISTEN && s.inode != 0)
            .map(|s| s.inode)
            .collect();
        let mut skipped = dump.skipped.clone();
        if let Some(note) = self.pids.refresh(inodes, dump.at, PID_SCAN_WAIT) {
            skipped.push(note);
        }
        let pids = std::mem::take(&mut self.pids.by_inode);
        let passes = |s: &TcpSocket| dump.passes(s);
        let mut capacity = self.tally(&dump.namespaces, &passes, &pids, dump.at, top);
        self.pids.by_inode = pids;
        skipped.append(&mut capacity.skipped);
        capacity.skipped = skipped;
        capacity
    }

    /// The pure part of [`refresh`](Self::refresh): rows from the dumps (the sockets that
    /// `passes`) and the event counts, which it resets.
    fn tally(
        &mut self,
        dumps: &[NetnsDump],
        passes: &dyn Fn(&TcpSocket) -> bool,
        pids: &HashMap<u32, Vec<u32>>,
        now: Instant,
        top: usize,
    ) -> Capacity {
        let sides = Sides::of(dumps, passes);
        let over = now.saturating_duration_since(self.counting_since);
        self.counting_since = now;
        let mut skipped = Vec::new();
        let mut namespaces = namespace_rows(dumps, &sides.local_uses, &mut skipped);
        let ranges: HashMap<u32, u32> = namespaces.iter().map(|r| (r.netns, r.range)).collect();

        let mut listeners = self.listener_rows(sides.listeners, pids, over);
        let mut destinations =
            self.destination_rows(sides.in_use, &sides.shared, &ranges, now, over);
        top_by(&mut listeners, top, |a, b| {
            let rank = |r: &ListenerRow| (Reverse(r.live), r.netns, r.addr, r.port);
            rank(a).cmp(&rank(b))
        });
        top_by(&mut destinations, top, |a, b| {
            let key = |r: &DestinationRow| (r.netns, r.laddr, r.raddr, r.rport);
            b.use_pct.total_cmp(&a.use_pct).then_with(|| key(a).cmp(&key(b)))
        });
        namespaces.sort_unstable_by_key(|r| r.netns);
        Capacity {
            listeners,
            destinations,
            shared_local_ports: namespaces.iter().map(|r| r.shared_local_ports).sum(),
            namespaces,
            skipped,
        }
    }

    /// Listener rows, with the accept and close counts since the last refresh (reset here)
    /// turned into rates over `over`; remembers peaks and listening ports.
    fn listener_rows(
        &mut self,
        listeners: Listeners,
        pids: &HashMap<u32, Vec<u32>>,
        over: Duration,
    ) -> Vec<ListenerRow> {
        let mut accepts = vec![0; listeners.rows.len()];
        let mut closes = vec![0; listeners.rows.len()];
        for (counts, per_listener) in
            [(&mut self.accepts, &mut accepts), (&mut self.closes, &mut closes)]
        {
            for ((netns, ip, port), n) in counts.drain() {
                if let Some(i) = listeners.owner(netns, ip, port) {
                    per_listener[i] += n;
                }
            }
        }
        let mut peaks = HashMap::with_capacity(listeners.rows.len());
        let rows = listeners
            .rows
            .into_iter()
            .enumerate()
            .filter(|(_, l)| l.passes || l.live > 0)
            .map(|(i, l)| {
                let (netns, addr, port) = l.key;
                let peak_live = self.peaks.get(&l.key).copied().unwrap_or(0).max(l.live);
                peaks.insert(l.key, peak_live);
                let mut holders: Vec<u32> =
                    l.inodes.iter().filter_map(|i| pids.get(i)).flatten().copied().collect();
                holders.sort_unstable();
                holders.dedup();
                ListenerRow {
                    netns,
                    addr,
                    port,
                    live: l.live,
                    remote_addrs: l.per_remote.len() as u64,
                    max_per_remote: l.per_remote.values().copied().max().unwrap_or(0),
                    peak_live,
                    accept_rate: rate(accepts[i], over),
                    close_rate: rate(closes[i], over),
                    reuseport_sockets: l.inodes.len() as u64,
                    pids: holders,
                }
            })
            .collect();
        self.peaks = peaks;
        self.listening_ports = Some(listeners.ports);
        rows
    }

    /// Destination rows, with the connect counts since the last refresh (reset here) as
    /// rates over `over`, and the growth since the last refresh; remembers this one's
    /// ports in use.
    fn destination_rows(
        &mut self,
        in_use: HashMap<DestKey, u64>,
        shared: &HashMap<DestKey, u64>,
        ranges: &HashMap<u32, u32>,
        now: Instant,
        over: Duration,
    ) -> Vec<DestinationRow> {
        let growth_since =
            self.last_in_use.as_ref().map(|(at, prev)| (now.saturating_duration_since(*at), prev));
        let rows = in_use
            .iter()
            .map(|(&key @ (netns, laddr, raddr, rport), &ports_in_use)| {
                let range = ranges.get(&netns).copied().unwrap_or(0);
                // Without network namespace ids (no BTF) events carry netns 0.
                let connects = self.connects.get(&key).copied().unwrap_or(0)
                    + self.connects.get(&(0, laddr, raddr, rport)).copied().unwrap_or(0);
                let exhaustion = growth_since.and_then(|(over, prev)| {
                    let before = prev.get(&key).copied().unwrap_or(0);
                    let growth = rate(ports_in_use.saturating_sub(before), over);
                    exhaustion_s(u64::from(range).saturating_sub(ports_in_use), growth)
                });
                DestinationRow {
                    netns,
                    laddr,
                    raddr,
                    rport,
                    ports_in_use,
                    shared_ports: shared.get(&key).copied().unwrap_or(0),
                    range,
                    use_pct: use_pct(ports_in_use, range),
                    connect_rate: rate(connects, over),
                    exhaustion_s: exhaustion,
                    failed_connects: self.failed.get(&(raddr, rport)).copied().unwrap_or(0),
                }
            })
            .collect();
        self.connects.clear();
        self.last_in_use = Some((now, in_use));
        rows
    }
}

/// The sockets of a dump split into server side (by listener) and client side.
struct Sides {
    listeners: Listeners,
    /// Client sockets holding a port, per destination.
    in_use: HashMap<DestKey, u64>,
    /// Of those, the ones whose local address and port another destination uses too.
    shared: HashMap<DestKey, u64>,
    /// Client sockets holding a port, per local address and port.
    local_uses: HashMap<LocalKey, u32>,
}

/// Which side of a dump one socket counts on.
enum Side {
    /// Accepted by listener `i` (counted if live).
    Server(usize),
    /// A client end holding a port: its destination and its local end.
    Client(DestKey, LocalKey),
    /// A listener, a socket the filter leaves out, or a client end holding no port.
    Neither,
}

impl Sides {
    /// A socket whose local end is a listener's (see [`Listeners::owner`]) is server side,
    /// counted if live; any other is client side, counted if it holds a port. Only sockets
    /// that `passes` are counted, but every listener decides which side a socket is on.
    fn of(dumps: &[NetnsDump], passes: &dyn Fn(&TcpSocket) -> bool) -> Self {
        let sockets = || dumps.iter().flat_map(|d| &d.sockets);
        let mut listeners = Listeners::default();
        for socket in sockets() {
            if socket.state == tcp_state::LISTEN {
                listeners.add(socket, passes(socket));
            }
        }
        let mut in_use: HashMap<DestKey, u64> = HashMap::new();
        let mut local_uses: HashMap<LocalKey, u32> = HashMap::new();
        let mut any_shared = false;
        for socket in sockets() {
            match Self::side(&listeners, socket, passes) {
                Side::Server(i) if is_live(socket.state) => {
                    listeners.live(i, socket.conn.remote.ip());
                }
                Side::Client(destination, local) => {
                    *in_use.entry(destination).or_default() += 1;
                    let uses = local_uses.entry(local).or_default();
                    *uses += 1;
                    any_shared |= *uses > 1;
                }
                Side::Server(_) | Side::Neither => {}
            }
        }
        // A second walk only when some local port serves several destinations: the
        // common case pays nothing for it.
        let mut shared: HashMap<DestKey, u64> = HashMap::new();
        if any_shared {
            for socket in sockets() {
                if let Side::Client(destination, local) = Self::side(&listeners, socket, passes)
                    && local_uses.get(&local).is_some_and(|&uses| uses > 1)
                {
                    *shared.entry(destination).or_default() += 1;
                }
            }
        }
        Self { listeners, in_use, shared, local_uses }
    }

    fn side(
        listeners: &Listeners,
        socket: &TcpSocket,
        passes: &dyn Fn(&TcpSocket) -> bool,
    ) -> Side {
        let c = &socket.conn;
        if socket.state == tcp_state::LISTEN || !passes(socket) {
            Side::Neither
        } else if let Some(i) = listeners.owner(c.netns, c.local.ip(), c.local.port()) {
            Side::Server(i)
        } else if holds_port(socket.state) {
            Side::Client(
                (c.netns, c.local.ip(), c.remote.ip(), c.remote.port()),
                (c.netns, c.local.ip(), c.local.port()),
            )
        } else {
            Side::Neither
        }
    }
}

/// One row per dumped namespace, with its range (the kernel default, and a line in
/// `skipped`, when it could not be read) and its shared local ports.
fn namespace_rows(
    dumps: &[NetnsDump],
    local_uses: &HashMap<LocalKey, u32>,
    skipped: &mut Vec<String>,
) -> Vec<NetnsRow> {
    let mut rows: Vec<NetnsRow> = dumps
        .iter()
        .map(|d| {
            let range = d.range.clone().unwrap_or_else(|why| {
                skipped.push(format!(
                    "netns {}: ephemeral range unknown ({why}); assuming {}-{}",
                    d.netns, DEFAULT_RANGE.0, DEFAULT_RANGE.1
                ));
                EphemeralRange { low: DEFAULT_RANGE.0, high: DEFAULT_RANGE.1, reserved: vec![] }
            });
            NetnsRow {
                netns: d.netns,
                range_low: range.low,
                range_high: range.high,
                range: range.size(),
                shared_local_ports: 0,
            }
        })
        .collect();
    let index: HashMap<u32, usize> = rows.iter().enumerate().map(|(i, r)| (r.netns, i)).collect();
    for &(netns, ..) in local_uses.iter().filter(|&(_, &n)| n > 1).map(|(key, _)| key) {
        if let Some(&i) = index.get(&netns) {
            rows[i].shared_local_ports += 1;
        }
    }
    rows
}

/// Keeps the first `n` rows in `cmp` order (all when `n` is 0), sorted, without sorting
/// the rest.
fn top_by<T>(rows: &mut Vec<T>, n: usize, cmp: impl Fn(&T, &T) -> Ordering) {
    if n > 0 && rows.len() > n {
        rows.select_nth_unstable_by(n - 1, &cmp);
        rows.truncate(n);
    }
    rows.sort_unstable_by(cmp);
}

/// The listeners of one dump, as they are gathered.
#[derive(Default)]
struct Listeners {
    rows: Vec<Listener>,
    index: HashMap<LocalKey, usize>,
    /// The first listener per (address, port) in any namespace: for events without a
    /// namespace id.
    any_netns: HashMap<(IpAddr, u16), usize>,
    ports: PortSet,
}

struct Listener {
    key: LocalKey,
    inodes: Vec<u32>,
    live: u64,
    per_remote: HashMap<IpAddr, u64>,
    /// Whether a socket of the group passes the filter itself; a listener that does not
    /// has a row only for the connections that do (under `--rport` or `--addr`, say).
    passes: bool,
}

impl Listeners {
    fn add(&mut self, socket: &TcpSocket, passes: bool) {
        let (ip, port) = (socket.conn.local.ip(), socket.conn.local.port());
        let key = (socket.conn.netns, ip, port);
        let i = *self.index.entry(key).or_insert_with(|| {
            self.rows.push(Listener {
                key,
                inodes: Vec::new(),
                live: 0,
                per_remote: HashMap::new(),
                passes: false,
            });
            self.rows.len() - 1
        });
        self.any_netns.entry((ip, port)).or_insert(i);
        self.rows[i].inodes.push(socket.inode);
        self.rows[i].passes |= passes;
        self.ports.insert(port);
    }

    /// The listener a connection with this local end was accepted from: the one on its
    /// exact address, else the IPv4 wildcard, else the IPv6 one (dual-stack). `netns` 0
    /// (no namespace ids) matches any namespace.
    fn owner(&self, netns: u32, ip: IpAddr, port: u16) -> Option<usize> {
        if !self.ports.contains(port) {
            return None;
        }
        let lookup = |ip: IpAddr| {
            if netns == 0 {
                self.any_netns.get(&(ip, port)).copied()
            } else {
                self.index.get(&(netns, ip, port)).copied()
            }
        };
        let any_v4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let any_v6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        lookup(ip).or_else(|| match ip {
            IpAddr::V4(_) => lookup(any_v4).or_else(|| lookup(any_v6)),
            IpAddr::V6(_) => lookup(any_v6),
        })
    }

    fn live(&mut self, i: usize, remote: IpAddr) {
        let row = &mut self.rows[i];
        row.live += 1;
        *row.per_remote.entry(remote).or_default() += 1;
    }
}

/// A set of port numbers: 8 KiB, one bit a port.
#[derive(Clone, Debug)]
struct PortSet(Box<[u64; 1024]>);

impl Default for PortSet {
    fn default() -> Self {
        Self(Box::new([0; 1024]))
    }
}

impl PortSet {
    fn insert(&mut self, port: u16) {
        self.0[usize::from(port / 64)] |= 1 << (port % 64);
    }

    fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }
}

/// Listening socket inode → pids holding it, looked up in `/proc/*/fd` only when a
/// listener appears that was not there at the last scan, or the scan is old.
///
/// A scan runs in a thread of its own, and a refresh waits for it only
/// [`PID_SCAN_WAIT`]: on a box with 100,000 open sockets it takes half a second, which
/// would hold up the first snapshot (and every refresh that rescans). Its pids then show
/// from the next refresh on.
#[derive(Debug, Default)]
struct PidCache {
    scanned_inodes: HashSet<u32>,
    scanned_at: Option<Instant>,
    by_inode: HashMap<u32, Vec<u32>>,
    /// The scan in progress.
    running: Option<mpsc::Receiver<PidScan>>,
}

/// A scan's result: pids per socket inode, and whether it saw every process.
type PidScan = (HashMap<u32, Vec<u32>>, bool);

impl PidCache {
    /// Takes in a finished scan; starts one if needed and waits up to `wait` for it. A
    /// note if a scan ran out of time.
    fn refresh(&mut self, inodes: HashSet<u32>, now: Instant, wait: Duration) -> Option<String> {
        let mut note = self.collect(Duration::ZERO);
        let age = self.scanned_at.map(|at| now.saturating_duration_since(at));
        let known = inodes.is_subset(&self.scanned_inodes);
        if self.running.is_some()
            || age.is_some_and(|age| age < PIDS_MIN_AGE || (known && age < PIDS_MAX_AGE))
        {
            return note;
        }
        let (found, running) = mpsc::channel();
        let scan = inodes.clone();
        let spawned = thread::Builder::new().name("pid-scan".into()).spawn(move || {
            let started = Instant::now();
            let result = scan_socket_fds(&scan, PID_SCAN_BUDGET);
            log::debug!("listener pids: /proc/*/fd scanned in {:?}", started.elapsed());
            let _ = found.send(result);
        });
        if let Err(e) = spawned {
            log::warn!("cannot start a thread to find the listeners' pids: {e}");
            return note;
        }
        self.running = Some(running);
        self.scanned_inodes = inodes;
        self.scanned_at = Some(now);
        note = note.or(self.collect(wait));
        note
    }

    /// Takes the running scan's result if it comes within `wait`.
    fn collect(&mut self, wait: Duration) -> Option<String> {
        let (by_inode, complete) = match self.running.as_ref()?.recv_timeout(wait) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => return None,
            // The thread died (it cannot panic short of a bug): scan again next time.
            Err(mpsc::RecvTimeoutError::Disconnected) => (HashMap::new(), true),
        };
        self.running = None;
        self.by_inode = by_inode;
        (!complete).then(|| {
            format!(
                "listener pids: /proc/*/fd scan stopped after {PID_SCAN_BUDGET:?}; some are missing"
            )
        })
    }
}

/// The pids whose open files include a socket in `inodes` (as `ss -p` finds them), and
/// whether every process was scanned within `budget`. Processes that exit meanwhile, or
/// that we may not look into, are passed over.
fn scan_socket_fds(inodes: &HashSet<u32>, budget: Duration) -> (HashMap<u32, Vec<u32>>, bool) {
    let mut found: HashMap<u32, Vec<u32>> = HashMap::new();
    if inodes.is_empty() {
        return (found, true);
    }
    let started = Instant::now();
    let Ok(procs) = fs::read_dir("/proc") else {
        return (found, false);
    };
    for entry in procs.flatten() {
        if started.elapsed() > budget {
            return (found, false);
        }
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // Threads share the process's file table (a thread that unshared its files is rare
        // enough to leave out).
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = socket_inode(target.as_os_str().as_bytes())
                && inodes.contains(&inode)
            {
                let pids = found.entry(inode).or_default();
                if pids.last() != Some(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    (found, true)
}

/// The inode of a `/proc/PID/fd/N` link to a socket: `socket:[12345]`.
fn socket_inode(link: &[u8]) -> Option<u32> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, connect, listen,
        setsockopt, socket, sockopt,
    };

    use super::*;
    use crate::conn::Conn;
    use crate::seed::own_netns;

    // ---- pure ----

    #[test]
    fn range_minus_reserved_ports() {
        let r = EphemeralRange::parse("32768\t60999\n", "\n").unwrap();
        assert_eq!((r.low, r.high, r.size()), (32_768, 60_999, 28_232));
        let r = EphemeralRange::parse("8000 9999", "8080,9000-9010\n").unwrap();
        assert_eq!(r.reserved, vec![8080..=8080, 9000..=9010]);
        assert_eq!(r.size(), 2000 - 1 - 11);
        // Outside the range, overlapping, adjacent, unsorted.
        let r = EphemeralRange::parse(
            "40000 40099",
            "1-39999,40098-41000,40010-40020,40015-40025,40026",
        )
        .unwrap();
        assert_eq!(r.reserved, vec![40010..=40026, 40098..=40099]);
        assert_eq!(r.size(), 100 - 17 - 2);
        assert_eq!(EphemeralRange::parse("5 5", "5").unwrap().size(), 0);
        assert_eq!(EphemeralRange::parse("1 65535", "").unwrap().size(), 65_535);
        for (range, reserved) in
            [("60999 32768", ""), ("1", ""), ("1 2 3", ""), ("a 5", ""), ("1 9", "3-x")]
        {
            assert!(EphemeralRange::parse(range, reserved).is_err(), "{range:?} {reserved:?}");
        }
    }

    #[test]
    #[expect(clippy::float_cmp, reason = "exact results of exact inputs")]
    fn percentages_rates_and_exhaustion() {
        assert_eq!(use_pct(25, 100), 25.0);
        assert_eq!(use_pct(95, 95), 100.0);
        assert_eq!(use_pct(0, 0), 0.0);
        assert_eq!(use_pct(1, 0), 100.0);
        assert_eq!(rate(10, Duration::from_secs(4)), 2.5);
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(exhaustion_s(100, 4.0), Some(25.0));
        assert_eq!(exhaustion_s(0, 4.0), Some(0.0));
        assert_eq!(exhaustion_s(100, 0.0), None);
        assert!(holds_port(tcp_state::TIME_WAIT) && holds_port(tcp_state::SYN_SENT));
        assert!(!holds_port(tcp_state::LISTEN) && !holds_port(tcp_state::SYN_RECV));
        assert!(!holds_port(200));
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[4026532]"), Some(4_026_532));
        assert_eq!(socket_inode(b"pipe:[12]"), None);
        assert_eq!(socket_inode(b"socket:[12"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
    }

    #[test]
    fn pid_scans_are_paced() {
        // Long enough for every scan to finish, so each call sees the one before done.
        const WAIT: Duration = Duration::from_secs(30);
        let mut cache = PidCache::default();
        let t0 = Instant::now();
        let scanned_at = |cache: &PidCache| cache.scanned_at.unwrap().duration_since(t0);
        let inodes = |set: &[u32]| set.iter().copied().collect::<HashSet<u32>>();
        for (at, set, last_scan) in [
            (0, &[1][..], 0),
            (1, &[1], 0),
            // A new listener waits for the minimum age...
            (2, &[1, 2], 0),
            (6, &[1, 2], 6),
            // ... a known one for the maximum.
            (20, &[2], 6),
            (37, &[2], 37),
        ] {
            let note = cache.refresh(inodes(set), t0 + Duration::from_secs(at), WAIT);
            assert_eq!(note, None);
            assert_eq!(scanned_at(&cache), Duration::from_secs(last_scan), "at {at} s");
        }
    }

    #[test]
    fn top_keeps_the_best_sorted() {
        let mut rows = vec![5, 1, 9, 3, 7];
        top_by(&mut rows, 3, |a, b| b.cmp(a));
        assert_eq!(rows, [9, 7, 5]);
        let mut rows = vec![5, 1, 9];
        top_by(&mut rows, 0, Ord::cmp);
        assert_eq!(rows, [1, 5, 9]);
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn sock(netns: u32, state: u8, local: &str, remote: &str, inode: u32) -> TcpSocket {
        TcpSocket { conn: Conn::new(netns, sa(local), sa(remote)), state, inode, cgroup: 0 }
    }

    fn event(kind: EventKind, netns: u32, local: &str, remote: &str) -> Event {
        Event {
            kind,
            conn: Conn::new(netns, sa(local), sa(remote)),
            sock: 1,
            ts_ns: 0,
            pid: 1,
            tid: 1,
            comm: "t".into(),
        }
    }

    fn range(low: u16, high: u16) -> EphemeralRange {
        EphemeralRange { low, high, reserved: vec![] }
    }

    #[test]
    fn rows_count_only_what_passes_the_filter() {
        use tcp_state::{ESTABLISHED, LISTEN};
        let mut sockets = vec![
            sock(7, LISTEN, "0.0.0.0:8080", "0.0.0.0:0", 11),
            sock(7, LISTEN, "0.0.0.0:9090", "0.0.0.0:0", 13),
            sock(7, ESTABLISHED, "10.0.0.1:8080", "10.0.0.2:40000", 0),
            sock(7, ESTABLISHED, "10.0.0.1:8080", "10.0.0.3:40000", 0),
            sock(7, ESTABLISHED, "10.0.0.1:9090", "10.0.0.4:40000", 0),
            sock(7, ESTABLISHED, "10.0.0.1:50000", "10.0.0.9:443", 0),
            sock(7, ESTABLISHED, "10.0.0.1:50001", "10.0.0.9:80", 0),
        ];
        sockets.sort_unstable_by_key(|s| s.conn);
        let dumps = [NetnsDump { netns: 7, sockets, range: Ok(range(50_000, 50_099)) }];
        let rows = |filter: FilterArgs| {
            let passes =
                |s: &TcpSocket| filter.matches_socket(s, &std::collections::HashSet::new());
            let c = Tracker::default().tally(&dumps, &passes, &HashMap::new(), Instant::now(), 0);
            let listeners: Vec<(u16, u64)> = c.listeners.iter().map(|l| (l.port, l.live)).collect();
            let destinations: Vec<(u16, u64)> =
                c.destinations.iter().map(|d| (d.rport, d.ports_in_use)).collect();
            (listeners, destinations)
        };
        let everything = rows(FilterArgs::default());
        assert_eq!(everything.0, [(8080, 2), (9090, 1)]);
        assert_eq!(everything.1.len(), 2);
        let lport = rows(FilterArgs { lport: vec![8080], ..FilterArgs::default() });
        assert_eq!(lport, (vec![(8080, 2)], vec![]), "the client side uses other local ports");
        // A listener has no remote end: under --addr it shows for its matching connections
        // only, and the other one not at all; an accepted connection never becomes a client.
        let addr =
            rows(FilterArgs { addr: vec!["10.0.0.3".parse().unwrap()], ..FilterArgs::default() });
        assert_eq!(addr, (vec![(8080, 1)], vec![]));
        let rport = rows(FilterArgs { rport: vec![443], ..FilterArgs::default() });
        assert_eq!(rport, (vec![], vec![(443, 1)]));
        let other_netns = rows(FilterArgs { netns: vec![8], ..FilterArgs::default() });
        assert_eq!(other_netns, (vec![], vec![]));
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "one scenario: its sockets, then every row")]
    fn tally_splits_server_and_client_sides() {
        use tcp_state::{
            CLOSE_WAIT, ESTABLISHED, FIN_WAIT2, LAST_ACK, LISTEN, SYN_SENT, TIME_WAIT,
        };
        const NS: u32 = 7;
        let mut sockets = vec![
            // A wildcard SO_REUSEPORT pair, a dual-stack listener, and one on an address.
            sock(NS, LISTEN, "0.0.0.0:8080", "0.0.0.0:0", 11),
            sock(NS, LISTEN, "0.0.0.0:8080", "0.0.0.0:0", 12),
            sock(NS, LISTEN, "[::]:9090", "[::]:0", 13),
            sock(NS, LISTEN, "10.0.0.1:7070", "0.0.0.0:0", 14),
            // Server side of 8080: 3 from .2, 1 from .3 live; TIME_WAIT and LAST_ACK are not.
            sock(NS, ESTABLISHED, "10.0.0.1:8080", "10.0.0.2:40000", 0),
            sock(NS, ESTABLISHED, "10.0.0.1:8080", "10.0.0.2:40001", 0),
            sock(NS, CLOSE_WAIT, "10.0.0.1:8080", "10.0.0.2:40002", 0),
            sock(NS, ESTABLISHED, "10.0.0.1:8080", "10.0.0.3:40000", 0),
            sock(NS, TIME_WAIT, "10.0.0.1:8080", "10.0.0.3:40001", 0),
            sock(NS, LAST_ACK, "10.0.0.1:8080", "10.0.0.3:40002", 0),
            // An IPv4 client of the dual-stack listener, and an IPv6 one.
            sock(NS, ESTABLISHED, "10.0.0.1:9090", "10.0.0.4:1", 0),
            sock(NS, ESTABLISHED, "[fd00::1]:9090", "[fd00::2]:1", 0),
            // Client side: to 10.0.0.9:443, 4 ports in use; one also used towards :80.
            sock(NS, ESTABLISHED, "10.0.0.1:50000", "10.0.0.9:443", 0),
            sock(NS, SYN_SENT, "10.0.0.1:50001", "10.0.0.9:443", 0),
            sock(NS, TIME_WAIT, "10.0.0.1:50002", "10.0.0.9:443", 0),
            sock(NS, FIN_WAIT2, "10.0.0.1:50003", "10.0.0.9:443", 0),
            sock(NS, ESTABLISHED, "10.0.0.1:50000", "10.0.0.9:80", 0),
            // 7070 listens on 10.0.0.1 only: a connection from another local address with
            // that port number is a client.
            sock(NS, ESTABLISHED, "10.0.0.5:7070", "10.0.0.9:80", 0),
        ];
        sockets.sort_unstable_by_key(|s| s.conn);
        let other = vec![sock(8, ESTABLISHED, "10.0.0.1:50000", "10.0.0.9:443", 0)];
        let dumps = [
            NetnsDump { netns: NS, sockets, range: Ok(range(50_000, 50_099)) },
            NetnsDump { netns: 8, sockets: other, range: Err("gone".into()) },
        ];
        let mut t = Tracker::default();
        let t0 = t.counting_since;
        for _ in 0..6 {
            t.on_event(&event(EventKind::Accept, NS, "10.0.0.1:8080", "10.0.0.2:1"));
        }
        // Without namespace ids: resolved through the address and port.
        t.on_event(&event(EventKind::Accept, 0, "10.0.0.1:9090", "10.0.0.4:1"));
        t.on_event(&event(EventKind::Close, NS, "10.0.0.1:8080", "10.0.0.3:40001"));
        t.on_event(&event(EventKind::Established, NS, "10.0.0.1:8080", "10.0.0.2:1"));
        for _ in 0..4 {
            t.on_event(&event(EventKind::Connect, NS, "10.0.0.1:50000", "10.0.0.9:443"));
        }
        let pids = HashMap::from([(11, vec![100]), (12, vec![100, 101]), (14, vec![102])]);
        let c = t.tally(&dumps, &|_| true, &pids, t0 + Duration::from_secs(2), 0);

        let by_port = |port| c.listeners.iter().find(|l| l.port == port).unwrap();
        let l = by_port(8080);
        assert_eq!(l.addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!((l.live, l.remote_addrs, l.max_per_remote, l.peak_live), (4, 2, 3, 4));
        assert_eq!((l.accept_rate, l.close_rate), (3.0, 0.5));
        assert_eq!((l.reuseport_sockets, l.pids.as_slice()), (2, &[100, 101][..]));
        let l = by_port(9090);
        assert_eq!((l.live, l.remote_addrs, l.accept_rate, l.reuseport_sockets), (2, 2, 0.5, 1));
        let l = by_port(7070);
        assert_eq!((l.live, l.pids.as_slice()), (0, &[102][..]));
        assert_eq!(c.listeners[0].port, 8080, "most live first");

        assert_eq!(c.destinations.len(), 4);
        let d = &c.destinations[0];
        assert_eq!((d.netns, d.rport, d.ports_in_use, d.range), (NS, 443, 4, 100));
        assert_eq!((d.use_pct, d.connect_rate, d.exhaustion_s), (4.0, 2.0, None));
        let d = &c.destinations[3];
        assert_eq!((d.netns, d.ports_in_use, d.range), (8, 1, 28_232), "default range");
        assert_eq!(c.namespaces[0].shared_local_ports, 1);
        assert_eq!(c.shared_local_ports, 1);
        let shared: Vec<(u32, String, u16, u64)> = c
            .destinations
            .iter()
            .map(|d| (d.netns, d.laddr.to_string(), d.rport, d.shared_ports))
            .collect();
        assert!(
            shared
                .iter()
                .all(|(ns, laddr, _, n)| *n == u64::from(*ns == NS && laddr == "10.0.0.1")),
            "10.0.0.1:50000 serves :443 and :80 in {NS} only: {shared:?}"
        );
        assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);

        // A second refresh 2 s later: 8080 down to 1 live (peak stays), 443 up by 12 ports.
        let mut sockets: Vec<TcpSocket> = dumps[0]
            .sockets
            .iter()
            .filter(|s| {
                s.state == LISTEN || s.conn.remote.ip() != "10.0.0.2".parse::<IpAddr>().unwrap()
            })
            .copied()
            .collect();
        sockets.extend(
            (0..12).map(|i| {
                sock(NS, TIME_WAIT, &format!("10.0.0.1:{}", 50_010 + i), "10.0.0.9:443", 0)
            }),
        );
        let dumps = [NetnsDump { netns: NS, sockets, range: Ok(range(50_000, 50_099)) }];
        let c = t.tally(&dumps, &|_| true, &pids, t0 + Duration::from_secs(4), 0);
        let l = c.listeners.iter().find(|l| l.port == 8080).unwrap();
        assert_eq!(
            (l.port, l.live, l.peak_live, l.accept_rate, l.close_rate),
            (8080, 1, 4, 0.0, 0.0)
        );
        let d = &c.destinations[0];
        assert_eq!((d.rport, d.ports_in_use, d.connect_rate), (443, 16, 0.0));
        // 12 more ports in 2 s: 6 a second, 84 left.
        assert_eq!(d.exhaustion_s, Some(14.0));

        // Top 1 of each; no growth since, no estimate.
        let c = t.tally(&dumps, &|_| true, &pids, t0 + Duration::from_secs(6), 1);
        assert_eq!((c.listeners.len(), c.destinations.len()), (1, 1));
        assert_eq!((c.listeners[0].port, c.listeners[0].live), (9090, 2));
        assert_eq!((c.destinations[0].rport, c.destinations[0].exhaustion_s), (443, None));
    }

    // ---- live: real sockets, each test in a network namespace of its own ----

    /// Runs `body` in a thread that has a new network namespace with `lo` up; the
    /// namespace (and every socket in it) goes when the thread ends.
    fn in_new_netns<T: Send + 'static>(body: impl FnOnce(u32) -> T + Send + 'static) -> T {
        let worker = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET)");
            crate::seed::tests::loopback_up().expect("bringing lo up");
            body(own_netns().unwrap())
        });
        worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    fn family(addr: &SocketAddr) -> AddressFamily {
        if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
    }

    fn reuseport_listener(addr: SocketAddr) -> TcpListener {
        let fd = socket(family(&addr), SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
        bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).unwrap();
        listen(&fd, Backlog::new(128).unwrap()).unwrap();
        TcpListener::from(fd)
    }

    /// A connection from `src` (any port) to `dst`.
    fn connect_from(src: IpAddr, dst: SocketAddr) -> TcpStream {
        let fd = socket(family(&dst), SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        bind(fd.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(src, 0))).unwrap();
        connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)).unwrap();
        TcpStream::from(fd)
    }

    /// `n` connections to `listener`, each accepted at once: (client, server) pairs.
    fn connect_n(listener: &TcpListener, n: usize) -> Vec<(TcpStream, TcpStream)> {
        let target = listener.local_addr().unwrap();
        (0..n)
            .map(|_| {
                let client = TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap();
                (client, listener.accept().unwrap().0)
            })
            .collect()
    }

    fn write_sysctl(name: &str, value: &str) {
        let path = format!("/proc/sys/net/ipv4/{name}");
        fs::write(&path, value).unwrap_or_else(|e| panic!("writing {value:?} to {path}: {e}"));
    }

    /// Sockets in `state` in the calling thread's namespace, waited for (bounded).
    fn wait_for_state(netns: u32, state: u8, want: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = seed::dump_sockets(netns, &StateFlags::all())
                .unwrap()
                .iter()
                .filter(|s| s.state == state)
                .count();
            if n >= want || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn reuseport_listeners_and_skewed_remotes() {
        let ((netns, got), ours) = in_new_netns(|netns| {
            let addr = sa("127.71.0.1:22010");
            let listeners = [reuseport_listener(addr), reuseport_listener(addr)];
            // 6, 3 and 1 connections from three source addresses; not accepted (queued
            // connections are established, and live, all the same).
            let mut clients = Vec::new();
            for (src, n) in [("127.71.1.1", 6), ("127.71.1.2", 3), ("127.71.1.3", 1)] {
                for _ in 0..n {
                    clients.push(connect_from(src.parse().unwrap(), addr));
                }
            }
            wait_for_state(netns, tcp_state::ESTABLISHED, 20);
            let mut tracker = Tracker::default();
            let mut got = tracker.refresh(0).unwrap();
            // The pid scan runs on in the background on a box with many open files.
            let deadline = Instant::now() + Duration::from_secs(10);
            while got.listeners.iter().all(|l| l.pids.is_empty()) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
                got = tracker.refresh_now(0).unwrap();
            }
            drop((listeners, clients));
            ((netns, got), std::process::id())
        });
        let rows: Vec<_> = got.listeners.iter().filter(|l| l.netns == netns).collect();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let l = rows[0];
        assert_eq!((l.addr, l.port), ("127.71.0.1".parse::<IpAddr>().unwrap(), 22010));
        assert_eq!((l.live, l.remote_addrs, l.max_per_remote, l.peak_live), (10, 3, 6, 10));
        assert_eq!(l.reuseport_sockets, 2);
        assert!(l.pids.contains(&ours), "{:?} lacks {ours}", l.pids);
        // The client ends: 3 destinations (one per source address), none shared.
        let dests: Vec<_> = got.destinations.iter().filter(|d| d.netns == netns).collect();
        let mut per_source: Vec<u64> = dests.iter().map(|d| d.ports_in_use).collect();
        per_source.sort_unstable();
        assert_eq!(per_source, [1, 3, 6]);
        assert!(dests.iter().all(|d| d.range == 28_232 && d.rport == 22010));
    }

    #[test]
    #[expect(clippy::float_cmp, reason = "exact results of exact inputs")]
    fn client_ports_in_use_count_time_wait_against_the_namespace_range() {
        const K: usize = 60;
        const CLOSED: usize = 20;
        const TO_B: usize = 50;
        let (netns, got, range_a, shared_expected, laddr) = in_new_netns(|netns| {
            write_sysctl("ip_local_port_range", "40000 40099");
            write_sysctl("ip_local_reserved_ports", "40000,40050-40053");
            let range = EphemeralRange::read().unwrap();
            let a = TcpListener::bind("127.72.0.1:22030").unwrap();
            let b = TcpListener::bind("127.72.0.1:22031").unwrap();
            let mut to_a = connect_n(&a, K);
            let laddr = to_a[0].0.local_addr().unwrap().ip();
            let a_ports: HashSet<u16> =
                to_a.iter().map(|(c, _)| c.local_addr().unwrap().port()).collect();
            // The client closes first, then the server: the client end sits in TIME_WAIT.
            for (client, mut server) in to_a.drain(..CLOSED) {
                drop(client);
                server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                assert_eq!(server.read(&mut [0u8; 1]).unwrap(), 0, "expected EOF");
            }
            assert_eq!(wait_for_state(netns, tcp_state::TIME_WAIT, CLOSED), CLOSED);
            // A second destination: the kernel gives it local ports that A uses too (110
            // connections, 95 ports).
            let to_b = connect_n(&b, TO_B);
            let shared = to_b
                .iter()
                .filter(|(c, _)| a_ports.contains(&c.local_addr().unwrap().port()))
                .count();
            let got = Tracker::default().refresh(0).unwrap();
            drop((to_a, to_b));
            (netns, got, range, shared, laddr)
        });
        assert_eq!(range_a.size(), 95);
        let ns = got.namespaces.iter().find(|r| r.netns == netns).unwrap();
        assert_eq!((ns.range_low, ns.range_high, ns.range), (40_000, 40_099, 95));
        let dest = |rport| {
            got.destinations
                .iter()
                .find(|d| d.netns == netns && d.rport == rport)
                .unwrap_or_else(|| panic!("no row for :{rport} in {:?}", got.destinations))
        };
        let a = dest(22030);
        assert_eq!((a.laddr, a.raddr), (laddr, "127.72.0.1".parse::<IpAddr>().unwrap()));
        assert_eq!((a.ports_in_use, a.range), (K as u64, 95), "TIME_WAIT ends count");
        assert_eq!(a.use_pct, use_pct(K as u64, 95));
        assert!((a.use_pct - 63.157_894).abs() < 1e-5);
        let b = dest(22031);
        assert_eq!((b.ports_in_use, b.use_pct), (TO_B as u64, use_pct(TO_B as u64, 95)));
        eprintln!(
            "to A: {} ports in use ({:.2}%), to B: {}; {shared_expected} local ports serve both",
            a.ports_in_use, a.use_pct, b.ports_in_use
        );
        assert!(shared_expected >= K + TO_B - 95, "{shared_expected}");
        assert_eq!(ns.shared_local_ports, shared_expected as u64);
        assert_eq!(
            (a.shared_ports, b.shared_ports),
            (shared_expected as u64, shared_expected as u64)
        );
        assert!(got.shared_local_ports >= ns.shared_local_ports);
        // The server ends are the listeners', not destinations.
        assert!(!got.destinations.iter().any(|d| d.netns == netns && d.laddr == a.raddr));
        let listener = got.listeners.iter().find(|l| l.netns == netns && l.port == 22030).unwrap();
        assert_eq!((listener.live, listener.remote_addrs), ((K - CLOSED) as u64, 1));
    }

    #[test]
    fn ipv6_destinations_and_dual_stack_listeners() {
        let (netns, got) = in_new_netns(|netns| {
            let v6 = TcpListener::bind("[::1]:22040").unwrap();
            let dual = TcpListener::bind("[::]:22041").unwrap();
            let mut keep: Vec<TcpStream> =
                (0..5).map(|_| TcpStream::connect(v6.local_addr().unwrap()).unwrap()).collect();
            let dual_port = dual.local_addr().unwrap().port();
            for src in ["127.74.0.1", "127.74.0.1", "127.74.0.2"] {
                keep.push(connect_from(
                    src.parse().unwrap(),
                    SocketAddr::new("127.74.0.9".parse().unwrap(), dual_port),
                ));
            }
            keep.push(connect_from(
                "::1".parse().unwrap(),
                SocketAddr::new("::1".parse().unwrap(), dual_port),
            ));
            wait_for_state(netns, tcp_state::ESTABLISHED, 18);
            let got = Tracker::default().refresh(0).unwrap();
            drop((keep, v6, dual));
            (netns, got)
        });
        let listener =
            |port| got.listeners.iter().find(|l| l.netns == netns && l.port == port).unwrap();
        let l = listener(22040);
        assert_eq!(
            (l.addr.to_string().as_str(), l.live, l.remote_addrs, l.max_per_remote),
            ("::1", 5, 1, 5)
        );
        let l = listener(22041);
        assert_eq!(
            (l.addr.to_string().as_str(), l.live, l.remote_addrs, l.max_per_remote),
            ("::", 4, 3, 2)
        );
        let d = got.destinations.iter().find(|d| d.netns == netns && d.rport == 22040).unwrap();
        let loopback = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!((d.laddr, d.raddr, d.ports_in_use, d.range), (loopback, loopback, 5, 28_232));
        let json = serde_json::to_value(d).unwrap();
        assert_eq!((json["laddr"].as_str(), json["raddr"].as_str()), (Some("::1"), Some("::1")));
        assert_eq!(json["exhaustion_s"], serde_json::Value::Null);
        let v4 = got.destinations.iter().filter(|d| d.netns == netns && d.rport == 22041).count();
        assert_eq!(v4, 3, "127.74.0.1, 127.74.0.2 and ::1 to the dual-stack port");
    }

    /// Refresh cost: `cargo test --release -p tcptrace --lib capacity::tests::refresh_cost
    /// -- --ignored --nocapture`. 10,000 sockets are 5,000 live loopback connections; the
    /// 100,000 are 8,000 live connections (16,000 sockets, under the 20,000 file limit) and
    /// 84,000 client ends in TIME_WAIT, spread over 6 destinations.
    #[test]
    #[ignore = "opens up to 100,000 sockets; a measurement, not a check"]
    fn refresh_cost() {
        for (live, time_waits) in [(5_000, 0), (8_000, 84_000)] {
            in_new_netns(move |netns| measure(netns, live, time_waits));
        }
    }

    fn measure(netns: u32, live: usize, time_waits: usize) {
        const DESTINATIONS: usize = 6;
        write_sysctl("ip_local_port_range", "30000 65000");
        // Else connect() recycles loopback TIME_WAIT ends once a destination's ports wrap.
        write_sysctl("tcp_tw_reuse", "0");
        let servers: Vec<TcpListener> = (0..DESTINATIONS as u16)
            .map(|i| TcpListener::bind(("127.75.0.1", 22050 + i)).unwrap())
            .collect();
        let targets: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr().unwrap()).collect();
        let deadline = Instant::now() + Duration::from_mins(2);
        let started = Instant::now();
        for i in 0..time_waits {
            assert!(Instant::now() < deadline, "creating TIME_WAIT sockets took too long");
            let c = TcpStream::connect(targets[i % DESTINATIONS]).unwrap();
            let s = servers[i % DESTINATIONS].accept().unwrap().0;
            drop(c);
            drop(s);
        }
        let pairs: Vec<(TcpStream, TcpStream)> = (0..live)
            .map(|i| {
                (
                    TcpStream::connect(targets[i % DESTINATIONS]).unwrap(),
                    servers[i % DESTINATIONS].accept().unwrap().0,
                )
            })
            .collect();
        let sockets = seed::dump_sockets(netns, &dumped_states()).unwrap().len();
        eprintln!("{sockets} sockets in the namespace (set up in {:?})", started.elapsed());
        let mut tracker = Tracker::default();
        let cold = Instant::now();
        let c = tracker.refresh(0).unwrap();
        let cold = cold.elapsed();
        let mut warm = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            tracker.refresh_now(20).unwrap();
            warm.push(t.elapsed());
        }
        warm.sort();
        let t = Instant::now();
        for _ in 0..5 {
            seed::dump_sockets(netns, &dumped_states()).unwrap();
        }
        let dump = t.elapsed() / 5;
        eprintln!(
            "refresh with {sockets} sockets: first (with the /proc fd scan) {cold:?}, then min {:?} median {:?}; the dump of this namespace alone {dump:?}; {} listeners, {} destinations ({} here), top use {:.1}%",
            warm[0],
            warm[2],
            c.listeners.len(),
            c.destinations.len(),
            c.destinations.iter().filter(|d| d.netns == netns).count(),
            c.destinations.first().map_or(0.0, |d| d.use_pct),
        );
        drop(pairs);
    }

    /// Holds `n` loopback connections (both ends) in a forked child, in the calling
    /// thread's network namespace: one process may hold only ~20,000 files, so a larger
    /// measurement needs several. The child listens on 127.80.`index`.1:23000, connects to
    /// itself `n` times, writes one byte on the returned pipe when done, and waits until it
    /// is killed or the other pipe closes (10 minutes at most, bounded).
    fn hold_in_child(index: u8, n: usize) -> (libc::pid_t, std::fs::File, std::fs::File) {
        use std::os::fd::FromRawFd as _;
        let (mut ready, mut release) = ([0; 2], [0; 2]);
        // SAFETY: pipe() fills the arrays we own.
        assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
        assert_eq!(unsafe { libc::pipe(release.as_mut_ptr()) }, 0);
        // Only async-signal-safe calls in the child: no allocation after the fork.
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 23000u16.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::new(127, 80, index, 1)).to_be() },
            sin_zero: [0; 8],
        };
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: the child runs only the libc calls below and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            unsafe {
                let sa = (&raw const addr).cast::<libc::sockaddr>();
                let listener = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                if listener < 0
                    || libc::bind(listener, sa, len) != 0
                    || libc::listen(listener, 4096) != 0
                {
                    libc::_exit(1);
                }
                for _ in 0..n {
                    let client = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                    if client < 0 || libc::connect(client, sa, len) != 0 {
                        libc::_exit(2);
                    }
                    if libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) < 0 {
                        libc::_exit(3);
                    }
                }
                libc::write(ready[1], [1u8].as_ptr().cast(), 1);
                let mut pfd = libc::pollfd { fd: release[0], events: libc::POLLIN, revents: 0 };
                libc::poll(&raw mut pfd, 1, 600_000);
                libc::_exit(0);
            }
        }
        // SAFETY: the parent owns its ends of the pipes from here; the child's are closed.
        unsafe {
            libc::close(ready[1]);
            libc::close(release[0]);
            (pid, std::fs::File::from_raw_fd(ready[0]), std::fs::File::from_raw_fd(release[1]))
        }
    }

    /// The median time of `runs` runs of `f`.
    fn median_time(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
        let mut times: Vec<Duration> = (0..runs).map(|_| f()).collect();
        times.sort();
        times[times.len() / 2]
    }

    /// Cost at scale with real sockets: `cargo test --release -p tcptrace --lib
    /// capacity::tests::scale_cost -- --ignored --nocapture`. 10 processes hold 9,000
    /// loopback connections each in a network namespace of this test's own: 180,000 live
    /// sockets. Times the capacity refresh, the sock_diag snapshot and the reconciliation.
    #[test]
    #[ignore = "holds 180,000 sockets in 10 processes; a measurement, not a check"]
    #[expect(clippy::cast_precision_loss, reason = "socket counts far below 2^52")]
    fn scale_cost() {
        const HOLDERS: u8 = 10;
        const EACH: usize = 9_000;
        in_new_netns(|netns| {
            let started = Instant::now();
            let holders: Vec<_> = (0..HOLDERS).map(|i| hold_in_child(i, EACH)).collect();
            for (pid, ready, _) in &holders {
                let mut byte = [0u8; 1];
                let got = (&*ready).read(&mut byte).unwrap_or(0);
                assert_eq!(got, 1, "holder {pid} failed to set up its connections");
            }
            let runs = 5;
            let dump = median_time(runs, || {
                let t = Instant::now();
                seed::dump_current_netns(netns).unwrap();
                t.elapsed()
            });
            let conns = seed::dump_current_netns(netns).unwrap();
            let sockets = conns.len();
            eprintln!(
                "{sockets} live sockets held by {HOLDERS} processes, set up in {:.1?}",
                started.elapsed()
            );
            let snapshot = median_time(runs, || {
                let t = Instant::now();
                seed::snapshot().unwrap();
                t.elapsed()
            });
            let mut tracker = Tracker::default();
            tracker.refresh_now(20).unwrap();
            let refresh = median_time(runs, || {
                let t = Instant::now();
                tracker.refresh_now(20).unwrap();
                t.elapsed()
            });
            let states = seed::dump_sockets(netns, &dumped_states()).unwrap();
            let t = Instant::now();
            let mut ledger = crate::ledger::Ledger::new();
            for &c in &conns {
                ledger.open(c);
            }
            let seed_ledger = t.elapsed();
            let dumped = std::collections::HashSet::from([netns]);
            let touched = std::collections::HashSet::new();
            let reconcile = median_time(runs, || {
                let t = Instant::now();
                let drift = crate::reconcile::reconcile(&mut ledger, &conns, &dumped, &touched);
                assert_eq!(drift.total(), 0);
                t.elapsed()
            });
            // What the reconciliation did before: a std HashSet of the kernel's connections.
            let set_before = median_time(runs, || {
                let t = Instant::now();
                let set: std::collections::HashSet<crate::conn::Conn> =
                    conns.iter().copied().collect();
                let stale = ledger.conns().filter(|c| !set.contains(c)).count();
                assert_eq!(stale, 0);
                t.elapsed()
            });
            let t = Instant::now();
            let dumps =
                [NetnsDump { netns, sockets: states, range: Ok(EphemeralRange::read().unwrap()) }];
            let tally = t.elapsed();
            let t = Instant::now();
            Tracker::default().tally(&dumps, &|_| true, &HashMap::new(), Instant::now(), 20);
            let tally = tally + t.elapsed();
            let per = |d: Duration| d.as_secs_f64() * 1e9 / sockets as f64;
            eprintln!(
                "medians of {runs}: dump of this namespace (live states) {dump:.1?} ({:.0} ns/socket); \
                 seed::snapshot of every namespace {snapshot:.1?}; capacity refresh {refresh:.1?} \
                 ({:.0} ns/socket), of which tally {tally:.1?}; ledger seed {seed_ledger:.1?}; \
                 reconcile {reconcile:.1?} (a std HashSet of the kernel's connections, as before: \
                 {set_before:.1?})",
                per(dump),
                per(refresh),
            );
            for (pid, _, _) in holders {
                // Each child inherited the others' pipe ends, so closing ours does not
                // end it: a signal to our own child, by its pid, does.
                // SAFETY: signalling and reaping a child this test forked.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
        });
    }
}
