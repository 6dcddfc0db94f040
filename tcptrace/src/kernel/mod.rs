//! The one place that decides how tcptrace hooks into the kernel.
//!
//! The attach paths are data ([`tcptrace_common::attach::PATHS`]: programs, hooks, needs,
//! minimum kernel): [`Tracer::attach`] walks the paths of the `--attach` request in order,
//! loads the one BPF object with the offsets the running kernel's BTF and tracefs give
//! ([`probe`]), attaches the path's programs, and reports every path it passed over with
//! the kernel's reason.
//!
//! Every path hooks the TCP state change (the tracepoint, or `tcp_set_state` itself), so
//! every path counts the same thing. Besides a path's own programs, under `--pid` every
//! path takes `syscalls:sys_exit_accept[4]`.

pub mod btf;
pub mod probe;
pub mod tracefs;

use std::fmt::{self, Write as _};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, KProbe, ProgramError, TracePoint},
};
pub use tcptrace_common::attach::{PATHS, Path, PathInfo, Request};
use tcptrace_common::{
    CONFIG_GLOBAL, Config, EVENTS_MAP, FILTERED_MAP, Filter, LOST_MAP, attach::Hook,
};

use self::probe::Probes;

/// The BPF object built by build.rs from tcptrace-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcptrace"));

/// The attach paths this binary can use, in the order `--attach auto` tries them: all of
/// them, or none when it was built without its BPF object.
#[must_use]
pub fn compiled_in() -> &'static [PathInfo] {
    if OBJECT.is_empty() { &[] } else { &PATHS }
}

/// The attach paths as a Markdown table, as the README shows them (a unit test keeps the
/// README's copy equal to this).
#[must_use]
pub fn paths_table() -> String {
    use tcptrace_common::attach::Need;
    let mut table = String::from(
        "| path | `--attach` | programs | needs | from Linux |\n| --- | --- | --- | --- | --- |\n",
    );
    for info in &PATHS {
        let programs: Vec<String> = info
            .programs
            .iter()
            .map(|p| match p.hook {
                Hook::Fentry(f) => format!("fentry `{f}`"),
                Hook::Kprobe(f) => format!("kprobe `{f}`"),
                Hook::TpBtf(t) => format!("tp_btf `{t}`"),
                Hook::Tracepoint(c, t) => format!("tracepoint `{c}:{t}`"),
            })
            .collect();
        let needs: Vec<&str> = info
            .needs
            .iter()
            .map(|n| match n {
                Need::Btf => "kernel BTF",
                Need::FunctionTracing => "function tracing allowed",
                Need::Kprobes => "`CONFIG_KPROBES`",
                Need::Tracefs => "tracefs (mounted if missing)",
            })
            .collect();
        let (major, minor) = info.min_kernel;
        let _ = writeln!(
            table,
            "| `{}` | `{}` | {} | {} | {major}.{minor} |",
            info.name,
            info.request,
            programs.join(", "),
            needs.join(", "),
        );
    }
    table
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub request: &'static Request,
    pub ring_bytes: u32,
    /// Applied in the programs; see `crate::filter`.
    pub filter: Filter,
    /// Events carry their time, `comm`, and for a connect the process that called
    /// `connect()` (the events view shows them; see `Config::details`). Counting alone
    /// costs less without; `--pid` turns them on.
    pub details: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(
        "this binary was built without its BPF object (AYA_BUILD_SKIP was set); rebuild without it"
    )]
    NoObject,
    #[error(
        "tcptrace needs root, or the capabilities CAP_BPF and CAP_PERFMON (missing: {0}); run it with sudo, or grant them with `setcap cap_bpf,cap_perfmon,cap_sys_admin+ep`"
    )]
    Privileges(String),
    #[error("--ring-size {0} is not a power of two multiple of the page size ({1} bytes)")]
    RingSize(u32, usize),
    #[error("no attach path worked: {}", PassedOver(.0))]
    NoPath(Vec<(Path, PathError)>),
    #[error("{0} needs kernel BTF (/sys/kernel/btf/vmlinux) to read it from sockets: {1}")]
    FilterNeedsBtf(&'static str, String),
}

