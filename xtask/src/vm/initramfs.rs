//! The VM's whole userland, in one initramfs: busybox, the tcptrace binary, the test
//! executables, the host's `ip` and `ss`, the shared libraries they load, and /init.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{BufWriter, Read as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::{cpio::Archive, kernel::Kernel};
use crate::{attach::AttachPath, cargo::TestExe, cmd, ldd};

/// What /init runs for each attach path.
pub enum Workload<'a> {
    /// Every test executable, with these extra arguments (a test-name filter, say).
    Tests { tests: &'a [TestExe], args: &'a [String] },
    /// `tcptrace --help`: checks the boot, the libraries and the console, not tcptrace.
    Smoke,
    /// The churn benchmark (`cargo xtask bench --vm`).
    Bench(BenchPlan),
}

/// Per round, `tcptrace load churn` without a tracer and with `tcptrace watch` on the
/// path, in alternating order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchPlan {
    pub rounds: u32,
    pub seconds: u64,
}

/// The open-file limit inside the VM: the host's (see ../shared/PLATFORM.md), so tests
/// that hold thousands of sockets behave the same in both places.
const NOFILE: u32 = 20_000;

/// Host programs copied in when present; they replace busybox's smaller applets (`tc`
/// puts netem on a namespace's loopback for the slow-link test; busybox has none).
const HOST_TOOLS: [&str; 3] = ["ip", "ss", "tc"];

/// Test executables left out of the VM, each for a program the initramfs does not carry:
/// `test/top` drives `tcptrace top` through tmux, `test/prometheus` runs Debian's
/// Prometheus and promtool, `test/report` renders a page in Chromium. None depends on the
/// attach path (the screen, the metrics and the page come from the same counts on every
/// path; `test/serve` scrapes the metrics in the VM), and the live tier runs all three on
/// the host.
const NOT_IN_VM: [&str; 3] = ["test/top", "test/prometheus", "test/report"];

/// Kernel modules copied in (paths under `lib/modules/<release>/`, without `.ko`), loaded on
/// demand by the kernel through busybox's modprobe, as on a real system. Debian builds
/// sock_diag's protocol handlers as modules: without `tcp_diag`, a `SOCK_DIAG_BY_FAMILY`
/// dump of TCP sockets answers ENOENT, and tcptrace cannot read the connections that
/// already exist. `sch_netem` delays a test namespace's loopback (a link with a real RTT).
const MODULES: [&str; 9] = [
    "kernel/net/ipv4/inet_diag",
    "kernel/net/ipv4/tcp_diag",
    "kernel/net/ipv4/udp_diag",
    "kernel/net/ipv4/raw_diag",
    "kernel/net/unix/unix_diag",
    "kernel/net/netlink/netlink_diag",
    "kernel/net/packet/af_packet_diag",
    "kernel/drivers/net/veth",
    "kernel/net/sched/sch_netem",
];

/// The module indexes copied beside them (busybox's depmod in /init writes the rest).
const MODULE_INDEXES: [&str; 2] = ["modules.builtin", "modules.order"];

/// How a kernel package stores a module. Debian 11 and 12 ship plain `.ko` files; Debian
/// 13 compresses them with xz, and other distributions with zstd or gzip. Busybox's insmod
/// loads only plain ones (and the kernel decompresses in-kernel only since 5.17, when asked
/// to), so the initramfs gets every module as a plain `.ko`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

impl Compression {
    /// In the order they are looked for.
    const ALL: [Self; 4] = [Self::None, Self::Xz, Self::Zstd, Self::Gzip];

    /// What follows the module's name in the package: `.ko`, `.ko.xz`, ...
    fn suffix(self) -> &'static str {
        match self {
            Self::None => ".ko",
            Self::Xz => ".ko.xz",
            Self::Zstd => ".ko.zst",
            Self::Gzip => ".ko.gz",
        }
    }
}

/// A module found in the unpacked kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModuleFile {
    /// Where it is in the package.
    source: PathBuf,
    compression: Compression,
    /// Where it goes under `lib/modules/<release>/`: always a plain `.ko`, the name the
    /// modules.dep that /init's depmod writes will list.
    name: String,
}

/// Finds `module` (a `MODULES` entry) under `modules_dir`, plain or compressed.
fn find_module(modules_dir: &Path, module: &str) -> Option<ModuleFile> {
    Compression::ALL.into_iter().find_map(|compression| {
        let source = modules_dir.join(format!("{module}{}", compression.suffix()));
        source.is_file().then(|| ModuleFile { source, compression, name: format!("{module}.ko") })
    })
}

