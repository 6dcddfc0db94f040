//! What `ldd` says a binary loads, read in one place for its two readers: `cargo xtask
//! dist` names the shared libraries a box must have (its NEEDS file), and the VM's
//! initramfs copies in the files the binaries load, the dynamic loader included, at the
//! paths they will look for them.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The libraries a box must have for `binary` to run: the names `ldd` lists, those it does
/// not find included, but for the vDSO and the dynamic loader, which come with every
/// dynamic binary. Empty when ldd cannot tell (not installed, a static binary, a failure).
pub fn needed(binary: &Path) -> Vec<String> {
    libraries(binary).map(|libraries| needed_names(&libraries)).unwrap_or_default()
}

/// The files the dynamic loader maps for `binary`, itself included, at the paths `ldd`
/// prints (the loader's own path is baked into each binary); none for a static binary.
/// Fails when ldd fails or does not find a library.
pub fn files(binary: &Path) -> Result<Vec<PathBuf>> {
    files_of(&libraries(binary)?).with_context(|| format!("reading `ldd {}`", binary.display()))
}

/// One line of `ldd`'s list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Library {
    /// Its first word: the name the binary asks for (`libc.so.6`), or a path for what it
    /// names by path (the dynamic loader, `/lib64/ld-linux-x86-64.so.2`).
    name: String,
    location: Location,
}

/// Where the loader finds a library.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Path(PathBuf),
    /// `=> not found`: this box lacks it.
    NotFound,
    /// No file: the vDSO (`linux-vdso.so.1`), which the kernel maps.
    NoFile,
}

impl Library {
    /// The vDSO and the dynamic loader: every dynamic binary has both, whatever it links.
    fn comes_with_every_binary(&self) -> bool {
        self.name.starts_with("linux-vdso") || self.name.contains("/ld-linux")
    }
}

impl Location {
    /// What a line says after the library's name: a path, then the load address in
    /// parentheses.
    fn of(text: &str) -> Self {
        let path = text.split(" (").next().unwrap_or(text).trim();
        // linux-vdso.so.1 has no file: the kernel maps it.
        if path.starts_with('/') { Self::Path(PathBuf::from(path)) } else { Self::NoFile }
    }
}

/// Runs `ldd binary`: nothing for a static binary.
fn libraries(binary: &Path) -> Result<Vec<Library>> {
    let output =
        Command::new("ldd").arg(binary).output().context("cannot run ldd (package libc-bin)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("`ldd {}` failed: {}", binary.display(), stderr.trim());
    }
    Ok(parse(&stdout))
}

fn parse(output: &str) -> Vec<Library> {
    output
        .lines()
        .map(str::trim)
        .filter(|line| *line != "statically linked")
        .filter_map(|line| {
            let name = line.split_whitespace().next()?;
            let location = match line.split_once(" => ") {
                Some((_, "not found")) => Location::NotFound,
                Some((_, rest)) => Location::of(rest),
                None => Location::of(line),
            };
            Some(Library { name: name.to_owned(), location })
        })
        .collect()
}

fn needed_names(libraries: &[Library]) -> Vec<String> {
    libraries
        .iter()
        .filter(|library| !library.comes_with_every_binary())
        .map(|library| library.name.clone())
        .collect()
}

fn files_of(libraries: &[Library]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for library in libraries {
        match &library.location {
            Location::Path(path) => files.push(path.clone()),
            Location::NotFound => bail!("{} not found", library.name),
            Location::NoFile => {}
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ldd` of a dynamic binary (x86_64, glibc).
    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd3e9f2000)\n\
                       \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e1c5d0000)\n\
                       \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1c3ef000)\n\
                       \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1c6b6000)\n";

    #[test]
    fn libraries_leave_out_the_loader_and_the_vdso() {
        assert_eq!(needed_names(&parse(LDD)), ["libgcc_s.so.1", "libc.so.6"]);
        // One the box lacks is still one it needs.
        assert_eq!(needed_names(&parse("\tlibfoo.so.1 => not found\n")), ["libfoo.so.1"]);
        assert!(needed_names(&parse("\tstatically linked\n")).is_empty());
        // Older ldd printed the vDSO with an arrow to nothing.
        assert!(needed_names(&parse("\tlinux-vdso.so.1 =>  (0x00007ffd)\n")).is_empty());
    }

    #[test]
    fn files_are_the_libraries_and_the_loader() {
        assert_eq!(
            files_of(&parse(LDD)).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(files_of(&parse("\tlibfoo.so.1 => not found\n")).is_err());
        assert!(files_of(&parse("\tstatically linked\n")).unwrap().is_empty());
        assert!(files_of(&parse("\tlinux-vdso.so.1 =>  (0x00007ffd)\n")).unwrap().is_empty());
    }
}
