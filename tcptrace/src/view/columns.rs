//! The columns of the four tables of a [`Snapshot`](super::Snapshot) (listeners,
//! destinations, local ports, remote endpoints): per column its title, alignment, cell text,
//! sort order, whether the filter searches it and whether `watch` shows it.
//!
//! Both renderers read these lists: [`super::table`] prints the columns `watch` shows,
//! [`super::tui`] draws them all and sorts and filters by them. A new column is one entry
//! here.

use std::cmp::Ordering;
use std::net::SocketAddr;

use crate::{
    capacity::{DestinationRow, ListenerRow},
    ledger::{LocalPortRow, RemoteEndpointRow},
};

/// One column of a table: how a row shows in it and how rows compare by it.
pub(super) struct Column<R> {
    pub(super) title: &'static str,
    /// Right-aligned, and sorted largest first when chosen.
    pub(super) numeric: bool,
    /// Whether the filter searches this column (addresses, ports, namespaces, pids).
    pub(super) searched: bool,
    /// Whether `watch`'s plain table shows it too (`top` shows every column).
    pub(super) in_watch: bool,
    pub(super) text: fn(&R) -> String,
    pub(super) order: fn(&R, &R) -> Ordering,
}

/// A column before its cells: the title and how it is shown, sorted and searched. The
/// cells come last ([`Head::cells`]) so that the row type, known from the table the column
/// goes in, types their closures.
struct Head {
    title: &'static str,
    numeric: bool,
    searched: bool,
    in_watch: bool,
}

impl Head {
    /// A number: right-aligned, largest first when sorted by, not searched.
    const fn number(title: &'static str) -> Self {
        Self { title, numeric: true, searched: false, in_watch: true }
    }

    /// An address (or a list of pids): left-aligned, ascending when sorted by, searched.
    const fn text(title: &'static str) -> Self {
        Self { title, numeric: false, searched: true, in_watch: true }
    }

    /// The filter searches this column too.
    const fn searched(self) -> Self {
        Self { searched: true, ..self }
    }

    /// Only `top` shows this column; `watch`'s table leaves it out.
    const fn top_only(self) -> Self {
        Self { in_watch: false, ..self }
    }

    const fn cells<R>(self, text: fn(&R) -> String, order: fn(&R, &R) -> Ordering) -> Column<R> {
        let Self { title, numeric, searched, in_watch } = self;
        Column { title, numeric, searched, in_watch, text, order }
    }
}

/// A column of a count, `Head` modifiers after the field: the number as it is, sorted by
/// it.
macro_rules! count {
    ($title:literal, $field:ident $(, $modifier:ident)*) => {
        Head::number($title)$(.$modifier())*
            .cells(|r| r.$field.to_string(), |a, b| a.$field.cmp(&b.$field))
    };
}

/// A column of events per second, whole (`13/s`), `Head` modifiers after the field.
macro_rules! rate {
    ($title:literal, $field:ident $(, $modifier:ident)*) => {
        Head::number($title)$(.$modifier())*
            .cells(|r| rate(r.$field), |a, b| a.$field.total_cmp(&b.$field))
    };
}

fn rate(per_s: f64) -> String {
    format!("{per_s:.0}/s")
}

/// A listener's binding limit and its headroom, "-" without limits (an old row).
fn binding(r: &ListenerRow) -> Option<(&'static str, u64)> {
    let l = r.limits.as_ref()?;
    Some((l.binding?.as_str(), l.binding_headroom?))
}

