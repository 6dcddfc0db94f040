//! The one place that decides how tcptrace hooks into the kernel.
//!
//! Three attach paths are compiled into one BPF object; the chain below is data, tried in
//! order, and every path passed over is reported with the kernel's reason:
//!
//! | backend      | programs                                                       |
//! |--------------|----------------------------------------------------------------|
//! | `fentry`     | fentry `tcp_connect`, fexit `inet_csk_accept`, fentry `tcp_close` `tcp_done` `tcp_disconnect`, fexit `inet_csk_complete_hashdance` |
//! | `kprobe`     | kprobe `tcp_connect`, kretprobe `inet_csk_accept`, kprobe `tcp_close` `tcp_done` `tcp_disconnect`, kretprobe `inet_csk_complete_hashdance` |
//! | `tp_btf`     | BTF-typed `sock:inet_sock_set_state`                           |
//! | `tracepoint` | classic `sock:inet_sock_set_state` (tracefs)                   |
//!
//! Every path also takes `syscalls:sys_exit_connect` for failed connects (and
//! `sys_enter_connect` where the registers cannot be read at exit), and under `--pid`
//! `syscalls:sys_exit_accept[4]`.

pub mod btf;
pub mod tracefs;

use std::fmt::{self, Write as _};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, ProgramError, TracePoint},
};
use tcptrace_common::{
    CONFIG_GLOBAL, Config, ConnectOffsets, EVENTS_MAP, FILTERED_MAP, Filter, LOST_MAP,
};

use self::{btf::KernelBtf, tracefs::Tracefs};

/// The BPF object built by build.rs from tcptrace-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcptrace"));

/// Default ring buffer size: 4 MiB holds ~47,000 events, about 10 ms of the densest churn
/// this box sustains, between two drains.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// An attach path that is live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Fentry,
    Kprobe,
    TpBtf,
    Tracepoint,
}

impl Backend {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::TpBtf => "tp_btf",
            Self::Tracepoint => "tracepoint",
        }
    }

    fn needs_btf(self) -> bool {
        self != Self::Tracepoint
    }

    /// Whether the path's own hook sees a connect fail for want of a port (see
    /// `kind_of_transition` in tcptrace-ebpf); the others need the `syscalls:` tracepoints
    /// on `connect()`, which slow every system call on the box a little.
    fn sees_failed_connects(self) -> bool {
        matches!(self, Self::TpBtf | Self::Tracepoint)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for with `--attach`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachRequest {
    /// fentry, then kprobe, then tracepoint: the first that the kernel accepts.
    Auto,
    /// fentry/fexit (BTF trampolines; cheapest; Linux 5.17+ with function tracing allowed).
    Fentry,
    /// kprobe/kretprobe (needs CONFIG_KPROBES).
    Kprobe,
    /// The sock:inet_sock_set_state tracepoint: tp_btf where allowed, else classic.
    Tracepoint,
    /// Only the BTF-typed tracepoint.
    #[value(name = "tp-btf")]
    TpBtf,
    /// Only the classic tracepoint (works without BTF; mounts tracefs if needed).
    #[value(name = "tracepoint-classic")]
    TracepointClassic,
}

impl AttachRequest {
    fn candidates(self) -> &'static [Backend] {
        use Backend::{Fentry, Kprobe, TpBtf, Tracepoint};
        match self {
            Self::Auto => &[Fentry, Kprobe, TpBtf, Tracepoint],
            Self::Fentry => &[Fentry],
            Self::Kprobe => &[Kprobe],
            Self::Tracepoint => &[TpBtf, Tracepoint],
            Self::TpBtf => &[TpBtf],
            Self::TracepointClassic => &[Tracepoint],
        }
    }
}

/// The attach paths this binary can use, in the order `--attach auto` tries them: all of
/// them, or none when it was built without its BPF object.
#[must_use]
pub fn compiled_in() -> &'static [Backend] {
    if OBJECT.is_empty() { &[] } else { AttachRequest::Auto.candidates() }
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub attach: AttachRequest,
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
    #[error("no attach path worked: {0}")]
    NoPath(String),
    #[error("{0} needs kernel BTF (/sys/kernel/btf/vmlinux) to read it from sockets: {1}")]
    FilterNeedsBtf(&'static str, String),
}

