//! `cargo xtask bench --soak`: `tcptrace serve` for an hour (or `--minutes`) under a load
//! that keeps changing, with a curve of what it used and said every second, and a verdict:
//! did anything grow without a cause?
//!
//! Everything runs in network namespaces the soak makes, on their loopback only:
//! - **soak**: the held population (`workers`), the churn and its bursts (`churn`); serve
//!   counts this one alone (`--netns`);
//! - **soak-serve**: serve's HTTP side, scraped every second from there (`scrape`), so the
//!   scrapes are not among the counted connections;
//! - child namespaces, a few sockets each, that come and go (`namespaces`).
//!
//! Where each part lives:
//! - `plan`: the steps, bursts and namespaces of a run, and how workers split the
//!   population;
//! - `serve`: starting and stopping the tracer;
//! - `workers`, `churn`, `namespaces`, `scrape`: the load and the scrapes, as above;
//! - `curve`: the samples, their JSON lines file and the summary table;
//! - `verdict`: the checks and their thresholds.

mod churn;
mod curve;
mod namespaces;
mod plan;
mod scrape;
mod serve;
mod verdict;
mod workers;

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use tcptrace_netns::Netns;

pub use self::plan::Population;
use self::{
    churn::{Churn, Churned},
    curve::{CurveFile, Phase, Sample, mean},
    namespaces::Children,
    plan::Plan,
    scrape::{Scrape, Scraper},
    serve::Serve,
    verdict::{Died, EMPTY_WITHIN, judge},
    workers::Workers,
};
use super::{proc::Usage, table::Machine};
use crate::cargo::{self, Profile};

/// `cargo xtask bench --soak --help`: what it does, and each check with its threshold (a
/// test holds the numbers equal to the constants that decide).
pub const HELP: &str = "Instead of the churn: the soak. `tcptrace serve` (release build) runs \
for --minutes (default 60, at least 2) under a load that keeps changing, in network namespaces the soak \
makes (loopback only; serve counts only the soak's namespace, with --netns):\n  \
- a population of --population connections (default 50000-200000), held by `tcptrace load \
hold` workers of up to 9000 connections each (both ends), in steps: the top, the bottom, \
three quarters up, one quarter up, in cycles of a quarter of the run (30 s to 10 min);\n  \
- churn throughout (`tcptrace load churn`, 2000 connections a second), and once a cycle, at \
the top, a burst of unpaced churn on 8 threads that overflows serve's 2048 KiB ring;\n  \
- child namespaces of 5 sockets each, a new one every 2 to 15 s, 4 alive at a time;\n  \
- /metrics and /healthz scraped every second.\n\
Every second it records the tracer's RSS and CPU, its live count against what the workers \
hold, events, lost and drift_total, in target/soak/curve-TIME.jsonl; at the end it prints a \
table with a row per step.\n\n\
It fails (exit 1, one line saying why) when:\n  \
alive    serve exits before the soak stops it;\n  \
answers  serve leaves /metrics or /healthz unanswered (no 200 within 2 s; /healthz answers \
503 when its counts are stale) 3 seconds in a row, or in more than 2 % of the seconds;\n  \
rss      the tracer's RSS after the warm-up (the first cycle and at least a minute, which \
has seen the top population, a burst, namespaces come and go and TIME_WAIT fill up) goes \
above its peak in the warm-up by more than 50 % + 32 MiB (not the first sample: glibc's \
arenas grow early);\n  \
drift    drift_total grows while lost did not grow in the 120 s before (a loss explains \
the corrections that follow it);\n  \
empty    live is not 0 again within 60 s of the load's end.\n\
Takes --minutes plus a minute or two. Needs root. `cargo xtask test` runs a 2-minute \
version as its soak tier.";

/// What `cargo xtask test`'s soak tier runs: 2 minutes, a smaller population (CI's box is
/// shared, and the tier builds a debug tracer).
pub const CI_MINUTES: u64 = 2;
pub const CI_POPULATION: Population = Population { low: 20_000, high: 60_000 };

/// How to run one soak.
#[derive(Debug, Clone, Copy)]
pub struct SoakOptions {
    pub minutes: u64,
    pub population: Population,
    pub profile: Profile,
}

/// How a soak ended: `failure` is the one line saying why when a check failed.
#[derive(Debug)]
pub struct Report {
    pub failure: Option<String>,
    pub curve: PathBuf,
}

