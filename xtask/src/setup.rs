//! `cargo xtask setup`: installs what building and testing needs, and only what is missing.

use std::{
    env, fmt,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{cargo, cmd};

#[derive(Args, Debug, Default)]
pub struct SetupArgs {
    /// Only report what is missing (exit 1 if anything is); install nothing.
    #[arg(long)]
    pub check: bool,
}

/// apt packages, and why each is needed.
const APT_PACKAGES: [(&str, &str); 8] = [
    ("llvm-22-dev", "bpf-linker is built against LLVM 22"),
    ("libzstd-dev", "bpf-linker links it"),
    ("zlib1g-dev", "bpf-linker links it"),
    ("qemu-system-x86", "the VM tier boots a 6.1 kernel with it"),
    ("busybox-static", "the VM tier's userland"),
    ("cpio", "to list the VM initramfs: cpio -itv < target/vm/initramfs.cpio"),
    ("iproute2", "ip and ss, for the tests and inside the VM"),
    ("tmux", "the live test of `tcptrace top` drives it in a real terminal"),
];

/// bpf-linker must match the LLVM 22 that rustc 1.95 and the nightly use.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn setup(args: &SetupArgs) -> Result<()> {
    let missing = ensure(args.check)?;
    if args.check && missing > 0 {
        bail!("{missing} item(s) missing; `cargo xtask setup` (as root) installs them");
    }
    Ok(())
}

/// Checks every prerequisite and installs the missing ones (unless `check_only`). Returns
/// how many were missing.
pub fn ensure(check_only: bool) -> Result<usize> {
    say!("setup: checking apt packages, nightly rust-src and bpf-linker {BPF_LINKER_VERSION}");
    let mut missing = 0;
    missing += apt_packages(check_only)?;
    missing += rust_src(check_only)?;
    missing += bpf_linker(check_only)?;
    if missing == 0 {
        say!("setup: everything is already installed");
    }
    Ok(missing)
}

fn apt_packages(check_only: bool) -> Result<usize> {
    if cmd::on_path("dpkg-query").is_none() {
        bail!(
            "dpkg-query not found: this xtask installs with apt (Debian 12). Install these \
             yourself: {}",
            APT_PACKAGES.map(|(name, _)| name).join(" ")
        );
    }
    let (present, missing): (Vec<_>, Vec<_>) =
        APT_PACKAGES.iter().partition(|(name, _)| dpkg_installed(name));
    if !present.is_empty() {
        say!(
            "setup: skipping apt packages already installed: {}",
            present.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(" ")
        );
    }
    if missing.is_empty() {
        return Ok(0);
    }
    for (name, why) in &missing {
        say!("setup: missing apt package {name} ({why})");
    }
    let names: Vec<&str> = missing.iter().map(|(name, _)| *name).collect();
    if check_only {
        return Ok(missing.len());
    }
    if !cmd::is_root() {
        bail!(
            "installing apt packages needs root: run `cargo xtask setup` as root, or run \
             `apt-get install -y {}` yourself",
            names.join(" ")
        );
    }
    apt_update_once()?;
    let mut install = apt_get();
    install.args(["install", "-y", "--no-install-recommends"]).args(&names);
    cmd::run(&mut install).with_context(|| {
        format!(
            "installing {} failed; llvm-22-dev comes from Debian's bookworm-security suite: check \
             that /etc/apt/sources.list(.d) lists `deb http://deb.debian.org/debian-security \
             bookworm-security main` and that the network is up",
            names.join(" ")
        )
    })?;
    Ok(missing.len())
}

fn dpkg_installed(package: &str) -> bool {
    cmd::query(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.trim() == "install ok installed")
}

/// `apt-get` that never prompts and gives up on a dead mirror instead of hanging.
pub fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
        "-o",
        "Acquire::Retries=3",
        "-o",
        "Acquire::http::Timeout=60",
    ]);
    cmd
}

/// Runs `apt-get update` at most once per xtask run.
pub fn apt_update_once() -> Result<()> {
    static UPDATED: AtomicBool = AtomicBool::new(false);
    if UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    say!("setup: refreshing the apt package lists (once)");
    cmd::run(apt_get().arg("update"))
        .context("`apt-get update` failed: check the network and apt sources")
}

