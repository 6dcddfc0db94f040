//! The attach paths the live tests can be told to use (env `TCPTRACE_ATTACH`).

use std::fmt;

use clap::ValueEnum;

/// How tcptrace hooks the kernel; the value of `TCPTRACE_ATTACH` for the live tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum AttachPath {
    /// Let tcptrace pick the best path the kernel supports.
    Auto,
    /// fentry/fexit programs (BTF trampolines).
    Fentry,
    /// kprobe/kretprobe programs.
    Kprobe,
    /// BTF-typed raw tracepoints.
    TpBtf,
    /// Classic tracepoints through tracefs.
    TracepointClassic,
}

impl AttachPath {
    /// The paths the VM tier runs by default: every concrete path.
    pub const VM_DEFAULT: [Self; 4] =
        [Self::Fentry, Self::Kprobe, Self::TpBtf, Self::TracepointClassic];
    /// [`Self::VM_DEFAULT`] as a command-line default.
    pub const VM_DEFAULT_LIST: &str = "fentry,kprobe,tp-btf,tracepoint-classic";
    /// The paths the live tier runs on the host: the host cannot load fentry or kprobe
    /// programs (see ../shared/PLATFORM.md); auto picks tp-btf there, so the classic
    /// tracepoint is the other path worth running.
    pub const HOST_DEFAULT: [Self; 2] = [Self::Auto, Self::TracepointClassic];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::TpBtf => "tp-btf",
            Self::TracepointClassic => "tracepoint-classic",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::from_str(name, false).ok()
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
        for path in AttachPath::value_variants() {
            assert_eq!(AttachPath::parse(path.as_str()), Some(*path));
            assert_eq!(path.to_possible_value().unwrap().get_name(), path.as_str());
        }
        assert_eq!(AttachPath::parse("tp_btf"), None);
        let list: Vec<_> = AttachPath::VM_DEFAULT_LIST.split(',').map(AttachPath::parse).collect();
        assert_eq!(list, AttachPath::VM_DEFAULT.map(Some));
    }
}
