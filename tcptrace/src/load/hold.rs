//! Placeholder: filled in by its own change.

use clap::Args;

#[derive(Debug, Args)]
pub struct HoldArgs {}

pub fn run(_args: HoldArgs) -> anyhow::Result<()> {
    anyhow::bail!("the hold workload is not written yet")
}