/// Why the ring buffer could not be handed over.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("the BPF object has no {0} map")]
    NoMap(&'static str),
    #[error("the ring buffer")]
    Map(#[from] aya::maps::MapError),
}

/// Why one attach path was not used.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The kernel lacks something the path needs.
    #[error("needs kernel BTF (/sys/kernel/btf/vmlinux), which this kernel lacks")]
    NoBtf,
    #[error("{0}")]
    NoTracefs(String),
    /// The object would not load (maps, relocations): not the path's fault alone.
    #[error("cannot load the BPF object: {0}")]
    Load(String),
    /// The kernel refused one of the path's programs, with what that means.
    #[error("{0}")]
    Refused(String),
}

/// `fentry: why; kprobe: why`.
struct PassedOver<'a>(&'a [(Path, PathError)]);

impl fmt::Display for PassedOver<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (path, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {why}", path.name())?;
        }
        Ok(())
    }
}

/// The loaded programs of the chosen path, and why the others were passed over.
pub struct Tracer {
    ebpf: Ebpf,
    pub path: Path,
    pub passed_over: Vec<(Path, PathError)>,
    /// Things the user should know about the choice (no BTF, tracefs mounted, ...).
    pub notes: Vec<String>,
    /// False when the programs cannot read network namespace ids (no BTF): events then
    /// carry netns 0 ([`crate::conn::NETNS_UNKNOWN`]), and the kernel's view must be keyed
    /// the same way to match them.
    pub knows_netns: bool,
}

impl Tracer {
    /// Tries each path of the request in order; the first that loads and attaches wins.
    pub fn attach(opts: Options) -> Result<Self, AttachError> {
        if OBJECT.is_empty() {
            return Err(AttachError::NoObject);
        }
        check_privileges()?;
        let page = page_size();
        if !opts.ring_bytes.is_power_of_two() || (opts.ring_bytes as usize) < page {
            return Err(AttachError::RingSize(opts.ring_bytes, page));
        }
        raise_memlock_limit();

        let t0 = std::time::Instant::now();
        let probes = Probes::default();
        let mut notes = Vec::new();
        let mut config = Config::default();
        match probes.kernel_btf() {
            Ok(btf) => match btf.sock_offsets() {
                Ok(o) => config.sock = o,
                Err(e) => notes.push(format!(
                    "cannot use kernel BTF ({e}); network namespace ids will read 0"
                )),
            },
            Err(e) => notes.push(format!(
                "{e}; fentry, kprobe and tp_btf need it, network namespace ids will read 0"
            )),
        }
        config.filter = opts.filter;
        config.details = u32::from(opts.details || opts.filter.n_pids > 0);
        if opts.filter.n_netns > 0 && config.sock.valid == 0 {
            return Err(AttachError::FilterNeedsBtf("--netns", "no socket offsets".into()));
        }
        if opts.filter.n_cgroups > 0 {
            let offsets = probes
                .kernel_btf()
                .map_err(ToString::to_string)
                .and_then(|btf| btf.cgroup_offsets().map_err(|e| e.to_string()));
            config.cgroup = offsets.map_err(|e| AttachError::FilterNeedsBtf("--cgroup", e))?;
        }
        // Under --pid accepts are seen where accept() returns, in the accepting process
        // (see sys_exit_accept4 in tcptrace-ebpf): the state change runs in softirq, on
        // whatever task the CPU was running. Without the syscall tracepoints the server
        // connections of the selected processes are found by reconciling.
        let accept_offsets: Result<_, String> = if opts.filter.n_pids == 0 {
            Err("no --pid".into())
        } else {
            probes.syscall_tracepoint("sys_exit_accept4").ok().and_then(|()| {
                let ret = probes
                    .tracefs()
                    .map_err(ToString::to_string)?
                    .accept_syscall_ret()
                    .map_err(|e| e.to_string())?;
                let btf = probes.kernel_btf().map_err(ToString::to_string)?;
                let offsets = btf.accept_offsets().map_err(|e| e.to_string())?;
                Ok(tcptrace_common::AcceptOffsets { ret, ..offsets })
            })
        };
        if let Ok(offsets) = accept_offsets {
            config.accept = offsets;
        }
        log::debug!("offsets ready after {:?}", t0.elapsed());

        let mut passed_over = Vec::new();
        for &path in opts.request.paths {
            match try_path(path, config, opts.ring_bytes, &probes) {
                Ok(mut ebpf) => {
                    log::debug!("{} attached after {:?}", path.name(), t0.elapsed());
                    if opts.filter.n_pids > 0 {
                        let attached = accept_offsets
                            .clone()
                            .and_then(|_| attach_accepts(&mut ebpf).map_err(|e| chain(&e)));
                        if let Err(e) = attached {
                            notes.push(format!(
                                "--pid: cannot follow accept() to its socket ({e}); server connections the hooks cannot attribute are added by reconciliation and show as drift"
                            ));
                        }
                    }
                    let knows_netns = config.sock.valid != 0;
                    // The probes' own notes (tracefs mounted) come first, as they happened.
                    let mut all_notes = probes.take_notes();
                    all_notes.append(&mut notes);
                    return Ok(Self { ebpf, path, passed_over, notes: all_notes, knows_netns });
                }
                Err(reason) => passed_over.push((path, reason)),
            }
        }
        Err(AttachError::NoPath(passed_over))
    }

