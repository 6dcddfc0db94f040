//! The file a report goes to (`check --report`, `report -o`): opened before the work
//! starts, so a path that cannot be written fails at once, and never through a symlink or
//! into a FIFO, since tcptrace runs as root and another user may have put them there. And
//! what an HTML report keeps of a live run (`check`, `demo`): a snapshot per observation
//! and what it says of the command and the box that made it.

use crate::{capacity::Capacity, engine::Live, view::Snapshot, view::report::RunInfo};

/// Rows of each kind kept per sample of an HTML report: more than its charts draw (the
/// busiest five), few enough that an hour of samples stays small.
const SAMPLE_ROWS: usize = 20;

/// One observation as the HTML report draws it: the counts now, with `rows` (`None` when
/// this interval's capacity refresh failed: no listener or destination then).
#[must_use]
pub fn report_sample(live: &Live, rows: Option<Capacity>) -> Snapshot {
    let mut rows = rows.unwrap_or_default();
    rows.listeners.truncate(SAMPLE_ROWS);
    rows.destinations.truncate(SAMPLE_ROWS);
    live.snapshot_with(SAMPLE_ROWS, rows)
}

/// What an HTML report says was measured, where and how: `title`, then the command line,
/// this box, the attach path, tcptrace's version and `run` (how long, how many samples).
#[must_use]
pub fn run_info(title: String, live: &Live, run: String) -> RunInfo {
    let command: Vec<String> = std::env::args().collect();
    RunInfo {
        title,
        facts: vec![
            ("command".into(), command.join(" ")),
            ("box".into(), this_box()),
            ("attach path".into(), live.session.tracer.path.name().to_owned()),
            ("tcptrace".into(), env!("CARGO_PKG_VERSION").to_owned()),
            ("run".into(), run),
        ],
    }
}

/// Whether `path` names an HTML report (`.html` or `.htm`): the format follows the
/// extension, and anything else is JSON.
#[must_use]
pub fn is_html(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"))
}

/// This box as a report names it: its host name and kernel release (`uname -nr`).
#[must_use]
pub fn this_box() -> String {
    nix::sys::utsname::uname().map_or_else(
        |e| format!("unknown (uname: {e})"),
        |u| format!("{} (Linux {})", u.nodename().to_string_lossy(), u.release().to_string_lossy()),
    )
}

/// Opens (creating it if needed) the file the report goes to, without truncating it yet.
/// A symlink there is refused rather than followed: tcptrace runs as root, and the link
/// could point anywhere.
pub fn open_report(path: &std::path::Path) -> anyhow::Result<(std::fs::File, std::path::PathBuf)> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        // Nor a FIFO another user planted there may hold the open.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .mode(0o644)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow::anyhow!(
                "will not write the report to {}: it is a symlink (give the file itself)",
                path.display()
            ),
            // A FIFO with no reader (or a socket, or a device with no driver) answers the
            // non-blocking open with ENXIO: it is no file either.
            Some(libc::ENXIO) => not_a_file(path),
            _ => anyhow::Error::new(e)
                .context(format!("cannot write the report to {}", path.display())),
        })?;
    let kind = file.metadata()?.file_type();
    if !(kind.is_file() || kind.is_char_device()) {
        return Err(not_a_file(path));
    }
    Ok((file, path.to_owned()))
}

fn not_a_file(path: &std::path::Path) -> anyhow::Error {
    anyhow::anyhow!(
        "will not write the report to {}: it is not a regular file (give a file's path)",
        path.display()
    )
}

pub fn write_report(file: &mut std::fs::File, text: &str) -> std::io::Result<()> {
    use std::io::{Seek as _, Write as _};
    // A regular file is rewritten whole and synced; a device such as /dev/null is only
    // written to.
    let regular = file.metadata()?.is_file();
    if regular {
        file.set_len(0)?;
        file.rewind()?;
    }
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    if regular { file.sync_all() } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn the_format_follows_the_extension() {
        for (path, html) in [
            ("run.html", true),
            ("RUN.HTM", true),
            ("run.json", false),
            ("html", false),
            ("run", false),
        ] {
            assert_eq!(super::is_html(Path::new(path)), html, "{path}");
        }
    }
}
