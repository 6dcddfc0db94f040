//! Outcomes of test runs and the summary table.

use std::time::Duration;

use crate::libtest::Counts;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed(String),
    Skipped(String),
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed(_) => "failed",
            Self::Skipped(_) => "skipped",
        }
    }

    /// Not a failure (a skip is not one).
    pub fn is_ok(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Self::Passed => None,
            Self::Failed(why) | Self::Skipped(why) => Some(why),
        }
    }
}

/// One line of the summary: a tier (and attach path) on a kernel.
#[derive(Debug, Clone)]
pub struct Row {
    /// `host 6.18.44-…` or `vm 6.1.0-50-cloud-amd64`.
    pub kernel: String,
    pub tier: &'static str,
    /// The attach path, or `-` for the unit tier.
    pub what: String,
    pub verdict: Verdict,
    pub counts: Option<Counts>,
    pub took: Option<Duration>,
}

/// Prints the rows as an aligned table, then the reason of each failure or skip.
pub fn print_rows(rows: &[Row]) {
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|row| {
            [
                row.kernel.clone(),
                row.tier.to_owned(),
                row.what.clone(),
                row.verdict.word().to_owned(),
                row.counts.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                row.took.map_or_else(|| "-".to_owned(), |t| format!("{:.0} s", t.as_secs_f64())),
            ]
        })
        .collect();
    let header = ["kernel", "tier", "path", "result", "tests", "time"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> =
            row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        say!("  {}", line.join("  ").trim_end());
    }
    for row in rows {
        if let Some(reason) = row.verdict.reason() {
            say!("  {} {} {}: {} ({reason})", row.kernel, row.tier, row.what, row.verdict.word());
        }
    }
}
