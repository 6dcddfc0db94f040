//! From text to an [`Expectation`]: a recursive-descent parser over one `--expect`
//! argument, and the [`ParseError`] that says where (in columns) and why it does not parse.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use super::expect::{Expectation, Kind, Metric, Op, Selector, count};
use crate::conn::canonical_ip;

const SELECTORS: &str = "lport=PORT, listener=ADDR:PORT, dst=ADDR:PORT, total";
const OPERATORS: &str = ">=, <=, >, <, ==";

impl Expectation {
    pub fn parse(expr: &str) -> Result<Self, ParseError> {
        Parser { expr, pos: 0 }.expectation()
    }
}

impl FromStr for Expectation {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
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
                    "`{text}` is a percentage, but `{}` is a count; only {} take percentages",
                    metric.name(),
                    percent_metrics()
                ));
            }
            return match decimal(number) {
                None => fail(not_percent()),
                Some(pct) if pct > 100.0 => fail(format!("`{text}` is more than 100%")),
                Some(pct) => Ok(pct),
            };
        }
        if let Some(of) = metric.percent_of() {
            return match decimal(text) {
                Some(_) => {
                    fail(format!("`{}` is a percentage of {of}: write `{text}%`", metric.name()))
                }
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

/// The metrics that take a percentage, as an error names them: `use, headroom, … and x`.
fn percent_metrics() -> String {
    let names: Vec<&str> =
        Metric::ALL.iter().filter(|m| m.is_percent()).map(|m| m.name()).collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// `20` or `12.5`: digits, with one optional dot between digits.
fn decimal(text: &str) -> Option<f64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(whole) && digits(frac) { text.parse().ok() } else { None }
}

#[cfg(test)]
#[expect(clippy::float_cmp, reason = "the values compared are whole numbers or short decimals")]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::check::{
        EXPECT_HELP,
        fixtures::{parse, sock},
    };

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

    #[test]
    fn the_largest_counts_print_as_text_that_parses_back() {
        // Found by the fuzz tier: counts within 1024 of u64::MAX are 2^64 as an f64, which
        // printed as `18446744073709552000` and did not parse back.
        for expr in ["total live>=18446744073709551615", "total live>=18446744073709550592"] {
            let e = parse(expr);
            assert_eq!(e.to_string(), "total live>=18446744073709551615");
            assert_eq!(parse(&e.to_string()), e);
        }
        assert_eq!(
            parse("total live>=18446744073709549568").to_string(),
            "total live>=18446744073709549568"
        );
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
                "`remote_addrs` is a metric of lport and listener, not total; expected one of live, lost, drift, fd_headroom"
                    .into()
            )
        );
        assert_eq!(
            error("dst=10.0.0.1:80 lost<=0"),
            (
                17,
                4,
                "`lost` is a metric of total, not dst; expected one of ports_in_use, use, headroom, usable_ports, live"
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
            (
                7,
                1,
                "missing metric after `total`; expected one of live, lost, drift, fd_headroom"
                    .into()
            )
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
                "`20%` is a percentage, but `live` is a count; only use, headroom, accept_queue and fd_headroom take percentages"
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
        // As clap exits on bad flags, and `tcptrace check` on bad input (cmd::Outcome).
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.contains("column 12: unknown metric `lve`"), "{text}");
        assert!(text.contains("\n  lport=8080 lve>=1\n             ^^^"), "{text}");
    }

    // ---- fuzz tier (crate::fuzz): any text, and every expectation ----

    /// Text made of the grammar's own pieces and a few that are not, so that most cases
    /// get past the selector and fail (or pass) deeper in.
    fn expression_text() -> impl Strategy<Value = String> {
        const WORDS: &[&str] = &[
            "lport",
            "listener",
            "dst",
            "total",
            "live",
            "remote_addrs",
            "max_per_remote",
            "ports_in_use",
            "use",
            "headroom",
            "lost",
            "drift",
            "=",
            "==",
            ">=",
            "<=",
            ">",
            "<",
            "=>",
            "!",
            "%",
            ".",
            ":",
            "[",
            "]",
            "::",
            "::ffff:",
            " ",
            "\t",
            "\u{a0}",
            "\u{3000}",
            "ï",
            "0",
        ];
        let piece = prop_oneof![
            4 => prop::sample::select(WORDS).prop_map(str::to_owned),
            2 => "[0-9]{1,25}",
            1 => "[0-9a-f.:]{1,12}",
            1 => any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    /// Every expectation the grammar can state: each selector with each of its metrics and
    /// operators, counts up to u64::MAX and percentages from 0 to 100.
    fn expectation() -> impl Strategy<Value = Expectation> {
        let endpoint = || {
            (crate::fuzz::ip(), 1..=u16::MAX)
                .prop_map(|(ip, port)| SocketAddr::new(canonical_ip(ip), port))
        };
        let selector = prop_oneof![
            (1..=u16::MAX).prop_map(Selector::LocalPort),
            endpoint().prop_map(Selector::Listener),
            endpoint()
                .prop_filter("a destination is a real address", |a| !a.ip().is_unspecified())
                .prop_map(Selector::Destination),
            Just(Selector::Total),
        ];
        let op = prop::sample::select(vec![Op::Ge, Op::Gt, Op::Le, Op::Lt, Op::Eq]);
        let count = prop_oneof![any::<u64>(), Just(u64::MAX), Just(0), 0..=1u64 << 53];
        let percent = prop_oneof![
            0.0..=100.0f64,
            (0..=1000u32).prop_map(|tenths| f64::from(tenths) / 10.0),
            prop::sample::select(vec![0.0, 100.0, f64::MIN_POSITIVE, 5e-324]),
        ];
        (selector, op, count, percent).prop_flat_map(|(selector, op, count, percent)| {
            prop::sample::select(selector.kind().metrics()).prop_map(move |metric| {
                let value = if metric.is_percent() { percent } else { super::count(count) };
                Expectation { selector, metric, op, value }
            })
        })
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzz::config())]

        /// Any text parses, into an expectation that prints as text that parses back, or
        /// fails with a column and width inside the text (or just past its end).
        #[test]
        fn any_text_parses_or_says_where(expr in prop_oneof![any::<String>(), expression_text()]) {
            match Expectation::parse(&expr) {
                Ok(e) => prop_assert_eq!(Expectation::parse(&e.to_string()), Ok(e)),
                Err(err) => {
                    let columns = expr.chars().count();
                    prop_assert!(err.column >= 1 && err.width >= 1, "{err:?}");
                    prop_assert!(err.column + err.width - 1 <= columns + 1, "{err:?}");
                    prop_assert!(err.to_string().starts_with("column "));
                }
            }
        }

        #[test]
        fn every_expectation_prints_as_text_that_parses_back(e in expectation()) {
            prop_assert_eq!(Expectation::parse(&e.to_string()), Ok(e));
        }
    }
}