pub(super) const LISTENERS: [Column<ListenerRow>; 13] = [
    Head::text("LISTENER").cells(
        |r| SocketAddr::new(r.addr, r.port).to_string(),
        |a, b| (a.addr, a.port, a.netns).cmp(&(b.addr, b.port, b.netns)),
    ),
    count!("NETNS", netns, searched, top_only),
    count!("LIVE", live),
    count!("PEAK", peak_live),
    count!("REMOTE ADDRS", remote_addrs, top_only),
    count!("MAX/REMOTE", max_per_remote),
    count!("REUSEPORT", reuseport_sockets),
    rate!("ACCEPTS", accept_rate),
    rate!("CLOSES", close_rate, top_only),
    // Accept queue now of its limit (backlog + 1 per socket of the group).
    Head::number("QUEUE").cells(
        |r| {
            r.limits.as_ref().map_or_else(
                || "-".to_owned(),
                |l| format!("{}/{}", l.accept_queue, l.backlog + r.reuseport_sockets),
            )
        },
        |a, b| {
            let q = |r: &ListenerRow| r.limits.as_ref().map(|l| l.accept_queue);
            q(a).cmp(&q(b))
        },
    ),
    Head::text("LIMIT").cells(
        |r| binding(r).map_or_else(|| "-".to_owned(), |(name, _)| name.to_owned()),
        |a, b| binding(a).map(|l| l.0).cmp(&binding(b).map(|l| l.0)),
    ),
    // The fewest connections first: sorting by headroom puts the listener closest to a
    // limit on top.
    Head::number("HEADROOM").cells(
        |r| binding(r).map_or_else(|| "-".to_owned(), |(_, headroom)| headroom.to_string()),
        |a, b| {
            let h = |r: &ListenerRow| binding(r).map_or(u64::MAX, |b| b.1);
            h(b).cmp(&h(a))
        },
    ),
    Head::text("PIDS").top_only().cells(
        |r| r.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        |a, b| a.pids.cmp(&b.pids),
    ),
];

pub(super) const DESTINATIONS: [Column<DestinationRow>; 9] = [
    Head::text("DESTINATION").cells(
        |r| format!("{} -> {}", r.laddr, SocketAddr::new(r.raddr, r.rport)),
        |a, b| (a.raddr, a.rport, a.laddr, a.netns).cmp(&(b.raddr, b.rport, b.laddr, b.netns)),
    ),
    count!("NETNS", netns, searched, top_only),
    count!("PORTS", ports_in_use),
    count!("SHARED", shared_ports),
    count!("RANGE", range, top_only),
    Head::number("USE")
        .cells(|r| format!("{:.1}%", r.use_pct), |a, b| a.use_pct.total_cmp(&b.use_pct)),
    rate!("CONNECTS", connect_rate),
    // No estimate means no growth: it sorts as the latest exhaustion of all.
    Head::number("EXHAUSTED IN").cells(
        |r| r.exhaustion_s.map_or_else(|| "-".to_owned(), |t| format!("{t:.0}s")),
        |a, b| {
            let t = |r: &DestinationRow| r.exhaustion_s.unwrap_or(f64::INFINITY);
            t(a).total_cmp(&t(b))
        },
    ),
    count!("FAILED", failed_connects, top_only),
];

pub(super) const LOCAL_PORTS: [Column<LocalPortRow>; 3] = [
    count!("LOCAL PORT", port, searched),
    count!("LIVE", live),
    count!("REMOTE ADDRS", remote_addrs),
];

pub(super) const REMOTE_ENDPOINTS: [Column<RemoteEndpointRow>; 3] = [
    Head::text("REMOTE ENDPOINT").cells(
        // SocketAddr brackets IPv6 addresses: [::1]:443.
        |r| SocketAddr::new(r.addr, r.port).to_string(),
        |a, b| (a.addr, a.port).cmp(&(b.addr, b.port)),
    ),
    count!("LIVE", live),
    count!("LOCAL PORTS", local_ports),
];

