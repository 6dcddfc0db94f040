//! The kernel's own readings of a listener's limits, taken inside a test's namespace for
//! the limits tests to compare tcptrace's rows against: `ss -ltmn` (accept queue, backlog,
//! drops), `/proc/net/netstat` (what `nstat` reads), and a `tcptrace load hold` server
//! started under a low `RLIMIT_NOFILE`.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};

use crate::{Netns, tracer_bin};

/// What `ss -ltmn` says of one listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsListener {
    /// Recv-Q: the accept queue now.
    pub recv_q: u64,
    /// Send-Q: the backlog.
    pub send_q: u64,
    /// `skmem:(…,dN)`: the socket's drops.
    pub drops: u64,
}

/// `ss -ltmn` in `ns`, the listener on `addr`; `None` if there is none.
#[must_use]
pub fn ss_listener(ns: &Netns, addr: SocketAddr) -> Option<SsListener> {
    let out = ns.run(|| Command::new("ss").args(["-ltmnH"]).output().expect("run ss"));
    assert!(out.status.success(), "ss: {}", String::from_utf8_lossy(&out.stderr));
    parse_ss(&String::from_utf8_lossy(&out.stdout), addr)
}

fn parse_ss(text: &str, addr: SocketAddr) -> Option<SsListener> {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"LISTEN") || words.get(3) != Some(&addr.to_string().as_str()) {
            continue;
        }
        let skmem = lines.next()?;
        let drops = skmem.split([',', '(', ')']).find_map(|w| w.trim().strip_prefix('d'))?;
        return Some(SsListener {
            recv_q: words[1].parse().ok()?,
            send_q: words[2].parse().ok()?,
            drops: drops.parse().ok()?,
        });
    }
    None
}

/// A `TcpExt` counter of `ns` (`nstat -a` would print the same; a fresh namespace starts
/// at 0, so the total is the delta since it was made).
#[must_use]
pub fn tcp_ext(ns: &Netns, name: &'static str) -> u64 {
    let text = ns.run(|| fs::read_to_string("/proc/thread-self/net/netstat").expect("netstat"));
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().expect("TcpExt names"), lines.next().expect("values"));
    let at = names.split_whitespace().position(|n| n == name).expect("a known counter");
    values.split_whitespace().nth(at).expect("a value").parse().expect("a number")
}

/// Sets `command`'s `RLIMIT_NOFILE`, soft and hard, to `nofile` in the child before it
/// runs: no `prlimit(1)` needed (the VM tier's initramfs has no util-linux).
pub fn limit_open_files(command: &mut Command, nofile: u64) {
    use nix::sys::resource::{Resource, setrlimit};
    // SAFETY: setrlimit is async-signal-safe, and the closure allocates nothing.
    unsafe {
        command.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile).map_err(std::io::Error::from)
        });
    }
}

/// A `tcptrace load hold --listen addr` server in `ns`, started with soft and hard
/// `RLIMIT_NOFILE` of `nofile`: it accepts until `accept()` fails with `EMFILE`, then
/// leaves the rest in its accept queue. Killed on drop.
pub struct LimitedServer(Child);

impl LimitedServer {
    #[must_use]
    pub fn start(ns: &Netns, addr: SocketAddr, nofile: u64) -> Self {
        let bin = tracer_bin().to_owned();
        let child = ns.run(move || {
            let mut server = Command::new(bin);
            limit_open_files(&mut server, nofile);
            server
                .args(["load", "hold", "--listen", &addr.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn tcptrace load hold with its RLIMIT_NOFILE")
        });
        Self(child)
    }

    /// The server's pid.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Its open fds numbered below its soft `RLIMIT_NOFILE` (an fd inherited from this
    /// test above the limit takes no place under it), and that limit, as `/proc` says now.
    #[must_use]
    pub fn fds(&self) -> (u64, u64) {
        let limits = fs::read_to_string(format!("/proc/{}/limits", self.pid())).expect("limits");
        let soft: u64 = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .expect("a soft limit");
        let fds = fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("fds");
        let below = fds
            .map(|fd| {
                fd.expect("fd").file_name().to_string_lossy().parse::<u64>().expect("fd number")
            })
            .filter(|&n| n < soft)
            .count();
        (below as u64, soft)
    }
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_listener_of_ss() {
        let text = "LISTEN 5      4      127.91.0.1:22191      0.0.0.0:*\n\
                    \t skmem:(r0,rb131072,t0,tb16384,f0,w0,o0,bl0,d7)\n\
                    LISTEN 0      4096   127.0.0.1:22      0.0.0.0:*\n\
                    \t skmem:(r0,rb131072,t0,tb16384,f0,w0,o0,bl0,d0)\n";
        let addr = "127.91.0.1:22191".parse().unwrap();
        assert_eq!(parse_ss(text, addr), Some(SsListener { recv_q: 5, send_q: 4, drops: 7 }));
        assert_eq!(parse_ss(text, "127.91.0.1:1".parse().unwrap()), None);
    }
}
