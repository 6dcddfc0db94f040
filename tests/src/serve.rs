//! `tcptrace serve` as the tests run it: a child process on a free loopback port, and the
//! plain HTTP requests they make to it (and to the Prometheus server that scrapes it).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tcptrace_json::metrics;

use crate::limits::limit_open_files;
use crate::{ATTACH_WAIT, INTERVAL, WAIT, attach_path, tracer_bin};

/// `tcptrace serve` as a child process, killed on drop; its stderr is kept.
pub struct Serve {
    child: Mutex<Child>,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    /// Starts it on a free loopback port and waits until /healthz answers 200.
    #[must_use]
    pub fn start(extra: &[&str]) -> Self {
        Self::start_under(None, extra)
    }

    /// [`Serve::start`] with its open-file limit (soft and hard) set to `nofile` in the
    /// child before it runs, when given.
    #[must_use]
    pub fn start_under(nofile: Option<u64>, extra: &[&str]) -> Self {
        let addr = free_loopback_port();
        let attach = attach_path();
        let listen = addr.to_string();
        let mut args = vec!["serve", "--listen", &listen, "--attach", &attach];
        args.extend(["--interval", INTERVAL, "--reconcile-every", "1s"]);
        args.extend(extra);
        println!(
            "  running: {}{} {}",
            nofile.map_or_else(String::new, |n| format!("(RLIMIT_NOFILE {n}) ")),
            tracer_bin().display(),
            args.join(" ")
        );
        let mut command = Command::new(tracer_bin());
        if let Some(limit) = nofile {
            limit_open_files(&mut command, limit);
        }
        let mut child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcptrace serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = Arc::clone(&stderr);
            let mut pipe = child.stderr.take().expect("piped stderr");
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    stderr.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let serve = Self { child: Mutex::new(child), addr, stderr };
        let deadline = Instant::now() + ATTACH_WAIT;
        loop {
            if let Ok(Some(status)) = serve.child_status() {
                panic!("tcptrace serve exited with {status}: {}", serve.stderr());
            }
            if let Ok((200, _)) = get(addr, "/healthz") {
                return serve;
            }
            assert!(
                Instant::now() < deadline,
                "no /healthz within {ATTACH_WAIT:?}: {}",
                serve.stderr()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn child_status(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.lock().unwrap().try_wait()
    }

    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The current metrics, `name{labels}` → value.
    #[must_use]
    pub fn scrape(&self) -> BTreeMap<String, f64> {
        let (status, body) = get(self.addr, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        metrics::samples(&body).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Scrapes until `check` passes; panics with the last failure after [`WAIT`].
    pub fn wait_for(
        &self,
        what: &str,
        mut check: impl FnMut(&BTreeMap<String, f64>) -> Result<(), String>,
    ) -> BTreeMap<String, f64> {
        let deadline = Instant::now() + WAIT;
        loop {
            let metrics = self.scrape();
            match check(&metrics) {
                Ok(()) => return metrics,
                Err(why) if Instant::now() >= deadline => {
                    panic!("{what}: not within {WAIT:?}: {why}\nstderr: {}", self.stderr())
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A loopback port nobody listens on now (never 18080, which is busy and not ours).
#[must_use]
pub fn free_loopback_port() -> SocketAddr {
    loop {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe listener");
        let addr = probe.local_addr().expect("probe address");
        if addr.port() != 18080 {
            return addr;
        }
    }
}

/// A plain HTTP/1.0 GET: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    get_within(addr, path, Duration::from_secs(30))
}

/// [`get`], failing if the answer takes longer than `bound` (to connect, and to read).
pub fn get_within(addr: SocketAddr, path: &str, bound: Duration) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, bound.min(Duration::from_secs(5)))?;
    stream.set_read_timeout(Some(bound))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// The labels of a listener's series, as `serve` writes them (without the braces).
#[must_use]
pub fn listener_labels(netns: u32, listener: SocketAddr) -> String {
    format!("netns=\"{netns}\",addr=\"{}\",port=\"{}\"", listener.ip(), listener.port())
}

/// The labels of a destination's series, from `laddr` to `to`, as `serve` writes them.
#[must_use]
pub fn destination_labels(netns: u32, laddr: std::net::IpAddr, to: SocketAddr) -> String {
    format!("netns=\"{netns}\",laddr=\"{laddr}\",raddr=\"{}\",rport=\"{}\"", to.ip(), to.port())
}
