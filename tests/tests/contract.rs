//! The output contract, pinned to recorded samples: every machine-readable output of the
//! binary under test (`watch --json`, `events --json`, `serve`'s /metrics and /healthz,
//! `check --report`, `demo --json`) must have the schema of the samples in
//! `tests/fixtures/contract/`, recorded from the binary of commit 9813947 (see the README
//! there). The values differ from run to run; the schema may not.
//!
//! A schema is what a consumer relies on, derived the same way from both sides:
//! - JSON: each object's keys in order (the order is part of the contract, see
//!   `view/json.rs`), each value's kinds (null, bool, integer, fraction, string, array,
//!   object; integer and fraction as JSON writes the number), recursively into array
//!   elements, merged over every line or report into the union of what was seen. The live
//!   side must show only kinds the sample allows, the same keys in the same order, and
//!   elements in every array the sample has elements in;
//! - `events --json`: that schema per event kind, and the same kinds;
//! - /metrics: each family's HELP, TYPE (and UNIT) text, and the sample names and label
//!   names it is written with;
//! - HTTP: the status line, the header names and the content type; /healthz's text with
//!   its numbers and attach path masked.
//!
//! Each test makes real connections in a network namespace of its own (127.86.0.0/16,
//! listener ports 22081 and 22082, nothing on 22089; `serve` on 127.86.255.1:22099), filters the tracer to it (`--netns`),
//! and keeps reading until its output shows what the sample shows (bounded). The samples
//! are compiled in, so the test binary runs anywhere (the VM tier has no source tree).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use tcptrace_tests::{
    ATTACH_WAIT, Accepted, INTERVAL, Netns, Server, WAIT, attach_path, connect, init, run_to_exit,
    tracer_bin,
};

const WATCH_SAMPLE: &str = include_str!("../fixtures/contract/watch.jsonl");
const EVENTS_SAMPLE: &str = include_str!("../fixtures/contract/events.jsonl");
const METRICS_SAMPLE: &str = include_str!("../fixtures/contract/metrics.http");
const HEALTHZ_SAMPLE: &str = include_str!("../fixtures/contract/healthz.http");
const CHECK_PASS_SAMPLE: &str = include_str!("../fixtures/contract/check-pass.json");
const CHECK_FAIL_SAMPLE: &str = include_str!("../fixtures/contract/check-fail.json");
const DEMO_SAMPLE: &str = include_str!("../fixtures/contract/demo.json");

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 86, 0, 1)), 22081);
const V6: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 22082);
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 86, 0, 2));
/// How long `events` must stay quiet before its output counts as complete.
const QUIET: Duration = Duration::from_secs(1);
/// Where `serve` listens, in the host's namespace: an address of this test's own.
const METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 86, 255, 1)), 22099);
/// The namespaces' ephemeral range, narrowed so that a few connections use much of it.
const RANGE: &str = "40000 40063";

// ---------------------------------------------------------------------------------------
// JSON schemas
// ---------------------------------------------------------------------------------------

/// A JSON value's kind. Numbers are split as JSON writes them: serde writes a float with a
/// fraction or an exponent (`1.0`) and an integer without, so an integer field that turned
/// into a float would change every consumer's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Null,
    Bool,
    Integer,
    Fraction,
    String,
    Array,
    Object,
}

/// The schema of one JSON value, or the union of several at the same place.
#[derive(Clone, Debug, Default, PartialEq)]
struct Schema {
    kinds: BTreeSet<Kind>,
    /// Keys in the order written, each with its values' schema (when `Object` is a kind).
    keys: Option<Vec<(String, Schema)>>,
    /// The elements' schema, once an array with elements was seen.
    items: Option<Box<Schema>>,
}

impl Schema {
    fn of(kind: Kind) -> Self {
        Self { kinds: BTreeSet::from([kind]), ..Self::default() }
    }

    /// The union of two schemas of the same place (`path`, for the error): objects there
    /// must have the same keys in the same order, or the output has no one schema.
    fn merge(mut self, other: Self, path: &str) -> Result<Self, String> {
        self.kinds.extend(other.kinds);
        self.keys = match (self.keys, other.keys) {
            (Some(mine), Some(theirs)) => {
                if key_names(&mine) != key_names(&theirs) {
                    return Err(format!(
                        "{path}: keys {:?} in one object, {:?} in another",
                        key_names(&mine),
                        key_names(&theirs)
                    ));
                }
                let merged = mine.into_iter().zip(theirs).map(|((key, a), (_, b))| {
                    let at = format!("{path}.{key}");
                    a.merge(b, &at).map(|schema| (key, schema))
                });
                Some(merged.collect::<Result<_, _>>()?)
            }
            (mine, theirs) => mine.or(theirs),
        };
        self.items = match (self.items, other.items) {
            (Some(a), Some(b)) => Some(Box::new(a.merge(*b, &format!("{path}[]"))?)),
            (a, b) => a.or(b),
        };
        Ok(self)
    }
}

