//! The claim itself: an [`Expectation`] and its parts, their canonical form, and the grammar
//! text [`EXPECT_HELP`], which is also the `--help` of `--expect`. Reading one from text is
//! in `parse`, judging one against observations in `judge`.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The grammar of an expectation and the rule of each operator. One text serves as the doc
/// comment of [`Expectation`] and as [`EXPECT_HELP`], so the two cannot disagree.
macro_rules! expect_help {
    () => {
        "\
An expectation is SELECTOR METRIC OP VALUE, quoted as one argument, e.g.
'lport=8080 live>=100000' or 'dst=127.0.0.5:9000 headroom>=20%'. Give --expect once per
expectation.

SELECTOR, and the METRICs it has:
  lport=PORT           a local port, on every local address and network namespace
      live             live connections
      remote_addrs     distinct remote addresses among them
      max_per_remote   most live connections from any one remote address
  listener=ADDR:PORT   the connections of a listening socket (IPv6 as [ADDR]:PORT;
                       0.0.0.0 or [::] stands for every local address)
      live, remote_addrs, max_per_remote, as for lport
      capacity         connections it can still take before the first of its limits
                       runs out (fds of its process, the box's file table, memory,
                       its accept queue): the binding limit, which the verdict names
      accept_queue     connections waiting for accept(), in percent of what its
                       queue holds (backlog + 1 per socket), summed over its
                       SO_REUSEPORT group: one full member of several shows less
      drops            handshakes its LISTEN sockets dropped (ss -ltm `d`), counted
                       by the kernel since they were made
  dst=ADDR:PORT        a remote endpoint that this box connects to as a client
      live             live connections to it
      ports_in_use     local ports taken toward it (TIME_WAIT included)
      use              ports_in_use in percent of the ephemeral range
                       (ip_local_port_range less ip_local_reserved_ports), from
                       the local address and network namespace closest to running out
      headroom         percent of that range still free: 100% - use
      usable_ports     ports of that range still free: range - ports_in_use
  total                the whole box
      live             live connections
      lost             events the kernel dropped because the ring buffer was full
      drift            connections the sock_diag recounts (what ss sees) found the live
                       count wrong by and corrected, summed over the run
      fd_headroom      percent of the box's file table still free:
                       100% - fs/file-nr in percent of fs/file-max

OP is one of >= <= > < ==. VALUE is a whole number (100000), except for use,
headroom, accept_queue and fd_headroom, which take a percentage and only a
percentage (20%, 12.5%).

The check observes once per --interval. What each expectation compares with VALUE:

  headroom, capacity, usable_ports and fd_headroom are room left before a limit:
  METRIC      OP      COMPARES  THE CLAIM HOLDS WHEN
  room        >= >    minimum   it never dropped below VALUE
  room        <= <    minimum   it went down to VALUE at least once
  all others  >= >    peak      it reached VALUE at least once
  all others  <= <    peak      it never went above VALUE
  any         ==      final     it equals VALUE at the last observation

A port, listener or destination without live connections counts as 0 (headroom 100%),
but one that had no live connection in any observation has no data, and fails: a
mistyped port must not pass. So does a drift that was never measured, or a limit
never read (a listener that is gone, a kernel without the reading). For a listener,
the verdict names its binding limit at the moment judged. Values are sampled once
per interval: a peak shorter than that can be missed.
"
    };
}

/// The `--help` text of `--expect`: the grammar of an [`Expectation`] and what each
/// operator compares.
pub const EXPECT_HELP: &str = expect_help!();

/// One claim about the live counts, parsed from `SELECTOR METRIC OP VALUE`:
///
#[doc = concat!("```text\n", expect_help!(), "```")]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expectation {
    pub(super) selector: Selector,
    pub(super) metric: Metric,
    pub(super) op: Op,
    /// A count, or a percentage (0 to 100) for [`Metric::is_percent`] metrics.
    pub(super) value: f64,
}

