//! What the soak does when, decided before anything starts: the population steps, the ring
//! overflows, the child namespaces, the churn's pace, and how the population is split over
//! worker processes.
//!
//! The run is a number of equal **cycles**; each one passes through the same shapes, so
//! that the first cycle (the warm-up) has seen everything later ones do:
//! - four population **steps**: the top of the range, the bottom, three quarters up, one
//!   quarter up (200,000, 50,000, 162,500, 87,500 by default);
//! - one **burst** of unpaced churn, while the population is at the top, that overflows
//!   the tracer's small ring;
//! - child namespaces all along: a new one every few seconds, each gone four periods later.

use std::{str::FromStr, time::Duration};

use anyhow::{Result, bail};

/// Connections one worker holds at most: it holds both ends of each (two files) and may
/// hold only RLIMIT_NOFILE files (20,000 on the project's hosts), less its own few.
pub(super) const MAX_PER_WORKER: u64 = 9_000;
/// Files a worker keeps free besides its two per connection (its listener, stdio, its
/// binary's and libraries' own).
const WORKER_SPARE_FILES: u64 = 256;
/// Connections a second of the steady churn (`tcptrace load churn`, one client thread),
/// on top of the held population: about a tenth of one core here, so the box keeps room
/// for the tracer.
pub(super) const CHURN_PER_SECOND: u64 = 2_000;
/// The shortest and longest cycle.
const CYCLE_MIN: Duration = Duration::from_secs(30);
const CYCLE_MAX: Duration = Duration::from_mins(10);
/// Cycles in a run when they fit between those bounds.
const CYCLES: u32 = 4;
/// How long a closed connection stays in TIME_WAIT (the kernel's fixed `TCP_TIMEWAIT_LEN`).
/// The churn's pile up for that long, and the tracer's capacity dumps include them, so its
/// dumps reach their steady size only a minute into the run (the paced churn alone keeps
/// 120,000 there, near `tcp_max_tw_buckets`).
const TIME_WAIT: Duration = Duration::from_mins(1);
/// Child namespaces alive at a time: each lives this many birth periods.
pub(super) const NAMESPACES_AT_ONCE: u32 = 4;

/// The range of connections held, as `LOW-HIGH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Population {
    pub low: u64,
    pub high: u64,
}

impl Population {
    /// The range: 50,000 to 200,000 connections (100,000 to 400,000 sockets).
    pub const FULL: Self = Self { low: 50_000, high: 200_000 };

    fn level(self, quarters: u64) -> u64 {
        self.low + (self.high - self.low) * quarters / 4
    }
}

impl std::fmt::Display for Population {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

impl FromStr for Population {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (low, high) = s.split_once('-').ok_or("expected LOW-HIGH, e.g. 50000-200000")?;
        let parse =
            |n: &str| n.trim().replace('_', "").parse::<u64>().map_err(|e| format!("{n}: {e}"));
        let (low, high) = (parse(low)?, parse(high)?);
        if low == 0 || low > high {
            return Err(format!(
                "{low}-{high}: the low end must be at least 1 and at most the high end"
            ));
        }
        if high > 1_000_000 {
            return Err(format!("{high}: at most 1000000 connections"));
        }
        Ok(Self { low, high })
    }
}

/// A population step: from `at` on, the workers hold `connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    pub(super) at: Duration,
    pub(super) connections: u64,
}

/// Unpaced churn from `at`, for `length`, that overflows the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Burst {
    pub(super) at: Duration,
    pub(super) length: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Plan {
    pub(super) duration: Duration,
    pub(super) cycle: Duration,
    pub(super) population: Population,
    pub(super) steps: Vec<Step>,
    pub(super) bursts: Vec<Burst>,
    /// A new child namespace every this long; each lives [`NAMESPACES_AT_ONCE`] times it.
    pub(super) namespace_every: Duration,
    pub(super) per_worker: u64,
}

impl Plan {
    /// The plan of a run of `duration`, holding `population`, with workers that may each
    /// hold `nofile` files.
    pub(super) fn new(duration: Duration, population: Population, nofile: u64) -> Result<Self> {
        let shortest = 2 * CYCLE_MIN.max(TIME_WAIT);
        if duration < shortest {
            bail!(
                "a soak runs at least {} s: a warm-up, and as long again to compare with it",
                shortest.as_secs()
            );
        }
        let per_worker = (nofile.saturating_sub(WORKER_SPARE_FILES) / 2).min(MAX_PER_WORKER);
        if per_worker < 1_000 {
            bail!(
                "RLIMIT_NOFILE is {nofile}: a worker could hold only {per_worker} connections \
                 (both ends); raise it to at least {}",
                2_000 + WORKER_SPARE_FILES
            );
        }
        let cycle = (duration / CYCLES).clamp(CYCLE_MIN, CYCLE_MAX);
        let step = cycle / 4;
        let cycles = duration.as_secs().div_ceil(cycle.as_secs());
        let mut steps = Vec::new();
        let mut bursts = Vec::new();
        for n in 0..u32::try_from(cycles).unwrap_or(u32::MAX) {
            let start = cycle * n;
            for (k, quarters) in [4, 0, 3, 1].into_iter().enumerate() {
                let at = start + step * u32::try_from(k).expect("four");
                if at < duration {
                    steps.push(Step { at, connections: population.level(quarters) });
                }
            }
            // Late in the top step, once the ramp to the top is over.
            let burst = Burst {
                at: start + step * 3 / 5,
                length: (step / 5).clamp(Duration::from_secs(1), Duration::from_secs(5)),
            };
            if burst.at + burst.length <= duration {
                bursts.push(burst);
            }
        }
        let namespace_every = (cycle / 20).clamp(Duration::from_secs(2), Duration::from_secs(15));
        Ok(Self { duration, cycle, population, steps, bursts, namespace_every, per_worker })
    }