fn key_names(keys: &[(String, Schema)]) -> Vec<&str> {
    keys.iter().map(|(key, _)| key.as_str()).collect()
}

/// Reads the schema straight from the parser, which sees keys in the order written
/// (`serde_json::Value` sorts them without the `preserve_order` feature).
impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SchemaVisitor)
    }
}

struct SchemaVisitor;

impl<'de> Visitor<'de> for SchemaVisitor {
    type Value = Schema;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Schema, E> {
        Ok(Schema::of(Kind::Null))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Schema, E> {
        Ok(Schema::of(Kind::Bool))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Schema, E> {
        Ok(Schema::of(Kind::Integer))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Schema, E> {
        Ok(Schema::of(Kind::Integer))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Schema, E> {
        Ok(Schema::of(Kind::Fraction))
    }

    fn visit_str<E>(self, _: &str) -> Result<Schema, E> {
        Ok(Schema::of(Kind::String))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Schema, A::Error> {
        let mut items: Option<Schema> = None;
        while let Some(item) = seq.next_element::<Schema>()? {
            items = Some(match items {
                None => item,
                Some(seen) => seen.merge(item, "[]").map_err(de::Error::custom)?,
            });
        }
        Ok(Schema { items: items.map(Box::new), ..Schema::of(Kind::Array) })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Schema, A::Error> {
        let mut keys = Vec::new();
        while let Some(entry) = map.next_entry::<String, Schema>()? {
            keys.push(entry);
        }
        Ok(Schema { keys: Some(keys), ..Schema::of(Kind::Object) })
    }
}

/// `null|fraction`, `[{port: integer, live: integer}]`, `[]` for arrays never seen with an
/// element.
impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in self.kinds.iter().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            match kind {
                Kind::Null => f.write_str("null")?,
                Kind::Bool => f.write_str("bool")?,
                Kind::Integer => f.write_str("integer")?,
                Kind::Fraction => f.write_str("fraction")?,
                Kind::String => f.write_str("string")?,
                Kind::Array => match &self.items {
                    Some(items) => write!(f, "[{items}]")?,
                    None => f.write_str("[]")?,
                },
                Kind::Object => {
                    f.write_str("{")?;
                    for (j, (key, schema)) in self.keys.iter().flatten().enumerate() {
                        let sep = if j > 0 { ", " } else { "" };
                        write!(f, "{sep}{key}: {schema}")?;
                    }
                    f.write_str("}")?;
                }
            }
        }
        Ok(())
    }
}

/// The schema of one JSON text.
fn schema_of(json: &str) -> Result<Schema, String> {
    serde_json::from_str(json).map_err(|e| format!("not JSON ({e}): {json}"))
}

/// The union of several schemas of one output; an error if there are none.
fn union(schemas: impl IntoIterator<Item = Result<Schema, String>>) -> Result<Schema, String> {
    let mut all: Option<Schema> = None;
    for schema in schemas {
        let schema = schema?;
        all = Some(match all {
            None => schema,
            Some(seen) => seen.merge(schema, "$")?,
        });
    }
    all.ok_or_else(|| "no JSON value".to_owned())
}

/// The union of the schemas of JSON lines (blank lines skipped).
fn schema_of_lines(text: &str) -> Result<Schema, String> {
    union(
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, line)| schema_of(line).map_err(|e| format!("line {}: {e}", n + 1))),
    )
}

/// `events --json` lines grouped by the value of their `event` key: the schema per kind.
fn schema_per_event(text: &str) -> Result<BTreeMap<String, Schema>, String> {
    let mut lines: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let kind = value.get("event").and_then(Value::as_str);
        let kind = kind.ok_or_else(|| format!("no string `event`: {line}"))?;
        lines.entry(kind.to_owned()).or_default().push(line);
    }
    lines
        .into_iter()
        .map(|(kind, lines)| Ok((kind, union(lines.into_iter().map(schema_of))?)))
        .collect()
}

/// Every way `live` leaves what `sample` allows: a kind the sample never had, other keys
/// or another key order, elements where the sample's arrays were empty, or an array the
/// sample has elements in that live never did (nothing to compare them with).
fn differences(live: &Schema, sample: &Schema) -> Vec<String> {
    let mut found = Vec::new();
    compare(live, sample, "$", &mut found);
    found
}

