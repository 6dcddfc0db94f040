//! The tracer process: the binary as a child process whose JSON lines are parsed as they
//! arrive, the waits on them, and runs to completion.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::{
    ATTACH_WAIT, EventLine, INTERVAL, Netns, Snapshot, WAIT, attach_path, init, tracer_bin,
};

/// `watch` options for the tests that check drift: every row, frequent snapshots, and a
/// reconciliation every 400 ms, so that a connection the hooks missed shows within a
/// second (see [`Tracer::max_drift`]).
pub const RECONCILE_OFTEN: [&str; 6] =
    ["--top", "0", "--interval", INTERVAL, "--reconcile-every", "400ms"];
/// Tracer stderr lines echoed into the test output, at most (the rest are kept).
const ECHO_LINES: usize = 40;

struct Output<T> {
    /// Parsed stdout lines that passed the filter.
    items: Vec<T>,
    /// Parsed stdout lines, filtered or not.
    parsed: usize,
    /// Stdout lines that are not a valid `T`: a contract violation.
    unparsed: Vec<String>,
    stderr: Vec<String>,
    stdout_open: bool,
    stderr_open: bool,
}

struct Shared<T> {
    out: Mutex<Output<T>>,
    changed: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Output<T>> {
        self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The tracer as a child process whose stdout lines are parsed as `T` ([`Snapshot`] for
/// `watch --json`, [`EventLine`] for `events --json`) by a reader thread. Killed on drop.
pub struct Tracer<T> {
    child: Mutex<Child>,
    command: String,
    shared: Arc<Shared<T>>,
}

/// How a tracer run ended.
#[derive(Debug)]
pub struct Exit {
    /// `None` when it had to be killed after the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Exit {
    #[must_use]
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs the tracer with `args` to completion (killed after `timeout`).
#[must_use]
pub fn run_to_exit(args: &[&str], timeout: Duration) -> Exit {
    let mut child = spawn_piped(args);
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = wait_until(&mut child, deadline);
    Exit {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Runs the tracer with `args` to completion like [`run_to_exit`], calling `during` once
/// it has said `tcptrace: attached` (so that what `during` does reaches the hooks, not the
/// start-up sock_diag seed). A tracer that exits or does not attach within [`ATTACH_WAIT`]
/// never sees `during` run (it is killed in the second case).
#[must_use]
pub fn run_to_exit_during(args: &[&str], timeout: Duration, during: impl FnOnce()) -> Exit {
    let mut child = spawn_piped(args);
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let (attached_tx, attached) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().expect("piped stderr");
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("tcptrace: attached") {
                let _ = attached_tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let deadline = Instant::now() + timeout;
    // A tracer that exits first drops the sender: recv fails at once.
    if attached.recv_timeout(ATTACH_WAIT).is_ok() {
        during();
    } else {
        let _ = child.kill();
    }
    let status = wait_until(&mut child, deadline);
    Exit {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The tracer with `args`, stdout and stderr piped, no stdin.
fn spawn_piped(args: &[&str]) -> Child {
    Command::new(tracer_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", tracer_bin().display()))
}

/// The exit status of `child`, or `None` when it had to be killed at `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().expect("wait for the tracer") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl<T: DeserializeOwned + Send + 'static> Tracer<T> {
    fn spawn(args: &[String], keep: impl Fn(&T) -> bool + Send + 'static) -> Self {
        Self::spawn_with_env(args, &[], keep)
    }

    fn spawn_with_env(
        args: &[String],
        env: &[(&str, &str)],
        keep: impl Fn(&T) -> bool + Send + 'static,
    ) -> Self {
        init();
        let bin = tracer_bin();
        let command = format!("{} {}", bin.display(), args.join(" "));
        println!("  running: {command}");
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
        let shared = Arc::new(Shared {
            out: Mutex::new(Output {
                items: Vec::new(),
                parsed: 0,
                unparsed: Vec::new(),
                stderr: Vec::new(),
                stdout_open: true,
                stderr_open: true,
            }),
            changed: Condvar::new(),
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let parsed = serde_json::from_str::<T>(&line);
                    let mut out = shared.lock();
                    match parsed {
                        Ok(item) => {
                            out.parsed += 1;
                            if keep(&item) {
                                out.items.push(item);
                            }
                        }
                        Err(e) => out.unparsed.push(format!("{e}: {line}")),
                    }
                    drop(out);
                    shared.changed.notify_all();
                }
                shared.lock().stdout_open = false;
                shared.changed.notify_all();
            });
        }
        {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut out = shared.lock();
                    if out.stderr.len() < ECHO_LINES {
                        eprintln!("  [tcptrace] {line}");
                    }
                    out.stderr.push(line);
                    drop(out);
                    shared.changed.notify_all();
                }
                shared.lock().stderr_open = false;
                shared.changed.notify_all();
            });
        }
        Self { child: Mutex::new(child), command, shared }
    }

    /// Waits until `done` returns `Some` over the output so far. `Err` when the tracer
    /// exits first (with its stderr complete) or on timeout (tracer left running).
    fn wait_output<R>(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Output<T>) -> Option<R>,
    ) -> Result<R, Failure> {
        let deadline = Instant::now() + timeout;
        let mut out = self.shared.lock();
        loop {
            if !out.unparsed.is_empty() {
                return Err(Failure::Unparsed);
            }
            if let Some(result) = done(&out) {
                return Ok(result);
            }
            if !out.stdout_open {
                // Exited: give stderr a moment to close so the message is complete.
                let grace = Instant::now() + Duration::from_secs(5);
                while out.stderr_open && Instant::now() < grace {
                    out = self
                        .shared
                        .changed
                        .wait_timeout(out, Duration::from_millis(100))
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
                return Err(Failure::Exited);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::Timeout);
            }
            out = self
                .shared
                .changed
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The tracer's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner).id()
    }

    /// SIGKILL, as an OOM kill or `kill -9` would end it: no cleanup of its own runs. Waits
    /// until it is gone.
    pub fn kill_hard(&self) {
        let mut child = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Our own child, by its handle.
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits until a stderr line satisfies `check` (which may keep state across lines),
    /// given with the stdout lines parsed so far; panics with the stderr on timeout or
    /// exit. `check` runs under the output's lock: it must not call back into the tracer.
    pub fn wait_stderr(&self, what: &str, mut check: impl FnMut(&str, &[T]) -> bool) -> String {
        let mut next = 0;
        let found = self.wait_output(WAIT, |out| {
            while let Some(line) = out.stderr.get(next) {
                next += 1;
                if check(line, &out.items) {
                    return Some(line.clone());
                }
            }
            None
        });
        found.unwrap_or_else(|failure| self.fail_with(what, &failure, "(see stderr)"))
    }

    /// The exit status if the tracer has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_wait()
            .expect("wait for the tracer")
    }

    /// The tracer's stderr so far, one string.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.shared.lock().stderr.join("\n")
    }

    /// Panics unless the tracer is still running.
    pub fn assert_running(&self) {
        if let Some(status) = self.exit_status() {
            self.fail("tracer still running", &format!("it exited with {status}"));
        }
    }

    /// Panics with everything needed to see why: the command, its status, its stderr.
    fn fail(&self, what: &str, detail: &str) -> ! {
        let status = self
            .exit_status()
            .map_or_else(|| "still running".to_owned(), |s| format!("exited with {s}"));
        let out = self.shared.lock();
        let stderr: Vec<&str> =
            out.stderr.iter().rev().take(40).rev().map(String::as_str).collect();
        let unparsed: Vec<&str> = out.unparsed.iter().take(5).map(String::as_str).collect();
        panic!(
            "waiting for: {what}\n{detail}\ncommand: {}\ntracer {status}; {} stdout lines parsed\n\
             unparsable stdout lines: {unparsed:#?}\nstderr (last 40 lines):\n{}",
            self.command,
            out.parsed,
            stderr.join("\n")
        );
    }

    fn fail_with(&self, what: &str, failure: &Failure, last: &str) -> ! {
        let detail = match failure {
            Failure::Unparsed => "stdout has lines that do not match the JSON contract".to_owned(),
            Failure::Exited => format!("the tracer exited first; last seen:\n{last}"),
            Failure::Timeout => format!("not within {WAIT:?}; last seen:\n{last}"),
        };
        self.fail(what, &detail);
    }
}

enum Failure {
    Unparsed,
    Exited,
    Timeout,
}

fn has_attached_line(out: &Output<impl Sized>) -> bool {
    out.stderr.iter().any(|l| l.starts_with("tcptrace: attached"))
}

impl Tracer<Snapshot> {
    /// `tcptrace watch --json ARGS` (plus `--attach TCPTRACE_ATTACH` unless ARGS attach),
    /// returned once the first snapshot and the `tcptrace: attached` line are out.
    #[must_use]
    pub fn watch(args: &[&str]) -> Self {
        Self::watch_with_env(args, &[])
    }

    /// Like [`Tracer::watch`], but a tracer that exits before its first snapshot is an
    /// `Err` with its exit status and stderr, for the tests that expect a refusal.
    pub fn try_watch(args: &[&str]) -> Result<Self, Exit> {
        Self::try_watch_with_env(args, &[])
    }

    /// [`Tracer::watch`] with more environment (`RUST_LOG`, say).
    #[must_use]
    pub fn watch_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::try_watch_with_env(args, env).unwrap_or_else(|exit| {
            panic!(
                "tcptrace watch {args:?} exited before its first snapshot ({:?}); stderr:\n{}",
                exit.status, exit.stderr
            )
        })
    }

    fn try_watch_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Self, Exit> {
        let mut command_line: Vec<String> = vec!["watch".into(), "--json".into()];
        command_line.extend(args.iter().map(|&a| a.to_owned()));
        if !args.contains(&"--attach") {
            command_line.extend(["--attach".to_owned(), attach_path()]);
        }
        let tracer = Self::spawn_with_env(&command_line, env, |_| true);
        let ready = tracer.wait_output(ATTACH_WAIT, |out| {
            (!out.items.is_empty() && has_attached_line(out)).then_some(())
        });
        match ready {
            Ok(()) => Ok(tracer),
            Err(Failure::Exited) => {
                let status = tracer
                    .child
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .wait()
                    .ok();
                Err(Exit { status, stdout: String::new(), stderr: tracer.stderr() })
            }
            Err(failure) => {
                let last = tracer.shared.lock().items.last().map(|s| format!("{s:?}"));
                tracer.fail_with(
                    "the first snapshot and `tcptrace: attached`",
                    &failure,
                    &last.unwrap_or_default(),
                )
            }
        }
    }

    /// The first snapshot: the state right after attaching and seeding.
    #[must_use]
    pub fn first(&self) -> Snapshot {
        self.shared.lock().items[0].clone()
    }

    /// The newest snapshot.
    #[must_use]
    pub fn latest(&self) -> Snapshot {
        self.shared.lock().items.last().expect("at least the first snapshot").clone()
    }

    /// Waits for a snapshot printed after this call for which `check` is `Ok`, and returns
    /// it; panics with the last mismatch, the last snapshot's header and the stderr.
    pub fn wait_for(
        &self,
        what: &str,
        check: impl FnMut(&Snapshot) -> Result<(), String>,
    ) -> Snapshot {
        self.wait_for_within(WAIT, what, check)
    }

    /// [`Tracer::wait_for`] with a bound of its own, for states that must hold within a
    /// few snapshots of the step that made them (so a wrong count fails fast).
    pub fn wait_for_within(
        &self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&Snapshot) -> Result<(), String>,
    ) -> Snapshot {
        let mut next = self.shared.lock().items.len();
        let mut last_miss = String::from("(no snapshot printed since)");
        let found = self.wait_output(within, |out| {
            while let Some(snapshot) = out.items.get(next) {
                next += 1;
                match check(snapshot) {
                    Ok(()) => return Some(snapshot.clone()),
                    Err(miss) => {
                        last_miss = format!(
                            "snapshot at {:.1}s (backend {}, events {}, lost {}, live {}):\n{miss}",
                            snapshot.elapsed_s,
                            snapshot.backend,
                            snapshot.events,
                            snapshot.lost,
                            snapshot.live
                        );
                    }
                }
            }
            None
        });
        found.unwrap_or_else(|failure| self.fail_with(what, &failure, &last_miss))
    }

    /// `watch` of one network namespace only (`--netns`, so that nothing else on the box
    /// can move its counts or its drift), every row, reconciling every `reconcile_every`
    /// (`0s`: never), with `extra` arguments.
    #[must_use]
    pub fn watch_netns(ns: &Netns, reconcile_every: &str, extra: &[&str]) -> Self {
        let inode = ns.inode().to_string();
        let mut args = vec![
            "--netns",
            &inode,
            "--top",
            "0",
            "--interval",
            INTERVAL,
            "--reconcile-every",
            reconcile_every,
        ];
        args.extend(extra);
        Self::watch(&args)
    }

    /// `watch ARGS` with [`RECONCILE_OFTEN`].
    #[must_use]
    pub fn watch_reconciling(args: &[&str]) -> Self {
        let all: Vec<&str> = args.iter().copied().chain(RECONCILE_OFTEN).collect();
        Self::watch(&all)
    }

    /// The largest `drift` of every snapshot printed so far. Each snapshot reports the last
    /// reconciliation's drift, which the next one no longer shows once it is corrected,
    /// so a `wait_for` that checks drift may simply have waited one out.
    #[must_use]
    pub fn max_drift(&self) -> u64 {
        self.shared.lock().items.iter().map(|s| s.drift).max().unwrap_or(0)
    }

    /// Panics unless no snapshot so far reported a correction: `drift` 0 on every one and
    /// `drift_total` 0 on the newest (which also counts corrections between two snapshots).
    /// With reconciliation on, a connection the hooks missed or invented fails here even
    /// when the counts were corrected back in time for the test's own checks.
    pub fn assert_no_drift(&self, step: &str) {
        let (max, total, snapshots) = {
            let out = self.shared.lock();
            let max = out.items.iter().map(|s| s.drift).max().unwrap_or(0);
            let total = out.items.last().map_or(0, |s| s.drift_total);
            (max, total, out.items.len())
        };
        if max != 0 || total != 0 {
            self.fail(
                step,
                &format!(
                    "a reconciliation corrected the ledger: max drift {max}, drift_total {total} \
                     over {snapshots} snapshots (the hooks missed or invented a connection)"
                ),
            );
        }
    }

    /// Waits until the tracer prints `count` more snapshots; returns the last.
    pub fn next_snapshots(&self, count: usize) -> Snapshot {
        let mut seen = 0;
        self.wait_for(&format!("{count} more snapshots"), |_| {
            seen += 1;
            if seen >= count { Ok(()) } else { Err("counting".into()) }
        })
    }
}

impl Tracer<EventLine> {
    /// `tcptrace events --json --attach TCPTRACE_ATTACH`, keeping only the events whose
    /// local or remote port is one of `ports`; returned once `tcptrace: attached` is out.
    #[must_use]
    pub fn events(ports: &[u16]) -> Self {
        Self::events_with(&[], ports)
    }