    /// The first cycle, and at least a minute: by then the load has reached the top
    /// population, overflowed the ring, made and dropped child namespaces, and filled
    /// TIME_WAIT, so what the tracer needs for the whole workload it has needed by then
    /// (glibc's arenas grow early too).
    pub(super) fn warm_up(&self) -> Duration {
        self.cycle.max(TIME_WAIT)
    }

    /// The connections the workers should hold at `t`.
    pub(super) fn target_at(&self, t: Duration) -> u64 {
        self.steps.iter().take_while(|s| s.at <= t).last().map_or(0, |s| s.connections)
    }

    /// Whether a burst is running at `t`.
    pub(super) fn in_burst(&self, t: Duration) -> bool {
        self.bursts.iter().any(|b| b.at <= t && t < b.at + b.length)
    }

    /// How long a child namespace lives.
    pub(super) fn namespace_life(&self) -> Duration {
        self.namespace_every * NAMESPACES_AT_ONCE
    }

    /// Workers the top of the range needs.
    pub(super) fn max_workers(&self) -> u64 {
        self.population.high.div_ceil(self.per_worker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(minutes: u64, population: Population) -> Plan {
        Plan::new(Duration::from_mins(minutes), population, 20_000).unwrap()
    }

    #[test]
    fn the_range_parses_and_is_checked() {
        assert_eq!("50000-200000".parse(), Ok(Population::FULL));
        assert_eq!("50_000-200_000".parse(), Ok(Population::FULL));
        assert_eq!(Population::FULL.to_string(), "50000-200000");
        assert!("200000-50000".parse::<Population>().is_err());
        assert!("0-10".parse::<Population>().is_err());
        assert!("10".parse::<Population>().is_err());
        assert!("1-2000000".parse::<Population>().is_err());
    }

    #[test]
    fn an_hour_is_six_cycles_of_ten_minutes_with_every_shape_in_each() {
        let p = plan(60, Population::FULL);
        assert_eq!(p.cycle, Duration::from_mins(10));
        assert_eq!(p.warm_up(), Duration::from_mins(10));
        assert_eq!(p.steps.len(), 24);
        assert_eq!(p.bursts.len(), 6);
        let levels: Vec<u64> = p.steps[..4].iter().map(|s| s.connections).collect();
        assert_eq!(levels, [200_000, 50_000, 162_500, 87_500]);
        assert_eq!(p.target_at(Duration::ZERO), 200_000);
        assert_eq!(p.target_at(Duration::from_secs(150)), 50_000);
        assert_eq!(p.target_at(Duration::from_secs(599)), 87_500);
        assert_eq!(p.target_at(Duration::from_mins(10)), 200_000);
        // The burst is at the top, after the ramp, within the first step.
        let b = p.bursts[0];
        assert_eq!((b.at, b.length), (Duration::from_secs(90), Duration::from_secs(5)));
        assert!(p.in_burst(Duration::from_secs(92)) && !p.in_burst(Duration::from_secs(95)));
        assert_eq!(p.namespace_every, Duration::from_secs(15));
        assert_eq!(p.namespace_life(), Duration::from_mins(1));
        assert_eq!((p.per_worker, p.max_workers()), (MAX_PER_WORKER, 23));
    }

    #[test]
    fn every_run_length_stays_in_bounds_and_its_warm_up_sees_everything() {
        let population = Population { low: 20_000, high: 60_000 };
        for minutes in [2, 3, 7, 20, 60, 600] {
            let p = plan(minutes, population);
            assert!(p.cycle >= CYCLE_MIN && p.cycle <= CYCLE_MAX, "{minutes}: {p:?}");
            assert!(p.steps.iter().all(|s| s.at < p.duration), "{minutes}");
            assert!(p.bursts.iter().all(|b| b.at + b.length <= p.duration), "{minutes}");
            let in_warm_up: Vec<u64> =
                p.steps.iter().filter(|s| s.at < p.warm_up()).map(|s| s.connections).collect();
            assert!(in_warm_up.contains(&population.high) && in_warm_up.contains(&population.low));
            assert!(p.bursts.first().is_some_and(|b| b.at + b.length <= p.warm_up()), "{minutes}");
            assert!(p.namespace_life() < p.warm_up(), "{minutes}");
            assert!(p.warm_up() >= TIME_WAIT && p.warm_up() * 2 <= p.duration, "{minutes}");
            let levels = p.steps.iter().map(|s| s.connections);
            assert!(levels.clone().all(|c| (population.low..=population.high).contains(&c)));
        }
    }

    #[test]
    fn two_minutes_are_four_cycles_of_thirty_seconds() {
        let p = plan(2, Population { low: 20_000, high: 60_000 });
        assert_eq!((p.cycle, p.steps.len(), p.bursts.len()), (Duration::from_secs(30), 16, 4));
        let first = p.bursts[0];
        assert_eq!(first.at, Duration::from_millis(4_500));
        assert_eq!(first.length, Duration::from_millis(1_500));
        assert_eq!(p.namespace_every, Duration::from_secs(2));
        assert_eq!(p.warm_up(), Duration::from_mins(1), "two cycles: TIME_WAIT fills first");
    }

    #[test]
    fn workers_fit_the_file_limit() {
        let p = Plan::new(Duration::from_mins(2), Population::FULL, 4_096).unwrap();
        assert_eq!(p.per_worker, 1_920);
        assert!(Plan::new(Duration::from_mins(2), Population::FULL, 1_024).is_err());
        assert!(Plan::new(Duration::from_secs(119), Population::FULL, 20_000).is_err());
    }
}
