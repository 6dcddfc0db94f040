//! The full-screen view of `tcptrace top`: the four tables of a [`Snapshot`] (listeners,
//! destinations, local ports, remote endpoints), the totals, and the keys that sort and
//! filter them. The columns, and how rows sort and match by them, are `view::columns`'s.
//!
//! Pure: [`TopView::on_key`] changes the view's state, [`TopView::render`] draws a state and
//! a snapshot into a frame; the terminal, the clock and the ledger are the caller's. Sorting
//! and filtering only reorder and hide the rows the snapshot already holds.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style, Stylize as _},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table},
};

use super::{
    Snapshot,
    columns::{self, Column, DESTINATIONS, LISTENERS, LOCAL_PORTS, REMOTE_ENDPOINTS},
};

/// What the keys say, at the bottom of the screen.
pub const KEYS: &str =
    "q quit  Tab next table  Left/Right sort column  r reverse order  / filter  Esc clear filter";

/// The tables, top to bottom; Tab moves between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pane {
    #[default]
    Listeners,
    Destinations,
    LocalPorts,
    RemoteEndpoints,
}

impl Pane {
    const ALL: [Self; 4] =
        [Self::Listeners, Self::Destinations, Self::LocalPorts, Self::RemoteEndpoints];

    fn index(self) -> usize {
        self as usize
    }

    fn title(self) -> &'static str {
        match self {
            Self::Listeners => "Listeners",
            Self::Destinations => "Destinations",
            Self::LocalPorts => "Local ports",
            Self::RemoteEndpoints => "Remote endpoints",
        }
    }

    /// Whether each column is a number (sorted largest first when chosen).
    fn numeric_columns(self) -> Vec<bool> {
        fn numeric<R>(columns: &[Column<R>]) -> Vec<bool> {
            columns.iter().map(|c| c.numeric).collect()
        }
        match self {
            Self::Listeners => numeric(&LISTENERS),
            Self::Destinations => numeric(&DESTINATIONS),
            Self::LocalPorts => numeric(&LOCAL_PORTS),
            Self::RemoteEndpoints => numeric(&REMOTE_ENDPOINTS),
        }
    }
}

/// The column a table is sorted by, and which way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    pub column: usize,
    pub descending: bool,
}

/// What the caller does after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// Everything the keys change.
#[derive(Clone, Debug, PartialEq)]
pub struct TopView {
    /// The table the sort keys act on.
    pub focus: Pane,
    /// Per pane, in [`Pane::ALL`] order.
    pub sorts: [Sort; 4],
    /// Rows are shown when one of their address or port cells contains this (ignoring case).
    pub filter: String,
    /// Whether keys are typed into the filter prompt.
    pub editing: bool,
    /// A problem to show above the tables (the capacity rows could not be read, say).
    pub notice: Option<String>,
}

impl Default for TopView {
    /// Each table by its most telling number, largest first: live connections, or the share
    /// of the ephemeral range a destination uses.
    fn default() -> Self {
        let desc = |column| Sort { column, descending: true };
        Self {
            focus: Pane::Listeners,
            sorts: [
                desc(columns::position(&LISTENERS, "LIVE")),
                desc(columns::position(&DESTINATIONS, "USE")),
                desc(columns::position(&LOCAL_PORTS, "LIVE")),
                desc(columns::position(&REMOTE_ENDPOINTS, "LIVE")),
            ],
            filter: String::new(),
            editing: false,
            notice: None,
        }
    }
}

impl TopView {
    /// Applies one key press.
    pub fn on_key(&mut self, key: KeyEvent) -> Flow {
        if key.kind == KeyEventKind::Release {
            return Flow::Continue;
        }
        // Raw mode turns Ctrl-C into a key rather than SIGINT.
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Flow::Quit;
        }
        if self.editing {
            match key.code {
                KeyCode::Esc => {
                    self.filter.clear();
                    self.editing = false;
                }
                KeyCode::Enter => self.editing = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return Flow::Continue;
        }
        match key.code {
            KeyCode::Char('q') => return Flow::Quit,
            KeyCode::Tab => self.focus = Pane::ALL[(self.focus.index() + 1) % Pane::ALL.len()],
            KeyCode::BackTab => {
                self.focus =
                    Pane::ALL[(self.focus.index() + Pane::ALL.len() - 1) % Pane::ALL.len()];
            }
            KeyCode::Left | KeyCode::Char('<' | 'h') => self.sort_by_neighbour(false),
            KeyCode::Right | KeyCode::Char('>' | 'l') => self.sort_by_neighbour(true),
            KeyCode::Char('r') => {
                let sort = &mut self.sorts[self.focus.index()];
                sort.descending = !sort.descending;
            }
            KeyCode::Char('/') => self.editing = true,
            KeyCode::Esc => self.filter.clear(),
            _ => {}
        }
        Flow::Continue
    }

