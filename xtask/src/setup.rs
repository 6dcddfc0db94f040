//! `cargo xtask setup`: installs what building and testing needs, and only what is missing.

use std::{
    env,
    fmt::{self, Write as _},
    fs,
    path::{Path, PathBuf},
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
const APT_PACKAGES: [(&str, &str); 10] = [
    ("llvm-22-dev", "bpf-linker is built against LLVM 22"),
    ("libzstd-dev", "bpf-linker links it"),
    ("zlib1g-dev", "bpf-linker links it"),
    ("qemu-system-x86", "the VM tier boots a 6.1 kernel with it"),
    ("busybox-static", "the VM tier's userland"),
    ("cpio", "to list the VM initramfs: cpio -itv < target/vm/initramfs.cpio"),
    ("iproute2", "ip and ss, for the tests and inside the VM"),
    ("tmux", "the live test of `tcptrace top` drives it in a real terminal"),
    ("prometheus", "promtool tests the alert rules, and a real Prometheus scrapes `serve`"),
    ("chromium", "the live test of `tcptrace report` renders its page headless and screenshots it"),
];

/// Debian suites besides the host's own whose kernels the VM tier boots
/// (`cargo xtask vm-test --kernel-package ...`), and why.
const KERNEL_SUITES: [(&str, &str); 2] =
    [("bullseye", "Debian 11's 5.10 kernels"), ("trixie", "Debian 13's 6.12 kernels")];

/// The apt sources and the pin that setup writes for `KERNEL_SUITES`, files of its own so
/// that nothing the host configured is edited.
const KERNEL_SOURCES: &str = "/etc/apt/sources.list.d/tcptrace-vm-kernels.sources";
const KERNEL_PIN: &str = "/etc/apt/preferences.d/tcptrace-vm-kernels.pref";

/// Where Debian 12 names its mirror, and what is used when it does not.
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

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
    say!(
        "setup: checking apt packages, the VM tier's kernel suites, nightly rust-src and \
         bpf-linker {BPF_LINKER_VERSION}"
    );
    let mut missing = 0;
    // Before the packages: a suite added here needs an `apt-get update`, which then serves
    // the package installs too.
    missing += kernel_suites(check_only)?;
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

/// Set once the package lists are fresh in this xtask run.
static UPDATED: AtomicBool = AtomicBool::new(false);

/// Runs `apt-get update` at most once per xtask run.
pub fn apt_update_once() -> Result<()> {
    if UPDATED.load(Ordering::SeqCst) {
        return Ok(());
    }
    apt_update()
}

/// Runs `apt-get update` now (after an apt source was added, say).
fn apt_update() -> Result<()> {
    UPDATED.store(true, Ordering::SeqCst);
    say!("setup: refreshing the apt package lists");
    cmd::run(apt_get().arg("update"))
        .context("`apt-get update` failed: check the network and apt sources")
}

/// Makes the kernels of `KERNEL_SUITES` downloadable (`apt-get download`) without letting
/// apt install or upgrade anything of the host from those suites: an apt source of its own
/// on the host's Debian mirror, and a pin of priority 1 for the suites (below the 100 of an
/// installed version, so apt never upgrades to them; they win only for a package no other
/// suite has, such as those kernels). Suites the host already names in its own sources are
/// left alone, with their priorities: they are downloadable already.
fn kernel_suites(check_only: bool) -> Result<usize> {
    if !Path::new("/etc/apt").is_dir() {
        say!("setup: skipping the VM tier's kernel suites: no /etc/apt (not Debian)");
        return Ok(0);
    }
    let host = fs::read_to_string("/etc/os-release").ok().and_then(|text| codename(&text));
    let mut configured = Vec::new();
    for file in apt_source_files()? {
        if file != Path::new(KERNEL_SOURCES)
            && let Ok(text) = fs::read_to_string(&file)
        {
            configured.extend(named_suites(&text).into_iter().map(|suite| (suite, file.clone())));
        }
    }
    let mut wanted = Vec::new();
    for (suite, why) in KERNEL_SUITES {
        if host.as_deref() == Some(suite) {
            say!("setup: skipping the {suite} suite: it is this host's own");
        } else if let Some((_, file)) = configured.iter().find(|(s, _)| s == suite) {
            say!("setup: skipping the {suite} suite: {} names it already", file.display());
        } else {
            wanted.push((suite, why));
        }
    }
    if wanted.is_empty() {
        return remove_kernel_suites(check_only);
    }
    let suites: Vec<&str> = wanted.iter().map(|(suite, _)| *suite).collect();
    let mirror = fs::read_to_string(DEBIAN_SOURCES)
        .ok()
        .and_then(|text| debian_mirror(&text))
        .unwrap_or_else(|| {
            say!("setup: {DEBIAN_SOURCES} names no Debian mirror; using {DEFAULT_MIRROR}");
            Mirror { uri: DEFAULT_MIRROR.into(), signed_by: Some(DEFAULT_KEYRING.into()) }
        });
    let sources = kernel_sources(&mirror, &suites);
    let pin = kernel_pin(&suites);
    let current = |path: &str| fs::read_to_string(path).ok();
    if current(KERNEL_SOURCES).as_deref() == Some(sources.as_str())
        && current(KERNEL_PIN).as_deref() == Some(pin.as_str())
    {
        say!(
            "setup: skipping the VM tier's kernel suites: {} already in {KERNEL_SOURCES}, pinned \
             to priority 1 in {KERNEL_PIN}",
            suites.join(" and ")
        );
        return Ok(0);
    }
    for (suite, why) in &wanted {
        say!("setup: missing the apt suite {suite} ({why} for `cargo xtask vm-test`)");
    }
    if check_only {
        return Ok(1);
    }
    if !cmd::is_root() {
        say!(
            "setup: warning: writing {KERNEL_SOURCES} and {KERNEL_PIN} needs root: until \
             `cargo xtask setup` runs as root, the VM tier can boot only this host's kernels"
        );
        return Ok(1);
    }
    // The pin first: the suites are never there without it.
    say!(
        "setup: adding {} from {} for downloads only: {KERNEL_SOURCES}, and {KERNEL_PIN} pins \
         them to priority 1 so that nothing installed on this host is upgraded from them",
        suites.join(" and "),
        mirror.uri
    );
    fs::write(KERNEL_PIN, &pin).with_context(|| format!("writing {KERNEL_PIN}"))?;
    fs::write(KERNEL_SOURCES, &sources).with_context(|| format!("writing {KERNEL_SOURCES}"))?;
    if let Err(error) = apt_update() {
        // A suite the mirror lacks would make every later `apt-get update` fail: take both
        // files away again, and leave the rest of the set-up to go on.
        let _ = fs::remove_file(KERNEL_SOURCES);
        let _ = fs::remove_file(KERNEL_PIN);
        say!(
            "setup: warning: {error:#}; removed {KERNEL_SOURCES} and {KERNEL_PIN} again, so the \
             VM tier can boot only this host's kernels"
        );
    }
    Ok(1)
}

/// Takes away the files of an earlier run that are no longer wanted (the host became
/// trixie, say, whose own suite must not stay pinned to priority 1).
fn remove_kernel_suites(check_only: bool) -> Result<usize> {
    let stale: Vec<&str> =
        [KERNEL_SOURCES, KERNEL_PIN].into_iter().filter(|path| Path::new(path).exists()).collect();
    if stale.is_empty() {
        return Ok(0);
    }
    say!(
        "setup: {} no longer needed: every kernel suite is configured otherwise",
        stale.join(" and ")
    );
    if check_only {
        return Ok(1);
    }
    if !cmd::is_root() {
        bail!("removing {} needs root: run `cargo xtask setup` as root", stale.join(" and "));
    }
    // The source first: the suites are never there without their pin.
    for path in &stale {
        say!("setup: removing {path}");
        fs::remove_file(path).with_context(|| format!("removing {path}"))?;
    }
    Ok(1)
}

/// The apt source files: /etc/apt/sources.list and sources.list.d/*.list, *.sources.
fn apt_source_files() -> Result<Vec<PathBuf>> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "list" || ext == "sources") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `VERSION_CODENAME` of /etc/os-release: `bookworm`.
fn codename(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|name| name.trim().trim_matches('"').to_owned())
        .filter(|name| !name.is_empty())
}