/// Runs a soak: the tracer, the load, a sample a second, the teardown, the verdict.
/// `Err` when the soak itself could not run (its load, its set-up), not when the tracer
/// failed a check: that is [`Report::failure`].
pub fn soak(options: &SoakOptions) -> Result<Report> {
    let tcptrace = cargo::build_tcptrace(options.profile)?;
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .context("getrlimit(RLIMIT_NOFILE)")?
        .0;
    let plan = Plan::new(Duration::from_mins(options.minutes), options.population, nofile)?;
    let dir = cargo::target_dir()?.join("soak");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let curve = dir.join(format!("curve-{stamp}.jsonl"));
    let log = dir.join(format!("serve-{stamp}.log"));
    let machine = Machine::read();
    say!("soak: {machine}; load average {}", super::table::load_average());
    say!("soak: {}", describe(&plan));

    let mut run = Run::start(&tcptrace, &plan, &curve, &log)?;
    let churned = run.load(&tcptrace)?;
    run.teardown(&churned)?;
    let stopped = run.serve.stop();
    say!(
        "soak: serve stopped ({}); its stderr is in {}",
        stopped.map_or_else(|| "unknown".into(), |s| s.to_string()),
        log.display()
    );

    let checks = judge(&run.samples, plan.warm_up(), run.died.as_ref());
    println!("{}", summary(&machine, options, &plan, &run.samples, &churned));
    for check in &checks {
        say!("soak: {} {}: {}", if check.passed { "PASS" } else { "FAIL" }, check.name, check.line);
    }
    let mut failure = checks.iter().find(|c| !c.passed).map(|c| format!("{}: {}", c.name, c.line));
    if failure.is_none() && churned.failed_runs * 10 > churned.runs {
        failure = Some(format!(
            "load: {} of {} churn runs failed (last: {}), so the soak did not run as planned",
            churned.failed_runs,
            churned.runs,
            churned.last_error.as_deref().unwrap_or("?")
        ));
    }
    Ok(Report { failure, curve })
}

/// What the load was at one second.
struct Load {
    target: u64,
    held: u64,
    namespaces: u64,
    namespaces_made: u64,
    churned: u64,
    burst: bool,
}

/// One soak in progress: its namespaces, the tracer, and the samples so far.
struct Run<'a> {
    plan: &'a Plan,
    /// Where the population and the churn run, and what serve counts.
    soak_netns: Arc<Netns>,
    /// Where serve listens; kept for as long as serve runs (it dies with its thread).
    _serve_netns: Arc<Netns>,
    scraper: Scraper,
    serve: Serve,
    began: Instant,
    samples: Vec<Sample>,
    curve: CurveFile,
    /// The tracer's usage at the last sample, and when it was read.
    usage: Option<(Instant, Usage)>,
    died: Option<Died>,
}

impl<'a> Run<'a> {
    /// Makes the namespaces and starts serve; the clock starts once it answers.
    fn start(tcptrace: &Path, plan: &'a Plan, curve: &Path, log: &Path) -> Result<Self> {
        let soak_netns = Arc::new(Netns::new("soak").context("making the soak's namespace")?);
        let serve_netns = Arc::new(Netns::new("soak-serve").context("making serve's namespace")?);
        let scraper = Scraper::new(Arc::clone(&serve_netns), serve::ADDR);
        // Its own bound: the run, the teardown, and time to spare.
        let bound = plan.duration + EMPTY_WITHIN + Duration::from_mins(5);
        let serve = Serve::start(tcptrace, &serve_netns, soak_netns.inode(), bound, log, &scraper)?;
        say!("soak: serve answers; the load starts (curve: {})", curve.display());
        let usage = Usage::read(serve.pid()).map(|u| (Instant::now(), u));
        Ok(Self {
            plan,
            soak_netns,
            _serve_netns: serve_netns,
            scraper,
            serve,
            began: Instant::now(),
            samples: Vec::new(),
            curve: CurveFile::create(curve)?,
            usage,
            died: None,
        })
    }

    /// The plan, a sample a second, until its end or the tracer's; then the load goes.
    fn load(&mut self, tcptrace: &Path) -> Result<Churned> {
        let plan = self.plan;
        let churn = Churn::start(
            tcptrace,
            Arc::clone(&self.soak_netns),
            plan.bursts.clone(),
            self.began,
            plan.duration,
        );
        let mut workers = Workers::new(tcptrace, Arc::clone(&self.soak_netns), plan.per_worker);
        let mut children = Children::new(plan.namespace_every, plan.namespace_life());
        let report_every = if plan.duration > Duration::from_mins(10) { 60 } else { 10 };
        while self.began.elapsed() < plan.duration && self.died.is_none() {
            let t = self.began.elapsed();
            workers.resize(plan.target_at(t))?;
            workers.go();
            workers.check()?;
            children.tick(t)?;
            let load = Load {
                target: plan.target_at(t),
                held: workers.held(),
                namespaces: children.alive(),
                namespaces_made: children.made(),
                churned: churn.totals().connections,
                burst: plan.in_burst(t),
            };
            let (sample, error) = self.sample(Phase::Load, &load)?;
            if (sample.t_s as u64).is_multiple_of(report_every) {
                say!("soak: {}", progress(&sample, error.as_deref()));
            }
            self.wait_next_second();
        }
        let churned = churn.stop();
        let left = workers.stop_all(Duration::from_secs(30));
        if left > 0 {
            say!("soak: {left} workers had not exited 30 s after they were stopped");
        }
        children.clear();
        Ok(churned)
    }