fn compare(live: &Schema, sample: &Schema, path: &str, found: &mut Vec<String>) {
    if !live.kinds.is_subset(&sample.kinds) {
        found.push(format!("{path}: {} where the sample has {}", kinds(live), kinds(sample)));
    }
    if let (Some(mine), Some(theirs)) = (&live.keys, &sample.keys) {
        if key_names(mine) == key_names(theirs) {
            for ((key, a), (_, b)) in mine.iter().zip(theirs) {
                compare(a, b, &format!("{path}.{key}"), found);
            }
        } else {
            found.push(format!(
                "{path}: keys {:?}, the sample's are {:?}",
                key_names(mine),
                key_names(theirs)
            ));
        }
    }
    match (&live.items, &sample.items) {
        (Some(a), Some(b)) => compare(a, b, &format!("{path}[]"), found),
        (Some(_), None) => found.push(format!("{path}[]: elements, the sample has none")),
        (None, Some(_)) if live.kinds.contains(&Kind::Array) => {
            found.push(format!("{path}[]: no element live to compare with the sample's"));
        }
        _ => {}
    }
}

/// What the sample shows and `live` has not shown (yet): kinds, and arrays with elements.
fn unseen(live: &Schema, sample: &Schema) -> Vec<String> {
    let mut missing = Vec::new();
    not_shown(live, sample, "$", &mut missing);
    missing
}

fn not_shown(live: &Schema, sample: &Schema, path: &str, missing: &mut Vec<String>) {
    let absent: BTreeSet<Kind> = sample.kinds.difference(&live.kinds).copied().collect();
    if !absent.is_empty() {
        missing.push(format!("{path}: {}", kinds(&Schema { kinds: absent, ..Schema::default() })));
    }
    if let (Some(mine), Some(theirs)) = (&live.keys, &sample.keys) {
        for ((key, a), (_, b)) in mine.iter().zip(theirs) {
            not_shown(a, b, &format!("{path}.{key}"), missing);
        }
    }
    match (&live.items, &sample.items) {
        (Some(a), Some(b)) => not_shown(a, b, &format!("{path}[]"), missing),
        (None, Some(_)) => missing.push(format!("{path}[]: an element")),
        _ => {}
    }
}

/// The kinds alone, as `null|fraction`.
fn kinds(schema: &Schema) -> String {
    let names: Vec<String> = schema
        .kinds
        .iter()
        .map(|&k| match k {
            Kind::Array => "array".to_owned(),
            Kind::Object => "object".to_owned(),
            _ => Schema::of(k).to_string(),
        })
        .collect();
    names.join("|")
}

/// Panics with both schemas and every difference unless `live` keeps the sample's.
fn assert_same_schema(what: &str, live: &Schema, sample: &Schema) {
    let found = differences(live, sample);
    assert!(
        found.is_empty(),
        "{what}: the live schema is not the sample's:\n  {}\nlive:   {live}\nsample: {sample}",
        found.join("\n  ")
    );
    let missing = unseen(live, sample);
    println!("  {what}: same schema as the sample; not shown live: {missing:?}");
}

// ---------------------------------------------------------------------------------------
// The Prometheus exposition and HTTP
// ---------------------------------------------------------------------------------------

/// One metric family of an exposition.
#[derive(Debug, Default, PartialEq, Eq)]
struct MetricFamily {
    /// `HELP`, `TYPE` (and `UNIT`) and their text.
    descriptors: BTreeMap<String, String>,
    /// The sample names written (`tcptrace_events_total`), each with the label names (in
    /// the order written) of its series.
    samples: BTreeMap<String, BTreeSet<Vec<String>>>,
}

/// The families of an OpenMetrics text exposition, by name. Sample lines belong to the
/// family named by the descriptor lines before them; the text must end with `# EOF`.
fn metric_families(text: &str) -> Result<BTreeMap<String, MetricFamily>, String> {
    if !text.ends_with("# EOF\n") {
        return Err("the exposition does not end with `# EOF`".into());
    }
    let mut families: BTreeMap<String, MetricFamily> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().filter(|l| *l != "# EOF") {
        if let Some(descriptor) = line.strip_prefix("# ") {
            let mut words = descriptor.splitn(3, ' ');
            let (Some(kind), Some(name)) = (words.next(), words.next()) else {
                return Err(format!("a bare comment: {line}"));
            };
            let family = families.entry(name.to_owned()).or_default();
            family.descriptors.insert(kind.to_owned(), words.next().unwrap_or("").to_owned());
            current = Some(name.to_owned());
            continue;
        }
        let (name, labels) = parse_sample(line)?;
        let family = current.as_ref().filter(|f| name.starts_with(f.as_str()));
        let family = family.ok_or_else(|| format!("a sample outside its family: {line}"))?;
        let names = labels.into_iter().map(|(label, _)| label).collect();
        let family = families.get_mut(family).expect("declared above");
        family.samples.entry(name.to_owned()).or_default().insert(names);
    }
    Ok(families)
}

/// A series' labels: (name, value) in the order written.
type Labels = Vec<(String, String)>;

