//! `tcptrace report`: `watch --json` lines recorded with `tee` turned into the HTML report
//! (`view::report`), afterwards and on any box: it needs no privileges and no kernel.

use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use tcptrace_json::Snapshot;

use crate::cmd::output::{open_report, this_box, write_report};
use crate::view::report::{RunInfo, Samples, html};

#[derive(Debug, Clone, Args)]
#[command(after_help = "Example:
  tcptrace watch --json --interval 5s | tee run.jsonl     during the test
  tcptrace report run.jsonl -o run.html                   afterwards, on any box")]
pub struct ReportArgs {
    /// `watch --json` output, one snapshot a line (`-` reads stdin). A line that is not a
    /// snapshot (a last line cut short by Ctrl-C, say) is skipped and counted on stderr.
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// The HTML file to write: one page, charts inline, nothing fetched when it is opened.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    // Before reading: an output that cannot be written fails now.
    let (mut file, path) = open_report(&args.output)?;
    let from_stdin = args.input.as_os_str() == "-";
    let reader: Box<dyn std::io::BufRead> = if from_stdin {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let input = std::fs::File::open(&args.input)
            .with_context(|| format!("cannot read {}", args.input.display()))?;
        Box::new(BufReader::new(input))
    };
    let (samples, skipped) = read_snapshots(reader)?;
    let source = if from_stdin { "stdin".to_owned() } else { args.input.display().to_string() };
    if let Some((count, first)) = skipped {
        eprintln!(
            "tcptrace: note: skipped {count} lines of {source} that are not snapshots ({first})"
        );
    }
    anyhow::ensure!(
        !samples.is_empty(),
        "{source} holds no `tcptrace watch --json` snapshot: record one with \
         `tcptrace watch --json | tee {source}`"
    );
    let page = html(&info(&source, &samples), &[], &samples);
    write_report(&mut file, &page)
        .with_context(|| format!("cannot write the report to {}", path.display()))?;
    eprintln!("tcptrace: wrote {} ({} snapshots)", path.display(), samples.len());
    Ok(())
}

/// Lines of a recording that were not snapshots: how many, and the first one's line
/// number and why.
type Skipped = Option<(usize, String)>;

/// The snapshots of a recording (bounded, evenly thinned: [`Samples`]), and the lines that
/// were not one.
fn read_snapshots(reader: impl std::io::BufRead) -> anyhow::Result<(Vec<Snapshot>, Skipped)> {
    let mut samples = Samples::default();
    let mut skipped: Skipped = None;
    for (number, text) in reader.lines().enumerate() {
        let text = text.context("cannot read the recording")?;
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Snapshot>(&text) {
            Ok(s) => samples.push(s),
            Err(e) => match &mut skipped {
                Some((count, _)) => *count += 1,
                None => skipped = Some((1, format!("line {}: {e}", number + 1))),
            },
        }
    }
    Ok((samples.into_vec(), skipped))
}

/// What the recording says of itself, and where the page was made: a recording holds its
/// attach path and its times, not the box it ran on.
fn info(source: &str, samples: &[Snapshot]) -> RunInfo {
    let mut backends: Vec<&str> = samples.iter().map(|s| s.backend.as_str()).collect();
    backends.dedup();
    let span =
        samples.last().map_or(0.0, |s| s.elapsed_s) - samples.first().map_or(0.0, |s| s.elapsed_s);
    let here = this_box();
    RunInfo {
        title: format!("tcptrace: {source}"),
        facts: vec![
            ("recorded by".into(), format!("tcptrace watch --json, read from {source}")),
            ("attach path".into(), backends.join(", ")),
            (
                "span".into(),
                format!("{span:.1} s, from {:.1} s after tracing began", samples[0].elapsed_s),
            ),
            (
                "rendered".into(),
                format!(
                    "by tcptrace {} on {here}, which need not be the box recorded",
                    env!("CARGO_PKG_VERSION")
                ),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_last_line_and_blank_lines_are_skipped_and_counted() {
        let line = r#"{"elapsed_s":1.0,"backend":"tp_btf","events":9,"lost":0,"drift":0,"drift_total":0,"unreconciled_netns":0,"filtered":0,"live":1,"local_ports":[],"remote_endpoints":[],"listeners":[],"destinations":[],"limits":[]}"#;
        let text = format!("{line}\n\n{line}\n{}", &line[..40]);
        let (samples, skipped) = read_snapshots(text.as_bytes()).unwrap();
        assert_eq!(samples.len(), 2);
        let (count, first) = skipped.unwrap();
        assert_eq!(count, 1);
        assert!(first.starts_with("line 4: "), "{first}");
        let (none, skipped) = read_snapshots("not json\n".as_bytes()).unwrap();
        assert!(none.is_empty() && skipped.is_some());
    }
}
