//! `tcptrace check`: a capacity claim, measured, as pass or fail.
//!
//! A claim is a list of [`Expectation`]s such as `lport=8080 live>=100000`; their grammar
//! and the rule each operator follows are in [`EXPECT_HELP`], which is also the `--help`
//! text of `--expect`. A [`Check`] is fed one [`Observation`] per interval and keeps, for
//! each expectation, the one value its rule is about (the peak, the minimum or the final
//! value). [`Check::report`] turns those into a [`Report`]: a verdict per expectation, the
//! events lost and the drift against their [`Tolerance`], one pass or fail, and with
//! [`Report::outcome`] the exit code.
//!
//! Everything here is pure: the command owns the tracer, the ledger and the clock.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::conn::canonical_ip;

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
  dst=ADDR:PORT        a remote endpoint that this box connects to as a client
      live             live connections to it
      ports_in_use     local ports taken toward it (TIME_WAIT included)
      use              ports_in_use in percent of the ephemeral range
                       (ip_local_port_range less ip_local_reserved_ports), from
                       the local address and network namespace closest to running out
      headroom         percent of that range still free: 100% - use
  total                the whole box
      live             live connections
      lost             events the kernel dropped because the ring buffer was full
      drift            connections by which the live count differs from a sock_diag
                       recount (what ss sees)

OP is one of >= <= > < ==. VALUE is a whole number (100000), except for use and
headroom, which take a percentage and only a percentage (20%, 12.5%).

The check observes once per --interval. What each expectation compares with VALUE:

  METRIC      OP      COMPARES  THE CLAIM HOLDS WHEN
  headroom    >= >    minimum   it never dropped below VALUE
  headroom    <= <    minimum   it went down to VALUE at least once
  all others  >= >    peak      it reached VALUE at least once
  all others  <= <    peak      it never went above VALUE
  any         ==      final     it equals VALUE at the last observation

A port, listener or destination without live connections counts as 0 (headroom 100%),
but one that had no live connection in any observation has no data, and fails: a
mistyped port must not pass. So does a drift that was never measured. Values are
sampled once per interval: a peak shorter than that can be missed.
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
    selector: Selector,
    metric: Metric,
    op: Op,
    /// A count, or a percentage (0 to 100) for [`Metric::is_percent`] metrics.
    value: f64,
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
enum Kind {
    LocalPort,
    Listener,
    Destination,
    Total,
}

const SELECTORS: &str = "lport=PORT, listener=ADDR:PORT, dst=ADDR:PORT, total";
const OPERATORS: &str = ">=, <=, >, <, ==";

impl Kind {
    const ALL: [Self; 4] = [Self::LocalPort, Self::Listener, Self::Destination, Self::Total];

    fn name(self) -> &'static str {
        match self {
            Self::LocalPort => "lport",
            Self::Listener => "listener",
            Self::Destination => "dst",
            Self::Total => "total",
        }
    }

    fn metrics(self) -> &'static [Metric] {
        use Metric::{Drift, Headroom, Live, Lost, MaxPerRemote, PortsInUse, RemoteAddrs, Use};
        match self {
            Self::LocalPort | Self::Listener => &[Live, RemoteAddrs, MaxPerRemote],
            Self::Destination => &[PortsInUse, Use, Headroom, Live],
            Self::Total => &[Live, Lost, Drift],
        }
    }

    fn metric_list(self) -> String {
        self.metrics().iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
    }
}

impl Selector {
    fn kind(self) -> Kind {
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
    const ALL: [Self; 8] = [
        Self::Live,
        Self::RemoteAddrs,
        Self::MaxPerRemote,
        Self::PortsInUse,
        Self::Use,
        Self::Headroom,
        Self::Lost,
        Self::Drift,
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
        }
    }

    /// Use and headroom are percentages of the ephemeral range; every other metric counts.
    #[must_use]
    pub fn is_percent(self) -> bool {
        matches!(self, Self::Use | Self::Headroom)
    }

    /// The value when the selector has no live connection.
    fn idle(self) -> f64 {
        if self == Self::Headroom { 100.0 } else { 0.0 }
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
    pub fn parse(expr: &str) -> Result<Self, ParseError> {
        Parser { expr, pos: 0 }.expectation()
    }

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

    /// The VALUE: a count, or a percentage from 0 to 100 for use and headroom.
    #[must_use]
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The value of the run this expectation is judged on. Headroom is the one metric
    /// where less is closer to the limit, so its worst value is its minimum; every other
    /// metric grows toward the limit, so its worst value is its peak. A floor such as
    /// `headroom>=20%` or a ceiling such as `live<=100` must hold at the worst moment, and
    /// a capacity claim such as `live>=100000` or `headroom<=5%` is shown by reaching it
    /// once. `==` is about where the run ends.
    #[must_use]
    pub fn rule(&self) -> Rule {
        match (self.op, self.metric) {
            (Op::Eq, _) => Rule::Final,
            (_, Metric::Headroom) => Rule::Minimum,
            _ => Rule::Peak,
        }
    }

    fn sample(&self, obs: &dyn Observation) -> Sample {
        let metric = self.metric;
        let value = match self.selector {
            Selector::LocalPort(port) => obs.lport(port).map(|v| v.get(metric)),
            Selector::Listener(addr) => obs.listener(addr).map(|v| v.get(metric)),
            Selector::Destination(addr) => obs.destination(addr).map(|v| v.get(metric)),
            Selector::Total => {
                let total = obs.total();
                match metric {
                    Metric::Live => Some(count(total.live)),
                    Metric::Lost => Some(count(total.lost)),
                    Metric::Drift => match total.drift {
                        Some(drift) => Some(count(drift)),
                        None => return Sample::Unmeasured,
                    },
                    _ => unreachable!("the parser gives total only its own metrics"),
                }
            }
        };
        value.map_or(Sample::Idle, Sample::Value)
    }
}

impl FromStr for Expectation {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The canonical form, which parses back to the same expectation:
/// `dst=127.0.0.5:9000 headroom>=20%`.
impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.metric.is_percent() { "%" } else { "" };
        write!(
            f,
            "{} {}{}{}{unit}",
            self.selector,
            self.metric.name(),
            self.op.symbol(),
            self.value
        )
    }
}

/// An expectation that does not parse: where (a 1-based column in characters, and how many
/// characters the problem spans) and why. Displayed as the reason, then the expression
/// with a caret line under the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub expr: String,
    pub column: usize,
    pub width: usize,
    pub reason: String,
}