/// What an expectation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    /// `lport=PORT`: a local port, on every local address and network namespace.
    LocalPort(u16),
    /// `listener=ADDR:PORT`: the connections whose local end is this address (any local
    /// address when it is unspecified, 0.0.0.0 or ::) and port.
    Listener(SocketAddr),
    /// `dst=ADDR:PORT`: a remote endpoint this box connects to.
    Destination(SocketAddr),
    /// `total`: the whole box.
    Total,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    Live,
    RemoteAddrs,
    MaxPerRemote,
    PortsInUse,
    Use,
    Headroom,
    Lost,
    Drift,
    Capacity,
    AcceptQueue,
    Drops,
    UsablePorts,
    FdHeadroom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

/// Which value of the run an expectation is judged on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The highest value observed.
    Peak,
    /// The lowest value observed.
    Minimum,
    /// The value at the last observation.
    Final,
}

/// The selector kinds, which decide the metrics an expectation may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    LocalPort,
    Listener,
    Destination,
    Total,
}

impl Kind {
    pub(super) const ALL: [Self; 4] =
        [Self::LocalPort, Self::Listener, Self::Destination, Self::Total];

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::LocalPort => "lport",
            Self::Listener => "listener",
            Self::Destination => "dst",
            Self::Total => "total",
        }
    }

    pub(super) fn metrics(self) -> &'static [Metric] {
        use Metric::{
            AcceptQueue, Capacity, Drift, Drops, FdHeadroom, Headroom, Live, Lost, MaxPerRemote,
            PortsInUse, RemoteAddrs, UsablePorts, Use,
        };
        match self {
            Self::LocalPort => &[Live, RemoteAddrs, MaxPerRemote],
            Self::Listener => &[Live, RemoteAddrs, MaxPerRemote, Capacity, AcceptQueue, Drops],
            Self::Destination => &[PortsInUse, Use, Headroom, UsablePorts, Live],
            Self::Total => &[Live, Lost, Drift, FdHeadroom],
        }
    }

    pub(super) fn metric_list(self) -> String {
        self.metrics().iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
    }
}

impl Selector {
    pub(super) fn kind(self) -> Kind {
        match self {
            Self::LocalPort(_) => Kind::LocalPort,
            Self::Listener(_) => Kind::Listener,
            Self::Destination(_) => Kind::Destination,
            Self::Total => Kind::Total,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SocketAddr brackets IPv6 addresses: [::1]:443.
        match self {
            Self::LocalPort(port) => write!(f, "lport={port}"),
            Self::Listener(addr) => write!(f, "listener={addr}"),
            Self::Destination(addr) => write!(f, "dst={addr}"),
            Self::Total => f.write_str("total"),
        }
    }
}

impl Metric {
    pub(super) const ALL: [Self; 13] = [
        Self::Live,
        Self::RemoteAddrs,
        Self::MaxPerRemote,
        Self::PortsInUse,
        Self::Use,
        Self::Headroom,
        Self::Lost,
        Self::Drift,
        Self::Capacity,
        Self::AcceptQueue,
        Self::Drops,
        Self::UsablePorts,
        Self::FdHeadroom,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::RemoteAddrs => "remote_addrs",
            Self::MaxPerRemote => "max_per_remote",
            Self::PortsInUse => "ports_in_use",
            Self::Use => "use",
            Self::Headroom => "headroom",
            Self::Lost => "lost",
            Self::Drift => "drift",
            Self::Capacity => "capacity",
            Self::AcceptQueue => "accept_queue",
            Self::Drops => "drops",
            Self::UsablePorts => "usable_ports",
            Self::FdHeadroom => "fd_headroom",
        }
    }