/// The stanzas of a deb822 file (`*.sources`): for each, its fields, keys in lower case,
/// continuation lines joined. Comments and disabled stanzas (`Enabled: no`) are dropped.
fn deb822_stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stanzas = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let mut end = |stanza: &mut Vec<(String, String)>| {
        let disabled =
            stanza.iter().any(|(key, value)| key == "enabled" && value.eq_ignore_ascii_case("no"));
        if !stanza.is_empty() && !disabled {
            stanzas.push(std::mem::take(stanza));
        }
        stanza.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            end(&mut stanza);
        } else if line.starts_with([' ', '\t']) && !line.trim_start().starts_with('#') {
            if let Some((_, value)) = stanza.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':').filter(|_| !line.starts_with('#')) {
            stanza.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    end(&mut stanza);
    stanzas
}

/// Every suite an apt source file names, in either format: `Suites:` of deb822 stanzas,
/// the third word of one-line `deb` entries.
fn named_suites(text: &str) -> Vec<String> {
    let mut suites: Vec<String> = deb822_stanzas(text)
        .iter()
        .flatten()
        .filter(|(key, _)| key == "suites")
        .flat_map(|(_, value)| value.split_whitespace().map(str::to_owned))
        .collect();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if !matches!(words.next(), Some("deb" | "deb-src")) {
            continue;
        }
        let mut words = words.peekable();
        // Options: `[arch=amd64 signed-by=...]`, maybe over several words.
        if words.peek().is_some_and(|word| word.starts_with('[')) {
            for word in words.by_ref() {
                if word.ends_with(']') {
                    break;
                }
            }
        }
        if let Some(suite) = words.nth(1) {
            suites.push(suite.to_owned());
        }
    }
    suites
}