impl ParseError {
    /// A problem spanning the bytes `start..end` of `expr` (one column when empty).
    fn new(expr: &str, start: usize, end: usize, reason: String) -> Self {
        Self {
            expr: expr.to_owned(),
            column: expr[..start].chars().count() + 1,
            width: expr[start..end].chars().count().max(1),
            reason,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tabs would shift the caret line; every character is one column here.
        let expr: String =
            self.expr.chars().map(|c| if c.is_whitespace() { ' ' } else { c }).collect();
        let pad = " ".repeat(self.column - 1);
        let carets = "^".repeat(self.width);
        write!(f, "column {}: {}\n  {expr}\n  {pad}{carets}", self.column, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// A piece of the expression and where it starts, in bytes.
#[derive(Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    start: usize,
}

impl<'a> Token<'a> {
    fn end(self) -> usize {
        self.start + self.text.len()
    }

    /// The bytes `from..to` of this token, which must fall on character boundaries.
    fn sub(self, from: usize, to: usize) -> Token<'a> {
        Token { text: &self.text[from..to], start: self.start + from }
    }
}

/// A recursive-descent parser over one expression; `pos` is a byte offset.
struct Parser<'a> {
    expr: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn expectation(mut self) -> Result<Expectation, ParseError> {
        self.skip_ws();
        if self.at_end() {
            return Err(self.error_here(
                "empty expectation; expected SELECTOR METRIC OP VALUE, e.g. `lport=8080 live>=100000`"
                    .into(),
            ));
        }
        let selector = self.selector()?;
        let metric = self.metric(selector)?;
        let op = self.op(metric)?;
        let value = self.value(metric, op)?;
        self.skip_ws();
        if !self.at_end() {
            let rest = self.take_while(|_| true);
            let reason = format!(
                "unexpected `{}` after the value; give one expectation per --expect",
                rest.text.trim_end()
            );
            return Err(self.error(rest.start, rest.start + rest.text.trim_end().len(), reason));
        }
        Ok(Expectation { selector, metric, op, value })
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let word = self.take_while(is_word);
        let kind = match word.text {
            "lport" => Kind::LocalPort,
            "listener" => Kind::Listener,
            "dst" => Kind::Destination,
            "total" => Kind::Total,
            "" => {
                let token = self.take_while(|c| !c.is_whitespace());
                let reason = format!("expected a selector: one of {SELECTORS}");
                return Err(self.error(token.start, token.end(), reason));
            }
            other if Metric::ALL.iter().any(|m| m.name() == other) => {
                let reason = format!("`{other}` is a metric; start with a selector: {SELECTORS}");
                return Err(self.error(word.start, word.end(), reason));
            }
            other => {
                let reason = format!("unknown selector `{other}`; expected one of {SELECTORS}");
                return Err(self.error(word.start, word.end(), reason));
            }
        };
        self.skip_ws();
        if kind == Kind::Total {
            if self.peek() == Some('=') {
                return Err(self.error_here("`total` takes no value: it is the whole box".into()));
            }
            return Ok(Selector::Total);
        }
        let usage = match kind {
            Kind::LocalPort => "a port: lport=PORT",
            Kind::Listener => "an address: listener=ADDR:PORT",
            _ => "an address: dst=ADDR:PORT",
        };
        let needs = || format!("`{}` needs {usage}", kind.name());
        if self.peek() != Some('=') {
            return Err(self.error_here(needs()));
        }
        self.pos += 1;
        self.skip_ws();
        let arg = self.take_while(|c| !c.is_whitespace());
        if arg.text.is_empty() {
            return Err(self.error_here(needs()));
        }
        match kind {
            Kind::LocalPort => self.port(arg).map(Selector::LocalPort),
            Kind::Listener => self.endpoint(arg, kind).map(Selector::Listener),
            _ => self.endpoint(arg, kind).map(Selector::Destination),
        }
    }

    fn metric(&mut self, selector: Selector) -> Result<Metric, ParseError> {
        let kind = selector.kind();
        self.skip_ws();
        let word = self.take_while(is_word);
        if word.text.is_empty() {
            let reason = format!(
                "missing metric after `{selector}`; expected one of {}",
                kind.metric_list()
            );
            return Err(self.error_here(reason));
        }
        let Some(metric) = Metric::ALL.into_iter().find(|m| m.name() == word.text) else {
            let reason = format!(
                "unknown metric `{}` for {}; expected one of {}",
                word.text,
                kind.name(),
                kind.metric_list()
            );
            return Err(self.error(word.start, word.end(), reason));
        };
        if !kind.metrics().contains(&metric) {
            let owners: Vec<&str> = Kind::ALL
                .into_iter()
                .filter(|k| k.metrics().contains(&metric))
                .map(Kind::name)
                .collect();
            let reason = format!(
                "`{}` is a metric of {}, not {}; expected one of {}",
                word.text,
                owners.join(" and "),
                kind.name(),
                kind.metric_list()
            );
            return Err(self.error(word.start, word.end(), reason));
        }
        Ok(metric)
    }

    fn op(&mut self, metric: Metric) -> Result<Op, ParseError> {
        self.skip_ws();
        let token = self.take_while(|c| matches!(c, '<' | '>' | '=' | '!'));
        let hint = match token.text {
            ">=" => return Ok(Op::Ge),
            ">" => return Ok(Op::Gt),
            "<=" => return Ok(Op::Le),
            "<" => return Ok(Op::Lt),
            "==" => return Ok(Op::Eq),
            "" => {
                let reason = format!(
                    "missing operator after `{}`; expected one of {OPERATORS}",
                    metric.name()
                );
                return Err(self.error_here(reason));
            }
            "=" => " (did you mean `==`?)",
            "=>" => " (did you mean `>=`?)",
            "=<" => " (did you mean `<=`?)",
            _ => "",
        };
        let reason =
            format!("`{}` is not an operator{hint}; expected one of {OPERATORS}", token.text);
        Err(self.error(token.start, token.end(), reason))
    }

    fn value(&mut self, metric: Metric, op: Op) -> Result<f64, ParseError> {
        self.skip_ws();
        let token = self.take_while(|c| !c.is_whitespace());
        let text = token.text;
        let fail = |reason: String| Err(self.error(token.start, token.end(), reason));
        if text.is_empty() {
            let example = if metric.is_percent() {
                "a percentage such as 20%"
            } else {
                "a whole number such as 100000"
            };
            return Err(self
                .error_here(format!("missing value after `{}`; expected {example}", op.symbol())));
        }
        let not_percent = || format!("`{text}` is not a percentage; expected e.g. 20% or 12.5%");
        if let Some(number) = text.strip_suffix('%') {
            if !metric.is_percent() {
                return fail(format!(
                    "`{text}` is a percentage, but `{}` is a count; only use and headroom take percentages",
                    metric.name()
                ));
            }
            return match decimal(number) {
                None => fail(not_percent()),
                Some(pct) if pct > 100.0 => fail(format!("`{text}` is more than 100%")),
                Some(pct) => Ok(pct),
            };
        }
        if metric.is_percent() {
            return match decimal(text) {
                Some(_) => fail(format!(
                    "`{}` is a percentage of the ephemeral range: write `{text}%`",
                    metric.name()
                )),
                None => fail(not_percent()),
            };
        }
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return fail(format!(
                "`{text}` is not a count; expected a whole number such as 100000"
            ));
        }
        match text.parse::<u64>() {
            Ok(n) => Ok(count(n)),
            Err(_) => fail(format!("`{text}` is too large")),
        }
    }

    /// A port number, 1 to 65535: no connection has local or remote port 0.
    fn port(&self, token: Token<'_>) -> Result<u16, ParseError> {
        let port = if token.text.bytes().all(|b| b.is_ascii_digit()) {
            token.text.parse::<u16>().ok().filter(|&p| p != 0)
        } else {
            None
        };
        port.ok_or_else(|| {
            let reason = format!("`{}` is not a port: expected 1 to 65535", token.text);
            self.error(token.start, token.end(), reason)
        })
    }

    /// `ADDR:PORT`, IPv6 as `[ADDR]:PORT`. An IPv4-mapped IPv6 address is taken as the
    /// IPv4 address it carries, as the ledger keys it.
    fn endpoint(&self, token: Token<'_>, kind: Kind) -> Result<SocketAddr, ParseError> {
        let text = token.text;
        let (host, ip, port) = if let Some(rest) = text.strip_prefix('[') {
            let Some(close) = rest.find(']') else {
                let reason = "missing `]`: write IPv6 as [ADDR]:PORT, e.g. [::1]:9000".to_owned();
                return Err(self.error(token.start, token.end(), reason));
            };
            let host = token.sub(1, 1 + close);
            let ip = host.text.parse::<Ipv6Addr>().map_err(|_| {
                let reason = format!("`{}` is not an IPv6 address", host.text);
                self.error(host.start, host.end(), reason)
            })?;
            let after = token.sub(2 + close, text.len());
            if !after.text.starts_with(':') {
                let reason = format!("missing :PORT after `[{}]`", host.text);
                return Err(self.error(after.start, after.end(), reason));
            }
            (host, IpAddr::V6(ip), token.sub(3 + close, text.len()))
        } else {
            let Some(colon) = text.rfind(':') else {
                let reason =
                    format!("`{text}` has no port; expected ADDR:PORT, e.g. 127.0.0.1:9000");
                return Err(self.error(token.start, token.end(), reason));
            };
            let host = token.sub(0, colon);
            if host.text.is_empty() {
                let reason = "missing address before `:`; expected ADDR:PORT".to_owned();
                return Err(self.error(token.start, token.start, reason));
            }
            if host.text.contains(':') {
                let reason = "write IPv6 in brackets: [ADDR]:PORT, e.g. [::1]:9000".to_owned();
                return Err(self.error(token.start, token.end(), reason));
            }
            let ip = host.text.parse::<Ipv4Addr>().map_err(|_| {
                let reason = if host.text.bytes().any(|b| b.is_ascii_alphabetic()) {
                    format!("`{}` is not an IP address: names are not resolved", host.text)
                } else {
                    format!("`{}` is not an IPv4 address", host.text)
                };
                self.error(host.start, host.end(), reason)
            })?;
            (host, IpAddr::V4(ip), token.sub(colon + 1, text.len()))
        };
        if port.text.is_empty() {
            return Err(self.error(port.start, port.start, "missing port after `:`".into()));
        }
        let port = self.port(port)?;
        let ip = canonical_ip(ip);
        if kind == Kind::Destination && ip.is_unspecified() {
            let reason = format!(
                "`{}` cannot be a destination: name the address the clients connect to",
                host.text
            );
            return Err(self.error(host.start, host.end(), reason));
        }
        Ok(SocketAddr::new(ip, port))
    }

