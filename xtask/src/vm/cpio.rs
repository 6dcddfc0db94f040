//! A `newc` cpio writer: the format the kernel unpacks an initramfs from.
//!
//! Written here rather than with the `cpio` tool so the archive can hold device nodes
//! (`/dev/console` must exist before PID 1 starts, or init has no stdout) without running
//! `mknod` on the host, and so every entry is owned by root with a fixed mtime.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

#[derive(Debug)]
enum Entry {
    Dir,
    File { source: Source, mode: u32 },
    Symlink { target: String },
    CharDevice { major: u32, minor: u32, mode: u32 },
}

#[derive(Debug)]
enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// The entries of an archive, by path (no leading `/`). Parents are added implicitly, and
/// paths sort so that a directory always comes before what it holds.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn dir(&mut self, path: &str) {
        let path = normalize(path);
        self.parents(&path);
        self.entries.entry(path).or_insert(Entry::Dir);
    }

    /// A regular file with the contents of `source` (read when the archive is written).
    pub fn file_from(&mut self, path: &str, source: &Path, mode: u32) {
        self.insert(path, Entry::File { source: Source::Path(source.to_owned()), mode });
    }

    pub fn file_bytes(&mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) {
        self.insert(path, Entry::File { source: Source::Bytes(bytes.into()), mode });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Entry::Symlink { target: target.to_owned() });
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32, mode: u32) {
        self.insert(path, Entry::CharDevice { major, minor, mode });
    }

    fn insert(&mut self, path: &str, entry: Entry) {
        let path = normalize(path);
        self.parents(&path);
        self.entries.insert(path, entry);
    }

    fn parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(slash) = path[at..].find('/') {
            let parent = &path[..at + slash];
            self.entries.entry(parent.to_owned()).or_insert(Entry::Dir);
            at += slash + 1;
        }
    }

    /// Writes the archive (with its trailer) and returns the number of bytes written.
    pub fn write_to(&self, out: impl Write) -> Result<u64> {
        let mut out = Counting { inner: out, written: 0 };
        for (ino, (path, entry)) in (1..).zip(&self.entries) {
            match entry {
                Entry::Dir => header(
                    &mut out,
                    &Header { ino, mode: S_IFDIR | 0o755, nlink: 2, ..Header::new(path) },
                )?,
                Entry::Symlink { target } => {
                    header(
                        &mut out,
                        &Header {
                            ino,
                            mode: S_IFLNK | 0o777,
                            size: target.len(),
                            ..Header::new(path)
                        },
                    )?;
                    data(&mut out, target.as_bytes())?;
                }
                Entry::CharDevice { major, minor, mode } => header(
                    &mut out,
                    &Header {
                        ino,
                        mode: S_IFCHR | mode,
                        rdev: (*major, *minor),
                        ..Header::new(path)
                    },
                )?,
                Entry::File { source: Source::Bytes(bytes), mode } => {
                    header(
                        &mut out,
                        &Header {
                            ino,
                            mode: S_IFREG | mode,
                            size: bytes.len(),
                            ..Header::new(path)
                        },
                    )?;
                    data(&mut out, bytes)?;
                }
                Entry::File { source: Source::Path(source), mode } => {
                    let mut file = File::open(source)
                        .with_context(|| format!("reading {}", source.display()))?;
                    let size = usize::try_from(file.metadata()?.len()).context("file too large")?;
                    header(
                        &mut out,
                        &Header { ino, mode: S_IFREG | mode, size, ..Header::new(path) },
                    )?;
                    let copied = io::copy(&mut file, &mut out)?;
                    if copied != size as u64 {
                        bail!("{} changed size while being archived", source.display());
                    }
                    pad(&mut out, size)?;
                }
            }
        }
        header(&mut out, &Header { nlink: 1, ..Header::new("TRAILER!!!") })?;
        out.flush()?;
        Ok(out.written)
    }
}

fn normalize(path: &str) -> String {
    path.trim_start_matches('/').trim_end_matches('/').to_owned()
}

struct Header<'a> {
    name: &'a str,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
}

impl<'a> Header<'a> {
    fn new(name: &'a str) -> Self {
        Self { name, ino: 0, mode: 0, nlink: 1, size: 0, rdev: (0, 0) }
    }
}

