//! The VM's kernel: a stock Debian cloud kernel (BTF, kprobes and ftrace built in), 6.1 by
//! default, downloaded with apt once and unpacked under target/vm/kernels/.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup};

/// The kernel the project was checked against (Debian's 6.1.176, see
/// ../shared/PLATFORM.md). When Debian drops it from the archive, the newest
/// `linux-image-6.1.0-*-cloud-amd64-unsigned` is used instead.
pub const PINNED: &str = "linux-image-6.1.0-50-cloud-amd64-unsigned";

const VERSION_FILE: &str = ".tcptrace-package-version";

#[derive(Debug, Clone)]
pub struct Kernel {
    /// Debian package name.
    pub package: String,
    /// Debian package version, e.g. `6.1.176-1`.
    pub version: String,
    /// What `uname -r` will say, e.g. `6.1.0-50-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` (or `usr/lib/modules/<release>`) of the unpacked package.
    pub modules: PathBuf,
}

impl Kernel {
    /// A completely unpacked kernel in `dir`, if there is one.
    fn load(dir: &Path, package: &str) -> Option<Self> {
        let version = fs::read_to_string(dir.join(VERSION_FILE)).ok()?.trim().to_owned();
        let vmlinuz = fs::read_dir(dir.join("boot"))
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })?;
        let release =
            vmlinuz.file_name()?.to_string_lossy().trim_start_matches("vmlinuz-").to_owned();
        Some(Self {
            package: package.to_owned(),
            version,
            modules: modules_dir(dir, &release),
            release,
            vmlinuz,
        })
    }
}

/// Where the unpacked package `dir` keeps the modules of `release`. Up to Debian 12 the
/// kernel packages ship them under `lib/modules/`; Debian 13 (merged /usr, no more
/// compatibility links in packages) under `usr/lib/modules/`. When neither exists, the
/// classic place, so the initramfs's warnings name a path.
fn modules_dir(dir: &Path, release: &str) -> PathBuf {
    let classic = dir.join("lib/modules").join(release);
    let merged = dir.join("usr/lib/modules").join(release);
    if !classic.is_dir() && merged.is_dir() { merged } else { classic }
}

/// Returns the kernel to boot: `requested` if given; otherwise the pinned package, or the
/// newest matching one if the pinned one is not available. Downloads and unpacks it unless
/// a previous run did.
pub fn fetch(vm_dir: &Path, requested: Option<&str>) -> Result<Kernel> {
    let kernels = vm_dir.join("kernels");
    if let Some(package) = requested {
        return unpacked(&kernels, package);
    }
    if let Some(kernel) = Kernel::load(&kernels.join(PINNED), PINNED) {
        say!("vm: kernel {PINNED} ({}) already unpacked; skipping the download", kernel.version);
        return Ok(kernel);
    }
    let mut candidates = available()?;
    if candidates.is_empty() {
        if !cmd::is_root() {
            bail!(
                "apt knows no linux-image-6.1.0-*-cloud-amd64-unsigned: run `apt-get update` as root"
            );
        }
        setup::apt_update_once()?;
        candidates = available()?;
    }
    let order = preference(&candidates);
    if order.is_empty() {
        bail!(
            "apt knows no linux-image-6.1.0-*-cloud-amd64-unsigned package: is this Debian 12 \
             with bookworm in its apt sources? Or pass --kernel-package NAME"
        );
    }
    if order[0] != PINNED {
        say!("vm: {PINNED} is not available; using the newest 6.1 cloud kernel, {}", order[0]);
    }
    let mut last_error = None;
    for package in order.iter().take(2) {
        match unpacked(&kernels, package) {
            Ok(kernel) => return Ok(kernel),
            Err(error) => {
                say!("vm: could not get {package}: {error:#}");
                last_error = Some(error);
            }
        }
    }
    Err(last_error.expect("at least one candidate was tried"))
}

/// Names of the 6.1 cloud kernel packages apt knows.
fn available() -> Result<Vec<String>> {
    let out = cmd::output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
    ]))?;
    Ok(out.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_owned).collect())
}

/// The pinned package first if it is available, then the rest newest first (by ABI number).
fn preference(available: &[String]) -> Vec<String> {
    let mut newest: Vec<(u32, &String)> =
        available.iter().filter_map(|name| abi(name).map(|abi| (abi, name))).collect();
    newest.sort_by(|a, b| b.cmp(a));
    let mut order: Vec<String> = Vec::new();
    if newest.iter().any(|(_, name)| *name == PINNED) {
        order.push(PINNED.to_owned());
    }
    order.extend(newest.into_iter().map(|(_, name)| name.clone()).filter(|name| name != PINNED));
    order
}

