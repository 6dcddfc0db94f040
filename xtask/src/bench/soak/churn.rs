//! The churn that runs throughout: `tcptrace load churn` in the soak's namespace, one run a
//! second bounded to the plan's pace, and at the plan's bursts an unpaced run on every
//! thread that overflows the tracer's ring.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tcptrace_netns::Netns;

use super::plan::{Burst, CHURN_PER_SECOND};
use crate::{bench::churn::parse_churn, cmd};

/// Client threads of a burst (and as many acceptors): four times the cores here, enough to
/// starve the tracer's ring reader of CPU for a while.
pub(super) const BURST_THREADS: u16 = 8;
/// How long a churn run may take past its own bound (its servers' accept grace is 5 s).
const OVERRUN: Duration = Duration::from_secs(15);

/// What the churn has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Churned {
    pub(super) runs: u64,
    pub(super) failed_runs: u64,
    pub(super) connections: u64,
    pub(super) last_error: Option<String>,
}

/// The churn's thread.
pub(super) struct Churn {
    stop: Arc<AtomicBool>,
    totals: Arc<Mutex<Churned>>,
    thread: Option<JoinHandle<()>>,
}

impl Churn {
    /// Starts churning until `end` after `began` (or [`Churn::stop`]), bursting at `bursts`.
    pub(super) fn start(
        tcptrace: &Path,
        netns: Arc<Netns>,
        bursts: Vec<Burst>,
        began: Instant,
        end: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let totals = Arc::new(Mutex::new(Churned::default()));
        let runner = Runner { tcptrace: tcptrace.to_owned(), netns };
        let thread = {
            let (stop, totals) = (Arc::clone(&stop), Arc::clone(&totals));
            thread::Builder::new()
                .name("soak-churn".into())
                .spawn(move || runner.run(&bursts, began, end, &stop, &totals))
                .expect("spawning the churn thread")
        };
        Self { stop, totals, thread: Some(thread) }
    }

    pub(super) fn totals(&self) -> Churned {
        self.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Stops after the run in progress (a few seconds at most) and returns the totals.
    pub(super) fn stop(mut self) -> Churned {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.totals()
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Runner {
    tcptrace: PathBuf,
    netns: Arc<Netns>,
}

impl Runner {
    fn run(
        &self,
        bursts: &[Burst],
        began: Instant,
        end: Duration,
        stop: &AtomicBool,
        totals: &Mutex<Churned>,
    ) {
        let mut bursts = bursts.iter().peekable();
        while !stop.load(Ordering::SeqCst) && began.elapsed() < end {
            let now = began.elapsed();
            let second = Instant::now();
            let args = match bursts.peek() {
                Some(b) if b.at <= now => {
                    let b = bursts.next().expect("peeked");
                    burst_args(b.length.min(end.saturating_sub(now)))
                }
                _ => paced_args(),
            };
            let outcome = self.churn(&args);
            let mut t = totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            t.runs += 1;
            match outcome {
                Ok(connections) => t.connections += connections,
                Err(e) => {
                    t.failed_runs += 1;
                    t.last_error = Some(format!("{e:#}"));
                }
            }
            drop(t);
            // The pace: one paced run a second; a burst is followed at once.
            if let Some(rest) = Duration::from_secs(1).checked_sub(second.elapsed()) {
                thread::sleep(rest);
            }
        }
    }

    /// One `tcptrace load churn` run in the namespace: the connections it made.
    fn churn(&self, args: &[String]) -> Result<u64> {
        let exe = self.tcptrace.clone();
        let args = args.to_vec();
        let bound = Duration::from_secs(5) + OVERRUN;
        let child = self
            .netns
            .run(move || {
                Command::new(exe)
                    .arg("load")
                    .arg("churn")
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
            })
            .context("starting `tcptrace load churn`")?;
        let output = wait_bounded(child, bound)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().last().with_context(|| {
            format!("the churn printed nothing: {}", String::from_utf8_lossy(&output.stderr).trim())
        })?;
        Ok(parse_churn(line)?.connections)
    }
}

/// A paced run: at most [`CHURN_PER_SECOND`] connections, within a second, on one thread.
fn paced_args() -> Vec<String> {
    ["--connections", &CHURN_PER_SECOND.to_string(), "--duration", "1s", "--threads", "1"]
        .map(str::to_owned)
        .to_vec()
}

/// A burst: as fast as [`BURST_THREADS`] threads go, for `length`.
fn burst_args(length: Duration) -> Vec<String> {
    let ms = length.as_millis().max(100);
    vec!["--duration".into(), format!("{ms}ms"), "--threads".into(), BURST_THREADS.to_string()]
}

/// Waits for `child` (a churn run), killing it past `bound`.
fn wait_bounded(mut child: std::process::Child, bound: Duration) -> Result<std::process::Output> {
    if cmd::wait_bounded(&mut child, bound)?.is_none() {
        anyhow::bail!("the churn run took longer than {} s and was killed", bound.as_secs());
    }
    child.wait_with_output().context("reading the churn's output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_bounded() {
        assert_eq!(paced_args(), ["--connections", "2000", "--duration", "1s", "--threads", "1"]);
        assert_eq!(
            burst_args(Duration::from_millis(1500)),
            ["--duration", "1500ms", "--threads", "8"]
        );
        assert_eq!(burst_args(Duration::ZERO)[1], "100ms");
    }
}
