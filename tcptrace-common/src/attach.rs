//! The attach paths, as data: which programs each one loads, on which kernel hooks, what
//! it needs from the kernel, and the names it goes by.
//!
//! This is the one list of them. tcptrace's attach chain walks it (in this order for
//! `--attach auto`), `--version` prints it, the README's table is checked against it, and
//! xtask's test tiers take their `TCPTRACE_ATTACH` names from it. It lives in the wire
//! crate because that is the crate every binary of the workspace can depend on without
//! pulling in aya.

/// A way of hooking the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    Fentry,
    Kprobe,
    TpBtf,
    Tracepoint,
}

/// What kind of BPF program a hook is, and so how it is loaded and attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// fentry on a kernel function (BTF trampoline).
    Fentry(&'static str),
    /// kprobe on a kernel function.
    Kprobe(&'static str),
    /// BTF-typed raw tracepoint.
    TpBtf(&'static str),
    /// Classic tracepoint through tracefs: (category, name).
    Tracepoint(&'static str, &'static str),
}

/// One program of a path: the BPF function's name in tcptrace-ebpf, and its hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    pub name: &'static str,
    pub hook: Hook,
}

/// What a path needs from the running kernel besides the BPF ring buffer (Linux 5.8+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `/sys/kernel/btf/vmlinux`: the `struct sock` offsets, and the types fentry and
    /// tp_btf attach by.
    Btf,
    /// BPF trampolines that tracing is allowed to use (not locked down).
    FunctionTracing,
    /// `CONFIG_KPROBES`.
    Kprobes,
    /// tracefs (mounted by tcptrace if it is not) for the classic tracepoint's format.
    Tracefs,
}

/// One attach path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathInfo {
    pub path: Path,
    /// As tcptrace prints it: `attached via NAME`, and `backend` in its JSON.
    pub name: &'static str,
    /// The `--attach` value that forces this path and no other.
    pub request: &'static str,
    pub programs: &'static [Program],
    pub needs: &'static [Need],
    /// The oldest kernel (major, minor) it loads on: every path needs the ring buffer
    /// (5.8), which is newer than trampolines (5.5) and the state tracepoint (4.16).
    pub min_kernel: (u16, u16),
}

const fn program(name: &'static str, hook: Hook) -> Program {
    Program { name, hook }
}

/// Every path, in the order `--attach auto` tries them: the cheapest first.
pub const PATHS: [PathInfo; 4] = [
    PathInfo {
        path: Path::Fentry,
        name: "fentry",
        request: "fentry",
        programs: &[program("fentry_tcp_set_state", Hook::Fentry("tcp_set_state"))],
        needs: &[Need::Btf, Need::FunctionTracing],
        min_kernel: (5, 8),
    },
    PathInfo {
        path: Path::Kprobe,
        name: "kprobe",
        request: "kprobe",
        programs: &[program("kprobe_tcp_set_state", Hook::Kprobe("tcp_set_state"))],
        needs: &[Need::Btf, Need::Kprobes],
        min_kernel: (5, 8),
    },
    PathInfo {
        path: Path::TpBtf,
        name: "tp_btf",
        request: "tp-btf",
        programs: &[program("tp_btf_inet_sock_set_state", Hook::TpBtf("inet_sock_set_state"))],
        needs: &[Need::Btf],
        min_kernel: (5, 8),
    },
    PathInfo {
        path: Path::Tracepoint,
        name: "tracepoint",
        request: "tracepoint-classic",
        programs: &[program(
            "tracepoint_inet_sock_set_state",
            Hook::Tracepoint("sock", "inet_sock_set_state"),
        )],
        needs: &[Need::Tracefs],
        min_kernel: (5, 8),
    },
];

/// A value of `--attach` (and of `TCPTRACE_ATTACH`): the paths it lets tcptrace try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub name: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// Tried in this order; the first that loads and attaches wins.
    pub paths: &'static [Path],
}

/// Every `--attach` value; the first is the default.
pub const REQUESTS: [Request; 6] = [
    Request {
        name: "auto",
        help: "fentry, then kprobe, then tracepoint: the first that the kernel accepts",
        paths: &[Path::Fentry, Path::Kprobe, Path::TpBtf, Path::Tracepoint],
    },
    Request {
        name: "fentry",
        help: "fentry on tcp_set_state (a BTF trampoline; needs function tracing allowed)",
        paths: &[Path::Fentry],
    },
    Request {
        name: "kprobe",
        help: "kprobe on tcp_set_state (needs CONFIG_KPROBES)",
        paths: &[Path::Kprobe],
    },
    Request {
        name: "tracepoint",
        help: "The sock:inet_sock_set_state tracepoint: tp_btf where allowed, else classic",
        paths: &[Path::TpBtf, Path::Tracepoint],
    },
    Request { name: "tp-btf", help: "Only the BTF-typed tracepoint", paths: &[Path::TpBtf] },
    Request {
        name: "tracepoint-classic",
        help: "Only the classic tracepoint (works without BTF; mounts tracefs if needed)",
        paths: &[Path::Tracepoint],
    },
];

impl Path {
    #[must_use]
    pub fn info(self) -> &'static PathInfo {
        match self {
            Self::Fentry => &PATHS[0],
            Self::Kprobe => &PATHS[1],
            Self::TpBtf => &PATHS[2],
            Self::Tracepoint => &PATHS[3],
        }
    }

    /// As tcptrace prints it (`tp_btf`).
    #[must_use]
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The path tcptrace printed as `name` (`attached via tp_btf`).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        PATHS.iter().find(|p| p.name == name).map(|p| p.path)
    }
}

impl Request {
    /// The request called `name`, as `--attach` spells it.
    #[must_use]
    pub fn named(name: &str) -> Option<&'static Self> {
        REQUESTS.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_its_own_info_and_forced_by_one_request() {
        for info in &PATHS {
            assert_eq!(info.path.info(), info);
            assert_eq!(Path::from_name(info.name), Some(info.path));
            let forcing = Request::named(info.request).expect("a request of that name");
            assert_eq!(forcing.paths, &[info.path]);
            assert!(!info.programs.is_empty());
        }
    }

    #[test]
    fn auto_tries_every_path_in_table_order() {
        let auto = &REQUESTS[0];
        assert_eq!(auto.name, "auto");
        assert!(auto.paths.iter().copied().eq(PATHS.iter().map(|p| p.path)));
        let mut names: [&str; 6] = REQUESTS.map(|r| r.name);
        names.sort_unstable();
        assert!(names.windows(2).all(|w| w[0] != w[1]), "request names are unique");
    }
}
