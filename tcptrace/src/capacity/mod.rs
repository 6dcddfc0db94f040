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
//! increment each); a refresh, paced by its cost, walks every namespace once ([`dump`],
//! on the engine's walker thread) and [`Tracker::rows_of`] turns the walk and the counts
//! into rows ([`Tracker::refresh`] does both at once):
//! - `sides`: a dump split into server side (per listener) and client side;
//! - `rows`: the rows, with rates and growth, and the top-N cut;
//! - `range`: the ephemeral range of a namespace;
//! - `pids`: which processes hold each listener;
//! - `limits`: every limit that caps a listener, and the one that binds first.

mod limits;
mod pids;
mod range;
mod rows;
mod sides;
#[cfg(test)]
mod tests;

use hashbrown::{HashMap, HashSet, hash_map::Entry};
use std::cmp::Reverse;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use limits::LIMIT_COUNTERS;
pub use range::{DEFAULT_RANGE, EphemeralRange, RangeError};
pub use rows::{exhaustion_s, rate, use_pct};
pub use tcptrace_json::limits::{Headroom, LimitName, ListenerLimits, NetnsLimits};
pub use tcptrace_json::{DestinationRow, ListenerRow};

use self::{
    limits::{BoxReadings, NetnsReadings},
    pids::{PID_SCAN_WAIT, PidCache},
    rows::{namespace_rows, top_by},
    sides::{PortSet, Sides},
};
use crate::error::Chain;
use crate::event::{Event, EventKind};
use crate::filter::Filter;
use crate::sockdiag::{self, LiveConnections, Selection, StateFlags, TcpSocket, states, tcp_state};

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
    /// Every namespace that was dumped and holds a connection, by inode.
    pub namespaces: Vec<NetnsRow>,
    /// The kernel's caps in every namespace that holds a socket, by inode.
    pub limits: Vec<NetnsLimits>,
    /// Namespaces that could not be read, ranges that could not be read (the kernel
    /// default is assumed then), and an incomplete pid scan: one line each.
    pub skipped: Vec<String>,
    /// When the sock_diag walk these rows come from ended: a paced refresh hands out the
    /// same rows for several intervals, and a snapshot says how old they are.
    pub measured: Option<Instant>,
}

/// The sockets a capacity refresh dumps: listeners, and every state that holds a port.
#[must_use]
pub fn dumped_states() -> StateFlags {
    StateFlags::LISTEN | states::holding_a_port()
}

/// (network namespace, local address, local port).
type LocalKey = (u32, IpAddr, u16);
/// (network namespace, local address, remote address, remote port).
type DestKey = (u32, IpAddr, IpAddr, u16);
/// (network namespace, remote address, remote port).
type FailedKey = (u32, IpAddr, u16);

/// The most keys a table of event counts holds. Their keys come from what users on the box
/// do (a connect to a new destination, a listener in a new namespace), so each is capped:
/// past it, an event of a new key is counted in the overflow only (and said in the debug
/// log). Between two refreshes (when the rate tables empty) that takes 65,536 destinations
/// or listeners with events; a key is about 64 bytes, so a full table is 4 MiB.
pub const MAX_KEYS: usize = 65_536;

/// How long an endpoint's failed connects are kept after the last one, once no destination
/// row holds it: a user who makes connects fail to ever new destinations (a one-port range
/// in a namespace of their own will) cannot grow the table without bound.
pub const FAILED_KEEP: Duration = Duration::from_mins(10);

/// Failed connects to one endpoint.
#[derive(Clone, Copy, Debug, Default)]
struct Failures {
    count: u64,
    last: Option<Instant>,
}

impl Failures {
    fn add(&mut self) {
        self.count += 1;
        self.last = Some(Instant::now());
    }
}

/// One more event for `key`, unless the table is full and `key` new: then the overflow.
fn count<K: std::hash::Hash + Eq>(table: &mut HashMap<K, u64>, key: K, overflow: &mut u64) {
    let full = table.len() >= MAX_KEYS;
    match table.entry(key) {
        Entry::Occupied(mut e) => *e.get_mut() += 1,
        Entry::Vacant(_) if full => *overflow += 1,
        Entry::Vacant(e) => {
            e.insert(1);
        }
    }
}

