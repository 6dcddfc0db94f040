//! What the running kernel offers, each probed once per attach and kept: kernel BTF (for
//! offsets, and for loading fentry and tp_btf programs), tracefs (mounted if missing) and
//! the `syscalls:` tracepoints.
//!
//! A probe answers as cilium/ebpf's do: supported, not supported (this kernel lacks it,
//! and why), or could not tell (something else failed first, and what).
//!
//! The BTF is read by two libraries, on purpose: aya's `Btf` is what programs are loaded
//! against, but it has no public way to walk a struct's members; btf-rs maps the file and
//! parses only the handful of types the offsets need. aya's is parsed only when a path that
//! loads against it is tried.

use std::cell::{OnceCell, RefCell};

use super::{
    btf::{BtfError, KernelBtf},
    tracefs::{Tracefs, TracefsError},
};

/// A probe's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    Supported,
    /// The kernel lacks it: why.
    NotSupported(String),
    /// Could not tell: what failed first.
    Unknown(String),
}

impl Support {
    /// `Ok` when supported; else the reason, for a note or an error.
    pub fn ok(self) -> Result<(), String> {
        match self {
            Self::Supported => Ok(()),
            Self::NotSupported(why) | Self::Unknown(why) => Err(why),
        }
    }
}

/// The probes of one attach: each runs the first time it is asked.
#[derive(Default)]
pub struct Probes {
    kernel_btf: OnceCell<Result<KernelBtf, BtfError>>,
    aya_btf: OnceCell<Option<aya::Btf>>,
    tracefs: OnceCell<Result<Tracefs, TracefsError>>,
    /// What the user should hear about the probing itself (tracefs was mounted).
    notes: RefCell<Vec<String>>,
}

impl Probes {
    /// The running kernel's BTF, for the offsets the programs read.
    pub fn kernel_btf(&self) -> Result<&KernelBtf, &BtfError> {
        self.kernel_btf
            .get_or_init(|| {
                let t0 = std::time::Instant::now();
                let btf = KernelBtf::load();
                log::debug!("kernel BTF ready in {:?}", t0.elapsed());
                btf
            })
            .as_ref()
    }

    /// The running kernel's BTF as aya loads programs against it; `None` without BTF.
    pub fn aya_btf(&self) -> Option<&aya::Btf> {
        self.aya_btf
            .get_or_init(|| {
                let t0 = std::time::Instant::now();
                let btf = aya::Btf::from_sys_fs()
                    .inspect_err(|e| log::debug!("aya cannot read kernel BTF: {e}"))
                    .ok();
                log::debug!("aya BTF parsed in {:?}", t0.elapsed());
                btf
            })
            .as_ref()
    }

    /// tracefs, mounted at /sys/kernel/tracing if it was not mounted (and left mounted:
    /// other tools expect it there).
    pub fn tracefs(&self) -> Result<&Tracefs, &TracefsError> {
        self.tracefs
            .get_or_init(|| {
                let tracefs = Tracefs::ensure();
                if let Ok(t) = &tracefs
                    && t.mounted_by_us
                {
                    self.notes.borrow_mut().push(format!(
                        "mounted tracefs at {} (it was not mounted)",
                        t.root.display()
                    ));
                }
                tracefs
            })
            .as_ref()
    }

    /// Whether `syscalls:NAME` exists (`CONFIG_FTRACE_SYSCALLS`).
    pub fn syscall_tracepoint(&self, name: &str) -> Support {
        match self.tracefs() {
            Ok(t) if t.root.join("events/syscalls").join(name).is_dir() => Support::Supported,
            Ok(_) => Support::NotSupported(format!(
                "no syscalls:{name} tracepoint (CONFIG_FTRACE_SYSCALLS)"
            )),
            Err(e) => Support::Unknown(e.to_string()),
        }
    }

    /// The notes gathered so far, once.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut self.notes.borrow_mut())
    }
}
