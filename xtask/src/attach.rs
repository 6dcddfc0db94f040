//! The attach paths the live tests can be told to use (env `TCPTRACE_ATTACH`).
//!
//! They are `--attach` values of tcptrace's own table (`tcptrace_common::attach`): `auto`,
//! and each path of the table forced alone. Their names and help come from that table, so
//! a path added to tcptrace, or renamed, is one the VM tier runs under the name tcptrace
//! accepts.

use std::{fmt, sync::LazyLock};

use clap::{ValueEnum, builder::PossibleValue};
use tcptrace_common::attach::{PATHS, Path, REQUESTS, Request};

/// How tcptrace hooks the kernel; the value of `TCPTRACE_ATTACH` for the live tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttachPath {
    /// Let tcptrace pick the best path the kernel supports.
    Auto,
    /// This path and no other (`--attach tp-btf` for [`Path::TpBtf`]).
    Only(Path),
}

/// The table's first request, its default: every path, in the order `auto` tries them.
const AUTO: &Request = &REQUESTS[0];

impl AttachPath {
    /// The paths the VM tier runs by default: every concrete path, in the table's order.
    pub const VM_DEFAULT: [Self; PATHS.len()] = {
        let mut paths = [Self::Auto; PATHS.len()];
        let mut i = 0;
        while i < PATHS.len() {
            paths[i] = Self::Only(PATHS[i].path);
            i += 1;
        }
        paths
    };
    /// The paths the live tier runs on the host: the host cannot load fentry or kprobe
    /// programs (see ../shared/PLATFORM.md); auto picks tp-btf there, so the classic
    /// tracepoint is the other path worth running.
    pub const HOST_DEFAULT: [Self; 2] = [Self::Auto, Self::Only(Path::Tracepoint)];
    /// Every value xtask accepts: auto, then [`Self::VM_DEFAULT`].
    const ALL: [Self; PATHS.len() + 1] = {
        let mut all = [Self::Auto; PATHS.len() + 1];
        let mut i = 0;
        while i < PATHS.len() {
            all[i + 1] = Self::VM_DEFAULT[i];
            i += 1;
        }
        all
    };

    /// As `--attach` and `TCPTRACE_ATTACH` spell it (`tp-btf`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => AUTO.name,
            Self::Only(path) => path.info().request,
        }
    }

    /// tcptrace's one line of `--help` for it.
    fn help(self) -> &'static str {
        Request::named(self.as_str()).map_or("", |request| request.help)
    }

    /// The path tcptrace printed as `name` (`attached via tp_btf`), forced alone.
    pub fn printed(name: &str) -> Option<Self> {
        Path::from_name(name).map(Self::Only)
    }

    /// `paths` in their `--attach` spelling, joined by `separator`.
    pub fn list(paths: &[Self], separator: &str) -> String {
        paths.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(separator)
    }

    /// [`Self::VM_DEFAULT`] as a command-line default: `fentry,kprobe,tp-btf,...`.
    pub fn vm_default_list() -> &'static str {
        static LIST: LazyLock<String> =
            LazyLock::new(|| AttachPath::list(&AttachPath::VM_DEFAULT, ","));
        LIST.as_str()
    }
}

impl ValueEnum for AttachPath {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()).help(self.help()))
    }
}

impl fmt::Display for AttachPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_with_clap() {
        let parse = |name: &str| AttachPath::from_str(name, false).ok();
        for path in AttachPath::value_variants() {
            assert_eq!(parse(path.as_str()), Some(*path));
            assert_eq!(path.to_possible_value().unwrap().get_name(), path.as_str());
        }
        assert_eq!(parse("tp_btf"), None);
        let list: Vec<_> = AttachPath::vm_default_list().split(',').map(parse).collect();
        assert_eq!(list, AttachPath::VM_DEFAULT.map(Some));
    }

    #[test]
    fn every_name_accepted_is_a_request_of_the_table() {
        for path in AttachPath::value_variants() {
            let request = Request::named(path.as_str())
                .unwrap_or_else(|| panic!("tcptrace has no --attach {path}"));
            assert!(!path.help().is_empty());
            match path {
                AttachPath::Auto => {
                    assert!(request.paths.iter().copied().eq(PATHS.iter().map(|p| p.path)));
                }
                AttachPath::Only(only) => assert_eq!(request.paths, [*only]),
            }
        }
    }

    #[test]
    fn the_vm_runs_every_path_of_the_table() {
        for info in &PATHS {
            assert!(
                AttachPath::VM_DEFAULT.iter().any(|p| p.as_str() == info.request),
                "{} is not in VM_DEFAULT",
                info.request
            );
            assert_eq!(AttachPath::printed(info.name).map(AttachPath::as_str), Some(info.request));
        }
        assert_eq!(AttachPath::printed("tp-btf"), None);
    }
}