/// The loaded programs of the chosen path, and why the others were passed over.
pub struct Tracer {
    ebpf: Ebpf,
    pub backend: Backend,
    pub passed_over: Vec<(Backend, String)>,
    /// Things the user should know about the choice (no BTF, tracefs mounted, ...).
    pub notes: Vec<String>,
    /// False when the programs cannot read network namespace ids (no BTF): events then
    /// carry netns 0, and the seed must be keyed the same way to match them.
    pub knows_netns: bool,
}

impl Tracer {
    /// Tries each candidate path in order; the first that loads and attaches wins.
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

        let mut notes = Vec::new();
        let t0 = std::time::Instant::now();
        let kernel_btf = KernelBtf::load();
        log::debug!("parsed kernel BTF in {:?}", t0.elapsed());
        let mut config = Config::default();
        match &kernel_btf {
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
        // Failed connects come from syscall tracepoints on the fentry and kprobe paths;
        // without them tcptrace still counts, it only cannot say when the ephemeral range
        // ran out. (The tracepoint paths see them as a state change.)
        let connect_failures = connect_offsets(kernel_btf.as_ref().ok(), &mut notes);
        if let Ok(offsets) = connect_failures {
            config.connect = offsets;
        }
        config.filter = opts.filter;
        config.details = u32::from(opts.details || opts.filter.n_pids > 0);
        if opts.filter.n_netns > 0 && config.sock.valid == 0 {
            return Err(AttachError::FilterNeedsBtf("--netns", "no socket offsets".into()));
        }
        if opts.filter.n_cgroups > 0 {
            let offsets = kernel_btf
                .as_ref()
                .map_err(ToString::to_string)
                .and_then(|btf| btf.cgroup_offsets().map_err(|e| e.to_string()));
            config.cgroup = offsets.map_err(|e| AttachError::FilterNeedsBtf("--cgroup", e))?;
        }
        // Under --pid accepts are seen where accept() returns, in the accepting process
        // (see sys_exit_accept4 in tcptrace-ebpf), and the other accept hooks stay quiet:
        // so only with the syscall tracepoints at hand (and the offset of their `ret`,
        // read with the connect ones). Without them the fentry and kprobe paths keep their
        // accept hooks, and the tracepoint paths' server connections are found by
        // reconciling.
        let accept_offsets = if opts.filter.n_pids == 0 {
            Err("no --pid".into())
        } else if connect_failures.is_err() || !syscall_tracepoint_exists("sys_exit_accept4") {
            Err("no syscalls:sys_exit_accept4 tracepoint (CONFIG_FTRACE_SYSCALLS)".into())
        } else {
            kernel_btf
                .as_ref()
                .map_err(ToString::to_string)
                .and_then(|btf| btf.accept_offsets().map_err(|e| e.to_string()))
        };
        if let Ok(offsets) = accept_offsets {
            config.accept = offsets;
        }
        let aya_btf = Btf::from_sys_fs().ok();
        log::debug!("offsets and aya BTF ready after {:?}", t0.elapsed());

        let mut passed_over = Vec::new();
        for &backend in opts.attach.candidates() {
            match try_backend(backend, config, opts.ring_bytes, aya_btf.as_ref(), &mut notes) {
                Ok(mut ebpf) => {
                    log::debug!("{backend} attached after {:?}", t0.elapsed());
                    let failures = match &connect_failures {
                        _ if backend.sees_failed_connects() => Ok(()),
                        Ok(offsets) => attach_connect_failures(&mut ebpf, backend, offsets)
                            .map_err(|e| chain(&e)),
                        Err(e) => Err(e.clone()),
                    };
                    if let Err(e) = failures {
                        notes.push(format!("failed connects (EADDRNOTAVAIL) are not counted: {e}"));
                    }
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
                    return Ok(Self { ebpf, backend, passed_over, notes, knows_netns });
                }
                Err(reason) => passed_over.push((backend, reason)),
            }
        }
        let reasons: Vec<String> =
            passed_over.iter().map(|(b, why)| format!("{b}: {why}")).collect();
        Err(AttachError::NoPath(reasons.join("; ")))
    }

