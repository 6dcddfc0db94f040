//! Running other programs. A command that changes something is announced before it runs;
//! a failure names the command and its exit status.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The command line as a user could paste it, with the environment it sets (but PATH,
/// which we only widen).
pub fn display(cmd: &Command) -> String {
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        if key == "PATH" {
            continue;
        }
        if let Some(value) = value {
            line.push_str(&quote(key));
            line.push('=');
            line.push_str(&quote(value));
            line.push(' ');
        }
    }
    // The cargo running xtask is a long toolchain path; `cargo` reads better.
    let program = Path::new(cmd.get_program());
    if program.file_name().is_some_and(|name| name == "cargo") {
        line.push_str("cargo");
    } else {
        line.push_str(&quote(program));
    }
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn quote(word: impl AsRef<OsStr>) -> String {
    let word = word.as_ref().to_string_lossy();
    let plain = !word.is_empty()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./,:=+@%".contains(c));
    if plain { word.into_owned() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

/// Announces and runs `cmd` with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    say!("running: {}", display(cmd));
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` with inherited stdio and returns how it ended (spawn errors are errors).
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status().with_context(|| format!("cannot start `{}`", display(cmd)))
}

/// Runs a query quietly: its stdout if it ran and exited 0, `None` otherwise (not
/// installed, or it said no).
pub fn query(cmd: &mut Command) -> Option<String> {
    let output = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `cmd` quietly and returns its stdout; fails with its stderr unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Announces and runs `cmd`, copying its stdout to ours line by line and handing each line
/// to `on_line` (stderr is inherited). Returns how it ended.
pub fn stream(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> Result<ExitStatus> {
    say!("running: {}", display(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                println!("{line}");
                on_line(line);
            }
            Err(error) => {
                say!("warning: reading the output of `{}`: {error}", display(cmd));
                break;
            }
        }
    }
    child.wait().with_context(|| format!("waiting for `{}`", display(cmd)))
}

/// Waits for `child` to exit, for at most `bound`; past it, or when it cannot be waited
/// for, kills it (our own child, by its handle) and reaps it. `None` when it had to be
/// killed at the bound.
pub fn wait_bounded(child: &mut Child, bound: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + bound;
    let kill = |child: &mut Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                kill(child);
                return Ok(None);
            }
            Err(error) => {
                kill(child);
                return Err(error);
            }
        }
    }
}

/// Whether a program of that name is on PATH (as widened by [`tool_path`]).
pub fn on_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&tool_path())
        .map(|dir| dir.join(program))
        .find(|candidate| fs::metadata(candidate).is_ok_and(|meta| meta.is_file()))
}

/// PATH with cargo's bin directory (`$CARGO_HOME/bin`, where `cargo install` puts
/// bpf-linker) appended if it is missing, so a fresh install is found without a new shell.
pub fn tool_path() -> OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    if let Some(bin) = cargo_bin_dir()
        && !dirs.contains(&bin)
    {
        dirs.push(bin);
    }
    env::join_paths(dirs).unwrap_or(current)
}

/// `$CARGO_HOME/bin`, or `~/.cargo/bin`.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// Effective user id and effective capability set of this process, from /proc.
pub fn credentials() -> (Option<u32>, Option<u64>) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_credentials(&status)
}

fn parse_credentials(status: &str) -> (Option<u32>, Option<u64>) {
    let mut euid = None;
    let mut caps = None;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            euid = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok());
        } else if let Some(rest) = line.strip_prefix("CapEff:") {
            caps = u64::from_str_radix(rest.trim(), 16).ok();
        }
    }
    (euid, caps)
}

pub fn is_root() -> bool {
    credentials().0 == Some(0)
}

/// Whether this process may load and attach tracing eBPF programs: `CAP_BPF` and
/// `CAP_PERFMON` (Linux 5.8+), or `CAP_SYS_ADMIN`, which covers both.
pub fn may_load_bpf() -> bool {
    credentials().1.is_some_and(caps_allow_bpf)
}

fn caps_allow_bpf(caps: u64) -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let has = |cap: u32| caps & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_wait_kills_and_reaps_a_child_past_its_bound() {
        let mut quick = Command::new("true").spawn().unwrap();
        let status = wait_bounded(&mut quick, Duration::from_secs(10)).unwrap();
        assert!(status.is_some_and(|s| s.success()), "{status:?}");

        let mut slow = Command::new("sleep").arg("30").spawn().unwrap();
        let started = Instant::now();
        assert_eq!(wait_bounded(&mut slow, Duration::from_millis(200)).unwrap(), None);
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        // Killed and reaped: nothing is left to wait for.
        assert!(slow.try_wait().unwrap().is_some(), "the child was reaped");
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("cargo"), "cargo");
        assert_eq!(quote("--features=llvm-22"), "--features=llvm-22");
        assert_eq!(quote("${Status}"), "'${Status}'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn displays_env_but_not_path() {
        let mut cmd = Command::new("cargo");
        cmd.args(["install", "bpf-linker"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("PATH", "/x");
        assert_eq!(display(&cmd), "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker");
    }

    #[test]
    fn parses_uid_and_caps() {
        let status = "Name:\tcat\nUid:\t1000\t0\t0\t0\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_credentials(status), (Some(0), Some(0x01ff_ffff_ffff)));
        assert!(caps_allow_bpf(0x01ff_ffff_ffff));
        assert!(caps_allow_bpf(1 << 21));
        assert!(caps_allow_bpf((1 << 38) | (1 << 39)));
        assert!(!caps_allow_bpf(1 << 39));
        assert!(!caps_allow_bpf(0));
    }

    #[test]
    fn tool_path_keeps_the_current_path_first() {
        let path = tool_path();
        let current = env::var_os("PATH").unwrap_or_default();
        assert!(path.to_string_lossy().starts_with(&*current.to_string_lossy()));
    }
}