/// The host's Debian mirror, as a deb822 sources file names it.
#[derive(Debug, PartialEq, Eq)]
struct Mirror {
    /// e.g. `http://deb.debian.org/debian`.
    uri: String,
    signed_by: Option<String>,
}

/// The first `deb` stanza whose URI is a Debian archive (`.../debian`, not `debian-security`).
fn debian_mirror(deb822: &str) -> Option<Mirror> {
    deb822_stanzas(deb822).into_iter().find_map(|stanza| {
        let field =
            |name: &str| stanza.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
        if !field("types")?.split_whitespace().any(|t| t == "deb") {
            return None;
        }
        let uri = field("uris")?
            .split_whitespace()
            .find(|uri| uri.trim_end_matches('/').ends_with("/debian"))?
            .trim_end_matches('/')
            .to_owned();
        Some(Mirror { uri, signed_by: field("signed-by") })
    })
}

/// The contents of `KERNEL_SOURCES`.
fn kernel_sources(mirror: &Mirror, suites: &[&str]) -> String {
    let mut text = format!(
        "# Written by `cargo xtask setup` (tcptrace): the kernels of these suites, for the VM tier\n\
         # (`cargo xtask vm-test --kernel-package ...`). Pinned to priority 1 in\n\
         # {KERNEL_PIN}: nothing installed on this host is\n\
         # upgraded from them.\n\
         Types: deb\nURIs: {}\nSuites: {}\nComponents: main\n",
        mirror.uri,
        suites.join(" ")
    );
    if let Some(keyring) = &mirror.signed_by {
        let _ = writeln!(text, "Signed-By: {keyring}");
    }
    text
}

