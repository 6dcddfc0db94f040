//! A run as one self-contained HTML page (`tcptrace report`, `check --report x.html`):
//! what was measured where, the verdicts when there are some, then the run as charts over
//! time, one point per snapshot. The charts are
//! inline SVG drawn by plotters; the page fetches nothing and needs nothing installed to be
//! read (text in the SVG is left to the browser's own sans-serif font).
//!
//! Charts, each over the run's elapsed seconds:
//! - live connections of the busiest listeners, with the peak each had reached;
//! - local ports in use per destination against the size of its ephemeral range, with
//!   failed connects marked where they happened;
//! - accept queue per listener against what its queue holds, and its drops since the run
//!   began;
//! - events lost, drift and drift_total: how far the counts can be trusted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::check::Verdict;
use plotters::prelude::*;
use tcptrace_json::Snapshot;

/// Rows of listeners and destinations drawn per chart: the busiest, so the lines stay
/// readable.
const SHOWN: usize = 5;
const WIDTH: u32 = 960;
const HEIGHT: u32 = 320;

/// What was measured, where and how: the report's first table, in order.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    pub title: String,
    pub facts: Vec<(String, String)>,
}

/// One judged claim (check's expectations, demo's counts), as the page shows it.
#[derive(Clone, Debug)]
pub struct VerdictRow {
    pub claim: String,
    pub verdict: Verdict,
    /// The observed value, and what decided it.
    pub detail: String,
}

/// The snapshots a report draws, bounded, whatever the run's length: past
/// [`Samples::MOST`], every other one kept is dropped and from then on only every 2nd (4th,
/// and so on) pushed is kept, so that a day-long run keeps its whole span evenly spaced in
/// bounded memory. The last one pushed is always kept: a run's end is drawn.
#[derive(Clone, Debug)]
pub struct Samples {
    kept: Vec<Snapshot>,
    /// Keep one pushed snapshot in `stride`.
    stride: u64,
    pushed: u64,
    /// The last one pushed, if it was not kept.
    last: Option<Snapshot>,
}

impl Default for Samples {
    fn default() -> Self {
        Self { kept: Vec::new(), stride: 1, pushed: 0, last: None }
    }
}

impl Samples {
    /// At most this many are kept (and the last one pushed): 2,000 points a line are finer
    /// than a chart 960 pixels wide can show.
    pub const MOST: usize = 2_000;

    pub fn push(&mut self, s: Snapshot) {
        let keep = self.pushed.is_multiple_of(self.stride);
        self.pushed += 1;
        if !keep {
            self.last = Some(s);
            return;
        }
        self.last = None;
        self.kept.push(s);
        if self.kept.len() > Self::MOST {
            // The kept ones are every `stride`-th: keeping every other makes it 2 × stride.
            self.kept = std::mem::take(&mut self.kept).into_iter().step_by(2).collect();
            self.stride *= 2;
        }
    }

    /// How many are kept, the last one pushed included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.kept.len() + usize::from(self.last.is_some())
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept ones in order, the last one pushed at the end.
    #[must_use]
    pub fn into_vec(self) -> Vec<Snapshot> {
        let mut all = self.kept;
        all.extend(self.last);
        all
    }
}

/// One line on a chart.
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
    /// A limit or a peak: drawn dashed in its row's colour.
    dashed: bool,
    color: usize,
}

/// Marks at single moments (failed connects).
struct Marks {
    name: String,
    points: Vec<(f64, f64)>,
}