    /// With the load gone, a sample a second until the tracer counts 0 (or
    /// [`EMPTY_WITHIN`] has passed).
    fn teardown(&mut self, churned: &Churned) -> Result<()> {
        let ended = self.began.elapsed();
        say!(
            "soak: the load is gone after {:.0} s; waiting for the tracer to count 0",
            ended.as_secs_f64()
        );
        let made = self.samples.last().map_or(0, |s| s.namespaces_made);
        while self.died.is_none() && self.began.elapsed() < ended + EMPTY_WITHIN {
            self.wait_next_second();
            let idle = Load {
                target: 0,
                held: 0,
                namespaces: 0,
                namespaces_made: made,
                churned: churned.connections,
                burst: false,
            };
            if self.sample(Phase::Teardown, &idle)?.0.live == Some(0) {
                break;
            }
        }
        Ok(())
    }

    /// Scrapes, reads the tracer's /proc files, writes and keeps the sample; notes if the
    /// tracer has died. Returns the sample and why the scrape was not answered, if not.
    fn sample(&mut self, phase: Phase, load: &Load) -> Result<(Sample, Option<String>)> {
        let scrape = self.scraper.scrape();
        let now = Instant::now();
        let usage = Usage::read(self.serve.pid());
        let cpu_pct = match (self.usage, usage) {
            (Some((then, before)), Some(after)) if now > then => Some(
                after.cpu.saturating_sub(before.cpu).as_secs_f64()
                    / now.duration_since(then).as_secs_f64()
                    * 100.0,
            ),
            _ => None,
        };
        self.usage = usage.map(|u| (now, u));
        let sample =
            Sample::new(now.duration_since(self.began), phase, load, &scrape, usage, cpu_pct);
        self.curve.write(&sample)?;
        self.samples.push(sample.clone());
        if self.died.is_none()
            && let Some(status) = self.serve.exited()
        {
            self.died = Some(Died {
                t_s: now.duration_since(self.began).as_secs(),
                status: format!("{status}: {}", self.serve.last_words()),
            });
        }
        Ok((sample, scrape.error))
    }

    /// Sleeps until the next whole second since the start (a second that overran is not
    /// sampled twice).
    fn wait_next_second(&self) {
        let elapsed = self.began.elapsed();
        let next = Duration::from_secs(elapsed.as_secs() + 1);
        thread::sleep(next.saturating_sub(elapsed));
    }
}

impl Sample {
    fn new(
        t: Duration,
        phase: Phase,
        load: &Load,
        scrape: &Scrape,
        usage: Option<Usage>,
        cpu_pct: Option<f64>,
    ) -> Self {
        let counts = scrape.counts;
        let tenths = |v: f64| (v * 10.0).round() / 10.0;
        Self {
            t_s: tenths(t.as_secs_f64()),
            phase,
            target: load.target,
            held: load.held,
            live: counts.map(|c| c.live),
            rss_kib: usage.map(|u| u.rss_bytes / 1024),
            cpu_pct: cpu_pct.map(tenths),
            events: counts.map(|c| c.events),
            lost: counts.map(|c| c.lost),
            drift: counts.map(|c| c.drift),
            drift_total: counts.map(|c| c.drift_total),
            skipped_passes: counts.map(|c| c.skipped_passes),
            unreconciled_netns: counts.map(|c| c.unreconciled_netns),
            healthz: scrape.healthz,
            metrics_ms: scrape.metrics_ms.map(tenths),
            answered: scrape.answered(),
            namespaces: load.namespaces,
            namespaces_made: load.namespaces_made,
            churned: load.churned,
            burst: load.burst,
        }
    }
}

