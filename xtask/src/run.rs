//! `cargo xtask run`: set up, build tcptrace in release mode, and become it.

use std::{
    ffi::OsString,
    os::unix::process::CommandExt as _,
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result};

use crate::{
    cargo::{self, Profile},
    cmd, setup,
};

pub fn run(args: &[OsString]) -> Result<ExitCode> {
    setup::ensure(false)?;
    let binary = cargo::build_tcptrace(Profile::Release)?;
    if !cmd::may_load_bpf() {
        say!(
            "note: tcptrace needs root, or CAP_BPF and CAP_PERFMON, to load its eBPF programs; trying anyway"
        );
    }
    let mut tcptrace = Command::new(&binary);
    tcptrace.args(args);
    if args.is_empty() {
        say!("running {} (no arguments: its default view, `watch`)", binary.display());
    } else {
        say!("running {}", cmd::display(&tcptrace));
    }
    // exec replaces this process: Ctrl-C and the exit code belong to tcptrace alone.
    let error = tcptrace.exec();
    Err(error).with_context(|| format!("cannot execute {}", binary.display()))
}
