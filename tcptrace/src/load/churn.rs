//! Placeholder: filled in by its own change.

use clap::Args;

#[derive(Debug, Args)]
pub struct ChurnArgs {}

pub fn run(_args: ChurnArgs) -> anyhow::Result<()> {
    anyhow::bail!("the churn workload is not written yet")
}