/// Capacity state kept across refreshes by the watch loop.
#[derive(Debug)]
pub struct Tracker {
    accepts: HashMap<LocalKey, u64>,
    closes: HashMap<LocalKey, u64>,
    connects: HashMap<DestKey, u64>,
    /// `connect()`s that failed with `EADDRNOTAVAIL`, per namespace and remote endpoint,
    /// since start; an endpoint is forgotten [`FAILED_KEEP`] after its last failure once
    /// no destination row holds it.
    failed: HashMap<FailedKey, Failures>,
    /// Events whose key found its table full ([`MAX_KEYS`]): counted, not attributed.
    overflow: u64,
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
    /// What the last refresh that ran (cached rows aside) spent on what.
    last_cost: Option<RefreshCost>,
    /// The run's `--port`, `--pid`, ... filter: rows count only the sockets that pass it.
    filter: Filter,
    /// Each namespace's [`LIMIT_COUNTERS`] at the last refresh, for their rates.
    last_counters: HashMap<u32, Vec<Option<u64>>>,
}

/// A refresh may use at most 1 / `REFRESH_COST_RATIO` of a core: one that took 300 ms
/// is not repeated for 6 s. The dump also walks the established hash table's bucket
/// locks that connecting processes take: under a connection storm, dumping every second
/// cost the churn about a third of its rate, and 5 % of the time costs what the event
/// path alone does (BENCHMARKS.md).
pub const REFRESH_COST_RATIO: u32 = 20;
/// Spacing refreshes further apart than this is worth telling the user.
const SLOW_REFRESH: Duration = Duration::from_secs(2);

/// Where one refresh's time went: the kernel's part and ours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefreshCost {
    /// The sock_diag walk of every namespace, with each one's ephemeral range.
    pub dump: Duration,
    /// Turning the dump into rows: the listeners' processes (from the cache, or waiting for
    /// a scan it starts) and the tally.
    pub rows: Duration,
}

#[derive(Debug)]
struct LastRefresh {
    at: Instant,
    cost: Duration,
    top: usize,
    rows: Capacity,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new(Filter::default())
    }
}

/// One sock_diag walk of every namespace, with what decides which sockets count.
///
/// Taken by [`dump`] on any thread (it is `Send`: the engine walks off its loop) and turned
/// into rows by [`Tracker::rows_of`] on the thread that counts the events.
pub struct Dump {
    namespaces: Vec<NetnsDump>,
    skipped: Vec<String>,
    /// When the walk ended.
    at: Instant,
    /// How long the walk took.
    took: Duration,
    /// The run's filter, with what `--pid` processes held just before the walk.
    selection: Selection,
    /// The box-wide limits, read once per walk.
    on_box: BoxReadings,
}

impl Dump {
    fn passes(&self, socket: &TcpSocket) -> bool {
        self.selection.passes(socket)
    }
}

/// Walks every network namespace for the capacity rows: listeners and every port-holding
/// state, with the namespace's ephemeral range, and the sockets `filter` selects.
///
/// Blocking, and the cost of a refresh: the kernel's dump dominates, about 1.5 to 2 µs per
/// TCP socket on the box (see [`Tracker::refresh`]).
pub fn dump(filter: &Filter) -> Result<Dump, sockdiag::Error> {
    let started = Instant::now();
    // Taken before the dump, as for the ledger's seed.
    let selection = Selection::now(filter);
    let found = sockdiag::in_every_netns(|netns| {
        let sockets = sockdiag::dump_with_memory(netns, &dumped_states())?;
        // The range matters only where a connection is: reading /proc/sys/net in each of
        // thousands of namespaces is slow (each leaves an entry in the kernel's lookup
        // cache that every such read compares against), so empty ones are not asked.
        let range = sockets
            .iter()
            .any(|s| s.state != tcp_state::LISTEN)
            .then(|| EphemeralRange::read().map_err(|e| Chain(&e).to_string()));
        // Only where a socket is, for the same reason.
        let readings = (!sockets.is_empty()).then(NetnsReadings::read);
        Ok(NetnsDump { netns, sockets, range, readings })
    })?;
    let on_box = BoxReadings::read();
    let at = Instant::now();
    let took = at.saturating_duration_since(started);
    let namespaces: Vec<NetnsDump> = found.results.into_iter().map(|(_, dump)| dump).collect();
    log::debug!(
        "capacity dump: {} sockets in {took:?}",
        namespaces.iter().map(|d| d.sockets.len()).sum::<usize>(),
    );
    Ok(Dump { namespaces, skipped: found.skipped, at, took, selection, on_box })
}

