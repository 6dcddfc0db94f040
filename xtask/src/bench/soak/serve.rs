//! The tracer under soak: `tcptrace serve`, started in a namespace of the soak's own (where
//! its HTTP side listens and is scraped), counting only the soak's namespace (`--netns`),
//! with a small ring so that the plan's bursts overflow it.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{sys::signal::Signal, unistd::Pid};
use tcptrace_netns::Netns;

use super::scrape::Scraper;

/// Where serve listens, in its own namespace (so never the host's 127.0.0.1:18080 or
/// anything else on the box).
pub(super) const ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);
/// The ring buffer: 2 MiB, half the default, so that a burst of unpaced churn on 8 threads
/// overflows it. Tried here with serve alone: at 1 MiB two workers connecting 9,000
/// connections each at once lost 2,697 events and at 256 KiB one paced churn run (2,000
/// connections in a few tens of ms) lost 5,274; at 2 MiB neither lost any, and the burst
/// lost 60,629 (4 MiB: 0).
pub(super) const RING_BYTES: u32 = 2 * 1024 * 1024;
/// How long serve may take to attach and seed before `/healthz` answers (a debug build
/// seeding from a busy box takes a few seconds).
const READY_WITHIN: Duration = Duration::from_mins(2);

pub(super) struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    /// Starts serve and waits until `/healthz` answers 200. It stops by itself after
    /// `bound` (`--duration`) if the soak could not stop it, and dies with the thread that
    /// started it (`PR_SET_PDEATHSIG`), which lives as long as the soak.
    pub(super) fn start(
        tcptrace: &Path,
        serve_netns: &Netns,
        soak_netns: u32,
        bound: Duration,
        log: &Path,
        scraper: &Scraper,
    ) -> Result<Self> {
        let args = serve_args(soak_netns, bound);
        say!("soak: running: {} {}", tcptrace.display(), args.join(" "));
        let stderr = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let exe = tcptrace.to_owned();
        let child = serve_netns
            .run(move || {
                let mut command = Command::new(exe);
                command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
                // SAFETY: prctl is async-signal-safe and the closure allocates nothing.
                unsafe {
                    command.pre_exec(|| {
                        nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(Into::into)
                    });
                }
                command.spawn()
            })
            .context("starting `tcptrace serve`")?;
        let mut serve = Self { child, log: log.to_owned() };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = serve.exited() {
                bail!(
                    "tcptrace serve exited with {status} before answering: {}",
                    serve.last_words()
                );
            }
            if matches!(scraper.get("/healthz"), Ok((200, _))) {
                return Ok(serve);
            }
            if Instant::now() >= deadline {
                bail!(
                    "tcptrace serve did not answer /healthz within {} s: {}",
                    READY_WITHIN.as_secs(),
                    serve.last_words()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, if it has.
    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last line it wrote on stderr.
    pub(super) fn last_words(&self) -> String {
        std::fs::read_to_string(&self.log)
            .ok()
            .and_then(|s| s.lines().last().map(str::to_owned))
            .unwrap_or_else(|| "(nothing on stderr)".into())
    }

    /// SIGTERM, as a service manager stops it, then SIGKILL if it is not gone in 30 s.
    pub(super) fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        let pid = Pid::from_raw(i32::try_from(self.pid()).ok()?);
        // Our own child, by its id.
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn serve_args(soak_netns: u32, bound: Duration) -> Vec<String> {
    vec![
        "serve".into(),
        "--listen".into(),
        ADDR.to_string(),
        "--netns".into(),
        soak_netns.to_string(),
        "--ring-size".into(),
        RING_BYTES.to_string(),
        "--interval".into(),
        "1s".into(),
        "--duration".into(),
        format!("{}s", bound.as_secs()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_counts_only_the_soak_and_stops_by_itself() {
        let args = serve_args(4_026_532_999, Duration::from_mins(5)).join(" ");
        assert_eq!(
            args,
            "serve --listen 127.0.0.1:9464 --netns 4026532999 --ring-size 2097152 --interval 1s \
             --duration 300s"
        );
    }
}