/// 50 in `linux-image-6.1.0-50-cloud-amd64-unsigned`.
fn abi(package: &str) -> Option<u32> {
    package.strip_prefix("linux-image-6.1.0-")?.strip_suffix("-cloud-amd64-unsigned")?.parse().ok()
}

/// The kernel unpacked in `kernels/<package>/`, downloading and unpacking it if needed.
fn unpacked(kernels: &Path, package: &str) -> Result<Kernel> {
    let dir = kernels.join(package);
    if let Some(kernel) = Kernel::load(&dir, package) {
        say!("vm: kernel {package} ({}) already unpacked; skipping the download", kernel.version);
        return Ok(kernel);
    }
    let downloads = kernels.join("downloads");
    fs::create_dir_all(&downloads).with_context(|| format!("creating {}", downloads.display()))?;
    say!("vm: downloading {package} (26 to 35 MB) into {}", downloads.display());
    let mut download = setup::apt_get();
    if cmd::is_root() {
        // apt would otherwise try to drop to its `_apt` user, who cannot write in target/.
        download.args(["-o", "APT::Sandbox::User=root"]);
    }
    download.args(["download", package]).current_dir(&downloads);
    cmd::run(&mut download).with_context(|| {
        format!(
            "downloading {package} failed: check the network and apt sources (`cargo xtask \
             setup`, as root, adds Debian's bullseye and trixie suites for their kernels; \
             `apt-cache policy {package}` says whether apt knows it)"
        )
    })?;
    let prefix = format!("{package}_");
    let deb = fs::read_dir(&downloads)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
        .with_context(|| {
            format!("apt-get download left no {prefix}*.deb in {}", downloads.display())
        })?;
    let version =
        cmd::output(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"))?.trim().to_owned();
    // Unpack beside the final place and rename, so an interrupted run never looks finished.
    let partial = kernels.join(format!("{package}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    say!("vm: unpacking {}", deb.display());
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    fs::write(partial.join(VERSION_FILE), &version)?;
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::rename(&partial, &dir)?;
    fs::remove_file(&deb)?;
    Kernel::load(&dir, package).with_context(|| format!("{package} holds no boot/vmlinuz-*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn prefers_the_pinned_kernel_then_the_newest() {
        let apt = names(&[
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-50-cloud-amd64-unsigned",
            "linux-image-6.1.0-53-cloud-amd64-unsigned",
        ]);
        assert_eq!(
            preference(&apt),
            names(&[
                PINNED,
                "linux-image-6.1.0-56-cloud-amd64-unsigned",
                "linux-image-6.1.0-53-cloud-amd64-unsigned",
                "linux-image-6.1.0-9-cloud-amd64-unsigned",
            ])
        );
        let without_pinned = names(&[
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
        ]);
        assert_eq!(preference(&without_pinned)[0], "linux-image-6.1.0-56-cloud-amd64-unsigned");
        assert!(preference(&names(&["linux-image-6.1.0-rt-amd64"])).is_empty());
    }

    #[test]
    fn loads_an_unpacked_kernel() {
        let dir = std::env::temp_dir().join(format!("xtask-kernel-test-{}", std::process::id()));
        fs::create_dir_all(dir.join("boot")).unwrap();
        assert!(Kernel::load(&dir, PINNED).is_none(), "no version file: not finished");
        fs::write(dir.join("boot/vmlinuz-6.1.0-50-cloud-amd64"), b"").unwrap();
        fs::write(dir.join(VERSION_FILE), "6.1.176-1\n").unwrap();
        let kernel = Kernel::load(&dir, PINNED).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            (kernel.release.as_str(), kernel.version.as_str()),
            ("6.1.0-50-cloud-amd64", "6.1.176-1")
        );
    }

    #[test]
    fn finds_the_modules_in_either_layout() {
        let dir = std::env::temp_dir().join(format!("xtask-kernel-layout-{}", std::process::id()));
        let release = "6.12.57+deb13-cloud-amd64";
        // Nothing unpacked: the classic place, for the warnings to name.
        assert_eq!(modules_dir(&dir, release), dir.join("lib/modules").join(release));
        // Debian 13: merged /usr.
        let merged = dir.join("usr/lib/modules").join(release);
        fs::create_dir_all(&merged).unwrap();
        assert_eq!(modules_dir(&dir, release), merged);
        // Debian 11 and 12 (and a package with both): lib/modules.
        let classic = dir.join("lib/modules").join(release);
        fs::create_dir_all(&classic).unwrap();
        assert_eq!(modules_dir(&dir, release), classic);
        // Another release's modules do not count.
        assert_eq!(
            modules_dir(&dir, "6.1.0-50-cloud-amd64"),
            dir.join("lib/modules/6.1.0-50-cloud-amd64")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