/// The whole page.
#[must_use]
pub fn html(info: &RunInfo, verdicts: &[VerdictRow], samples: &[Snapshot]) -> String {
    let mut page = String::new();
    let title = escape(&info.title);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
    );
    if !verdicts.is_empty() {
        let passed = verdicts.iter().all(|v| v.verdict == Verdict::Pass);
        let _ = write!(
            page,
            "<h2>Verdicts: {}</h2>\n<table class=\"verdicts\"><tr><th>claim</th><th>verdict</th>\
             <th>observed, and what decided it</th></tr>\n",
            if passed { "PASS" } else { "FAIL" }
        );
        for v in verdicts {
            let (class, word) = match v.verdict {
                Verdict::Pass => ("pass", "PASS"),
                Verdict::Fail => ("fail", "FAIL"),
                // A failure too, but for want of data: said so, as the summary does.
                Verdict::NoData => ("fail", "NO DATA"),
            };
            let _ = writeln!(
                page,
                "<tr><td><code>{}</code></td><td class=\"{class}\">{word}</td><td>{}</td></tr>",
                escape(&v.claim),
                escape(&v.detail)
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("<h2>The run</h2>\n<table class=\"facts\">\n");
    for (key, value) in &info.facts {
        let _ = writeln!(page, "<tr><th>{}</th><td>{}</td></tr>", escape(key), escape(value));
    }
    let _ = writeln!(page, "<tr><th>snapshots</th><td>{}</td></tr>\n</table>", samples.len());
    for (id, title, caption, lines, marks) in charts(samples) {
        let _ = writeln!(
            page,
            "<figure class=\"chart\" id=\"{id}\"><figcaption><b>{}</b> {}</figcaption>",
            escape(title),
            escape(&caption)
        );
        match chart(title, span(samples), &lines, &marks) {
            Ok(svg) => page.push_str(&svg),
            Err(why) => {
                let _ = write!(page, "<p class=\"fail\">chart not drawn: {}</p>", escape(&why));
            }
        }
        legend(&mut page, &lines, &marks);
        page.push_str("</figure>\n");
    }
    page.push_str("</body></html>\n");
    page
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1000px;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;\
padding:4px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}\
.pass{color:#070;font-weight:bold}.fail{color:#b00;font-weight:bold}\
figure{margin:0 0 2em 0}figcaption{margin-bottom:4px}\
.legend{list-style:none;padding:0;margin:4px 0;font-size:90%}.legend li{display:inline-block;\
margin-right:1.5em}.key{display:inline-block;width:22px;margin-right:6px;vertical-align:middle}\
.dot{display:inline-block;width:8px;height:8px;border-radius:4px;margin-right:6px}";

type Chart = (&'static str, &'static str, String, Vec<Line>, Vec<Marks>);

/// The four charts' lines, from the samples.
fn charts(samples: &[Snapshot]) -> Vec<Chart> {
    let walks = walks(samples);
    let ListenerLines { live, queues, bindings } = listener_lines(samples, &walks);
    let (ports, failed) = destination_lines(samples, &walks);
    let at = |f: fn(&Snapshot) -> u64| samples.iter().map(move |s| (s.elapsed_s, f(s)));
    let trust = vec![
        line("lost", at(|s| s.lost), false, 0),
        line("drift", at(|s| s.drift), false, 1),
        line("drift_total", at(|s| s.drift_total), true, 2),
    ];

    let binding = if bindings.is_empty() {
        "No limits were read for any listener.".to_owned()
    } else {
        format!("Binding limit: {}.", bindings.join("; "))
    };
    vec![
        (
            "chart-live",
            "Live connections per listener",
            format!(
                "solid: live; dashed: the peak so far, and in another colour where the binding \
                 limit stops it (live + its headroom). {binding}"
            ),
            live,
            Vec::new(),
        ),
        (
            "chart-ports",
            "Local ports in use per destination",
            "solid: ports in use (SYN_SENT through TIME_WAIT); dashed: the ephemeral range; \
             dots: failed connects (EADDRNOTAVAIL)."
                .to_owned(),
            ports,
            failed,
        ),
        (
            "chart-queue",
            "Accept queue and drops per listener",
            "solid: queued for accept() and drops since the run began; dashed: what the \
             queue holds (backlog + 1 per socket)."
                .to_owned(),
            queues,
            Vec::new(),
        ),
        (
            "chart-trust",
            "How far the counts can be trusted",
            "lost: events a full ring buffer dropped; drift: what the last reconciliation \
             corrected; drift_total: every correction since the start."
                .to_owned(),
            trust,
            Vec::new(),
        ),
    ]
}

/// The live and queue lines of the busiest listeners, and the binding limit of each at
/// the end.
struct ListenerLines {
    live: Vec<Line>,
    queues: Vec<Line>,
    bindings: Vec<String>,
}

/// Each sample whose capacity rows come from a walk the one before did not have, at the
/// moment of that walk: a paced refresh repeats its rows over several snapshots, and they
/// are drawn once, when they were measured. A recording without `capacity_age_s` (made
/// before it existed) is drawn at each line's time.
fn walks(samples: &[Snapshot]) -> Vec<(f64, &Snapshot)> {
    let mut walks: Vec<(f64, &Snapshot)> = Vec::new();
    for s in samples {
        let at = s.elapsed_s - s.capacity_age_s.unwrap_or(0.0);
        // Both times are written to the millisecond: one walk is within 2 ms of itself.
        let same_walk = s.capacity_age_s.is_some()
            && walks.last().is_some_and(|(last, _)| (at - last).abs() < 0.002);
        if !same_walk {
            walks.push((at, s));
        }
    }
    walks
}

fn listener_lines(samples: &[Snapshot], walks: &[(f64, &Snapshot)]) -> ListenerLines {
    let mut live = Vec::new();
    let mut queues = Vec::new();
    let mut bindings = Vec::new();
    for (color, key) in busiest_listeners(samples).iter().enumerate() {
        let name = listener_name(key);
        let rows = || walks.iter().filter_map(|(t, s)| listener_of(s, key).map(|l| (*t, l)));
        live.push(line(&name, rows().map(|(t, l)| (t, l.live)), false, color));
        live.push(line(
            &format!("{name} peak"),
            rows().map(|(t, l)| (t, l.peak_live)),
            true,
            color,
        ));
        // Where the binding limit stops it: live + what that limit leaves. A limit far above
        // the live count (memory, the file table) would flatten the lines to the axis: it is
        // named in the legend instead of drawn, as a destination's range is.
        let stops_at = || {
            rows().filter_map(|(t, l)| {
                let headroom = l.limits.as_ref()?.binding_headroom?;
                Some((t, l.live.saturating_add(headroom)))
            })
        };
        let peak = rows().map(|(_, l)| l.peak_live).max().unwrap_or(0);
        let highest = stops_at().map(|(_, v)| v).max();
        match highest {
            Some(at) if at <= peak.saturating_mul(4).max(10) => {
                live.push(line(&format!("{name} binding limit"), stops_at(), true, color + SHOWN));
            }
            Some(at) => {
                if let Some(l) = live.iter_mut().rev().nth(1) {
                    l.name = format!("{name} (binding limit up to {at}, above the chart)");
                }
            }
            None => {}
        }
        // Each row with its limits read, and the sockets of its SO_REUSEPORT group.
        let limits = || {
            rows().filter_map(|(t, l)| l.limits.as_ref().map(|lim| (t, lim, l.reuseport_sockets)))
        };
        queues.push(line(
            &format!("{name} queue"),
            limits().map(|(t, l, _)| (t, l.accept_queue)),
            false,
            color,
        ));
        // Each socket of the group holds backlog + 1.
        let holds = limits().map(|(t, l, sockets)| (t, l.backlog + sockets.max(1)));
        queues.push(line(&format!("{name} holds"), holds, true, color));
        let first = limits().find_map(|(_, l, _)| l.drops).unwrap_or(0);
        let drops = limits().filter_map(|(t, l, _)| l.drops.map(|d| (t, d.saturating_sub(first))));
        queues.push(line(&format!("{name} drops"), drops, false, color + SHOWN));
        if let Some((_, l, _)) = limits().next_back()
            && let (Some(limit), Some(headroom)) = (l.binding, l.binding_headroom)
        {
            bindings.push(format!("{name}: {}, {headroom} more at the end", limit.as_str()));
        }
    }
    ListenerLines { live, queues, bindings }
}

/// The ports-in-use lines of the busiest destinations, and their failed connects.
fn destination_lines(samples: &[Snapshot], walks: &[(f64, &Snapshot)]) -> (Vec<Line>, Vec<Marks>) {
    let mut ports = Vec::new();
    let mut failed = Vec::new();
    for (color, key) in busiest_destinations(samples).iter().enumerate() {
        let name = destination_name(key);
        let rows = || walks.iter().filter_map(|(t, s)| destination_of(s, key).map(|d| (*t, d)));
        ports.push(line(&name, rows().map(|(t, d)| (t, d.ports_in_use)), false, color));
        // A range far above the ports used would flatten them to the axis: it is then
        // named in the legend instead of drawn.
        let peak = rows().map(|(_, d)| d.ports_in_use).max().unwrap_or(0);
        let range = rows().map(|(_, d)| d.range).max().unwrap_or(0);
        if u64::from(range) <= peak.saturating_mul(4) {
            ports.push(line(
                &format!("{name} range"),
                rows().map(|(t, d)| (t, u64::from(d.range))),
                true,
                color,
            ));
        } else if let Some(l) = ports.last_mut() {
            l.name = format!("{name} (range {range}, above the chart)");
        }
        let mut before = None;
        let mut marks = Vec::new();
        for (t, d) in rows() {
            if before.is_some_and(|b| d.failed_connects > b) {
                marks.push((t, count(d.ports_in_use)));
            }
            before = Some(d.failed_connects);
        }
        if !marks.is_empty() {
            failed.push(Marks { name: format!("{name} failed connects"), points: marks });
        }
    }
    (ports, failed)
}

type ListenerKey = (u32, IpAddr, u16);
type DestinationKey = (u32, IpAddr, IpAddr, u16);

/// Listeners by the most live connections they had at any sample, busiest first.
fn busiest_listeners(samples: &[Snapshot]) -> Vec<ListenerKey> {
    let mut peak: BTreeMap<ListenerKey, u64> = BTreeMap::new();
    for l in samples.iter().flat_map(|s| &s.listeners) {
        let p = peak.entry((l.netns, l.addr, l.port)).or_default();
        *p = (*p).max(l.live);
    }
    top(peak)
}

/// Destinations by the most ports they held at any sample, busiest first.
fn busiest_destinations(samples: &[Snapshot]) -> Vec<DestinationKey> {
    let mut peak: BTreeMap<DestinationKey, u64> = BTreeMap::new();
    for d in samples.iter().flat_map(|s| &s.destinations) {
        let p = peak.entry((d.netns, d.laddr, d.raddr, d.rport)).or_default();
        *p = (*p).max(d.ports_in_use);
    }
    top(peak)
}

fn top<K: Ord + Copy>(peak: BTreeMap<K, u64>) -> Vec<K> {
    let mut rows: Vec<(K, u64)> = peak.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    rows.into_iter().take(SHOWN).map(|(k, _)| k).collect()
}

fn listener_of<'s>(s: &'s Snapshot, key: &ListenerKey) -> Option<&'s tcptrace_json::ListenerRow> {
    s.listeners.iter().find(|l| (l.netns, l.addr, l.port) == *key)
}

fn destination_of<'s>(
    s: &'s Snapshot,
    key: &DestinationKey,
) -> Option<&'s tcptrace_json::DestinationRow> {
    s.destinations.iter().find(|d| (d.netns, d.laddr, d.raddr, d.rport) == *key)
}