/// One namespace's part of a refresh.
#[derive(Debug)]
struct NetnsDump {
    netns: u32,
    sockets: Vec<TcpSocket>,
    /// `None` where no connection needed it (listeners only, or nothing).
    range: Option<Result<EphemeralRange, String>>,
    /// `None` where the namespace holds no socket.
    readings: Option<NetnsReadings>,
}

impl Tracker {
    /// Rows of the sockets that pass `filter`, the same one the programs apply to the
    /// events: listeners and destinations then agree with the live counts.
    #[must_use]
    pub fn new(filter: Filter) -> Self {
        Self {
            accepts: HashMap::new(),
            closes: HashMap::new(),
            connects: HashMap::new(),
            failed: HashMap::new(),
            overflow: 0,
            counting_since: Instant::now(),
            listening_ports: None,
            peaks: HashMap::new(),
            last_in_use: None,
            pids: PidCache::default(),
            last: None,
            note: None,
            last_cost: None,
            filter,
            last_counters: HashMap::new(),
        }
    }

    /// Counts an event towards the rates. Cheap: at most one hash-map increment.
    pub fn on_event(&mut self, ev: &Event) {
        let c = &ev.conn;
        let overflow = &mut self.overflow;
        match ev.kind {
            EventKind::Accept => {
                count(&mut self.accepts, (c.netns, c.local.ip(), c.local.port()), overflow);
            }
            EventKind::Close
                if self.listening_ports.as_ref().is_none_or(|p| p.contains(c.local.port())) =>
            {
                count(&mut self.closes, (c.netns, c.local.ip(), c.local.port()), overflow);
            }
            EventKind::Connect => {
                let key = (c.netns, c.local.ip(), c.remote.ip(), c.remote.port());
                count(&mut self.connects, key, overflow);
            }
            EventKind::ConnectFailed => {
                let key = (c.netns, c.remote.ip(), c.remote.port());
                let full = self.failed.len() >= MAX_KEYS;
                match self.failed.entry(key) {
                    Entry::Occupied(mut e) => e.get_mut().add(),
                    Entry::Vacant(_) if full => *overflow += 1,
                    Entry::Vacant(e) => {
                        e.insert(Failures::default()).add();
                    }
                }
            }
            EventKind::Established | EventKind::Close => {}
        }
    }

    /// Events whose key found its table full since start: counted in the live totals (the
    /// ledger is not capped), attributed to no listener or destination row.
    #[must_use]
    pub fn over_cap(&self) -> u64 {
        self.overflow
    }

    /// How many keys each table holds, and the events no table had room for: for the
    /// debug log (every table keyed by what a user controls is bounded by [`MAX_KEYS`]).
    #[must_use]
    pub fn table_sizes(&self) -> String {
        format!(
            "accepts {}, closes {}, connects {}, failed connects {}, peaks {}, ports in use {}; {} events over the cap of {MAX_KEYS}",
            self.accepts.len(),
            self.closes.len(),
            self.connects.len(),
            self.failed.len(),
            self.peaks.len(),
            self.last_in_use.as_ref().map_or(0, |(_, m)| m.len()),
            self.overflow
        )
    }

