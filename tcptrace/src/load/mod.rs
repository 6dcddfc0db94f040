//! tcptrace's own load generator, loopback only and bounded: `churn` opens and closes
//! connections as fast as it can (the benchmarks), `hold` opens connections and keeps them
//! (the demo, and the start-up and scale benchmarks). Both run as the hidden `tcptrace load`
//! command so that a workload can be spread over several processes: one process may hold
//! only RLIMIT_NOFILE sockets.

pub mod churn;
pub mod fleet;
pub mod hold;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(Debug, Subcommand)]
pub enum Workload {
    /// Open, accept and close connections in a bounded loop, and report the rate.
    Churn(churn::ChurnArgs),
    /// Open connections and hold them until stdin closes or a signal comes.
    Hold(hold::HoldArgs),
}

/// Runs one workload in this process.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    match args.workload {
        Workload::Churn(a) => churn::run(a),
        Workload::Hold(a) => hold::run(a),
    }
}