fn listener_name((netns, addr, port): &ListenerKey) -> String {
    format!("{} (netns {netns})", std::net::SocketAddr::new(*addr, *port))
}

fn destination_name((netns, laddr, raddr, rport): &DestinationKey) -> String {
    format!("{laddr} → {} (netns {netns})", std::net::SocketAddr::new(*raddr, *rport))
}

fn line(name: &str, points: impl Iterator<Item = (f64, u64)>, dashed: bool, color: usize) -> Line {
    Line {
        name: name.to_owned(),
        points: points.map(|(t, v)| (t, count(v))).collect(),
        dashed,
        color,
    }
}

/// A count as a chart coordinate: exact below 2^53, which no count here reaches.
#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
const fn count(v: u64) -> f64 {
    v as f64
}

/// The run's time axis: every chart spans the same seconds, whatever its rows covered,
/// from the first walk (which can be older than the first line) to the last line.
fn span(samples: &[Snapshot]) -> (f64, f64) {
    let start = walks(samples).first().map_or(0.0, |(at, _)| *at);
    let end = samples.last().map_or(0.0, |s| s.elapsed_s);
    (start, end.max(start + 1.0))
}

/// The colour of failed-connect marks.
const MARK: RGBColor = RED;

/// A chart's legend, in HTML under it rather than in the SVG, where it would cover the
/// lines: each line's colour (dashed for limits and peaks) and name.
fn legend(page: &mut String, lines: &[Line], marks: &[Marks]) {
    page.push_str("<ul class=\"legend\">");
    for l in lines.iter().filter(|l| !l.points.is_empty()) {
        let (r, g, b) = Palette99::pick(l.color).rgb();
        let style = if l.dashed { "dashed" } else { "solid" };
        let _ = write!(
            page,
            "<li><span class=\"key\" style=\"border-top:3px {style} rgb({r},{g},{b})\"></span>{}</li>",
            escape(&l.name)
        );
    }
    for m in marks {
        let (r, g, b) = MARK.rgb();
        let _ = write!(
            page,
            "<li><span class=\"dot\" style=\"background:rgb({r},{g},{b})\"></span>{}</li>",
            escape(&m.name)
        );
    }
    page.push_str("</ul>\n");
}

