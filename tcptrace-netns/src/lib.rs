//! Network namespaces for tcptrace's own workloads: the load generator (`tcptrace load`,
//! the demo's fleet), the library's unit tests and the live integration tests all run their
//! sockets in namespaces they make, so nothing else on the box can clash with them and
//! dropping the namespace frees every socket left in it.
//!
//! A network namespace belongs to a thread (`unshare(CLONE_NEWNET)` moves only the caller),
//! so each helper here is a thread that entered a fresh namespace:
//! - [`in_new`]: run one closure there and join;
//! - [`Netns`]: a thread that stays there and runs the closures sent to it, for as long as
//!   the value lives (sockets it creates belong to the namespace; their descriptors work
//!   from any thread afterwards; processes it spawns start in the namespace).

use std::{
    fs, io, mem,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    panic,
    path::PathBuf,
    sync::mpsc,
    thread::{self, JoinHandle},
};

/// Inode number of the calling thread's network namespace (what `lsns -t net` prints and
/// the kernel's `net->ns.inum`).
pub fn own_inode() -> io::Result<u32> {
    let inode = fs::metadata("/proc/thread-self/ns/net")?.ino();
    u32::try_from(inode).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidData, format!("netns inode {inode} exceeds u32"))
    })
}

/// Moves the calling thread into a new network namespace with `lo` up; returns its inode.
pub fn enter_new() -> io::Result<u32> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
        io::Error::new(
            io::Error::from(errno).kind(),
            format!("unshare(CLONE_NEWNET): {errno} (needs CAP_SYS_ADMIN)"),
        )
    })?;
    loopback_up().map_err(|e| {
        io::Error::new(e.kind(), format!("bringing lo up in the new network namespace: {e}"))
    })?;
    own_inode()
}

/// `ip link set lo up` in the calling thread's namespace, with the two ioctls it makes, so
/// that no external command is needed (the VM tier has busybox only). Bringing `lo` up also
/// assigns 127.0.0.1/8 and `::1`.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket() takes no pointers; the descriptor is owned (and closed) by `sock`.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we own and nothing else closes.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: `ifreq` is plain old data, for which all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = (*src).cast_signed();
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `req`, which lives
    // across the call; the request type differs between libcs, hence the inferred cast.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags from `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `body(inode)` on a new thread in a new network namespace and returns what it
/// returns; a panic in `body` is raised again here. The namespace ends with the thread
/// unless something in it outlives it (a process, a bind mount).
pub fn in_new<T: Send + 'static>(body: impl FnOnce(u32) -> T + Send + 'static) -> T {
    let worker = thread::spawn(move || {
        let inode =
            enter_new().unwrap_or_else(|e| panic!("cannot set up a network namespace: {e}"));
        body(inode)
    });
    worker.join().unwrap_or_else(|payload| panic::resume_unwind(payload))
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread living in a new network namespace (with `lo` up) that runs the closures sent
/// to it, until the `Netns` is dropped. Other tools find namespaces through
/// `/proc/*/task/*/ns/net`, so the thread must outlive the connections made in it.
pub struct Netns {
    inode: u32,
    tid: i32,
    comm: String,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Netns {
    /// A new namespace whose thread is called `name` (the kernel keeps 15 bytes of it as
    /// the thread's comm, which is what the connects it makes report).
    pub fn new(name: &str) -> io::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<(u32, i32, String)>>();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let thread = thread::Builder::new().name(name.to_owned()).spawn(move || {
            let entered = enter_new().and_then(|inode| {
                let comm = fs::read_to_string("/proc/thread-self/comm")?.trim_end().to_owned();
                Ok((inode, nix::unistd::gettid().as_raw(), comm))
            });
            let ok = entered.is_ok();
            let _ = ready_tx.send(entered);
            if ok {
                for job in jobs_rx {
                    job();
                }
            }
        })?;
        let (inode, tid, comm) = ready_rx.recv().map_err(|_| {
            io::Error::other("the network namespace thread died before it reported")
        })??;
        Ok(Self { inode, tid, comm, jobs: Some(jobs_tx), thread: Some(thread) })
    }

    /// Inode number of the namespace.
    #[must_use]
    pub fn inode(&self) -> u32 {
        self.inode
    }

    /// Thread id of the namespace thread (the `tid` of the connects it makes).
    #[must_use]
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// The namespace thread's comm (the `comm` of the connects it makes).
    #[must_use]
    pub fn comm(&self) -> &str {
        &self.comm
    }

    /// Runs `f` on the namespace thread and returns its result; a panic in `f` is raised
    /// again here.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(panic::catch_unwind(panic::AssertUnwindSafe(f)));
        });
        self.jobs
            .as_ref()
            .expect("namespace thread running")
            .send(job)
            .expect("namespace thread alive");
        match rx.recv().expect("namespace thread answers") {
            Ok(result) => result,
            Err(payload) => panic::resume_unwind(payload),
        }
    }

    /// Sets a sysctl of this namespace (`net.ipv4.ip_local_port_range` and friends are per
    /// namespace; `/proc/sys/net` shows the namespace of the thread that opens it).
    pub fn sysctl(&self, name: &str, value: &str) -> io::Result<()> {
        let path = sysctl_path(name);
        let value = value.to_owned();
        self.run(move || {
            fs::write(&path, value)
                .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))
        })
    }

    /// Reads a sysctl of this namespace, trimmed.
    pub fn read_sysctl(&self, name: &str) -> io::Result<String> {
        let path = sysctl_path(name);
        self.run(move || {
            fs::read_to_string(&path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", path.display())))
        })
    }
}

fn sysctl_path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_namespace_is_not_the_callers_and_has_loopback() {
        let own = own_inode().unwrap();
        let ns = Netns::new("netns-test").unwrap();
        assert_ne!(ns.inode(), own);
        assert_eq!(ns.run(|| own_inode().unwrap()), ns.inode());
        assert_eq!(ns.comm(), "netns-test");
        let echoed = ns.run(|| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            std::net::TcpStream::connect(listener.local_addr().unwrap()).is_ok()
        });
        assert!(echoed, "lo is up in the namespace");
        ns.sysctl("net.ipv4.ip_local_port_range", "40000 40009").unwrap();
        assert_eq!(ns.read_sysctl("net.ipv4.ip_local_port_range").unwrap(), "40000\t40009");
        assert_ne!(in_new(|inode| inode), own);
    }

    #[test]
    fn a_panic_in_the_namespace_reaches_the_caller() {
        let ns = Netns::new("netns-panic").unwrap();
        let caught = panic::catch_unwind(panic::AssertUnwindSafe(|| ns.run(|| panic!("boom"))));
        assert!(caught.is_err());
        assert_eq!(ns.run(|| 7), 7, "the thread survives a job's panic");
    }
}