fn describe(plan: &Plan) -> String {
    format!(
        "{} min in cycles of {} s (the first is the warm-up): population {}–{} connections \
         in steps of {} s, held by up to {} workers of up to {} connections (both ends); \
         churn {}/s and {} bursts of unpaced churn; a child namespace every {} s, each living {} s",
        plan.duration.as_secs() / 60,
        plan.cycle.as_secs(),
        plan.population.low,
        plan.population.high,
        plan.cycle.as_secs_f64() / 4.0,
        plan.max_workers(),
        plan.per_worker,
        plan::CHURN_PER_SECOND,
        plan.bursts.len(),
        plan.namespace_every.as_secs(),
        plan.namespace_life().as_secs(),
    )
}

fn progress(s: &Sample, error: Option<&str>) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "?".into(), |v| v.to_string());
    let mut line = format!(
        "{:>5.0} s: target {} held {} live {} (2×held {}) rss {} MiB cpu {}% lost {} \
         drift_total {} namespaces {}",
        s.t_s,
        s.target,
        s.held,
        opt(s.live),
        s.expected_live(),
        s.rss_kib.map_or_else(|| "?".into(), |k| format!("{:.1}", curve::kib_to_mib(k))),
        s.cpu_pct.map_or_else(|| "?".into(), |c| format!("{c:.0}")),
        opt(s.lost),
        opt(s.drift_total),
        s.namespaces,
    );
    if let Some(e) = error {
        let _ = write!(line, "; not answered: {e}");
    }
    line
}

/// What BENCHMARKS.md keeps: the machine, the command, the table, the totals.
fn summary(
    machine: &Machine,
    options: &SoakOptions,
    plan: &Plan,
    samples: &[Sample],
    churned: &Churned,
) -> String {
    let load: Vec<&Sample> = samples.iter().filter(|s| s.phase == Phase::Load).collect();
    let cpu: Vec<f64> = load.iter().filter_map(|s| s.cpu_pct).collect();
    let rss: Vec<u64> = load.iter().filter_map(|s| s.rss_kib).collect();
    let last = samples.last();
    let mib =
        |k: Option<&u64>| k.map_or_else(|| "?".into(), |&k| format!("{:.1}", curve::kib_to_mib(k)));
    format!(
        "Machine: {machine}; load average after the run {}.\n\
         Soak: {} min, population {}–{}, {:?} build of tcptrace; {}.\n\n{}\n\
         Tracer: RSS {} MiB at the first sample, {} MiB at most, {} MiB at the end; CPU {} % of \
         one core on average, {} % at most. Lost {} events, drift_total {}.\n\
         Load: {} churn runs ({} failed), {} connections churned; {} child namespaces made.\n",
        super::table::load_average(),
        options.minutes,
        options.population.low,
        options.population.high,
        options.profile,
        describe(plan),
        curve::table(plan, samples),
        mib(rss.first()),
        mib(rss.iter().max()),
        mib(rss.last()),
        mean(&cpu).map_or_else(|| "?".into(), |c| format!("{c:.1}")),
        cpu.iter()
            .copied()
            .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))))
            .map_or_else(|| "?".into(), |c| format!("{c:.0}")),
        last.and_then(|s| s.lost).map_or_else(|| "?".into(), |v| v.to_string()),
        last.and_then(|s| s.drift_total).map_or_else(|| "?".into(), |v| v.to_string()),
        churned.runs,
        churned.failed_runs,
        churned.connections,
        samples.last().map_or(0, |s| s.namespaces_made),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::soak::{plan::NAMESPACES_AT_ONCE, scrape::TIMEOUT, verdict::*};

    /// The help text states each threshold; it must state the ones that decide.
    #[test]
    fn help_names_the_thresholds_that_decide() {
        let help = HELP.replace("\n  ", " ");
        for said in [
            format!("more than {RSS_GROWTH_PERCENT} % + {RSS_SLACK_MIB} MiB"),
            format!("in the {} s before", CAUSE_WINDOW.as_secs()),
            format!("{UNANSWERED_IN_A_ROW} seconds in a row"),
            format!("more than {UNANSWERED_PERCENT} % of the seconds"),
            format!("within {} s of the load's end", EMPTY_WITHIN.as_secs()),
            format!("no 200 within {} s", TIMEOUT.as_secs()),
            format!("up to {} connections each", plan::MAX_PER_WORKER),
            format!("{} connections a second", plan::CHURN_PER_SECOND),
            format!("serve's {} KiB ring", serve::RING_BYTES / 1024),
            format!("unpaced churn on {} threads", churn::BURST_THREADS),
            format!("{NAMESPACES_AT_ONCE} alive at a time"),
            format!("(default {}-{})", Population::FULL.low, Population::FULL.high),
            format!("runs a {CI_MINUTES}-minute"),
        ] {
            assert!(help.contains(&said), "--help does not say {said:?}:\n{help}");
        }
    }
}