/// The plain module: `file.source` itself, or a copy decompressed into `stage`.
///
/// The decompressors are programs the VM tier has anyway: busybox (the VM's userland, which
/// `cargo xtask setup` installs) for xz and gzip, so Debian's kernels need nothing more, and
/// the `zstd` program for zstd. A decompression crate would add a C build (liblzma-sys,
/// zstd-sys) to every xtask build for a few hundred kilobytes of modules per VM boot.
fn plain_module(file: &ModuleFile, busybox: &Path, stage: &Path) -> Result<PathBuf> {
    let mut decompress = match file.compression {
        Compression::None => return Ok(file.source.clone()),
        Compression::Xz => {
            let mut cmd = Command::new(busybox);
            cmd.args(["xz", "-dc"]);
            cmd
        }
        Compression::Gzip => {
            let mut cmd = Command::new(busybox);
            cmd.args(["gzip", "-dc"]);
            cmd
        }
        Compression::Zstd => {
            let zstd = cmd::on_path("zstd").with_context(|| {
                format!(
                    "{} is compressed with zstd, and the zstd program is not installed \
                     (apt-get install zstd)",
                    file.source.display()
                )
            })?;
            let mut cmd = Command::new(zstd);
            cmd.args(["-dcq"]);
            cmd
        }
    };
    decompress.arg(&file.source);
    let plain = stage.join("modules").join(&file.name);
    fs::create_dir_all(plain.parent().expect("a module has a directory"))?;
    let out = File::create(&plain).with_context(|| format!("creating {}", plain.display()))?;
    let output = decompress
        .stdin(Stdio::null())
        .stdout(out)
        .output()
        .with_context(|| format!("cannot start `{}`", cmd::display(&decompress)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            cmd::display(&decompress),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // Busybox's xz applet copies out nothing and exits 0 for input that is not xz at all.
    let mut magic = [0; 4];
    let is_elf = File::open(&plain).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && magic == *b"\x7fELF";
    if !is_elf {
        bail!(
            "`{}` did not give a kernel module (no ELF header): is {} damaged?",
            cmd::display(&decompress),
            file.source.display()
        );
    }
    Ok(plain)
}

/// Builds `vm_dir/initramfs.cpio` and returns its path. `kernel` supplies the modules.
pub fn build(
    vm_dir: &Path,
    kernel: &Kernel,
    tcptrace: &Path,
    workload: &Workload<'_>,
) -> Result<PathBuf> {
    let stage = vm_dir.join("stage");
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;
    let mut archive = Archive::default();
    let mut dynamic: Vec<PathBuf> = Vec::new();

    for dir in ["bin", "dev", "etc", "proc", "root", "run", "sys", "tmp", "tests"] {
        archive.dir(dir);
    }
    // PID 1 gets /dev/console as stdio before /init can mount devtmpfs.
    archive.char_device("dev/console", 5, 1, 0o600);
    archive.char_device("dev/null", 1, 3, 0o666);
    archive.file_bytes(
        "etc/hosts",
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        0o644,
    );
    archive.file_bytes("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644);
    archive.file_bytes("etc/group", "root:x:0:\n", 0o644);

    let busybox = cmd::on_path("busybox")
        .context("busybox not found: `cargo xtask setup` installs busybox-static")?;
    archive.file_from("bin/busybox", &busybox, 0o755);
    dynamic.push(busybox.clone());
    let mut host_tools = BTreeSet::new();
    for tool in HOST_TOOLS {
        if let Some(path) = cmd::on_path(tool) {
            archive.file_from(&format!("bin/{tool}"), &path, 0o755);
            dynamic.push(path);
            host_tools.insert(tool);
        }
    }
    let applets = cmd::output(Command::new(&busybox).arg("--list"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        if !host_tools.contains(applet) && !applet.contains('/') {
            archive.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    // The kernel runs /sbin/modprobe to load a module on demand.
    archive.symlink("sbin/modprobe", "/bin/busybox");
    let modules_root = format!("lib/modules/{}", kernel.release);
    let mut modules = 0;
    for module in MODULES {
        let Some(file) = find_module(&kernel.modules, module) else {
            say!(
                "vm: warning: the kernel package has no {}/{module}.ko (nor .ko.xz, .ko.zst, \
                 .ko.gz)",
                kernel.modules.display()
            );
            continue;
        };
        let plain = plain_module(&file, &busybox, &stage)?;
        archive.file_from(&format!("{modules_root}/{}", file.name), &plain, 0o644);
        modules += 1;
    }
    for index in MODULE_INDEXES {
        let source = kernel.modules.join(index);
        if source.is_file() {
            archive.file_from(&format!("{modules_root}/{index}"), &source, 0o644);
        } else {
            say!("vm: warning: the kernel package has no {}", source.display());
        }
    }

    let tcptrace = stripped(tcptrace, &stage.join("tcptrace"));
    archive.file_from("bin/tcptrace", &tcptrace, 0o755);
    dynamic.push(tcptrace);
    if let Workload::Tests { tests, .. } = workload {
        for (index, test) in in_vm(tests).enumerate() {
            // Numbered so /tests/* globs in cargo's order; named after the test target.
            let name = format!("{:02}-{}", index + 1, test.name.replace('/', "-"));
            let copy = stripped(&test.path, &stage.join(&name));
            archive.file_from(&format!("tests/{name}"), &copy, 0o755);
            dynamic.push(copy);
        }
    }

    let mut libraries = BTreeSet::new();
    for binary in &dynamic {
        libraries.extend(ldd::files(binary)?);
    }
    for library in &libraries {
        // The loader finds them at the paths ldd printed (the dynamic loader's own path is
        // baked into each binary), so store the real file there, whatever symlinks the host
        // uses (/lib64 -> /lib/x86_64-linux-gnu, merged /usr).
        let real = fs::canonicalize(library)
            .with_context(|| format!("resolving {}", library.display()))?;
        let mode = fs::metadata(&real)?.permissions().mode() & 0o777;
        archive.file_from(&library.to_string_lossy(), &real, mode);
    }

    archive.file_bytes("init", init_script(workload), 0o755);
    let path = vm_dir.join("initramfs.cpio");
    let out = BufWriter::new(
        File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    let size = archive.write_to(out)?;
    say!(
        "vm: wrote {} ({} MB: busybox, tcptrace, {} test executable(s), {} shared libraries, \
         {modules} kernel modules)",
        path.display(),
        size / 1_000_000,
        match workload {
            Workload::Tests { tests, .. } => in_vm(tests).count(),
            Workload::Smoke | Workload::Bench(_) => 0,
        },
        libraries.len()
    );
    Ok(path)
}

fn in_vm(tests: &[TestExe]) -> impl Iterator<Item = &TestExe> {
    tests.iter().filter(|t| !NOT_IN_VM.contains(&t.name.as_str()))
}

/// A copy of `binary` without debug info (it can be hundreds of MB, and the VM unpacks
/// the initramfs into RAM), or the binary itself if objcopy is not there.
fn stripped(binary: &Path, copy: &Path) -> PathBuf {
    if cmd::on_path("objcopy").is_some() {
        let mut objcopy = Command::new("objcopy");
        objcopy.arg("--strip-debug").arg(binary).arg(copy);
        match cmd::output(&mut objcopy) {
            Ok(_) => return copy.to_owned(),
            Err(error) => say!("vm: warning: {error:#}; copying {} as it is", binary.display()),
        }
    }
    binary.to_owned()
}

/// /init: PID 1 of the VM. A POSIX shell script for busybox ash.
fn init_script(workload: &Workload<'_>) -> String {
    let run = match workload {
        Workload::Tests { args, .. } => {
            let args: String = args
                .iter()
                .flat_map(|a| [" ".to_owned(), cmd::quote(a)])
                .collect();
            format!(
                r#"    for exe in /tests/*; do
        echo "TCPTRACE-VM-RUN $path $exe"
        TCPTRACE_BIN=/bin/tcptrace TCPTRACE_ATTACH="$path" TCPTRACE_TEST_CHURN=3000 timeout -s KILL "$timeout" "$exe" --test-threads=1{args} || result=failed
        # No tracer a test left behind may watch the next path's tests.
        killall -KILL tcptrace 2>/dev/null
    done"#
            )
        }
        Workload::Bench(BenchPlan { rounds, seconds }) => format!(
            r#"    round=1
    while [ $round -le {rounds} ]; do
        # Alternate which runs first, so that an order effect lands on both.
        if [ $((round % 2)) = 1 ]; then order="none $path"; else order="$path none"; fi
        for tracer in $order; do
            echo "TCPTRACE-VM-RUN $path round $round: $tracer"
            if [ "$tracer" != none ]; then
                rm -f /tmp/watch.json
                /bin/tcptrace watch --json --attach "$path" --interval 1h >/tmp/watch.json 2>/tmp/watch.err &
                tracer_pid=$!
                waited=0
                while [ ! -s /tmp/watch.json ] && [ $waited -lt 1200 ]; do sleep 0.1; waited=$((waited + 1)); done
                [ -s /tmp/watch.json ] || {{ result=failed; cat /tmp/watch.err; }}
            fi
            churn=$(/bin/tcptrace load churn --duration {seconds}s) || result=failed
            echo "TCPTRACE-VM-BENCH $path $round $tracer $churn"
            if [ "$tracer" != none ]; then
                kill -INT $tracer_pid
                wait $tracer_pid
                echo "TCPTRACE-VM-BENCH-WATCH $path $round $(tail -n 1 /tmp/watch.json)"
            fi
        done
        round=$((round + 1))
    done"#
        ),
        Workload::Smoke => r#"    echo "TCPTRACE-VM-RUN $path /bin/tcptrace --help"
    TCPTRACE_ATTACH="$path" timeout -s KILL "$timeout" /bin/tcptrace --help >/dev/null || result=failed
    # tcptrace reads the connections that exist through sock_diag (tcp_diag loads on demand).
    ss -tan || result=failed
    grep _diag /proc/modules"#
            .to_owned(),
    };
    // Only a fallback: the host names the paths on the kernel command line.
    let paths = AttachPath::list(&AttachPath::VM_DEFAULT, " ");
    format!(
        r#"#!/bin/sh
# PID 1 of the tcptrace test VM, written by `cargo xtask vm-test` (xtask/src/vm/initramfs.rs).
# The kernel command line picks the attach paths (tcptrace.paths=a,b) and how long each test
# executable may run (tcptrace.timeout=SECONDS). The host reads the TCPTRACE-VM-* lines.
export PATH=/bin HOME=/root RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
# Index the modules, so that the kernel's requests (`modprobe net-pf-16-proto-4-type-2-6`
# when sock_diag is first asked about TCP) are met.
depmod
ip link set lo up
ulimit -n {NOFILE}
ulimit -l unlimited
cd /tmp

paths="{paths}"
timeout=600
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        tcptrace.paths=*) paths=$(echo "${{arg#tcptrace.paths=}}" | tr , ' ') ;;
        tcptrace.timeout=*) timeout="${{arg#tcptrace.timeout=}}" ;;
    esac
done

echo "TCPTRACE-VM-KERNEL $(uname -r)"
[ -r /sys/kernel/btf/vmlinux ] || echo "TCPTRACE-VM-WARNING no /sys/kernel/btf/vmlinux"
[ -d /sys/kernel/tracing/events/sock ] || echo "TCPTRACE-VM-WARNING no sock tracepoints in tracefs"
for path in $paths; do
    echo "TCPTRACE-VM-BEGIN $path"
    result=passed
{run}
    echo "TCPTRACE-VM-RESULT $path $result"
done
echo "TCPTRACE-VM-DONE"
poweroff -f
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_runs_each_test_executable_per_path() {
        let tests = [TestExe { name: "test/live".into(), path: "/x".into() }];
        let args = ["listener counts".to_owned()];
        let script = init_script(&Workload::Tests { tests: &tests, args: &args });
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains(
            r#"TCPTRACE_BIN=/bin/tcptrace TCPTRACE_ATTACH="$path" TCPTRACE_TEST_CHURN=3000 timeout -s KILL "$timeout" "$exe" --test-threads=1 'listener counts' || result=failed"#
        ));
        assert!(script.contains(r#"echo "TCPTRACE-VM-RESULT $path $result""#));
        assert!(script.contains("${arg#tcptrace.paths=}"));
        let paths = AttachPath::VM_DEFAULT.map(AttachPath::as_str).join(" ");
        assert!(script.contains(&format!("\npaths=\"{paths}\"\n")), "{script}");
        assert!(script.trim_end().ends_with("poweroff -f"));
        let smoke = init_script(&Workload::Smoke);
        assert!(smoke.contains("/bin/tcptrace --help >/dev/null || result=failed"));
        assert!(!smoke.contains("/tests/*"));
        let bench = init_script(&Workload::Bench(BenchPlan { rounds: 3, seconds: 4 }));
        assert!(bench.contains("while [ $round -le 3 ]; do"));
        assert!(bench.contains("churn=$(/bin/tcptrace load churn --duration 4s) || result=failed"));
        assert!(bench.contains(r#"echo "TCPTRACE-VM-BENCH $path $round $tracer $churn""#));
    }

    /// A scratch directory of the test's own, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xtask-initramfs-{name}-{}", std::process::id()));
            if dir.exists() {
                fs::remove_dir_all(&dir).unwrap();
            }
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn file(&self, path: &str, contents: &[u8]) -> PathBuf {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn finds_modules_plain_or_compressed_and_names_them_plain() {
        let tree = TempDir::new("find");
        let debian12 = tree.file("bookworm/kernel/net/ipv4/tcp_diag.ko", b"ELF");
        let debian13 = tree.file("trixie/kernel/net/ipv4/tcp_diag.ko.xz", b"xz");
        let zstd = tree.file("zst/kernel/net/ipv4/tcp_diag.ko.zst", b"zst");
        let gzip = tree.file("gz/kernel/net/ipv4/tcp_diag.ko.gz", b"gz");
        for (dir, source, compression) in [
            ("bookworm", debian12, Compression::None),
            ("trixie", debian13, Compression::Xz),
            ("zst", zstd, Compression::Zstd),
            ("gz", gzip, Compression::Gzip),
        ] {
            assert_eq!(
                find_module(&tree.0.join(dir), "kernel/net/ipv4/tcp_diag"),
                Some(ModuleFile {
                    source,
                    compression,
                    name: "kernel/net/ipv4/tcp_diag.ko".into()
                }),
                "{dir}"
            );
        }
        // Another module's name, or a directory where the module should be, is not it.
        tree.file("bookworm/kernel/net/ipv4/inet_diag.ko.bak", b"");
        fs::create_dir_all(tree.0.join("bookworm/kernel/net/ipv4/udp_diag.ko")).unwrap();
        assert_eq!(find_module(&tree.0.join("bookworm"), "kernel/net/ipv4/inet_diag"), None);
        assert_eq!(find_module(&tree.0.join("bookworm"), "kernel/net/ipv4/udp_diag"), None);
        assert_eq!(find_module(&tree.0.join("nowhere"), "kernel/net/ipv4/tcp_diag"), None);
        // A plain module wins over a compressed one beside it.
        tree.file("trixie/kernel/net/ipv4/tcp_diag.ko", b"ELF");
        let found = find_module(&tree.0.join("trixie"), "kernel/net/ipv4/tcp_diag").unwrap();
        assert_eq!(found.compression, Compression::None);
    }

    #[test]
    fn every_module_is_looked_for_by_its_bare_name() {
        for module in MODULES {
            assert!(module.starts_with("kernel/") && !module.contains(".ko"), "{module}");
        }
    }

    #[test]
    fn decompresses_a_module_with_busybox() {
        // `cargo xtask setup` installs busybox-static for the VM tier; gzip is essential
        // in Debian.
        let (Some(busybox), Some(gzip)) = (cmd::on_path("busybox"), cmd::on_path("gzip")) else {
            eprintln!("skipped: needs busybox and gzip on PATH");
            return;
        };
        let tree = TempDir::new("unpack");
        let module: Vec<u8> = b"\x7fELF"
            .iter()
            .copied()
            .chain((0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()))
            .collect();
        tree.file("pkg/kernel/drivers/net/veth.ko", &module);
        cmd::output(Command::new(gzip).arg(tree.0.join("pkg/kernel/drivers/net/veth.ko"))).unwrap();
        let file = find_module(&tree.0.join("pkg"), "kernel/drivers/net/veth").unwrap();
        assert_eq!(file.compression, Compression::Gzip);
        let plain = plain_module(&file, &busybox, &tree.0.join("stage")).unwrap();
        assert_eq!(plain, tree.0.join("stage/modules/kernel/drivers/net/veth.ko"));
        assert_eq!(fs::read(&plain).unwrap(), module);
        // A plain module is used where it is.
        let tcp_diag = tree.file("pkg/kernel/net/ipv4/tcp_diag.ko", b"ELF");
        let file = find_module(&tree.0.join("pkg"), "kernel/net/ipv4/tcp_diag").unwrap();
        assert_eq!(plain_module(&file, &busybox, &tree.0.join("stage")).unwrap(), tcp_diag);
        // A damaged one is an error that names the command, whether the decompressor
        // notices (gzip) or not (busybox's xz gives nothing and exits 0).
        tree.file("bad/kernel/net/ipv4/tcp_diag.ko.xz", b"not xz");
        tree.file("bad/kernel/net/ipv4/inet_diag.ko.gz", b"not gzip");
        for (module, says) in [("tcp_diag", "xz -dc"), ("inet_diag", "gzip -dc")] {
            let module = format!("kernel/net/ipv4/{module}");
            let file = find_module(&tree.0.join("bad"), &module).unwrap();
            let error = plain_module(&file, &busybox, &tree.0.join("stage")).unwrap_err();
            assert!(format!("{error:#}").contains(says), "{error:#}");
        }
    }
}
