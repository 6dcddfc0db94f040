//! `cargo xtask bench --scale`: the demo with N connections, its table and its verdict.

use std::fs;

use anyhow::{Context as _, Result, bail};

use crate::cargo::{self, Profile};

/// The scale benchmark: the demo at size `connections`, its table and its verdict.
pub(super) fn scale(connections: u64) -> Result<()> {
    let tcptrace = cargo::build_tcptrace(Profile::Release)?;
    say!(
        "bench: load average now {}",
        fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    say!("running: {} demo --connections {connections}", tcptrace.display());
    let status = std::process::Command::new(&tcptrace)
        .args(["demo", "--connections", &connections.to_string()])
        .status()
        .with_context(|| format!("running {}", tcptrace.display()))?;
    if !status.success() {
        bail!("the demo did not pass ({status}): its counts disagreed or it could not run");
    }
    Ok(())
}
