//! A top-like table of the live counts, for a terminal: `watch` without `--json`, and
//! `top` when stdout is not a terminal. Its columns are those of `view::columns` that
//! `watch` shows.

use std::fmt::Write as _;

use super::{
    Snapshot,
    columns::{Column, DESTINATIONS, LISTENERS, LOCAL_PORTS, REMOTE_ENDPOINTS},
};

/// The snapshot as a summary line and two tables (local ports, then remote endpoints),
/// then the listeners and destinations when there are any, each line ending in a newline.
/// Clearing the screen between refreshes is the caller's.
#[must_use]
pub fn render(s: &Snapshot) -> String {
    let mut out = format!(
        "elapsed {:.1}s  backend {}  live {}  events {}  lost {}  drift {} ({} in all)  filtered {}\n",
        s.elapsed_s, s.backend, s.live, s.events, s.lost, s.drift, s.drift_total, s.filtered
    );
    if s.local_ports.is_empty() && s.remote_endpoints.is_empty() {
        out.push_str("\n(no live connections)\n");
        return out;
    }

    out.push('\n');
    write_table(&mut out, &LOCAL_PORTS, &s.local_ports);
    out.push('\n');
    write_table(&mut out, &REMOTE_ENDPOINTS, &s.remote_endpoints);
    if !s.listeners.is_empty() {
        out.push('\n');
        write_table(&mut out, &LISTENERS, &s.listeners);
    }
    if !s.destinations.is_empty() {
        out.push('\n');
        write_table(&mut out, &DESTINATIONS, &s.destinations);
    }
    out
}