/// A sample line's name and labels (`name{a="x",b="y"} 1`), label values unescaped.
fn parse_sample(line: &str) -> Result<(&str, Labels), String> {
    let bad = |why: &str| format!("{why}: {line}");
    let end = line.find(['{', ' ']).ok_or_else(|| bad("no value"))?;
    let (name, rest) = line.split_at(end);
    let mut labels = Vec::new();
    if let Some(mut rest) = rest.strip_prefix('{') {
        loop {
            let after = rest.strip_prefix(',').unwrap_or(rest);
            if after.starts_with('}') {
                break;
            }
            let (label, quoted) = after.split_once("=\"").ok_or_else(|| bad("no label value"))?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let close = loop {
                match chars.next().ok_or_else(|| bad("an unterminated label value"))? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err(bad("an unterminated escape")),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((label.to_owned(), value));
            rest = &quoted[close + 1..];
        }
    }
    Ok((name, labels))
}

/// The value of the first label called `label` in an exposition (the attach path, for
/// /healthz).
fn label_value(text: &str, label: &str) -> Option<String> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (_, labels) = parse_sample(line).ok()?;
        labels.into_iter().find(|(name, _)| name == label).map(|(_, value)| value)
    })
}

/// An HTTP response as the contract sees its head: the status line, then each header's
/// name, with the value of `content-type` only (length and date vary). Also the body.
fn response_shape(raw: &str) -> Result<(String, &str), String> {
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no end of the head")?;
    let mut lines = head.split("\r\n");
    let mut shape = lines.next().unwrap_or_default().to_owned();
    for header in lines {
        let (name, value) = header.split_once(':').ok_or_else(|| format!("header {header}"))?;
        let name = name.to_ascii_lowercase();
        shape.push_str("\n  ");
        shape.push_str(&name);
        if name == "content-type" {
            shape.push_str(": ");
            shape.push_str(value.trim());
        }
    }
    Ok((shape, body))
}

/// /healthz's text with the attach path and every number masked.
fn healthz_shape(body: &str, attach: &str) -> String {
    let masked = body.replace(attach, "<attach>");
    let mut shape = String::new();
    for c in masked.chars() {
        if !c.is_ascii_digit() {
            shape.push(c);
        } else if !shape.ends_with("<n>") {
            shape.push_str("<n>");
        }
    }
    shape
}

// ---------------------------------------------------------------------------------------
// Running the binary under test
// ---------------------------------------------------------------------------------------

