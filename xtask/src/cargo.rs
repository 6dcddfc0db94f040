//! Building the workspace's artifacts and finding where cargo put them (from cargo's JSON
//! messages, so a custom target directory works too).

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::cmd;

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

/// A `cargo` command run from the workspace root, by the same cargo that runs xtask, with
/// PATH widened so a freshly installed bpf-linker is found.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root()).env("PATH", cmd::tool_path());
    cmd
}

/// The build profile of the binaries the live tests drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    fn add_flag(self, cmd: &mut Command) {
        if self == Self::Release {
            cmd.arg("--release");
        }
    }
}

/// cargo's target directory (honours `CARGO_TARGET_DIR` and `build.target-dir`).
pub fn target_dir() -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["metadata", "--format-version", "1", "--no-deps"]);
    let json = cmd::output(&mut cmd)?;
    let metadata: Value = serde_json::from_str(&json).context("parsing `cargo metadata`")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` names no target_directory")
}

/// Builds the `tcptrace` binary and returns its absolute path.
pub fn build_tcptrace(profile: Profile) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "-p",
        "tcptrace",
        "--bin",
        "tcptrace",
        "--message-format=json-render-diagnostics",
    ]);
    profile.add_flag(&mut cmd);
    let artifacts = build(&mut cmd)?;
    artifacts
        .into_iter()
        .find(|a| a.target_name == "tcptrace" && a.kinds.iter().any(|k| k == "bin"))
        .and_then(|a| a.executable)
        .context("cargo built no `tcptrace` executable")
}

/// A test executable of the live-test package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestExe {
    /// `lib` or `test` (an integration test file) and the target's name, e.g. `test/live`.
    pub name: String,
    pub path: PathBuf,
}

/// Builds the live tests (`cargo test -p tcptrace-tests --no-run`) and returns every test
/// executable, in cargo's order.
pub fn build_live_tests(profile: Profile) -> Result<Vec<TestExe>> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "tcptrace-tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    profile.add_flag(&mut cmd);
    Ok(build(&mut cmd)?
        .into_iter()
        .filter(|a| a.test)
        .filter_map(|a| {
            let kind = a.kinds.first().cloned().unwrap_or_default();
            a.executable.map(|path| TestExe { name: format!("{kind}/{}", a.target_name), path })
        })
        .collect())
}

fn build(cmd: &mut Command) -> Result<Vec<Artifact>> {
    say!("running: {}", cmd::display(cmd));
    // Diagnostics are rendered on stderr (inherited); stdout carries one JSON message a line.
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{}`", cmd::display(cmd)))?;
    if !output.status.success() {
        bail!("`{}` failed ({}): see the compiler output above", cmd::display(cmd), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).lines().filter_map(Artifact::parse).collect())
}

/// The parts of a `compiler-artifact` message we use.
#[derive(Debug, Default, PartialEq, Eq)]
struct Artifact {
    target_name: String,
    kinds: Vec<String>,
    /// Built with `--test` (a test harness), whatever the target kind.
    test: bool,
    executable: Option<PathBuf>,
}

impl Artifact {
    fn parse(line: &str) -> Option<Self> {
        let message: Value = serde_json::from_str(line).ok()?;
        if message["reason"] != "compiler-artifact" {
            return None;
        }
        let target = &message["target"];
        Some(Self {
            target_name: target["name"].as_str()?.to_owned(),
            kinds: target["kind"]
                .as_array()
                .map(|kinds| kinds.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            test: message["profile"]["test"].as_bool().unwrap_or(false),
            executable: message["executable"].as_str().map(PathBuf::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_test_executables_from_cargo_json() {
        let lines = [
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#tcptrace-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"tcptrace_tests","src_path":"/w/tests/src/lib.rs","edition":"2024","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/w/target/debug/deps/tcptrace_tests-0a1b"],"executable":"/w/target/debug/deps/tcptrace_tests-0a1b","fresh":true}"#,
            r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#libc@0.2.177","target":{"kind":["lib"],"crate_types":["lib"],"name":"libc","test":true},"profile":{"test":false},"filenames":["/w/target/debug/deps/liblibc-1.rlib"],"executable":null,"fresh":true}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"crate_types":["bin"],"name":"live","test":true},"profile":{"test":true},"executable":"/w/target/debug/deps/live-9f","fresh":false}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "not json at all",
        ];
        let artifacts: Vec<Artifact> = lines.iter().copied().filter_map(Artifact::parse).collect();
        assert_eq!(artifacts.len(), 3);
        let tests: Vec<_> = artifacts.iter().filter(|a| a.test && a.executable.is_some()).collect();
        assert_eq!(tests.len(), 2);
        assert_eq!(tests[0].target_name, "tcptrace_tests");
        assert_eq!(tests[1].kinds, ["test"]);
        assert_eq!(tests[1].executable.as_deref(), Some(Path::new("/w/target/debug/deps/live-9f")));
    }

    #[test]
    fn finds_the_workspace_root() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
    }
}