/// One chart as an SVG element.
fn chart(title: &str, t: (f64, f64), lines: &[Line], marks: &[Marks]) -> Result<String, String> {
    let all = || lines.iter().flat_map(|l| &l.points).chain(marks.iter().flat_map(|m| &m.points));
    // At least 10, so that the axis of a chart of zeros and ones has whole-number ticks.
    let y_end = (all().map(|p| p.1).fold(0.0_f64, f64::max) * 1.1).max(10.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(t.0..t.1, 0.0..y_end)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds since tracing began")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        for l in lines.iter().filter(|l| !l.points.is_empty()) {
            let color = Palette99::pick(l.color).to_rgba();
            let style = color.stroke_width(2);
            let points = l.points.iter().copied();
            if l.dashed {
                chart.draw_series(DashedLineSeries::new(points, 6, 4, style))
            } else {
                chart.draw_series(LineSeries::new(points, style))
            }
            .map_err(|e| e.to_string())?;
            // A row seen in one walk only would be a line of no length: a dot shows it.
            if let [point] = l.points.as_slice() {
                chart
                    .draw_series(std::iter::once(Circle::new(*point, 3, color.filled())))
                    .map_err(|e| e.to_string())?;
            }
        }
        for m in marks {
            chart
                .draw_series(m.points.iter().map(|&p| Circle::new(p, 4, MARK.filled())))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| format!("{title}: {e}"))?;
    }
    Ok(svg)
}

