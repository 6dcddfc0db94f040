//! Process set-up and configuration: how long the tests wait, the binary under test and
//! the attach path it runs with (from the environment), and the one-time raise of the
//! open-file limit.

use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};
use std::time::Duration;

/// How long to wait for a condition. The VM runs on a software-emulated CPU, so this is
/// generous; every wait returns as soon as its condition holds.
pub const WAIT: Duration = Duration::from_mins(1);
/// How long the tracer may take to load, attach and seed (BTF parsing is slow under TCG).
pub const ATTACH_WAIT: Duration = Duration::from_mins(2);
/// The interval the tests ask `watch` for: short, so that waits end quickly.
pub const INTERVAL: &str = "200ms";

/// Once per process: raise the soft open-file limit to the hard one (a held loopback
/// connection costs two descriptors; the hard limit is 20000 on the host, 4096 in the VM).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit(NOFILE)");
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE");
        }
    });
}

/// The binary under test: `TCPTRACE_BIN`, or the workspace's debug build (said once).
pub fn tracer_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = if let Some(bin) = std::env::var_os("TCPTRACE_BIN") {
            PathBuf::from(bin)
        } else {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("the tests crate lives in the workspace");
            let bin = workspace.join("target/debug/tcptrace");
            eprintln!("TCPTRACE_BIN is not set: using {}", bin.display());
            bin
        };
        assert!(
            bin.is_file(),
            "tcptrace binary not found at {} (build it with `cargo build -p tcptrace` or set TCPTRACE_BIN)",
            bin.display()
        );
        bin
    })
}

/// The attach path the tests run with: `TCPTRACE_ATTACH`, default `auto`.
#[must_use]
pub fn attach_path() -> String {
    std::env::var("TCPTRACE_ATTACH").unwrap_or_else(|_| "auto".to_owned())
}
