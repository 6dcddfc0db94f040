//! One run's attachment to the kernel and its clock: the tracer, the ring, and the ticks
//! that pace everything else.

use std::time::{Duration, Instant};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::{Interval, MissedTickBehavior, interval, sleep_until},
};

use super::{Options, ring::Consumer};
use crate::{
    Error,
    kernel::{self, Tracer},
};

/// How often the ring is drained when the kernel has not woken us: a quiet box still sees
/// its events within this long, and a busy one is woken by the kernel well before.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

pub enum Tick {
    /// Drain the ring now.
    Drain,
    /// Drain, then report (print a snapshot, check for lost events).
    Report,
    /// Drain, report a last time, and stop: the duration is up, or SIGINT/SIGTERM came.
    Stop,
}

pub struct Session {
    pub tracer: Tracer,
    pub consumer: Consumer,
    pub started: Instant,
    deadline: Option<tokio::time::Instant>,
    drain: Interval,
    report: Interval,
    sigint: Signal,
    sigterm: Signal,
}

impl Session {
    /// Attaches the programs and says on stderr which notes the choice of path brought.
    pub fn start(options: &Options) -> Result<Self, Error> {
        let filter = options.filter.to_wire()?;
        let mut tracer = Tracer::attach(kernel::Options {
            request: options.request,
            ring_bytes: options.ring_bytes,
            filter,
            details: options.details,
        })?;
        for note in &tracer.notes {
            eprintln!("tcptrace: note: {note}");
        }
        let consumer =
            Consumer::new(tracer.take_ring()?, options.ring_bytes).map_err(Error::RingReader)?;
        let mut drain = interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let start = tokio::time::Instant::now();
        let mut report = tokio::time::interval_at(start + options.interval, options.interval);
        report.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            tracer,
            consumer,
            started: Instant::now(),
            deadline: options.duration.map(|d| start + d),
            drain,
            report,
            sigint: signal(SignalKind::interrupt()).map_err(|e| Error::Signal("SIGINT", e))?,
            sigterm: signal(SignalKind::terminate()).map_err(|e| Error::Signal("SIGTERM", e))?,
        })
    }

    /// Starts the report ticks over, one interval from now: after a slow start (a seed walk
    /// of thousands of namespaces can take seconds) the first tick would otherwise be due at
    /// once, and the first snapshot would be printed twice.
    pub fn restart_reports(&mut self) {
        self.report.reset();
    }

    /// The next tick. Cancel-safe: nothing has happened until it returns.
    pub async fn next(&mut self) -> Tick {
        let deadline = async {
            match self.deadline {
                Some(d) => sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.sigint.recv() => Tick::Stop,
            _ = self.sigterm.recv() => Tick::Stop,
            () = deadline => Tick::Stop,
            _ = self.report.tick() => Tick::Report,
            r = self.consumer.wait() => {
                if let Err(e) = r {
                    log::warn!("ring buffer poll failed: {e}");
                }
                Tick::Drain
            }
            _ = self.drain.tick() => Tick::Drain,
        }
    }
}