/// The index of the column titled `title`, for choosing a default sort by name rather
/// than by position.
///
/// # Panics
/// When no column has that title: a programming error that the view's tests catch.
pub(super) fn position<R>(columns: &[Column<R>], title: &str) -> usize {
    columns.iter().position(|c| c.title == title).unwrap_or_else(|| panic!("no column {title}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::view::{Snapshot, tests::sample};

    /// An idle listener in the initial namespace: `live` connections from one remote
    /// address, one socket, pid 42.
    pub(crate) fn listener(addr: &str, port: u16, live: u64) -> ListenerRow {
        ListenerRow { pids: vec![42], ..listener_in(4_026_531_840, addr, port, live) }
    }

    /// An idle listener: `live` connections from one remote address, one socket, no pid.
    pub(crate) fn listener_in(netns: u32, addr: &str, port: u16, live: u64) -> ListenerRow {
        ListenerRow {
            netns,
            addr: addr.parse().unwrap(),
            port,
            live,
            remote_addrs: 1,
            max_per_remote: live,
            peak_live: live,
            accept_rate: 0.0,
            close_rate: 0.0,
            reuseport_sockets: 1,
            pids: vec![],
            limits: None,
        }
    }

    /// A destination in the initial namespace with one port in use and no growth.
    pub(crate) fn destination(laddr: &str, raddr: &str, rport: u16) -> DestinationRow {
        DestinationRow {
            netns: 4_026_531_840,
            laddr: laddr.parse().unwrap(),
            raddr: raddr.parse().unwrap(),
            rport,
            ports_in_use: 1,
            shared_ports: 0,
            range: 28_232,
            use_pct: 100.0 / 28_232.0,
            connect_rate: 0.0,
            exhaustion_s: None,
            failed_connects: 0,
        }
    }

    /// [`sample`] with capacity rows that give every column of every table a telling
    /// value: IPv6, several pids, fractional rates and percentages, an exhaustion estimate
    /// and none. Counts of 4711 and 4026532 look like a pid and a namespace in columns the
    /// filter does not search.
    pub(crate) fn full_snapshot() -> Snapshot {
        let mut s = sample();
        s.listeners = vec![
            ListenerRow {
                remote_addrs: 4_026_532,
                max_per_remote: 4,
                peak_live: 4711,
                accept_rate: 12.6,
                close_rate: 0.4,
                pids: vec![4711, 815],
                limits: Some(crate::capacity::ListenerLimits {
                    accept_queue: 129,
                    backlog: 128,
                    min_backlog: 128,
                    somaxconn: Some(4096),
                    backlog_clamped: false,
                    drops: Some(17),
                    fds: Some(300),
                    fd_limit: Some(300),
                    fd_pid: Some(4711),
                    headroom: Vec::new(),
                    binding: Some(crate::capacity::LimitName::Fds),
                    binding_headroom: Some(0),
                }),
                ..listener("0.0.0.0", 22, 7)
            },
            ListenerRow {
                netns: 4_026_532_001,
                remote_addrs: 3,
                max_per_remote: 120,
                peak_live: 5000,
                accept_rate: 1_234.5,
                close_rate: 999.5,
                reuseport_sockets: 16,
                pids: Vec::new(),
                ..listener("2001:db8::1", 65_535, 4711)
            },
        ];
        s.destinations = vec![
            DestinationRow {
                ports_in_use: 26_468,
                shared_ports: 12,
                use_pct: 93.75,
                connect_rate: 250.25,
                exhaustion_s: Some(41.5),
                failed_connects: 3,
                ..destination("10.0.0.1", "10.0.0.9", 5432)
            },
            DestinationRow { netns: 4_026_532_001, ..destination("::1", "::1", 4711) },
        ];
        s
    }

    fn titles<R>(columns: &[Column<R>]) -> Vec<&'static str> {
        columns.iter().map(|c| c.title).collect()
    }

    #[test]
    fn a_title_names_one_column_of_its_table() {
        for titles in [
            titles(&LISTENERS),
            titles(&DESTINATIONS),
            titles(&LOCAL_PORTS),
            titles(&REMOTE_ENDPOINTS),
        ] {
            assert_eq!(titles.iter().collect::<HashSet<_>>().len(), titles.len(), "{titles:?}");
        }
        assert_eq!(position(&DESTINATIONS, "USE"), 5);
    }
}