/// The contents of `KERNEL_PIN`.
fn kernel_pin(suites: &[&str]) -> String {
    let mut text = format!(
        "# Written by `cargo xtask setup` (tcptrace), with\n\
         # {KERNEL_SOURCES}: apt downloads the VM tier's\n\
         # kernels from these suites, and never upgrades what this host has installed to a\n\
         # version of theirs (an installed version has priority 100).\n"
    );
    for suite in suites {
        let _ = write!(text, "\nPackage: *\nPin: release n={suite}\nPin-Priority: 1\n");
    }
    text
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

    const DEBIAN_12_SOURCES: &str = "Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

    #[test]
    fn the_mirror_is_the_debian_archive_of_debian_sources() {
        assert_eq!(
            debian_mirror(DEBIAN_12_SOURCES),
            Some(Mirror {
                uri: "http://deb.debian.org/debian".into(),
                signed_by: Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()),
            })
        );
        // A local mirror, a disabled stanza and a deb-src one before it; no keyring.
        let local = "Types: deb\nEnabled: no\nURIs: http://old.example/debian\nSuites: bookworm\n\n\
                     Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n\
                     Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n";
        assert_eq!(
            debian_mirror(local),
            Some(Mirror { uri: "http://mirror.example/debian".into(), signed_by: None })
        );
        assert_eq!(
            debian_mirror("Types: deb\nURIs: http://deb.debian.org/debian-security\n"),
            None
        );
        assert_eq!(debian_mirror(""), None);
    }

    #[test]
    fn finds_the_suites_an_apt_source_names() {
        assert_eq!(
            named_suites(DEBIAN_12_SOURCES),
            ["bookworm", "bookworm-updates", "bookworm-security"]
        );
        let one_line = "# deb http://deb.debian.org/debian trixie main\n\
                        deb http://deb.debian.org/debian bullseye main\n\
                        deb [arch=amd64 signed-by=/k.gpg] http://deb.debian.org/debian trixie-backports main\n\
                        deb-src [trusted=yes] https://example.org/x sid main\n";
        assert_eq!(named_suites(one_line), ["bullseye", "trixie-backports", "sid"]);
        let continued = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n trixie\n# bullseye\n";
        assert_eq!(named_suites(continued), ["bookworm", "trixie"]);
    }

    #[test]
    fn the_host_codename() {
        let os = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n";
        assert_eq!(codename(os).as_deref(), Some("bookworm"));
        assert_eq!(codename("VERSION_CODENAME=\"trixie\"\n").as_deref(), Some("trixie"));
        assert_eq!(codename("ID=debian\nVERSION_CODENAME=\n"), None);
    }

    #[test]
    fn the_kernel_suites_are_sourced_from_the_mirror_and_pinned_to_1() {
        let mirror = debian_mirror(DEBIAN_12_SOURCES).unwrap();
        let sources = kernel_sources(&mirror, &["bullseye", "trixie"]);
        assert!(
            sources.ends_with(
                "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bullseye trixie\n\
                 Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            ),
            "{sources}"
        );
        // What apt will read back from it.
        assert_eq!(named_suites(&sources), ["bullseye", "trixie"]);
        assert_eq!(debian_mirror(&sources), Some(mirror));
        let pin = kernel_pin(&["bullseye", "trixie"]);
        assert!(
            pin.ends_with(
                "\nPackage: *\nPin: release n=bullseye\nPin-Priority: 1\n\
                 \nPackage: *\nPin: release n=trixie\nPin-Priority: 1\n"
            ),
            "{pin}"
        );
        assert!(
            pin.lines()
                .filter(|line| !line.starts_with('#'))
                .all(|line| !line.contains("bookworm"))
        );
        let only_trixie = kernel_pin(&["trixie"]);
        assert!(!only_trixie.contains("n=bullseye") && only_trixie.contains("n=trixie"));
    }
}
