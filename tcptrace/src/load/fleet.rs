//! A fleet of `tcptrace load hold` workers in a network namespace of their own, driven
//! from the parent: spawn, say `go`, follow their progress, and tear everything down.
//!
//! The namespace keeps the workload away from everything else on the box (its ports, its
//! TIME_WAIT buckets, its ephemeral range) and makes the teardown complete: when the
//! workers are gone and the namespace thread ends, the kernel frees the namespace and every
//! socket left in it.

use std::{
    io::{BufRead, BufReader, Write as _},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
};

use tcptrace_netns::Netns;

use anyhow::Context as _;

use super::hold::{Failure, Progress};

/// What the parent knows of one worker, from its progress lines.
#[derive(Debug, Clone, Default)]
pub struct WorkerState {
    pub pid: u32,
    pub progress: Progress,
    /// The error it printed, if it could not go on.
    pub error: Option<String>,
    /// Its stdout closed: it exited.
    pub exited: bool,
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    told_go: bool,
}

/// Workers of one workload, all in one namespace.
pub struct Fleet {
    workers: Vec<Worker>,
    states: Arc<Mutex<Vec<WorkerState>>>,
}

impl Fleet {
    #[must_use]
    pub fn new() -> Self {
        Self { workers: Vec::new(), states: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Starts `tcptrace load hold ARGS` in `netns`; its progress is followed from then on.
    pub fn spawn(&mut self, netns: &Netns, args: Vec<String>) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the tcptrace binary")?;
        let mut child = netns.run(move || {
            Command::new(exe)
                .args(["load", "hold"])
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
        })?;
        let index = {
            let mut states = self.states.lock().expect("not poisoned");
            states.push(WorkerState { pid: child.id(), ..WorkerState::default() });
            states.len() - 1
        };
        let stdout = child.stdout.take().expect("piped");
        let states = Arc::clone(&self.states);
        thread::spawn(move || follow(index, BufReader::new(stdout), &states));
        let stdin = child.stdin.take();
        self.workers.push(Worker { child, stdin, told_go: false });
        Ok(())
    }

    /// Tells waiting workers to start connecting, so that at most `at_once` are connecting
    /// at a time: a hundred processes all connecting at once on a small box starve
    /// everything else, the tracer included, and finish no sooner.
    pub fn go(&mut self, at_once: usize) {
        let states = self.states();
        let connecting =
            self.workers.iter().zip(&states).filter(|(w, s)| w.told_go && !s.progress.done).count();
        let waiting = self.workers.iter_mut().filter(|w| !w.told_go);
        for w in waiting.take(at_once.saturating_sub(connecting)) {
            w.told_go = true;
            if let Some(stdin) = w.stdin.as_mut() {
                let _ = writeln!(stdin, "go").and_then(|()| stdin.flush());
            }
        }
    }

    #[must_use]
    pub fn states(&self) -> Vec<WorkerState> {
        self.states.lock().expect("not poisoned").clone()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Ends every worker: closing stdin asks, SIGKILL makes sure. All at once, without
    /// waiting: a worker holding thousands of sockets takes a while to exit, and the
    /// kernel closes the sockets of all of them in parallel. [`Fleet::reap`] collects them.
    pub fn kill_all(&mut self) {
        for w in &mut self.workers {
            drop(w.stdin.take());
            let _ = w.child.kill();
        }
    }

    /// Collects the workers that have exited; true when none is left. Returns how many
    /// were collected this time through `reaped`.
    pub fn reap(&mut self, reaped: &mut usize) -> bool {
        let before = self.workers.len();
        self.workers.retain_mut(|w| !matches!(w.child.try_wait(), Ok(Some(_)) | Err(_)));
        *reaped += before - self.workers.len();
        self.workers.is_empty()
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_all();
        for w in &mut self.workers {
            let _ = w.child.wait();
        }
    }
}

fn follow(index: usize, stdout: impl BufRead, states: &Mutex<Vec<WorkerState>>) {
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        let mut states = states.lock().expect("not poisoned");
        let state = &mut states[index];
        if let Ok(progress) = serde_json::from_str::<Progress>(&line) {
            state.progress = progress;
        } else if let Ok(failure) = serde_json::from_str::<Failure>(&line) {
            state.error = Some(failure.error);
        }
    }
    states.lock().expect("not poisoned")[index].exited = true;
}

/// The sum of the workers' counts. It saturates: the counts come from the workers' lines,
/// and a line with a count near u64::MAX must not overflow the sum.
#[must_use]
pub fn totals(states: &[WorkerState]) -> Progress {
    states.iter().fold(Progress::default(), |mut t, s| {
        t.connected = t.connected.saturating_add(s.progress.connected);
        t.accepted = t.accepted.saturating_add(s.progress.accepted);
        t.failed = t.failed.saturating_add(s.progress.failed);
        t
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn progress() -> impl Strategy<Value = Progress> {
        let count = || prop_oneof![any::<u64>(), Just(u64::MAX), 0..100_000u64];
        (any::<Option<u16>>(), count(), count(), count(), any::<bool>()).prop_map(
            |(listening, connected, accepted, failed, done)| Progress {
                listening,
                connected,
                accepted,
                failed,
                done,
            },
        )
    }

    /// A worker's stdout: progress and failure lines, JSON that is neither, and anything.
    fn output() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            progress().prop_map(|p| serde_json::to_vec(&p).unwrap()),
            ".{0,20}".prop_map(|error| serde_json::to_vec(&Failure { error }).unwrap()),
            "\\{\"(connected|accepted|listening|error)\": ?-?[0-9e.]{1,30}\\}"
                .prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..40),
        ];
        prop::collection::vec(line, 0..6).prop_map(|lines| lines.join(&b'\n'))
    }

    /// Follows `output` as the fleet follows a worker's stdout.
    fn followed(output: &[u8]) -> WorkerState {
        let states = Mutex::new(vec![WorkerState::default()]);
        follow(0, output, &states);
        states.into_inner().unwrap().remove(0)
    }

    #[test]
    fn totals_of_counts_near_the_top_saturate() {
        // Found by the fuzz tier: two such lines overflowed the sum (a panic in a debug
        // build).
        let line = r#"{"listening":null,"connected":18446744073709551615,"accepted":1,"failed":0,"done":true}"#;
        let state = followed(line.as_bytes());
        assert_eq!(state.progress.connected, u64::MAX);
        let t = totals(&[state.clone(), state]);
        assert_eq!((t.connected, t.accepted, t.failed), (u64::MAX, 2, 0));
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzz::config())]

        #[test]
        fn any_worker_output_is_followed_to_the_end(output in output()) {
            let state = followed(&output);
            prop_assert!(state.exited);
            let _ = totals(&[state.clone(), state]);
        }

        #[test]
        fn progress_lines_are_followed_to_the_last(lines in prop::collection::vec(progress(), 1..5)) {
            let output: Vec<String> = lines.iter().map(|p| serde_json::to_string(p).unwrap()).collect();
            prop_assert_eq!(followed(output.join("\n").as_bytes()).progress, *lines.last().unwrap());
        }
    }
}
