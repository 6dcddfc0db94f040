//! Which processes hold each listening socket: a `/proc/*/fd` scan (as `ss -p` does it),
//! paced, in a thread of its own.

use hashbrown::{HashMap, HashSet};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::sockdiag::procfs;

/// After this long the listeners' processes are looked up again even if no listener is new:
/// a forked worker inherits a listening socket without creating one.
pub(super) const PIDS_MAX_AGE: Duration = Duration::from_secs(30);
/// New listeners wait this long for their processes at most: a scan costs about 10 µs per
/// open file on the box (the kernel builds a `/proc` inode for each), too much to repeat
/// every interval where listeners come and go all the time.
pub(super) const PIDS_MIN_AGE: Duration = Duration::from_secs(5);
/// A `/proc/*/fd` scan stops after this long; the pids it found by then are kept.
pub(super) const PID_SCAN_BUDGET: Duration = Duration::from_secs(2);
/// How long a refresh waits for a scan it started: enough for a box with a few thousand
/// open files, so their pids are in the same refresh.
pub(super) const PID_SCAN_WAIT: Duration = Duration::from_millis(100);

/// Listening socket inode → pids holding it, looked up in `/proc/*/fd` only when a
/// listener appears that was not there at the last scan, or the scan is old.
///
/// A scan runs in a thread of its own, and a refresh waits for it only
/// [`PID_SCAN_WAIT`]: on a box with 100,000 open sockets it takes half a second, which
/// would hold up the first snapshot (and every refresh that rescans). Its pids then show
/// from the next refresh on.
#[derive(Debug, Default)]
pub(super) struct PidCache {
    scanned_inodes: HashSet<u32>,
    scanned_at: Option<Instant>,
    pub(super) by_inode: HashMap<u32, Vec<u32>>,
    /// The scan in progress.
    running: Option<mpsc::Receiver<PidScan>>,
}

/// A scan's result: pids per socket inode, and whether it saw every process.
type PidScan = (HashMap<u32, Vec<u32>>, bool);

impl PidCache {
    /// Takes in a finished scan; starts one if needed and waits up to `wait` for it. A
    /// note if a scan ran out of time.
    pub(super) fn refresh(
        &mut self,
        inodes: HashSet<u32>,
        now: Instant,
        wait: Duration,
    ) -> Option<String> {
        let mut note = self.collect(Duration::ZERO);
        let age = self.scanned_at.map(|at| now.saturating_duration_since(at));
        let known = inodes.is_subset(&self.scanned_inodes);
        if self.running.is_some()
            || age.is_some_and(|age| age < PIDS_MIN_AGE || (known && age < PIDS_MAX_AGE))
        {
            return note;
        }
        let (found, running) = mpsc::channel();
        let scan = inodes.clone();
        let spawned = thread::Builder::new().name("pid-scan".into()).spawn(move || {
            let started = Instant::now();
            let result = procfs::holders_of(&scan, PID_SCAN_BUDGET);
            log::debug!("listener pids: /proc/*/fd scanned in {:?}", started.elapsed());
            let _ = found.send(result);
        });
        if let Err(e) = spawned {
            log::warn!("cannot start a thread to find the listeners' pids: {e}");
            return note;
        }
        self.running = Some(running);
        self.scanned_inodes = inodes;
        self.scanned_at = Some(now);
        note = note.or(self.collect(wait));
        note
    }

    /// Takes the running scan's result if it comes within `wait`.
    fn collect(&mut self, wait: Duration) -> Option<String> {
        let (by_inode, complete) = match self.running.as_ref()?.recv_timeout(wait) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => return None,
            // The thread died (it cannot panic short of a bug): scan again next time.
            Err(mpsc::RecvTimeoutError::Disconnected) => (HashMap::new(), true),
        };
        self.running = None;
        self.by_inode = by_inode;
        (!complete).then(|| {
            format!(
                "listener pids: /proc/*/fd scan stopped after {PID_SCAN_BUDGET:?}; some are missing"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_scans_are_paced() {
        // Long enough for every scan to finish, so each call sees the one before done.
        const WAIT: Duration = Duration::from_secs(30);
        let mut cache = PidCache::default();
        let t0 = Instant::now();
        let scanned_at = |cache: &PidCache| cache.scanned_at.unwrap().duration_since(t0);
        let inodes = |set: &[u32]| set.iter().copied().collect::<HashSet<u32>>();
        for (at, set, last_scan) in [
            (0, &[1][..], 0),
            (1, &[1], 0),
            // A new listener waits for the minimum age...
            (2, &[1, 2], 0),
            (6, &[1, 2], 6),
            // ... a known one for the maximum.
            (20, &[2], 6),
            (37, &[2], 37),
        ] {
            let note = cache.refresh(inodes(set), t0 + Duration::from_secs(at), WAIT);
            assert_eq!(note, None);
            assert_eq!(scanned_at(&cache), Duration::from_secs(last_scan), "at {at} s");
        }
    }
}
