//! Network namespaces: find every one on the box, and run work inside each.
//!
//! A netlink socket, and a file under `/proc/thread-self/net` or `/proc/sys/net`, answer
//! for the network namespace of the thread that opened it, so each foreign namespace is
//! read from a short-lived thread that first `setns()`es into it: `setns` with
//! `CLONE_NEWNET` moves only the calling thread. Namespaces are found through every task
//! (`/proc/*/task/*/ns/net`: a thread can sit in a namespace of its own) and
//! `/run/netns` (where `ip netns add` bind-mounts one that may hold no process).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::CloneFlags;

use super::Error;
use crate::error::Chain;

/// (`unshare(CLONE_NEWNET)` in one thread).
const PROC: &str = "/proc";
/// `ip netns add` bind-mounts namespaces here; one can exist with no process in it.
const RUN_NETNS: &str = "/run/netns";
/// Paths kept per namespace, to fall back on when the first one's task has exited.
const MAX_CANDIDATES: usize = 8;

/// Inode number of the network namespace the calling thread is in: the namespace a socket
/// it creates belongs to, and the number the BPF side reports (`net->ns.inum`).
///
/// This reads `/proc/thread-self/ns/net` rather than `/proc/self/ns/net`: the two differ
/// only in a thread that has `setns()`ed or `unshare()`d, and then the thread's own is the
/// one its sockets live in.
pub fn own_netns() -> io::Result<u32> {
    let meta = fs::metadata("/proc/thread-self/ns/net")?;
    ns_inode(&meta).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What [`in_every_netns`] got from each network namespace it could enter.
#[derive(Debug)]
pub struct PerNetns<T> {
    /// `(namespace inode, result)`; the calling thread's own namespace comes first.
    pub results: Vec<(u32, T)>,
    /// One line per namespace (or group of tasks) that could not be read, and why.
    pub skipped: Vec<String>,
}

/// Runs `work(inode)` once inside every network namespace that can be found (see
/// the module doc): in the calling thread for its own namespace, and in a short-lived thread
/// that `setns()`ed into it for each other one. Whatever `work` opens there (a netlink
/// socket, a file under `/proc/sys/net`) belongs to that namespace.
///
/// Fails only if `work` fails in the own namespace; a foreign namespace that cannot be
/// entered, or where `work` fails, is listed in [`PerNetns::skipped`].
pub fn in_every_netns<T, F>(work: F) -> Result<PerNetns<T>, Error>
where
    T: Send,
    F: Fn(u32) -> Result<T, Error> + Sync,
{
    let own_meta = fs::metadata("/proc/thread-self/ns/net").map_err(Error::OwnNetns)?;
    let own = ns_inode(&own_meta)
        .map_err(|why| Error::OwnNetns(io::Error::new(io::ErrorKind::InvalidData, why)))?;
    // Every nsfs inode lives on the one nsfs superblock; a file under /run/netns whose
    // mount is gone is a plain tmpfs file on another device.
    let nsfs_dev = own_meta.dev();

    let mine = work(own).map_err(|e| Error::InOwnNetns(Box::new(e)))?;
    let mut results = vec![(own, mine)];
    let mut found = Discovered::default();
    found.walk_run_netns(nsfs_dev);
    found.walk_proc(nsfs_dev);
    let mut skipped = found.unreadable_summary().into_iter().collect::<Vec<_>>();

    for (&inode, paths) in found.namespaces.iter().filter(|&(&inode, _)| inode != own) {
        match in_foreign(inode, paths, nsfs_dev, &work) {
            Ok(Some(result)) => results.push((inode, result)),
            Ok(None) => log::debug!("netns {inode}: gone before it could be opened"),
            Err(why) => skipped.push(why),
        }
    }
    Ok(PerNetns { results, skipped })
}

/// Opens the namespace, checks it is still the one that was found, and runs `work` in a
/// thread that entered it. `Ok(None)`: every path vanished (the namespace is gone or has
/// no task left that we know of). `Err`: the line for [`PerNetns::skipped`].
fn in_foreign<T, F>(
    inode: u32,
    paths: &[PathBuf],
    nsfs_dev: u64,
    work: &F,
) -> Result<Option<T>, String>
where
    T: Send,
    F: Fn(u32) -> Result<T, Error> + Sync,
{
    let mut refused = None;
    let mut opened = None;
    for path in paths {
        match File::open(path).and_then(|f| Ok((f.metadata()?, f))) {
            // The task may have exited and its pid been reused by one in another
            // namespace between the walk and now.
            Ok((meta, file)) if meta.dev() == nsfs_dev && ns_inode(&meta) == Ok(inode) => {
                opened = Some((file, path));
                break;
            }
            Ok(_) => {}
            Err(e) if vanished(&e) => {}
            Err(e) => refused = Some(format!("netns {inode} ({}): open: {e}", path.display())),
        }
    }
    let Some((file, path)) = opened else {
        return refused.map_or(Ok(None), Err);
    };
    let label = format!("netns {inode} ({})", path.display());
    // A scoped thread, so that `work` can borrow from the caller; it exits (and leaves the
    // namespace with it) before this returns.
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("tcptrace-netns".into())
            .spawn_scoped(scope, move || -> Result<T, String> {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    let hint = if errno == Errno::EPERM { " (needs CAP_SYS_ADMIN)" } else { "" };
                    format!("setns: {}{hint}", errno_name(errno))
                })?;
                work(inode).map_err(|e| Chain(&e).to_string())
            })
            .map_err(|e| format!("{label}: spawning a thread: {e}"))?;
        match worker.join() {
            Ok(Ok(result)) => Ok(Some(result)),
            Ok(Err(why)) => Err(format!("{label}: {why}")),
            Err(_) => Err(format!("{label}: the thread in the namespace panicked")),
        }
    })
}