    /// Hands the ring buffer to the consumer.
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, RingError> {
        let map = self.ebpf.take_map(EVENTS_MAP).ok_or(RingError::NoMap(EVENTS_MAP))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Events dropped in the kernel because the ring was full, summed over CPUs.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.per_cpu_sum(LOST_MAP)
    }

    /// Events the in-kernel filter kept out of the ring, summed over CPUs.
    #[must_use]
    pub fn filtered(&self) -> u64 {
        self.per_cpu_sum(FILTERED_MAP)
    }

    fn per_cpu_sum(&self, name: &str) -> u64 {
        let Some(map) = self.ebpf.map(name) else { return 0 };
        let Ok(counts) = PerCpuArray::<_, u64>::try_from(map) else { return 0 };
        counts.get(&0, 0).map_or(0, |per_cpu| per_cpu.iter().sum())
    }

    /// One line for the user: which path is live and why the others were not used.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut s = format!("attached via {}", self.path.name());
        if !self.passed_over.is_empty() {
            let _ = write!(s, " (passed over {})", PassedOver(&self.passed_over));
        }
        s
    }
}

fn try_path(
    path: Path,
    mut config: Config,
    ring_bytes: u32,
    probes: &Probes,
) -> Result<Ebpf, PathError> {
    let info = path.info();
    let uses_btf = info.needs.contains(&tcptrace_common::attach::Need::Btf);
    if uses_btf && config.sock.valid == 0 {
        return Err(PathError::NoBtf);
    }
    // fentry and tp_btf attach by BTF type; kprobe takes only its offsets from BTF.
    let loads_by_btf =
        info.programs.iter().any(|p| matches!(p.hook, Hook::Fentry(_) | Hook::TpBtf(_)));
    let btf = if loads_by_btf { Some(probes.aya_btf().ok_or(PathError::NoBtf)?) } else { None };
    if path == Path::Tracepoint {
        let tracefs = probes.tracefs().map_err(|e| PathError::NoTracefs(e.to_string()))?;
        config.tracepoint = tracefs
            .inet_sock_set_state_offsets()
            .map_err(|e| PathError::NoTracefs(e.to_string()))?;
    }
    let mut ebpf = EbpfLoader::new()
        .override_global(CONFIG_GLOBAL, &config, true)
        .map_max_entries(EVENTS_MAP, ring_bytes)
        .load(OBJECT)
        .map_err(|e| PathError::Load(chain(&e)))?;
    attach_programs(&mut ebpf, info, btf).map_err(|e| PathError::Refused(explain(path, &e)))?;
    Ok(ebpf)
}

/// Loads and attaches every program of `info`, in the table's order.
fn attach_programs(
    ebpf: &mut Ebpf,
    info: &PathInfo,
    btf: Option<&Btf>,
) -> Result<(), ProgramError> {
    fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, ProgramError>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        ebpf.program_mut(name).ok_or(ProgramError::NotLoaded)?.try_into()
    }
    let btf = || btf.ok_or(ProgramError::NotLoaded);
    for program in info.programs {
        let name = program.name;
        match program.hook {
            Hook::Fentry(function) => {
                let p: &mut FEntry = prog(ebpf, name)?;
                p.load(function, btf()?)?;
                p.attach()?;
            }
            Hook::Kprobe(function) => {
                let p: &mut KProbe = prog(ebpf, name)?;
                p.load()?;
                p.attach(function, 0)?;
            }
            Hook::TpBtf(tracepoint) => {
                let p: &mut BtfTracePoint = prog(ebpf, name)?;
                p.load(tracepoint, btf()?)?;
                p.attach()?;
            }
            Hook::Tracepoint(category, tracepoint) => {
                let p: &mut TracePoint = prog(ebpf, name)?;
                p.load()?;
                p.attach(category, tracepoint)?;
            }
        }
    }
    Ok(())
}