    fn skip_ws(&mut self) {
        let rest = &self.expr[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn at_end(&self) -> bool {
        self.pos == self.expr.len()
    }

    fn peek(&self) -> Option<char> {
        self.expr[self.pos..].chars().next()
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> Token<'a> {
        let start = self.pos;
        let rest = &self.expr[start..];
        let len = rest.find(|c| !keep(c)).unwrap_or(rest.len());
        self.pos += len;
        Token { text: &rest[..len], start }
    }

    fn error(&self, start: usize, end: usize, reason: String) -> ParseError {
        ParseError::new(self.expr, start, end, reason)
    }

    /// A problem at the current position: the next character, or just past the end.
    fn error_here(&self, reason: String) -> ParseError {
        let end = self.pos + self.peek().map_or(0, char::len_utf8);
        self.error(self.pos, end, reason)
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `20` or `12.5`: digits, with one optional dot between digits.
fn decimal(text: &str) -> Option<f64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(whole) && digits(frac) { text.parse().ok() } else { None }
}

#[expect(clippy::cast_precision_loss, reason = "counts of connections stay far below 2^53")]
fn count(n: u64) -> f64 {
    n as f64
}

/// The counts of one observation, as the check asks for them. The command implements it
/// over the ledger at each interval. A port, listener or destination with no live
/// connection is `None`, like a row the ledger does not have.
pub trait Observation {
    /// The live connections on local port `port`, on every local address and network
    /// namespace.
    fn lport(&self, port: u16) -> Option<PortValues>;
    /// The live connections whose local end is `addr`; an unspecified address (0.0.0.0 or
    /// ::) stands for every local address on that port, as a wildcard listener accepts on
    /// all of them.
    fn listener(&self, addr: SocketAddr) -> Option<PortValues>;
    /// The live connections to remote endpoint `addr`.
    fn destination(&self, addr: SocketAddr) -> Option<DestinationValues>;
    /// The whole box.
    fn total(&self) -> TotalValues;
}

/// The live connections of a local port or listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortValues {
    pub live: u64,
    /// Distinct remote IP addresses among them.
    pub remote_addrs: u64,
    /// The most live connections from any one remote IP address: how far one client is
    /// into its own ephemeral range toward this port.
    pub max_per_remote: u64,
}

/// One remote endpoint, as a client of it. Each local address in each network namespace
/// has its own ephemeral range toward it (one `capacity` destination row each): these are
/// the values of the one closest to running out, the row with the highest `use_pct`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DestinationValues {
    /// Live connections to the endpoint, from every local address and namespace.
    pub live: u64,
    /// Local ports taken toward the endpoint (`TIME_WAIT` included), in that row.
    pub ports_in_use: u64,
    /// `ports_in_use` in percent of that row's ephemeral range (above 100 when ports were
    /// bound by hand outside the range).
    pub use_pct: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TotalValues {
    pub live: u64,
    /// Events lost since the start (cumulative, as `watch` prints it).
    pub lost: u64,
    /// How many connections the live count differs from a sock_diag recount by, when one
    /// was made for this observation; `None` when not measured this time.
    pub drift: Option<u64>,
}

impl PortValues {
    fn get(self, metric: Metric) -> f64 {
        count(match metric {
            Metric::Live => self.live,
            Metric::RemoteAddrs => self.remote_addrs,
            Metric::MaxPerRemote => self.max_per_remote,
            _ => unreachable!("the parser gives ports and listeners only their own metrics"),
        })
    }
}

impl DestinationValues {
    fn get(self, metric: Metric) -> f64 {
        match metric {
            Metric::Live => count(self.live),
            Metric::PortsInUse => count(self.ports_in_use),
            Metric::Use => self.use_pct,
            // Negative when ports bound outside the range take use past 100%.
            Metric::Headroom => 100.0 - self.use_pct,
            _ => unreachable!("the parser gives destinations only their own metrics"),
        }
    }
}

/// How many lost events and how much drift the check accepts; `None` does not check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tolerance {
    pub max_lost: Option<u64>,
    pub max_drift: Option<u64>,
}

impl Tolerance {
    /// The default: counts are exact or the check fails.
    pub const EXACT: Self = Self { max_lost: Some(0), max_drift: Some(0) };

    /// From `--max-lost N`, `--max-drift N` and `--ignore-loss`. Lost events are what
    /// makes the live count drift, so `--ignore-loss` stops checking both, unless
    /// `--max-drift` is given too. With `--ignore-loss`, `--max-lost` is ignored: the CLI
    /// should declare the two in conflict.
    #[must_use]
    pub fn from_flags(max_lost: Option<u64>, max_drift: Option<u64>, ignore_loss: bool) -> Self {
        if ignore_loss {
            Self { max_lost: None, max_drift }
        } else {
            Self { max_lost: Some(max_lost.unwrap_or(0)), max_drift: Some(max_drift.unwrap_or(0)) }
        }
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Self::EXACT
    }
}

/// One expectation's value in one observation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sample {
    Value(f64),
    /// The selector has no live connection now: the metric's idle value (0, or 100%
    /// headroom).
    Idle,
    /// Drift, not measured in this observation: nothing to record.
    Unmeasured,
}

/// What the check keeps of one expectation over the run.
#[derive(Clone, Debug)]
struct Tracker {
    expectation: Expectation,
    /// Observations in which the selector had live connections (or drift was measured).
    samples: u64,
    /// The peak, or the minimum for headroom.
    extreme: Option<f64>,
    last: Option<f64>,
}

impl Tracker {
    fn record(&mut self, sample: Sample) {
        let value = match sample {
            Sample::Unmeasured => return,
            Sample::Idle => self.expectation.metric.idle(),
            Sample::Value(v) => {
                self.samples += 1;
                v
            }
        };
        self.last = Some(value);
        self.extreme = Some(match (self.extreme, self.expectation.rule()) {
            (None, _) => value,
            (Some(e), Rule::Minimum) => e.min(value),
            (Some(e), _) => e.max(value),
        });
    }

    fn result(&self) -> ExpectationResult {
        let e = &self.expectation;
        let rule = e.rule();
        let observed = match (self.samples, rule) {
            (0, _) => None,
            (_, Rule::Final) => self.last,
            _ => self.extreme,
        };
        let verdict = match observed {
            None => Verdict::NoData,
            Some(v) if e.op.holds(v, e.value) => Verdict::Pass,
            Some(_) => Verdict::Fail,
        };
        ExpectationResult {
            expr: e.to_string(),
            rule,
            expected: e.value,
            unit: if e.metric.is_percent() { Unit::Percent } else { Unit::Count },
            observed,
            samples: self.samples,
            verdict,
        }
    }
}

/// The expectations of one run and what has been observed of them so far.
#[derive(Clone, Debug)]
pub struct Check {
    trackers: Vec<Tracker>,
    tolerance: Tolerance,
    observations: u64,
    lost: u64,
    drift: Option<u64>,
}

impl Check {
    /// A check of `expectations` (none is allowed: then only loss and drift are checked).
    #[must_use]
    pub fn new(expectations: Vec<Expectation>, tolerance: Tolerance) -> Self {
        let trackers = expectations
            .into_iter()
            .map(|expectation| Tracker { expectation, samples: 0, extreme: None, last: None })
            .collect();
        Self { trackers, tolerance, observations: 0, lost: 0, drift: None }
    }

    /// Records one observation: call it once per interval, and once more at the end.
    pub fn observe(&mut self, obs: &dyn Observation) {
        self.observations += 1;
        let total = obs.total();
        self.lost = self.lost.max(total.lost);
        if let Some(drift) = total.drift {
            self.drift = Some(self.drift.map_or(drift, |d| d.max(drift)));
        }
        for t in &mut self.trackers {
            let sample = t.expectation.sample(obs);
            t.record(sample);
        }
    }

    /// The verdicts so far; `duration` is how long the run has been watching.
    #[must_use]
    pub fn report(&self, duration: Duration) -> Report {
        let expectations: Vec<ExpectationResult> =
            self.trackers.iter().map(Tracker::result).collect();
        let mut failures = Vec::new();
        if self.observations == 0 {
            failures
                .push("nothing was observed: the run ended before its first interval".to_owned());
        }
        for r in expectations.iter().filter(|r| r.verdict != Verdict::Pass) {
            failures.push(format!("{}: {}", r.expr, r.detail(self.observations)));
        }
        failures.extend(lost_excess(self.lost, self.tolerance.max_lost));
        failures.extend(drift_excess(self.drift, self.tolerance.max_drift));
        Report {
            passed: failures.is_empty(),
            // Milliseconds are plenty for a run measured in intervals.
            duration_s: (duration.as_secs_f64() * 1000.0).round() / 1000.0,
            observations: self.observations,
            expectations,
            lost: self.lost,
            lost_tolerance: self.tolerance.max_lost,
            drift: self.drift,
            drift_tolerance: self.tolerance.max_drift,
            failures,
        }
    }
}