/// `EPERM` rather than nix's `EPERM: Operation not permitted`, to keep the line short.
fn errno_name(errno: Errno) -> String {
    format!("{errno:?}")
}

/// The namespace's inode: `stat()` follows the `/proc` magic link to the nsfs inode, whose
/// number is the kernel's `ns.inum`, a `u32`.
fn ns_inode(meta: &fs::Metadata) -> Result<u32, String> {
    u32::try_from(meta.ino()).map_err(|_| format!("namespace inode {} exceeds u32", meta.ino()))
}

/// A task or mount that went away while we looked: normal on a live box.
fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Network namespaces found on the box, each with the paths it was seen at.
#[derive(Default)]
struct Discovered {
    namespaces: BTreeMap<u32, Vec<PathBuf>>,
    /// `ns/net` links that could not be stat'ed for lack of privilege, and the first one.
    unreadable: usize,
    first_unreadable: Option<PathBuf>,
}

impl Discovered {
    fn add(&mut self, inode: u32, path: PathBuf) {
        let paths = self.namespaces.entry(inode).or_default();
        if paths.len() < MAX_CANDIDATES {
            paths.push(path);
        }
    }

    /// Stats `path` once and records it if it is a network namespace file.
    fn consider(&mut self, path: PathBuf, nsfs_dev: u64) {
        match fs::metadata(&path) {
            Ok(meta) if meta.dev() == nsfs_dev => match ns_inode(&meta) {
                Ok(inode) => self.add(inode, path),
                Err(e) => log::debug!("{}: {e}", path.display()),
            },
            Ok(_) => log::debug!("{}: not a namespace file (stale mount?)", path.display()),
            Err(e) if vanished(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                self.unreadable += 1;
                self.first_unreadable.get_or_insert(path);
            }
            Err(e) => log::debug!("{}: {e}", path.display()),
        }
    }

    fn walk_run_netns(&mut self, nsfs_dev: u64) {
        let entries = match fs::read_dir(RUN_NETNS) {
            Ok(entries) => entries,
            Err(e) if vanished(&e) => return,
            Err(e) => {
                log::debug!("{RUN_NETNS}: {e}");
                return;
            }
        };
        for entry in entries.flatten() {
            self.consider(entry.path(), nsfs_dev);
        }
    }

    fn walk_proc(&mut self, nsfs_dev: u64) {
        let procs = match fs::read_dir(PROC) {
            Ok(procs) => procs,
            Err(e) => {
                log::warn!("{PROC}: {e}; only the own network namespace is seeded");
                return;
            }
        };
        for proc_entry in procs.flatten() {
            let name = proc_entry.file_name();
            if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
                continue;
            }
            let task_dir = proc_entry.path().join("task");
            let Ok(tasks) = fs::read_dir(&task_dir) else {
                // The process exited, or is not ours to look at; its main thread's link
                // would say the same.
                continue;
            };
            for task in tasks.flatten() {
                self.consider(task.path().join("ns/net"), nsfs_dev);
            }
        }
    }

    fn unreadable_summary(&self) -> Option<String> {
        let first = self.first_unreadable.as_ref()?;
        Some(format!(
            "{} tasks' network namespaces could not be inspected (first: {}): permission \
             denied by the ptrace access check (no CAP_SYS_PTRACE, or a non-dumpable task)",
            self.unreadable,
            first.display()
        ))
    }
}