    /// Sorts the focused table by the next column to the right (or left), numbers largest
    /// first and addresses in ascending order.
    fn sort_by_neighbour(&mut self, right: bool) {
        let numeric = self.focus.numeric_columns();
        let sort = &mut self.sorts[self.focus.index()];
        let n = numeric.len();
        sort.column = if right { (sort.column + 1) % n } else { (sort.column + n - 1) % n };
        sort.descending = numeric[sort.column];
    }

    /// Draws the whole screen.
    pub fn render(&self, snapshot: &Snapshot, frame: &mut Frame<'_>) {
        let mut constraints = vec![Constraint::Length(1)];
        if self.notice.is_some() {
            constraints.push(Constraint::Length(1));
        }
        let fixed = u16::try_from(constraints.len() + 1).unwrap_or(u16::MAX);
        let matching = [
            matching(&LISTENERS, &snapshot.listeners, &self.filter),
            matching(&DESTINATIONS, &snapshot.destinations, &self.filter),
            matching(&LOCAL_PORTS, &snapshot.local_ports, &self.filter),
            matching(&REMOTE_ENDPOINTS, &snapshot.remote_endpoints, &self.filter),
        ];
        constraints.extend(table_heights(frame.area().height.saturating_sub(fixed), matching));
        constraints.push(Constraint::Length(1));
        let areas = Layout::vertical(constraints).split(frame.area());
        frame.render_widget(Paragraph::new(self.summary(snapshot)), areas[0]);
        if let Some(notice) = &self.notice {
            frame.render_widget(Paragraph::new(notice.as_str().yellow()), areas[1]);
        }
        let tables = &areas[areas.len() - 5..areas.len() - 1];
        for (pane, &area) in Pane::ALL.into_iter().zip(tables) {
            let table = TableView {
                pane,
                sort: self.sorts[pane.index()],
                filter: &self.filter,
                focused: pane == self.focus,
            };
            match pane {
                Pane::Listeners => table.render(frame, area, &LISTENERS, &snapshot.listeners),
                Pane::Destinations => {
                    table.render(frame, area, &DESTINATIONS, &snapshot.destinations);
                }
                Pane::LocalPorts => table.render(frame, area, &LOCAL_PORTS, &snapshot.local_ports),
                Pane::RemoteEndpoints => {
                    table.render(frame, area, &REMOTE_ENDPOINTS, &snapshot.remote_endpoints);
                }
            }
        }
        let footer = areas[areas.len() - 1];
        if self.editing {
            let prompt = format!("/{}", self.filter);
            let cursor_x = footer.x.saturating_add(u16::try_from(prompt.len()).unwrap_or(u16::MAX));
            frame.render_widget(
                Paragraph::new(Line::from(vec![
                    Span::raw(prompt),
                    Span::raw("   filter: Enter keeps it, Esc clears it").dim(),
                ])),
                footer,
            );
            frame.set_cursor_position((cursor_x.min(footer.right().saturating_sub(1)), footer.y));
        } else {
            frame.render_widget(Paragraph::new(KEYS.dim()), footer);
        }
    }

    /// The totals line: attach path, elapsed, live, events, lost, drift (the last pass's and
    /// in all), and the filter.
    fn summary(&self, s: &Snapshot) -> Line<'static> {
        // Lost events or drift mean the counts may be off: make them stand out.
        let warn = |n: u64| {
            if n > 0 { Style::new().red().add_modifier(Modifier::BOLD) } else { Style::new() }
        };
        let mut spans = vec![
            Span::raw("tcptrace top").bold(),
            Span::raw(format!("  attach {}  elapsed {:.1}s  ", s.backend, s.elapsed_s)),
            Span::raw(format!("live {}", s.live)).bold(),
            Span::raw(format!("  events {}  ", s.events)),
            Span::styled(format!("lost {}", s.lost), warn(s.lost)),
            Span::raw("  "),
            Span::styled(format!("drift {}", s.drift), warn(s.drift)),
            Span::styled(format!(" ({} in all)", s.drift_total), warn(s.drift_total)),
        ];
        if !self.filter.is_empty() {
            spans.push(Span::raw(format!("  filter {:?}", self.filter)).yellow());
        }
        Line::from(spans)
    }
}