/// The reason lost events fail the check, if they do.
fn lost_excess(lost: u64, max: Option<u64>) -> Option<String> {
    let max = max?;
    (lost > max).then(|| {
        format!(
            "{lost} events lost, {max} allowed: the counts may be off by up to {lost}; \
             raise --ring-size, or allow them with --max-lost or --ignore-loss"
        )
    })
}

/// The reason drift fails the check, if it does. A drift never measured does not.
fn drift_excess(drift: Option<u64>, max: Option<u64>) -> Option<String> {
    let (drift, max) = (drift?, max?);
    (drift > max).then(|| {
        format!(
            "drift {drift}, {max} allowed: the live count differed from a sock_diag recount \
             by {drift} connections; allow it with --max-drift"
        )
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The selector had no live connection in any observation (or drift was never
    /// measured): a failure, since nothing shows the claim.
    NoData,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Count,
    Percent,
}

/// One expectation's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// The expectation in canonical form: `dst=127.0.0.5:9000 headroom>=20%`.
    pub expr: String,
    /// Which value of the run `observed` is.
    pub rule: Rule,
    /// The VALUE of the expectation, in `unit`.
    pub expected: f64,
    pub unit: Unit,
    /// The value the verdict was made on; `None` with no data.
    pub observed: Option<f64>,
    /// Observations in which the selector had live connections (for drift: was measured).
    pub samples: u64,
    pub verdict: Verdict,
}

impl ExpectationResult {
    /// `peak 100000`, `minimum 12.5%`, or why there is no data.
    fn detail(&self, observations: u64) -> String {
        match self.observed {
            Some(v) => format!("{} {}", self.rule.name(), self.format(v)),
            None => match Expectation::parse(&self.expr).map(|e| (e.selector, e.metric)) {
                _ if observations == 0 => "no data: nothing was observed".to_owned(),
                Ok((Selector::Total, Metric::Drift)) => {
                    "no data: drift was never measured".to_owned()
                }
                Ok((Selector::Total, _)) => "no data".to_owned(),
                _ => format!("no data: no live connection in any of {observations} observations"),
            },
        }
    }

    fn format(&self, v: f64) -> String {
        match self.unit {
            Unit::Count => format!("{v}"),
            Unit::Percent => {
                let s = format!("{v:.3}");
                format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
            }
        }
    }
}

/// The outcome of a check, written as JSON by `--report` and read by [`summary`]. The
/// keys come in the order of the fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Every expectation passed, and loss and drift are within their tolerance.
    pub passed: bool,
    pub duration_s: f64,
    pub observations: u64,
    pub expectations: Vec<ExpectationResult>,
    /// Events lost over the run.
    pub lost: u64,
    /// The most lost events allowed; `None` when loss is not checked.
    pub lost_tolerance: Option<u64>,
    /// The largest drift measured; `None` when it was never measured.
    pub drift: Option<u64>,
    /// The most drift allowed; `None` when drift is not checked.
    pub drift_tolerance: Option<u64>,
    /// Why the check failed, one line per reason: failed expectations, then loss and drift.
    pub failures: Vec<String>,
}

impl Report {
    /// Pretty JSON, for `--report`.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    #[must_use]
    pub fn outcome(&self) -> Outcome {
        if self.passed { Outcome::Passed } else { Outcome::Failed }
    }

    fn failed_expectations(&self) -> usize {
        self.expectations.iter().filter(|r| r.verdict != Verdict::Pass).count()
    }
}

/// How `tcptrace check` ends, and its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every expectation held, within the loss and drift tolerance: exit 0.
    Passed,
    /// An expectation failed or had no data, or loss or drift exceeded the tolerance:
    /// exit 1.
    Failed,
    /// An expectation or flag did not parse: exit 2, as clap exits on bad flags.
    BadInput,
}

impl Outcome {
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Passed => 0,
            Self::Failed => 1,
            Self::BadInput => 2,
        }
    }
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        Self::from(outcome.code())
    }
}

/// The report for a person: a line per expectation (PASS, FAIL or NO DATA, and the value
/// it was judged on), a line each for loss and drift, and a last line that says whether
/// the check passed and, if not, what failed. Each line ends in a newline.
#[must_use]
pub fn summary(r: &Report) -> String {
    let n = r.expectations.len();
    let plural = if n == 1 { "" } else { "s" };
    let mut out = format!(
        "tcptrace check: {n} expectation{plural}, {} observations over {:.1}s\n",
        r.observations, r.duration_s
    );
    let width = r.expectations.iter().map(|e| e.expr.chars().count()).max().unwrap_or(0);
    for e in &r.expectations {
        let status = match e.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NoData => "NO DATA",
        };
        let _ = writeln!(out, "{status:<8} {:<width$}  {}", e.expr, e.detail(r.observations));
    }
    let lost = match (lost_excess(r.lost, r.lost_tolerance), r.lost_tolerance) {
        (Some(reason), _) => ("FAIL", reason),
        (None, Some(max)) => ("PASS", format!("lost {} events ({max} allowed)", r.lost)),
        (None, None) => ("-", format!("lost {} events (not checked)", r.lost)),
    };
    let drift = match (drift_excess(r.drift, r.drift_tolerance), r.drift, r.drift_tolerance) {
        (Some(reason), _, _) => ("FAIL", reason),
        (None, None, _) => ("-", "drift not measured".to_owned()),
        (None, Some(d), Some(max)) => ("PASS", format!("drift {d} ({max} allowed)")),
        (None, Some(d), None) => ("-", format!("drift {d} (not checked)")),
    };
    for (status, line) in [lost, drift] {
        let _ = writeln!(out, "{status:<8} {line}");
    }
    if r.passed {
        out.push_str("check passed\n");
        return out;
    }
    let mut what = Vec::new();
    let failed = r.failed_expectations();
    if failed > 0 {
        what.push(format!("{failed} of {n} expectation{plural}"));
    }
    if r.observations == 0 {
        what.push("nothing observed".to_owned());
    }
    if lost_excess(r.lost, r.lost_tolerance).is_some() {
        what.push(format!("{} events lost", r.lost));
    }
    if let (Some(d), Some(_)) = (r.drift, drift_excess(r.drift, r.drift_tolerance)) {
        what.push(format!("drift {d}"));
    }
    let _ = writeln!(out, "check FAILED: {}", what.join(", "));
    out
}

#[cfg(test)]
#[expect(clippy::float_cmp, reason = "the values compared are whole numbers or short decimals")]
mod tests {
    use std::collections::HashMap;

    use serde_json::Value;

    use super::*;