/// Text for HTML: the five characters that could open markup or end an attribute.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, live: u64, ports: u64, failed: u64) -> Snapshot {
        let json = format!(
            r#"{{"elapsed_s":{t},"backend":"tp_btf","events":0,"lost":0,"drift":0,"drift_total":0,"unreconciled_netns":0,"filtered":0,"live":{live},"local_ports":[],"remote_endpoints":[],"listeners":[{{"netns":7,"addr":"127.0.0.1","port":8080,"live":{live},"remote_addrs":1,"max_per_remote":{live},"peak_live":{live},"accept_rate":0.0,"close_rate":0.0,"reuseport_sockets":1,"pids":[],"limits":null}}],"destinations":[{{"netns":7,"laddr":"127.0.0.2","raddr":"127.0.0.1","rport":8080,"ports_in_use":{ports},"shared_ports":0,"range":10,"use_pct":0.0,"connect_rate":0.0,"exhaustion_s":null,"failed_connects":{failed}}}],"limits":[]}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    /// The `points` of every polyline in the chart with `id`.
    fn polylines(page: &str, id: &str) -> Vec<usize> {
        let start = page.find(&format!("id=\"{id}\"")).unwrap();
        let end = page[start..].find("</figure>").unwrap() + start;
        page[start..end]
            .split("<polyline")
            .skip(1)
            .map(|p| {
                let points = p.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
                points.split_whitespace().count()
            })
            .collect()
    }

    #[test]
    fn every_chart_plots_one_point_per_sample() {
        let samples: Vec<Snapshot> =
            (0..6u32).map(|i| sample(f64::from(i), u64::from(i) * 10, u64::from(i), 0)).collect();
        let info = RunInfo { title: "a <run>".into(), facts: vec![("host".into(), "b&c".into())] };
        let page = html(&info, &[], &samples);
        assert!(page.contains("<title>a &lt;run&gt;</title>"), "escaped");
        assert!(page.contains("<td>b&amp;c</td>"));
        assert!(!page.contains("Verdicts"), "no verdicts without claims");
        for id in ["chart-live", "chart-ports", "chart-trust"] {
            let lines = polylines(&page, id);
            assert!(lines.contains(&samples.len()), "{id}: {lines:?}");
        }
        // Without limits there is no queue to plot, and the page says so instead of lying.
        assert!(page.contains("No limits were read for any listener."));
    }

    /// `sample` with its listener bound by its fds, `headroom` connections from that limit.
    fn bound(t: f64, live: u64, headroom: u64) -> Snapshot {
        use tcptrace_json::limits::{LimitName, ListenerLimits};
        let mut s = sample(t, live, 0, 0);
        s.listeners[0].limits = Some(ListenerLimits {
            accept_queue: 0,
            backlog: 128,
            min_backlog: 128,
            somaxconn: Some(4096),
            backlog_clamped: false,
            drops: Some(0),
            fds: Some(live),
            fd_limit: Some(live + headroom),
            fd_pid: Some(1),
            headroom: Vec::new(),
            binding: Some(LimitName::Fds),
            binding_headroom: Some(headroom),
        });
        s
    }

    #[test]
    fn a_near_binding_limit_is_drawn_and_a_far_one_named() {
        let near: Vec<Snapshot> = (0..4u32).map(|i| bound(f64::from(i), 100, 50)).collect();
        let page = html(&RunInfo::default(), &[], &near);
        let live = &page[page.find("id=\"chart-live\"").unwrap()..];
        assert!(live.contains("(netns 7) binding limit</li>"), "a drawn limit is in the legend");
        let far: Vec<Snapshot> = (0..4u32).map(|i| bound(f64::from(i), 100, 1_000_000)).collect();
        let page = html(&RunInfo::default(), &[], &far);
        assert!(page.contains("(binding limit up to 1000100, above the chart)</li>"));
        assert!(!page.contains("(netns 7) binding limit</li>"), "a far limit is not drawn");
    }

    #[test]
    fn samples_stay_bounded_and_evenly_spaced_over_any_run() {
        let mut samples = Samples::default();
        let pushed = 3 * Samples::MOST as u32 + 7;
        for i in 0..pushed {
            samples.push(sample(f64::from(i), 0, 0, 0));
        }
        let kept = samples.into_vec();
        assert!(kept.len() <= Samples::MOST + 1, "{}", kept.len());
        assert!(kept.len() > Samples::MOST / 2, "{}", kept.len());
        let t: Vec<f64> = kept.iter().map(|s| s.elapsed_s).collect();
        assert_eq!((t[0], *t.last().unwrap()), (0.0, f64::from(pushed - 1)), "first and last");
        // Evenly spaced, but for the last one.
        let gaps: Vec<f64> = t[..t.len() - 1].windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (g - gaps[0]).abs() < 1e-9), "{gaps:?}");
    }

    #[test]
    fn rows_a_paced_refresh_repeats_are_drawn_once_at_their_walk() {
        // Six lines a second apart; the rows come from walks at 0, 2.5 and 4.5 s (the lines
        // at 1-2 and 3-4 repeat the walk before them): three points each, the counts and the
        // trust chart still six.
        let ages = [0.0, 1.0, 2.0, 0.5, 1.5, 0.5];
        let samples: Vec<Snapshot> = (0..6u32)
            .map(|i| {
                let mut s = sample(f64::from(i), 0, 0, 0);
                s.capacity_age_s = Some(ages[i as usize]);
                s
            })
            .collect();
        let page = html(&RunInfo::default(), &[], &samples);
        assert!(
            polylines(&page, "chart-live").contains(&3),
            "{:?}",
            polylines(&page, "chart-live")
        );
        assert!(!polylines(&page, "chart-live").contains(&6));
        assert!(polylines(&page, "chart-ports").contains(&3));
        assert!(polylines(&page, "chart-trust").contains(&6));
        let at: Vec<f64> = walks(&samples).iter().map(|(t, _)| *t).collect();
        assert_eq!(at, [0.0, 2.5, 4.5]);
    }

    #[test]
    fn failed_connects_are_marked_where_they_grew_and_verdicts_come_first() {
        let samples = vec![
            sample(0.0, 1, 8, 0),
            sample(1.0, 1, 10, 0),
            sample(2.0, 1, 10, 3),
            sample(3.0, 1, 10, 3),
        ];
        let verdicts = [
            VerdictRow {
                claim: "lport=8080 live>=1".into(),
                verdict: Verdict::Pass,
                detail: "peak 1".into(),
            },
            VerdictRow {
                claim: "dst=127.0.0.1:8080 headroom>=20%".into(),
                verdict: Verdict::Fail,
                detail: "minimum 0%".into(),
            },
            VerdictRow {
                claim: "lport=9999 live>=1".into(),
                verdict: Verdict::NoData,
                detail: "no data".into(),
            },
        ];
        let page = html(&RunInfo::default(), &verdicts, &samples);
        let ports = &page[page.find("id=\"chart-ports\"").unwrap()..];
        let ports = &ports[..ports.find("</figure>").unwrap()];
        // One mark, at t=2, where the failures grew.
        assert_eq!(ports.matches("<circle").count(), 1, "{ports}");
        assert!(ports.contains("failed connects</li>"));
        assert!(page.find("Verdicts: FAIL").unwrap() < page.find("id=\"chart-live\"").unwrap());
        assert!(page.contains("<td class=\"fail\">FAIL</td>"));
        assert!(page.contains("<td class=\"fail\">NO DATA</td>"));
    }
}