/// `070701`, thirteen 8-digit hex fields, the NUL-terminated name, padding to 4 bytes.
fn header(out: &mut impl Write, h: &Header<'_>) -> Result<()> {
    let name_size = h.name.len() + 1;
    let fields = [
        h.ino,
        h.mode,
        0, // uid: root
        0, // gid: root
        h.nlink,
        0, // mtime: fixed, so the archive depends on contents only
        u32::try_from(h.size).context("cpio newc holds files up to 4 GiB")?,
        0, // devmajor
        0, // devminor
        h.rdev.0,
        h.rdev.1,
        u32::try_from(name_size)?,
        0, // check: unused by newc
    ];
    let mut text = String::with_capacity(110);
    text.push_str("070701");
    for field in fields {
        write!(text, "{field:08x}").expect("writing to a String cannot fail");
    }
    out.write_all(text.as_bytes())?;
    out.write_all(h.name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, 110 + name_size)
}

fn data(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes)?;
    pad(out, bytes.len())
}

fn pad(out: &mut impl Write, len: usize) -> Result<()> {
    out.write_all(&[0; 3][..(4 - len % 4) % 4])?;
    Ok(())
}

struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Name, mode, data and device numbers of an entry.
    type Read = (String, u32, Vec<u8>, (u32, u32));

    /// Reads back every entry.
    fn read_back(mut bytes: &[u8]) -> Vec<Read> {
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        let mut entries = Vec::new();
        let total = bytes.len();
        loop {
            assert_eq!(&bytes[..6], b"070701");
            assert_eq!((total - bytes.len()) % 4, 0, "entries start 4-aligned");
            let (mode, size, rdev, name_size) = (
                field(bytes, 1),
                field(bytes, 6) as usize,
                (field(bytes, 9), field(bytes, 10)),
                field(bytes, 11) as usize,
            );
            let name = std::str::from_utf8(&bytes[110..110 + name_size - 1]).unwrap().to_owned();
            assert_eq!(bytes[110 + name_size - 1], 0);
            let data_at = (110 + name_size).next_multiple_of(4);
            let data = bytes[data_at..data_at + size].to_vec();
            bytes = &bytes[(data_at + size).next_multiple_of(4)..];
            if name == "TRAILER!!!" {
                assert!(bytes.is_empty());
                return entries;
            }
            entries.push((name, mode, data, rdev));
        }
    }

    #[test]
    fn writes_parents_first_and_reads_back() {
        let mut archive = Archive::default();
        archive.file_bytes("/init", "#!/bin/sh\n", 0o755);
        archive.symlink("/bin/sh", "busybox");
        archive.char_device("/dev/console", 5, 1, 0o600);
        archive.file_bytes("/lib/x86_64-linux-gnu/libc.so.6", vec![7; 5], 0o644);
        archive.dir("/tmp/");
        let mut bytes = Vec::new();
        let written = archive.write_to(&mut bytes).unwrap();
        assert_eq!(written, bytes.len() as u64);
        let entries = read_back(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/x86_64-linux-gnu",
                "lib/x86_64-linux-gnu/libc.so.6",
                "tmp"
            ]
        );
        assert_eq!(entries[0].1, S_IFDIR | 0o755);
        assert_eq!(
            (entries[1].1, entries[1].2.as_slice()),
            (S_IFLNK | 0o777, b"busybox".as_slice())
        );
        assert_eq!((entries[3].1, entries[3].3), (S_IFCHR | 0o600, (5, 1)));
        assert_eq!(
            (entries[4].1, entries[4].2.as_slice()),
            (S_IFREG | 0o755, b"#!/bin/sh\n".as_slice())
        );
        assert_eq!(entries[7].2, [7; 5]);
    }

    #[test]
    fn copies_files_from_disk() {
        let source = std::env::temp_dir().join(format!("xtask-cpio-test-{}", std::process::id()));
        std::fs::write(&source, b"abcdef").unwrap();
        let mut archive = Archive::default();
        archive.file_from("bin/x", &source, 0o755);
        let mut bytes = Vec::new();
        archive.write_to(&mut bytes).unwrap();
        std::fs::remove_file(&source).unwrap();
        let entries = read_back(&bytes);
        assert_eq!(entries[1].0, "bin/x");
        assert_eq!(entries[1].2, b"abcdef");
    }
}