fn rust_src(check_only: bool) -> Result<usize> {
    let installed = cmd::query(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    let Some(installed) = installed else {
        bail!(
            "`rustup component list --toolchain nightly --installed` failed: the eBPF crate \
             builds with rustup's nightly toolchain; install rustup and run `rustup toolchain \
             install nightly --profile minimal --component rust-src`"
        );
    };
    if installed
        .lines()
        .any(|line| line.trim() == "rust-src" || line.trim().starts_with("rust-src-"))
    {
        say!("setup: skipping rust-src for nightly: already installed");
        return Ok(0);
    }
    say!(
        "setup: missing rust-src for nightly (-Z build-std=core needs it to build the eBPF crate)"
    );
    if !check_only {
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("adding rust-src to the nightly toolchain failed: check the network")?;
    }
    Ok(1)
}

fn bpf_linker(check_only: bool) -> Result<usize> {
    let wanted = BPF_LINKER_VERSION.rsplit_once('.').map_or(BPF_LINKER_VERSION, |(minor, _)| minor);
    let found = bpf_linker_version();
    match &found {
        Some(linker) if version_matches(&linker.version, wanted) => {
            say!("setup: skipping bpf-linker: {linker} is installed");
            return Ok(0);
        }
        Some(linker) => say!(
            "setup: found {linker}, but bpf-linker {wanted}.x is needed{}",
            if check_only { "" } else { "; reinstalling" }
        ),
        None => say!("setup: missing bpf-linker (links the eBPF object)"),
    }
    if check_only {
        return Ok(1);
    }
    say!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (one to three minutes)");
    let mut install = cargo::cargo();
    // Outside the workspace, so its .cargo/config.toml cannot change how bpf-linker builds.
    install
        .current_dir(env::temp_dir())
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked"])
        .args(["--no-default-features", "--features", "llvm-22"]);
    if found.is_some() {
        install.arg("--force");
    }
    cmd::run(&mut install).with_context(|| {
        format!(
            "building bpf-linker failed: it needs llvm-22-dev, libzstd-dev and zlib1g-dev (apt) \
             and LLVM_PREFIX={LLVM_PREFIX}; without LLVM_PREFIX it picks an older llvm-config"
        )
    })?;
    let bin =
        cmd::cargo_bin_dir().map_or_else(|| "$CARGO_HOME/bin".into(), |d| d.display().to_string());
    match bpf_linker_version() {
        Some(linker) if version_matches(&linker.version, wanted) => {
            say!("setup: installed {linker}");
            Ok(1)
        }
        Some(linker) => bail!(
            "`cargo install` put bpf-linker {BPF_LINKER_VERSION} in {bin}, but the first on PATH \
             is still {linker}: put {bin} before it on PATH, or remove it"
        ),
        None => bail!("`cargo install` succeeded but bpf-linker is not on PATH: add {bin} to PATH"),
    }
}

/// A bpf-linker found on the (widened) PATH.
struct Linker {
    path: PathBuf,
    /// What `--version` said, e.g. `0.13.0`.
    version: String,
}

impl fmt::Display for Linker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bpf-linker {} ({})", self.version, self.path.display())
    }
}

/// The first bpf-linker on PATH and the version it reports (`bpf-linker 0.13.0`).
fn bpf_linker_version() -> Option<Linker> {
    let path = cmd::on_path("bpf-linker")?;
    let out = cmd::query(Command::new(&path).arg("--version"))?;
    let version = out.split_whitespace().nth(1).unwrap_or("(unknown version)").to_owned();
    Some(Linker { path, version })
}

/// Whether `version` (e.g. `0.13.2`) is in the `wanted` minor series (e.g. `0.13`).
fn version_matches(version: &str, wanted: &str) -> bool {
    version == wanted || version.strip_prefix(wanted).is_some_and(|rest| rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_linker_version_must_be_0_13() {
        assert!(version_matches("0.13.0", "0.13"));
        assert!(version_matches("0.13.2", "0.13"));
        assert!(!version_matches("0.130.0", "0.13"));
        assert!(!version_matches("0.9.13", "0.13"));
        assert!(!version_matches("(unknown version)", "0.13"));
    }
}