    /// Dumps every network namespace (listeners and every port-holding state, with the
    /// namespace's ephemeral range), finds the listeners' processes, and returns the rows,
    /// the `top` of each kind (all when `top` is 0). The event rates are over the time
    /// since the previous refresh.
    ///
    /// Blocking. The kernel's dump dominates, about 1.5 to 2 µs per TCP socket: measured
    /// 30 ms with 10,000 sockets, 160 to 190 ms with 100,000 (mostly `TIME_WAIT`) and
    /// 300 ms with 180,000 live ones (`cargo bench -p tcptrace --bench sock_diag -- scale`;
    /// see [`Tracker::last_refresh_cost`]). A refresh that scans
    /// `/proc/*/fd` for the listeners' pids (the first one, then see [`ListenerRow::pids`])
    /// adds about 10 µs per open file on the box. The limits ([`ListenerLimits`],
    /// [`NetnsLimits`]) add, measured at 10,002 sockets: 48 to 69 µs per namespace with a
    /// socket, 147 to 319 µs for the box (`/proc/slabinfo` most of it), and 1.8 to 2.4 ms for
    /// a holding process with 5,007 fds (about 0.4 µs an fd, its `/proc/PID/fd` listing);
    /// the dump's `SKMEMINFO` is within its noise.
    ///
    /// The cost grows with the sockets on the box (seconds at 2,000,000), so a refresh
    /// that comes sooner than [`REFRESH_COST_RATIO`] times the last one's cost after it
    /// returns the last rows again: the capacity rows then lag, the ledger's counts never
    /// do. See [`Tracker::cadence_note`].
    pub fn refresh(&mut self, top: usize) -> Result<Capacity, sockdiag::Error> {
        match self.last_rows(top) {
            Some(rows) if !self.due(top) => Ok(rows.clone()),
            _ => self.refresh_now(top),
        }
    }

    /// Whether a refresh for `top` rows is due: none yet, or for another `top`, or the
    /// last one is older than [`REFRESH_COST_RATIO`] times its cost.
    #[must_use]
    pub fn due(&self, top: usize) -> bool {
        self.last.as_ref().is_none_or(|last| {
            last.top != top || last.at.elapsed() >= last.cost * REFRESH_COST_RATIO
        })
    }

    /// The rows of the last refresh for `top` rows, if there was one.
    #[must_use]
    pub fn last_rows(&self, top: usize) -> Option<&Capacity> {
        self.last.as_ref().filter(|last| last.top == top).map(|last| &last.rows)
    }

    /// The first refresh, whose dump also seeds the ledger: the live connections that pass
    /// the filter, every namespace's. One sock_diag walk of the box serves both, where a
    /// separate seed dump took as long again before the first snapshot (BENCHMARKS.md,
    /// start-up).
    pub fn refresh_and_seed(
        &mut self,
        top: usize,
    ) -> Result<(Capacity, LiveConnections), sockdiag::Error> {
        let dump = dump(&self.filter)?;
        let seed = LiveConnections::of(
            dump.namespaces.iter().map(|d| (d.netns, d.sockets.as_slice())),
            dump.skipped.clone(),
            &dump.selection,
        );
        Ok((self.rows_of(&dump, top), seed))
    }

    /// The rows of `dump` (taken since the last refresh), the `top` of each kind (all when
    /// `top` is 0): finds the listeners' processes, then tallies. Remembers the rows and
    /// their cost (the walk's and this) for [`refresh`](Self::refresh)'s pacing, and notes
    /// when the pacing starts to show.
    pub fn rows_of(&mut self, dump: &Dump, top: usize) -> Capacity {
        let rows = self.rows(dump, top);
        let split = self.last_cost.unwrap_or_default();
        let cost = split.dump + split.rows;
        log::debug!(
            "capacity refresh in {cost:?}: dump {:?}, rows {:?}; tables: {}",
            split.dump,
            split.rows,
            self.table_sizes()
        );
        if cost * REFRESH_COST_RATIO > SLOW_REFRESH
            && self.last.as_ref().is_none_or(|l| l.cost * REFRESH_COST_RATIO <= SLOW_REFRESH)
        {
            self.note = Some(format!(
                "capacity rows (listeners, destinations) refresh at most every {:.1?}: a sock_diag refresh takes {cost:.1?} here; the live counts stay current",
                cost * REFRESH_COST_RATIO
            ));
        }
        self.last = Some(LastRefresh { at: Instant::now(), cost, top, rows: rows.clone() });
        rows
    }