/// Whether one of the row's searched cells contains `needle` (lowercase).
fn passes<R>(columns: &[Column<R>], row: &R, needle: &str) -> bool {
    needle.is_empty()
        || columns
            .iter()
            .filter(|c| c.searched)
            .any(|c| (c.text)(row).to_lowercase().contains(needle))
}

/// How many rows pass `filter`.
fn matching<R>(columns: &[Column<R>], rows: &[R], filter: &str) -> usize {
    let needle = filter.to_lowercase();
    if needle.is_empty() {
        rows.len()
    } else {
        rows.iter().filter(|r| passes(columns, r, &needle)).count()
    }
}

/// The four tables' heights in `height` lines: a table whose rows fit in an equal share
/// (with its title and column headers) takes only what it needs, and the others share the
/// rest, so a box with three listeners and 10,000 remote endpoints shows more endpoints.
/// The last table also takes what nobody needs, which keeps the keys at the bottom.
fn table_heights(height: u16, matching: [usize; 4]) -> [Constraint; 4] {
    let share = usize::from(height / 4);
    let mut heights = matching.map(|rows| {
        let need = 2 + rows.max(1); // an empty table says "(none)"
        if need <= share {
            Constraint::Length(u16::try_from(need).unwrap_or(u16::MAX))
        } else {
            Constraint::Fill(1)
        }
    });
    heights[3] = Constraint::Fill(1);
    heights
}

/// The rows that pass `filter`, in `sort` order (ties by the first column, ascending).
fn visible<'a, R>(columns: &[Column<R>], rows: &'a [R], sort: Sort, filter: &str) -> Vec<&'a R> {
    let needle = filter.to_lowercase();
    let mut shown: Vec<&R> = rows.iter().filter(|row| passes(columns, row, &needle)).collect();
    let by = &columns[sort.column];
    shown.sort_by(|a, b| {
        let o = (by.order)(a, b);
        if sort.descending { o.reverse() } else { o }.then_with(|| (columns[0].order)(a, b))
    });
    shown
}

/// How one table is drawn this time.
struct TableView<'a> {
    pane: Pane,
    sort: Sort,
    filter: &'a str,
    focused: bool,
}

