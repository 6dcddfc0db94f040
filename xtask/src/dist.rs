//! `cargo xtask dist`: everything a box without a Rust toolchain needs, in one folder and
//! one tarball: the release binary (debug info stripped; the BPF object is inside it),
//! shell completions, man pages and the systemd unit.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{
    cargo::{self, Profile},
    cmd, ldd, setup,
};

#[derive(Args)]
pub struct DistArgs {
    /// Where to write the files (emptied first); default: target/dist.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn dist(args: &DistArgs) -> Result<ExitCode> {
    setup::ensure(false)?;
    let binary = cargo::build_tcptrace(Profile::Release)?;
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => cargo::target_dir()?.join("dist"),
    };
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("emptying {}", out.display()))?;
    }
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let shipped = out.join("tcptrace");
    if cmd::on_path("strip").is_some() {
        // Debug info is most of the release binary (debug = 1 for useful backtraces here);
        // the copy keeps the symbols, so a panic on the box still names functions.
        cmd::run(Command::new("strip").arg("--strip-debug").arg("-o").arg(&shipped).arg(&binary))?;
    } else {
        say!("strip not found: shipping the binary with its debug info");
        fs::copy(&binary, &shipped).with_context(|| format!("copying {}", binary.display()))?;
    }

    let mut docs = cargo::cargo();
    docs.args(["run", "--release", "--quiet", "-p", "tcptrace", "--example", "dist-docs", "--"])
        .arg(&out);
    cmd::run(&mut docs)?;

    let unit = cargo::workspace_root().join("contrib/tcptrace.service");
    fs::copy(&unit, out.join("tcptrace.service"))
        .with_context(|| format!("copying {}", unit.display()))?;

    let version = cmd::output(Command::new(&shipped).arg("--version"))
        .context("the shipped binary does not run")?;
    let version = version.split_whitespace().nth(1).unwrap_or("unknown").to_owned();
    let needs = Needs::of(&shipped);
    fs::write(out.join("NEEDS"), needs.text()).context("writing NEEDS")?;

    let tarball = out.with_file_name(tarball_name(&version, std::env::consts::ARCH));
    cmd::run(Command::new("tar").arg("-C").arg(&out).arg("-czf").arg(&tarball).arg("."))?;

    say!("dist: wrote {} and {}", out.display(), tarball.display());
    for line in needs.text().lines() {
        say!("dist: {line}");
    }
    say!(
        "dist: on the box: tar -xzf {} -C /usr/local/lib/tcptrace, then see README 'Installing on a box without Rust'",
        tarball.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    Ok(ExitCode::SUCCESS)
}

fn tarball_name(version: &str, arch: &str) -> String {
    format!("tcptrace-{version}-{arch}-linux-gnu.tar.gz")
}

/// What the shipped binary asks of the box it runs on.
#[derive(Debug, Default, PartialEq, Eq)]
struct Needs {
    /// Shared libraries besides the dynamic loader and the vDSO.
    libraries: Vec<String>,
    /// The newest glibc symbol version it links against, e.g. (2, 34).
    glibc: Option<(u32, u32)>,
}

impl Needs {
    fn of(binary: &Path) -> Self {
        let symbols = cmd::query(Command::new("objdump").arg("-T").arg(binary)).unwrap_or_default();
        Self { libraries: ldd::needed(binary), glibc: newest_glibc(&symbols) }
    }

    fn text(&self) -> String {
        let glibc = self.glibc.map_or_else(
            || "unknown (objdump not found)".to_owned(),
            |(major, minor)| format!("{major}.{minor} or newer"),
        );
        format!(
            "shared libraries: {}\nglibc: {glibc}\nkernel: Linux 5.8+ (BPF ring buffer); BTF \
             (/sys/kernel/btf/vmlinux) for every attach path but the classic tracepoint\n",
            if self.libraries.is_empty() { "none".to_owned() } else { self.libraries.join(", ") }
        )
    }
}

/// The highest `GLIBC_x.y` symbol version in `objdump -T` output.
fn newest_glibc(symbols: &str) -> Option<(u32, u32)> {
    symbols
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
            Some((major, minor))
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_glibc_compares_versions_as_numbers() {
        let objdump = "0000 DF *UND* 0000 (GLIBC_2.2.5) memcpy\n\
                       0000 DF *UND* 0000 (GLIBC_2.34) __libc_start_main\n\
                       0000 DF *UND* 0000 (GLIBC_2.9) pipe2\n\
                       0000 DF *UND* 0000  GLIBC_2.3 gnu_get_libc_version\n";
        assert_eq!(newest_glibc(objdump), Some((2, 34)));
        assert_eq!(newest_glibc("no versions here"), None);
    }

    #[test]
    fn needs_read_like_a_checklist() {
        let needs = Needs { libraries: vec!["libc.so.6".into()], glibc: Some((2, 34)) };
        let text = needs.text();
        assert!(text.contains("shared libraries: libc.so.6\n"), "{text}");
        assert!(text.contains("glibc: 2.34 or newer\n"), "{text}");
        assert_eq!(tarball_name("0.1.0", "x86_64"), "tcptrace-0.1.0-x86_64-linux-gnu.tar.gz");
    }
}