    /// Hands the ring buffer to the consumer.
    pub fn take_ring(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map =
            self.ebpf.take_map(EVENTS_MAP).ok_or_else(|| anyhow::anyhow!("no {EVENTS_MAP} map"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Events dropped in the kernel because the ring was full, summed over CPUs.
    #[must_use]
    pub fn lost(&self) -> u64 {
        let Some(map) = self.ebpf.map(LOST_MAP) else { return 0 };
        let Ok(lost) = PerCpuArray::<_, u64>::try_from(map) else { return 0 };
        lost.get(&0, 0).map_or(0, |per_cpu| per_cpu.iter().sum())
    }

    /// Events the in-kernel filter kept out of the ring, summed over CPUs.
    #[must_use]
    pub fn filtered(&self) -> u64 {
        let Some(map) = self.ebpf.map(FILTERED_MAP) else { return 0 };
        let Ok(filtered) = PerCpuArray::<_, u64>::try_from(map) else { return 0 };
        filtered.get(&0, 0).map_or(0, |per_cpu| per_cpu.iter().sum())
    }

    /// One line for the user: which path is live and why the others were not used.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut s = format!("attached via {}", self.backend);
        if !self.passed_over.is_empty() {
            let others: Vec<String> =
                self.passed_over.iter().map(|(b, why)| format!("{b}: {why}")).collect();
            let _ = write!(s, " (passed over {})", others.join("; "));
        }
        s
    }
}

fn try_backend(
    backend: Backend,
    mut config: Config,
    ring_bytes: u32,
    btf: Option<&Btf>,
    notes: &mut Vec<String>,
) -> Result<Ebpf, String> {
    if backend.needs_btf() && (btf.is_none() || config.sock.valid == 0) {
        return Err("needs kernel BTF (/sys/kernel/btf/vmlinux), which this kernel lacks".into());
    }
    if backend == Backend::Tracepoint {
        let tracefs = Tracefs::ensure().map_err(|e| e.to_string())?;
        if tracefs.mounted_by_us {
            notes.push(format!(
                "mounted tracefs at {} (it was not mounted)",
                tracefs.root.display()
            ));
        }
        config.tracepoint = tracefs.inet_sock_set_state_offsets().map_err(|e| e.to_string())?;
    }
    let mut ebpf = EbpfLoader::new()
        .override_global(CONFIG_GLOBAL, &config, true)
        .map_max_entries(EVENTS_MAP, ring_bytes)
        .load(OBJECT)
        .map_err(|e| format!("cannot load the BPF object: {}", chain(&e)))?;
    attach_programs(&mut ebpf, backend, btf).map_err(|e| explain(backend, &e))?;
    Ok(ebpf)
}

fn attach_programs(
    ebpf: &mut Ebpf,
    backend: Backend,
    btf: Option<&Btf>,
) -> Result<(), ProgramError> {
    fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, ProgramError>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        ebpf.program_mut(name).ok_or(ProgramError::NotLoaded)?.try_into()
    }
    let btf = || btf.ok_or(ProgramError::NotLoaded);
    match backend {
        Backend::Fentry => {
            let p: &mut FEntry = prog(ebpf, "fentry_tcp_connect")?;
            p.load("tcp_connect", btf()?)?;
            p.attach()?;
            for (name, function) in [
                ("fexit_inet_csk_accept", "inet_csk_accept"),
                ("fexit_inet_csk_complete_hashdance", "inet_csk_complete_hashdance"),
            ] {
                let p: &mut FExit = prog(ebpf, name)?;
                p.load(function, btf()?)?;
                p.attach()?;
            }
            for (name, function) in [
                ("fentry_tcp_close", "tcp_close"),
                ("fentry_tcp_done", "tcp_done"),
                ("fentry_tcp_disconnect", "tcp_disconnect"),
            ] {
                let p: &mut FEntry = prog(ebpf, name)?;
                p.load(function, btf()?)?;
                p.attach()?;
            }
        }
        Backend::Kprobe => {
            for (name, function) in [
                ("kprobe_tcp_connect", "tcp_connect"),
                ("kretprobe_inet_csk_accept", "inet_csk_accept"),
                ("kretprobe_inet_csk_complete_hashdance", "inet_csk_complete_hashdance"),
                ("kprobe_tcp_close", "tcp_close"),
                ("kprobe_tcp_done", "tcp_done"),
                ("kprobe_tcp_disconnect", "tcp_disconnect"),
            ] {
                let p: &mut KProbe = prog(ebpf, name)?;
                p.load()?;
                p.attach(function, 0)?;
            }
        }
        Backend::TpBtf => {
            let p: &mut BtfTracePoint = prog(ebpf, "tp_btf_inet_sock_set_state")?;
            p.load("inet_sock_set_state", btf()?)?;
            p.attach()?;
        }
        Backend::Tracepoint => {
            let p: &mut TracePoint = prog(ebpf, "tracepoint_inet_sock_set_state")?;
            p.load()?;
            p.attach("sock", "inet_sock_set_state")?;
        }
    }
    Ok(())
}

/// Where the failed-connect programs read the syscall records and the task's namespace.
fn connect_offsets(
    btf: Option<&KernelBtf>,
    notes: &mut Vec<String>,
) -> Result<ConnectOffsets, String> {
    let tracefs = Tracefs::ensure().map_err(|e| e.to_string())?;
    if tracefs.mounted_by_us {
        notes.push(format!("mounted tracefs at {} (it was not mounted)", tracefs.root.display()));
    }
    let (uservaddr, ret) = tracefs.connect_syscall_offsets().map_err(|e| e.to_string())?;
    let (task_nsproxy, nsproxy_net_ns) =
        btf.and_then(|b| b.task_netns_offsets().ok()).unwrap_or((0, 0));
    let regs_uservaddr = btf.and_then(|b| b.connect_uservaddr_in_regs().ok()).unwrap_or(0);
    Ok(ConnectOffsets { uservaddr, ret, task_nsproxy, nsproxy_net_ns, regs_uservaddr })
}

/// `connect()` returning, for failed connects on the fentry and kprobe paths: one program
/// that reads the destination from the task's registers (BTF, Linux 5.15+), or else a
/// pair that saves it at entry in a map (an insert and a delete per `connect()`). The
/// kprobe path, there for older kernels, always takes the pair: so the pair is what it
/// runs, and is tested, wherever it runs.
fn attach_connect_failures(
    ebpf: &mut Ebpf,
    backend: Backend,
    offsets: &ConnectOffsets,
) -> Result<(), ProgramError> {
    if offsets.regs_uservaddr != 0 && backend != Backend::Kprobe {
        match attach_syscall_tracepoint(ebpf, "sys_exit_connect", "sys_exit_connect") {
            Ok(()) => return Ok(()),
            Err(e) => {
                log::debug!("sys_exit_connect with registers: {}; saving at entry", chain(&e));
            }
        }
    }
    attach_syscall_tracepoint(ebpf, "sys_enter_connect", "sys_enter_connect")?;
    attach_syscall_tracepoint(ebpf, "sys_exit_connect_saved", "sys_exit_connect")
}

/// Whether tracefs (mounted by now, see [`connect_offsets`]) has `syscalls:NAME`.
fn syscall_tracepoint_exists(name: &str) -> bool {
    Tracefs::ensure().is_ok_and(|t| t.root.join("events/syscalls").join(name).is_dir())
}

/// `accept()` returning, for `--pid` (on every path: see `accept_offsets` above).
fn attach_accepts(ebpf: &mut Ebpf) -> Result<(), ProgramError> {
    attach_syscall_tracepoints(ebpf, &["sys_exit_accept4", "sys_exit_accept"])
}

/// Loads and attaches the programs named after their `syscalls:` tracepoints.
fn attach_syscall_tracepoints(ebpf: &mut Ebpf, names: &[&str]) -> Result<(), ProgramError> {
    for &name in names {
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
fn explain(backend: Backend, e: &ProgramError) -> String {
    let (what, os_error) = match e {
        ProgramError::LoadError { io_error, .. } => {
            ("the kernel refused to load it", io_error.raw_os_error())
        }
        ProgramError::SyscallError(s) => (s.call, s.io_error.raw_os_error()),
        _ => ("", None),
    };
    let detail = if what.is_empty() { chain(e) } else { format!("{what}: {}", chain_io(e)) };
    let hint = match (backend, os_error) {
        (Backend::Fentry, Some(libc::EPERM)) => {
            "; fentry/fexit are not allowed on this kernel (function tracing is locked down or the lockdown LSM forbids it)"
        }
        (Backend::Fentry, Some(ENOTSUPP)) => {
            "; this kernel has no BPF trampoline (fentry needs Linux 5.5+ on x86_64 or 6.0+ on arm64)"
        }
        (Backend::Kprobe, Some(libc::ENOENT | libc::EOPNOTSUPP) | None) => {
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