/// `accept()` returning, for `--pid` (on every path: see `accept_offsets` above).
fn attach_accepts(ebpf: &mut Ebpf) -> Result<(), ProgramError> {
    for name in ["sys_exit_accept4", "sys_exit_accept"] {
        attach_syscall_tracepoint(ebpf, name, name)?;
    }
    Ok(())
}

/// Loads program `program` and attaches it to `syscalls:tracepoint`.
fn attach_syscall_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    tracepoint: &str,
) -> Result<(), ProgramError> {
    let p: &mut TracePoint =
        ebpf.program_mut(program).ok_or(ProgramError::NotLoaded)?.try_into()?;
    p.load()?;
    p.attach("syscalls", tracepoint)?;
    Ok(())
}

/// One line: the error chain, without the verifier's (long) log, plus what it means.
fn explain(path: Path, e: &ProgramError) -> String {
    let (what, os_error) = match e {
        ProgramError::LoadError { io_error, .. } => {
            ("the kernel refused to load it", io_error.raw_os_error())
        }
        ProgramError::SyscallError(s) => (s.call, s.io_error.raw_os_error()),
        _ => ("", None),
    };
    let detail = if what.is_empty() { chain(e) } else { format!("{what}: {}", chain_io(e)) };
    let hint = match (path, os_error) {
        (Path::Fentry, Some(libc::EPERM)) => {
            "; fentry is not allowed on this kernel (function tracing is locked down or the lockdown LSM forbids it)"
        }
        (Path::Fentry, Some(ENOTSUPP)) => {
            "; this kernel has no BPF trampoline (fentry needs Linux 5.5+ on x86_64 or 6.0+ on arm64)"
        }
        (Path::Kprobe, Some(libc::ENOENT | libc::EOPNOTSUPP) | None) => {
            "; kprobes look unavailable on this kernel (CONFIG_KPROBES unset, or the function is not probeable)"
        }
        _ => "",
    };
    format!("{detail}{hint}")
}

/// The kernel-internal ENOTSUPP that BPF returns; libc has no name for it.
const ENOTSUPP: i32 = 524;

fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    let joined = parts.join(": ");
    // Keep it to one line: the verifier log, when there is one, goes to --verbose.
    joined.split(". Verifier output:").next().unwrap_or(&joined).replace('\n', " ")
}

fn chain_io(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            log::debug!("verifier log:\n{verifier_log}");
            io_error.to_string()
        }
        ProgramError::SyscallError(s) => s.io_error.to_string(),
        other => chain(other),
    }
}

/// Root has every capability; otherwise CAP_BPF and CAP_PERFMON (Linux 5.8+) suffice for
/// loading tracing programs; CAP_SYS_ADMIN covers both on older kernels.
fn check_privileges() -> Result<(), AttachError> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Some(effective) = effective_caps() else { return Ok(()) };
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap))
        .map(|(_, name)| name)
        .collect();
    Err(AttachError::Privileges(missing.join(", ")))
}

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones to the memory cgroup.
/// Raising it may fail without CAP_SYS_RESOURCE, which is harmless on those later kernels.
fn raise_memlock_limit() {
    let unlimited = nix::sys::resource::RLIM_INFINITY;
    if let Err(e) = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        unlimited,
        unlimited,
    ) {
        log::debug!("cannot raise RLIMIT_MEMLOCK ({e}); fine on Linux 5.11+");
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_the_attach_paths_as_the_table_has_them() {
        let readme = include_str!("../../../README.md");
        let table = paths_table();
        assert!(
            readme.contains(&table),
            "README.md's attach-path table is out of date; it should read:\n{table}"
        );
    }

    #[test]
    fn a_path_passed_over_says_why_in_one_line() {
        let why = PassedOver(&[
            (Path::Fentry, PathError::Refused("the kernel refused to load it: EPERM".into())),
            (Path::Kprobe, PathError::NoBtf),
        ])
        .to_string();
        assert_eq!(
            why,
            "fentry: the kernel refused to load it: EPERM; kprobe: needs kernel BTF \
             (/sys/kernel/btf/vmlinux), which this kernel lacks"
        );
    }
}