    /// The run's filter: the rows count only the sockets that pass it.
    #[must_use]
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// A line for the user when the capacity rows started to refresh less often than
    /// asked, once.
    pub fn cadence_note(&mut self) -> Option<String> {
        self.note.take()
    }

    /// Where the time of the last refresh that ran went (not one that returned the last rows
    /// again); `None` before the first.
    #[must_use]
    pub fn last_refresh_cost(&self) -> Option<RefreshCost> {
        self.last_cost
    }

    /// A refresh, however recent the last one: for a verdict that must be current.
    pub fn refresh_now(&mut self, top: usize) -> Result<Capacity, sockdiag::Error> {
        let dump = dump(&self.filter)?;
        Ok(self.rows_of(&dump, top))
    }

    /// The rows of a dump: finds the listeners' processes, then tallies.
    fn rows(&mut self, dump: &Dump, top: usize) -> Capacity {
        let started = Instant::now();
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
        let mut capacity = self.tally(&dump.namespaces, &dump.on_box, &passes, &pids, dump.at, top);
        self.pids.by_inode = pids;
        skipped.append(&mut capacity.skipped);
        capacity.skipped = skipped;
        self.last_cost = Some(RefreshCost { dump: dump.took, rows: started.elapsed() });
        capacity
    }

    /// The pure part of [`refresh`](Self::refresh): rows from the dumps (the sockets that
    /// `passes`) and the event counts, which it resets.
    fn tally(
        &mut self,
        dumps: &[NetnsDump],
        on_box: &BoxReadings,
        passes: &dyn Fn(&TcpSocket) -> bool,
        pids: &HashMap<u32, Vec<u32>>,
        now: Instant,
        top: usize,
    ) -> Capacity {
        let sides = Sides::of(dumps, passes);
        let over = now.saturating_duration_since(self.counting_since);
        self.counting_since = now;
        let limits = self.netns_limits(dumps, on_box, over);
        let mut skipped = Vec::new();
        let mut namespaces = namespace_rows(dumps, &sides.local_uses, &mut skipped);
        let ranges: HashMap<u32, u32> = namespaces.iter().map(|r| (r.netns, r.range)).collect();

        let mut listeners = self.listener_rows(sides.listeners, pids, &limits, over);
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
        let mut limits: Vec<NetnsLimits> = limits.into_values().map(|(_, row)| row).collect();
        limits.sort_unstable_by_key(|r| r.netns);
        Capacity {
            listeners,
            destinations,
            shared_local_ports: namespaces.iter().map(|r| r.shared_local_ports).sum(),
            namespaces,
            limits,
            skipped,
            measured: Some(now),
        }
    }

    /// Every namespace's limits row, with its readings for the listeners' rows; remembers
    /// the counters for the next refresh's rates.
    fn netns_limits<'d>(
        &mut self,
        dumps: &'d [NetnsDump],
        on_box: &BoxReadings,
        over: Duration,
    ) -> HashMap<u32, (&'d NetnsReadings, NetnsLimits)> {
        let rows: HashMap<u32, (&NetnsReadings, NetnsLimits)> = dumps
            .iter()
            .filter_map(|d| Some((d, d.readings.as_ref()?)))
            .map(|(d, readings)| {
                let before = self.last_counters.get(&d.netns);
                let row = limits::netns_limits(d.netns, readings, on_box, &d.sockets, before, over);
                (d.netns, (readings, row))
            })
            .collect();
        self.last_counters = rows.iter().map(|(&netns, (r, _))| (netns, r.counters())).collect();
        rows
    }
}