    /// What a percentage metric is a percentage of; `None` for a count.
    #[must_use]
    pub fn percent_of(self) -> Option<&'static str> {
        match self {
            Self::Use | Self::Headroom => Some("the ephemeral range"),
            Self::AcceptQueue => Some("what the accept queue holds"),
            Self::FdHeadroom => Some("the box's file table"),
            _ => None,
        }
    }

    /// Use, headroom, accept_queue and fd_headroom are percentages; every other metric
    /// counts.
    #[must_use]
    pub fn is_percent(self) -> bool {
        self.percent_of().is_some()
    }

    /// Room left before a limit: less is closer to it, so its worst value is its minimum.
    /// Every other metric grows toward its limit.
    #[must_use]
    pub fn is_room(self) -> bool {
        matches!(self, Self::Headroom | Self::Capacity | Self::UsablePorts | Self::FdHeadroom)
    }

    /// The value when the selector has no live connection; `None` for a limit, which is
    /// read or not, and never assumed.
    pub(super) fn idle(self) -> Option<f64> {
        match self {
            Self::Headroom => Some(100.0),
            Self::Capacity
            | Self::AcceptQueue
            | Self::Drops
            | Self::UsablePorts
            | Self::FdHeadroom => None,
            _ => Some(0.0),
        }
    }
}

impl Op {
    #[must_use]
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Ge => ">=",
            Self::Gt => ">",
            Self::Le => "<=",
            Self::Lt => "<",
            Self::Eq => "==",
        }
    }

    /// Whether `observed OP expected` is true.
    #[must_use]
    #[expect(clippy::float_cmp, reason = "counts are whole numbers, exact in an f64")]
    pub fn holds(self, observed: f64, expected: f64) -> bool {
        match self {
            Self::Ge => observed >= expected,
            Self::Gt => observed > expected,
            Self::Le => observed <= expected,
            Self::Lt => observed < expected,
            Self::Eq => observed == expected,
        }
    }
}

impl Rule {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Peak => "peak",
            Self::Minimum => "minimum",
            Self::Final => "final",
        }
    }
}

impl Expectation {
    #[must_use]
    pub fn selector(&self) -> Selector {
        self.selector
    }

    #[must_use]
    pub fn metric(&self) -> Metric {
        self.metric
    }

    #[must_use]
    pub fn op(&self) -> Op {
        self.op
    }

    /// The VALUE: a count, or a percentage from 0 to 100 for a [`Metric::is_percent`] one.
    #[must_use]
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The value of the run this expectation is judged on. For room left before a limit
    /// (headroom, capacity, usable_ports, fd_headroom) less is closer to the limit, so its
    /// worst value is its minimum; every other metric grows toward the limit, so its worst
    /// value is its peak. A floor such as `headroom>=20%` or a ceiling such as `live<=100`
    /// must hold at the worst moment, and a capacity claim such as `live>=100000` or
    /// `headroom<=5%` is shown by reaching it once. `==` is about where the run ends.
    #[must_use]
    pub fn rule(&self) -> Rule {
        match (self.op, self.metric) {
            (Op::Eq, _) => Rule::Final,
            (_, m) if m.is_room() => Rule::Minimum,
            _ => Rule::Peak,
        }
    }
}

/// The canonical form, which parses back to the same expectation:
/// `dst=127.0.0.5:9000 headroom>=20%`.
impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}{}", self.selector, self.metric.name(), self.op.symbol())?;
        if self.metric.is_percent() {
            write!(f, "{}%", self.value)
        } else {
            // A count is a whole number: written as the u64 it holds. The f64 of the
            // largest counts is 2^64, which would print as `18446744073709552000`, a
            // count too large to parse back; it saturates to u64::MAX instead.
            write!(f, "{}", self.value as u64)
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "counts of connections stay far below 2^53")]
pub(super) fn count(n: u64) -> f64 {
    n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_text_names_every_metric_and_operator() {
        for m in Metric::ALL {
            assert!(EXPECT_HELP.contains(m.name()), "{}", m.name());
        }
        for op in [Op::Ge, Op::Gt, Op::Le, Op::Lt, Op::Eq] {
            assert!(EXPECT_HELP.contains(op.symbol()));
        }
        assert!(EXPECT_HELP.lines().all(|l| l.len() <= 90), "help lines fit a terminal");
    }
}