impl TableView<'_> {
    fn render<R>(&self, frame: &mut Frame<'_>, area: Rect, columns: &[Column<R>], rows: &[R]) {
        let shown = visible(columns, rows, self.sort, self.filter);
        let [title_area, table_area] =
            Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
        let title = format!(" {}  {} of {} ", self.pane.title(), shown.len(), rows.len());
        let title = if self.focused { title.reversed().bold() } else { title.bold() };
        frame.render_widget(Paragraph::new(title), title_area);

        // Only the rows that fit are formatted: a table can hold 100,000 remote endpoints.
        let fit = usize::from(table_area.height.saturating_sub(1));
        let cells: Vec<Vec<String>> = shown
            .iter()
            .take(fit)
            .map(|row| columns.iter().map(|c| (c.text)(row)).collect())
            .collect();
        let headers: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| match (i == self.sort.column, self.sort.descending) {
                (true, true) => format!("{} v", c.title),
                (true, false) => format!("{} ^", c.title),
                (false, _) => c.title.to_owned(),
            })
            .collect();
        let widths: Vec<Constraint> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let widest = cells.iter().map(|row| row[i].len()).chain([h.len()]).max();
                Constraint::Length(u16::try_from(widest.unwrap_or(0)).unwrap_or(u16::MAX))
            })
            .collect();
        let align = |i: usize, text: String| {
            let line = Line::from(text);
            Cell::from(if columns[i].numeric { line.right_aligned() } else { line })
        };
        let header = Row::new(headers.into_iter().enumerate().map(|(i, h)| align(i, h)))
            .style(Style::new().add_modifier(Modifier::UNDERLINED));
        let body: Vec<Row> = cells
            .into_iter()
            .map(|row| Row::new(row.into_iter().enumerate().map(|(i, text)| align(i, text))))
            .collect();
        if body.is_empty() {
            let why = if rows.is_empty() { "(none)" } else { "(none match the filter)" };
            let [header_area, note_area] =
                Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(table_area);
            frame.render_widget(
                Table::new(Vec::<Row>::new(), widths.clone()).header(header),
                header_area,
            );
            frame.render_widget(Paragraph::new(why.dim()), note_area);
            return;
        }
        frame.render_widget(Table::new(body, widths).header(header).column_spacing(2), table_area);
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        ledger::RemoteEndpointRow,
        view::{
            columns::tests::{destination, full_snapshot, listener},
            tests::sample,
        },
    };

    fn snapshot() -> Snapshot {
        let mut s = sample();
        s.listeners =
            vec![listener("10.0.0.1", 8080, 3), listener("::", 443, 1), listener("0.0.0.0", 22, 7)];
        s.destinations = vec![destination("10.0.0.1", "10.0.0.9", 5432)];
        s
    }

    /// The screen as text, one string per line, trailing blanks trimmed.
    fn screen(view: &TopView, s: &Snapshot) -> Vec<String> {
        screen_of(view, s, 140, 40)
    }

    fn screen_of(view: &TopView, s: &Snapshot, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| view.render(s, frame)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                let line: String =
                    (0..buffer.area.width).map(|x| buffer[(x, y)].symbol()).collect();
                line.trim_end().to_owned()
            })
            .collect()
    }

    /// The first cell of each data row of the table titled `title`.
    fn first_cells(screen: &[String], title: &str) -> Vec<String> {
        let is_title =
            |l: &str| Pane::ALL.iter().any(|p| l.starts_with(&format!(" {} ", p.title())));
        screen
            .iter()
            .skip_while(|l| !l.starts_with(&format!(" {title} ")))
            .skip(2)
            .take_while(|l| !l.is_empty() && !is_title(l) && l.trim() != KEYS)
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    }

    fn press(view: &mut TopView, keys: &str) -> Flow {
        let mut flow = Flow::Continue;
        for c in keys.chars() {
            flow = view.on_key(KeyEvent::from(KeyCode::Char(c)));
        }
        flow
    }

    fn key(view: &mut TopView, code: KeyCode) -> Flow {
        view.on_key(KeyEvent::from(code))
    }

    #[test]
    fn shows_totals_every_table_and_the_keys() {
        let s = snapshot();
        let lines = screen(&TopView::default(), &s);
        for part in ["attach fentry", "elapsed 12.3s", "live 5", "events 0", "lost 3", "drift 1"] {
            assert!(lines[0].contains(part), "{part}: {}", lines[0]);
        }
        for title in [
            "Listeners  3 of 3",
            "Destinations  1 of 1",
            "Local ports  3 of 3",
            "Remote endpoints  5 of 5",
        ] {
            assert!(lines.iter().any(|l| l.contains(title)), "{title}:\n{}", lines.join("\n"));
        }
        assert_eq!(lines.last().unwrap().trim(), KEYS);
        let row = lines.iter().find(|l| l.starts_with("10.0.0.1:8080")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[..4], ["10.0.0.1:8080", "4026531840", "3", "3"], "{row}");
        assert!(lines.iter().any(|l| l.starts_with("10.0.0.1 -> 10.0.0.9:5432")));
        assert!(lines.iter().any(|l| l.starts_with("[::1]:50000")));
    }

    #[test]
    fn keys_choose_the_sort_column_and_flip_the_order() {
        let s = snapshot();
        let mut view = TopView::default();
        let lines = screen(&view, &s);
        assert!(lines.iter().any(|l| l.contains("LIVE v")), "{}", lines.join("\n"));
        assert_eq!(first_cells(&lines, "Listeners"), ["0.0.0.0:22", "10.0.0.1:8080", "[::]:443"]);

        press(&mut view, "r");
        assert_eq!(view.sorts[0], Sort { column: 2, descending: false });
        let lines = screen(&view, &s);
        assert!(lines.iter().any(|l| l.contains("LIVE ^")));
        assert_eq!(first_cells(&lines, "Listeners"), ["[::]:443", "10.0.0.1:8080", "0.0.0.0:22"]);

        // Two columns left: the address, ascending (IPv4 before IPv6).
        key(&mut view, KeyCode::Left);
        key(&mut view, KeyCode::Left);
        assert_eq!(view.sorts[0], Sort { column: 0, descending: false });
        let lines = screen(&view, &s);
        assert!(lines.iter().any(|l| l.starts_with("LISTENER ^")));
        assert_eq!(first_cells(&lines, "Listeners"), ["0.0.0.0:22", "10.0.0.1:8080", "[::]:443"]);

        // Left of the first column wraps to the last; numbers start largest first.
        key(&mut view, KeyCode::Left);
        assert_eq!(view.sorts[0], Sort { column: LISTENERS.len() - 1, descending: false });
        key(&mut view, KeyCode::Right);
        key(&mut view, KeyCode::Right);
        assert_eq!(view.sorts[0], Sort { column: 1, descending: true });
    }

    #[test]
    fn tab_moves_the_sort_keys_to_the_next_table() {
        let s = snapshot();
        let mut view = TopView::default();
        key(&mut view, KeyCode::Tab);
        key(&mut view, KeyCode::Tab);
        assert_eq!(view.focus, Pane::LocalPorts);
        key(&mut view, KeyCode::Left);
        assert_eq!(view.sorts[2], Sort { column: 0, descending: true });
        assert_eq!(view.sorts[0], TopView::default().sorts[0], "other tables keep their sort");
        let lines = screen(&view, &s);
        assert_eq!(first_cells(&lines, "Local ports"), ["41000", "8080", "443"]);
        key(&mut view, KeyCode::BackTab);
        key(&mut view, KeyCode::BackTab);
        key(&mut view, KeyCode::BackTab);
        assert_eq!(view.focus, Pane::RemoteEndpoints);
    }

    #[test]
    fn the_filter_prompt_hides_rows_as_it_is_typed() {
        let s = snapshot();
        let mut view = TopView::default();
        press(&mut view, "/80");
        assert!(view.editing);
        let lines = screen(&view, &s);
        assert!(lines.last().unwrap().starts_with("/80"), "{}", lines.last().unwrap());
        assert_eq!(first_cells(&lines, "Listeners"), ["10.0.0.1:8080"]);
        // Ports and addresses match, counts do not: 41000 is a port, 10.0.0.9:5432 is not.
        assert_eq!(first_cells(&lines, "Local ports"), ["8080"]);
        assert!(lines.iter().any(|l| l.contains("Destinations  0 of 1")));
        assert!(lines.iter().any(|l| l.contains("(none match the filter)")));

        // While typing, q is text, not quit; Enter keeps the filter.
        assert_eq!(press(&mut view, "q"), Flow::Continue);
        key(&mut view, KeyCode::Backspace);
        key(&mut view, KeyCode::Enter);
        assert_eq!((view.filter.as_str(), view.editing), ("80", false));
        let lines = screen(&view, &s);
        assert!(lines[0].contains("filter \"80\""), "{}", lines[0]);
        assert_eq!(lines.last().unwrap().trim(), KEYS);

        key(&mut view, KeyCode::Esc);
        assert!(view.filter.is_empty());
        assert_eq!(first_cells(&screen(&view, &s), "Listeners").len(), 3);

        // Esc inside the prompt clears it too; matching ignores case.
        press(&mut view, "/::");
        assert_eq!(first_cells(&screen(&view, &s), "Listeners"), ["[::]:443"]);
        key(&mut view, KeyCode::Esc);
        assert_eq!((view.filter.as_str(), view.editing), ("", false));
    }

    #[test]
    fn q_and_ctrl_c_quit() {
        let mut view = TopView::default();
        assert_eq!(press(&mut view, "x"), Flow::Continue);
        assert_eq!(press(&mut view, "q"), Flow::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(view.on_key(ctrl_c), Flow::Quit);
        press(&mut view, "/");
        assert_eq!(view.on_key(ctrl_c), Flow::Quit, "even while typing a filter");
    }

    #[test]
    fn empty_tables_and_a_notice_say_so() {
        let mut s = snapshot();
        s.listeners.clear();
        let view = TopView {
            notice: Some("capacity views unavailable: test".into()),
            ..TopView::default()
        };
        let lines = screen(&view, &s);
        assert_eq!(lines[1], "capacity views unavailable: test");
        assert!(lines.iter().any(|l| l.contains("Listeners  0 of 0")));
        assert!(lines.iter().any(|l| l == "(none)"));
    }

    #[test]
    fn only_the_rows_that_fit_are_drawn() {
        let mut s = snapshot();
        s.remote_endpoints = (0..1000u16)
            .map(|i| RemoteEndpointRow {
                addr: IpAddr::from([10, 1, 0, 1]),
                port: i,
                live: u64::from(i),
                local_ports: 1,
            })
            .collect();
        let lines = screen(&TopView::default(), &s);
        let rows = first_cells(&lines, "Remote endpoints");
        // 40 lines: totals, keys, and the other tables' titles, headers and rows (3 + 1 + 3).
        assert_eq!(rows.len(), 40 - 2 - (2 + 3) - (2 + 1) - (2 + 3) - 2, "{}", lines.join("\n"));
        assert_eq!(rows[0], "10.1.0.1:999", "largest live first");
        assert!(lines.iter().any(|l| l.contains("Remote endpoints  1000 of 1000")));
    }

    #[test]
    fn every_column_of_every_table_as_drawn() {
        let lines = screen_of(&TopView::default(), &full_snapshot(), 150, 30);
        assert_eq!(
            format!("\n{}\n", lines.join("\n")),
            r"
tcptrace top  attach fentry  elapsed 12.3s  live 5  events 0  lost 3  drift 1 (5 in all)
 Listeners  2 of 2
LISTENER                  NETNS  LIVE v  PEAK  REMOTE ADDRS  MAX/REMOTE  REUSEPORT  ACCEPTS  CLOSES    QUEUE  LIMIT  HEADROOM  PIDS
[2001:db8::1]:65535  4026532001    4711  5000             3         120         16   1234/s  1000/s        -  -             -
0.0.0.0:22           4026531840       7  4711       4026532           4          1     13/s     0/s  129/129  fds           0  4711,815
 Destinations  2 of 2
DESTINATION                     NETNS  PORTS  SHARED  RANGE  USE v  CONNECTS  EXHAUSTED IN  FAILED
10.0.0.1 -> 10.0.0.9:5432  4026531840  26468      12  28232  93.8%     250/s           42s       3
::1 -> [::1]:4711          4026532001      1       0  28232   0.0%       0/s             -       0
 Local ports  3 of 3
LOCAL PORT  LIVE v  REMOTE ADDRS
      8080       3             2
       443       1             1
     41000       1             1
 Remote endpoints  5 of 5
REMOTE ENDPOINT  LIVE v  LOCAL PORTS
10.0.0.2:40000        1            1
10.0.0.3:40001        1            1
10.0.0.3:40002        1            1
10.0.0.9:5432         1            1
[::1]:50000           1            1








q quit  Tab next table  Left/Right sort column  r reverse order  / filter  Esc clear filter
"
        );
    }

    #[test]
    fn the_filter_searches_addresses_ports_namespaces_and_pids_only() {
        let s = full_snapshot();
        let mut view = TopView::default();
        press(&mut view, "/4711");
        // The address column, ascending, on every table.
        view.sorts = [Sort { column: 0, descending: false }; 4];
        let lines = screen_of(&view, &s, 150, 30);
        assert_eq!(
            format!("\n{}\n", lines.join("\n")),
            r#"
tcptrace top  attach fentry  elapsed 12.3s  live 5  events 0  lost 3  drift 1 (5 in all)  filter "4711"
 Listeners  1 of 2
LISTENER ^       NETNS  LIVE  PEAK  REMOTE ADDRS  MAX/REMOTE  REUSEPORT  ACCEPTS  CLOSES    QUEUE  LIMIT  HEADROOM  PIDS
0.0.0.0:22  4026531840     7  4711       4026532           4          1     13/s     0/s  129/129  fds           0  4711,815
 Destinations  1 of 2
DESTINATION ^           NETNS  PORTS  SHARED  RANGE   USE  CONNECTS  EXHAUSTED IN  FAILED
::1 -> [::1]:4711  4026532001      1       0  28232  0.0%       0/s             -       0
 Local ports  0 of 3
LOCAL PORT ^ LIVE REMOTE ADDRS
(none match the filter)
 Remote endpoints  0 of 5
REMOTE ENDPOINT ^ LIVE LOCAL PORTS
(none match the filter)
















/4711   filter: Enter keeps it, Esc clears it
"#
        );
        key(&mut view, KeyCode::Esc);
        press(&mut view, "/4026532");
        let lines = screen_of(&view, &s, 150, 30);
        assert_eq!(first_cells(&lines, "Listeners"), ["[2001:db8::1]:65535"]);
        assert_eq!(first_cells(&lines, "Destinations"), ["::1"]);
    }
}