    fn parse(expr: &str) -> Expectation {
        Expectation::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    /// The column, width and reason of a bad expression.
    fn error(expr: &str) -> (usize, usize, String) {
        match Expectation::parse(expr) {
            Ok(e) => panic!("{expr} parsed as {e:?}"),
            Err(e) => {
                assert_eq!(e.expr, expr);
                (e.column, e.width, e.reason)
            }
        }
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    // ---- grammar: good input ----

    #[test]
    fn parses_each_selector() {
        let e = parse("lport=8080 live>=100000");
        assert_eq!(e.selector(), Selector::LocalPort(8080));
        assert_eq!((e.metric(), e.op(), e.value()), (Metric::Live, Op::Ge, 100_000.0));

        let e = parse("listener=[::1]:443 remote_addrs<5");
        assert_eq!(e.selector(), Selector::Listener(sock("[::1]:443")));
        assert_eq!((e.metric(), e.op(), e.value()), (Metric::RemoteAddrs, Op::Lt, 5.0));

        let e = parse("listener=0.0.0.0:8080 max_per_remote<=28232");
        assert_eq!(e.selector(), Selector::Listener(sock("0.0.0.0:8080")));

        let e = parse("dst=127.0.0.5:9000 headroom>=20%");
        assert_eq!(e.selector(), Selector::Destination(sock("127.0.0.5:9000")));
        assert_eq!((e.metric(), e.op(), e.value()), (Metric::Headroom, Op::Ge, 20.0));

        let e = parse("total drift==0");
        assert_eq!(
            (e.selector(), e.metric(), e.op(), e.value()),
            (Selector::Total, Metric::Drift, Op::Eq, 0.0)
        );
    }

    #[test]
    fn every_metric_of_every_selector_and_every_operator_parses() {
        let selectors = ["lport=1", "listener=10.0.0.1:80", "dst=[2001:db8::1]:443", "total"];
        for (kind, selector) in Kind::ALL.into_iter().zip(selectors) {
            for &metric in kind.metrics() {
                for op in [Op::Ge, Op::Gt, Op::Le, Op::Lt, Op::Eq] {
                    let value = if metric.is_percent() { "12.5%" } else { "7" };
                    let expr = format!("{selector} {}{}{value}", metric.name(), op.symbol());
                    let e = parse(&expr);
                    assert_eq!((e.selector().kind(), e.metric(), e.op()), (kind, metric, op));
                    assert_eq!(e.value(), if metric.is_percent() { 12.5 } else { 7.0 });
                    // The canonical form is what was written, and parses back the same.
                    assert_eq!(e.to_string(), expr);
                    assert_eq!(parse(&e.to_string()), e);
                }
            }
        }
    }

    #[test]
    fn whitespace_is_free_around_tokens() {
        let e = parse("  lport = 8080\t live >=  100000  ");
        assert_eq!(e, parse("lport=8080 live>=100000"));
        assert_eq!(e.to_string(), "lport=8080 live>=100000");
        assert_eq!(parse("total   lost <= 0").to_string(), "total lost<=0");
    }

    #[test]
    fn addresses_are_canonical() {
        // An IPv4-mapped IPv6 address is the IPv4 address it carries, as the ledger has it.
        let e = parse("dst=[::ffff:127.0.0.5]:9000 live>=1");
        assert_eq!(e.selector(), Selector::Destination(sock("127.0.0.5:9000")));
        assert_eq!(e.to_string(), "dst=127.0.0.5:9000 live>=1");
        assert_eq!(parse("listener=[::]:80 live>=1").to_string(), "listener=[::]:80 live>=1");
        assert_eq!(parse("lport=00080 live>=1").selector(), Selector::LocalPort(80));
        assert_eq!(parse("lport=65535 live>=1").selector(), Selector::LocalPort(65535));
    }

    #[test]
    fn values_and_percentages() {
        assert_eq!(parse("dst=10.0.0.1:1 use<=100%").value(), 100.0);
        assert_eq!(parse("dst=10.0.0.1:1 use<=0%").value(), 0.0);
        assert_eq!(
            parse("dst=10.0.0.1:1 headroom>=0.5%").to_string(),
            "dst=10.0.0.1:1 headroom>=0.5%"
        );
        assert_eq!(parse("total live>=18446744073709551615").value(), count(u64::MAX));
        assert_eq!(parse("total live<=0").value(), 0.0);
    }

    // ---- grammar: bad input, with where and why ----

    #[test]
    fn empty() {
        let reason =
            "empty expectation; expected SELECTOR METRIC OP VALUE, e.g. `lport=8080 live>=100000`";
        assert_eq!(error(""), (1, 1, reason.into()));
        assert_eq!(error("   "), (4, 1, reason.into()));
    }

    #[test]
    fn bad_selectors() {
        assert_eq!(
            error("port=8080 live>=1"),
            (1, 4, format!("unknown selector `port`; expected one of {SELECTORS}"))
        );
        assert_eq!(
            error("  live>=5"),
            (3, 4, format!("`live` is a metric; start with a selector: {SELECTORS}"))
        );
        assert_eq!(error(">=5"), (1, 3, format!("expected a selector: one of {SELECTORS}")));
        assert_eq!(error("lport 8080 live>=1"), (7, 1, "`lport` needs a port: lport=PORT".into()));
        assert_eq!(error("lport:8080 live>=1"), (6, 1, "`lport` needs a port: lport=PORT".into()));
        assert_eq!(error("lport="), (7, 1, "`lport` needs a port: lport=PORT".into()));
        assert_eq!(
            error("listener live>=1"),
            (10, 1, "`listener` needs an address: listener=ADDR:PORT".into())
        );
        assert_eq!(error("dst"), (4, 1, "`dst` needs an address: dst=ADDR:PORT".into()));
        assert_eq!(
            error("total=1 live>=1"),
            (6, 1, "`total` takes no value: it is the whole box".into())
        );
        assert_eq!(
            error("totallive>=1"),
            (1, 9, format!("unknown selector `totallive`; expected one of {SELECTORS}"))
        );
    }

    #[test]
    fn bad_ports() {
        for (expr, col, width, port) in [
            ("lport=99999 live>=1", 7, 5, "99999"),
            ("lport=0 live>=1", 7, 1, "0"),
            ("lport=80a live>=1", 7, 3, "80a"),
            ("lport=+80 live>=1", 7, 3, "+80"),
            ("lport=-1 live>=1", 7, 2, "-1"),
            ("dst=127.0.0.1:70000 live>=1", 15, 5, "70000"),
            ("listener=[::1]:0 live>=1", 16, 1, "0"),
        ] {
            let reason = format!("`{port}` is not a port: expected 1 to 65535");
            assert_eq!(error(expr), (col, width, reason), "{expr}");
        }
    }

    #[test]
    fn bad_addresses() {
        let cases = [
            (
                "dst=127.0.0.5 live>=1",
                5,
                9,
                "`127.0.0.5` has no port; expected ADDR:PORT, e.g. 127.0.0.1:9000",
            ),
            ("dst=::1:9000 live>=1", 5, 8, "write IPv6 in brackets: [ADDR]:PORT, e.g. [::1]:9000"),
            (
                "dst=2001:db8::1 live>=1",
                5,
                11,
                "write IPv6 in brackets: [ADDR]:PORT, e.g. [::1]:9000",
            ),
            ("dst=[::1 live>=1", 5, 4, "missing `]`: write IPv6 as [ADDR]:PORT, e.g. [::1]:9000"),
            ("dst=[::g]:9000 live>=1", 6, 3, "`::g` is not an IPv6 address"),
            ("dst=[127.0.0.1]:9000 live>=1", 6, 9, "`127.0.0.1` is not an IPv6 address"),
            ("dst=[::1]9000 live>=1", 10, 4, "missing :PORT after `[::1]`"),
            ("dst=[::1] live>=1", 10, 1, "missing :PORT after `[::1]`"),
            ("dst=127.0.0.256:80 live>=1", 5, 11, "`127.0.0.256` is not an IPv4 address"),
            ("dst=:80 live>=1", 5, 1, "missing address before `:`; expected ADDR:PORT"),
            (
                "dst=localhost:80 live>=1",
                5,
                9,
                "`localhost` is not an IP address: names are not resolved",
            ),
            ("dst=127.0.0.1: live>=1", 15, 1, "missing port after `:`"),
            (
                "dst=0.0.0.0:80 live>=1",
                5,
                7,
                "`0.0.0.0` cannot be a destination: name the address the clients connect to",
            ),
            (
                "dst=[::]:80 live>=1",
                6,
                2,
                "`::` cannot be a destination: name the address the clients connect to",
            ),
            (
                "listener=10.0.0.1 live>=1",
                10,
                8,
                "`10.0.0.1` has no port; expected ADDR:PORT, e.g. 127.0.0.1:9000",
            ),
        ];
        for (expr, col, width, reason) in cases {
            assert_eq!(error(expr), (col, width, reason.to_owned()), "{expr}");
        }
    }

    #[test]
    fn bad_metrics() {
        assert_eq!(
            error("lport=8080 lve>=100000"),
            (
                12,
                3,
                "unknown metric `lve` for lport; expected one of live, remote_addrs, max_per_remote"
                    .into()
            )
        );
        assert_eq!(
            error("lport=8080 headroom>=20%"),
            (
                12,
                8,
                "`headroom` is a metric of dst, not lport; expected one of live, remote_addrs, max_per_remote"
                    .into()
            )
        );
        assert_eq!(
            error("total remote_addrs>=1"),
            (
                7,
                12,
                "`remote_addrs` is a metric of lport and listener, not total; expected one of live, lost, drift"
                    .into()
            )
        );
        assert_eq!(
            error("dst=10.0.0.1:80 lost<=0"),
            (
                17,
                4,
                "`lost` is a metric of total, not dst; expected one of ports_in_use, use, headroom, live"
                    .into()
            )
        );
        assert_eq!(
            error("lport=8080"),
            (
                11,
                1,
                "missing metric after `lport=8080`; expected one of live, remote_addrs, max_per_remote"
                    .into()
            )
        );
        assert_eq!(
            error("total >=1"),
            (7, 1, "missing metric after `total`; expected one of live, lost, drift".into())
        );
        // Columns count characters, not bytes.
        assert_eq!(error("lport=8080 lïve>=1").0, 12);
        assert_eq!(error("lport=8080 lïve>=1").1, 4);
    }

    #[test]
    fn bad_operators() {
        let expected = format!("expected one of {OPERATORS}");
        assert_eq!(
            error("lport=8080 live"),
            (16, 1, format!("missing operator after `live`; {expected}"))
        );
        assert_eq!(
            error("lport=8080 live 5"),
            (17, 1, format!("missing operator after `live`; {expected}"))
        );
        assert_eq!(
            error("lport=8080 live=5"),
            (16, 1, format!("`=` is not an operator (did you mean `==`?); {expected}"))
        );
        assert_eq!(
            error("lport=8080 live=>5"),
            (16, 2, format!("`=>` is not an operator (did you mean `>=`?); {expected}"))
        );
        assert_eq!(
            error("lport=8080 live=<5"),
            (16, 2, format!("`=<` is not an operator (did you mean `<=`?); {expected}"))
        );
        assert_eq!(
            error("lport=8080 live!=5"),
            (16, 2, format!("`!=` is not an operator; {expected}"))
        );
        assert_eq!(
            error("lport=8080 live>>5"),
            (16, 2, format!("`>>` is not an operator; {expected}"))
        );
    }

    #[test]
    fn bad_values() {
        let not_count =
            |v: &str| format!("`{v}` is not a count; expected a whole number such as 100000");
        assert_eq!(
            error("lport=8080 live>="),
            (18, 1, "missing value after `>=`; expected a whole number such as 100000".into())
        );
        assert_eq!(
            error("dst=10.0.0.1:80 use<"),
            (21, 1, "missing value after `<`; expected a percentage such as 20%".into())
        );
        assert_eq!(error("lport=8080 live>=abc"), (18, 3, not_count("abc")));
        assert_eq!(error("lport=8080 live>=1.5"), (18, 3, not_count("1.5")));
        assert_eq!(error("lport=8080 live>=1e5"), (18, 3, not_count("1e5")));
        assert_eq!(error("lport=8080 live >= -1"), (20, 2, not_count("-1")));
        assert_eq!(
            error("lport=8080 live>=99999999999999999999999"),
            (18, 23, "`99999999999999999999999` is too large".into())
        );
        assert_eq!(
            error("lport=8080 live>=20%"),
            (
                18,
                3,
                "`20%` is a percentage, but `live` is a count; only use and headroom take percentages"
                    .into()
            )
        );
        assert_eq!(
            error("dst=127.0.0.5:9000 headroom>=20"),
            (30, 2, "`headroom` is a percentage of the ephemeral range: write `20%`".into())
        );
        assert_eq!(
            error("dst=127.0.0.5:9000 use<=12.5"),
            (25, 4, "`use` is a percentage of the ephemeral range: write `12.5%`".into())
        );
        let not_pct = |v: &str| format!("`{v}` is not a percentage; expected e.g. 20% or 12.5%");
        for (expr, col, width, v) in [
            ("dst=127.0.0.5:9000 use<=x%", 25, 2, "x%"),
            ("dst=127.0.0.5:9000 use<=%", 25, 1, "%"),
            ("dst=127.0.0.5:9000 use<=.5%", 25, 3, ".5%"),
            ("dst=127.0.0.5:9000 use<=5.%", 25, 3, "5.%"),
            ("dst=127.0.0.5:9000 use<=1.2.3%", 25, 6, "1.2.3%"),
            ("dst=127.0.0.5:9000 use<=-5%", 25, 3, "-5%"),
            ("dst=127.0.0.5:9000 use<=ten", 25, 3, "ten"),
        ] {
            assert_eq!(error(expr), (col, width, not_pct(v)), "{expr}");
        }
        assert_eq!(
            error("dst=127.0.0.5:9000 use<=120%"),
            (25, 4, "`120%` is more than 100%".into())
        );
    }

    #[test]
    fn trailing_input() {
        assert_eq!(
            error("lport=8080 live>=1 total live<=5  "),
            (
                20,
                13,
                "unexpected `total live<=5` after the value; give one expectation per --expect"
                    .into()
            )
        );
    }

    #[test]
    fn error_shows_the_expression_with_a_caret_line() {
        let err = Expectation::parse("lport=8080 lve>=100000").unwrap_err();
        assert_eq!(
            err.to_string(),
            [
                "column 12: unknown metric `lve` for lport; expected one of live, remote_addrs, max_per_remote",
                "  lport=8080 lve>=100000",
                "             ^^^",
            ]
            .join("\n")
        );
        // A tab is one column, shown as a space so that the caret lines up.
        let err = Expectation::parse("lport=8080\tlive>>1").unwrap_err();
        assert!(err.to_string().ends_with("\n  lport=8080 live>>1\n                 ^^"), "{err}");
        // Past the end: the caret goes just after the last character.
        let err = Expectation::parse("total live").unwrap_err();
        assert!(err.to_string().ends_with("\n  total live\n            ^"), "{err}");
    }

    #[test]
    fn clap_takes_expectations_and_shows_where_they_are_wrong() {
        use clap::Parser as _;

        #[derive(clap::Parser, Debug)]
        struct Args {
            #[arg(long = "expect", required = true, long_help = EXPECT_HELP)]
            expect: Vec<Expectation>,
        }
        let args = Args::try_parse_from([
            "check",
            "--expect",
            "lport=8080 live>=100000",
            "--expect",
            "dst=127.0.0.5:9000 headroom>=20%",
        ])
        .unwrap();
        assert_eq!(
            args.expect,
            [parse("lport=8080 live>=100000"), parse("dst=127.0.0.5:9000 headroom>=20%")]
        );

        let err = Args::try_parse_from(["check", "--expect", "lport=8080 lve>=1"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(Outcome::BadInput.code()));
        let text = err.to_string();
        assert!(text.contains("column 12: unknown metric `lve`"), "{text}");
        assert!(text.contains("\n  lport=8080 lve>=1\n             ^^^"), "{text}");
    }

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

    // ---- evaluation over time ----

    /// One observation, built by hand.
    #[derive(Clone, Debug, Default)]
    struct Fake {
        ports: HashMap<u16, PortValues>,
        listeners: HashMap<SocketAddr, PortValues>,
        destinations: HashMap<SocketAddr, DestinationValues>,
        total: TotalValues,
    }

    impl Observation for Fake {
        fn lport(&self, port: u16) -> Option<PortValues> {
            self.ports.get(&port).copied()
        }
        fn listener(&self, addr: SocketAddr) -> Option<PortValues> {
            self.listeners.get(&addr).copied()
        }
        fn destination(&self, addr: SocketAddr) -> Option<DestinationValues> {
            self.destinations.get(&addr).copied()
        }
        fn total(&self) -> TotalValues {
            self.total
        }
    }

    const DST: &str = "127.0.0.5:9000";

    /// Port 8080 with these live counts (`None`: no live connection).
    fn port_live(values: &[Option<u64>]) -> Vec<Fake> {
        values
            .iter()
            .map(|v| {
                let mut f = Fake::default();
                if let Some(live) = *v {
                    f.ports
                        .insert(8080, PortValues { live, remote_addrs: 1, max_per_remote: live });
                }
                f
            })
            .collect()
    }

    /// `DST` with these ports in use, of a range of 100 (`None`: no live connection).
    fn dst_ports(values: &[Option<u64>]) -> Vec<Fake> {
        values
            .iter()
            .map(|v| {
                let mut f = Fake::default();
                if let Some(ports) = *v {
                    f.destinations.insert(
                        sock(DST),
                        DestinationValues {
                            live: ports,
                            ports_in_use: ports,
                            use_pct: count(ports),
                        },
                    );
                }
                f
            })
            .collect()
    }

    fn run(exprs: &[&str], observations: &[Fake], tolerance: Tolerance) -> Report {
        let mut check = Check::new(exprs.iter().map(|e| parse(e)).collect(), tolerance);
        for o in observations {
            check.observe(o);
        }
        check.report(Duration::from_mins(1))
    }

    /// The observed value, rule and verdict of one expectation over `observations`.
    fn judge(expr: &str, observations: &[Fake]) -> (Option<f64>, Rule, Verdict) {
        let r = run(&[expr], observations, Tolerance::EXACT);
        let e = &r.expectations[0];
        assert_eq!(r.passed, e.verdict == Verdict::Pass);
        (e.observed, e.rule, e.verdict)
    }

    use Verdict::{Fail, NoData, Pass};

    #[test]
    fn at_least_is_judged_on_the_peak() {
        let obs = port_live(&[Some(50), Some(120), Some(10)]);
        assert_eq!(judge("lport=8080 live>=100", &obs), (Some(120.0), Rule::Peak, Pass));
        assert_eq!(judge("lport=8080 live>=120", &obs), (Some(120.0), Rule::Peak, Pass));
        assert_eq!(judge("lport=8080 live>=121", &obs), (Some(120.0), Rule::Peak, Fail));
        assert_eq!(judge("lport=8080 live>119", &obs), (Some(120.0), Rule::Peak, Pass));
        assert_eq!(judge("lport=8080 live>120", &obs), (Some(120.0), Rule::Peak, Fail));
    }

    #[test]
    fn at_most_is_judged_on_the_peak() {
        let obs = port_live(&[Some(50), Some(120), Some(10)]);
        assert_eq!(judge("lport=8080 live<=100", &obs), (Some(120.0), Rule::Peak, Fail));
        assert_eq!(judge("lport=8080 live<=120", &obs), (Some(120.0), Rule::Peak, Pass));
        assert_eq!(judge("lport=8080 live<120", &obs), (Some(120.0), Rule::Peak, Fail));
        assert_eq!(judge("lport=8080 live<121", &obs), (Some(120.0), Rule::Peak, Pass));
    }

    #[test]
    fn equal_is_judged_on_the_final_value() {
        let obs = port_live(&[Some(5), Some(7), Some(3)]);
        assert_eq!(judge("lport=8080 live==3", &obs), (Some(3.0), Rule::Final, Pass));
        assert_eq!(judge("lport=8080 live==7", &obs), (Some(3.0), Rule::Final, Fail));
        let obs = dst_ports(&[Some(10), Some(25)]);
        assert_eq!(judge("dst=127.0.0.5:9000 use==25%", &obs), (Some(25.0), Rule::Final, Pass));
        assert_eq!(
            judge("dst=127.0.0.5:9000 headroom==75%", &obs),
            (Some(75.0), Rule::Final, Pass)
        );
    }

    #[test]
    fn headroom_is_judged_on_its_minimum() {
        // 10, 85, 30 ports of 100 in use: headroom 90%, 15%, 70%.
        let obs = dst_ports(&[Some(10), Some(85), Some(30)]);
        let at = |expr: &str| judge(&format!("dst={DST} {expr}"), &obs);
        // A floor must hold at the worst moment...
        assert_eq!(at("headroom>=15%"), (Some(15.0), Rule::Minimum, Pass));
        assert_eq!(at("headroom>=20%"), (Some(15.0), Rule::Minimum, Fail));
        assert_eq!(at("headroom>15%"), (Some(15.0), Rule::Minimum, Fail));
        // ...and getting close to exhaustion is shown by getting there once.
        assert_eq!(at("headroom<=15%"), (Some(15.0), Rule::Minimum, Pass));
        assert_eq!(at("headroom<16%"), (Some(15.0), Rule::Minimum, Pass));
        assert_eq!(at("headroom<=10%"), (Some(15.0), Rule::Minimum, Fail));
        // Use mirrors it with the peak.
        assert_eq!(at("use<=80%"), (Some(85.0), Rule::Peak, Fail));
        assert_eq!(at("use<=85%"), (Some(85.0), Rule::Peak, Pass));
        assert_eq!(at("use>=50%"), (Some(85.0), Rule::Peak, Pass));
        assert_eq!(at("ports_in_use<=85"), (Some(85.0), Rule::Peak, Pass));
    }

    #[test]
    fn use_past_the_range() {
        // Ports bound outside the range can take use past 100%, headroom below 0.
        let obs = dst_ports(&[Some(150)]);
        assert_eq!(judge(&format!("dst={DST} use>=100%"), &obs), (Some(150.0), Rule::Peak, Pass));
        assert_eq!(
            judge(&format!("dst={DST} headroom>=0%"), &obs),
            (Some(-50.0), Rule::Minimum, Fail)
        );
    }

    #[test]
    fn no_live_connection_counts_as_zero_once_seen() {
        // The port empties at the end: it ends at 0, and its peak stays.
        let obs = port_live(&[Some(5), None]);
        assert_eq!(judge("lport=8080 live==0", &obs), (Some(0.0), Rule::Final, Pass));
        assert_eq!(judge("lport=8080 live<=5", &obs), (Some(5.0), Rule::Peak, Pass));
        let obs = port_live(&[None, Some(5), None]);
        assert_eq!(judge("lport=8080 live>=5", &obs), (Some(5.0), Rule::Peak, Pass));
        // A destination without connections has all its headroom.
        let obs = dst_ports(&[None, Some(50), None]);
        assert_eq!(
            judge(&format!("dst={DST} headroom==100%"), &obs),
            (Some(100.0), Rule::Final, Pass)
        );
        assert_eq!(
            judge(&format!("dst={DST} headroom>=50%"), &obs),
            (Some(50.0), Rule::Minimum, Pass)
        );
        assert_eq!(judge(&format!("dst={DST} use==0%"), &obs), (Some(0.0), Rule::Final, Pass));
    }

    #[test]
    fn a_selector_never_seen_has_no_data_and_fails() {
        let obs = port_live(&[Some(5), Some(6)]);
        // Claims that an empty port would satisfy fail all the same: a typo must not pass.
        for expr in ["lport=8081 live<=10", "lport=8081 live==0", "lport=8081 live>=1"] {
            assert_eq!(
                judge(expr, &obs),
                (None, if expr.contains("==") { Rule::Final } else { Rule::Peak }, NoData)
            );
        }
        assert_eq!(judge("listener=10.0.0.1:8080 live<=10", &obs).2, NoData);
        assert_eq!(judge(&format!("dst={DST} headroom>=20%"), &obs).2, NoData);
        let r = run(&["lport=8080 live>=6", "lport=8081 live<=10"], &obs, Tolerance::EXACT);
        assert!(!r.passed);
        assert_eq!(r.expectations[0].samples, 2);
        assert_eq!(r.expectations[1].samples, 0);
        assert_eq!(
            r.failures,
            ["lport=8081 live<=10: no data: no live connection in any of 2 observations"]
        );
    }

    #[test]
    fn nothing_observed_fails() {
        let r = run(&["total live>=0"], &[], Tolerance::EXACT);
        assert!(!r.passed);
        assert_eq!(r.observations, 0);
        assert_eq!(r.expectations[0].verdict, NoData);
        assert_eq!(
            r.failures,
            [
                "nothing was observed: the run ended before its first interval",
                "total live>=0: no data: nothing was observed"
            ]
        );
        // Even with no expectation at all.
        assert!(!run(&[], &[], Tolerance::EXACT).passed);
        assert!(run(&[], &[Fake::default()], Tolerance::EXACT).passed);
    }

    #[test]
    fn each_metric_reads_its_own_value() {
        let mut o = Fake::default();
        o.ports.insert(80, PortValues { live: 10, remote_addrs: 3, max_per_remote: 6 });
        o.listeners
            .insert(sock("[::1]:443"), PortValues { live: 20, remote_addrs: 4, max_per_remote: 9 });
        o.destinations
            .insert(sock(DST), DestinationValues { live: 30, ports_in_use: 25, use_pct: 25.0 });
        o.total = TotalValues { live: 60, lost: 0, drift: Some(0) };
        let obs = [o];
        for (expr, value) in [
            ("lport=80 live==10", 10.0),
            ("lport=80 remote_addrs==3", 3.0),
            ("lport=80 max_per_remote==6", 6.0),
            ("listener=[::1]:443 live==20", 20.0),
            ("listener=[::1]:443 remote_addrs==4", 4.0),
            ("listener=[::1]:443 max_per_remote==9", 9.0),
            ("dst=127.0.0.5:9000 live==30", 30.0),
            ("dst=127.0.0.5:9000 ports_in_use==25", 25.0),
            ("dst=127.0.0.5:9000 use==25%", 25.0),
            ("dst=127.0.0.5:9000 headroom==75%", 75.0),
            ("total live==60", 60.0),
            ("total lost==0", 0.0),
            ("total drift==0", 0.0),
        ] {
            assert_eq!(judge(expr, &obs), (Some(value), Rule::Final, Pass), "{expr}");
        }
    }

    fn totals(values: &[(u64, u64, Option<u64>)]) -> Vec<Fake> {
        values
            .iter()
            .map(|&(live, lost, drift)| Fake {
                total: TotalValues { live, lost, drift },
                ..Fake::default()
            })
            .collect()
    }

    #[test]
    fn drift_is_judged_on_its_measurements_only() {
        let obs = totals(&[(5, 0, None), (6, 0, Some(2)), (7, 0, None)]);
        assert_eq!(judge("total drift<=2", &[obs[0].clone()]), (None, Rule::Peak, NoData));
        let r = run(
            &["total drift<=2", "total drift==2", "total live==7"],
            &obs,
            Tolerance::from_flags(None, Some(2), false),
        );
        let observed: Vec<_> =
            r.expectations.iter().map(|e| (e.observed, e.samples, e.verdict)).collect();
        assert_eq!(observed, [(Some(2.0), 1, Pass), (Some(2.0), 1, Pass), (Some(7.0), 3, Pass)]);
        assert_eq!(r.drift, Some(2));
        assert!(r.passed);
        let r = run(&["total drift<=2"], &obs[..1], Tolerance::EXACT);
        assert_eq!(r.failures, ["total drift<=2: no data: drift was never measured"]);
    }

    // ---- loss and drift tolerance ----

    #[test]
    fn tolerance_from_flags() {
        assert_eq!(Tolerance::from_flags(None, None, false), Tolerance::EXACT);
        assert_eq!(Tolerance::default(), Tolerance::EXACT);
        assert_eq!(
            Tolerance::from_flags(Some(5), Some(2), false),
            Tolerance { max_lost: Some(5), max_drift: Some(2) }
        );
        assert_eq!(
            Tolerance::from_flags(None, None, true),
            Tolerance { max_lost: None, max_drift: None }
        );
        assert_eq!(
            Tolerance::from_flags(None, Some(3), true),
            Tolerance { max_lost: None, max_drift: Some(3) }
        );
    }

    #[test]
    fn lost_events_fail_the_check_beyond_the_tolerance() {
        // Lost is cumulative: the report has the last (largest) count.
        let obs = totals(&[(5, 0, None), (5, 3, None), (5, 3, Some(0))]);
        let r = run(&["total live>=5"], &obs, Tolerance::EXACT);
        assert_eq!((r.lost, r.lost_tolerance), (3, Some(0)));
        assert_eq!(r.expectations[0].verdict, Pass);
        assert!(!r.passed);
        assert_eq!(r.outcome(), Outcome::Failed);
        assert_eq!(
            r.failures,
            ["3 events lost, 0 allowed: the counts may be off by up to 3; raise --ring-size, \
              or allow them with --max-lost or --ignore-loss"]
        );
        assert!(run(&["total live>=5"], &obs, Tolerance::from_flags(Some(3), None, false)).passed);
        assert!(!run(&["total live>=5"], &obs, Tolerance::from_flags(Some(2), None, false)).passed);
        let r = run(&["total live>=5"], &obs, Tolerance::from_flags(None, None, true));
        assert!(r.passed);
        assert_eq!((r.lost, r.lost_tolerance), (3, None));
    }

    #[test]
    fn drift_fails_the_check_beyond_the_tolerance() {
        let obs = totals(&[(5, 0, Some(1)), (5, 0, Some(3)), (5, 0, Some(0))]);
        let r = run(&[], &obs, Tolerance::EXACT);
        // The largest measurement is the one that counts.
        assert_eq!((r.drift, r.drift_tolerance), (Some(3), Some(0)));
        assert_eq!(
            r.failures,
            ["drift 3, 0 allowed: the live count differed from a sock_diag recount by 3 \
              connections; allow it with --max-drift"]
        );
        assert!(run(&[], &obs, Tolerance::from_flags(None, Some(3), false)).passed);
        assert!(run(&[], &obs, Tolerance::from_flags(None, None, true)).passed);
        assert!(!run(&[], &obs, Tolerance::from_flags(None, Some(2), true)).passed);
        // A drift never measured fails no tolerance.
        let r = run(&[], &totals(&[(5, 0, None)]), Tolerance::EXACT);
        assert!(r.passed);
        assert_eq!(r.drift, None);
    }

    // ---- report, summary, exit code ----

    fn mixed_report() -> Report {
        let mut a = Fake::default();
        a.ports.insert(8080, PortValues { live: 100_000, remote_addrs: 4, max_per_remote: 25_000 });
        a.destinations
            .insert(sock(DST), DestinationValues { live: 85, ports_in_use: 85, use_pct: 85.0 });
        a.total = TotalValues { live: 100_085, lost: 2, drift: None };
        let mut b = a.clone();
        b.destinations
            .insert(sock(DST), DestinationValues { live: 30, ports_in_use: 30, use_pct: 30.0 });
        b.total.drift = Some(0);
        run(
            &["lport=8080 live>=100000", "dst=127.0.0.5:9000 headroom>=20%", "lport=9999 live<=10"],
            &[a, b],
            Tolerance::EXACT,
        )
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = mixed_report();
        let json = r.to_json();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);

        let v: Value = serde_json::from_str(&json).unwrap();
        let keys = [
            "passed",
            "duration_s",
            "observations",
            "expectations",
            "lost",
            "lost_tolerance",
            "drift",
            "drift_tolerance",
            "failures",
        ];
        assert_eq!(v.as_object().unwrap().len(), keys.len());
        let positions: Vec<usize> =
            keys.iter().map(|k| json.find(&format!("\n  \"{k}\":")).unwrap()).collect();
        assert!(positions.is_sorted(), "{json}");
        assert_eq!(v["passed"], false);
        assert_eq!(v["duration_s"], 60.0);
        assert_eq!(v["observations"], 2);
        assert_eq!((v["lost"].as_u64(), v["lost_tolerance"].as_u64()), (Some(2), Some(0)));
        assert_eq!((v["drift"].as_u64(), v["drift_tolerance"].as_u64()), (Some(0), Some(0)));
        let e = &v["expectations"];
        assert_eq!(
            e[0],
            serde_json::json!({
                "expr": "lport=8080 live>=100000", "rule": "peak", "expected": 100_000.0,
                "unit": "count", "observed": 100_000.0, "samples": 2, "verdict": "pass"
            })
        );
        assert_eq!(e[1]["rule"], "minimum");
        assert_eq!(e[1]["unit"], "percent");
        assert_eq!(e[1]["verdict"], "fail");
        assert_eq!(
            (e[1]["observed"].as_f64(), e[1]["expected"].as_f64()),
            (Some(15.0), Some(20.0))
        );
        assert!(e[2]["observed"].is_null());
        assert_eq!(e[2]["verdict"], "no_data");
        assert_eq!(v["failures"].as_array().unwrap().len(), 3);

        // Unchecked tolerances and an unmeasured drift are null.
        let r = run(&[], &[Fake::default()], Tolerance::from_flags(None, None, true));
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(
            v["lost_tolerance"].is_null() && v["drift_tolerance"].is_null() && v["drift"].is_null()
        );
        assert_eq!(v["passed"], true);
        assert_eq!(v["failures"], serde_json::json!([]));
    }

    #[test]
    fn summary_of_a_failed_check() {
        let r = mixed_report();
        assert_eq!(
            summary(&r),
            "\
tcptrace check: 3 expectations, 2 observations over 60.0s
PASS     lport=8080 live>=100000           peak 100000
FAIL     dst=127.0.0.5:9000 headroom>=20%  minimum 15%
NO DATA  lport=9999 live<=10               no data: no live connection in any of 2 observations
FAIL     2 events lost, 0 allowed: the counts may be off by up to 2; raise --ring-size, or allow them with --max-lost or --ignore-loss
PASS     drift 0 (0 allowed)
check FAILED: 2 of 3 expectations, 2 events lost
"
        );
    }

    #[test]
    fn summary_of_a_passed_check() {
        let obs = dst_ports(&[Some(1), Some(3)]);
        let r =
            run(&[&format!("dst={DST} use<=12.5%")], &obs, Tolerance::from_flags(None, None, true));
        assert_eq!(
            summary(&r),
            "\
tcptrace check: 1 expectation, 2 observations over 60.0s
PASS     dst=127.0.0.5:9000 use<=12.5%  peak 3%
-        lost 0 events (not checked)
-        drift not measured
check passed
"
        );
        let obs = totals(&[(1, 0, Some(4))]);
        let text = summary(&run(&[], &obs, Tolerance::from_flags(None, Some(4), false)));
        assert!(
            text.contains("\nPASS     lost 0 events (0 allowed)\nPASS     drift 4 (4 allowed)\n"),
            "{text}"
        );
        let text = summary(&run(&[], &obs, Tolerance::from_flags(None, None, true)));
        assert!(text.contains("\n-        drift 4 (not checked)\n"), "{text}");
    }

    #[test]
    fn summary_names_every_reason_to_fail() {
        let obs = totals(&[(1, 5, Some(2))]);
        let text = summary(&run(&["total live>=1"], &obs, Tolerance::EXACT));
        assert!(text.ends_with("\ncheck FAILED: 5 events lost, drift 2\n"), "{text}");
        let text = summary(&run(&["total live>=1"], &[], Tolerance::EXACT));
        assert!(text.contains("NO DATA  total live>=1  no data: nothing was observed\n"), "{text}");
        assert!(text.ends_with("\ncheck FAILED: 1 of 1 expectation, nothing observed\n"), "{text}");
    }

    #[test]
    fn percentages_are_shown_to_three_decimals() {
        let r = ExpectationResult {
            expr: String::new(),
            rule: Rule::Peak,
            expected: 0.0,
            unit: Unit::Percent,
            observed: None,
            samples: 0,
            verdict: Pass,
        };
        assert_eq!(r.format(100.0 / 3.0), "33.333%");
        assert_eq!(r.format(12.5), "12.5%");
        assert_eq!(r.format(20.0), "20%");
        assert_eq!(r.format(0.0), "0%");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Outcome::Passed.code(), 0);
        assert_eq!(Outcome::Failed.code(), 1);
        assert_eq!(Outcome::BadInput.code(), 2);
        assert_eq!(mixed_report().outcome(), Outcome::Failed);
        assert_eq!(
            run(&["total live>=0"], &[Fake::default()], Tolerance::EXACT).outcome(),
            Outcome::Passed
        );
    }
}
