//! The sock_diag walks, off the loop. A walk of every network namespace costs from a few
//! milliseconds to minutes: each namespace's dump walks the one TCP hash table the whole
//! box shares, so a box with many namespaces and many sockets pays their product (a local
//! user can make thousands of namespaces with `unshare -rn`). The loop must keep draining
//! the ring, printing and serving meanwhile, so the walks run on a thread of their own, one
//! at a time, and the loop takes their results when they are done.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::{capacity, filter::Filter, sockdiag};

/// What a walk is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// The capacity rows: listeners and every port-holding state.
    Capacity,
    /// A reconciliation: the live connections.
    Reconciliation,
}

/// A finished walk.
pub enum Walked {
    Capacity(Result<Box<capacity::Dump>, sockdiag::Error>),
    Reconciliation(Result<sockdiag::LiveConnections, sockdiag::Error>),
}

impl Walked {
    fn walk(&self) -> Walk {
        match self {
            Self::Capacity(_) => Walk::Capacity,
            Self::Reconciliation(_) => Walk::Reconciliation,
        }
    }
}

/// Where a kind of walk stands.
#[derive(Clone, Copy, Debug, Default)]
struct Pace {
    /// When the walk in flight was asked for.
    asked: Option<Instant>,
    /// When the last one finished, and what it cost.
    last: Option<(Instant, Duration)>,
}

/// The walker thread, and the walks asked of it.
pub struct Walker {
    jobs: Sender<Walk>,
    done: Receiver<(Walked, Duration)>,
    paces: [Pace; 2],
    /// Finished walks the loop has not taken yet (at most one of each kind).
    finished: Vec<Walked>,
}

impl Walker {
    /// Starts the thread; its walks select what `filter` selects. It ends when the walker
    /// is dropped (after the walk in progress, which nobody waits for).
    pub fn start(filter: Filter) -> std::io::Result<Self> {
        let (jobs, asked) = mpsc::channel::<Walk>();
        let (report, done) = mpsc::channel();
        thread::Builder::new().name("sock-diag-walk".into()).spawn(move || {
            for walk in asked {
                let started = Instant::now();
                let walked = walk_once(walk, &filter);
                if report.send((walked, started.elapsed())).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { jobs, done, paces: [Pace::default(); 2], finished: Vec::new() })
    }

    /// Asks for a walk unless one of its kind is in flight; `false` if one was.
    pub fn ask(&mut self, walk: Walk) -> bool {
        let pace = &mut self.paces[walk as usize];
        if pace.asked.is_some() {
            return false;
        }
        // The thread lives as long as `self`: a walk that panics is caught and sent back
        // as its pass's error (`walk_once`), so the send cannot fail.
        let _ = self.jobs.send(walk);
        pace.asked = Some(Instant::now());
        true
    }

    /// Whether a walk of this kind is in flight, and since when.
    #[must_use]
    pub fn in_flight(&self, walk: Walk) -> Option<Instant> {
        self.paces[walk as usize].asked
    }

    /// When the last walk of this kind finished, and what it cost.
    #[must_use]
    pub fn last(&self, walk: Walk) -> Option<(Instant, Duration)> {
        self.paces[walk as usize].last
    }

    /// The finished walk of this kind, if there is one, waiting up to `wait` for it when it
    /// is in flight.
    pub fn take(&mut self, walk: Walk, wait: Duration) -> Option<Walked> {
        self.collect(Duration::ZERO);
        let deadline = Instant::now() + wait;
        while self.in_flight(walk).is_some() && !self.finished.iter().any(|w| w.walk() == walk) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.collect(left) {
                break;
            }
        }
        let i = self.finished.iter().position(|w| w.walk() == walk)?;
        Some(self.finished.swap_remove(i))
    }

    /// Takes in what the thread has finished, waiting up to `wait` for the next one; `false`
    /// if nothing came.
    fn collect(&mut self, wait: Duration) -> bool {
        let mut got = false;
        let mut next = self.done.recv_timeout(wait);
        loop {
            match next {
                Ok((walked, cost)) => {
                    let pace = &mut self.paces[walked.walk() as usize];
                    pace.asked = None;
                    pace.last = Some((Instant::now(), cost));
                    self.finished.push(walked);
                    got = true;
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return got,
            }
            next = self.done.recv_timeout(Duration::ZERO);
        }
    }
}

/// One walk. A panic in it (a bug, say in parsing a kernel message) becomes the walk's
/// error, so its pass is skipped and said like any failed one, and the thread lives on to
/// do the next: a dead thread would leave every later walk in flight forever, silently.
fn walk_once(walk: Walk, filter: &Filter) -> Walked {
    caught(walk, || match walk {
        Walk::Capacity => Walked::Capacity(capacity::dump(filter).map(Box::new)),
        Walk::Reconciliation => Walked::Reconciliation(sockdiag::live_connections(filter)),
    })
}

/// `run`'s walk, or its panic as the walk's error.
fn caught(walk: Walk, run: impl FnOnce() -> Walked) -> Walked {
    panic::catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        let error = sockdiag::Error::Panicked(what);
        match walk {
            Walk::Capacity => Walked::Capacity(Err(error)),
            Walk::Reconciliation => Walked::Reconciliation(Err(error)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_walk_of_a_kind_at_a_time_and_its_result_once() {
        let mut walker = Walker::start(Filter::default()).unwrap();
        assert!(walker.ask(Walk::Capacity));
        assert!(!walker.ask(Walk::Capacity), "one in flight already");
        assert!(walker.ask(Walk::Reconciliation), "the other kind queues behind it");
        assert!(walker.in_flight(Walk::Capacity).is_some());
        let wait = Duration::from_mins(1);
        assert!(matches!(
            walker.take(Walk::Reconciliation, wait),
            Some(Walked::Reconciliation(Ok(_)))
        ));
        // The capacity walk ran first, so it is in by now, kept for its own taker.
        assert!(walker.in_flight(Walk::Capacity).is_none());
        assert!(matches!(
            walker.take(Walk::Capacity, Duration::ZERO),
            Some(Walked::Capacity(Ok(_)))
        ));
        assert!(walker.take(Walk::Capacity, Duration::ZERO).is_none(), "taken once");
        assert!(
            walker.last(Walk::Capacity).is_some() && walker.last(Walk::Reconciliation).is_some()
        );
        assert!(walker.ask(Walk::Capacity), "a new one may be asked for");
    }

    #[test]
    fn a_walk_that_panics_is_its_passs_error() {
        let walked = caught(Walk::Reconciliation, || panic!("bad message {}", 7));
        assert!(
            matches!(&walked, Walked::Reconciliation(Err(sockdiag::Error::Panicked(m))) if m == "bad message 7"),
            "{:?}",
            walked.walk()
        );
        let walked = caught(Walk::Capacity, || panic!("static"));
        assert!(
            matches!(walked, Walked::Capacity(Err(sockdiag::Error::Panicked(m))) if m == "static")
        );
    }
}