/// The binary with `args --attach TCPTRACE_ATTACH`: stdout lines arrive on a channel as
/// they are printed, raw (the harness's tracer parses them into typed rows, which would
/// lose the key order); stderr is kept. Killed on drop.
struct Live {
    child: Child,
    command: String,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Live {
    fn start(args: &[&str]) -> Self {
        init();
        let attach = attach_path();
        let command = format!("{} {} --attach {attach}", tracer_bin().display(), args.join(" "));
        println!("  running: {command}");
        let mut child = Command::new(tracer_bin())
            .args(args)
            .args(["--attach", &attach])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = BufReader::new(child.stderr.take().expect("piped stderr"));
        let kept = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in pipe.lines().map_while(Result::ok) {
                let mut kept = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        Self { child, command, lines, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Panics with the command and its stderr.
    fn fail(&mut self, what: &str) -> ! {
        let status = self.child.try_wait().ok().flatten();
        panic!("{}: {what} (exit status {status:?}); stderr:\n{}", self.command, self.stderr())
    }

    /// Waits until `ready` holds, while the binary runs, for at most [`ATTACH_WAIT`].
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + ATTACH_WAIT;
        while !ready(self) {
            if self.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                self.fail(&format!("no {what}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_attached(&mut self) {
        self.wait_until("`tcptrace: attached` line", |live| {
            live.stderr().lines().any(|l| l.starts_with("tcptrace: attached"))
        });
    }

    fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(e) => self.fail(&format!("no stdout line within {timeout:?} ({e})")),
        }
    }

    /// The next stdout line, if one comes before `deadline`.
    fn line_before(&self, deadline: Instant) -> Option<String> {
        self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Narrows the namespace's ephemeral range to [`RANGE`].
fn narrow_range(ns: &Netns) {
    ns.run(|| {
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", RANGE)
            .expect("set the namespace's ephemeral range");
    });
}

/// Unbound connects to `to` (the kernel picks the port) until `failures` of them failed
/// with `EADDRNOTAVAIL`: the range ran out. Returns the connections made.
fn exhaust(ns: &Netns, to: SocketAddr, failures: usize) -> Vec<TcpStream> {
    ns.run(move || {
        let mut held = Vec::new();
        let mut failed = 0;
        for _ in 0..200 {
            match TcpStream::connect(to) {
                Ok(stream) => held.push(stream),
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => failed += 1,
                Err(e) => panic!("connect {to}: {e}"),
            }
            if failed == failures {
                return held;
            }
        }
        panic!("the range did not run out within 200 connects to {to}")
    })
}

/// Whether `nf_conntrack` is loaded (its sysctls exist then). The samples were recorded on
/// a host where it is; where it is not (the VM tier's kernels load no netfilter module),
/// tcptrace says so with `null` conntrack fields and no conntrack metric families, as the
/// README documents: that part of the contract follows the kernel, and nothing else does.
fn conntrack_loaded() -> bool {
    std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists()
}

/// The fields and families that exist only where `nf_conntrack` is loaded.
const CONNTRACK_FIELDS: [&str; 2] = ["conntrack", "conntrack_max"];
const CONNTRACK_FAMILIES: [&str; 2] = ["tcptrace_netns_conntrack", "tcptrace_netns_conntrack_max"];

/// The watch sample's schema as this kernel can show it: without `nf_conntrack` its
/// namespace limits' conntrack fields may be `null` too.
fn watch_schema_here(mut sample: Schema) -> Schema {
    if conntrack_loaded() {
        return sample;
    }
    let limits = sample.keys.iter_mut().flatten().find(|(key, _)| key == "limits");
    let fields = limits.and_then(|(_, l)| l.items.as_mut()).and_then(|i| i.keys.as_mut());
    for (key, schema) in fields.into_iter().flatten() {
        if CONNTRACK_FIELDS.contains(&key.as_str()) {
            schema.kinds.insert(Kind::Null);
        }
    }
    sample
}

/// The metrics sample's families as this kernel can show them: without `nf_conntrack`,
/// none of conntrack's.
fn families_here(mut sample: BTreeMap<String, MetricFamily>) -> BTreeMap<String, MetricFamily> {
    if !conntrack_loaded() {
        sample.retain(|name, _| !CONNTRACK_FAMILIES.contains(&name.as_str()));
    }
    sample
}

/// A plain HTTP/1.0 GET, as the samples were fetched (`curl --http1.0`): the raw response.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(WAIT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The listener, a client's bound connections, IPv6 ones, and a namespace to hold them in.
struct Held {
    ns: Netns,
    servers: Vec<Server>,
    clients: Vec<TcpStream>,
}

impl Held {
    /// A SO_REUSEPORT group of two on [`SERVER`] and a listener on [`V6`], in a new
    /// namespace with a narrowed range, with `v4` connections from [`CLIENT`] and 2 over
    /// IPv6.
    fn new(name: &str, v4: usize) -> Self {
        let ns = Netns::new(name);
        narrow_range(&ns);
        let servers = vec![
            Server::listen_reuseport(&ns, SERVER),
            Server::listen_reuseport(&ns, SERVER),
            Server::listen(&ns, V6, Accepted::Hold),
        ];
        let mut held = Self { ns, servers, clients: Vec::new() };
        held.connect(v4);
        held.clients.extend(connect(&held.ns, IpAddr::V6(Ipv6Addr::LOCALHOST), V6, 2));
        held
    }

    fn connect(&mut self, v4: usize) {
        self.clients.extend(connect(&self.ns, CLIENT, SERVER, v4));
    }

    fn netns(&self) -> String {
        self.ns.inode().to_string()
    }

    /// Waits until the servers have accepted every connection made.
    fn wait_accepted(&self) {
        let deadline = Instant::now() + WAIT;
        while self.servers.iter().map(Server::accepted).sum::<usize>() < self.clients.len() {
            assert!(Instant::now() < deadline, "the servers accepted too few connections");
            thread::sleep(Duration::from_millis(5));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The live tests
// ---------------------------------------------------------------------------------------

#[test]
fn watch_json_lines_keep_the_recorded_schema() {
    println!(
        "checks: `watch --json` lines have the sample's keys, key order and value kinds, in \
         every row of local_ports, remote_endpoints, listeners (pids) and destinations"
    );
    let sample =
        watch_schema_here(schema_of_lines(WATCH_SAMPLE).expect("the sample has one schema"));
    let mut held = Held::new("ns-contract-w", 3);
    let netns = held.netns();
    let mut watch =
        Live::start(&["watch", "--json", "--top", "5", "--interval", INTERVAL, "--netns", &netns]);
    let mut lines = vec![watch.next_line(ATTACH_WAIT)];
    // Growth between refreshes gives destinations an exhaustion_s, its absence null; the
    // listeners' pids show from the refresh after the one that started their scan (on a
    // busy box refreshes are seconds apart: see the capacity pacing). Stop once everything
    // is shown, or when WAIT has passed.
    let deadline = Instant::now() + WAIT;
    for round in 0.. {
        if round < 12 {
            held.connect(4);
        }
        lines.extend([watch.next_line(WAIT), watch.next_line(WAIT)]);
        let live = schema_of_lines(&lines.join("\n")).unwrap_or_else(|e| panic!("{e}"));
        if unseen(&live, &sample).is_empty() || Instant::now() > deadline {
            break;
        }
    }
    held.wait_accepted();
    let live = schema_of_lines(&lines.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_same_schema(&format!("{} watch lines", lines.len()), &live, &sample);
}

#[test]
fn events_json_lines_keep_the_recorded_schema_of_each_kind() {
    println!(
        "checks: `events --json` prints connect, accept, close and connect_failed lines, each \
         kind with the sample's keys, key order and value kinds"
    );
    let sample = schema_per_event(EVENTS_SAMPLE).expect("the sample has one schema per kind");
    let mut held = Held::new("ns-contract-e", 0);
    let netns = held.netns();
    let mut events = Live::start(&["events", "--json", "--netns", &netns]);
    events.wait_attached();
    held.connect(3);
    held.clients.truncate(held.clients.len() - 1);
    held.clients.extend(exhaust(&held.ns, SERVER, 2));
    held.wait_accepted();

    // Every line the connections above caused: until the sample's kinds are in, then on
    // until the tracer has been quiet for a while, so that a kind the sample lacks,
    // printed after those, is read too.
    let mut lines = Vec::new();
    let deadline = Instant::now() + WAIT;
    let live = loop {
        let live = schema_per_event(&lines.join("\n")).unwrap_or_else(|e| panic!("{e}"));
        let until = if sample.keys().all(|kind| live.contains_key(kind)) {
            deadline.min(Instant::now() + QUIET)
        } else {
            deadline
        };
        match events.line_before(until) {
            Some(printed) => lines.push(printed),
            None => break live,
        }
    };
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        sample.keys().collect::<Vec<_>>(),
        "event kinds in {} lines",
        lines.len()
    );
    for (kind, schema) in &live {
        assert_same_schema(&format!("`{kind}` events"), schema, &sample[kind]);
    }
}

#[test]
fn serve_metrics_and_healthz_keep_the_recorded_schema() {
    println!(
        "checks: /metrics has the sample's families (HELP, TYPE, sample and label names) and \
         response head; /healthz the sample's text and head, while connections are held"
    );
    let (sample_head, sample_body) = response_shape(METRICS_SAMPLE).expect("a sample response");
    let sample = families_here(metric_families(sample_body).expect("the sample is an exposition"));
    let held = Held::new("ns-contract-s", 5);
    held.wait_accepted();
    let listen = METRICS.to_string();
    let netns = held.netns();
    let mut serve =
        Live::start(&["serve", "--listen", &listen, "--interval", INTERVAL, "--netns", &netns]);
    serve.wait_until("200 from /healthz", |_| {
        get(METRICS, "/healthz").is_ok_and(|r| r.contains(" 200 "))
    });

    // Families whose series need rows (listeners, destinations) show from the first
    // refresh that has them.
    let deadline = Instant::now() + WAIT;
    let (raw, live) = loop {
        let raw = get(METRICS, "/metrics").expect("GET /metrics");
        let (_, body) = response_shape(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
        let live = metric_families(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let shown = sample.iter().all(|(name, f)| {
            f.samples.is_empty() || live.get(name).is_some_and(|l| !l.samples.is_empty())
        });
        if shown || Instant::now() > deadline {
            break (raw, live);
        }
        thread::sleep(Duration::from_millis(100));
    };
    let (metrics_head, body) = response_shape(&raw).expect("checked above");
    assert_eq!(metrics_head, sample_head, "the /metrics response head");
    let names = |families: &BTreeMap<String, MetricFamily>| -> Vec<String> {
        families.keys().cloned().collect()
    };
    assert_eq!(names(&live), names(&sample), "metric families");
    for (name, family) in &live {
        assert_eq!(family, &sample[name], "metric family {name}");
    }
    println!("  /metrics: {} families, as in the sample", live.len());

    let attach = label_value(body, "attach").expect("the live attach path");
    let sample_attach = label_value(sample_body, "attach").expect("the sample's attach path");
    let raw = get(METRICS, "/healthz").expect("GET /healthz");
    let (healthz_head, text) = response_shape(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    let (sample_head, sample_text) = response_shape(HEALTHZ_SAMPLE).expect("a sample response");
    assert_eq!(healthz_head, sample_head, "the /healthz response head");
    assert_eq!(healthz_shape(text, &attach), healthz_shape(sample_text, &sample_attach));
    println!("  /healthz: {:?}, as in the sample", healthz_shape(text, &attach));
    drop(serve);
}

#[test]
fn check_reports_keep_the_recorded_schema() {
    println!(
        "checks: `check --report` of a passing and of a failing run (every selector, a claim \
         with no data, loss not checked) have the samples' keys, key order and value kinds"
    );
    let sample = union([schema_of(CHECK_PASS_SAMPLE), schema_of(CHECK_FAIL_SAMPLE)])
        .expect("the samples have one schema");
    let held = Held::new("ns-contract-c", 40);
    held.wait_accepted();
    let netns = held.netns();
    let dir = std::env::temp_dir().join(format!("tcptrace-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let run = |name: &str, extra: &[&str], expect: &[String], code: i32| {
        let report = dir.join(name);
        let report_path = report.to_str().expect("UTF-8 path");
        let attach = attach_path();
        let mut args = vec!["check", "--attach", &attach, "--netns", &netns, "--report"];
        args.extend([report_path, "--duration", "2s", "--interval", "250ms"]);
        args.extend(extra);
        for e in expect {
            args.extend(["--expect", e]);
        }
        let exit = run_to_exit(&args, Duration::from_mins(2));
        assert_eq!(exit.code(), Some(code), "{args:?}\n{}\n{}", exit.stdout, exit.stderr);
        schema_of(&std::fs::read_to_string(&report).expect("the report was written"))
    };
    let live = held.clients.len() - 2;
    let pass = run(
        "pass.json",
        &[],
        &[
            format!("lport={} live>={live}", SERVER.port()),
            format!("listener={SERVER} remote_addrs>=1"),
            format!("dst={SERVER} use>=50%"),
            format!("dst={V6} ports_in_use==2"),
            "total drift<=0".to_owned(),
        ],
        0,
    );
    let fail = run(
        "fail.json",
        &["--ignore-loss"],
        &[
            format!("lport={} live>=100000", SERVER.port()),
            format!("listener={SERVER} max_per_remote<1"),
            format!("dst={SERVER} headroom>=90%"),
            "lport=22089 live>=1".to_owned(),
            "total live>=1".to_owned(),
        ],
        1,
    );
    std::fs::remove_dir_all(&dir).ok();
    let live = union([pass, fail]).unwrap_or_else(|e| panic!("{e}"));
    assert_same_schema("check reports", &live, &sample);
}

#[test]
fn demo_json_keeps_the_recorded_schema() {
    println!("checks: `demo --connections 2000 --json` prints the sample's keys, order and kinds");
    let sample = schema_of(DEMO_SAMPLE).expect("the sample is JSON");
    let attach = attach_path();
    let exit = run_to_exit(
        &["demo", "--connections", "2000", "--per-process", "1000", "--json", "--attach", &attach],
        Duration::from_mins(3),
    );
    assert_eq!(exit.code(), Some(0), "demo failed:\n{}\n{}", exit.stdout, exit.stderr);
    let live = schema_of(exit.stdout.trim()).unwrap_or_else(|e| panic!("{e}"));
    assert_same_schema("demo --json", &live, &sample);
}

// ---------------------------------------------------------------------------------------
// The schema functions themselves
// ---------------------------------------------------------------------------------------

fn schema(json: &str) -> Schema {
    schema_of(json).unwrap()
}

#[test]
fn schema_keeps_key_order_and_tells_integers_from_fractions() {
    let s = schema(r#"{"b":1,"a":1.0,"c":null,"d":"x","e":true,"f":[],"g":{"z":-2}}"#);
    assert_eq!(
        s.to_string(),
        "{b: integer, a: fraction, c: null, d: string, e: bool, f: [], g: {z: integer}}"
    );
    assert_eq!(schema("1e3").to_string(), "fraction");
}

#[test]
fn schema_of_lines_is_the_union_of_kinds_and_of_array_elements() {
    let s = schema_of_lines("{\"x\":null,\"r\":[]}\n\n{\"x\":2.5,\"r\":[{\"p\":[]}]}\n").unwrap();
    assert_eq!(s.to_string(), "{x: null|fraction, r: [{p: []}]}");
    let s = schema(r#"[{"p":[]},{"p":[1]},{"p":[null]}]"#);
    assert_eq!(s.to_string(), "[{p: [null|integer]}]");
    assert!(schema_of_lines("").is_err());
    assert!(schema_of_lines("{\"x\":1}\nnot json").unwrap_err().starts_with("line 2:"));
}

#[test]
fn schema_of_objects_with_other_keys_or_order_is_an_error() {
    let err = schema_of_lines("{\"a\":1,\"b\":2}\n{\"b\":2,\"a\":1}").unwrap_err();
    assert!(err.contains(r#"keys ["a", "b"] in one object, ["b", "a"] in another"#), "{err}");
    let err = schema_of(r#"{"rows":[{"a":1},{"a":1,"b":2}]}"#).unwrap_err();
    assert!(err.contains("keys"), "{err}");
}

#[test]
fn differences_allow_fewer_kinds_but_nothing_else() {
    let sample = schema_of_lines("{\"x\":null,\"r\":[{\"p\":1}]}\n{\"x\":1.5,\"r\":[]}").unwrap();
    let same = schema(r#"{"x":null,"r":[{"p":2}]}"#);
    assert_eq!(differences(&same, &sample), Vec::<String>::new());
    assert_eq!(unseen(&same, &sample), ["$.x: fraction"]);

    let cases = [
        (r#"{"x":"n","r":[{"p":1}]}"#, "$.x: string where the sample has null|fraction"),
        (r#"{"x":null,"r":[{"q":1}]}"#, r#"$.r[]: keys ["q"], the sample's are ["p"]"#),
        (r#"{"r":[{"p":1}],"x":null}"#, r#"$: keys ["r", "x"], the sample's are ["x", "r"]"#),
        (r#"{"x":null,"r":[{"p":1.0}]}"#, "$.r[].p: fraction where the sample has integer"),
        (r#"{"x":null,"r":[]}"#, "$.r[]: no element live to compare with the sample's"),
        (r#"{"x":null,"r":{}}"#, "$.r: object where the sample has array"),
    ];
    for (live, want) in cases {
        assert_eq!(differences(&schema(live), &sample), [want], "{live}");
    }
    let empty = schema(r#"{"x":null,"r":[]}"#);
    assert_eq!(
        differences(&sample, &empty),
        ["$.x: null|fraction where the sample has null", "$.r[]: elements, the sample has none"]
    );
}

#[test]
fn events_are_grouped_by_kind() {
    let lines = "{\"event\":\"connect\",\"pid\":1}\n{\"event\":\"close\",\"pid\":2}\n\
                 {\"event\":\"connect\",\"pid\":3}";
    let per_kind = schema_per_event(lines).unwrap();
    let shown: Vec<String> = per_kind.iter().map(|(k, s)| format!("{k} {s}")).collect();
    assert_eq!(
        shown,
        ["close {event: string, pid: integer}", "connect {event: string, pid: integer}"]
    );
    assert!(schema_per_event("{\"pid\":1}").is_err());
}

#[test]
fn metric_families_have_descriptors_sample_names_and_label_names() {
    let text = "# HELP t_events Kernel events.\n# TYPE t_events counter\n\
                t_events_total{kind=\"a\"} 1\nt_events_total{kind=\"b\\\"}\"} 2\n\
                # HELP t_rows Rows.\n# TYPE t_rows gauge\n# UNIT t_rows rows\nt_rows 3\n\
                # TYPE t_none gauge\n# EOF\n";
    let families = metric_families(text).unwrap();
    assert_eq!(families.keys().collect::<Vec<_>>(), ["t_events", "t_none", "t_rows"]);
    let events = &families["t_events"];
    assert_eq!(events.descriptors["HELP"], "Kernel events.");
    assert_eq!(events.descriptors["TYPE"], "counter");
    assert_eq!(events.samples["t_events_total"], BTreeSet::from([vec!["kind".to_owned()]]));
    assert_eq!(families["t_rows"].descriptors["UNIT"], "rows");
    assert_eq!(families["t_rows"].samples["t_rows"], BTreeSet::from([Vec::<String>::new()]));
    assert!(families["t_none"].samples.is_empty());
    assert_eq!(label_value(text, "kind").as_deref(), Some("a"));

    assert!(metric_families("t_rows 3\n").is_err(), "no # EOF");
    assert!(metric_families("# TYPE t_a gauge\nt_b 1\n# EOF\n").is_err(), "outside its family");
}

#[test]
fn sample_lines_parse_with_escaped_label_values() {
    let (name, labels) = parse_sample(r#"t_x{a="1",b="say \"hi\"\n",c=""} 4"#).unwrap();
    assert_eq!(name, "t_x");
    let labels: Vec<(&str, &str)> = labels.iter().map(|(l, v)| (l.as_str(), v.as_str())).collect();
    assert_eq!(labels, [("a", "1"), ("b", "say \"hi\"\n"), ("c", "")]);
    assert_eq!(parse_sample("t_y 1").unwrap(), ("t_y", vec![]));
    assert!(parse_sample(r#"t_z{a="open} 1"#).is_err());
    assert!(parse_sample("t_w").is_err());
}

#[test]
fn responses_and_healthz_are_masked_where_they_vary() {
    let raw = "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\nContent-Length: 41\r\n\
               date: Thu, 03 Dec 2026 08:46:04 GMT\r\n\r\nok: attached via tp_btf, 130 live\n";
    let (head, body) = response_shape(raw).unwrap();
    assert_eq!(head, "HTTP/1.0 200 OK\n  content-type: text/plain\n  content-length\n  date");
    assert_eq!(body, "ok: attached via tp_btf, 130 live\n");
    assert_eq!(healthz_shape(body, "tp_btf"), "ok: attached via <attach>, <n> live\n");
    assert!(response_shape("HTTP/1.0 200 OK\r\n").is_err());
}
