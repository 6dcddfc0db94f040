//! The load: `tcptrace load churn`, its JSON line, and the CPU time it took.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result};
use nix::sys::{
    resource::{UsageWho, getrusage},
    time::TimeVal,
};
use serde_json::Value;

use super::BenchArgs;
use crate::cmd;

/// What the load generator did in one run.
pub(super) fn churn(tcptrace: &Path, args: &BenchArgs) -> Result<Churned> {
    let mut c = Command::new(tcptrace);
    c.args(["load", "churn", "--duration", &format!("{}s", args.seconds)]);
    if let Some(t) = args.threads {
        c.args(["--threads", &t.to_string()]);
    }
    // The churn is the only child that ends (and is reaped) meanwhile: the difference of
    // the children's usage is its CPU time, every thread included.
    let before = children_cpu()?;
    let out = cmd::output(&mut c)?;
    let cpu = children_cpu()?.saturating_sub(before);
    let line = out.lines().last().context("the churn printed nothing")?;
    Ok(Churned { cpu, ..parse_churn(line)? })
}

/// User + system time of the children reaped so far.
fn children_cpu() -> Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let time = |tv: TimeVal| {
        Duration::from_secs(u64::try_from(tv.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(tv.tv_usec()).unwrap_or(0))
    };
    Ok(time(usage.user_time()) + time(usage.system_time()))
}

/// The rate and the connection count of the churn's JSON line.
pub(super) fn parse_churn(line: &str) -> Result<Churned> {
    let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
    Ok(Churned {
        rate: v["rate"].as_f64().with_context(|| format!("no rate in {line}"))?,
        connections: v["connections"]
            .as_u64()
            .with_context(|| format!("no connections in {line}"))?,
        cpu: Duration::ZERO,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Churned {
    pub(super) rate: f64,
    pub(super) connections: u64,
    /// The load generator's CPU time (user + system, every thread).
    pub(super) cpu: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_churn_line() {
        let churn = r#"{"workload":"churn","connections":10,"rate":1234.5}"#;
        assert_eq!(
            parse_churn(churn).unwrap(),
            Churned { rate: 1234.5, connections: 10, cpu: Duration::ZERO }
        );
        assert!(parse_churn("oops").is_err());
    }
}
