//! The held population: `tcptrace load hold` workers in the soak's namespace, each holding
//! both ends of its own connections, started and stopped to follow the plan's steps.
//!
//! Each worker listens on an address of its own and connects to itself, so stopping one
//! closes both ends of everything it held and leaves nothing half-open in another worker
//! (a `SO_REUSEPORT` group, as the demo's, would leave the other ends in `CLOSE_WAIT`,
//! live and held by nobody). Addresses are never reused within a run: a new worker does not
//! meet the `TIME_WAIT` 4-tuples of one that went before it.

use std::{
    io::{BufReader, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tcptrace_json::load::{Failure, Progress};
use tcptrace_netns::Netns;

/// The port every worker listens on, on its own address (below the ephemeral range).
const PORT: u16 = 20_400;
/// Workers connecting at once: more only starve the tracer on a small box, and finish no
/// sooner (the demo's fleet found the same).
const CONNECTING_AT_ONCE: usize = 2;

/// What one worker said last.
#[derive(Debug, Default)]
struct State {
    progress: Progress,
    error: Option<String>,
    exited: bool,
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Connections it was asked for.
    count: u64,
    told_go: bool,
    listen: Ipv4Addr,
    state: Arc<Mutex<State>>,
}

/// The workers alive, and those stopped but not yet reaped.
pub(super) struct Workers {
    tcptrace: PathBuf,
    netns: Arc<Netns>,
    per_worker: u64,
    running: Vec<Worker>,
    stopping: Vec<Child>,
    /// Workers started so far: the next one's addresses.
    started: u32,
}

impl Workers {
    pub(super) fn new(tcptrace: &Path, netns: Arc<Netns>, per_worker: u64) -> Self {
        Self {
            tcptrace: tcptrace.to_owned(),
            netns,
            per_worker,
            running: Vec::new(),
            stopping: Vec::new(),
            started: 0,
        }
    }

    /// Starts and stops workers so that they are asked for `target` connections in all:
    /// the newest ones stop first, then new ones make up the difference.
    pub(super) fn resize(&mut self, target: u64) -> Result<()> {
        while self.asked() > target {
            let worker = self.running.pop().expect("asked for more than 0");
            self.stopping.push(stop(worker));
        }
        while self.asked() < target {
            let count = (target - self.asked()).min(self.per_worker);
            self.spawn(count)?;
        }
        Ok(())
    }

    fn asked(&self) -> u64 {
        self.running.iter().map(|w| w.count).sum()
    }

    fn spawn(&mut self, count: u64) -> Result<()> {
        let n = self.started;
        self.started += 1;
        let (listen, from) = addresses(n)?;
        let args = vec![
            "load".to_owned(),
            "hold".into(),
            "--listen".into(),
            format!("{listen}:{PORT}"),
            "--connect".into(),
            format!("{listen}:{PORT}"),
            "--from".into(),
            from.to_string(),
            "--count".into(),
            count.to_string(),
            "--wait-for-go".into(),
        ];
        let exe = self.tcptrace.clone();
        // Spawned from the namespace's thread, so it starts in the namespace; it dies with
        // that thread (PR_SET_PDEATHSIG in the worker), which lives as long as the soak.
        let mut child = self
            .netns
            .run(move || {
                Command::new(exe)
                    .args(args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
            })
            .context("starting `tcptrace load hold`")?;
        let state = Arc::new(Mutex::new(State::default()));
        let stdout = child.stdout.take().expect("piped");
        let follow_state = Arc::clone(&state);
        thread::spawn(move || follow(BufReader::new(stdout), &follow_state));
        let stdin = child.stdin.take();
        self.running.push(Worker { child, stdin, count, told_go: false, listen, state });
        Ok(())
    }

    /// Lets waiting workers connect, [`CONNECTING_AT_ONCE`] at a time, once they listen.
    pub(super) fn go(&mut self) {
        let connecting =
            self.running.iter().filter(|w| w.told_go && !w.state().progress.done).count();
        let mut room = CONNECTING_AT_ONCE.saturating_sub(connecting);
        for w in self.running.iter_mut().filter(|w| !w.told_go) {
            if room == 0 {
                break;
            }
            if w.state().progress.listening.is_none() {
                continue;
            }
            w.told_go = true;
            room -= 1;
            if let Some(stdin) = w.stdin.as_mut() {
                let _ = writeln!(stdin, "go").and_then(|()| stdin.flush());
            }
        }
    }

    /// Connections the running workers hold (each with both ends on this box).
    pub(super) fn held(&self) -> u64 {
        self.running.iter().map(|w| w.state().progress.connected).sum()
    }

    /// Fails if a worker said it cannot go on, or exited without being stopped; collects
    /// the stopped ones that have exited.
    pub(super) fn check(&mut self) -> Result<()> {
        for w in &self.running {
            let state = w.state();
            if let Some(error) = &state.error {
                bail!("the worker on {} stopped: {error}", w.listen);
            }
            if state.exited {
                bail!("the worker on {} exited by itself", w.listen);
            }
        }
        self.stopping.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        Ok(())
    }

    /// Stops every worker and waits up to `bound` for them to exit (the kernel closes
    /// their sockets as they do); returns how many were still there.
    pub(super) fn stop_all(&mut self, bound: Duration) -> usize {
        let all: Vec<Worker> = self.running.drain(..).collect();
        self.stopping.extend(all.into_iter().map(stop));
        let deadline = Instant::now() + bound;
        while !self.stopping.is_empty() && Instant::now() < deadline {
            self.stopping.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            thread::sleep(Duration::from_millis(50));
        }
        self.stopping.len()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(30));
    }
}

impl Worker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Closing stdin asks the worker to exit; SIGKILL makes sure, without waiting: a worker
/// holding thousands of sockets takes a while to go, and others can meanwhile.
fn stop(mut worker: Worker) -> Child {
    drop(worker.stdin.take());
    // Our own child, by its handle.
    let _ = worker.child.kill();
    worker.child
}

/// Worker `n`'s listening and source addresses: 127.210.x.y and 127.211.x.y, y from 1 to
/// 250, never 127.0.0.1.
fn addresses(n: u32) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let (x, y) = (n / 250, n % 250 + 1);
    let Ok(x) = u8::try_from(x) else {
        bail!("more than {} workers in one soak", 250 * 256);
    };
    let y = u8::try_from(y).expect("at most 250");
    Ok((Ipv4Addr::new(127, 210, x, y), Ipv4Addr::new(127, 211, x, y)))
}

fn follow(stdout: impl std::io::BufRead, state: &Mutex<State>) {
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(progress) = serde_json::from_str::<Progress>(&line) {
            state.progress = progress;
        } else if let Ok(failure) = serde_json::from_str::<Failure>(&line) {
            state.error = Some(failure.error);
        }
    }
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).exited = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_has_addresses_of_its_own() {
        assert_eq!(
            addresses(0).unwrap(),
            (Ipv4Addr::new(127, 210, 0, 1), Ipv4Addr::new(127, 211, 0, 1))
        );
        assert_eq!(addresses(249).unwrap().0, Ipv4Addr::new(127, 210, 0, 250));
        assert_eq!(addresses(250).unwrap().0, Ipv4Addr::new(127, 210, 1, 1));
        assert!(addresses(250 * 256).is_err());
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..1000 {
            let (listen, from) = addresses(n).unwrap();
            assert!(seen.insert(listen) && seen.insert(from), "{n}");
            assert!(listen.is_loopback() && listen != Ipv4Addr::LOCALHOST);
        }
    }

    #[test]
    fn progress_and_failure_lines_are_followed() {
        let state = Mutex::new(State::default());
        let out = "{\"listening\":20400,\"connected\":5,\"accepted\":5,\"failed\":0,\"done\":false}\n\
                   not json\n{\"error\":\"bind 127.210.0.1:20400\"}\n";
        follow(out.as_bytes(), &state);
        let state = state.into_inner().unwrap();
        assert_eq!((state.progress.listening, state.progress.connected), (Some(20_400), 5));
        assert_eq!(state.error.as_deref(), Some("bind 127.210.0.1:20400"));
        assert!(state.exited);
    }
}