/// Writes a header and rows, each column as wide as its widest cell, two spaces apart.
fn write_table<R>(out: &mut String, columns: &[Column<R>], rows: &[R]) {
    let columns: Vec<&Column<R>> = columns.iter().filter(|c| c.in_watch).collect();
    let cells: Vec<Vec<String>> =
        rows.iter().map(|row| columns.iter().map(|c| (c.text)(row)).collect()).collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.title.len()).collect();
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let write_row = |out: &mut String, cells: &[String]| {
        let mut line = String::new();
        for (i, ((cell, width), column)) in
            cells.iter().zip(widths.iter().copied()).zip(&columns).enumerate()
        {
            if i > 0 {
                line.push_str("  ");
            }
            if column.numeric {
                write!(line, "{cell:>width$}")
            } else {
                write!(line, "{cell:<width$}")
            }
            .expect("writing to a String cannot fail");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    let header: Vec<String> = columns.iter().map(|c| c.title.to_owned()).collect();
    write_row(out, &header);
    for row in &cells {
        write_row(out, row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{columns::tests::full_snapshot, tests::sample};

    /// The lines of the section whose header starts with `title`, header included.
    fn section<'a>(table: &'a str, title: &str) -> Vec<&'a str> {
        table.lines().skip_while(|l| !l.starts_with(title)).take_while(|l| !l.is_empty()).collect()
    }

    /// Byte offset just past each whitespace-separated cell of a row.
    fn cell_ends(line: &str) -> Vec<usize> {
        let bytes = line.as_bytes();
        (1..=bytes.len())
            .filter(|&i| bytes[i - 1] != b' ' && bytes.get(i).is_none_or(|&b| b == b' '))
            .collect()
    }

    #[test]
    fn summary_line_has_the_totals() {
        let table = render(&sample());
        let first = table.lines().next().unwrap();
        for part in [
            "elapsed 12.3s",
            "backend fentry",
            "live 5",
            "events 0",
            "lost 3",
            "drift 1",
            "filtered 4",
        ] {
            assert!(first.contains(part), "{first}");
        }
    }

    #[test]
    fn local_ports_are_right_aligned_under_their_headers() {
        let s = sample();
        let table = render(&s);
        let lines = section(&table, "LOCAL PORT");
        assert_eq!(lines[0], "LOCAL PORT  LIVE  REMOTE ADDRS");
        assert_eq!(lines.len(), 1 + s.local_ports.len());
        let edges: Vec<usize> = ["LOCAL PORT", "LIVE", "REMOTE ADDRS"]
            .iter()
            .map(|title| lines[0].find(title).unwrap() + title.len())
            .collect();
        for (line, row) in lines[1..].iter().zip(&s.local_ports) {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let values = [u64::from(row.port), row.live, row.remote_addrs].map(|v| v.to_string());
            assert_eq!(cells, values, "{line}");
            assert_eq!(cell_ends(line), edges, "{line}");
        }
    }

    #[test]
    fn remote_endpoints_bracket_ipv6_and_align() {
        let s = sample();
        let table = render(&s);
        let lines = section(&table, "REMOTE ENDPOINT");
        assert_eq!(lines.len(), 1 + s.remote_endpoints.len());
        let header = lines[0];
        assert!(header.starts_with("REMOTE ENDPOINT"));
        let live_edge = header.find("LIVE").unwrap() + "LIVE".len();
        for (line, row) in lines[1..].iter().zip(&s.remote_endpoints) {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let endpoint = match row.addr {
                std::net::IpAddr::V4(a) => format!("{a}:{}", row.port),
                std::net::IpAddr::V6(a) => format!("[{a}]:{}", row.port),
            };
            assert_eq!(cells, [endpoint, row.live.to_string(), row.local_ports.to_string()]);
            assert!(line.starts_with(cells[0]), "endpoints are left-aligned: {line}");
            assert_eq!(cell_ends(line)[1], live_edge, "{line}");
            assert_eq!(line.len(), header.len(), "{line}");
        }
        assert!(lines.iter().any(|l| l.starts_with("[::1]:50000 ")));
    }

    #[test]
    fn wide_values_widen_their_column() {
        let mut s = sample();
        s.local_ports[0].live = 123_456_789;
        let table = render(&s);
        let lines = section(&table, "LOCAL PORT");
        let widths: Vec<usize> = lines.iter().map(|l| l.len()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{table}");
        assert!(lines[1].contains(" 123456789 "), "{table}");
        assert_eq!(lines[0].find("LIVE").unwrap() + "LIVE".len(), cell_ends(lines[1])[1]);
    }

    #[test]
    fn empty_snapshot_says_so() {
        let mut s = sample();
        s.live = 0;
        s.local_ports.clear();
        s.remote_endpoints.clear();
        let table = render(&s);
        assert!(table.contains("(no live connections)"));
        assert!(!table.contains("LOCAL PORT"));
        assert!(!table.contains('\x1b'));
    }

    #[test]
    fn every_column_of_every_table_as_printed() {
        let table = render(&full_snapshot());
        assert_eq!(
            format!("\n{table}"),
            r"
elapsed 12.3s  backend fentry  live 5  events 0  lost 3  drift 1 (5 in all)  filtered 4

LOCAL PORT  LIVE  REMOTE ADDRS
      8080     3             2
       443     1             1
     41000     1             1

REMOTE ENDPOINT  LIVE  LOCAL PORTS
10.0.0.2:40000      1            1
10.0.0.3:40001      1            1
10.0.0.3:40002      1            1
10.0.0.9:5432       1            1
[::1]:50000         1            1

LISTENER             LIVE  PEAK  MAX/REMOTE  REUSEPORT  ACCEPTS    QUEUE  LIMIT  HEADROOM
0.0.0.0:22              7  4711           4          1     13/s  129/129  fds           0
[2001:db8::1]:65535  4711  5000         120         16   1234/s        -  -             -

DESTINATION                PORTS  SHARED    USE  CONNECTS  EXHAUSTED IN
10.0.0.1 -> 10.0.0.9:5432  26468      12  93.8%     250/s           42s
::1 -> [::1]:4711              1       0   0.0%       0/s             -
"
        );
    }
}