    /// Like [`Tracer::events`], with more arguments (filters).
    #[must_use]
    pub fn events_with(extra: &[&str], ports: &[u16]) -> Self {
        let mut argv = ["events", "--json", "--attach", &attach_path()].map(str::to_owned).to_vec();
        argv.extend(extra.iter().map(|&a| a.to_owned()));
        let ports: BTreeSet<u16> = ports.iter().copied().collect();
        let tracer = Self::spawn(&argv, move |e: &EventLine| {
            ports.contains(&e.lport) || ports.contains(&e.rport)
        });
        if let Err(failure) =
            tracer.wait_output(ATTACH_WAIT, |out| has_attached_line(out).then_some(()))
        {
            tracer.fail_with("`tcptrace: attached` on stderr", &failure, "");
        }
        tracer
    }

    /// Waits until `check` is `Ok` over all the kept events; returns them.
    pub fn wait_events(
        &self,
        what: &str,
        mut check: impl FnMut(&[EventLine]) -> Result<(), String>,
    ) -> Vec<EventLine> {
        let mut last_miss = String::new();
        let mut checked = usize::MAX;
        let found = self.wait_output(WAIT, |out| {
            if out.items.len() == checked {
                return None;
            }
            checked = out.items.len();
            match check(&out.items) {
                Ok(()) => Some(out.items.clone()),
                Err(miss) => {
                    last_miss = format!("{} kept events: {miss}", out.items.len());
                    None
                }
            }
        });
        found.unwrap_or_else(|failure| {
            let events: String =
                self.shared.lock().items.iter().take(60).fold(String::new(), |mut s, e| {
                    let _ = writeln!(s, "{e:?}");
                    s
                });
            self.fail_with(what, &failure, &format!("{last_miss}\n{events}"))
        })
    }
}

impl<T> Drop for Tracer<T> {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}
