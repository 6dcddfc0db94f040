//! Rows from a tally: the listener and destination rows with their rates and growth, the
//! namespace rows, and the top-N cut.

use hashbrown::{HashMap, HashSet};
use std::cmp::Ordering;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::conn::{NETNS_UNKNOWN, counted_in};

use super::{
    DEFAULT_RANGE, DestKey, DestinationRow, EphemeralRange, FAILED_KEEP, ListenerRow, LocalKey,
    NetnsDump, NetnsLimits, NetnsRow, Tracker,
    limits::{FdReadings, Fds, NetnsReadings, listener_limits},
    sides::Listeners,
};

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

impl Tracker {
    /// Listener rows, with the accept and close counts since the last refresh (reset here)
    /// turned into rates over `over`; remembers peaks and listening ports.
    pub(super) fn listener_rows(
        &mut self,
        listeners: Listeners,
        pids: &HashMap<u32, Vec<u32>>,
        limits: &HashMap<u32, (&NetnsReadings, NetnsLimits)>,
        over: Duration,
    ) -> Vec<ListenerRow> {
        let mut fds = FdReadings::default();
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
                let holder_fds: Vec<(u32, Fds)> =
                    holders.iter().filter_map(|&pid| Some((pid, fds.of(pid)?))).collect();
                let netns_limits = limits.get(&netns).map(|(r, l)| (*r, l));
                let limits = listener_limits(&l, &holder_fds, netns_limits);
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
                    limits: Some(limits),
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
    pub(super) fn destination_rows(
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
                let connects = counted_in(netns, |netns| {
                    self.connects.get(&(netns, laddr, raddr, rport)).copied().unwrap_or(0)
                });
                let failed = counted_in(netns, |netns| {
                    self.failed.get(&(netns, raddr, rport)).map_or(0, |f| f.count)
                });
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
                    failed_connects: failed,
                }
            })
            .collect();
        self.connects.clear();
        self.forget_failures(&in_use, now);
        self.last_in_use = Some((now, in_use));
        rows
    }

    /// Forgets the failed connects to endpoints no destination row holds (in their
    /// namespace; in any, for events without namespace ids) whose last failure is older
    /// than [`FAILED_KEEP`].
    fn forget_failures(&mut self, in_use: &HashMap<DestKey, u64>, now: Instant) {
        if self.failed.is_empty() {
            return;
        }
        let held: HashSet<(u32, IpAddr, u16)> =
            in_use.keys().map(|&(netns, _, raddr, rport)| (netns, raddr, rport)).collect();
        let held_anywhere: HashSet<(IpAddr, u16)> =
            held.iter().map(|&(_, raddr, rport)| (raddr, rport)).collect();
        self.failed.retain(|&(netns, raddr, rport), f| {
            let recent = f.last.is_some_and(|at| now.saturating_duration_since(at) < FAILED_KEEP);
            let held = if netns == NETNS_UNKNOWN {
                held_anywhere.contains(&(raddr, rport))
            } else {
                held.contains(&(netns, raddr, rport))
            };
            recent || held
        });
    }
}

/// One row per dumped namespace, with its range (the kernel default, and a line in
/// `skipped`, when it could not be read) and its shared local ports.
pub(super) fn namespace_rows(
    dumps: &[NetnsDump],
    local_uses: &HashMap<LocalKey, u32>,
    skipped: &mut Vec<String>,
) -> Vec<NetnsRow> {
    let mut rows: Vec<NetnsRow> = dumps
        .iter()
        .filter_map(|d| Some((d, d.range.clone()?)))
        .map(|(d, range)| {
            let range = range.unwrap_or_else(|why| {
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
pub(super) fn top_by<T>(rows: &mut Vec<T>, n: usize, cmp: impl Fn(&T, &T) -> Ordering) {
    if n > 0 && rows.len() > n {
        rows.select_nth_unstable_by(n - 1, &cmp);
        rows.truncate(n);
    }
    rows.sort_unstable_by(cmp);
}
